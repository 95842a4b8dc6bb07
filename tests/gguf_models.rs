//! `loratool quantize` and `loratool bake` on GGUF models: against llama.cpp's converter output,
//! PEFT's own `merge_and_unload`, and gguf-py (tests/interop/check_gguf_models.py).

mod common;

use common::*;
use loratool::adapter::gguf::rope::permute_rows;
use loratool::io::gguf::GgufFile;
use loratool::io::SafetensorsFile;
use std::path::Path;
use std::process::Command;

fn python_check(args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/check_gguf_models.py");
    let o = Command::new("python3")
        .arg(&script)
        .args(args)
        .output()
        .expect("python3 runs (CI installs numpy, safetensors and gguf)");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    println!("{out}");
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[test]
fn quantize_models_as_llama_quantize_and_gguf_py() {
    let dir = tempdir();
    let base = fixture("tiny_llama-f32.gguf");
    for ty in ["q8_0", "q4_0", "q5_1", "q4_k", "q6_k", "f16"] {
        let out = dir.path().join(format!("tiny-{ty}.gguf"));
        let text = run_ok(&["quantize", s(&base), "--type", ty, "-o", s(&out)]);
        assert!(text.contains("quantized"), "{text}");
        python_check(&["quant", s(&base), s(&out), ty]);
    }
    // an already-quantized model is not re-quantized unless asked
    let q8 = dir.path().join("tiny-q8_0.gguf");
    let again = dir.path().join("again.gguf");
    let o = loratool(&["quantize", s(&q8), "--type", "q4_0", "-o", s(&again)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--allow-requantize"), "{}", stderr(&o));
    assert!(!again.exists());
    run_ok(&[
        "quantize",
        s(&q8),
        "--type",
        "q4_0",
        "--allow-requantize",
        "-o",
        s(&again),
    ]);
    python_check(&["quant", s(&q8), s(&again), "q4_0"]);
}

/// A small model whose rows fit the 256-value K-quant blocks (the tiny llama's 128 do not).
fn k_quant_model(path: &Path) {
    use loratool::io::gguf::{write_gguf, GgufValue, PendingGgufTensor};
    use std::borrow::Cow;
    let mut kv = indexmap::IndexMap::new();
    kv.insert(
        "general.architecture".to_string(),
        GgufValue::String("llama".into()),
    );
    kv.insert(
        "general.type".to_string(),
        GgufValue::String("model".into()),
    );
    kv.insert("general.file_type".to_string(), GgufValue::U32(0));
    let tensor = |name: &str, dims: Vec<u64>, seed: u64| {
        let n: u64 = dims.iter().product();
        let t = pseudo(vec![n as usize], seed, loratool::tensor::DType::F32);
        let bytes = t.bytes().to_vec();
        PendingGgufTensor {
            written: None,
            name: name.to_string(),
            dims,
            ggml_type: 0,
            data: Box::new(move || Ok(Cow::Owned(bytes.clone()))),
        }
    };
    let tensors = vec![
        tensor("token_embd.weight", vec![512, 16], 1),
        tensor("blk.0.attn_norm.weight", vec![512], 2),
        tensor("blk.0.attn_q.weight", vec![512, 24], 3),
        tensor("blk.0.ffn_down.weight", vec![352, 8], 4),
        tensor("blk.0.ffn_gate_inp.weight", vec![512, 4], 5),
    ];
    write_gguf(path, &kv, &tensors, &|_| {}).unwrap();
}

#[test]
fn quantize_k_quants_with_their_fallbacks() {
    let dir = tempdir();
    let model = dir.path().join("k.gguf");
    k_quant_model(&model);
    for ty in ["q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "q4_1", "bf16"] {
        let out = dir.path().join(format!("k-{ty}.gguf"));
        run_ok(&["quantize", s(&model), "--type", ty, "-o", s(&out)]);
        python_check(&["quant", s(&model), s(&out), ty]);
    }
}

#[test]
fn quantize_adapter_equals_the_converters_q8_0_file() {
    let dir = tempdir();
    let out = dir.path().join("plain-q8_0.gguf");
    run_ok(&[
        "quantize",
        s(&fixture("gguf/plain-f32.gguf")),
        "--type",
        "q8_0",
        "-o",
        s(&out),
    ]);
    // convert_lora_to_gguf.py --outtype q8_0: lora_a Q8_0, rank-4 lora_b F16
    let (ours, theirs) = (
        GgufFile::open(&out).unwrap(),
        GgufFile::open(&fixture("gguf/plain-q8_0.gguf")).unwrap(),
    );
    assert_eq!(
        ours.tensors.keys().collect::<Vec<_>>(),
        theirs.tensors.keys().collect::<Vec<_>>()
    );
    for (name, t) in &theirs.tensors {
        assert_eq!(ours.tensors[name].ggml_type, t.ggml_type, "{name}");
        assert!(
            ours.tensor_bytes(name).unwrap() == theirs.tensor_bytes(name).unwrap(),
            "{name}"
        );
    }
    python_check(&["quant", s(&fixture("gguf/plain-f32.gguf")), s(&out), "q8_0"]);
}

#[test]
fn bake_equals_peft_merge_and_unload() {
    let dir = tempdir();
    let out = dir.path().join("merged.gguf");
    let base = fixture("tiny_llama-f32.gguf");
    let text = run_ok(&["bake", s(&base), s(&fixture("peft/plain")), "-o", s(&out)]);
    assert!(
        text.contains("baked 1 adapter(s) into 14 of 21 tensors"),
        "{text}"
    );
    // PEFT's merge_and_unload of the same adapter (HF names, unpermuted, f32)
    let peft = SafetensorsFile::open(&fixture("peft_merges/merged/model.safetensors")).unwrap();
    let (ours, basef) = (
        GgufFile::open(&out).unwrap(),
        GgufFile::open(&base).unwrap(),
    );
    let mut worst = 0.0f64;
    for (layer, (hf, gg, heads)) in (0..2).flat_map(|n| {
        [
            ("self_attn.q_proj", "attn_q", Some(8)),
            ("self_attn.k_proj", "attn_k", Some(2)),
            ("self_attn.v_proj", "attn_v", None),
            ("mlp.down_proj", "ffn_down", None),
        ]
        .map(move |x| (n, x))
    }) {
        let want = peft
            .tensor(&format!("model.layers.{layer}.{hf}.weight"))
            .unwrap();
        let cols = want.shape()[1];
        let mut want = want.to_f32();
        if let Some(h) = heads {
            want = permute_rows(&want, cols, h, false).unwrap();
        }
        let got = f32s(
            ours.tensor_bytes(&format!("blk.{layer}.{gg}.weight"))
                .unwrap(),
        );
        let w64: Vec<f64> = want.iter().map(|&x| x as f64).collect();
        let g64: Vec<f64> = got.iter().map(|&x| x as f64).collect();
        worst = worst.max(rel_err(&w64, &g64));
    }
    assert!(worst < 1e-6, "bake vs merge_and_unload: {worst:.2e}");
    // untouched tensors are copied byte for byte
    for name in [
        "token_embd.weight",
        "output.weight",
        "blk.0.attn_norm.weight",
    ] {
        assert!(ours.tensor_bytes(name).unwrap() == basef.tensor_bytes(name).unwrap());
    }
    python_check(&[
        "bake",
        s(&base),
        s(&out),
        s(&fixture("tiny_llama/config.json")),
        &format!("{}:1", fixture("peft/plain").display()),
    ]);

    // the converter's GGUF of the same adapter bakes to the same file
    let from_gguf = dir.path().join("from-gguf.gguf");
    run_ok(&[
        "bake",
        s(&base),
        s(&fixture("gguf/plain-f32.gguf")),
        "-o",
        s(&from_gguf),
    ]);
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&from_gguf).unwrap());
}

#[test]
fn bake_into_a_quantized_base_keeps_its_type() {
    let dir = tempdir();
    let config = fixture("tiny_llama/config.json");
    for ty in ["q8_0", "q4_0", "q4_k"] {
        let base = dir.path().join(format!("base-{ty}.gguf"));
        run_ok(&[
            "quantize",
            s(&fixture("tiny_llama-f32.gguf")),
            "--type",
            ty,
            "-o",
            s(&base),
        ]);
        let out = dir.path().join(format!("baked-{ty}.gguf"));
        run_ok(&[
            "bake",
            s(&base),
            s(&fixture("peft/plain")),
            s(&fixture("gen_llama_peft")),
            "--weights",
            "0.7,-0.4",
            "-o",
            s(&out),
        ]);
        let jobs = [
            format!("{}:0.7", fixture("peft/plain").display()),
            format!("{}:-0.4", fixture("gen_llama_peft").display()),
        ];
        python_check(&["bake", s(&base), s(&out), s(&config), &jobs[0], &jobs[1]]);
        let compat = dir.path().join(format!("compat-{ty}.gguf"));
        run_ok(&[
            "bake",
            s(&base),
            s(&fixture("peft/plain")),
            "--export-lora-compat",
            "-o",
            s(&compat),
        ]);
        let job = format!("{}:1", fixture("peft/plain").display());
        python_check(&["bake", s(&base), s(&compat), s(&config), "--compat", &job]);
    }
}

#[test]
fn bake_refuses_a_wrong_base_before_writing() {
    let dir = tempdir();
    // the tiny llama adapter on a base whose q is another shape: a rewritten base
    let cfg_dir = one_module_peft(
        dir.path(),
        "bad",
        "model.layers.0.self_attn.q_proj",
        2,
        4.0,
        (128, 96),
    );
    let out = dir.path().join("out.gguf");
    let o = loratool(&[
        "bake",
        s(&fixture("tiny_llama-f32.gguf")),
        s(&cfg_dir),
        "-o",
        s(&out),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("wrong base model")
            && e.contains("blk.0.attn_q.weight")
            && e.contains("nothing was written"),
        "{e}"
    );
    assert!(!out.exists());
}
