#!/usr/bin/env python3
"""Real-consumer check: adapters written by loratool load in PEFT and give PEFT's own outputs.

Needs torch, transformers, peft (heavy; run locally before releases, not in CI):
    pip install torch transformers peft
    cargo build --release && python3 tests/consumers/check_peft.py

For each PEFT fixture made by PEFT itself (fixtures/peft/*), loratool rewrites it
(`convert --to peft`), PEFT loads the rewritten adapter on fixtures/tiny_llama, and the logits
are compared with the logits PEFT produced from the original adapter (fixtures/logits.npz).
rsLoRA and rank/alpha patterns are folded into per-module alphas by loratool, so this checks
that the written anchored patterns reproduce every module's scale in PEFT.
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LT = os.path.join(ROOT, "target", "release", "loratool")
FIX = os.path.join(ROOT, "fixtures")


def loratool(*args):
    subprocess.run([LT, *args], check=True, stdout=subprocess.DEVNULL)


def logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def main():
    ref = np.load(os.path.join(FIX, "logits.npz"))
    ids = ref["prompt_ids"].tolist()
    base_dir = os.path.join(FIX, "tiny_llama")
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in ["plain", "rslora_patterns", "dora", "embed"]:
            out = os.path.join(tmp, name)
            loratool("convert", os.path.join(FIX, "peft", name), "--to", "peft", "-o", out)
            base = AutoModelForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32)
            model = PeftModel.from_pretrained(base, out).eval()
            got = logits(model, ids)
            want = ref[f"hf_peft_{name}"]
            diff = float(np.abs(got - want).max())
            effect = float(np.abs(want - ref["hf_base"]).max())
            ok = diff < 1e-4
            failures += not ok
            print(f"peft/{name}: max |logit diff| vs PEFT's own = {diff:.2e} (LoRA effect {effect:.2f}) {'ok' if ok else 'FAIL'}")

        # generated fp16 adapter with patterns: original vs rewritten, both loaded by PEFT
        out = os.path.join(tmp, "gen")
        loratool("convert", os.path.join(FIX, "gen_llama_peft"), "--to", "peft", "-o", out)
        res = []
        for d in [os.path.join(FIX, "gen_llama_peft"), out]:
            base = AutoModelForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32)
            res.append(logits(PeftModel.from_pretrained(base, d).eval(), ids))
        diff = float(np.abs(res[0] - res[1]).max())
        ok = diff == 0.0
        failures += not ok
        print(f"gen_llama_peft: original vs loratool rewrite, max |diff| = {diff:.2e} {'ok' if ok else 'FAIL'}")
    if failures:
        sys.exit(f"{failures} check(s) failed")
    print("all PEFT consumer checks passed")


if __name__ == "__main__":
    main()
