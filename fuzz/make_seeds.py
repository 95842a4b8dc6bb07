#!/usr/bin/env python3
"""Build the fuzz targets' seed corpora from fixtures/ (standard library only).

Seeds are small on purpose: libFuzzer mutates bytes at random, so a 100 KB file spends its
mutations on tensor data. Large fixtures are cut down to a few modules (kohya modules keep
their real SD-table shapes, so the seeds reach the readers' name and shape logic), GGUF arrays
to a few elements. Hand-built seeds add what no fixture has (every GGUF value type, empty and
odd safetensors headers, registry documents, shard indexes).

    python3 fuzz/make_seeds.py [--out fuzz/corpus]

writes <out>/<target>/<name> for every target and is idempotent (same bytes every run).
"""
import argparse
import json
import re
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "fixtures")

# ---------------------------------------------------------------- safetensors

DTYPE_SIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
              "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def st_read(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    md = h.pop("__metadata__", None)
    data = {k: b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for k, v in h.items()}
    return h, md, data


def st_bytes(tensors, md=None):
    """tensors: list of (name, dtype, shape, raw bytes), written in the given order."""
    header = {}
    if md is not None:
        header["__metadata__"] = md
    off = 0
    blob = b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        blob += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + blob


def floats(n, seed, dtype="F32"):
    vals = [((i * 7919 + seed * 104729) % 2001 - 1000) / 1000.0 for i in range(n)]
    if dtype == "F32":
        return struct.pack("<%df" % n, *vals)
    if dtype == "F16":
        return struct.pack("<%de" % n, *vals)
    if dtype == "BF16":
        return b"".join(struct.pack("<f", v)[2:] for v in vals)
    if dtype == "F64":
        return struct.pack("<%dd" % n, *vals)
    raise ValueError(dtype)


def trim_md(md, keep_long=("lora_adapter_metadata",)):
    if md is None:
        return None
    return {k: (v if len(v) <= 200 or k in keep_long else v[:64]) for k, v in md.items()}


def st_subset(path, keep):
    """The file with only the tensors whose names `keep` selects, metadata trimmed."""
    h, md, data = st_read(path)
    names = [k for k in h if keep(k)]
    return st_bytes([(k, h[k]["dtype"], h[k]["shape"], data[k]) for k in names], trim_md(md))


def kohya_seed(path, budget=24_000):
    """A few modules of a kohya file: the smallest of each kind (te/te1/te2/unet, 2-D/4-D)
    while they fit in `budget` bytes (at least one)."""
    h, _, data = st_read(path)
    modules = {}
    for k in h:
        modules.setdefault(k.split(".", 1)[0], []).append(k)
    best = {}
    for m, keys in modules.items():
        down = h.get(m + ".lora_down.weight")
        kind = (m.split("_")[1] if m.count("_") > 1 else m, len(down["shape"]) if down else 0)
        size = sum(len(data[k]) for k in keys)
        if kind not in best or size < best[kind][0]:
            best[kind] = (size, m)
    chosen, used = set(), 0
    for size, m in sorted(best.values()):
        if chosen and used + size > budget:
            break
        chosen.add(m)
        used += size
    return st_subset(path, lambda k: k.split(".", 1)[0] in chosen)


DIT_SUFFIX = re.compile(r"\.(lora_down\.weight|lora_up\.weight|lora_A\.weight|lora_B\.weight|"
                        r"lora\.down\.weight|lora\.up\.weight|down\.weight|up\.weight|alpha|"
                        r"lora_mid\.weight|dora_scale|lokr_\w+|hada_\w+)$")
DIT_FUSED = ("qkv", "linear1", "to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj",
             "proj_lora1", "qkv_lora")


