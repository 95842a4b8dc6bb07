//! `loratool bake` into Hugging Face model directories: against PEFT's own `merge_and_unload`
//! output, and against dense `W + ΔW` (and DoRA's row normalisation) computed here.

mod common;

use common::*;
use loratool::io::SafetensorsFile;
use std::path::Path;

#[test]
fn bake_equals_peft_merge_and_unload() {
    let dir = tempdir();
    let out = dir.path().join("merged");
    let text = run_ok(&[
        "bake",
        s(&fixture("tiny_llama")),
        s(&fixture("peft/plain")),
        "-o",
        s(&out),
    ]);
    assert!(text.contains("into 14 tensors"), "{text}");
    let ours = out.join("model.safetensors");
    let peft = fixture("peft_merges/merged/model.safetensors");
    let base = fixture("tiny_llama/model.safetensors");
    let (o, p) = (
        SafetensorsFile::open(&ours).unwrap(),
        SafetensorsFile::open(&peft).unwrap(),
    );
    for name in p.tensors().keys() {
        let e = rel_err(&values(&peft, name), &values(&ours, name));
        assert!(e < 1e-6, "{name}: {e:.2e}");
    }
    // untouched tensors byte for byte, metadata and the other files kept
    let b = SafetensorsFile::open(&base).unwrap();
    for name in [
        "model.embed_tokens.weight",
        "model.norm.weight",
        "lm_head.weight",
    ] {
        assert!(o.tensor(name).unwrap().bytes() == b.tensor(name).unwrap().bytes());
    }
    assert_eq!(o.metadata(), b.metadata());
    for f in ["config.json", "generation_config.json"] {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(fixture("tiny_llama").join(f)).unwrap()
        );
    }
}

#[test]
fn sharded_in_sharded_out() {
    let dir = tempdir();
    // split the tiny llama into two shards with an index, as save_pretrained does
    let base = dir.path().join("sharded");
    std::fs::create_dir_all(&base).unwrap();
    let src = SafetensorsFile::open(&fixture("tiny_llama/model.safetensors")).unwrap();
    let names: Vec<String> = src.tensors().keys().cloned().collect();
    let (first, second) = names.split_at(names.len() / 2);
    let mut map = serde_json::Map::new();
    for (shard, part) in [
        ("model-00001-of-00002.safetensors", first),
        ("model-00002-of-00002.safetensors", second),
    ] {
        let tensors: Vec<_> = part
            .iter()
            .map(|n| (n.clone(), src.tensor(n).unwrap()))
            .collect();
        write_st(&base.join(shard), &tensors, &[("format", "pt")]);
        for n in part {
            map.insert(n.clone(), serde_json::Value::String(shard.into()));
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
    std::fs::write(
        base.join("model.safetensors.index.json"),
        serde_json::to_string_pretty(&index).unwrap(),
    )
    .unwrap();
    std::fs::copy(fixture("tiny_llama/config.json"), base.join("config.json")).unwrap();

    let out = dir.path().join("out");
    run_ok(&["bake", s(&base), s(&fixture("peft/plain")), "-o", s(&out)]);
    let mut files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json"
        ]
    );
    assert_eq!(
        std::fs::read(out.join("model.safetensors.index.json")).unwrap(),
        std::fs::read(base.join("model.safetensors.index.json")).unwrap()
    );
    let peft = fixture("peft_merges/merged/model.safetensors");
    for (shard, part) in [
        ("model-00001-of-00002.safetensors", first),
        ("model-00002-of-00002.safetensors", second),
    ] {
        let f = SafetensorsFile::open(&out.join(shard)).unwrap();
        assert_eq!(f.tensors().len(), part.len());
        for n in part {
            let e = rel_err(&values(&peft, n), &values(&out.join(shard), n));
            assert!(e < 1e-6, "{n}: {e:.2e}");
        }
    }
}

#[test]
fn dora_and_embeddings_follow_peft_formulas() {
    let dir = tempdir();
    let base = fixture("tiny_llama/model.safetensors");
    for adapter in ["peft/dora", "peft/embed"] {
        let out = dir.path().join(adapter.replace('/', "_"));
        run_ok(&[
            "bake",
            s(&fixture("tiny_llama")),
            s(&fixture(adapter)),
            "-o",
            s(&out),
        ]);
        let a = read_any(&fixture(adapter));
        let merged = out.join("model.safetensors");
        for (path, layer) in &a.layers {
            let name = format!("{path}.weight");
            let w = values(&base, &name);
            let d = dense_delta(layer); // [out, in]; embeddings: [dim, num_embeddings]
            let mut want: Vec<f64> = match layer.kind {
                loratool::adapter::LayerKind::Embedding => {
                    // W is [num_embeddings, dim]; ΔW = (B·A)ᵀ
                    let (dim, n) = (layer.out_features(), layer.in_features());
                    (0..n * dim)
                        .map(|idx| w[idx] + d[(idx % dim) * n + idx / dim])
                        .collect()
                }
                _ => w.iter().zip(&d).map(|(x, y)| x + y).collect(),
            };
            if let Some(m) = &layer.magnitude {
                // W' = m / ‖W + ΔW‖_row ⊙ (W + ΔW)
                let m = m.to_f64();
                let cols = want.len() / m.len();
                for (row, mi) in want.chunks_mut(cols).zip(&m) {
                    let n = row.iter().map(|x| x * x).sum::<f64>().sqrt();
                    row.iter_mut().for_each(|x| *x *= mi / n);
                }
            }
            let e = rel_err(&want, &values(&merged, &name));
            assert!(e < 1e-6, "{adapter} {name}: {e:.2e}");
        }
    }
}

