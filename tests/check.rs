//! `loratool check`: every finding from a crafted bad file (built here from a fixture), a clean
//! pass on every fixture adapter, and the exit codes (0 clean, 1 problems, 2 unusable input).

mod common;

use common::*;
use indexmap::IndexMap;
use loratool::io::{write_safetensors, PendingTensor, SafetensorsFile};
use loratool::tensor::Tensor;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// `check --json` on `args`: exit code and the parsed report.
fn check(args: &[&str]) -> (i32, Value) {
    let mut all = vec!["check"];
    all.extend_from_slice(args);
    all.push("--json");
    let o = loratool(&all);
    let code = o.status.code().unwrap_or(-1);
    let v = serde_json::from_str(&stdout(&o))
        .unwrap_or_else(|e| panic!("{all:?}: {e}: {} {}", stdout(&o), stderr(&o)));
    (code, v)
}

/// The findings of one kind.
fn kind<'a>(v: &'a Value, kind: &str) -> Vec<&'a Value> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == kind)
        .collect()
}

/// A copy of a safetensors file with its tensors edited by `edit` (metadata kept).
fn rewrite(src: &Path, dst: &Path, edit: impl FnOnce(&mut Vec<(String, Tensor)>)) {
    let f = SafetensorsFile::open(src).unwrap();
    let mut tensors: Vec<(String, Tensor)> = f
        .tensors()
        .keys()
        .map(|k| (k.clone(), f.tensor(k).unwrap()))
        .collect();
    edit(&mut tensors);
    let md: IndexMap<String, String> = f.metadata().clone();
    let pending: Vec<PendingTensor> = tensors
        .iter()
        .map(|(n, t)| PendingTensor::from_tensor(n.clone(), t))
        .collect();
    write_safetensors(dst, &pending, Some(&md), &|_| {}).unwrap();
}

fn set_values(t: &mut Tensor, f: impl FnOnce(&mut Vec<f32>)) {
    let mut v = t.to_f32();
    f(&mut v);
    *t = Tensor::from_f32(t.shape().to_vec(), &v, t.dtype()).unwrap();
}

