//! safetensors reading and writing: hostile headers are refused with errors that name the file
//! and tensor, output bytes equal the reference serializer's (the `safetensors` crate), and a
//! failed write leaves nothing behind.

mod common;

use common::tempdir;
use indexmap::IndexMap;
use loratool::io::{write_safetensors, PendingTensor, SafetensorsFile, TensorStore};
use loratool::tensor::{DType, Tensor};
use std::borrow::Cow;
use std::path::{Path, PathBuf};

fn raw_file(dir: &Path, name: &str, header: &str, data_len: usize) -> PathBuf {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(std::iter::repeat_n(0u8, data_len));
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn open_err(p: &Path) -> String {
    match SafetensorsFile::open(p) {
        Ok(_) => panic!("{} should have been refused", p.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn hostile_headers_are_refused_with_named_errors() {
    let dir = tempdir();
    let d = dir.path();
    let cases: Vec<(&str, String, usize, Vec<&str>)> = vec![
        (
            "past_end.safetensors",
            r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#.to_string(),
            4,
            vec!["'w'", "run past", "data region"],
        ),
        (
            "overlap.safetensors",
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#.to_string(),
            16,
            vec!["'b'", "overlaps", "'a'"],
        ),
        (
            "shape_bytes.safetensors",
            r#"{"w":{"dtype":"F16","shape":[3,3],"data_offsets":[0,8]}}"#.to_string(),
            8,
            vec!["'w'", "needs 18 bytes", "hold 8"],
        ),
        (
            "huge_shape.safetensors",
            r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}"#.to_string(),
            8,
            vec!["'w'", "overflows"],
        ),
        (
            "backwards.safetensors",
            r#"{"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}"#.to_string(),
            8,
            vec!["'w'", "backwards"],
        ),
        (
            "dtype.safetensors",
            r#"{"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,2]}}"#.to_string(),
            2,
            vec!["'w'", "unsupported dtype Q4"],
        ),
        (
            "json.safetensors",
            r#"{"w":{"dtype":"F32","#.to_string(),
            0,
            vec!["not valid JSON"],
        ),
        (
            "negative.safetensors",
            r#"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#.to_string(),
            4,
            vec!["'w'", "non-negative"],
        ),
        (
            "meta.safetensors",
            r#"{"__metadata__":{"k":5}}"#.to_string(),
            0,
            vec!["__metadata__", "'k'"],
        ),
    ];
    for (name, header, data, needles) in cases {
        let p = raw_file(d, name, &header, data);
        let e = open_err(&p);
        assert!(
            e.contains(name),
            "{name}: error does not name the file: {e}"
        );
        for n in needles {
            assert!(e.contains(n), "{name}: error lacks '{n}': {e}");
        }
    }
}

#[test]
fn declared_header_lengths_are_checked_before_allocation() {
    let dir = tempdir();
    // header length claims 2^60 bytes: refused without allocating it
    let p = dir.path().join("huge_header.safetensors");
    let mut b = (1u64 << 60).to_le_bytes().to_vec();
    b.extend_from_slice(b"{}");
    std::fs::write(&p, b).unwrap();
    let e = open_err(&p);
    assert!(e.contains("exceeds") && e.contains("huge_header"), "{e}");
    // header length past the end of a small file
    let p = dir.path().join("short.safetensors");
    let mut b = 1000u64.to_le_bytes().to_vec();
    b.extend_from_slice(b"{}");
    std::fs::write(&p, b).unwrap();
    let e = open_err(&p);
    assert!(e.contains("past the end"), "{e}");
    // shorter than the length prefix
    let p = dir.path().join("tiny.safetensors");
    std::fs::write(&p, b"abc").unwrap();
    assert!(open_err(&p).contains("shorter than the 8-byte"));
}

fn sample_tensors() -> Vec<(String, Tensor)> {
    let vals: Vec<f32> = (0..24).map(|i| i as f32 * 0.25 - 3.0).collect();
    vec![
        (
            "b.weight".into(),
            Tensor::from_f32(vec![4, 6], &vals, DType::F16).unwrap(),
        ),
        (
            "a.weight".into(),
            Tensor::from_f32(vec![6, 4], &vals, DType::F32).unwrap(),
        ),
        ("a.alpha".into(), Tensor::scalar(4.0, DType::I64).unwrap()),
        (
            "c.weight".into(),
            Tensor::from_f32(vec![3, 8], &vals, DType::BF16).unwrap(),
        ),
        ("z.alpha".into(), Tensor::scalar(2.0, DType::F16).unwrap()),
    ]
}

/// The reference serializer's bytes for the same tensors.
fn reference_bytes(tensors: &[(String, Tensor)], md: Option<(&str, &str)>) -> Vec<u8> {
    use safetensors::tensor::TensorView;
    use safetensors::Dtype;
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, t)| {
            let dt = match t.dtype() {
                DType::F32 => Dtype::F32,
                DType::F16 => Dtype::F16,
                DType::BF16 => Dtype::BF16,
                DType::I64 => Dtype::I64,
                other => panic!("{other}"),
            };
            (
                n.clone(),
                TensorView::new(dt, t.shape().to_vec(), t.bytes()).unwrap(),
            )
        })
        .collect();
    let md = md.map(|(k, v)| std::collections::HashMap::from([(k.to_string(), v.to_string())]));
    safetensors::serialize(views, md).unwrap()
}

#[test]
fn written_bytes_equal_the_reference_serializer() {
    let dir = tempdir();
    let tensors = sample_tensors();
    for md in [None, Some(("format", "pt"))] {
        let pending: Vec<PendingTensor> = tensors
            .iter()
            .map(|(n, t)| PendingTensor::from_tensor(n.clone(), t))
            .collect();
        let meta: Option<IndexMap<String, String>> =
            md.map(|(k, v)| IndexMap::from([(k.to_string(), v.to_string())]));
        let p = dir.path().join("out.safetensors");
        let report = write_safetensors(&p, &pending, meta.as_ref(), &|_| {}).unwrap();
        let ours = std::fs::read(&p).unwrap();
        assert_eq!(ours, reference_bytes(&tensors, md), "metadata {md:?}");
        assert_eq!(report.bytes, ours.len() as u64);
        // and we read back what we wrote
        let f = SafetensorsFile::open(&p).unwrap();
        for (n, t) in &tensors {
            let r = f.tensor(n).unwrap();
            assert_eq!(r.bytes(), t.bytes(), "{n}");
            assert_eq!(r.shape(), t.shape(), "{n}");
        }
    }
}

#[test]
fn failed_write_leaves_no_output_and_no_temp_file() {
    let dir = tempdir();
    let p = dir.path().join("out.safetensors");
    std::fs::write(&p, b"previous content").unwrap();
    let good = Tensor::from_f32(vec![2], &[1.0, 2.0], DType::F32).unwrap();
    let pending = vec![
        PendingTensor::from_tensor("a", &good),
        PendingTensor {
            written: None,
            source: None,
            name: "b".into(),
            dtype: DType::F32,
            shape: vec![2],
            data: Box::new(|| {
                Err(loratool::Error::Invalid(
                    "simulated failure mid-write".into(),
                ))
            }),
        },
    ];
    let e = write_safetensors(&p, &pending, None, &|_| {}).unwrap_err();
    assert!(e.to_string().contains("simulated failure"));
    assert_eq!(std::fs::read(&p).unwrap(), b"previous content");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "temp files left behind: {names:?}");

    // a producer that returns the wrong byte count is caught too
    let short = vec![PendingTensor {
        written: None,
        source: None,
        name: "c".into(),
        dtype: DType::F32,
        shape: vec![4],
        data: Box::new(|| Ok(Cow::Owned(vec![0u8; 8]))),
    }];
    let e = write_safetensors(&dir.path().join("new.safetensors"), &short, None, &|_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("'c'") && e.contains("needs 16"), "{e}");
    assert!(!dir.path().join("new.safetensors").exists());
}