def dit_seed(path, n_modules=5):
    """A Flux/SD3 adapter cut to `n_modules` modules (fused attention ones first, so a fused
    group stays whole where it fits) at rank 1: the first row of each down factor and the
    first column of each up factor, so tensors keep the real model's widths (the DiT tables
    check them) at a few tens of KB. LyCORIS factors are kept whole."""
    h, md, data = st_read(path)
    modules = {}
    for k in h:
        m = DIT_SUFFIX.search(k)
        modules.setdefault(k[:m.start()] if m else k, []).append(k)
    # full x full LoKr (exact rank up to the whole module) would make every run slow
    heavy = {m for m, ks in modules.items()
             if {m + ".lokr_w1", m + ".lokr_w2"} <= set(ks)}
    names = sorted((m for m in modules if m not in heavy),
                   key=lambda m: (not any(f in m for f in DIT_FUSED), m))[:n_modules]
    # rank 1 unless the file states ranks elsewhere (diffusers' lora_adapter_metadata) or the
    # factors have a structure (sd-scripts split_qkv: up block-diagonal over q/k/v)
    cut = not (md or {}).get("lora_adapter_metadata") and "split_qkv" not in path
    out = []
    for m in names:
        for k in modules[m]:
            t, raw = h[k], data[k]
            shape, size = list(t["shape"]), DTYPE_SIZE.get(t["dtype"], 1)
            is_down = re.search(r"(lora_down|lora_A|lora\.down|\.down)\.weight$", k)
            is_up = re.search(r"(lora_up|lora_B|lora\.up|\.up)\.weight$", k)
            if not cut:
                pass
            elif is_down and len(shape) >= 2 and shape[0] > 1:
                row = len(raw) // shape[0]
                raw, shape = raw[:row], [1] + shape[1:]
            elif is_up and len(shape) >= 2 and shape[1] > 1:
                inner = size
                for d in shape[2:]:
                    inner *= d
                col = inner
                stride = shape[1] * inner
                raw = b"".join(raw[i * stride:i * stride + col] for i in range(shape[0]))
                shape = [shape[0], 1] + shape[2:]
            out.append((k, t["dtype"], shape, raw))
    return st_bytes(out, trim_md(md))


def peft_module(key):
    i = key.find(".lora_")
    return key[:i] if i >= 0 else key


def peft_seed(path, n_modules=3, budget=24_000):
    """The first modules (and the non-LoRA tensors) that fit in `budget` bytes."""
    h, _, data = st_read(path)
    sizes = {}
    for k in h:
        if ".lora_" in k:
            sizes[peft_module(k)] = sizes.get(peft_module(k), 0) + len(data[k])
    mods, used = set(), 0
    for m in sorted(sizes, key=lambda m: (sizes[m], m)):
        if len(mods) == n_modules or (mods and used + sizes[m] > budget):
            break
        mods.add(m)
        used += sizes[m]
    return st_subset(path, lambda k: peft_module(k) in mods or (".lora_" not in k and len(data[k]) < 4096))


# ---------------------------------------------------------------- GGUF

GGUF_FMT = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


class Reader:
    def __init__(self, b):
        self.b, self.p = b, 0

    def take(self, fmt):
        v = struct.unpack_from("<" + fmt, self.b, self.p)
        self.p += struct.calcsize("<" + fmt)
        return v[0]

    def string(self):
        n = self.take("Q")
        s = self.b[self.p:self.p + n]
        self.p += n
        return s

    def value(self, t):
        if t == 8:
            return self.string()
        if t == 9:
            et, n = self.take("I"), self.take("Q")
            return (et, [self.value(et) for _ in range(n)])
        return self.take(GGUF_FMT[t])


def gguf_read(path):
    b = open(path, "rb").read()
    r = Reader(b)
    assert r.b[:4] == b"GGUF"
    r.p = 4
    r.take("I")
    nt, nkv = r.take("Q"), r.take("Q")
    kv = []
    for _ in range(nkv):
        k = r.string()
        t = r.take("I")
        kv.append((k, t, r.value(t)))
    infos = []
    for _ in range(nt):
        name = r.string()
        nd = r.take("I")
        dims = [r.take("Q") for _ in range(nd)]
        ty, off = r.take("I"), r.take("Q")
        infos.append((name, dims, ty, off))
    align = next((v for k, t, v in kv if k == b"general.alignment"), 32)
    start = (r.p + align - 1) // align * align
    offs = sorted(o for _, _, _, o in infos) + [len(b) - start]
    tensors = []
    for name, dims, ty, off in infos:
        nxt = min(o for o in offs if o > off) if any(o > off for o in offs) else len(b) - start
        tensors.append((name, dims, ty, b[start + off:start + nxt]))
    return kv, tensors


def put_value(t, v):
    if t == 8:
        return struct.pack("<Q", len(v)) + v
    if t == 9:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(put_value(et, x) for x in items)
    return struct.pack("<" + GGUF_FMT[t], v)


