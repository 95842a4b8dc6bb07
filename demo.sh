#!/usr/bin/env bash
# Build loratool and run it on the bundled fixtures: inspect a kohya SD 1.5 LoRA made by
# sd-scripts, convert it to the diffusers and PEFT layouts and back to kohya, and check that the
# round trip reproduced the original file's sshs hashes; bake a PEFT adapter into the tiny llama
# and extract it back. Outputs go to ./demo-out/.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --locked --quiet
lt="${CARGO_TARGET_DIR:-target}/release/loratool"
out=demo-out
rm -rf "$out" && mkdir -p "$out"
src=fixtures/kohya/sd15_lora_r4_a2_c3lier.safetensors

"$lt" info "$src"
"$lt" convert "$src" --to diffusers -o "$out/sd15-diffusers"
"$lt" convert "$out/sd15-diffusers" --to peft -o "$out/sd15-peft"
"$lt" convert "$src" --to kohya -o "$out/sd15-rewritten.safetensors"
"$lt" info "$out/sd15-diffusers" --json > "$out/sd15-diffusers.info.json"
"$lt" convert fixtures/gen_sdxl_kohya.safetensors --to diffusers -o "$out/sdxl-diffusers"
"$lt" info fixtures/tiny_llama
"$lt" bake fixtures/tiny_llama fixtures/peft/plain -o "$out/tiny_llama-plain"
"$lt" extract --base fixtures/tiny_llama --tuned "$out/tiny_llama-plain" --rank 4 -o "$out/tiny_llama-extracted" > "$out/extract.txt"
tail -n 1 "$out/extract.txt"

python3 - "$src" "$out/sd15-rewritten.safetensors" <<'PY' 2>/dev/null || echo "(python3 not available: hash comparison skipped)"
import json, struct, sys
def meta(p):
    with open(p, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))["__metadata__"]
a, b = meta(sys.argv[1]), meta(sys.argv[2])
for k in ("sshs_model_hash", "sshs_legacy_hash"):
    print(f"{k}: sd-scripts {a[k][:16]}  loratool {b[k][:16]}  {'same' if a[k] == b[k] else 'DIFFERENT'}")
PY
echo "demo outputs in $out/"
