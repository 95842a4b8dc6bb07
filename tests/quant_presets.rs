//! Quantizing GGUF models as llama-quantize does: its presets (per-tensor mixtures), `--pure`
//! types and importance matrices, checked against files llama.cpp's own tools made
//! (`fixtures/quant_presets/`, see its README):
//!
//! - `expected.json`: for each llama-quantize run on the committed llama / qwen2 models (with
//!   or without `--pure`, with or without an importance matrix from llama-imatrix, GGUF and
//!   legacy `.dat`), every output tensor's type and the sha256 of its bytes, and the output
//!   metadata. loratool's output must have the same type and the same bytes for every tensor.
//! - `rules.json`: the type llama-quantize `--dry-run` chose for every tensor of larger
//!   synthetic models (32- and 80-layer llama, an 8-expert MoE, falcon, qwen2 with odd row
//!   sizes) under every preset; loratool's choice must be the same.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use loratool::io::gguf::{GgufFile, GgufValue};
use loratool::io::imatrix::ImportanceMatrix;
use loratool::ops::gguf_quantize::{quantize_gguf, Imatrix, QuantizeOptions};
use loratool::ops::quant_preset::{choose_types, ModelFacts, QuantTarget, TensorShape};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/quant_presets")
}

fn json(name: &str) -> Value {
    let path = dir().join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).expect("fixture JSON parses")
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The committed inputs are the files the expectations were made from.
#[test]
fn inputs_are_the_files_llama_quantize_read() {
    let e = json("expected.json");
    for name in [
        "llama.gguf",
        "qwen2.gguf",
        "llama.imatrix.gguf",
        "llama.imatrix.dat",
        "qwen2.imatrix.gguf",
    ] {
        let bytes = std::fs::read(dir().join(name)).unwrap();
        assert_eq!(
            sha256(&bytes),
            e[name]["sha256"].as_str().unwrap(),
            "{name} changed since expected.json was made"
        );
    }
}

/// One llama-quantize run: `[--pure] [--imatrix FILE] TYPE`, read as loratool reads the same
/// request (`--pure` = a uniform type, otherwise `--type NAME --mixture`).
struct Case<'a> {
    input: &'a str,
    pure: bool,
    imatrix: Option<&'a str>,
    ty: &'a str,
}

fn parse_case(c: &Value) -> Case<'_> {
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let mut case = Case {
        input: c["input"].as_str().unwrap(),
        pure: false,
        imatrix: None,
        ty: args[args.len() - 1],
    };
    let mut i = 0;
    while i + 1 < args.len() {
        match args[i] {
            "--pure" => case.pure = true,
            "--imatrix" => {
                case.imatrix = Some(args[i + 1]);
                i += 1;
            }
            other => panic!("unexpected llama-quantize argument {other}"),
        }
        i += 1;
    }
    case
}

/// The metadata as the fixture records it: `[key, type, value]`, arrays without contents.
fn describe_kv(kv: &IndexMap<String, GgufValue>) -> Vec<(String, String, Value)> {
    kv.iter()
        .map(|(k, v)| {
            let (ty, val) = match v {
                GgufValue::U8(x) => ("uint8", Value::from(*x)),
                GgufValue::I8(x) => ("int8", Value::from(*x)),
                GgufValue::U16(x) => ("uint16", Value::from(*x)),
                GgufValue::I16(x) => ("int16", Value::from(*x)),
                GgufValue::U32(x) => ("uint32", Value::from(*x)),
                GgufValue::I32(x) => ("int32", Value::from(*x)),
                GgufValue::U64(x) => ("uint64", Value::from(*x)),
                GgufValue::I64(x) => ("int64", Value::from(*x)),
                GgufValue::F32(x) => ("float32", Value::from(*x as f64)),
                GgufValue::F64(x) => ("float64", Value::from(*x)),
                GgufValue::Bool(x) => ("bool", Value::from(*x)),
                GgufValue::String(s) => ("string", Value::from(s.as_str())),
                GgufValue::Array { .. } => ("array", Value::Null),
            };
            (k.clone(), ty.to_string(), val)
        })
        .collect()
}

