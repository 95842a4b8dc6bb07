//! GGUF container: metadata of every type, arrays, tensor infos, alignment. Whatever parses
//! exposes each tensor's bytes, and write → read gives back the same metadata (types kept) and
//! tensors.
#![no_main]
use indexmap::IndexMap;
use loratool::io::gguf::{write_gguf, GgufFile, GgufValue, PendingGgufTensor, MAX_WRITE_ALIGNMENT};
use loratool_fuzz::{assert_names_file, run};
use std::borrow::Cow;

/// Equality with floats compared by bits (NaN metadata must survive too).
fn same(a: &GgufValue, b: &GgufValue) -> bool {
    match (a, b) {
        (GgufValue::F32(x), GgufValue::F32(y)) => x.to_bits() == y.to_bits(),
        (GgufValue::F64(x), GgufValue::F64(y)) => x.to_bits() == y.to_bits(),
        (
            GgufValue::Array {
                elem_type: ta,
                items: ia,
            },
            GgufValue::Array {
                elem_type: tb,
                items: ib,
            },
        ) => ta == tb && ia.len() == ib.len() && ia.iter().zip(ib).all(|(x, y)| same(x, y)),
        _ => a == b,
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| run(data, |data, scratch| {
    let path = scratch.write("in.gguf", data);
    let file = match GgufFile::open(&path) {
        Ok(f) => f,
        Err(e) => return assert_names_file(&e, &path),
    };
    for (name, t) in &file.tensors {
        let bytes = file.tensor_bytes(name).expect("a parsed tensor has bytes");
        assert_eq!(bytes.len() as u64, t.byte_len, "{name}");
        assert!(
            t.offset % file.alignment == 0,
            "{name}: unaligned offset accepted"
        );
    }
    let pending: Vec<PendingGgufTensor> = file
        .tensors
        .iter()
        .map(|(name, t)| {
            let f = &file;
            PendingGgufTensor {
                name: name.clone(),
                dims: t.dims.clone(),
                ggml_type: t.ggml_type,
                data: Box::new(move || f.tensor_bytes(name).map(Cow::Borrowed)),
                written: None,
            }
        })
        .collect();
    let out = scratch.path("out.gguf");
    if let Err(e) = write_gguf(&out, &file.kv, &pending, &|_| {}) {
        // the one refusal allowed: an alignment whose padding loratool will not write
        assert!(
            file.alignment > MAX_WRITE_ALIGNMENT,
            "a file that parses cannot be written: {e}"
        );
        assert!(!out.exists(), "a refused write left {}", out.display());
        return;
    }
    let back = GgufFile::open(&out).expect("the written file reads");
    let keys = |kv: &IndexMap<String, GgufValue>| kv.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&back.kv), keys(&file.kv), "metadata keys");
    for (k, v) in &file.kv {
        assert!(
            same(v, &back.kv[k]),
            "metadata '{k}': {v} became {}",
            back.kv[k]
        );
    }
    assert_eq!(back.alignment, file.alignment);
    let names = |f: &GgufFile| f.tensors.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&back), names(&file), "tensor names");
    for (name, t) in &file.tensors {
        let b = &back.tensors[name];
        assert_eq!((&b.dims, b.ggml_type), (&t.dims, t.ggml_type), "{name}");
        assert!(
            back.tensor_bytes(name).expect("bytes") == file.tensor_bytes(name).expect("bytes"),
            "{name}: bytes differ"
        );
    }
}));
