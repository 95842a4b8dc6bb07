//! GGUF container: files made by llama.cpp's converter read correctly and are rewritten byte
//! for byte; hostile files are refused with errors naming the file and tensor; gguf-py reads
//! what loratool writes.

mod common;

use common::*;
use indexmap::IndexMap;
use loratool::io::gguf::{write_gguf, GgufFile, GgufValue, PendingGgufTensor};
use std::borrow::Cow;
use std::path::Path;

const PLAIN_F32: &str = "gguf/plain-f32.gguf";
const PLAIN_Q8: &str = "gguf/plain-q8_0.gguf";

fn rewrite(src: &GgufFile, out: &Path) {
    let pending: Vec<PendingGgufTensor> = src
        .tensors
        .iter()
        .map(|(name, info)| PendingGgufTensor {
            written: None,
            name: name.clone(),
            dims: info.dims.clone(),
            ggml_type: info.ggml_type,
            data: Box::new(move || Ok(Cow::Borrowed(src.tensor_bytes(name)?))),
        })
        .collect();
    write_gguf(out, &src.kv, &pending, &|_| {}).unwrap();
}

#[test]
fn converter_output_reads_with_its_metadata_types() {
    let f = GgufFile::open(&fixture(PLAIN_F32)).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.architecture(), Some("llama"));
    assert_eq!(f.kv["general.type"], GgufValue::String("adapter".into()));
    assert_eq!(f.kv["adapter.lora.alpha"], GgufValue::F32(8.0));
    assert_eq!(f.kv["general.quantization_version"], GgufValue::U32(2));
    assert_eq!(f.tensors.len(), 28);
    let a = &f.tensors["blk.0.attn_v.weight.lora_a"];
    assert_eq!(a.shape(), vec![4, 128]);
    assert_eq!(a.ggml_type, 0);
    // v_proj is not RoPE-permuted: lora_a holds PEFT's lora_A bytes unchanged
    let peft =
        loratool::io::SafetensorsFile::open(&fixture("peft/plain/adapter_model.safetensors"))
            .unwrap();
    let want = peft
        .tensor("base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight")
        .unwrap();
    assert_eq!(
        f.tensor_bytes("blk.0.attn_v.weight.lora_a").unwrap(),
        want.bytes()
    );

    let q = GgufFile::open(&fixture(PLAIN_Q8)).unwrap();
    assert_eq!(q.tensors["blk.0.attn_v.weight.lora_a"].ggml_type, 8); // Q8_0
    assert_eq!(q.tensors["blk.0.attn_v.weight.lora_b"].ggml_type, 1); // F16 fallback, rows of 4
}

#[test]
fn rewriting_converter_output_is_byte_identical() {
    for rel in [PLAIN_F32, PLAIN_Q8] {
        let src = GgufFile::open(&fixture(rel)).unwrap();
        let dir = tempdir();
        let out = dir.path().join("x.gguf");
        rewrite(&src, &out);
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(fixture(rel)).unwrap(),
            "{rel}"
        );
    }
}