fn run_case(c: &Value, tmp: &Path) -> Vec<String> {
    let case = parse_case(c);
    let input = GgufFile::open(&dir().join(case.input)).unwrap();
    let target = QuantTarget::parse(case.ty, !case.pure).unwrap();
    let target = match (case.pure, target) {
        // `--pure NAME`: the default type of llama-quantize's NAME, uniformly
        (true, t) => QuantTarget::Uniform(t.default_type()),
        (false, t) => t,
    };
    let matrix = case
        .imatrix
        .map(|f| ImportanceMatrix::open(&dir().join(f)).unwrap());
    let opts = QuantizeOptions {
        target,
        allow_requantize: false,
        imatrix: matrix
            .as_ref()
            .zip(case.imatrix)
            .map(|(matrix, file)| Imatrix { matrix, file }),
    };
    let out = tmp.join("out.gguf");
    quantize_gguf(&input, &out, opts, &|_| {}).unwrap();
    let ours = GgufFile::open(&out).unwrap();
    let label = c["args"].to_string();
    let mut problems = Vec::new();

    // every tensor: same type, same bytes
    let expected = c["tensors"].as_array().unwrap();
    assert_eq!(expected.len(), ours.tensors.len(), "{label}: tensor count");
    for t in expected {
        let name = t[0].as_str().unwrap();
        let Some(info) = ours.tensors.get(name) else {
            problems.push(format!("{label}: {name} missing"));
            continue;
        };
        let ty = loratool::io::gguf::ggml_type_layout(info.ggml_type)
            .unwrap()
            .2;
        if !ty.eq_ignore_ascii_case(t[1].as_str().unwrap()) {
            problems.push(format!(
                "{label}: {name} is {ty}, llama-quantize wrote {}",
                t[1]
            ));
        } else if sha256(ours.tensor_bytes(name).unwrap()) != t[2].as_str().unwrap() {
            problems.push(format!("{label}: {name} ({ty}) bytes differ"));
        }
    }

    // the metadata, in order, with its value types; a uniform K-quant names its file type
    // after the "S" preset in loratool, where llama-quantize `--pure Q4_K` names it after the
    // alias (Q4_K_M)
    let alias = case.pure && ["Q3_K", "Q4_K", "Q5_K"].contains(&case.ty);
    let want: Vec<(String, String, Value)> = c["kv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k[0].as_str().unwrap().to_string(),
                k[1].as_str().unwrap().to_string(),
                k[2].clone(),
            )
        })
        .filter(|k| !(alias && k.0 == "general.file_type"))
        .collect();
    let got: Vec<(String, String, Value)> = describe_kv(&ours.kv)
        .into_iter()
        .filter(|k| !(alias && k.0 == "general.file_type"))
        .collect();
    if want != got {
        problems.push(format!(
            "{label}: metadata differs:\n  llama-quantize {want:?}\n  loratool       {got:?}"
        ));
    }
    problems
}

fn run_cases(filter: impl Fn(&Case<'_>) -> bool) {
    let e = json("expected.json");
    let tmp = tempfile::tempdir().unwrap();
    let mut problems = Vec::new();
    let mut n = 0;
    for c in e["cases"].as_array().unwrap() {
        if filter(&parse_case(c)) {
            problems.extend(run_case(c, tmp.path()));
            n += 1;
        }
    }
    assert!(n > 0, "no cases selected");
    assert!(
        problems.is_empty(),
        "{} problems in {n} cases:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn presets_equal_llama_quantize() {
    run_cases(|c| !c.pure && c.imatrix.is_none());
}

#[test]
fn pure_types_equal_llama_quantize() {
    run_cases(|c| c.pure && c.imatrix.is_none());
}

#[test]
fn importance_matrix_quantization_equals_llama_quantize() {
    run_cases(|c| c.imatrix.is_some_and(|f| f.ends_with(".gguf")));
}

#[test]
fn legacy_importance_matrix_equals_llama_quantize() {
    run_cases(|c| c.imatrix.is_some_and(|f| f.ends_with(".dat")));
}

fn kv_from_json(kv: &Value) -> IndexMap<String, GgufValue> {
    kv.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => GgufValue::String(s.clone()),
                Value::Number(n) if n.is_u64() => GgufValue::U32(n.as_u64().unwrap() as u32),
                Value::Number(n) => GgufValue::F32(n.as_f64().unwrap() as f32),
                other => panic!("{k}: unexpected {other}"),
            };
            (k.clone(), v)
        })
        .collect()
}

