#!/usr/bin/env python3
"""Generate formats/flux1.tsv, sd3_medium.tsv, sd35_large.tsv, sd35_medium.tsv.

One row per nn.Linear / nn.Conv2d module of the diffusers transformer (FluxTransformer2DModel /
SD3Transformer2DModel with the released configs below) and of the text encoders' attention / MLP
layers (CLIP-L, CLIP-G, T5-XXL), with the canonical diffusers path, its shape, and its names in
the other layouts people ship LoRAs in:

  orig_path        the module in the original checkpoint: BFL Flux (`double_blocks.0.img_attn.qkv`)
                   or SAI MMDiT (`joint_blocks.0.x_block.attn.qkv`); for text encoders ComfyUI's
                   `text_encoders.{clip_l,clip_g,t5xxl}.transformer.<HF path>`. ComfyUI LoRAs
                   use `diffusion_model.<orig_path>` for the transformer.
  rows             which rows of orig_path's weight this module is: `*` (all), `a:b` (a slice of
                   a fused projection: Flux qkv / linear1 = q,k,v,mlp, MMDiT qkv), or `swap`
                   (the two row halves exchanged: Flux final_layer.adaLN_modulation.1 vs
                   norm_out.linear, and SD3's pre-only context adaLN / final layer)
  kohya_name       sd-scripts' LoRA name: `lora_unet_` + orig_path with `.`→`_`; text encoders
                   `lora_te1_` (CLIP-L), `lora_te2_` (CLIP-G, SD3), `lora_te3_` (T5) + HF path
  onetrainer_name  OneTrainer's Flux name: `lora_transformer_` + diffusers path with `.`→`_`,
                   `lora_te1_` (CLIP-L), `lora_te2_` (T5); `-` where none (SD3 tables)
  xlabs_name       XLabs' Flux LoRA module (`double_blocks.0.processor.qkv_lora1`), `-` if none
  xlabs_rows       rows of that XLabs module (its single-block qkv_lora covers q,k,v only)

Needs torch, diffusers, transformers; models are built on the meta device (nothing downloaded).

    python3 formats/gen/make_dit_tables.py            # write the four tables
    python3 formats/gen/make_dit_tables.py --check    # + cross-check against diffusers' own
                                                       # converters (see formats/README.md)

The mapping below is written from the two architectures (block structure and fused
projections), not from any converter; diffusers' converters are used only as oracles in --check.
"""

import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLUMNS = ["canonical_path", "kind", "out", "in", "kh", "kw", "orig_path", "rows", "kohya_name",
           "onetrainer_name", "xlabs_name", "xlabs_rows"]
HEADER = "#" + "\t".join(COLUMNS) + "\n"

# --------------------------------------------------------------------------------------------
# models (meta device), released configs
# --------------------------------------------------------------------------------------------

FLUX_DEV = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38,
                attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
                pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56))
SD3_MEDIUM = dict(sample_size=128, patch_size=2, in_channels=16, num_layers=24,
                  attention_head_dim=64, num_attention_heads=24, joint_attention_dim=4096,
                  caption_projection_dim=1536, pooled_projection_dim=2048, out_channels=16,
                  pos_embed_max_size=192)
SD35_LARGE = dict(SD3_MEDIUM, num_layers=38, num_attention_heads=38, caption_projection_dim=2432,
                  qk_norm="rms_norm")
SD35_MEDIUM = dict(SD3_MEDIUM, qk_norm="rms_norm", pos_embed_max_size=384,
                   dual_attention_layers=tuple(range(13)))


def clip(hidden, layers, intermediate, heads, projection):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads, vocab_size=49408,
                         max_position_embeddings=77, projection_dim=projection)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg)


def t5xxl():
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                                   feed_forward_proj="gated-gelu", vocab_size=32128))


def linear_conv(model, prefix=""):
    rows = []
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Conv2d):
            o, i, kh, kw = mod.weight.shape
            rows.append((prefix + name, "conv", o, i, kh, kw))
        elif isinstance(mod, torch.nn.Linear):
            o, i = mod.weight.shape
            rows.append((prefix + name, "linear", o, i, 1, 1))
    return rows


