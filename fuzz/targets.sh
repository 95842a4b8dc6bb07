# Sourced by the fuzz scripts. One line per target: name, dictionary (dict/<name>.dict), and the
# number of runs CI's smoke pass gives it (3-11 s each on an idle 2-core machine; the targets'
# speeds differ 20x). Adding a target: `cargo fuzz add <name>` (creates fuzz_targets/<name>.rs
# and its [[bin]]), write the target with loratool_fuzz::run, add a line here and its seeds to
# make_seeds.py.
FUZZ_TABLE="
safetensors    safetensors    60000
gguf           gguf           60000
peft_config    peft_config    60000
kohya          adapter        8000
diffusers      adapter        25000
peft           adapter        18000
gguf_adapter   gguf           30000
registry_json  registry       150000
sharded_index  sharded_index  50000
lycoris_kohya  lycoris        8000
lycoris_peft   lycoris        8000
remote_replies remote         150000
dit_layouts    dit            250
hub_replies    hub_replies    150000
oci_replies    oci_replies    150000
"
declare -A FUZZ_DICT FUZZ_CI_RUNS
FUZZ_TARGETS=()
while read -r name dict runs; do
    [ -n "$name" ] || continue
    FUZZ_TARGETS+=("$name")
    FUZZ_DICT[$name]=$dict
    FUZZ_CI_RUNS[$name]=$runs
done <<<"$FUZZ_TABLE"
FUZZ_BIN_DIR=${FUZZ_BIN_DIR:-target/x86_64-unknown-linux-gnu/release}
