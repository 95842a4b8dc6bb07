//! `loratool extract`: bake a known adapter into the tiny llama, extract it back, and compare
//! with the adapter's own ΔW (computed from its factors here).

mod common;

use common::*;
use loratool::adapter::LayerKind;
use std::path::Path;

fn baked(dir: &Path, adapter: &str) -> std::path::PathBuf {
    let out = dir.join(format!("tuned-{}", adapter.replace('/', "_")));
    run_ok(&[
        "bake",
        s(&fixture("tiny_llama")),
        s(&fixture(adapter)),
        "-o",
        s(&out),
    ]);
    out
}

#[test]
fn extract_at_the_true_rank_recovers_the_adapter() {
    let dir = tempdir();
    let tuned = baked(dir.path(), "peft/plain");
    let truth = read_any(&fixture("peft/plain"));
    let base = fixture("tiny_llama");
    for (rank, exact) in [("4", false), ("8", false), ("4", true)] {
        let out = dir.path().join(format!("ex-{rank}-{exact}"));
        let mut args = vec![
            "extract",
            "--base",
            s(&base),
            "--tuned",
            s(&tuned),
            "--rank",
            rank,
            "-o",
            s(&out),
        ];
        if exact {
            args.push("--exact");
        }
        let text = run_ok(&args);
        assert!(text.contains("extracted 14 modules"), "{text}");
        let ours = read_any(&out);
        assert_eq!(ours.layers.len(), truth.layers.len());
        for (p, l) in &truth.layers {
            let e = rel_fro_diff(&ours.layers[p], l);
            assert!(e < 1e-4, "rank {rank} exact {exact}: {p}: {e:.2e}");
            assert_eq!(ours.layers[p].rank().to_string(), rank, "{p}: fixed rank");
        }
    }
}

#[test]
fn randomized_truncation_is_as_good_as_the_exact_one() {
    let dir = tempdir();
    let tuned = baked(dir.path(), "peft/plain");
    let base = fixture("tiny_llama");
    let json = |exact: bool| -> serde_json::Value {
        let out = dir.path().join(format!("r2-{exact}"));
        let mut args = vec![
            "extract",
            "--base",
            s(&base),
            "--tuned",
            s(&tuned),
            "--rank",
            "2",
            "--json",
            "-o",
            s(&out),
        ];
        if exact {
            args.push("--exact");
        }
        serde_json::from_str(&run_ok(&args)).unwrap()
    };
    let (exact, fast) = (json(true), json(false));
    let (e, f) = (
        exact["overall_rel_error"].as_f64().unwrap(),
        fast["overall_rel_error"].as_f64().unwrap(),
    );
    assert!(e > 0.1, "rank 2 of a rank-4 delta must lose something: {e}");
    assert!(f <= e * 1.001, "randomized {f} vs exact {e}");
}

#[test]
fn embeddings_lora_full_or_skip_and_changed_norms_reported() {
    let dir = tempdir();
    let tuned = baked(dir.path(), "peft/embed");
    let truth = read_any(&fixture("peft/embed"));
    let run = |mode: &str| {
        let out = dir.path().join(format!("emb-{mode}"));
        let o = loratool(&[
            "extract",
            "--base",
            s(&fixture("tiny_llama")),
            "--tuned",
            s(&tuned),
            "--rank",
            "4",
            "--embeddings",
            mode,
            "-o",
            s(&out),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        read_any(&out)
    };
    let lora = run("lora");
    let e = &lora.layers["model.embed_tokens"];
    assert_eq!(e.kind, LayerKind::Embedding);
    let err = rel_fro_diff(e, &truth.layers["model.embed_tokens"]);
    assert!(err < 1e-4, "embedding: {err:.2e}");
    let full = run("full");
    assert!(!full.layers.contains_key("model.embed_tokens"));
    assert!(full.full.contains_key("model.embed_tokens.weight"));
    let skip = run("skip");
    assert!(!skip.layers.contains_key("model.embed_tokens") && skip.full.is_empty());

    // a changed norm cannot be a LoRA: reported, not dropped silently
    let src = loratool::io::SafetensorsFile::open(&tuned.join("model.safetensors")).unwrap();
    let mut tensors: Vec<(String, loratool::tensor::Tensor)> = src
        .tensors()
        .keys()
        .map(|n| (n.clone(), src.tensor(n).unwrap()))
        .collect();
    for (n, t) in tensors.iter_mut() {
        if n == "model.norm.weight" {
            let v: Vec<f32> = t.to_f32().iter().map(|x| x * 1.5).collect();
            *t = loratool::tensor::Tensor::from_f32(t.shape().to_vec(), &v, t.dtype()).unwrap();
        }
    }
    let norm_dir = dir.path().join("norm");
    std::fs::create_dir_all(&norm_dir).unwrap();
    write_st(&norm_dir.join("model.safetensors"), &tensors, &[]);
    let o = loratool(&[
        "extract",
        "--base",
        s(&fixture("tiny_llama")),
        "--tuned",
        s(&norm_dir),
        "--rank",
        "4",
        "-o",
        s(&dir.path().join("n")),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("model.norm.weight"), "{}", stderr(&o));
}

#[test]
fn extract_save_records_its_lineage_in_the_store() {
    let dir = tempdir();
    let tuned = baked(dir.path(), "peft/plain");
    let home = dir.path().join("store");
    let run = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_loratool"))
            .env("LORATOOL_HOME", &home)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let base = fixture("tiny_llama");
    let out = dir.path().join("ex");
    run(&[
        "extract",
        "--base",
        s(&base),
        "--tuned",
        s(&tuned),
        "--rank",
        "4",
        "-o",
        s(&out),
        "--save",
        "acme/extracted:v1",
    ]);
    let show: serde_json::Value =
        serde_json::from_str(&run(&["show", "acme/extracted:v1", "--json"])).unwrap();
    let text = show.to_string();
    assert!(text.contains("extract(rank 4"), "{text}");
    // the stored files are the ones written
    let exported = dir.path().join("exported");
    run(&["export", "acme/extracted:v1", "-o", s(&exported)]);
    assert_eq!(
        std::fs::read(exported.join("adapter_model.safetensors")).unwrap(),
        std::fs::read(out.join("adapter_model.safetensors")).unwrap()
    );
}