def gguf_bytes(kv, tensors, version=3):
    """kv: (key bytes, type, value); tensors: (name bytes, dims, ggml type, raw bytes incl. pad)."""
    align = next((v for k, t, v in kv if k == b"general.alignment"), 32)
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kv))
    for k, t, v in kv:
        out += struct.pack("<Q", len(k)) + k + struct.pack("<I", t) + put_value(t, v)
    off = 0
    for name, dims, ty, raw in tensors:
        out += struct.pack("<Q", len(name)) + name + struct.pack("<I", len(dims))
        out += b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", ty, off)
        off += (len(raw) + align - 1) // align * align
    out += b"\0" * ((align - len(out) % align) % align)
    for _, _, _, raw in tensors:
        out += raw + b"\0" * ((align - len(raw) % align) % align)
    return out


def gguf_seed(path, keep_tensors, max_array=8):
    kv, tensors = gguf_read(path)
    kv = [(k, t, (v[0], v[1][:max_array]) if t == 9 else v) for k, t, v in kv]
    return gguf_bytes(kv, [x for x in tensors if keep_tensors(x[0].decode())])


def gguf_every_type():
    """One value of every GGUF type, arrays of each element type, a custom alignment."""
    kv = [(b"general.architecture", 8, b"llama"), (b"general.alignment", 4, 64)]
    samples = {0: 7, 1: -7, 2: 700, 3: -700, 4: 70000, 5: -70000, 6: 1.5, 7: True,
               8: b"text", 10: 1 << 40, 11: -(1 << 40), 12: 2.25}
    for t, v in samples.items():
        kv.append((b"t%d" % t, t, v))
        kv.append((b"a%d" % t, 9, (t, [v, v])))
    kv.append((b"empty", 9, (4, [])))
    f32 = [(b"x.weight", [4, 2], 0, floats(8, 1)), (b"y.weight", [32], 1, floats(32, 2, "F16"))]
    q8 = struct.pack("<e", 0.5) + bytes(range(32))  # one Q8_0 block
    f32.append((b"z.weight", [32], 8, q8))
    return gguf_bytes(kv, f32)


# ---------------------------------------------------------------- JSON documents

DIGEST = "sha256:" + "ab" * 32
DIGEST2 = "sha256:" + "cd" * 32


def registry_docs():
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "digest": DIGEST, "size": 712,
                            "artifactType": "application/vnd.cncf.model.manifest.v1+json",
                            "annotations": {"org.opencontainers.image.ref.name": "me/lora:v1"}}]}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "artifactType": "application/vnd.cncf.model.manifest.v1+json",
                "config": {"mediaType": "application/vnd.cncf.model.config.v1+json",
                           "digest": DIGEST2, "size": 900},
                "layers": [{"mediaType": "application/vnd.cncf.model.weight.v1.raw",
                            "digest": DIGEST, "size": 76216,
                            "annotations": {"org.opencontainers.image.title": "adapter_model.safetensors"}},
                           {"mediaType": "application/vnd.cncf.model.weight.config.v1.raw",
                            "digest": DIGEST2, "size": 1163,
                            "annotations": {"org.opencontainers.image.title": "adapter_config.json"}}],
                "annotations": {"org.opencontainers.image.created": "2026-11-23T10:45:47Z"}}
    config = {"descriptor": {"createdAt": "2026-11-23T10:45:47Z", "name": "me/lora", "family": None},
              "config": {"format": "peft", "paramSize": "1024", "precision": "F32"},
              "modelfs": {"type": "layers", "diffIds": [DIGEST, DIGEST2]},
              "loratool": {"format": "peft", "base_model": "tiny", "family": "llama-like decoder",
                           "ranks": [4], "alphas": [8.0], "target_modules": ["q_proj"],
                           "dtypes": ["F32"], "modules": 4, "parameters": 1024,
                           "created": "2026-11-23T10:45:47Z",
                           "lineage": {"operation": "merge", "summary": "merge(sum)",
                                       "parameters": {"weights": [0.7, 0.3]},
                                       "inputs": [{"kind": "manifest", "digest": DIGEST,
                                                   "source": "me/a:v1"}]}}}
    return {"index": index, "manifest": manifest, "config": config,
            "empty_index": {"schemaVersion": 2, "manifests": []}}


def shard_indexes():
    s1, s2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    return {"two_shards": {"metadata": {"total_size": 24},
                           "weight_map": {"a.weight": s1, "b.weight": s1, "c.weight": s2}},
            "one_shard": {"weight_map": {"c.weight": s2}},
            "missing_tensor": {"weight_map": {"d.weight": s1}},
            "escape": {"weight_map": {"a.weight": "../" + s1}}}


# ---------------------------------------------------------------- corpora