#[test]
fn wrong_base_is_refused_before_anything_is_written() {
    let dir = tempdir();
    let bad = one_module_peft(
        dir.path(),
        "bad",
        "model.layers.0.self_attn.q_proj",
        2,
        4.0,
        (128, 96),
    );
    let missing = one_module_peft(
        dir.path(),
        "missing",
        "model.layers.7.mlp.up_proj",
        2,
        4.0,
        (352, 128),
    );
    let out = dir.path().join("out");
    let o = loratool(&[
        "bake",
        s(&fixture("tiny_llama")),
        s(&bad),
        s(&missing),
        "-o",
        s(&out),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("2 adapter module(s)")
            && e.contains("model.layers.0.self_attn.q_proj.weight")
            && e.contains("no tensor model.layers.7.mlp.up_proj.weight")
            && e.contains("nothing was written"),
        "{e}"
    );
    assert!(!out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".loratool"))
        .collect();
    assert!(leftovers.is_empty(), "temporary directory left behind");
}

/// PEFT's merge of DoRA after PR #3609, as the unmerged forward computes it:
/// `W₀ + Σ_lora ΔWᵢ + Σ_dora [(fᵢ − 1)·W₀ + fᵢ·ΔWᵢ]`, `fᵢ = mᵢ / ‖W₀ + ΔWᵢ‖_row`.
#[test]
fn several_dora_adapters_are_each_normalised_against_the_unmerged_weight() {
    let dir = tempdir();
    let out = dir.path().join("out");
    let (dora, plain) = (fixture("peft/dora"), fixture("peft/plain"));
    run_ok(&[
        "bake",
        s(&fixture("tiny_llama")),
        s(&dora),
        s(&dora),
        s(&plain),
        "--weights",
        "1,0.5,0.8",
        "-o",
        s(&out),
    ]);
    let (d, p) = (read_any(&dora), read_any(&plain));
    let base = fixture("tiny_llama/model.safetensors");
    for (path, layer) in &d.layers {
        let name = format!("{path}.weight");
        let w0 = values(&base, &name);
        let cols = layer.in_features();
        let m = layer.magnitude.as_ref().unwrap().to_f64();
        let mut want: Vec<f64> = w0.clone();
        let plain_delta = dense_delta(&p.layers[path]);
        want.iter_mut()
            .zip(&plain_delta)
            .for_each(|(x, y)| *x += 0.8 * y);
        for weight in [1.0, 0.5] {
            let dw: Vec<f64> = dense_delta(layer).iter().map(|x| weight * x).collect();
            for (row, mi) in m.iter().enumerate() {
                let span = row * cols..(row + 1) * cols;
                let n = span
                    .clone()
                    .map(|i| (w0[i] + dw[i]).powi(2))
                    .sum::<f64>()
                    .sqrt();
                let f = mi / n;
                for i in span {
                    want[i] += (f - 1.0) * w0[i] + f * dw[i];
                }
            }
        }
        let e = rel_err(&want, &values(&out.join("model.safetensors"), &name));
        assert!(e < 1e-6, "{name}: {e:.2e}");
    }
}

/// A PEFT adapter with `modules_to_save = ["lm_head"]` and a LoRA on one q_proj.
fn adapter_with_saved_head(dir: &Path) -> std::path::PathBuf {
    use loratool::tensor::DType;
    let d = dir.join("saved_head");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("adapter_config.json"),
        r#"{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"], "modules_to_save": ["lm_head"]}"#,
    )
    .unwrap();
    let q = "base_model.model.model.layers.0.self_attn.q_proj";
    write_st(
        &d.join("adapter_model.safetensors"),
        &[
            (
                format!("{q}.lora_A.weight"),
                pseudo(vec![2, 128], 1, DType::F32),
            ),
            (
                format!("{q}.lora_B.weight"),
                pseudo(vec![128, 2], 2, DType::F32),
            ),
            (
                "base_model.model.lm_head.weight".into(),
                pseudo(vec![512, 128], 3, DType::F32),
            ),
        ],
        &[],
    );
    d
}

