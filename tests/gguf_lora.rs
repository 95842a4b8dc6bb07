//! GGUF LoRA adapters against llama.cpp's own converter (`convert_lora_to_gguf.py`, files in
//! fixtures/gguf made from fixtures/peft with `--base tiny_llama`), and against gguf-py reading
//! what loratool writes (tests/interop/check_gguf_lora.py, run here with python3).

mod common;

use common::*;
use loratool::adapter::codec::{read_adapter, ReadContext};
use loratool::adapter::gguf::{rope::permute_rows, GgufBase};
use loratool::adapter::ReadOptions;
use loratool::io::gguf::{GgufFile, GgufValue};
use loratool::io::SafetensorsFile;
use std::path::Path;
use std::process::Command;

/// `loratool convert <input> --to gguf [--base <base>] -o <out>`.
fn to_gguf(input: &Path, base: Option<&Path>, out: &Path) -> std::process::Output {
    let mut args = vec!["convert", input.to_str().unwrap(), "--to", "gguf"];
    if let Some(b) = base {
        args.extend(["--base", b.to_str().unwrap()]);
    }
    args.extend(["-o", out.to_str().unwrap()]);
    loratool(&args)
}

fn convert(input: &Path, base: &Path, dtype: Option<&str>, out: &Path) {
    let mut args = vec![
        "convert",
        input.to_str().unwrap(),
        "--to",
        "gguf",
        "--base",
        base.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    if let Some(d) = dtype {
        args.extend(["--dtype", d]);
    }
    run_ok(&args);
}

/// Same tensor names in the same order, same ggml types and dims, same bytes.
fn assert_same_tensors(ours: &Path, theirs: &Path) {
    let (a, b) = (
        GgufFile::open(ours).unwrap(),
        GgufFile::open(theirs).unwrap(),
    );
    let names = |f: &GgufFile| f.tensors.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b));
    for (name, ta) in &a.tensors {
        let tb = &b.tensors[name];
        assert_eq!((ta.ggml_type, &ta.dims), (tb.ggml_type, &tb.dims), "{name}");
        assert!(
            a.tensor_bytes(name).unwrap() == b.tensor_bytes(name).unwrap(),
            "{name}: bytes differ"
        );
    }
    for key in [
        "general.architecture",
        "general.type",
        "adapter.type",
        "adapter.lora.alpha",
    ] {
        let (x, y) = (&a.kv[key], &b.kv[key]);
        assert_eq!(x.type_id(), y.type_id(), "{key} type");
        assert_eq!(x.to_string(), y.to_string(), "{key}");
    }
}

#[test]
fn peft_to_gguf_equals_llama_cpp_converter_for_every_dtype() {
    let dir = tempdir();
    let config = fixture("tiny_llama/config.json");
    for (dtype, theirs) in [
        (None, "gguf/plain-f32.gguf"),
        (Some("f16"), "gguf/plain-f16.gguf"),
        (Some("q8_0"), "gguf/plain-q8_0.gguf"),
    ] {
        let out = dir
            .path()
            .join(format!("plain-{}.gguf", dtype.unwrap_or("f32")));
        convert(&fixture("peft/plain"), &config, dtype, &out);
        assert_same_tensors(&out, &fixture(theirs));
    }
    // a base GGUF instead of config.json: same file, and shapes are checked against it
    let out = dir.path().join("from-gguf-base.gguf");
    convert(
        &fixture("peft/plain"),
        &fixture("tiny_llama-f32.gguf"),
        None,
        &out,
    );
    assert_same_tensors(&out, &fixture("gguf/plain-f32.gguf"));
}

#[test]
fn rope_permutation_matches_the_converted_base_model() {
    // convert_hf_to_gguf.py permuted the tiny llama's q (8 heads) and k (2 KV heads) rows
    let hf = SafetensorsFile::open(&fixture("tiny_llama/model.safetensors")).unwrap();
    let gg = GgufFile::open(&fixture("tiny_llama-f32.gguf")).unwrap();
    for (hf_name, gg_name, heads) in [
        (
            "model.layers.1.self_attn.q_proj.weight",
            "blk.1.attn_q.weight",
            8,
        ),
        (
            "model.layers.1.self_attn.k_proj.weight",
            "blk.1.attn_k.weight",
            2,
        ),
    ] {
        let t = hf.tensor(hf_name).unwrap();
        let cols = t.shape()[1];
        let permuted = permute_rows(&t.to_f32(), cols, heads, false).unwrap();
        let theirs: Vec<f32> = gg
            .tensor_bytes(gg_name)
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(permuted, theirs, "{gg_name}");
    }
}