# ---------------------------------------------------------------- remote replies

def hub_reply_seeds():
    """Replies shaped as the Hub sends them (the same shapes tests/hub_server/server.py
    imitates, after huggingface_hub's HfApi: repo revision info, the paginated tree, preupload,
    the LFS batch API with basic and multipart transfers, create_commit), behind the target's
    selector byte."""
    sha, lfs_oid = "0123456789abcdef0123456789abcdef01234567", "c" * 64
    cdn, hub = "https://cdn-lfs.hf.co", "https://huggingface.co"
    j = lambda v: json.dumps(v).encode()
    seeds = {
        "revision": b"\0" + j({"id": "o/r", "sha": sha, "siblings": [{"rfilename": "a"}], "private": False}),
        "tree": b"\1" + j([
            {"type": "file", "oid": "a" * 40, "size": 618, "path": "adapter_config.json"},
            {"type": "file", "oid": "b" * 40, "size": 8864, "path": "unet/adapter_model.safetensors",
             "lfs": {"oid": lfs_oid, "size": 8864, "pointerSize": 134}},
            {"type": "directory", "oid": "d" * 40, "size": 0, "path": "unet"}]),
        "link": b"\2" + f'<{hub}/api/models/o/r/tree/{sha}?recursive=true&cursor=2>; rel="next"'.encode(),
        "error_header": b"\3" + b"Repository Not Found for url: https://huggingface.co/api/models/o/r.",
        "error_body": b"\3" + j({"error": "Invalid credentials in Authorization header"}),
        "meta_lfs": b"\4\1" + f"X-Repo-Commit: {sha}\nX-Linked-Etag: \"{lfs_oid}\"\nX-Linked-Size: 8864\ncontent-length: 1354".encode(),
        "meta_regular": b"\4\0" + f"x-repo-commit: {sha}\netag: W/\"{'a' * 40}\"\ncontent-length: 618".encode(),
        "preupload": b"\5" + j({"files": [
            {"path": "adapter_model.safetensors", "uploadMode": "lfs", "shouldIgnore": False},
            {"path": "README.md", "uploadMode": "regular", "shouldIgnore": False, "oid": "e" * 40}],
            "commitOid": sha}),
        "batch_basic": b"\6" + struct.pack("<Q", 8864) + j({"transfer": "basic", "objects": [
            {"oid": lfs_oid, "size": 8864, "authenticated": True, "actions": {
                "upload": {"href": f"{cdn}/upload/{lfs_oid}?sig=x"},
                "verify": {"href": f"{hub}/o/r.git/info/lfs/verify", "header": {"Authorization": "Basic eA=="}}}}]}),
        "batch_multipart": b"\6" + struct.pack("<Q", 2500) + j({"transfer": "multipart", "objects": [
            {"oid": lfs_oid, "size": 2500, "actions": {
                "upload": {"href": f"{cdn}/upload/{lfs_oid}/complete?sig=x",
                           "header": {"chunk_size": "1000", "1": f"{cdn}/p/1", "2": f"{cdn}/p/2", "3": f"{cdn}/p/3"}},
                "verify": {"href": f"{hub}/o/r.git/info/lfs/verify", "header": {}}}}]}),
        "batch_error": b"\6" + struct.pack("<Q", 1) + j({"objects": [
            {"oid": "x", "size": 1, "error": {"code": 422, "message": "bad oid"}}]}),
        "commit": b"\7" + j({"commitUrl": f"{hub}/o/r/commit/{sha}", "commitOid": sha,
                              "pullRequestUrl": None}),
    }
    return seeds


def oci_reply_seeds():
    """A token service's answer (docker's token auth spec: token, access_token, expires_in),
    distribution's error body, upload Locations (absolute and relative, as registries send
    them) and a Content-Length, behind the target's selector byte."""
    return {
        "token": b"\0" + json.dumps({"token": "eyJhbGciOiJFUzI1NiJ9.e30.sig", "access_token": "eyJ",
                                     "expires_in": 300, "issued_at": "2026-01-01T00:00:00Z"}).encode(),
        "access_token": b"\0" + json.dumps({"access_token": "ghs_abc", "expires_in": 300}).encode(),
        "errors": b"\1" + json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown",
                                                  "detail": {"Tag": "v1"}}]}).encode(),
        "location_relative": b"\2/v2/team/a/blobs/uploads/5f2e?_state=abc",
        "location_absolute": b"\2https://registry.example:5000/v2/team/a/blobs/uploads/5f2e",
        "content_length": b"\3" + b"4096",
    }