# --------------------------------------------------------------------------------------------
# diffusers path -> original module, rows
# --------------------------------------------------------------------------------------------

def fused(parts, path, sizes):
    """Row range of `path` among the consecutive `parts` of a fused projection."""
    start = 0
    for p in parts:
        if path == p:
            return f"{start}:{start + sizes[p]}"
        start += sizes[p]
    raise KeyError(path)


def flux_orig(path, sizes):
    """(BFL path, rows) for a diffusers FluxTransformer2DModel module path."""
    parts = path.split(".")
    if parts[0] == "transformer_blocks":
        i, rest = parts[1], ".".join(parts[2:])
        blk = f"double_blocks.{i}"
        qkv = {"attn.to_q": "img", "attn.to_k": "img", "attn.to_v": "img",
               "attn.add_q_proj": "txt", "attn.add_k_proj": "txt", "attn.add_v_proj": "txt"}
        if rest in qkv:
            stream = qkv[rest]
            names = ([f"transformer_blocks.{i}.attn.to_{x}" for x in "qkv"] if stream == "img"
                     else [f"transformer_blocks.{i}.attn.add_{x}_proj" for x in "qkv"])
            return f"{blk}.{stream}_attn.qkv", fused(names, path, sizes)
        single = {"attn.to_out.0": "img_attn.proj", "attn.to_add_out": "txt_attn.proj",
                  "ff.net.0.proj": "img_mlp.0", "ff.net.2": "img_mlp.2",
                  "ff_context.net.0.proj": "txt_mlp.0", "ff_context.net.2": "txt_mlp.2",
                  "norm1.linear": "img_mod.lin", "norm1_context.linear": "txt_mod.lin"}
        return f"{blk}.{single[rest]}", "*"
    if parts[0] == "single_transformer_blocks":
        i, rest = parts[1], ".".join(parts[2:])
        blk = f"single_blocks.{i}"
        if rest in ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"):
            names = [f"single_transformer_blocks.{i}.{x}" for x in
                     ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")]
            return f"{blk}.linear1", fused(names, path, sizes)
        return f"{blk}.{ {'proj_out': 'linear2', 'norm.linear': 'modulation.lin'}[rest] }", "*"
    top = {"x_embedder": "img_in", "context_embedder": "txt_in",
           "time_text_embed.timestep_embedder.linear_1": "time_in.in_layer",
           "time_text_embed.timestep_embedder.linear_2": "time_in.out_layer",
           "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
           "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
           "time_text_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
           "time_text_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
           "proj_out": "final_layer.linear"}
    if path == "norm_out.linear":
        return "final_layer.adaLN_modulation.1", "swap"
    return top[path], "*"


def xlabs(path, sizes):
    """(XLabs module, rows) or ('-', '-')."""
    parts = path.split(".")
    if parts[0] == "transformer_blocks":
        i, rest = parts[1], ".".join(parts[2:])
        p = f"double_blocks.{i}.processor"
        if rest in ("attn.to_q", "attn.to_k", "attn.to_v"):
            names = [f"transformer_blocks.{i}.attn.to_{x}" for x in "qkv"]
            return f"{p}.qkv_lora1", fused(names, path, sizes)
        if rest in ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"):
            names = [f"transformer_blocks.{i}.attn.add_{x}_proj" for x in "qkv"]
            return f"{p}.qkv_lora2", fused(names, path, sizes)
        if rest == "attn.to_out.0":
            return f"{p}.proj_lora1", "*"
        if rest == "attn.to_add_out":
            return f"{p}.proj_lora2", "*"
    if parts[0] == "single_transformer_blocks":
        i, rest = parts[1], ".".join(parts[2:])
        p = f"single_blocks.{i}.processor"
        if rest in ("attn.to_q", "attn.to_k", "attn.to_v"):
            names = [f"single_transformer_blocks.{i}.attn.to_{x}" for x in "qkv"]
            return f"{p}.qkv_lora", fused(names, path, sizes)
        if rest == "proj_out":
            return f"{p}.proj_lora", "*"
    return "-", "-"


def sd3_orig(path, sizes, last_block):
    """(SAI MMDiT path, rows) for a diffusers SD3Transformer2DModel module path."""
    parts = path.split(".")
    if parts[0] == "transformer_blocks":
        i, rest = int(parts[1]), ".".join(parts[2:])
        x, c = f"joint_blocks.{i}.x_block", f"joint_blocks.{i}.context_block"
        for attn in ("attn", "attn2"):
            if rest in (f"{attn}.to_q", f"{attn}.to_k", f"{attn}.to_v"):
                names = [f"transformer_blocks.{i}.{attn}.to_{q}" for q in "qkv"]
                return f"{x}.{attn}.qkv", fused(names, path, sizes)
            if rest == f"{attn}.to_out.0":
                return f"{x}.{attn}.proj", "*"
        if rest in ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"):
            names = [f"transformer_blocks.{i}.attn.add_{q}_proj" for q in "qkv"]
            return f"{c}.attn.qkv", fused(names, path, sizes)
        single = {"attn.to_add_out": f"{c}.attn.proj", "ff.net.0.proj": f"{x}.mlp.fc1",
                  "ff.net.2": f"{x}.mlp.fc2", "ff_context.net.0.proj": f"{c}.mlp.fc1",
                  "ff_context.net.2": f"{c}.mlp.fc2", "norm1.linear": f"{x}.adaLN_modulation.1",
                  "norm1_context.linear": f"{c}.adaLN_modulation.1"}
        # the last block's context stream is pre-only: its adaLN is (shift, scale) in SAI's
        # order and (scale, shift) in diffusers' AdaLayerNormContinuous
        rows = "swap" if rest == "norm1_context.linear" and i == last_block else "*"
        return single[rest], rows
    top = {"pos_embed.proj": "x_embedder.proj", "context_embedder": "context_embedder",
           "time_text_embed.timestep_embedder.linear_1": "t_embedder.mlp.0",
           "time_text_embed.timestep_embedder.linear_2": "t_embedder.mlp.2",
           "time_text_embed.text_embedder.linear_1": "y_embedder.mlp.0",
           "time_text_embed.text_embedder.linear_2": "y_embedder.mlp.2",
           "proj_out": "final_layer.linear"}
    if path == "norm_out.linear":
        return "final_layer.adaLN_modulation.1", "swap"
    return top[path], "*"


def te_rows(model, component, comfy, kohya_prefix, onetrainer_prefix):
    """Attention / MLP Linear layers of a CLIP or T5 text encoder."""
    prefix = "text_model." if hasattr(model, "text_model") is False and "CLIP" in type(model).__name__ else ""
    out = []
    for path, kind, o, i, kh, kw in linear_conv(model, prefix):
        if not (path.startswith("text_model.encoder.layers.") or path.startswith("encoder.block.")):
            continue
        out.append((f"{component}.{path}", kind, o, i, kh, kw,
                    f"text_encoders.{comfy}.transformer.{path}", "*",
                    kohya_prefix + path.replace(".", "_"),
                    (onetrainer_prefix + path.replace(".", "_")) if onetrainer_prefix else "-",
                    "-", "-"))
    return out


def build(family):
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    with torch.device("meta"):
        if family == "flux1":
            model = FluxTransformer2DModel(**FLUX_DEV)
            encoders = [(clip(768, 12, 3072, 12, 0), "text_encoder", "clip_l", "lora_te1_", "lora_te1_"),
                        (t5xxl(), "text_encoder_2", "t5xxl", "lora_te3_", "lora_te2_")]
        else:
            cfg = {"sd3_medium": SD3_MEDIUM, "sd35_large": SD35_LARGE, "sd35_medium": SD35_MEDIUM}[family]
            model = SD3Transformer2DModel(**cfg)
            encoders = [(clip(768, 12, 3072, 12, 768), "text_encoder", "clip_l", "lora_te1_", None),
                        (clip(1280, 32, 5120, 20, 1280), "text_encoder_2", "clip_g", "lora_te2_", None),
                        (t5xxl(), "text_encoder_3", "t5xxl", "lora_te3_", None)]
    mods = linear_conv(model)
    sizes = {p: o for p, _, o, _, _, _ in mods}
    last = getattr(model.config, "num_layers", 0) - 1
    rows = []
    for path, kind, o, i, kh, kw in mods:
        if family == "flux1":
            orig, rr = flux_orig(path, sizes)
            xl, xr = xlabs(path, sizes)
            ot = "lora_transformer_" + path.replace(".", "_")
        else:
            orig, rr = sd3_orig(path, sizes, last)
            xl, xr, ot = "-", "-", "-"
        rows.append((f"transformer.{path}", kind, o, i, kh, kw, orig, rr,
                     "lora_unet_" + orig.replace(".", "_"), ot, xl, xr))
    for model_te, component, comfy, kp, op in encoders:
        rows += te_rows(model_te, component, comfy, kp, op)
    rows.sort(key=lambda r: r[0].encode())
    return rows, model


def render(rows):
    return HEADER + "".join("\t".join(str(x) for x in r) + "\n" for r in rows)


FAMILIES = ["flux1", "sd3_medium", "sd35_large", "sd35_medium"]


def check_self(family, rows):
    for col in (0, 8):
        vals = [r[col] for r in rows]
        assert len(set(vals)) == len(vals) or col == 8, f"{family}: duplicate {COLUMNS[col]}"
    # every original module is covered exactly once: whole, swapped, or a partition of its rows
    groups = {}
    for r in rows:
        groups.setdefault(r[6], []).append(r)
    for orig, members in groups.items():
        if len(members) == 1:
            assert members[0][7] in ("*", "swap"), (orig, members[0][7])
            continue
        spans = sorted(tuple(map(int, m[7].split(":"))) for m in members)
        assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:])), (orig, spans)
        assert all(b - a == m for (a, b), m in zip(spans, [x[2] for x in sorted(members, key=lambda x: int(x[7].split(':')[0]))]))
        assert len({m[3] for m in members}) == 1, f"{orig}: parts with different in"
    kohya = {}
    for r in rows:
        kohya.setdefault(r[8], set()).add(r[6])
    assert all(len(v) == 1 for v in kohya.values()), "a kohya name for two original modules"
    fused = sum(1 for m in groups.values() if len(m) > 1)
    print(f"{family}: {len(rows)} rows, {len(groups)} original modules ({fused} fused), "
          f"components {sorted({r[0].split('.', 1)[0] for r in rows})}")