#[test]
fn gguf_to_peft_undoes_the_permutation() {
    let base = GgufBase::load(&fixture("tiny_llama/config.json")).unwrap();
    let gguf = read_adapter(
        &fixture("gguf/plain-f32.gguf"),
        None,
        &ReadContext {
            opts: ReadOptions::default(),
            base: Some(&base),
        },
    )
    .unwrap();
    assert_same_layers(&gguf, &read_any(&fixture("peft/plain")));

    // through the CLI, to a PEFT directory, from the f16 file (f16 factors kept as f16)
    let dir = tempdir();
    let out = dir.path().join("back");
    run_ok(&[
        "convert",
        fixture("gguf/plain-f16.gguf").to_str().unwrap(),
        "--to",
        "peft",
        "--base",
        fixture("tiny_llama/config.json").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    let back = read_any(&out);
    let orig = read_any(&fixture("peft/plain"));
    for (p, l) in &orig.layers {
        let b = &back.layers[p];
        assert_eq!(b.down.dtype(), loratool::tensor::DType::F16);
        assert!(rel_err(&dense_delta(l), &dense_delta(b)) < 2e-3, "{p}");
    }

    // without a base, the q/k rows cannot be put back: refused with the fix
    let o = loratool(&[
        "convert",
        fixture("gguf/plain-f32.gguf").to_str().unwrap(),
        "--to",
        "peft",
        "-o",
        dir.path().join("x").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--base"), "{}", stderr(&o));
}

#[test]
fn rslora_and_patterns_keep_peft_scales_unlike_the_reference_converter() {
    let dir = tempdir();
    let out = dir.path().join("rs.gguf");
    convert(
        &fixture("peft/rslora_patterns"),
        &fixture("tiny_llama/config.json"),
        None,
        &out,
    );
    let f = GgufFile::open(&out).unwrap();
    let alpha = match &f.kv["adapter.lora.alpha"] {
        GgufValue::F32(a) => f64::from(*a),
        v => panic!("alpha stored as {v}"),
    };
    // most modules: rank 8, rsLoRA alpha 16 → scale 16/√8, written as alpha·√r
    assert!((alpha - 16.0 * 8f64.sqrt()).abs() < 1e-4, "alpha {alpha}");
    // what llama.cpp computes from our file (alpha / r · B·A, read back by loratool) equals
    // PEFT's scales on the original tensors: q 16/√2, v 3/√8, others 16/√8
    let base = GgufBase::load(&fixture("tiny_llama/config.json")).unwrap();
    let ours = read_adapter(
        &out,
        None,
        &ReadContext {
            opts: ReadOptions::default(),
            base: Some(&base),
        },
    )
    .unwrap();
    let peft = read_any(&fixture("peft/rslora_patterns"));
    let st =
        SafetensorsFile::open(&fixture("peft/rslora_patterns/adapter_model.safetensors")).unwrap();
    for (p, l) in &peft.layers {
        let a = st
            .tensor(&format!("base_model.model.{p}.lora_A.weight"))
            .unwrap();
        let r = a.shape()[0] as f64;
        let scale = if p.ends_with("q_proj") {
            16.0 / 2f64.sqrt()
        } else if p.ends_with("v_proj") {
            3.0 / r.sqrt()
        } else {
            16.0 / r.sqrt()
        };
        assert!((l.scale() - scale).abs() < 1e-9, "{p}: reader scale");
        let e = rel_err(&dense_delta(l), &dense_delta(&ours.layers[p]));
        assert!(e < 1e-6, "{p}: {e:.2e}");
        assert_eq!(ours.layers[p].alpha, alpha as f32 as f64);
    }
}

#[test]
fn refusals_name_the_reason() {
    let dir = tempdir();
    let out = dir.path().join("x.gguf");
    let config = fixture("tiny_llama/config.json");
    // DoRA
    let o = to_gguf(&fixture("peft/dora"), Some(config.as_path()), &out);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("DoRA"), "{}", stderr(&o));
    // no --base
    let o = to_gguf(&fixture("peft/plain"), None, &out);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--base"), "{}", stderr(&o));
    // unknown architecture
    let cfg = dir.path().join("config.json");
    std::fs::write(
        &cfg,
        r#"{"architectures": ["FalconForCausalLM"], "num_attention_heads": 8}"#,
    )
    .unwrap();
    let o = to_gguf(&fixture("peft/plain"), Some(cfg.as_path()), &out);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("FalconForCausalLM") && stderr(&o).contains("never guesses"),
        "{}",
        stderr(&o)
    );
    // lm_head on a tied base
    std::fs::write(
        &cfg,
        r#"{"architectures": ["LlamaForCausalLM"], "num_attention_heads": 8, "num_key_value_heads": 2, "tie_word_embeddings": true}"#,
    )
    .unwrap();
    let lm = one_module_peft(dir.path(), "lm", "lm_head", 2, 4.0, (512, 128));
    let o = to_gguf(&lm, Some(cfg.as_path()), &out);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("ties lm_head"), "{}", stderr(&o));
    // the same adapter on the untied tiny llama GGUF is fine, and its shape is checked
    run_ok(&[
        "convert",
        lm.to_str().unwrap(),
        "--to",
        "gguf",
        "--base",
        fixture("tiny_llama-f32.gguf").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    // a module whose shape does not fit the base GGUF (in 100, the base's q has 128)
    let bad = one_module_peft(
        dir.path(),
        "bad",
        "model.layers.0.self_attn.q_proj",
        2,
        4.0,
        (128, 100),
    );
    let y = dir.path().join("y.gguf");
    let o = to_gguf(&bad, Some(&fixture("tiny_llama-f32.gguf")), &y);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("wrong base model") && e.contains("blk.0.attn_q.weight"),
        "{e}"
    );
    assert!(!y.exists(), "nothing written");
}

/// gguf-py (the pip package llama.cpp's scripts use) reads every kind of file loratool
/// writes and finds the deltas PEFT defines, permuted as llama.cpp expects.
#[test]
fn gguf_py_reads_what_loratool_writes() {
    let dir = tempdir();
    let config = fixture("tiny_llama/config.json");
    let mut jobs = Vec::new();
    for (adapter, dtype) in [
        ("peft/plain", "f32"),
        ("peft/plain", "f16"),
        ("peft/plain", "bf16"),
        ("peft/plain", "q8_0"),
        ("peft/rslora_patterns", "f32"),
        ("peft/embed", "f32"),
        ("gen_llama_peft", "f16"),
    ] {
        let out = dir
            .path()
            .join(format!("{}-{dtype}.gguf", adapter.replace('/', "_")));
        convert(&fixture(adapter), &config, Some(dtype), &out);
        jobs.push(format!(
            "{}={}={dtype}",
            fixture(adapter).display(),
            out.display()
        ));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/check_gguf_lora.py");
    let o = Command::new("python3")
        .arg(&script)
        .arg(&config)
        .args(&jobs)
        .output()
        .expect("python3 runs (CI installs numpy, safetensors and gguf)");
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}\n{err}");
    println!("{out}");
}

/// Every architecture of formats/gguf_archs.tsv converts both ways: a synthetic PEFT adapter on
/// every module its table maps (names cross-checked against gguf-py by
/// formats/gen/check_gguf_tables.py) goes to GGUF and back bit for bit; only llama permutes.
#[test]
fn every_listed_architecture_converts_both_ways() {
    use loratool::tensor::DType;
    let archs = std::fs::read_to_string(fixture("../formats/gguf_archs.tsv")).unwrap();
    let names = std::fs::read_to_string(fixture("../formats/gguf_names.tsv")).unwrap();
    let rows = |t: &str| -> Vec<Vec<String>> {
        t.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect()
    };
    let (heads, kv_heads, hidden, vocab, r) = (4usize, 2usize, 64usize, 96usize, 4usize);
    let head_dim = hidden / heads;
    let dir = tempdir();
    let mut tested = Vec::new();
    for arch_row in rows(&archs) {
        let (hf_arch, arch, permutes) = (&arch_row[0], &arch_row[1], arch_row[2] == "yes");
        let case = dir.path().join(hf_arch);
        std::fs::create_dir_all(&case).unwrap();
        let config = case.join("config.json");
        std::fs::write(
            &config,
            format!(
                r#"{{"architectures": ["{hf_arch}"], "num_attention_heads": {heads}, "num_key_value_heads": {kv_heads}, "tie_word_embeddings": false}}"#
            ),
        )
        .unwrap();
        let mut tensors = Vec::new();
        let mut targets = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, row) in rows(&names)
            .iter()
            .filter(|row| &row[0] == arch)
            .enumerate()
        {
            let module = row[1].replace("{N}", "0");
            // phi3 maps both its fused and unfused names to one tensor: keep the first
            if !seen.insert(row[2].clone()) {
                continue;
            }
            let (out, inp) = match row[3].as_str() {
                "rope_k" => (kv_heads * head_dim, hidden),
                "lm_head" => (vocab, hidden),
                _ => (hidden, hidden),
            };
            let key = format!("base_model.model.{module}");
            if row[3] == "embed" {
                tensors.push((
                    format!("{key}.lora_embedding_A"),
                    pseudo(vec![r, vocab], i as u64, DType::F32),
                ));
                tensors.push((
                    format!("{key}.lora_embedding_B"),
                    pseudo(vec![hidden, r], 100 + i as u64, DType::F32),
                ));
            } else {
                tensors.push((
                    format!("{key}.lora_A.weight"),
                    pseudo(vec![r, inp], i as u64, DType::F32),
                ));
                tensors.push((
                    format!("{key}.lora_B.weight"),
                    pseudo(vec![out, r], 100 + i as u64, DType::F32),
                ));
            }
            targets.push(format!("\"{}\"", module.rsplit('.').next().unwrap()));
        }
        let peft = case.join("peft");
        std::fs::create_dir_all(&peft).unwrap();
        std::fs::write(
            peft.join("adapter_config.json"),
            format!(
                r#"{{"peft_type": "LORA", "r": {r}, "lora_alpha": 8, "target_modules": [{}]}}"#,
                targets.join(", ")
            ),
        )
        .unwrap();
        write_st(&peft.join("adapter_model.safetensors"), &tensors, &[]);

        let gguf = case.join("a.gguf");
        convert(&peft, &config, None, &gguf);
        let f = GgufFile::open(&gguf).unwrap();
        assert_eq!(f.architecture(), Some(arch.as_str()), "{hf_arch}");
        assert_eq!(
            f.tensors.len(),
            tensors.len(),
            "{hf_arch}: every module written"
        );
        // q's lora_b: permuted for llama only
        let b = SafetensorsFile::open(&peft.join("adapter_model.safetensors")).unwrap();
        let q_b = b
            .tensor("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight")
            .expect("every table maps q_proj")
            .to_f32();
        {
            let stored: Vec<f32> = f
                .tensor_bytes("blk.0.attn_q.weight.lora_b")
                .unwrap()
                .chunks_exact(4)
                .map(|x| f32::from_le_bytes([x[0], x[1], x[2], x[3]]))
                .collect();
            let want = if permutes {
                permute_rows(&q_b, r, heads, false).unwrap()
            } else {
                q_b
            };
            assert_eq!(stored, want, "{hf_arch}: attn_q lora_b");
        }
        let back = case.join("back");
        run_ok(&[
            "convert",
            gguf.to_str().unwrap(),
            "--to",
            "peft",
            "--base",
            config.to_str().unwrap(),
            "-o",
            back.to_str().unwrap(),
        ]);
        assert_same_layers(&read_any(&back), &read_any(&peft));
        tested.push(arch.clone());
    }
    for a in [
        "llama", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3",
    ] {
        assert!(tested.iter().any(|t| t == a), "{a} not tested");
    }
}
