#!/usr/bin/env python3
"""Check formats/gguf_names.tsv and gguf_archs.tsv against gguf-py's own name map.

For every row, gguf-py's `TensorNameMap(arch, n_blocks)` must map the Hugging Face module
(block index substituted) to the GGUF tensor named in the table; for each architecture, every
module the table leaves out that gguf-py maps must be deliberate (listed below). Run in CI
with the pinned `gguf` package; exits non-zero on any difference.
"""
import sys
from pathlib import Path

from gguf import MODEL_ARCH, MODEL_ARCH_NAMES, TensorNameMap

HERE = Path(__file__).resolve().parent.parent
# gguf-py maps lm_head for these, but their converters drop it (tied embeddings)
DROPPED_LM_HEAD = {"gemma", "gemma2"}


def rows(name):
    lines = (HERE / name).read_text().splitlines()
    assert lines[0].startswith("#"), f"{name}: header line"
    return [l.split("\t") for l in lines[1:]]


def main():
    by_name = {v: k for k, v in MODEL_ARCH_NAMES.items()}
    errors = []
    archs = rows("gguf_archs.tsv")
    names = rows("gguf_names.tsv")
    for hf_arch, arch, permute, tied in archs:
        if arch not in by_name:
            errors.append(f"gguf_archs.tsv: {hf_arch}: gguf-py has no architecture '{arch}'")
        if permute not in ("yes", "no") or tied not in ("yes", "no"):
            errors.append(f"gguf_archs.tsv: {hf_arch}: columns 3-4 must be yes/no")
        if permute == "yes" and arch != "llama":
            errors.append(f"gguf_archs.tsv: {hf_arch}: only llama-arch permutes q/k")
    checked = 0
    for arch, hf, gg, transform in names:
        if arch not in by_name:
            errors.append(f"gguf_names.tsv: unknown arch {arch}")
            continue
        tmap = TensorNameMap(by_name[arch], 4)
        for n in (0, 3) if "{N}" in hf else (None,):
            h = hf.replace("{N}", str(n))
            want = gg.replace("{N}", str(n))
            got = tmap.get_name(h + ".weight", try_suffixes=(".weight",))
            checked += 1
            if got != want:
                errors.append(f"{arch}: {h}: table says {want}, gguf-py says {got}")
        if transform not in ("-", "rope_q", "rope_k", "embed", "lm_head"):
            errors.append(f"{arch}: {hf}: unknown transform {transform}")
    for arch in DROPPED_LM_HEAD:
        if any(r[0] == arch and r[1] == "lm_head" for r in names):
            errors.append(f"{arch}: lm_head must not be in the table (tied, dropped)")
    for e in errors:
        print(e, file=sys.stderr)
    print(f"checked {checked} names in {len(archs)} architectures: {len(errors)} differences")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
