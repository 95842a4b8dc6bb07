//! safetensors header + tensor table: `SafetensorsFile::open` and `parse_header` agree, every
//! tensor that parses can be viewed at its declared size, and write → read gives back the same
//! tensors and metadata.
#![no_main]
use loratool::io::safetensors::parse_header;
use loratool::io::{write_safetensors, PendingTensor, SafetensorsFile};
use loratool_fuzz::{assert_names_file, run};

libfuzzer_sys::fuzz_target!(|data: &[u8]| run(data, |data, scratch| {
    let path = scratch.write("in.safetensors", data);
    let direct = parse_header(&path, data, data.len() as u64);
    let file = match SafetensorsFile::open(&path) {
        Ok(f) => f,
        Err(e) => {
            assert_names_file(&e, &path);
            assert!(
                direct.is_err(),
                "open failed ({e}) but parse_header accepted the bytes"
            );
            return;
        }
    };
    assert!(direct.is_ok(), "open accepted what parse_header refused");
    let tensors: Vec<(String, loratool::tensor::Tensor)> = file
        .tensors()
        .iter()
        .map(|(name, info)| {
            let t = file.tensor(name).expect("a parsed tensor can be viewed");
            assert_eq!(t.byte_len(), info.byte_len());
            assert_eq!(
                file.tensor_bytes(name).expect("bytes").len(),
                info.byte_len()
            );
            (name.clone(), t)
        })
        .collect();
    let pending: Vec<PendingTensor> = tensors
        .iter()
        .map(|(n, t)| PendingTensor::from_tensor(n.clone(), t))
        .collect();
    let out = scratch.path("out.safetensors");
    write_safetensors(&out, &pending, Some(file.metadata()), &|_| {})
        .expect("a file that parses can be written");
    let back = SafetensorsFile::open(&out).expect("the written file reads");
    assert_eq!(back.metadata(), file.metadata(), "metadata");
    assert_eq!(back.tensors().len(), file.tensors().len(), "tensor count");
    for (name, t) in &tensors {
        let b = back.tensor(name).expect("tensor written");
        assert_eq!((b.dtype(), b.shape()), (t.dtype(), t.shape()), "{name}");
        assert!(b.bytes() == t.bytes(), "{name}: bytes differ");
    }
}));