/// A copy of a PEFT fixture directory.
fn peft_copy(dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    std::fs::create_dir(&out).unwrap();
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(fixture("peft/plain").join(f), out.join(f)).unwrap();
    }
    out
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut Value)) {
    let p = dir.join("adapter_config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
}

const Q0_A: &str = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
const Q0: &str = "model.layers.0.self_attn.q_proj";

#[test]
fn every_fixture_adapter_passes() {
    let mut inputs: Vec<PathBuf> = [
        "kohya/sd15_lora_r4_a2_c3lier.safetensors",
        "kohya/sd15_lora_r4_a2_c3lier_resized_r2.safetensors",
        "kohya/sd15_lora_r8_a8_attn.safetensors",
        "kohya/sd15_svd_merge_0.6_0.4_r4.safetensors",
        "gen_sd15_kohya.safetensors",
        "gen_sdxl_kohya.safetensors",
        "gen_llama_peft",
        "flux/pytorch_lora_weights.safetensors",
        "lycoris/sd15_loha.safetensors",
        "lycoris/sd15_lokr.safetensors",
        "lycoris/sd15_locon_tucker.safetensors",
        "lycoris/peft_loha",
        "lycoris/peft_lokr",
        "lycoris/peft_lokr_decompose_both",
        "lycoris/peft_lokr_full",
        "peft_merges/cat",
        "peft_merges/linear",
        "peft_merges/svd",
        "peft_merges/ties",
    ]
    .iter()
    .map(|p| fixture(p))
    .collect();
    for dir in ["peft", "gguf"] {
        for e in std::fs::read_dir(fixture(dir)).unwrap() {
            inputs.push(e.unwrap().path());
        }
    }
    for p in &inputs {
        let (code, v) = check(&[s(p)]);
        assert_eq!(code, 0, "{}: {v:#}", p.display());
        assert_eq!(v["errors"], 0, "{}", p.display());
        assert_eq!(v["clean"], true);
        // warnings are only of the two kinds that are the real tools' own doing
        for f in v["findings"].as_array().unwrap() {
            assert_eq!(f["severity"], "warning", "{}: {f}", p.display());
            assert!(
                f["kind"] == "rank_deficient" || f["kind"] == "hash_mismatch",
                "{f}"
            );
        }
    }
    // the PEFT fixtures fit their base model, as safetensors, as GGUF and by config.json names
    for base in [
        "tiny_llama",
        "tiny_llama-f32.gguf",
        "tiny_llama/config.json",
    ] {
        for a in ["peft/plain", "gguf/plain-f32.gguf", "gen_llama_peft"] {
            let (code, v) = check(&[s(&fixture(a)), "--base", s(&fixture(base))]);
            assert_eq!(code, 0, "{a} on {base}: {v:#}");
        }
    }
}

/// sd-scripts' svd merge pads rank 2 conv inputs to rank 4 with zero directions: the warning
/// names exactly the modules a dense SVD finds rank 2 in, and `--strict` fails on it.
#[test]
fn rank_deficiency_matches_a_dense_svd() {
    let p = fixture("kohya/sd15_svd_merge_0.6_0.4_r4.safetensors");
    let adapter = read_any(&p);
    let mut want = Vec::new();
    let mut dense_checked = Vec::new();
    for (path, layer) in &adapter.layers {
        let cols = layer.down.numel() / layer.rank();
        // dense SVDs of the largest 3x3 convs take minutes in a debug build: check the rest
        if layer.out_features() * cols > 1_000_000 {
            continue;
        }
        dense_checked.push(path.clone());
        let dense = dense_delta(layer);
        let s = loratool::testing::singular_values(&dense, layer.out_features(), cols);
        let kept = s.iter().filter(|&&x| x > 1e-4 * s[0]).count();
        if kept < layer.rank() {
            want.push(path.clone());
        }
    }
    assert!(!want.is_empty());
    let (code, v) = check(&[s(&p)]);
    assert_eq!(code, 0);
    let mut got: Vec<String> = kind(&v, "rank_deficient")
        .iter()
        .map(|f| f["module"].as_str().unwrap().to_string())
        .filter(|m| dense_checked.contains(m))
        .collect();
    got.sort();
    assert_eq!(got, want);
    let (code, _) = check(&[s(&p), "--strict"]);
    assert_eq!(code, 1);
}

#[test]
fn non_finite_values_zero_and_rank_deficient_modules_are_found() {
    let dir = tempdir();
    let bad = peft_copy(dir.path(), "bad");
    let w = bad.join("adapter_model.safetensors");
    let orig = fixture("peft/plain/adapter_model.safetensors");
    let down = "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight";
    let v_a = "base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight";
    rewrite(&orig, &w, |ts| {
        for (k, t) in ts.iter_mut() {
            if k == Q0_A {
                set_values(t, |v| v[7] = f32::NAN);
            } else if k == down {
                set_values(t, |v| v.iter_mut().for_each(|x| *x = 0.0));
            } else if k == v_a {
                // row 1 := 2·row 0: rank r - 1 by construction
                let n = t.shape()[1];
                set_values(t, |v| {
                    for j in 0..n {
                        v[n + j] = 2.0 * v[j];
                    }
                });
            }
        }
    });
    let (code, v) = check(&[s(&bad)]);
    assert_eq!(code, 1, "{v:#}");
    let nf = kind(&v, "non_finite");
    assert!(nf.iter().any(|f| f["module"] == Q0_A), "{v:#}");
    assert!(nf.iter().any(|f| f["module"] == Q0), "{v:#}");
    let zero = kind(&v, "zero_module");
    assert_eq!(zero.len(), 1, "{v:#}");
    assert_eq!(zero[0]["module"], "model.layers.0.mlp.down_proj");
    let rd = kind(&v, "rank_deficient");
    assert_eq!(rd.len(), 1, "{v:#}");
    assert_eq!(rd[0]["module"], "model.layers.1.self_attn.v_proj");
    assert!(rd[0]["message"]
        .as_str()
        .unwrap()
        .contains("only 3 direction"));
    assert_eq!(v["errors"], nf.len() + 1);
}

#[test]
fn duplicate_and_unplaceable_keys_are_found() {
    let dir = tempdir();
    let src = fixture("gen_sd15_kohya.safetensors");
    // a kohya text-encoder module under both its names (lora_te_ and lora_te1_), and a key no
    // SD 1.5 module has
    let dup = dir.path().join("dup.safetensors");
    let mut alias = String::new();
    rewrite(&src, &dup, |ts| {
        let (up, t) = ts
            .iter()
            .find(|(k, _)| k.starts_with("lora_te_") && k.ends_with(".lora_up.weight"))
            .cloned()
            .expect("a text encoder module");
        let module = up.trim_end_matches(".lora_up.weight").to_string();
        alias = module.replacen("lora_te_", "lora_te1_", 1);
        let parts: Vec<(String, Tensor)> = ts
            .iter()
            .filter(|(k, _)| k.split_once('.').is_some_and(|(m, _)| m == module))
            .map(|(k, t)| (k.replacen(&module, &alias, 1), t.clone()))
            .collect();
        assert!(parts.len() >= 2);
        ts.extend(parts);
        ts.push(("lora_unet_no_such_block.lora_down.weight".into(), t));
    });
    let parts = SafetensorsFile::open(&dup)
        .unwrap()
        .tensors()
        .keys()
        .filter(|k| k.starts_with(&alias))
        .count();
    let (code, v) = check(&[s(&dup)]);
    assert_eq!(code, 1, "{v:#}");
    let d = kind(&v, "duplicate_key");
    assert_eq!(d.len(), parts, "one per module part: {v:#}");
    assert!(d[0]["message"].as_str().unwrap().contains(&alias));
    let u = kind(&v, "unplaceable_key");
    assert_eq!(u.len(), 1, "{v:#}");
    assert_eq!(u[0]["module"], "lora_unet_no_such_block.lora_down.weight");

    // a tensor name repeated in the header itself (JSON parsers keep one silently)
    let bytes = std::fs::read(&src).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap().trim_end();
    let hv: Value = serde_json::from_str(header).unwrap();
    let (key, entry) = hv
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| *k != "__metadata__")
        .unwrap();
    let repeated = format!("{},\"{key}\":{entry}}}", &header[..header.len() - 1]);
    let mut out = (repeated.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(repeated.as_bytes());
    out.extend_from_slice(&bytes[8 + n..]);
    let rep = dir.path().join("repeated.safetensors");
    std::fs::write(&rep, out).unwrap();
    let (code, v) = check(&[s(&rep)]);
    assert_eq!(code, 1, "{v:#}");
    let d = kind(&v, "duplicate_key");
    assert_eq!(d.len(), 1, "{v:#}");
    assert_eq!(d[0]["module"], key.as_str());
}

/// sd-scripts' own hashes pass (the clean test); changing one value afterwards is caught.
#[test]
fn stale_kohya_hashes_are_found() {
    let dir = tempdir();
    let src = fixture("kohya/sd15_lora_r8_a8_attn.safetensors");
    let out = dir.path().join("edited.safetensors");
    rewrite(&src, &out, |ts| {
        let (_, t) = ts
            .iter_mut()
            .find(|(k, _)| k.ends_with(".lora_up.weight"))
            .unwrap();
        set_values(t, |v| v[0] += 1.0);
    });
    let (code, v) = check(&[s(&out)]);
    assert_eq!(code, 1, "{v:#}");
    let h = kind(&v, "hash_mismatch");
    let keys: Vec<&str> = h.iter().map(|f| f["module"].as_str().unwrap()).collect();
    assert!(keys.contains(&"sshs_model_hash"), "{v:#}");
    // the stored model hash is the sha256 of the original data region, the new one of the edit
    let data_sha = |p: &Path| {
        use sha2::{Digest, Sha256};
        let b = std::fs::read(p).unwrap();
        let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
        hex::encode(Sha256::digest(&b[8 + n..]))
    };
    let m = h.iter().find(|f| f["module"] == "sshs_model_hash").unwrap();
    let msg = m["message"].as_str().unwrap();
    assert!(
        msg.contains(&data_sha(&src)) && msg.contains(&data_sha(&out)),
        "{msg}"
    );
}

#[test]
fn peft_config_disagreements_are_found() {
    let dir = tempdir();
    // ranks: the config says 5, the tensors have 4 (the reader refuses it too)
    let a = peft_copy(dir.path(), "rank");
    edit_config(&a, |c| c["r"] = 5.into());
    let (code, v) = check(&[s(&a)]);
    assert_eq!(code, 1);
    assert_eq!(kind(&v, "config_mismatch").len(), 14, "{v:#}");
    assert_eq!(kind(&v, "unreadable").len(), 1, "{v:#}");

    // targets: q_proj has weights but is not targeted; a target with no weights; a pattern key
    // that matches nothing; use_dora without magnitudes
    let b = peft_copy(dir.path(), "targets");
    edit_config(&b, |c| {
        c["target_modules"] = serde_json::json!([
            "gate_proj",
            "v_proj",
            "o_proj",
            "k_proj",
            "up_proj",
            "down_proj",
            "lm_head"
        ]);
        c["rank_pattern"] = serde_json::json!({"qq_proj": 2});
    });
    let (code, v) = check(&[s(&b)]);
    assert_eq!(code, 1);
    let msgs: Vec<&str> = kind(&v, "config_mismatch")
        .iter()
        .map(|f| f["message"].as_str().unwrap())
        .collect();
    assert_eq!(msgs.len(), 2 + 1 + 1, "{msgs:#?}");
    assert!(msgs.iter().any(|m| m.contains("'lm_head'")));
    assert!(msgs
        .iter()
        .any(|m| m.contains("rank_pattern key 'qq_proj'")));
    let q: Vec<&Value> = kind(&v, "config_mismatch")
        .into_iter()
        .filter(|f| f["module"].as_str().is_some_and(|m| m.ends_with("q_proj")))
        .collect();
    assert_eq!(q.len(), 2, "both layers' q_proj: {v:#}");

    let c = peft_copy(dir.path(), "dora");
    edit_config(&c, |c| c["use_dora"] = true.into());
    let (code, v) = check(&[s(&c)]);
    assert_eq!(code, 1);
    assert_eq!(kind(&v, "config_mismatch").len(), 14, "{v:#}");
}

#[test]
fn shapes_are_checked_against_the_base_model() {
    let dir = tempdir();
    let base = dir.path().join("base");
    std::fs::create_dir(&base).unwrap();
    std::fs::copy(fixture("tiny_llama/config.json"), base.join("config.json")).unwrap();
    // the base's layer-0 q_proj loses its last row
    rewrite(
        &fixture("tiny_llama/model.safetensors"),
        &base.join("model.safetensors"),
        |ts| {
            let (_, t) = ts
                .iter_mut()
                .find(|(k, _)| k == "model.layers.0.self_attn.q_proj.weight")
                .unwrap();
            let (o, i) = (t.shape()[0], t.shape()[1]);
            let v = t.to_f32();
            *t = Tensor::from_f32(vec![o - 1, i], &v[..(o - 1) * i], t.dtype()).unwrap();
        },
    );
    let (code, v) = check(&[s(&fixture("peft/plain")), "--base", s(&base)]);
    assert_eq!(code, 1, "{v:#}");
    let b = kind(&v, "base_mismatch");
    assert_eq!(b.len(), 1, "{v:#}");
    assert_eq!(b[0]["module"], Q0);
    // an SD 1.5 LoRA against a llama: nothing fits
    let (code, v) = check(&[
        s(&fixture("kohya/sd15_lora_r8_a8_attn.safetensors")),
        "--base",
        s(&fixture("tiny_llama-f32.gguf")),
    ]);
    assert_eq!(code, 1);
    assert_eq!(kind(&v, "base_mismatch").len(), 176);
}

#[test]
fn exit_codes_and_text_output() {
    let o = loratool(&["check", "/nonexistent/adapter.safetensors"]);
    assert_eq!(o.status.code(), Some(2));
    let o = loratool(&["check", s(&fixture("peft/plain")), "--tolerance", "2"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--tolerance"), "{}", stderr(&o));
    let o = loratool(&["check"]);
    assert_eq!(o.status.code(), Some(2));
    let out = run_ok(&["check", s(&fixture("peft/plain"))]);
    assert!(out.contains("ok: 0 error(s)"), "{out}");
}
