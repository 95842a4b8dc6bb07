//! Flux.1 / SD3 adapters in every layout against diffusers' own converters (fixtures/flux/,
//! made by fixtures/gen/make_flux_layout_fixtures.py with diffusers 0.42.1): for each input
//! layout, loratool's canonical layers have the ΔW (`scale·B·A`) of diffusers' converted
//! output, module by module (relative Frobenius error from the factors, no dense matrices);
//! T5 modules, which diffusers drops, are kept with the ΔW of the source module. Then writing
//! kohya / comfy / diffusers and reading back gives the same ΔW, and a fused module written from
//! split parts has the ΔW of the original fused module.

use loratool::adapter::codec::{read_adapter, write_adapter, ReadContext, WriteContext};
use loratool::adapter::{Adapter, Format, LayerKind, LoraLayer, ReadOptions};
use loratool::io::{write_safetensors, PendingTensor, SafetensorsFile};
use loratool::tensor::{DType, Tensor};
use loratool::testing::layer_rel_diff;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const TOL: f64 = 1e-6;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/flux")
        .join(name)
}

fn read(path: &Path) -> Adapter {
    read_adapter(path, None, &ReadContext::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// diffusers' converted output, read from the raw tensors: `<module>.lora_A/B.weight` with
/// alpha baked in (scale 1).
fn diffusers_reference(name: &str) -> BTreeMap<String, LoraLayer> {
    let f = SafetensorsFile::open(&fixture(name)).unwrap();
    let mut out = BTreeMap::new();
    for key in f.tensors().keys() {
        let Some(module) = key.strip_suffix(".lora_A.weight") else {
            continue;
        };
        let a = f.tensor(key).unwrap();
        let b = f.tensor(&format!("{module}.lora_B.weight")).unwrap();
        let r = a.shape()[0];
        let a = a.reshaped(vec![r, a.numel() / r]).unwrap();
        let b = b.reshaped(vec![b.shape()[0], r]).unwrap();
        out.insert(
            module.to_string(),
            LoraLayer::new(module, a, b, r as f64, LayerKind::Linear).unwrap(),
        );
    }
    assert!(!out.is_empty(), "{name}");
    out
}

/// A layer flattened to a linear one (conv kernels into the input width), for comparisons.
fn flat(l: &LoraLayer) -> LoraLayer {
    let r = l.rank();
    LoraLayer::new(
        "x",
        l.down.reshaped(vec![r, l.down.numel() / r]).unwrap(),
        l.up.reshaped(vec![l.out_features(), r]).unwrap(),
        l.alpha,
        LayerKind::Linear,
    )
    .unwrap()
}

fn assert_same(what: &str, ours: &LoraLayer, want: &LoraLayer, factor: f64) {
    let e = layer_rel_diff(&flat(ours), &[(&flat(want), factor)]);
    assert!(e < TOL, "{what}: relative Frobenius error {e:e}");
}

/// diffusers 0.42.1's Flux kohya/ComfyUI converter drops the `.alpha` of the two
/// `final_layer` modules (it pops them unused and applies scale 1), while sd-scripts trains and
/// ComfyUI applies them at alpha/r, as loratool reads them: for those two modules ours is
/// `alpha/r` times diffusers'. The source module's `alpha/r`, by its name in `source`.
fn final_layer_scale(source: &str, name: &str) -> f64 {
    let l = source_layer(source, name);
    l.scale()
}

/// Every module diffusers converted equals ours (times `factor(module)`); returns the modules
/// only we have.
fn check_against(adapter: &Adapter, reference: &str, factor: &dyn Fn(&str) -> f64) -> Vec<String> {
    let want = diffusers_reference(reference);
    for (m, w) in &want {
        let ours = adapter
            .layers
            .get(m)
            .unwrap_or_else(|| panic!("{reference}: loratool has no {m}"));
        assert_same(m, ours, w, factor(m));
    }
    adapter
        .layers
        .keys()
        .filter(|k| !want.contains_key(*k))
        .cloned()
        .collect()
}

/// The source file's module `name` as one plain layer (scale alpha/r).
fn source_layer(file: &str, name: &str) -> LoraLayer {
    let f = SafetensorsFile::open(&fixture(file)).unwrap();
    let d = f.tensor(&format!("{name}.lora_down.weight")).unwrap();
    let u = f.tensor(&format!("{name}.lora_up.weight")).unwrap();
    let a = f
        .tensor(&format!("{name}.alpha"))
        .unwrap()
        .scalar_value()
        .unwrap();
    LoraLayer::new(name, d, u, a, LayerKind::Linear).unwrap()
}

/// Write `a` as `format`, read it back, and check every module's ΔW is unchanged.
fn round_trip(a: &Adapter, format: Format, dir: &Path) -> Adapter {
    let out = match format {
        Format::Diffusers => dir.join(format!("{format}")),
        _ => dir.join(format!("{format}.safetensors")),
    };
    write_adapter(a, format, &out, &WriteContext::default())
        .unwrap_or_else(|e| panic!("writing {format}: {e}"));
    let back = read_adapter(&out, Some(format), &ReadContext::default())
        .unwrap_or_else(|e| panic!("reading back {format}: {e}"));
    assert_eq!(
        back.layers.keys().collect::<Vec<_>>(),
        a.layers.keys().collect::<Vec<_>>(),
        "{format}"
    );
    for (m, l) in &a.layers {
        assert_same(&format!("{format} {m}"), &back.layers[m], l, 1.0);
    }
    back
}

#[test]
fn kohya_flux_matches_diffusers_and_keeps_t5() {
    let a = read(&fixture("kohya.safetensors"));
    assert_eq!(a.meta.source_format, Some(Format::Kohya));
    assert_eq!(a.meta.family.as_deref(), Some("flux1"));
    let extra = check_against(&a, "kohya.diffusers.safetensors", &|m| match m {
        "transformer.norm_out.linear" => final_layer_scale(
            "kohya.safetensors",
            "lora_unet_final_layer_adaLN_modulation_1",
        ),
        "transformer.proj_out" => {
            final_layer_scale("kohya.safetensors", "lora_unet_final_layer_linear")
        }
        _ => 1.0,
    });
    // diffusers drops the T5 module; loratool keeps it at the source's ΔW
    assert_eq!(
        extra,
        ["text_encoder_2.encoder.block.0.layer.0.SelfAttention.q"]
    );
    let src = source_layer(
        "kohya.safetensors",
        "lora_te3_encoder_block_0_layer_0_SelfAttention_q",
    );
    assert_same("T5", &a.layers[&extra[0]], &src, 1.0);
    // 1 double block (img/txt qkv split 3 ways), 1 single block (linear1 4 ways), norm_out
    assert!(a
        .layers
        .contains_key("transformer.single_transformer_blocks.0.proj_mlp"));
    assert!(a.layers.contains_key("transformer.norm_out.linear"));

    let dir = tempfile::tempdir().unwrap();
    for f in [Format::Kohya, Format::Comfy, Format::Diffusers] {
        round_trip(&a, f, dir.path());
    }
    // the written kohya file's fused modules have the ΔW of the source's fused modules
    let k = dir.path().join("kohya.safetensors");
    for name in [
        "lora_unet_double_blocks_0_img_attn_qkv",
        "lora_unet_single_blocks_0_linear1",
        "lora_unet_final_layer_adaLN_modulation_1",
        "lora_te3_encoder_block_0_layer_0_SelfAttention_q",
    ] {
        let want = source_layer("kohya.safetensors", name);
        let f = SafetensorsFile::open(&k).unwrap();
        let d = f.tensor(&format!("{name}.lora_down.weight")).unwrap();
        let u = f.tensor(&format!("{name}.lora_up.weight")).unwrap();
        let al = f
            .tensor(&format!("{name}.alpha"))
            .unwrap()
            .scalar_value()
            .unwrap();
        let got = LoraLayer::new(name, d, u, al, LayerKind::Linear).unwrap();
        assert_same(name, &got, &want, 1.0);
    }
}

#[test]
fn diffusers_flux_written_as_kohya_fuses_exactly() {
    // diffusers' own conversion of the kohya file, read as a diffusers file and written back
    // to kohya: every fused module equals the original kohya module
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    std::fs::create_dir(&d).unwrap();
    std::fs::copy(
        fixture("kohya.diffusers.safetensors"),
        d.join("pytorch_lora_weights.safetensors"),
    )
    .unwrap();
    let a = read(&d);
    assert_eq!(a.meta.source_format, Some(Format::Diffusers));
    assert_eq!(a.meta.family.as_deref(), Some("flux1"));
    let out = dir.path().join("k.safetensors");
    write_adapter(&a, Format::Kohya, &out, &WriteContext::default()).unwrap();
    let written = SafetensorsFile::open(&out).unwrap();
    let src = SafetensorsFile::open(&fixture("kohya.safetensors")).unwrap();
    let mut n = 0;
    for key in src.tensors().keys() {
        let Some(name) = key.strip_suffix(".lora_down.weight") else {
            continue;
        };
        if name.starts_with("lora_te3_") {
            continue; // diffusers dropped it
        }
        let d = written
            .tensor(&format!("{name}.lora_down.weight"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let u = written.tensor(&format!("{name}.lora_up.weight")).unwrap();
        let al = written
            .tensor(&format!("{name}.alpha"))
            .unwrap()
            .scalar_value()
            .unwrap();
        let got = LoraLayer::new(name, d, u, al, LayerKind::Linear).unwrap();
        let src = source_layer("kohya.safetensors", name);
        // diffusers applied scale 1 to the final layer (see final_layer_scale)
        let factor = if name.starts_with("lora_unet_final_layer") {
            1.0 / src.scale()
        } else {
            1.0
        };
        assert_same(name, &got, &src, factor);
        n += 1;
    }
    assert_eq!(n, 25);
    assert_eq!(
        written
            .metadata()
            .get("ss_network_module")
            .map(|s| s.as_str()),
        Some("networks.lora_flux")
    );
}

#[test]
fn kohya_split_qkv_reads_at_the_trained_scale() {
    let a = read(&fixture("kohya_split_qkv.safetensors"));
    // diffusers applies the fused file's alpha/(J·r): sd-scripts trained each part at alpha/r,
    // J = 3 (q, k, v) and 4 (q, k, v, mlp) times stronger
    let want = diffusers_reference("kohya_split_qkv.diffusers.safetensors");
    for (m, w) in &want {
        let j = if m.contains("single_transformer_blocks") {
            4.0
        } else {
            3.0
        };
        assert_same(m, &a.layers[m], w, j);
        assert_eq!(
            a.layers[m].rank(),
            1,
            "{m}: block-diagonal parts keep rank r"
        );
    }
    assert_eq!(a.layers.len(), want.len());
    assert!(a.meta.warnings.iter().any(|w| w.contains("split_qkv")));
}

#[test]
fn comfy_flux_matches_diffusers() {
    let a = read(&fixture("comfy.safetensors"));
    assert_eq!(a.meta.source_format, Some(Format::Comfy));
    let extra = check_against(&a, "comfy.diffusers.safetensors", &|m| match m {
        "transformer.norm_out.linear" => final_layer_scale(
            "comfy.safetensors",
            "diffusion_model.final_layer.adaLN_modulation.1",
        ),
        "transformer.proj_out" => {
            final_layer_scale("comfy.safetensors", "diffusion_model.final_layer.linear")
        }
        _ => 1.0,
    });
    assert_eq!(
        extra,
        ["text_encoder_2.encoder.block.0.layer.0.SelfAttention.q"]
    );
    let dir = tempfile::tempdir().unwrap();
    round_trip(&a, Format::Comfy, dir.path());
    round_trip(&a, Format::Kohya, dir.path());
}

#[test]
fn onetrainer_flux_matches_diffusers() {
    let a = read(&fixture("onetrainer.safetensors"));
    assert_eq!(a.meta.source_format, Some(Format::OneTrainer));
    let extra = check_against(&a, "onetrainer.diffusers.safetensors", &|_| 1.0);
    assert_eq!(
        extra,
        ["text_encoder_2.encoder.block.0.layer.0.SelfAttention.v"]
    );
    let src = source_layer(
        "onetrainer.safetensors",
        "lora_te2_encoder_block_0_layer_0_SelfAttention_v",
    );
    assert_same("T5", &a.layers[&extra[0]], &src, 1.0);
    let dir = tempfile::tempdir().unwrap();
    round_trip(&a, Format::Kohya, dir.path());
    round_trip(&a, Format::Diffusers, dir.path());
    let err = write_adapter(
        &a,
        Format::OneTrainer,
        &dir.path().join("o.safetensors"),
        &WriteContext::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("does not write"), "{err}");
}

#[test]
fn comfy_with_peft_style_factor_names_reads_the_same() {
    // ComfyUI also takes `lora_A`/`lora_B` under `diffusion_model.` (no alpha: scale 1)
    let src = SafetensorsFile::open(&fixture("comfy.safetensors")).unwrap();
    let m = "diffusion_model.double_blocks.0.img_attn.qkv";
    let d = src.tensor(&format!("{m}.lora_down.weight")).unwrap();
    let u = src.tensor(&format!("{m}.lora_up.weight")).unwrap();
    let pending = [
        PendingTensor::from_tensor(format!("{m}.lora_A.weight"), &d),
        PendingTensor::from_tensor(format!("{m}.lora_B.weight"), &u),
    ];
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ab.safetensors");
    write_safetensors(&p, &pending, None, &|_| {}).unwrap();
    let a = read(&p);
    assert_eq!(a.meta.source_format, Some(Format::Comfy));
    let whole = LoraLayer::new(m, d.clone(), u.clone(), 2.0, LayerKind::Linear).unwrap();
    let q = &a.layers["transformer.transformer_blocks.0.attn.to_q"];
    assert_eq!((q.out_features(), q.rank(), q.scale()), (3072, 2, 1.0));
    // the three parts stacked are the fused module's ΔW
    let parts: Vec<&LoraLayer> = ["to_q", "to_k", "to_v"]
        .iter()
        .map(|p| &a.layers[&format!("transformer.transformer_blocks.0.attn.{p}")])
        .collect();
    let stacked = |l: &LoraLayer, i: usize| {
        let mut up = vec![0f32; 9216 * 2];
        up[i * 3072 * 2..(i + 1) * 3072 * 2].copy_from_slice(&l.up.to_f32());
        LoraLayer::new(
            "x",
            l.down.clone(),
            Tensor::from_f32(vec![9216, 2], &up, DType::F32).unwrap(),
            l.alpha,
            LayerKind::Linear,
        )
        .unwrap()
    };
    let s: Vec<LoraLayer> = parts
        .iter()
        .enumerate()
        .map(|(i, l)| stacked(l, i))
        .collect();
    let terms: Vec<(&LoraLayer, f64)> = s.iter().map(|l| (l, 1.0)).collect();
    assert!(layer_rel_diff(&whole, &terms) < TOL);
}

#[test]
fn xlabs_flux_matches_diffusers() {
    let a = read(&fixture("xlabs.safetensors"));
    assert_eq!(a.meta.source_format, Some(Format::Xlabs));
    assert!(check_against(&a, "xlabs.diffusers.safetensors", &|_| 1.0).is_empty());
    let dir = tempfile::tempdir().unwrap();
    round_trip(&a, Format::Kohya, dir.path());
}

#[test]
fn kohya_sd3_matches_diffusers_checkpoint_converter() {
    let a = read(&fixture("sd3_kohya.safetensors"));
    assert_eq!(a.meta.source_format, Some(Format::Kohya));
    assert!(a.meta.family.as_deref().unwrap().starts_with("sd3"));
    let extra = check_against(&a, "sd3_kohya.diffusers.safetensors", &|_| 1.0);
    assert_eq!(
        extra,
        [
            "text_encoder.text_model.encoder.layers.0.self_attn.v_proj",
            "text_encoder_2.text_model.encoder.layers.0.mlp.fc2",
            "text_encoder_3.encoder.block.0.layer.1.DenseReluDense.wo",
        ]
    );
    let t5 = source_layer(
        "sd3_kohya.safetensors",
        "lora_te3_encoder_block_0_layer_1_DenseReluDense_wo",
    );
    assert_same("T5", &a.layers[&extra[2]], &t5, 1.0);
    assert_eq!(a.layers["transformer.pos_embed.proj"].kind, LayerKind::Conv);
    let dir = tempfile::tempdir().unwrap();
    round_trip(&a, Format::Kohya, dir.path());
    round_trip(&a, Format::Diffusers, dir.path());
    round_trip(&a, Format::Comfy, dir.path());
}

// ---------------------------------------------------------------------------------------
// bad inputs: errors name the module
// ---------------------------------------------------------------------------------------

fn write_file(dir: &Path, tensors: &[(&str, Vec<usize>)]) -> PathBuf {
    let owned: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, s)| {
            let n_el: usize = s.iter().product();
            let v: Vec<f32> = (0..n_el).map(|i| ((i % 7) as f32 - 3.0) * 0.01).collect();
            (
                n.to_string(),
                Tensor::from_f32(s.clone(), &v, DType::F32).unwrap(),
            )
        })
        .collect();
    let pending: Vec<PendingTensor> = owned
        .iter()
        .map(|(n, t)| PendingTensor::from_tensor(n.clone(), t))
        .collect();
    let p = dir.join("bad.safetensors");
    write_safetensors(&p, &pending, None, &|_| {}).unwrap();
    p
}

fn read_err(p: &Path) -> String {
    match read_adapter(p, None, &ReadContext::default()) {
        Ok(_) => panic!("{} was accepted", p.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_fused_module_with_missing_parts_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    // img_attn.qkv with the rows of q and k only
    let p = write_file(
        dir.path(),
        &[
            (
                "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight",
                vec![2, 3072],
            ),
            (
                "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight",
                vec![6144, 2],
            ),
            (
                "lora_unet_double_blocks_0_img_attn_proj.lora_down.weight",
                vec![2, 3072],
            ),
            (
                "lora_unet_double_blocks_0_img_attn_proj.lora_up.weight",
                vec![3072, 2],
            ),
        ],
    );
    let e = read_err(&p);
    assert!(e.contains("lora_unet_double_blocks_0_img_attn_qkv"), "{e}");
    assert!(e.contains("9216"), "{e}");
}

#[test]
fn mixed_algorithms_in_one_module_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_file(
        dir.path(),
        &[
            (
                "lycoris_transformer_blocks_0_attn_to_q.hada_w1_a",
                vec![3072, 2],
            ),
            (
                "lycoris_transformer_blocks_0_attn_to_q.hada_w1_b",
                vec![2, 3072],
            ),
            (
                "lycoris_transformer_blocks_0_attn_to_q.hada_w2_a",
                vec![3072, 2],
            ),
            (
                "lycoris_transformer_blocks_0_attn_to_q.hada_w2_b",
                vec![2, 3072],
            ),
            ("lycoris_transformer_blocks_0_attn_to_q.lokr_w1", vec![4, 4]),
        ],
    );
    let e = read_err(&p);
    assert!(e.contains("lycoris_transformer_blocks_0_attn_to_q"), "{e}");
    assert!(e.contains("mixes"), "{e}");
}

#[test]
fn factors_that_do_not_multiply_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_file(
        dir.path(),
        &[
            (
                "diffusion_model.single_blocks.0.linear2.lora_A.weight",
                vec![2, 15360],
            ),
            (
                "diffusion_model.single_blocks.0.linear2.lora_B.weight",
                vec![3072, 3],
            ),
        ],
    );
    let e = read_err(&p);
    assert!(e.contains("diffusion_model.single_blocks.0.linear2"), "{e}");
    assert!(e.contains("rank"), "{e}");
    // a LoKr whose factors give another shape than the module
    let p = write_file(
        dir.path(),
        &[
            (
                "lycoris_single_transformer_blocks_0_proj_out.lokr_w1",
                vec![4, 4],
            ),
            (
                "lycoris_single_transformer_blocks_0_proj_out.lokr_w2_a",
                vec![768, 2],
            ),
            (
                "lycoris_single_transformer_blocks_0_proj_out.lokr_w2_b",
                vec![2, 3072],
            ),
        ],
    );
    let e = read_err(&p);
    assert!(
        e.contains("lycoris_single_transformer_blocks_0_proj_out"),
        "{e}"
    );
}

#[test]
fn standalone_lycoris_lokr_reads_onto_canonical_modules() {
    // SimpleTuner-style `lycoris_<diffusers path>` LoKr on proj_out (3072 × 15360): w1 4×4
    // full ⊗ w2 (768×2)·(2×3840); ΔW checked against the Kronecker product formed here
    let dir = tempfile::tempdir().unwrap();
    let p = write_file(
        dir.path(),
        &[
            (
                "lycoris_single_transformer_blocks_0_proj_out.lokr_w1",
                vec![4, 4],
            ),
            (
                "lycoris_single_transformer_blocks_0_proj_out.lokr_w2_a",
                vec![768, 2],
            ),
            (
                "lycoris_single_transformer_blocks_0_proj_out.lokr_w2_b",
                vec![2, 3840],
            ),
        ],
    );
    let a = read_adapter(&p, None, &ReadContext::default()).unwrap();
    assert_eq!(a.meta.source_format, Some(Format::Lycoris));
    let m = "transformer.single_transformer_blocks.0.proj_out";
    let l = &a.layers[m];
    assert_eq!((l.out_features(), l.in_features()), (3072, 15360));
    let f = SafetensorsFile::open(&p).unwrap();
    let t = |k: &str| {
        f.tensor(&format!("lycoris_single_transformer_blocks_0_proj_out.{k}"))
            .unwrap()
    };
    // kron(W1, A2·B2) = kron(W1, A2)·kron(I4, B2): a LoRA of rank 4·2, scale 1 (no alpha)
    let (w1, a2, b2) = (
        t("lokr_w1").to_f32(),
        t("lokr_w2_a").to_f32(),
        t("lokr_w2_b").to_f32(),
    );
    let mut up = vec![0f32; 3072 * 8];
    let mut down = vec![0f32; 8 * 15360];
    for i in 0..4 {
        for c in 0..4 {
            for p in 0..768 {
                for k in 0..2 {
                    up[(i * 768 + p) * 8 + c * 2 + k] = w1[i * 4 + c] * a2[p * 2 + k];
                }
            }
        }
    }
    for c in 0..4 {
        for k in 0..2 {
            for q in 0..3840 {
                down[(c * 2 + k) * 15360 + c * 3840 + q] = b2[k * 3840 + q];
            }
        }
    }
    let want = LoraLayer::new(
        m,
        Tensor::from_f32(vec![8, 15360], &down, DType::F32).unwrap(),
        Tensor::from_f32(vec![3072, 8], &up, DType::F32).unwrap(),
        8.0,
        LayerKind::Linear,
    )
    .unwrap();
    assert_same(m, l, &want, 1.0);
    assert!(a.meta.lycoris.contains_key(m));
    // the same module on its diffusers path (ai-toolkit's LyCORIS files)
    let dir2 = tempfile::tempdir().unwrap();
    let p2 = write_file(
        dir2.path(),
        &[
            (
                "transformer.single_transformer_blocks.0.proj_out.lokr_w1",
                vec![4, 4],
            ),
            (
                "transformer.single_transformer_blocks.0.proj_out.lokr_w2_a",
                vec![768, 2],
            ),
            (
                "transformer.single_transformer_blocks.0.proj_out.lokr_w2_b",
                vec![2, 3840],
            ),
        ],
    );
    let b = read_adapter(&p2, None, &ReadContext::default()).unwrap();
    assert_same("diffusers path", &b.layers[m], &want, 1.0);
    // and reading with --skip-unknown still refuses nothing here
    let opts = ReadContext {
        opts: ReadOptions {
            skip_unknown: true,
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(read_adapter(&p2, None, &opts)
        .unwrap()
        .meta
        .warnings
        .is_empty());
}

/// `y = x·ΔWᵀ` for probe rows `x` (`n × in`), from the layer's factors.
fn apply(l: &LoraLayer, x: &[f64], n: usize) -> Vec<f64> {
    let (r, out) = (l.rank(), l.out_features());
    let (a, b) = (l.down.to_f64(), l.up.to_f64());
    let inn = a.len() / r;
    let mut y = vec![0.0; n * out];
    for p in 0..n {
        let xa: Vec<f64> = (0..r)
            .map(|k| (0..inn).map(|c| x[p * inn + c] * a[k * inn + c]).sum())
            .collect();
        for o in 0..out {
            y[p * out + o] = l.scale() * (0..r).map(|k| b[o * r + k] * xa[k]).sum::<f64>();
        }
    }
    y
}

fn rel(got: &[f64], want: &[f64]) -> f64 {
    let num: f64 = got.iter().zip(want).map(|(a, b)| (a - b) * (a - b)).sum();
    let den: f64 = want.iter().map(|b| b * b).sum();
    (num / den).sqrt()
}

#[test]
fn lycoris_made_by_lycoris_on_flux_matches_its_forward() {
    // fixtures/flux/lycoris.safetensors: lycoris-lora 4.1.3 on a reduced-depth Flux
    // transformer; lycoris_probes.safetensors holds forward(x) − org_forward(x) per module
    let a = read(&fixture("lycoris.safetensors"));
    assert_eq!(a.meta.source_format, Some(Format::Lycoris));
    let probes = SafetensorsFile::open(&fixture("lycoris_probes.safetensors")).unwrap();
    let modules = [
        (
            "lycoris_transformer_blocks_0_attn_to_q",
            "transformer.transformer_blocks.0.attn.to_q",
        ),
        (
            "lycoris_transformer_blocks_0_attn_to_out_0",
            "transformer.transformer_blocks.0.attn.to_out.0",
        ),
        (
            "lycoris_single_transformer_blocks_0_attn_to_k",
            "transformer.single_transformer_blocks.0.attn.to_k",
        ),
    ];
    for (name, canonical) in modules {
        let x = probes.tensor(&format!("{name}.x")).unwrap().to_f64();
        let y = probes.tensor(&format!("{name}.y")).unwrap().to_f64();
        let got = apply(&a.layers[canonical], &x, 8);
        let e = rel(&got, &y);
        assert!(e < 1e-5, "{canonical}: relative error {e:e}");
    }
    // context_embedder: LoKr with both factors full (16×16 ⊗ 192×256), exact rank 16·192 =
    // 3072 on a 3072×4096 module: capped unasked at 3072·4096/(2·7168) = 877 and reported
    let m = "transformer.context_embedder";
    let o = &a.meta.lycoris[m];
    assert_eq!((o.exact_rank, o.rank), (3072, 877));
    let t = o.truncation.expect("truncation reported");
    assert!(t.dropped_energy > 0.0 && t.dropped_energy < 1.0);
    assert!(a
        .meta
        .warnings
        .iter()
        .any(|w| w.contains(m) && w.contains("877")));
    // asked for its exact rank, the conversion equals LyCORIS' forward
    use loratool::adapter::lycoris;
    let f = SafetensorsFile::open(&fixture("lycoris.safetensors")).unwrap();
    let mut tensors = lycoris::ModuleTensors::new();
    for local in ["lokr_w1", "lokr_w2", "alpha"] {
        let t = f
            .tensor(&format!("lycoris_context_embedder.{local}"))
            .unwrap();
        tensors.insert(local, t);
    }
    let mut opts = lycoris::Options::lycoris();
    opts.max_rank = Some(3072);
    let c = lycoris::convert("context_embedder", &tensors, &opts).unwrap();
    let x = probes
        .tensor("lycoris_context_embedder.x")
        .unwrap()
        .to_f64();
    let y = probes
        .tensor("lycoris_context_embedder.y")
        .unwrap()
        .to_f64();
    let e = rel(&apply(&c.layer, &x, 8), &y);
    assert!(e < 1e-5, "context_embedder exact: relative error {e:e}");
    // the capped layer keeps most of it (the probes see the dropped part as error)
    let capped = rel(&apply(&a.layers[m], &x, 8), &y);
    assert!(
        capped < t.dropped_energy.sqrt() * 3.0 + 1e-6,
        "{capped} vs {t:?}"
    );
}

#[test]
fn merge_of_two_layouts_through_the_library_is_the_weighted_sum() {
    // a kohya Flux file and an XLabs one, merged with weights into a ComfyUI file and saved
    // in the store: every module is 0.6·ΔW_kohya + 0.4·ΔW_xlabs
    use loratool::app::merge::MergeRequest;
    use loratool::app::{InputRef, Session};
    use loratool::ops::merge::{MergeMethod, MergeOptions};
    let home = tempfile::tempdir().unwrap();
    let session = Session::new().with_store_root(home.path());
    let (a, b) = (fixture("kohya.safetensors"), fixture("xlabs.safetensors"));
    let out = home.path().join("merged.safetensors");
    session
        .merge(&MergeRequest {
            inputs: vec![
                InputRef::parse(a.to_str().unwrap()).unwrap(),
                InputRef::parse(b.to_str().unwrap()).unwrap(),
            ],
            skip_unknown: false,
            base: None,
            options: MergeOptions {
                method: MergeMethod::Sum,
                weights: vec![0.6, 0.4],
                ..Default::default()
            },
            output: out.clone(),
            to: Some(Format::Comfy),
            save: Some(loratool::registry::Reference::parse("acme/flux-merged:v1").unwrap()),
        })
        .unwrap();
    let merged = read(&out);
    assert_eq!(merged.meta.source_format, Some(Format::Comfy));
    let (la, lb) = (read(&a), read(&b));
    let mut n = 0;
    for (path, layer) in &merged.layers {
        let mut terms = Vec::new();
        if let Some(l) = la.layers.get(path) {
            terms.push((l, 0.6));
        }
        if let Some(l) = lb.layers.get(path) {
            terms.push((l, 0.4));
        }
        assert!(!terms.is_empty(), "{path}");
        let e = layer_rel_diff(layer, &terms);
        assert!(e < 1e-6, "{path}: {e:e}");
        n += 1;
    }
    assert_eq!(n, la.layers.len());
}

#[test]
fn bake_of_a_comfy_flux_lora_into_a_diffusers_pipeline_adds_its_delta() {
    // a ComfyUI-layout LoRA on the BFL modules `img_in` (diffusers x_embedder, 3072×64) and
    // `time_in.in_layer` (timestep_embedder.linear_1, 3072×256), baked into a diffusers pipeline
    // directory holding just those transformer weights: W' = W + scale·B·A at the diffusers
    // names (the half swap is covered by the round trips above)
    use loratool::app::bake::BakeRequest;
    use loratool::app::{InputRef, Session};
    let dir = tempfile::tempdir().unwrap();
    let pipe = dir.path().join("pipe");
    std::fs::create_dir_all(pipe.join("transformer")).unwrap();
    std::fs::write(pipe.join("model_index.json"), "{}").unwrap();
    let rnd = |shape: Vec<usize>, seed: usize| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| (((i * 7919 + seed * 104_729) % 2001) as f32 - 1000.0) * 1e-4)
            .collect();
        Tensor::from_f32(shape, &v, DType::F32).unwrap()
    };
    let (w1, w2) = (rnd(vec![3072, 64], 1), rnd(vec![3072, 256], 2));
    let base = [
        PendingTensor::from_tensor("x_embedder.weight", &w1),
        PendingTensor::from_tensor("time_text_embed.timestep_embedder.linear_1.weight", &w2),
    ];
    write_safetensors(
        &pipe.join("transformer/diffusion_pytorch_model.safetensors"),
        &base,
        None,
        &|_| {},
    )
    .unwrap();
    let (a1, b1, a2, b2) = (
        rnd(vec![2, 64], 3),
        rnd(vec![3072, 2], 4),
        rnd(vec![1, 256], 5),
        rnd(vec![3072, 1], 6),
    );
    let (al1, al2) = (
        Tensor::scalar(1.0, DType::F32).unwrap(),
        Tensor::scalar(3.0, DType::F32).unwrap(),
    );
    let lora = [
        PendingTensor::from_tensor("diffusion_model.img_in.lora_down.weight", &a1),
        PendingTensor::from_tensor("diffusion_model.img_in.lora_up.weight", &b1),
        PendingTensor::from_tensor("diffusion_model.img_in.alpha", &al1),
        PendingTensor::from_tensor("diffusion_model.time_in.in_layer.lora_down.weight", &a2),
        PendingTensor::from_tensor("diffusion_model.time_in.in_layer.lora_up.weight", &b2),
        PendingTensor::from_tensor("diffusion_model.time_in.in_layer.alpha", &al2),
    ];
    let lp = dir.path().join("lora.safetensors");
    write_safetensors(&lp, &lora, None, &|_| {}).unwrap();
    let out = dir.path().join("baked");
    Session::new()
        .with_store_root(dir.path().join("store"))
        .bake(&BakeRequest {
            base: pipe.clone(),
            adapters: vec![InputRef::parse(lp.to_str().unwrap()).unwrap()],
            weights: vec![],
            output: out.clone(),
            export_lora_compat: false,
        })
        .unwrap();
    let baked = SafetensorsFile::open(&out.join("transformer/diffusion_pytorch_model.safetensors"))
        .unwrap();
    for (name, w, a, b, scale) in [
        ("x_embedder.weight", &w1, &a1, &b1, 0.5),
        (
            "time_text_embed.timestep_embedder.linear_1.weight",
            &w2,
            &a2,
            &b2,
            3.0,
        ),
    ] {
        let got = baked.tensor(name).unwrap().to_f64();
        let (w, a, b) = (w.to_f64(), a.to_f64(), b.to_f64());
        let r = b.len() / 3072;
        let n = a.len() / r;
        let mut worst = 0.0f64;
        for o in 0..3072 {
            for c in 0..n {
                let d: f64 = (0..r).map(|k| b[o * r + k] * a[k * n + c]).sum();
                worst = worst.max((got[o * n + c] - (w[o * n + c] + scale * d)).abs());
            }
        }
        assert!(worst < 1e-6, "{name}: {worst:e}");
    }
}
