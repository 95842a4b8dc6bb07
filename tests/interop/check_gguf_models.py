#!/usr/bin/env python3
"""Check GGUF models written by `loratool quantize` and `loratool bake` with gguf-py.

  check_gguf_models.py quant <in.gguf> <out.gguf> <type>
  check_gguf_models.py bake <base.gguf> <out.gguf> <config.json> [--compat] <peft_dir>:<weight> ...

quant: every KV of the input is kept (same order, types, values) except general.file_type and
general.quantization_version (UINT32); tensors keep names, order and shapes; norms, 1-D and
other kept tensors are byte-identical; quantized tensors have llama-quantize's type (with its
fallback for rows that do not fit a block) and, where gguf-py can quantize that type, exactly
gguf.quants.quantize's bytes of the source values; otherwise they dequantize close to them.

bake: untouched tensors are byte-identical to the base; each touched tensor equals
dequantize(base) + Σ w·scale·B@A (q/k rows permuted as convert_hf_to_gguf.py does), stored in
the base tensor's type (F16, or F32 for F32 tensors, with --compat) to within the rounding of
that type: its error against the exact sum is no worse than gguf-py's own quantization of it.
"""
import json
import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader, GGUFValueType
from gguf.quants import dequantize, quantize
from safetensors.numpy import load_file

BLOCK = {T.F32: 1, T.F16: 1, T.BF16: 1, T.Q8_0: 32, T.Q4_0: 32, T.Q4_1: 32, T.Q5_0: 32,
         T.Q5_1: 32, T.Q2_K: 256, T.Q3_K: 256, T.Q4_K: 256, T.Q5_K: 256, T.Q6_K: 256}
FALLBACK = {T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0, T.Q2_K: T.Q4_0, T.Q3_K: T.Q4_0}
GGUFPY_QUANTIZES = {T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1}
KEPT = ("_norm.weight", "ffn_gate_inp.weight", ".position_embd", "ssm_conv1d", "altup", "laurel")
NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
         "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
         "mlp.down_proj": "ffn_down"}

problems = []


def values(t):
    return dequantize(np.asarray(t.data), t.tensor_type).reshape([int(x) for x in reversed(t.shape)])


def kv(reader):
    return {f.name: (f.types, f.contents()) for f in reader.fields.values() if not f.name.startswith("GGUF.")}


def expected_type(name, t, target, adapter):
    if adapter:
        eligible = len(t.shape) == 2 and name.endswith((".lora_a", ".lora_b"))
    else:
        eligible = len(t.shape) >= 2 and name.endswith("weight") and not any(k in name for k in KEPT)
    if not eligible:
        return None
    row = int(t.shape[0])
    if row % BLOCK[target]:
        first = FALLBACK.get(target, T.F16)
        return first if row % BLOCK[first] == 0 else T.F16
    return target


def check_quant(src_path, out_path, type_name):
    target = T[type_name.upper()]
    src, out = GGUFReader(src_path), GGUFReader(out_path)
    ks, ko = kv(src), kv(out)
    adapter = ks.get("general.type", (None, None))[1] == "adapter"
    for k, v in ks.items():
        if k in ("general.file_type", "general.quantization_version"):
            continue
        if ko.get(k) != v:
            problems.append(f"KV {k}: {ko.get(k)} != {v}")
    # llama-quantize sets these two last (tests/quant_presets.rs checks its order); the rest
    # keep the source's order
    moved = ("general.file_type", "general.quantization_version")
    if [k for k in ko if k in ks and k not in moved] != [k for k in ks if k not in moved]:
        problems.append("KV order changed")
    if ko["general.quantization_version"] != ([GGUFValueType.UINT32], 2):
        problems.append(f"general.quantization_version {ko['general.quantization_version']}")
    if not adapter and ko["general.file_type"][0] != [GGUFValueType.UINT32]:
        problems.append("general.file_type is not UINT32")
    if [t.name for t in src.tensors] != [t.name for t in out.tensors]:
        problems.append("tensor names/order differ")
    counts = {}
    for a, b in zip(src.tensors, out.tensors):
        if list(a.shape) != list(b.shape):
            problems.append(f"{a.name}: shape {b.shape} != {a.shape}")
        want = expected_type(a.name, a, target, adapter) or a.tensor_type
        counts[want.name] = counts.get(want.name, 0) + 1
        if b.tensor_type != want:
            problems.append(f"{a.name}: type {b.tensor_type.name}, expected {want.name}")
            continue
        if want == a.tensor_type:
            if np.asarray(a.data).tobytes() != np.asarray(b.data).tobytes():
                problems.append(f"{a.name}: kept tensor's bytes changed")
            continue
        source = values(a).astype(np.float32)
        if want in GGUFPY_QUANTIZES:
            ref = quantize(source, want)
            if ref.tobytes() != np.asarray(b.data).tobytes():
                problems.append(f"{a.name}: {want.name} bytes differ from gguf.quants.quantize")
        else:
            got = values(b)
            err = np.linalg.norm(got - source) / max(np.linalg.norm(source), 1e-30)
            # b-bit rounding of spread-out values: relative RMS error about 1/(2^b - 1)
            bits = {T.Q2_K: 2, T.Q3_K: 3, T.Q4_K: 4, T.Q5_K: 5, T.Q6_K: 6}[want]
            if err > 1.5 / (2**bits - 1):
                problems.append(f"{a.name}: {want.name} relative error {err:.3f}")
    return f"{len(out.tensors)} tensors {counts}"


