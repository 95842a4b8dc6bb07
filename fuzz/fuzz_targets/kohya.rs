//! kohya LoRA reader, a whole file in: an `Adapter` or an error naming the file; what reads
//! writes as kohya and reads back bit-identical (alphas, factors, shapes).
#![no_main]
use loratool::adapter::{detect, kohya, ReadOptions};
use loratool_fuzz::{assert_names_file, assert_same_adapter, run, Tolerance};

libfuzzer_sys::fuzz_target!(|data: &[u8]| run(data, |data, scratch| {
    let path = scratch.write("in.safetensors", data);
    if let Err(e) = detect::detect_format(&path) {
        assert_names_file(&e, &path);
    }
    let adapter = match kohya::read(&path, ReadOptions {
        skip_unknown: true,
        ..ReadOptions::default()
    }) {
        Ok(a) => a,
        Err(e) => return assert_names_file(&e, &path),
    };
    let out = scratch.path("out/lora.safetensors");
    if let Err(e) = kohya::write(&adapter, &out, &|_| {}) {
        assert!(
            scratch.list("out").is_empty(),
            "a failed write left {:?}",
            scratch.list("out")
        );
        panic!("an adapter the kohya reader accepted cannot be written as kohya: {e}");
    }
    let back = kohya::read(&out, ReadOptions::default()).expect("the written file reads");
    assert_same_adapter(&adapter, &back, Tolerance::Exact);
}));
