//! `loratool bake` and `extract` on Stable Diffusion layouts: a diffusers pipeline directory and
//! single-file SD1.5/SDXL checkpoints (ldm/SGM names, SDXL text encoder 2's fused q/k/v), built
//! here from kohya LoRA modules; results checked against dense `W + ΔW` computed in the test.

mod common;

use common::*;
use loratool::adapter::Adapter;
use loratool::formats::sd;
use loratool::io::SafetensorsFile;
use loratool::tensor::{DType, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A kohya file with a few modules of the SD1.5 C3Lier fixture (fp16 factors as sd-scripts
/// wrote them): a text-encoder linear, a 1×1-conv proj_in, a 3×3 conv at rank 2, a cross-attn key.
fn sd15_subset(dir: &Path) -> PathBuf {
    let src = SafetensorsFile::open(&fixture("kohya/sd15_lora_r4_a2_c3lier.safetensors")).unwrap();
    let keep = [
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj",
        "lora_unet_down_blocks_0_attentions_0_proj_in",
        "lora_unet_down_blocks_0_resnets_0_conv1",
        "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k",
    ];
    let tensors: Vec<(String, Tensor)> = src
        .tensors()
        .keys()
        .filter(|k| keep.iter().any(|m| k.starts_with(&format!("{m}."))))
        .map(|k| (k.clone(), src.tensor(k).unwrap()))
        .collect();
    assert_eq!(tensors.len(), 12);
    let p = dir.join("sd15_subset.safetensors");
    write_st(&p, &tensors, &[("ss_base_model_version", "sd_v1")]);
    p
}

/// The base weight shape of every module of `adapter`, keyed by canonical module path.
fn base_shapes(adapter: &Adapter) -> BTreeMap<String, Vec<usize>> {
    adapter
        .layers
        .iter()
        .map(|(p, l)| {
            let shape = match l.kind {
                loratool::adapter::LayerKind::Conv => {
                    let (kh, kw) = l.kernel();
                    vec![l.out_features(), l.in_features(), kh, kw]
                }
                _ => vec![l.out_features(), l.in_features()],
            };
            (p.clone(), shape)
        })
        .collect()
}

fn write_files(root: &Path, files: &[(&str, &str)]) {
    for (rel, text) in files {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

/// Every file under `root`, relative, sorted.
fn tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut v = Vec::new();
    walk(root, root, &mut v);
    v.sort();
    v
}

/// `W + ΔW` for each module, as the test computes it.
fn expect(w: &[f64], layer: &loratool::adapter::LoraLayer, weight: f64) -> Vec<f64> {
    w.iter()
        .zip(dense_delta(layer))
        .map(|(x, d)| x + weight * d)
        .collect()
}

#[test]
fn sd15_pipeline_and_checkpoint_bakes_match_dense_and_each_other() {
    let dir = tempdir();
    let lora = sd15_subset(dir.path());
    let adapter = read_any(&lora);
    assert_eq!(adapter.layers.len(), 4);
    let table = sd::table("sd15").unwrap();
    let shapes = base_shapes(&adapter);

    // a diffusers pipeline: f32 weights plus an fp16 variant of the unet, untouched extra tensors,
    // a VAE nobody touches, and the non-weight files a pipeline has
    let pipe = dir.path().join("pipe");
    let mut comps: BTreeMap<&str, Vec<(String, Tensor)>> = BTreeMap::new();
    let mut ckpt: Vec<(String, Tensor)> = Vec::new();
    for (i, (path, shape)) in shapes.iter().enumerate() {
        let (comp, rest) = path.split_once('.').unwrap();
        let t = pseudo(shape.clone(), 100 + i as u64, DType::F32);
        let ldm = &table.by_canonical(path).unwrap().ldm;
        ckpt.push((format!("{ldm}.weight"), t.cast(DType::F16).unwrap()));
        comps
            .entry(comp)
            .or_default()
            .push((format!("{rest}.weight"), t));
    }
    comps
        .get_mut("unet")
        .unwrap()
        .push(("conv_in.bias".into(), pseudo(vec![320], 7, DType::F32)));
    comps.get_mut("text_encoder").unwrap().push((
        "text_model.embeddings.position_embedding.weight".into(),
        pseudo(vec![77, 768], 8, DType::F32),
    ));
    ckpt.push((
        "model.diffusion_model.input_blocks.0.0.bias".into(),
        pseudo(vec![320], 7, DType::F16),
    ));
    ckpt.push((
        "first_stage_model.decoder.conv_in.bias".into(),
        pseudo(vec![512], 9, DType::F16),
    ));
    let file_of = |c: &str| {
        if c == "unet" {
            "diffusion_pytorch_model"
        } else {
            "model"
        }
    };
    for (comp, tensors) in &comps {
        let d = pipe.join(comp);
        std::fs::create_dir_all(&d).unwrap();
        write_st(
            &d.join(format!("{}.safetensors", file_of(comp))),
            tensors,
            &[("format", "pt")],
        );
        if *comp == "unet" {
            let half: Vec<(String, Tensor)> = tensors
                .iter()
                .map(|(n, t)| (n.clone(), t.cast(DType::F16).unwrap()))
                .collect();
            write_st(
                &d.join("diffusion_pytorch_model.fp16.safetensors"),
                &half,
                &[("format", "pt")],
            );
        }
    }
    std::fs::create_dir_all(pipe.join("vae")).unwrap();
    write_st(
        &pipe.join("vae/diffusion_pytorch_model.safetensors"),
        &[(
            "decoder.conv_in.bias".into(),
            pseudo(vec![512], 9, DType::F32),
        )],
        &[],
    );
    write_files(
        &pipe,
        &[
            (
                "model_index.json",
                r#"{"_class_name": "StableDiffusionPipeline"}"#,
            ),
            ("scheduler/scheduler_config.json", "{}"),
            ("tokenizer/vocab.json", "{}"),
            ("unet/config.json", r#"{"sample_size": 64}"#),
            ("text_encoder/config.json", "{}"),
            ("vae/config.json", "{}"),
        ],
    );

    let out = dir.path().join("baked-pipe");
    let text = run_ok(&["bake", s(&pipe), s(&lora), "-o", s(&out)]);
    assert!(
        text.contains("into 4 tensors") && text.contains("diffusers pipeline directory"),
        "{text}"
    );
    assert_eq!(tree(&out), tree(&pipe), "the output mirrors the pipeline");
    for rel in [
        "model_index.json",
        "unet/config.json",
        "tokenizer/vocab.json",
        "vae/diffusion_pytorch_model.safetensors",
    ] {
        assert_eq!(
            std::fs::read(out.join(rel)).unwrap(),
            std::fs::read(pipe.join(rel)).unwrap(),
            "{rel} copied byte for byte"
        );
    }
    for (path, layer) in &adapter.layers {
        let (comp, rest) = path.split_once('.').unwrap();
        let name = format!("{rest}.weight");
        let f = format!("{comp}/{}.safetensors", file_of(comp));
        let want = expect(&values(&pipe.join(&f), &name), layer, 1.0);
        let e = rel_err(&want, &values(&out.join(&f), &name));
        assert!(e < 1e-6, "{path}: {e:.2e}");
        if comp == "unet" {
            // the fp16 variant is baked too, from its own f16 weights
            let f16 = "unet/diffusion_pytorch_model.fp16.safetensors";
            let want = expect(&values(&pipe.join(f16), &name), layer, 1.0);
            let e = rel_err(&want, &values(&out.join(f16), &name));
            assert!(e < 2e-3, "{path} fp16: {e:.2e}");
        }
    }
    let b = SafetensorsFile::open(&pipe.join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    let o = SafetensorsFile::open(&out.join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    assert_eq!(
        o.tensor("conv_in.bias").unwrap().bytes(),
        b.tensor("conv_in.bias").unwrap().bytes()
    );
    assert_eq!(o.metadata(), b.metadata());

    // the same bake into a single-file checkpoint (ldm names, f16): same numbers as the
    // pipeline's fp16 variant, bit for bit, since both start from the same f16 weights
    let ck = dir.path().join("sd15.safetensors");
    write_st(&ck, &ckpt, &[]);
    let ck_out = dir.path().join("sd15-baked.safetensors");
    let text = run_ok(&["bake", s(&ck), s(&lora), "-o", s(&ck_out)]);
    assert!(text.contains("single-file sd15 checkpoint"), "{text}");
    let baked = SafetensorsFile::open(&ck_out).unwrap();
    let variant =
        SafetensorsFile::open(&out.join("unet/diffusion_pytorch_model.fp16.safetensors")).unwrap();
    for (path, layer) in &adapter.layers {
        let ldm = format!("{}.weight", table.by_canonical(path).unwrap().ldm);
        let want = expect(&values(&ck, &ldm), layer, 1.0);
        let e = rel_err(&want, &values(&ck_out, &ldm));
        assert!(e < 2e-3, "{ldm}: {e:.2e}");
        if let Some(rest) = path.strip_prefix("unet.") {
            assert_eq!(
                baked.tensor(&ldm).unwrap().bytes(),
                variant.tensor(&format!("{rest}.weight")).unwrap().bytes(),
                "{path}: checkpoint and pipeline bakes differ"
            );
        }
    }
    let first = SafetensorsFile::open(&ck).unwrap();
    for n in [
        "first_stage_model.decoder.conv_in.bias",
        "model.diffusion_model.input_blocks.0.0.bias",
    ] {
        assert_eq!(
            baked.tensor(n).unwrap().bytes(),
            first.tensor(n).unwrap().bytes()
        );
    }

    // extract from the two pipelines gives back the adapter's deltas (diffusers format by
    // default for a pipeline), and only the modified modules
    let ex = dir.path().join("extracted.safetensors");
    let text = run_ok(&[
        "extract",
        "--base",
        s(&pipe),
        "--tuned",
        s(&out),
        "--rank",
        "4",
        "-o",
        s(&ex),
    ]);
    assert!(text.contains("(diffusers"), "{text}");
    let got = read_any(&ex);
    assert_eq!(
        got.layers.keys().collect::<Vec<_>>(),
        adapter.layers.keys().collect::<Vec<_>>()
    );
    for (path, layer) in &adapter.layers {
        let e = rel_err(&dense_delta(layer), &dense_delta(&got.layers[path]));
        assert!(e < 1e-4, "extract {path}: {e:.2e}");
    }
}

/// A synthetic kohya SDXL LoRA: text encoder 2's q, k, v of layer 0 (fused in the checkpoint),
/// text encoder 1's q, and a U-Net self-attention query.
fn sdxl_lora(dir: &Path) -> PathBuf {
    let modules = [
        (
            "lora_te2_text_model_encoder_layers_0_self_attn_q_proj",
            1280,
            1280,
        ),
        (
            "lora_te2_text_model_encoder_layers_0_self_attn_k_proj",
            1280,
            1280,
        ),
        (
            "lora_te2_text_model_encoder_layers_0_self_attn_v_proj",
            1280,
            1280,
        ),
        (
            "lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
            768,
            768,
        ),
        (
            "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q",
            640,
            640,
        ),
    ];
    let mut tensors = Vec::new();
    for (i, (m, out, inp)) in modules.iter().enumerate() {
        let seed = 10 * i as u64;
        tensors.push((
            format!("{m}.lora_down.weight"),
            pseudo(vec![4, *inp], seed + 1, DType::F32),
        ));
        tensors.push((
            format!("{m}.lora_up.weight"),
            pseudo(vec![*out, 4], seed + 2, DType::F32),
        ));
        tensors.push((
            format!("{m}.alpha"),
            Tensor::scalar(2.0 + i as f64, DType::F32).unwrap(),
        ));
    }
    let p = dir.join("sdxl_lora.safetensors");
    write_st(&p, &tensors, &[("ss_base_model_version", "sdxl_base_v1-0")]);
    p
}

fn sdxl_checkpoint(path: &Path) {
    let te2 = "conditioner.embedders.1.model.transformer.resblocks.0.attn";
    write_st(
        path,
        &[
            (
                format!("{te2}.in_proj_weight"),
                pseudo(vec![3840, 1280], 1, DType::F32),
            ),
            (format!("{te2}.in_proj_bias"), pseudo(vec![3840], 2, DType::F32)),
            (
                "conditioner.embedders.0.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"
                    .into(),
                pseudo(vec![768, 768], 3, DType::F32),
            ),
            (
                "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight"
                    .into(),
                pseudo(vec![640, 640], 4, DType::F32),
            ),
            (
                "model.diffusion_model.label_emb.0.0.bias".into(),
                pseudo(vec![1280], 5, DType::F32),
            ),
        ],
        &[("modelspec.architecture", "stable-diffusion-xl-v1-base")],
    );
}

#[test]
fn sdxl_checkpoint_bake_fills_the_fused_qkv_thirds_and_extract_splits_them() {
    let dir = tempdir();
    let lora = sdxl_lora(dir.path());
    let adapter = read_any(&lora);
    assert_eq!(adapter.layers.len(), 5);
    let ck = dir.path().join("sdxl.safetensors");
    sdxl_checkpoint(&ck);
    let out = dir.path().join("sdxl-baked.safetensors");
    let text = run_ok(&["bake", s(&ck), s(&lora), "--weights", "0.75", "-o", s(&out)]);
    assert!(text.contains("single-file sdxl checkpoint"), "{text}");

    let te2 = "conditioner.embedders.1.model.transformer.resblocks.0.attn";
    let fused = format!("{te2}.in_proj_weight");
    let mut want = values(&ck, &fused);
    for (third, p) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
        let layer =
            &adapter.layers[&format!("text_encoder_2.text_model.encoder.layers.0.self_attn.{p}")];
        let d = dense_delta(layer);
        let block = &mut want[third * 1280 * 1280..(third + 1) * 1280 * 1280];
        block.iter_mut().zip(d).for_each(|(x, y)| *x += 0.75 * y);
    }
    let e = rel_err(&want, &values(&out, &fused));
    assert!(e < 1e-6, "fused in_proj: {e:.2e}");
    for (path, ldm) in [
        (
            "text_encoder.text_model.encoder.layers.0.self_attn.q_proj",
            "conditioner.embedders.0.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight",
        ),
        (
            "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
            "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight",
        ),
    ] {
        let want = expect(&values(&ck, ldm), &adapter.layers[path], 0.75);
        let e = rel_err(&want, &values(&out, ldm));
        assert!(e < 1e-6, "{ldm}: {e:.2e}");
    }
    let (a, b) = (
        SafetensorsFile::open(&ck).unwrap(),
        SafetensorsFile::open(&out).unwrap(),
    );
    assert_eq!(a.metadata(), b.metadata());
    for n in [
        format!("{te2}.in_proj_bias"),
        "model.diffusion_model.label_emb.0.0.bias".into(),
    ] {
        assert_eq!(a.tensor(&n).unwrap().bytes(), b.tensor(&n).unwrap().bytes());
    }

    // extract (kohya by default for a checkpoint) finds q, k and v as three modules
    let ex = dir.path().join("extracted.safetensors");
    run_ok(&[
        "extract",
        "--base",
        s(&ck),
        "--tuned",
        s(&out),
        "--rank",
        "4",
        "-o",
        s(&ex),
    ]);
    let keys: Vec<String> = SafetensorsFile::open(&ex)
        .unwrap()
        .tensors()
        .keys()
        .cloned()
        .collect();
    assert!(
        keys.iter()
            .any(|k| k == "lora_te2_text_model_encoder_layers_0_self_attn_k_proj.lora_up.weight"),
        "{keys:?}"
    );
    let got = read_any(&ex);
    assert_eq!(got.layers.len(), 5);
    for (path, layer) in &adapter.layers {
        let want: Vec<f64> = dense_delta(layer).iter().map(|x| 0.75 * x).collect();
        let e = rel_err(&want, &dense_delta(&got.layers[path]));
        assert!(e < 1e-4, "extract {path}: {e:.2e}");
    }
}

#[test]
fn an_sd15_lora_is_refused_by_an_sdxl_checkpoint() {
    let dir = tempdir();
    let lora = sd15_subset(dir.path());
    let ck = dir.path().join("sdxl.safetensors");
    sdxl_checkpoint(&ck);
    let out = dir.path().join("out.safetensors");
    let o = loratool(&["bake", s(&ck), s(&lora), "-o", s(&out)]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        // the text encoder's q_proj exists in SDXL's first text encoder; the U-Net modules do not
        e.contains("3 adapter module(s)")
            && e.contains("single-file sdxl checkpoint")
            && e.contains(
                "unet.down_blocks.0.attentions.0.proj_in is not a module of loratool's sdxl table"
            )
            && e.contains("no tensor model.diffusion_model.input_blocks.1.0.in_layers.2.weight")
            && e.contains("nothing was written"),
        "{e}"
    );
    assert!(!out.exists());
}