#[test]
fn modules_to_save_replace_the_base_tensor() {
    let dir = tempdir();
    let adapter = adapter_with_saved_head(dir.path());
    let saved = values(
        &adapter.join("adapter_model.safetensors"),
        "base_model.model.lm_head.weight",
    );
    let base = fixture("tiny_llama/model.safetensors");
    let w0 = values(&base, "lm_head.weight");
    for (weight, tag) in [("1", "full"), ("0.25", "quarter")] {
        let out = dir.path().join(tag);
        let text = run_ok(&[
            "bake",
            s(&fixture("tiny_llama")),
            s(&adapter),
            "--weights",
            weight,
            "-o",
            s(&out),
        ]);
        assert!(text.contains("into 2 tensors"), "{text}");
        let got = values(&out.join("model.safetensors"), "lm_head.weight");
        let w: f64 = weight.parse().unwrap();
        let want: Vec<f64> = w0
            .iter()
            .zip(&saved)
            .map(|(b, t)| b + w * (t - b))
            .collect();
        if w == 1.0 {
            assert_eq!(got, saved, "weight 1 stores the trained tensor itself");
        }
        let e = rel_err(&want, &got);
        assert!(e < 1e-6, "weight {weight}: {e:.2e}");
    }
    // a LoRA on a tensor another adapter replaces is a conflict
    let lora_on_head = one_module_peft(dir.path(), "head_lora", "lm_head", 2, 4.0, (512, 128));
    let out = dir.path().join("conflict");
    let o = loratool(&[
        "bake",
        s(&fixture("tiny_llama")),
        s(&adapter),
        s(&lora_on_head),
        "-o",
        s(&out),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("lm_head.weight: a fully trained tensor"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
}

/// GPT-2-style `Conv1D` weights are stored `[in, out]`; with `fan_in_fan_out` PEFT adds
/// `(s·B·A)ᵀ`, and DoRA normalises each output column.
#[test]
fn fan_in_fan_out_adds_the_transposed_delta() {
    use loratool::tensor::DType;
    let dir = tempdir();
    let (inp, out, r) = (48usize, 80usize, 3usize);
    let name = "transformer.h.0.attn.c_attn";
    let base = dir.path().join("gpt2");
    std::fs::create_dir_all(&base).unwrap();
    write_st(
        &base.join("model.safetensors"),
        &[
            (
                format!("{name}.weight"),
                pseudo(vec![inp, out], 1, DType::F32),
            ),
            (format!("{name}.bias"), pseudo(vec![out], 2, DType::F32)),
        ],
        &[("format", "pt")],
    );
    std::fs::write(base.join("config.json"), r#"{"model_type": "gpt2"}"#).unwrap();
    let w0 = values(&base.join("model.safetensors"), &format!("{name}.weight"));
    for dora in [false, true] {
        let a = dir.path().join(format!("fifo-{dora}"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::write(
            a.join("adapter_config.json"),
            format!(
                r#"{{"peft_type": "LORA", "r": {r}, "lora_alpha": 6, "target_modules": ["c_attn"], "fan_in_fan_out": true, "use_dora": {dora}}}"#
            ),
        )
        .unwrap();
        let key = format!("base_model.model.{name}");
        let mut tensors = vec![
            (
                format!("{key}.lora_A.weight"),
                pseudo(vec![r, inp], 3, DType::F32),
            ),
            (
                format!("{key}.lora_B.weight"),
                pseudo(vec![out, r], 4, DType::F32),
            ),
        ];
        if dora {
            let m: Vec<f32> = (0..out).map(|j| 1.0 + 0.01 * j as f32).collect();
            tensors.push((
                format!("{key}.lora_magnitude_vector"),
                loratool::tensor::Tensor::from_f32(vec![out], &m, DType::F32).unwrap(),
            ));
        }
        write_st(&a.join("adapter_model.safetensors"), &tensors, &[]);
        let layer = read_any(&a).layers[name].clone();
        let d = dense_delta(&layer); // [out, in]
        let mut want: Vec<f64> = (0..inp * out)
            .map(|idx| w0[idx] + d[(idx % out) * inp + idx / out])
            .collect();
        if let Some(m) = &layer.magnitude {
            for (j, mj) in m.to_f64().iter().enumerate() {
                let n = (0..inp)
                    .map(|i| want[i * out + j].powi(2))
                    .sum::<f64>()
                    .sqrt();
                (0..inp).for_each(|i| want[i * out + j] *= mj / n);
            }
        }
        let o = dir.path().join(format!("out-{dora}"));
        run_ok(&["bake", s(&base), s(&a), "-o", s(&o)]);
        let got = values(&o.join("model.safetensors"), &format!("{name}.weight"));
        let e = rel_err(&want, &got);
        assert!(e < 1e-6, "dora {dora}: {e:.2e}");
        if !dora {
            // extract knows GPT-2's Conv1D: a fan_in_fan_out adapter with PEFT's factor shapes
            let x = dir.path().join("extracted");
            run_ok(&[
                "extract",
                "--base",
                s(&base),
                "--tuned",
                s(&o),
                "--rank",
                "3",
                "-o",
                s(&x),
            ]);
            let config: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(x.join("adapter_config.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(config["fan_in_fan_out"], true);
            let got = read_any(&x).layers[name].clone();
            assert_eq!(got.down.shape(), [3, inp]);
            assert_eq!(got.up.shape(), [out, 3]);
            let e = rel_err(&d, &dense_delta(&got));
            assert!(e < 1e-4, "extract: {e:.2e}");
        }
    }
}