# --------------------------------------------------------------------------------------------
# --check: diffusers' converters as oracles. Every tensor is tagged with unique values per row,
# so a swapped or shifted slice is caught, not only a missing name.
# --------------------------------------------------------------------------------------------

class Tolerant(dict):
    """A checkpoint that hands the converter zeros for keys we do not tag (norms, biases)."""

    def pop(self, key, *default):
        if key in self:
            return super().pop(key)
        return default[0] if default else torch.zeros(1, dtype=torch.float64)


def orig_groups(rows, component="transformer."):
    groups = {}
    for r in rows:
        if r[0].startswith(component):
            groups.setdefault(r[6], []).append(r)
    return groups


def expected_ids(r, base, total):
    """The tag values the canonical module must receive from its original module's rows."""
    if r[7] == "*":
        return base[:]
    if r[7] == "swap":
        h = total // 2
        return base[h:] + base[:h]
    a, b = map(int, r[7].split(":"))
    return base[a:b]


def tagged(groups):
    """{orig: (ids list, total rows)} with globally unique ids."""
    out, next_id = {}, 1.0
    for orig, members in sorted(groups.items()):
        total = sum(m[2] for m in members)
        out[orig] = ([next_id + k for k in range(total)], total)
        next_id += total
    return out


def compare(what, rows, got, n_expected):
    wrong = [k for k, ok in got.items() if not ok]
    print(f"  {what}: {sum(got.values())}/{n_expected} modules land on our canonical path with the "
          f"right rows")
    assert sum(got.values()) == n_expected and not wrong, wrong[:5]


