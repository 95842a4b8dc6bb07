# Sourced by the fuzz scripts: every target and its dictionary. A new target is a file in
# fuzz_targets/, a [[bin]] in Cargo.toml, and a line here.
declare -A FUZZ_DICT=(
    [safetensors]=safetensors
    [gguf]=gguf
    [peft_config]=peft_config
    [kohya]=adapter
    [diffusers]=adapter
    [peft]=adapter
    [gguf_adapter]=gguf
    [registry_json]=registry
    [sharded_index]=sharded_index
)
FUZZ_TARGETS=(safetensors gguf peft_config kohya diffusers peft gguf_adapter registry_json sharded_index)
FUZZ_BIN_DIR=target/x86_64-unknown-linux-gnu/release