#[test]
fn preset_rules_equal_llama_quantize_on_larger_models() {
    let rules = json("rules.json");
    let mut problems = Vec::new();
    for m in rules["models"].as_array().unwrap() {
        let model = m["name"].as_str().unwrap();
        let facts = ModelFacts::from_kv(&kv_from_json(&m["kv"])).unwrap();
        let tensors: Vec<(String, Vec<u64>, String)> = m["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t[0].as_str().unwrap().to_string(),
                    t[1].as_array()
                        .unwrap()
                        .iter()
                        .map(|d| d.as_u64().unwrap())
                        .collect(),
                    t[2].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let shapes: Vec<TensorShape<'_>> = tensors
            .iter()
            .map(|(name, dims, _)| TensorShape { name, dims })
            .collect();
        for (preset, types) in m["types"].as_object().unwrap() {
            let target = QuantTarget::parse(preset, true).unwrap();
            let ours = choose_types(target, &facts, &shapes, false).unwrap();
            for ((t, want), got) in tensors.iter().zip(types.as_array().unwrap()).zip(ours) {
                let got = got.to.map_or(t.2.clone(), |q| q.name().to_string());
                if !got.eq_ignore_ascii_case(want.as_str().unwrap()) {
                    problems.push(format!(
                        "{model} {preset} {}: ours {got}, llama-quantize {want}",
                        t.0
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} differences:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The command line end to end: `loratool quantize --type q4_k_m --imatrix` writes the file
/// `llama-quantize --imatrix llama.imatrix.gguf llama.gguf OUT Q4_K_M` wrote (every tensor's type
/// and bytes), run like the generator ran llama-quantize: from the fixture directory, so the
/// recorded `quantize.imatrix.file` is the bare file name.
#[test]
fn cli_preset_with_importance_matrix_equals_llama_quantize() {
    let e = json("expected.json");
    let case = e["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["input"] == "llama.gguf"
                && c["args"] == serde_json::json!(["--imatrix", "llama.imatrix.gguf", "Q4_K_M"])
        })
        .expect("the Q4_K_M imatrix run is in expected.json");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.gguf");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_loratool"))
        .current_dir(dir())
        .args(["quantize", "llama.gguf", "--type", "q4_k_m"])
        .args(["--imatrix", "llama.imatrix.gguf", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ours = GgufFile::open(&out).unwrap();
    let expected = case["tensors"].as_array().unwrap();
    assert_eq!(expected.len(), ours.tensors.len());
    for t in expected {
        let name = t[0].as_str().unwrap();
        let ty = loratool::io::gguf::ggml_type_layout(ours.tensors[name].ggml_type)
            .unwrap()
            .2;
        assert!(ty.eq_ignore_ascii_case(t[1].as_str().unwrap()), "{name}");
        assert_eq!(
            sha256(ours.tensor_bytes(name).unwrap()),
            t[2].as_str().unwrap(),
            "{name}"
        );
    }
    let want: Vec<Value> = case["kv"].as_array().unwrap().clone();
    let got: Vec<Value> = describe_kv(&ours.kv)
        .into_iter()
        .map(|(k, t, v)| serde_json::json!([k, t, v]))
        .collect();
    assert_eq!(want, got);
}

/// An importance matrix made for another model is refused, naming the tensor it lacks, and
/// no output is left behind.
#[test]
fn cli_importance_matrix_of_another_model_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.gguf");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_loratool"))
        .args(["quantize", "--type", "q4_k_m", "--imatrix"])
        .arg(dir().join("qwen2.imatrix.gguf"))
        .arg(dir().join("llama.gguf"))
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    // qwen2 has 2 blocks, llama 4: blk.2.* has no entry in the qwen2 matrix (or an earlier
    // tensor has the wrong size: qwen2's rows differ); either way a tensor is named
    assert!(err.contains("blk."), "{err}");
    assert!(!out.exists(), "half-written output left behind");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}