def check_checkpoint(family, rows):
    from diffusers.loaders.single_file_utils import (convert_flux_transformer_checkpoint_to_diffusers,
                                                     convert_sd3_transformer_checkpoint_to_diffusers)

    groups = orig_groups(rows)
    ids = tagged(groups)
    ckpt = Tolerant()
    for orig, (vals, total) in ids.items():
        kind = groups[orig][0][1]
        t = torch.tensor(vals, dtype=torch.float64)
        ckpt[f"{orig}.weight"] = t.reshape(total, 1, 1, 1) if kind == "conv" else t.reshape(total, 1)
        ckpt[f"{orig}.bias"] = t.clone()
    if family == "sd35_large":  # the converter finds qk norms by key name
        ckpt["joint_blocks.0.x_block.attn.ln_q.weight"] = torch.zeros(1)
    convert = (convert_flux_transformer_checkpoint_to_diffusers if family == "flux1"
               else convert_sd3_transformer_checkpoint_to_diffusers)
    out = convert(ckpt)
    got = {}
    for orig, members in groups.items():
        vals, total = ids[orig]
        for r in members:
            key = r[0][len("transformer."):] + ".weight"
            w = out.get(key)
            got[r[0]] = w is not None and w.flatten().tolist() == expected_ids(r, vals, total)
    compare(f"diffusers {convert.__name__}", rows, got, len([r for r in rows if r[0].startswith("transformer.")]))


