//! diffusers LoRA reader (`pytorch_lora_weights.safetensors`, `lora_adapter_metadata`), a whole
//! file in: an `Adapter` or an error naming the file; what reads writes as diffusers and reads
//! back bit-identical.
#![no_main]
use loratool::adapter::{diffusers, ReadOptions};
use loratool_fuzz::{assert_names_file, assert_same_adapter, run, Tolerance};

libfuzzer_sys::fuzz_target!(|data: &[u8]| run(data, |data, scratch| {
    let path = scratch.write("in.safetensors", data);
    let adapter = match diffusers::read(
        &path,
        ReadOptions {
            skip_unknown: true,
            ..ReadOptions::default()
        },
    ) {
        Ok(a) => a,
        Err(e) => return assert_names_file(&e, &path),
    };
    let out = scratch.path("out");
    if let Err(e) = diffusers::write(&adapter, &out, &|_| {}) {
        assert!(
            scratch.list("out").is_empty(),
            "a failed write left {:?}",
            scratch.list("out")
        );
        panic!("an adapter the diffusers reader accepted cannot be written as diffusers: {e}");
    }
    let back = diffusers::read(&out, ReadOptions::default()).expect("the written file reads");
    assert_same_adapter(&adapter, &back, Tolerance::Exact);
}));