def permute(w, n_head):
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def peft_deltas(adapter_dir, weight, n_head, n_kv):
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    st = {k: v.astype(np.float64) for k, v in load_file(adapter_dir / "adapter_model.safetensors").items()}
    out = {}
    for key, a in st.items():
        if not key.endswith(".lora_A.weight"):
            continue
        b = st[key.replace("lora_A", "lora_B")]
        parts = key.removeprefix("base_model.model.").split(".")
        leaf = parts[4]
        r = a.shape[0]
        alpha = cfg.get("alpha_pattern", {}).get(leaf, cfg["lora_alpha"])
        scale = alpha / (np.sqrt(r) if cfg.get("use_rslora") else r)
        name = f"blk.{parts[2]}.{NAMES[parts[3] + '.' + parts[4]]}.weight"
        d = weight * scale * (b @ a)
        if name.endswith("attn_q.weight"):
            d = permute(d, n_head)
        elif name.endswith("attn_k.weight"):
            d = permute(d, n_kv)
        out[name] = out.get(name, 0) + d
    return out


def check_bake(base_path, out_path, config_path, jobs, compat):
    config = json.loads(Path(config_path).read_text())
    n_head = config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads", n_head)
    deltas = {}
    for job in jobs:
        d, w = job.rsplit(":", 1)
        for name, x in peft_deltas(Path(d), float(w), n_head, n_kv).items():
            deltas[name] = deltas.get(name, 0) + x
    base, out = GGUFReader(base_path), GGUFReader(out_path)
    kb, ko = kv(base), kv(out)
    for k, v in kb.items():
        if compat and k == "general.file_type":
            if ko[k] != ([GGUFValueType.UINT32], 1):
                problems.append(f"compat general.file_type {ko[k]}")
        elif ko.get(k) != v:
            problems.append(f"KV {k} changed")
    worst = 0.0
    touched = 0
    for a, b in zip(base.tensors, out.tensors):
        if a.name != b.name or list(a.shape) != list(b.shape):
            problems.append(f"tensor {a.name} / {b.name} differ in name or shape")
            continue
        if a.name not in deltas:
            if np.asarray(a.data).tobytes() != np.asarray(b.data).tobytes():
                problems.append(f"{a.name}: untouched tensor changed")
            continue
        touched += 1
        want_type = (T.F32 if a.tensor_type == T.F32 else T.F16) if compat else a.tensor_type
        if b.tensor_type != want_type:
            problems.append(f"{a.name}: type {b.tensor_type.name}, expected {want_type.name}")
            continue
        exact = values(a).astype(np.float64) + deltas[a.name]
        got = values(b).astype(np.float64)
        if want_type == T.F32:
            ref_err = 1e-6 * np.linalg.norm(exact)
        else:
            ref = dequantize(quantize(exact.astype(np.float32), want_type), want_type) if want_type in GGUFPY_QUANTIZES else None
            ref_err = np.linalg.norm(ref - exact) if ref is not None else 0.02 * np.linalg.norm(exact)
        err = np.linalg.norm(got - exact)
        worst = max(worst, err / np.linalg.norm(exact))
        if err > 1.01 * ref_err + 1e-6 * np.linalg.norm(exact):
            problems.append(f"{a.name}: error {err:.3e} > reference rounding {ref_err:.3e}")
    if touched != len(deltas):
        problems.append(f"{touched} tensors touched, adapters have {len(deltas)}")
    return f"{touched} tensors baked, worst relative error {worst:.2e}"


def main():
    mode = sys.argv[1]
    if mode == "quant":
        summary = check_quant(*sys.argv[2:5])
    else:
        args = sys.argv[2:]
        compat = "--compat" in args
        args = [a for a in args if a != "--compat"]
        summary = check_bake(args[0], args[1], args[2], args[3:], compat)
    print(("ok " if not problems else "FAIL ") + f"{mode} {sys.argv[3]}: {summary}")
    for p in problems[:20]:
        print("   ", p)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