def lora_in(rows, name_col, groups, ids, fmt, rank=1):
    """A synthetic LoRA in one layout: down ones, up = the tagged row ids, alpha = rank."""
    sd = {}
    for orig, members in groups.items():
        name = members[0][name_col]
        vals, total = ids[orig]
        up = torch.tensor(vals, dtype=torch.float64).reshape(total, 1)
        fmt(sd, name, up)
    return sd


def landed(state, groups, ids, strip):
    got = {}
    for orig, members in groups.items():
        vals, total = ids[orig]
        for r in members:
            b = None
            for k, v in state.items():
                if strip(k) == r[0] + "#B":
                    b = v
            got[r[0]] = b is not None and b.flatten().tolist() == expected_ids(r, vals, total)
    return got


def peft_name(k):
    for s, tag in ((".lora_B.weight", "#B"), (".lora_A.weight", "#A")):
        if k.endswith(s):
            k = k[: -len(s)] + tag
    if k.startswith("text_encoder.") or k.startswith("transformer."):
        return k
    return "transformer." + k


def check_flux_loras(rows):
    from diffusers.loaders.lora_conversion_utils import (_convert_kohya_flux_lora_to_diffusers,
                                                         _convert_xlabs_flux_lora_to_diffusers)

    def kohya_fmt(sd, name, up):
        sd[f"{name}.lora_down.weight"] = torch.ones(1, 1, dtype=torch.float64)
        sd[f"{name}.lora_up.weight"] = up
        sd[f"{name}.alpha"] = torch.tensor(1.0, dtype=torch.float64)

    transformer = orig_groups(rows)
    clip_l = orig_groups(rows, "text_encoder.")
    n_tr = sum(len(m) for m in transformer.values())
    # kohya (sd-scripts) and ComfyUI (diffusion_model.<bfl>, text_encoders.clip_l.transformer.)
    for layout in ("kohya", "comfy"):
        groups = dict(transformer, **clip_l)
        ids = tagged(groups)
        if layout == "kohya":
            sd = lora_in(rows, 8, groups, ids, kohya_fmt)
        else:
            sd = {}
            for orig, members in groups.items():
                vals, total = ids[orig]
                up = torch.tensor(vals, dtype=torch.float64).reshape(total, 1)
                name = orig if orig.startswith("text_encoders.") else f"diffusion_model.{orig}"
                kohya_fmt(sd, name, up)
        out = _convert_kohya_flux_lora_to_diffusers(sd)
        # the text-encoder half comes out in diffusers' old convention; diffusers' own helpers
        # take it to PEFT names, as its loader does
        from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_peft

        te_part = {k[len("text_encoder."):]: v for k, v in out.items() if k.startswith("text_encoder.")}
        te = {"text_encoder." + peft_name(k)[len("transformer."):]: v
              for k, v in convert_state_dict_to_peft(convert_state_dict_to_diffusers(te_part)).items()}
        tr = {peft_name(k): v for k, v in out.items() if not k.startswith("text_encoder.")}
        got = landed({**tr, **te}, groups, ids, lambda k: k)
        compare(f"diffusers kohya Flux LoRA converter ({layout} layout, transformer + CLIP-L)", rows,
                got, n_tr + sum(len(m) for m in clip_l.values()))
    # OneTrainer: lora_transformer_<diffusers path>, lora_te1_
    groups = dict(transformer, **clip_l)
    sd = {}
    for orig, members in groups.items():
        for r in members:
            up = torch.tensor([float(hash(r[0]) % 100000)] * r[2], dtype=torch.float64).reshape(r[2], 1)
            kohya_fmt(sd, r[9], up)
    sd_copy = {k: v.clone() for k, v in sd.items()}
    out = _convert_kohya_flux_lora_to_diffusers(sd)
    # diffusers' "mixture" converter maps a block's attention projections and the top-level
    # modules; every other block module (ff, norm1, proj_mlp, proj_out, norm.linear) it writes
    # to the block path itself (`single_transformer_blocks.0`), which cannot load: those rows
    # follow the naming rule and are checked only by it.
    def mapped(path):
        p = path.split(".")
        return not (p[1] in ("transformer_blocks", "single_transformer_blocks") and p[3] != "attn")

    got = {}
    for orig, members in groups.items():
        for r in members:
            if not mapped(r[0]):
                continue
            want = sd_copy[f"{r[9]}.lora_up.weight"]
            k = r[0] + ".lora_B.weight"
            got[r[0]] = k in out and torch.equal(out[k], want)
    compare("diffusers OneTrainer (mixture) Flux converter, attention / top-level / CLIP-L", rows,
            got, len(got))
    assert len(got) > 0
    # XLabs
    xl = {}
    for r in rows:
        if r[10] != "-":
            xl.setdefault(r[10], []).append(r)
    sd, want = {}, {}
    next_id = 1.0
    for name, members in sorted(xl.items()):
        total = sum(m[2] for m in members)
        vals = [next_id + k for k in range(total)]
        next_id += total
        sd[f"{name}.down.weight"] = torch.ones(1, members[0][3], dtype=torch.float64)
        sd[f"{name}.up.weight"] = torch.tensor(vals, dtype=torch.float64).reshape(total, 1)
        for m in members:
            a, b = (0, total) if m[11] == "*" else map(int, m[11].split(":"))
            want[m[0]] = vals[a:b]
    out = _convert_xlabs_flux_lora_to_diffusers(sd)
    got = {p: (p + ".lora_B.weight") in out and out[p + ".lora_B.weight"].flatten().tolist() == v
           for p, v in want.items()}
    compare("diffusers XLabs Flux converter", rows, got, len(want))


def main(argv):
    check = "--check" in argv
    for family in FAMILIES:
        rows, model = build(family)
        check_self(family, rows)
        path = os.path.join(ROOT, "formats", f"{family}.tsv")
        with open(path, "wb") as f:
            f.write(render(rows).encode())
        print(f"  wrote {path}")
        if check:
            check_checkpoint(family, rows)
            if family == "flux1":
                check_flux_loras(rows)


if __name__ == "__main__":
    main(sys.argv[1:])
