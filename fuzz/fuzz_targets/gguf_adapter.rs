//! llama.cpp GGUF LoRA reader (names through the arch tables, q/k permutation undone, embedding
//! transposed back) and the base-model reader on the same bytes. What reads writes as a GGUF
//! LoRA for the same base and reads back with the same ΔW per module (the writer folds
//! per-module alphas into B, so factors may be rescaled; F16/BF16 storage rounds that).
#![no_main]
use loratool::adapter::gguf::{self, base::from_gguf, GgufBase};
use loratool::adapter::ReadOptions;
use loratool::formats::gguf::arch_for_gguf;
use loratool::io::gguf::GgufFile;
use loratool_fuzz::{assert_names_file, assert_same_adapter, run, Tolerance};

libfuzzer_sys::fuzz_target!(|data: &[u8]| run(data, |data, scratch| {
    let path = scratch.write("in.gguf", data);
    let Ok(file) = GgufFile::open(&path) else {
        return; // the container is the gguf target's
    };
    if let Err(e) = from_gguf(&file) {
        assert_names_file(&e, &path);
    }
    // a base with one head: the q/k permutation is exercised on any even row count
    let base = file
        .architecture()
        .and_then(arch_for_gguf)
        .map(|arch| GgufBase {
            arch,
            n_head: 1,
            n_kv_head: 1,
            tied_embeddings: false,
            tensor_shapes: None,
            source: "fuzz base".into(),
        });
    let opts = ReadOptions {
        skip_unknown: true,
        ..ReadOptions::default()
    };
    let adapter = match gguf::read(&path, base.as_ref(), opts) {
        Ok(a) => a,
        Err(e) => return assert_names_file(&e, &path),
    };
    let Some(base) = base else {
        panic!("an adapter read without knowing its architecture");
    };
    let out = scratch.path("out/lora.gguf");
    if let Err(e) = gguf::write(&adapter, &base, &out, None, &|_| {}) {
        assert!(
            scratch.list("out").is_empty(),
            "a failed write left {:?}",
            scratch.list("out")
        );
        panic!("an adapter the GGUF reader accepted cannot be written as GGUF: {e}");
    }
    let back = gguf::read(&out, Some(&base), ReadOptions::default()).expect("written file reads");
    assert_same_adapter(&adapter, &back, Tolerance::Delta(2e-3));
}));
