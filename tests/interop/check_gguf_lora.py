#!/usr/bin/env python3
"""Check GGUF LoRA files written by loratool with gguf-py, independently of loratool's reader.

Usage: check_gguf_lora.py <base config.json> <peft_dir>=<out.gguf>=<dtype> ...

For each file: the KV types llama.cpp asserts on, tensor names (HF -> GGUF for llama), ggml
types (q8_0 falls back to F16 where a row is not a multiple of 32), and the numbers: the delta
llama.cpp computes from the file, `alpha / r * B @ A` (token embedding: `A @ B.T`), must equal
PEFT's `scale * B @ A` of the source adapter with the q/k rows permuted as
convert_hf_to_gguf.py permutes the base weights. q8_0 bytes are compared with gguf.quants.
"""
import json
import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader, GGUFValueType
from gguf.quants import dequantize, quantize
from safetensors.numpy import load_file

NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
WANT_TYPE = {"f32": T.F32, "f16": T.F16, "bf16": T.BF16, "q8_0": T.Q8_0}
TOL = {"f32": 1e-6, "f16": 2e-3, "bf16": 2e-2, "q8_0": 2e-2}


def permute(w, n_head):
    """convert_hf_to_gguf.py's LlamaModel.permute, on the rows of w."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def peft_deltas(adapter_dir, n_head, n_kv):
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    raw = load_file(adapter_dir / "adapter_model.safetensors")
    st = {k: v.astype(np.float64) for k, v in raw.items()}
    out, source_a = {}, {}
    for key in st:
        if not key.endswith((".lora_A.weight", ".lora_embedding_A")):
            continue
        embed = key.endswith(".lora_embedding_A")
        module = key.removeprefix("base_model.model.").rsplit(".lora_", 1)[0]
        a = st[key]
        b = st[key.replace("lora_A", "lora_B").replace("lora_embedding_A", "lora_embedding_B")]
        leaf = module.split(".")[-1]
        r = cfg.get("rank_pattern", {}).get(leaf, cfg["r"])
        assert a.shape[0] == r, (key, a.shape, r)
        alpha = cfg.get("alpha_pattern", {}).get(leaf, cfg["lora_alpha"])
        scale = alpha / (np.sqrt(r) if cfg.get("use_rslora") else r)
        if embed:
            out["token_embd.weight"] = scale * (a.T @ b.T)  # (vocab, embd)
            continue
        parts = module.split(".")
        n = int(parts[2])
        name = f"blk.{n}.{NAMES['.'.join(parts[3:])]}.weight"
        source_a[name] = raw[key].astype(np.float32)
        d = scale * (b @ a)
        if name.endswith("attn_q.weight"):
            d = permute(d, n_head)
        elif name.endswith("attn_k.weight"):
            d = permute(d, n_kv)
        out[name] = d
    return out, source_a


def field(reader, key):
    f = reader.fields[key]
    return f.types, f.contents()


def check(config, adapter_dir, path, dtype):
    n_head = config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads", n_head)
    r = GGUFReader(path)
    problems = []
    want_kv = {
        "general.architecture": ([GGUFValueType.STRING], "llama"),
        "general.type": ([GGUFValueType.STRING], "adapter"),
        "adapter.type": ([GGUFValueType.STRING], "lora"),
    }
    for k, want in want_kv.items():
        if field(r, k) != want:
            problems.append(f"{k}: {field(r, k)} != {want}")
    types, alpha = field(r, "adapter.lora.alpha")
    if types != [GGUFValueType.FLOAT32]:
        problems.append(f"adapter.lora.alpha has types {types}, llama.cpp needs FLOAT32")
    tensors = {t.name: t for t in r.tensors}
    expected, source_a = peft_deltas(Path(adapter_dir), n_head, n_kv)
    names = sorted(n[: -len(".lora_a")] for n in tensors if n.endswith(".lora_a"))
    if names != sorted(expected):
        problems.append(f"tensor set {names} != {sorted(expected)}")
    worst = 0.0
    for name, want in expected.items():
        ta, tb = tensors.get(name + ".lora_a"), tensors.get(name + ".lora_b")
        if ta is None or tb is None:
            continue
        vals = {}
        for t in (ta, tb):
            row = int(t.shape[0])  # ggml ne0: the contiguous row length
            want_type = WANT_TYPE[dtype]
            if want_type == T.Q8_0 and row % 32 != 0:
                want_type = T.F16
            if t.tensor_type != want_type:
                problems.append(f"{t.name}: type {t.tensor_type.name}, expected {want_type.name}")
            vals[t.name] = dequantize(np.asarray(t.data), t.tensor_type).reshape(
                [int(x) for x in reversed(t.shape)]
            ).astype(np.float64)
            if t.tensor_type == T.Q8_0 and t is ta and name in source_a:
                # lora_a is PEFT's A unchanged: its bytes must be gguf-py's quantization of A
                ref = quantize(source_a[name], T.Q8_0)
                if ref.tobytes() != np.asarray(t.data).tobytes():
                    problems.append(f"{t.name}: Q8_0 bytes differ from gguf.quants.quantize(A)")
        a, b = vals[ta.name], vals[tb.name]
        rank = b.shape[1]
        if name == "token_embd.weight":
            got = (alpha / rank) * (a @ b.T)
        else:
            got = (alpha / rank) * (b @ a)
        err = np.linalg.norm(got - want) / np.linalg.norm(want)
        worst = max(worst, err)
        if err > TOL[dtype]:
            problems.append(f"{name}: relative error {err:.2e} > {TOL[dtype]}")
    status = "ok" if not problems else "FAIL"
    print(f"{status} {Path(path).name}: {len(tensors)} tensors, alpha {alpha:g}, worst delta error {worst:.2e}")
    for p in problems:
        print("   ", p)
    return not problems


def main():
    config = json.loads(Path(sys.argv[1]).read_text())
    ok = True
    for job in sys.argv[2:]:
        adapter_dir, path, dtype = job.split("=")
        ok &= check(config, adapter_dir, path, dtype)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