#[test]
fn sharded_models_open_as_one_map_and_hostile_shard_names_are_refused() {
    let dir = tempdir();
    let d = dir.path();
    let tensors = sample_tensors();
    let (first, second) = tensors.split_at(2);
    for (file, part) in [("s1.safetensors", first), ("s2.safetensors", second)] {
        std::fs::write(d.join(file), reference_bytes(part, None)).unwrap();
    }
    let mut map = serde_json::Map::new();
    for (n, _) in first {
        map.insert(n.clone(), "s1.safetensors".into());
    }
    for (n, _) in second {
        map.insert(n.clone(), "s2.safetensors".into());
    }
    let index = serde_json::json!({"metadata": {"total_size": 1}, "weight_map": map});
    std::fs::write(d.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let store = TensorStore::open(d).unwrap();
    assert_eq!(store.len(), tensors.len());
    assert_eq!(store.files().len(), 2);
    for (n, t) in &tensors {
        assert_eq!(store.tensor(n).unwrap().bytes(), t.bytes(), "{n}");
    }

    let bad = serde_json::json!({"weight_map": {"a.weight": "../s1.safetensors"}});
    let p = d.join("bad.index.json");
    std::fs::write(&p, bad.to_string()).unwrap();
    let e = TensorStore::open(&p).err().expect("refused").to_string();
    assert!(
        e.contains("../s1.safetensors") && e.contains("plain file name"),
        "{e}"
    );

    let missing = serde_json::json!({"weight_map": {"nope": "s1.safetensors"}});
    let p = d.join("missing.index.json");
    std::fs::write(&p, missing.to_string()).unwrap();
    let e = TensorStore::open(&p).err().expect("refused").to_string();
    assert!(e.contains("'nope'") && e.contains("s1.safetensors"), "{e}");
}

#[test]
fn f8_and_half_dtypes_read_as_f32() {
    let dir = tempdir();
    // F8_E4M3: 0x38 = 1.0, 0xC0 = -2.0; F8_E5M2: 0x3C = 1.0, 0x40 = 2.0
    let header = r#"{"a":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"F8_E5M2","shape":[2],"data_offsets":[2,4]},"c":{"dtype":"BF16","shape":[1],"data_offsets":[4,6]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&[0x38, 0xC0, 0x3C, 0x40, 0xC0, 0x3F]);
    let p = dir.path().join("f8.safetensors");
    std::fs::write(&p, bytes).unwrap();
    let f = SafetensorsFile::open(&p).unwrap();
    assert_eq!(f.tensor("a").unwrap().to_f32(), vec![1.0, -2.0]);
    assert_eq!(f.tensor("b").unwrap().to_f32(), vec![1.0, 2.0]);
    assert_eq!(f.tensor("c").unwrap().to_f32(), vec![1.5]);
}
