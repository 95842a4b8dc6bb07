//! `loratool merge` end to end: files written by the CLI against PEFT's `add_weighted_adapter`
//! output, sd-scripts' `svd_merge_lora.py` output, and dense sums computed here.

mod common;

use common::*;
use loratool::adapter::{Adapter, LoraLayer};
use loratool::io::SafetensorsFile;
use serde_json::Value;
use std::path::Path;

/// ‖x − y‖_F / ‖y‖_F.
fn fro_rel(x: &[f64], y: &[f64]) -> f64 {
    let d: f64 = x.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum();
    let n: f64 = y.iter().map(|b| b * b).sum();
    (d / n).sqrt()
}

/// Σ wᵢ·ΔWᵢ of one module over the inputs that hold it, dense.
fn dense_sum(inputs: &[(&Adapter, f64)], path: &str) -> Vec<f64> {
    let terms: Vec<(&LoraLayer, f64)> = inputs
        .iter()
        .filter_map(|(a, w)| a.layers.get(path).map(|l| (l, *w)))
        .collect();
    assert!(!terms.is_empty(), "module in some input");
    loratool::testing::dense_weighted(&terms)
}

fn metadata(path: &Path) -> indexmap::IndexMap<String, String> {
    SafetensorsFile::open(path)
        .expect("opens")
        .metadata()
        .clone()
}

#[test]
fn compat_peft_reproduces_peft_linear_and_sum_is_the_exact_sum() {
    let dir = tempdir();
    let (a, b) = (fixture("peft/plain"), fixture("peft/plain2"));
    let (sa, sb) = (a.to_str().unwrap(), b.to_str().unwrap());
    let compat = dir.path().join("compat");
    let exact = dir.path().join("exact");
    run_ok(&[
        "merge",
        sa,
        sb,
        "--weights",
        "0.6,0.4",
        "--compat",
        "peft",
        "-o",
        compat.to_str().unwrap(),
    ]);
    run_ok(&[
        "merge",
        sa,
        sb,
        "--weights",
        "0.6,0.4",
        "-o",
        exact.to_str().unwrap(),
    ]);
    let peft = read_any(&fixture("peft_merges/linear"));
    let compat = read_any(&compat);
    let exact = read_any(&exact);
    let (ia, ib) = (read_any(&a), read_any(&b));
    let inputs = [(&ia, 0.6), (&ib, 0.4)];
    assert_eq!(compat.layers.len(), peft.layers.len());
    let mut cross_term_gap = 0.0f64;
    for (p, l) in &peft.layers {
        let theirs = dense_delta(l);
        let e = fro_rel(&dense_delta(&compat.layers[p]), &theirs);
        assert!(e < 1e-6, "{p}: compat vs PEFT linear {e:.2e}");
        let truth = dense_sum(&inputs, p);
        let e = fro_rel(&dense_delta(&exact.layers[p]), &truth);
        assert!(e < 1e-5, "{p}: sum vs dense Σ wΔW {e:.2e}");
        cross_term_gap = cross_term_gap.max(fro_rel(&theirs, &truth));
    }
    // PEFT's linear is not the weighted sum: its cross terms are of the order of the deltas
    assert!(cross_term_gap > 0.1, "cross-term gap {cross_term_gap}");
}

#[test]
fn svd_writes_what_sd_scripts_svd_merge_writes() {
    let dir = tempdir();
    let a = fixture("kohya/sd15_lora_r4_a2_c3lier.safetensors");
    let b = fixture("kohya/sd15_lora_r8_a8_attn.safetensors");
    let theirs_path = fixture("kohya/sd15_svd_merge_0.6_0.4_r4.safetensors");
    let out = dir.path().join("merged.safetensors");
    let text = run_ok(&[
        "merge",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--weights",
        "0.6,0.4",
        "--method",
        "svd",
        "--rank",
        "4",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(text.contains("merged 2 inputs (svd"), "{text}");
    let ours = read_any(&out);
    let theirs = read_any(&theirs_path);
    assert_eq!(
        ours.layers.keys().collect::<Vec<_>>(),
        theirs.layers.keys().collect::<Vec<_>>()
    );
    // sd-scripts' clamp depends on LAPACK's singular-vector signs (tests/merge.rs pins that
    // down); the products still agree closely on the median module
    let mut errors: Vec<f64> = theirs
        .layers
        .iter()
        .map(|(p, l)| rel_fro_diff(&ours.layers[p], l))
        .collect();
    errors.sort_by(f64::total_cmp);
    let median = errors[errors.len() / 2];
    assert!(median < 2e-2, "median product error {median:.2e}");
    for l in ours.layers.values() {
        assert_eq!(l.rank(), 4);
        assert_eq!(l.alpha, 4.0);
        assert_eq!(l.down.dtype(), loratool::tensor::DType::F16);
    }

    let (md, want) = (metadata(&out), metadata(&theirs_path));
    for key in [
        "ss_network_dim",
        "ss_network_module",
        "ss_base_model_version",
        "ss_v2",
        "modelspec.merged_from",
        "modelspec.architecture",
    ] {
        assert_eq!(md.get(key), want.get(key), "{key}");
    }
    assert_eq!(md["modelspec.title"], "merged");
    assert_eq!(md["ss_network_alpha"].parse::<f64>().unwrap(), 4.0);
    // the first input's training record does not describe the merge
    assert!(!md.contains_key("ss_tag_frequency"));
    assert!(!md.contains_key("ss_training_comment"));
    // hashes are of the written file, not copied from an input
    let stored = &md["sshs_model_hash"];
    assert_ne!(
        Some(stored),
        metadata(&a).get("sshs_model_hash"),
        "stale hash"
    );
    // sd-scripts' model hash is sha256 of the data region (everything after the header)
    let bytes = std::fs::read(&out).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let data_hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bytes[8 + header..]))
    };
    assert_eq!(stored, &data_hash);
}