def build(out):
    seeds = {t: {} for t in ["safetensors", "gguf", "peft_config", "kohya", "diffusers", "peft",
                             "gguf_adapter", "registry_json", "sharded_index", "lycoris_kohya",
                             "lycoris_peft", "remote_replies", "dit_layouts"]}
    fx = lambda *p: os.path.join(FIX, *p)

    kohya_files = ["gen_sd15_kohya.safetensors", "gen_sdxl_kohya.safetensors",
                   "kohya/sd15_lora_r8_a8_attn.safetensors",
                   "kohya/sd15_lora_r4_a2_c3lier.safetensors"]
    for f in kohya_files:
        name = os.path.basename(f).replace(".safetensors", "")
        seeds["kohya"][name] = kohya_seed(fx(f))

    peft_dirs = ["peft/plain", "peft/plain2", "peft/dora", "peft/embed", "peft/rslora_patterns",
                 "gen_llama_peft", "peft_merges/cat", "peft_merges/ties"]
    for d in peft_dirs:
        name = d.replace("/", "_")
        config = open(fx(d, "adapter_config.json"), "rb").read()
        weights = peft_seed(fx(d, "adapter_model.safetensors"))
        seeds["peft"][name] = struct.pack("<H", len(config)) + config + weights
        seeds["peft_config"][name] = config

    # diffusers: the PEFT layout under pipeline components, alphas in lora_adapter_metadata
    # (and once as .alpha tensors, which diffusers files converted from kohya carry)
    def diff_tensors(comp, rel, r, out_f, in_f, dtype="F32", conv=False):
        base = f"{comp}.{rel}"
        a_shape = [r, in_f, 3, 3] if conv else [r, in_f]
        b_shape = [out_f, r, 1, 1] if conv else [out_f, r]
        na = r * in_f * (9 if conv else 1)
        return [(base + ".lora_A.weight", dtype, a_shape, floats(na, 1, dtype)),
                (base + ".lora_B.weight", dtype, b_shape, floats(out_f * r, 2, dtype))]
    q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    te = "text_model.encoder.layers.0.self_attn.q_proj"
    meta = {"unet.r": 2, "unet.lora_alpha": 4, "unet.rank_pattern": {},
            "unet.alpha_pattern": {"^" + q.replace(".", "\\."): 1},
            "text_encoder.r": 2, "text_encoder.lora_alpha": 2, "text_encoder.use_rslora": True}
    t = diff_tensors("unet", q, 2, 320, 320) + diff_tensors("text_encoder", te, 2, 768, 768, "F16")
    seeds["diffusers"]["metadata"] = st_bytes(t, {"format": "pt", "lora_adapter_metadata": json.dumps(meta)})
    alpha = [("unet." + q + ".alpha", "F32", [], struct.pack("<f", 3.0))]
    seeds["diffusers"]["alpha_keys"] = st_bytes(diff_tensors("unet", q, 2, 320, 320, "BF16") + alpha)
    conv = "down_blocks.0.resnets.0.conv1"
    seeds["diffusers"]["conv"] = st_bytes(diff_tensors("unet", conv, 1, 320, 320, conv=True))
    seeds["peft_config"]["diffusers_metadata"] = json.dumps(
        {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "rank_pattern": {"^a\\.b": 3, "q_proj": 1},
         "alpha_pattern": {"k_proj": 0.5}, "target_modules": ["a.b", "x.q_proj", "k_proj", "q_proj"],
         "use_rslora": True, "modules_to_save": ["score"]}).encode()

    gguf_adapters = ["plain-f16.gguf", "plain-q8_0.gguf", "plain-f32.gguf", "rslora_patterns-f32.gguf"]
    for f in gguf_adapters:
        keep = lambda n: n.startswith("blk.0.attn_q") or n.startswith("blk.0.attn_k") or "token_embd" in n
        b = gguf_seed(fx("gguf", f), keep)
        seeds["gguf_adapter"][f[:-5]] = b
        seeds["gguf"][f[:-5]] = b
    model = gguf_seed(fx("tiny_llama-f32.gguf"), lambda n: n.endswith("_norm.weight") and n.startswith("blk.0"))
    seeds["gguf"]["tiny_llama_model"] = model
    seeds["gguf_adapter"]["tiny_llama_model"] = model
    seeds["gguf"]["every_type"] = gguf_every_type()
    seeds["gguf"]["v2_empty"] = gguf_bytes([], [], version=2)

    seeds["safetensors"]["empty"] = st_bytes([])
    seeds["safetensors"]["metadata_only"] = st_bytes([], {"format": "pt"})
    seeds["safetensors"]["dtypes"] = st_bytes(
        [("f64", "F64", [2], floats(2, 1, "F64")), ("f32", "F32", [2, 1], floats(2, 2)),
         ("f16", "F16", [3], floats(3, 3, "F16")), ("bf16", "BF16", [1, 2, 1], floats(2, 4, "BF16")),
         ("i8", "I8", [4], b"\x01\x02\x03\x04"), ("zero", "F32", [0, 5], b""),
         ("scalar", "F32", [], floats(1, 5))], {"format": "pt", "k": "v\u00e9"})
    seeds["safetensors"]["kohya"] = seeds["kohya"]["gen_sd15_kohya"]
    seeds["safetensors"]["peft"] = peft_seed(fx("peft", "dora", "adapter_model.safetensors"))

    # LyCORIS: the small kohya-layout files whole (hada_/lokr_/lora_mid/dora_scale keys, made by
    # LyCORIS itself), the SD 1.5 ones cut to their smallest modules; PEFT LOHA/LOKR directories
    lyco = os.path.join("lycoris")
    for f in sorted(os.listdir(fx(lyco))):
        if not f.endswith(".safetensors") or f.endswith(".ref.safetensors"):
            continue
        path = fx(lyco, f)
        name = f.replace(".safetensors", "")
        if os.path.getsize(path) <= 16_000:
            seeds["lycoris_kohya"][name] = open(path, "rb").read()
        else:
            seeds["lycoris_kohya"][name] = kohya_seed(path)
    for d in sorted(os.listdir(fx(lyco))):
        if not os.path.isdir(fx(lyco, d)):
            continue
        config = open(fx(lyco, d, "adapter_config.json"), "rb").read()
        weights = open(fx(lyco, d, "adapter_model.safetensors"), "rb").read()
        seeds["lycoris_peft"][d] = struct.pack("<H", len(config)) + config + weights

    # Flux.1 / SD3 in every layout read (kohya, split_qkv, ComfyUI/BFL, OneTrainer, XLabs,
    # lycoris_, diffusers), cut from fixtures/flux/ (made by the real tools; its README)
    for f in sorted(os.listdir(fx("flux"))):
        if f.endswith(".safetensors") and ".diffusers." not in f and "probes" not in f:
            seeds["dit_layouts"][f.replace(".safetensors", "")] = dit_seed(fx("flux", f))

    # remote: challenges as registries send them, a Hub tree listing, references
    for name, text in {
        "bearer": 'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/x:pull"',
        "basic": 'Basic realm="Registry Realm"',
        "bearer_error": 'Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:o/r:pull,push",error="insufficient_scope"',
        "hf_ref": "hf://owner/name@refs%2Fpr%2F1/sub/dir",
        "oci_ref": "oci://localhost:5000/team/adapter@sha256:" + "ab" * 32,
        "oci_tag": "oci://ghcr.io/o/r:v1",
        "tree": json.dumps([
            {"type": "file", "oid": "a" * 40, "size": 618, "path": "adapter_config.json"},
            {"type": "file", "oid": "b" * 40, "size": 8864, "path": "adapter_model.safetensors",
             "lfs": {"oid": "c" * 64, "size": 8864, "pointerSize": 134}},
            {"type": "directory", "oid": "d" * 40, "size": 0, "path": "sub"}]),
    }.items():
        seeds["remote_replies"][name] = text.encode()

    seeds["hub_replies"] = hub_reply_seeds()
    seeds["oci_replies"] = oci_reply_seeds()

    for name, doc in registry_docs().items():
        seeds["registry_json"][name] = json.dumps(doc, indent=2).encode()
    for name, doc in shard_indexes().items():
        seeds["sharded_index"][name] = json.dumps(doc, indent=2).encode()

    total = 0
    for target, files in seeds.items():
        d = os.path.join(out, target)
        os.makedirs(d, exist_ok=True)
        for name, b in files.items():
            with open(os.path.join(d, "seed-" + name), "wb") as f:
                f.write(b)
            total += len(b)
    print(f"wrote {sum(len(v) for v in seeds.values())} seeds ({total} bytes) under {out}", file=sys.stderr)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "fuzz", "corpus"))
    build(ap.parse_args().out)