#[test]
fn custom_alignment_and_every_value_type_round_trip_and_gguf_py_agrees() {
    let mut kv = IndexMap::new();
    kv.insert(
        "general.architecture".to_string(),
        GgufValue::String("llama".into()),
    );
    kv.insert("general.alignment".to_string(), GgufValue::U32(64));
    kv.insert("t.u8".to_string(), GgufValue::U8(7));
    kv.insert("t.i16".to_string(), GgufValue::I16(-3));
    kv.insert("t.i64".to_string(), GgufValue::I64(-1 << 40));
    kv.insert("t.f64".to_string(), GgufValue::F64(0.1));
    kv.insert("t.bool".to_string(), GgufValue::Bool(true));
    kv.insert(
        "t.arr".to_string(),
        GgufValue::Array {
            elem_type: 8,
            items: vec![
                GgufValue::String("a".into()),
                GgufValue::String("bc".into()),
            ],
        },
    );
    let a: Vec<u8> = (0..4 * 3 * 4).map(|i| i as u8).collect();
    let b: Vec<u8> = (0..5 * 2).map(|i| (i * 3) as u8).collect();
    let pending = vec![
        PendingGgufTensor {
            written: None,
            name: "a".into(),
            dims: vec![3, 4],
            ggml_type: 0,
            data: Box::new(|| Ok(Cow::Borrowed(&a[..]))),
        },
        PendingGgufTensor {
            written: None,
            name: "b".into(),
            dims: vec![5],
            ggml_type: 1,
            data: Box::new(|| Ok(Cow::Borrowed(&b[..]))),
        },
    ];
    let dir = tempdir();
    let out = dir.path().join("t.gguf");
    let n = write_gguf(&out, &kv, &pending, &|_| {}).unwrap();
    assert_eq!(n, std::fs::metadata(&out).unwrap().len());
    assert_eq!(n % 64, 0, "last tensor padded too");
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(f.kv, kv);
    assert_eq!(f.alignment, 64);
    assert_eq!(f.tensor_bytes("a").unwrap(), &a[..]);
    assert_eq!(f.tensor_bytes("b").unwrap(), &b[..]);
    assert_eq!(f.tensors["a"].shape(), vec![4, 3]);

    // the reference reader (pip gguf, installed by .ci/run)
    let script = r#"
import sys, gguf
r = gguf.GGUFReader(sys.argv[1])
f = r.fields
print(f["t.i64"].contents(), f["t.f64"].contents(), f["t.arr"].contents(), f["general.alignment"].contents())
for t in r.tensors:
    print(t.name, t.tensor_type.name, [int(x) for x in t.shape], t.data.tobytes().hex())
"#;
    let o = std::process::Command::new("python3")
        .args(["-c", script, out.to_str().unwrap()])
        .output()
        .expect("python3");
    assert!(
        o.status.success(),
        "gguf-py failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "-1099511627776 0.1 ['a', 'bc'] 64");
    assert_eq!(lines[1], format!("a F32 [3, 4] {}", hex::encode(&a)));
    assert_eq!(lines[2], format!("b F16 [5] {}", hex::encode(&b)));
}

fn hostile(name: &str, bytes: &[u8]) -> String {
    let dir = tempdir();
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    match GgufFile::open(&p) {
        Ok(_) => panic!("{name} accepted"),
        Err(e) => {
            let e = e.to_string();
            assert!(
                e.contains(name),
                "{name}: error does not name the file: {e}"
            );
            e
        }
    }
}

#[test]
fn hostile_files_are_refused_with_named_errors() {
    let good = std::fs::read(fixture(PLAIN_F32)).unwrap();
    // truncated inside the tensor data
    let e = hostile("trunc.gguf", &good[..good.len() - 300]);
    assert!(e.contains("runs past") && e.contains("lora_"), "{e}");
    // truncated inside the metadata
    let e = hostile("short.gguf", &good[..60]);
    assert!(e.contains("more than the file can hold"), "{e}");
    let e = hostile("short2.gguf", &good[..1200]);
    assert!(e.contains("truncated"), "{e}");
    // absurd counts
    let mut b = good.clone();
    b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    let e = hostile("count.gguf", &b);
    assert!(e.contains("more than the file can hold"), "{e}");
    // not GGUF, big-endian, unsupported version
    assert!(hostile("magic.gguf", b"GGML\x03\0\0\0").contains("magic"));
    let mut b = good.clone();
    b[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert!(hostile("be.gguf", &b).contains("big-endian"));

    // a crafted file: one tensor with a misaligned offset, then a too-long name, then overlap
    let craft = |name: &str, offset: u64, second: Option<(&str, u64)>| -> Vec<u8> {
        let mut v = b"GGUF".to_vec();
        v.extend(3u32.to_le_bytes());
        v.extend((1 + second.is_some() as u64).to_le_bytes());
        v.extend(0u64.to_le_bytes());
        let mut info = |n: &str, off: u64| {
            v.extend((n.len() as u64).to_le_bytes());
            v.extend(n.as_bytes());
            v.extend(1u32.to_le_bytes());
            v.extend(8u64.to_le_bytes());
            v.extend(0u32.to_le_bytes());
            v.extend(off.to_le_bytes());
        };
        info(name, offset);
        if let Some((n, o)) = second {
            info(n, o);
        }
        v.resize(v.len().div_ceil(32) * 32 + 128, 0);
        v
    };
    let e = hostile("misaligned.gguf", &craft("w", 4, None));
    assert!(e.contains("'w'") && e.contains("alignment"), "{e}");
    let long = "x".repeat(64);
    let e = hostile("longname.gguf", &craft(&long, 0, None));
    assert!(e.contains("at most 63"), "{e}");
    let e = hostile("overlap.gguf", &craft("w", 0, Some(("v", 0))));
    assert!(e.contains("overlaps"), "{e}");
}

#[test]
fn writer_refuses_what_llama_cpp_would_reject() {
    let dir = tempdir();
    let out = dir.path().join("bad.gguf");
    let data = [0u8; 64];
    let t = |name: &str, dims: Vec<u64>, ty: u32| PendingGgufTensor {
        written: None,
        name: name.into(),
        dims,
        ggml_type: ty,
        data: Box::new(|| Ok(Cow::Borrowed(&data[..]))),
    };
    let kv = IndexMap::new();
    let e = write_gguf(&out, &kv, &[t(&"n".repeat(64), vec![16], 0)], &|_| {}).unwrap_err();
    assert!(e.to_string().contains("at most 63"));
    let e = write_gguf(&out, &kv, &[t("q", vec![16], 8)], &|_| {}).unwrap_err();
    assert!(e.to_string().contains("block size 32"), "{e}");
    let mut nested = IndexMap::new();
    nested.insert(
        "x".to_string(),
        GgufValue::Array {
            elem_type: 9,
            items: vec![],
        },
    );
    let e = write_gguf(&out, &nested, &[], &|_| {}).unwrap_err();
    assert!(e.to_string().contains("nested"));
    assert!(!out.exists());
}