#[test]
fn mixed_formats_and_negative_weights_sum_exactly() {
    let dir = tempdir();
    let a = fixture("kohya/sd15_lora_r4_a2_c3lier.safetensors");
    let b_kohya = fixture("kohya/sd15_lora_r8_a8_attn.safetensors");
    let b = dir.path().join("b_peft");
    run_ok(&[
        "convert",
        b_kohya.to_str().unwrap(),
        "--to",
        "peft",
        "-o",
        b.to_str().unwrap(),
    ]);
    let out = dir.path().join("diff.safetensors");
    let json = run_ok(&[
        "merge",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--weights",
        "1,-0.5",
        "--dtype",
        "f32",
        "--json",
        "-o",
        out.to_str().unwrap(),
    ]);
    let v: Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v["method"], "sum");
    assert_eq!(
        v["format"], "kohya",
        "output takes the first input's format"
    );
    let (ia, ib) = (read_any(&a), read_any(&b));
    let ours = read_any(&out);
    let modules = v["modules"].as_array().expect("modules");
    assert_eq!(modules.len(), ours.layers.len());
    // union of both inputs' modules; the attention modules are in both
    assert_eq!(ours.layers.len(), ia.layers.len().max(ib.layers.len()));
    let shared = modules.iter().filter(|m| m["inputs"] == 2).count();
    assert_eq!(shared, ib.layers.len());
    for (p, l) in &ours.layers {
        assert_eq!(l.down.dtype(), loratool::tensor::DType::F32);
        let terms: Vec<_> = [(&ia, 1.0), (&ib, -0.5)]
            .into_iter()
            .filter_map(|(a, w)| a.layers.get(p).map(|x| (x, w)))
            .collect();
        let e = layer_rel_diff(l, &terms);
        assert!(e < 1e-5, "{p}: {e:.2e}");
        // the exact sum's rank is at most the sum of the input ranks
        let bound =
            ia.layers.get(p).map_or(0, |x| x.rank()) + ib.layers.get(p).map_or(0, |x| x.rank());
        assert!(l.rank() <= bound, "{p}: rank {} > {bound}", l.rank());
    }
}

#[test]
fn bad_inputs_fail_with_a_message_and_write_nothing() {
    let dir = tempdir();
    let q = "model.layers.0.self_attn.q_proj";
    let a = one_module_peft(dir.path(), "a", q, 2, 4.0, (8, 6));
    let b = one_module_peft(dir.path(), "b", q, 2, 4.0, (8, 10));
    let out = dir.path().join("out");
    let (sa, sb, so) = (
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        out.to_str().unwrap(),
    );

    let o = loratool(&["merge", sa, sb, "-o", so]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("q_proj") && e.contains(sa) && e.contains(sb),
        "{e}"
    );

    let o = loratool(&["merge", sa, sa, "--weights", "1,2,3", "-o", so]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("3 values for 2 inputs"),
        "{}",
        stderr(&o)
    );

    let o = loratool(&["merge", sa, sa, "--clamp-quantile", "0.9", "-o", so]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--method svd only"), "{}", stderr(&o));

    let o = loratool(&["merge", sa, sa, "--method", "svd", "-o", so]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--rank"), "{}", stderr(&o));

    let o = loratool(&["merge", sa, sa, "--method", "ties", "-o", so]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("density"), "{}", stderr(&o));

    assert!(!out.exists(), "nothing written");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        2,
        "no temp files left"
    );
}

#[test]
fn ties_through_the_cli_matches_peft_with_compat() {
    let dir = tempdir();
    let out = dir.path().join("ties");
    run_ok(&[
        "merge",
        fixture("peft/plain").to_str().unwrap(),
        fixture("peft/plain2").to_str().unwrap(),
        "--weights",
        "0.6,0.4",
        "--method",
        "ties",
        "--density",
        "0.5",
        "--compat",
        "peft",
        "-o",
        out.to_str().unwrap(),
    ]);
    let theirs = read_any(&fixture("peft_merges/ties"));
    let ours = read_any(&out);
    for (p, l) in &theirs.layers {
        let e = fro_rel(&dense_delta(&ours.layers[p]), &dense_delta(l));
        assert!(e < 1e-6, "{p}: {e:.2e}");
    }
}
