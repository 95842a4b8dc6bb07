//! kohya files: names through the tables, alphas in every stored form, sshs hashes as
//! sd-scripts computes them, and round trips through PEFT and diffusers that keep every ΔW.

mod common;

use common::*;
use loratool::adapter::codec::read_adapter;
use loratool::adapter::kohya_hash::kohya_hashes;
use loratool::adapter::{diffusers, kohya, peft, Adapter, Format, LayerKind, ReadOptions};
use loratool::io::SafetensorsFile;
use loratool::tensor::{DType, Tensor};

const STRICT: ReadOptions = ReadOptions {
    skip_unknown: false,
    layout_only: false,
};
const C3LIER: &str = "kohya/sd15_lora_r4_a2_c3lier.safetensors";
const GEN_SD15: &str = "gen_sd15_kohya.safetensors";
const GEN_SDXL: &str = "gen_sdxl_kohya.safetensors";

fn read(rel: &str) -> Adapter {
    kohya::read(&fixture(rel), STRICT).unwrap()
}

#[test]
fn sd_scripts_c3lier_file_reads_with_its_layout() {
    let a = read(C3LIER);
    assert_eq!(a.meta.family.as_deref(), Some("sd15"));
    assert_eq!(a.layers.len(), 350);
    let te = a
        .layers
        .keys()
        .filter(|p| p.starts_with("text_encoder."))
        .count();
    assert_eq!(te, 72);
    let conv3: Vec<_> = a
        .layers
        .values()
        .filter(|l| l.kind == LayerKind::Conv && l.kernel() == (3, 3))
        .collect();
    assert_eq!(conv3.len(), 50);
    assert!(conv3.iter().all(|l| l.rank() == 2 && l.alpha == 1.0));
    assert!(a
        .layers
        .values()
        .filter(|l| l.kernel() == (1, 1))
        .all(|l| l.rank() == 4 && l.alpha == 2.0));
    assert!(a
        .layers
        .contains_key("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"));
    assert!(a
        .layers
        .contains_key("text_encoder.text_model.encoder.layers.11.mlp.fc2"));
}

#[test]
fn rewriting_the_sd_scripts_file_reproduces_its_sshs_hashes() {
    // Same tensors, same dtypes, same ss_* metadata: both hashes must equal what sd-scripts
    // stored, and the model hash must equal sha256 of the written data region.
    let src = SafetensorsFile::open(&fixture(C3LIER)).unwrap();
    let a = read(C3LIER);
    let dir = tempdir();
    let out = dir.path().join("out.safetensors");
    kohya::write(&a, &out, &|_| {}).unwrap();
    let f = SafetensorsFile::open(&out).unwrap();
    for k in ["sshs_model_hash", "sshs_legacy_hash"] {
        assert_eq!(f.metadata().get(k), src.metadata().get(k), "{k}");
    }
    use sha2::{Digest, Sha256};
    let data_hash = hex::encode(Sha256::digest(f.data_region()));
    assert_eq!(Some(&data_hash), f.metadata().get("sshs_model_hash"));
    // and every tensor kept its name, dtype and bytes
    assert_eq!(f.tensors().len(), src.tensors().len());
    for (name, _) in src.tensors() {
        let (x, y) = (src.tensor(name).unwrap(), f.tensor(name).unwrap());
        assert_eq!((x.dtype(), x.shape()), (y.dtype(), y.shape()), "{name}");
        assert_eq!(x.bytes(), y.bytes(), "{name}");
    }
}

#[test]
fn hashes_match_the_python_oracle_on_generated_files() {
    // the generator computed sshs_* with safetensors' own serializer (fixtures/gen)
    for rel in [GEN_SD15, GEN_SDXL, C3LIER] {
        let f = SafetensorsFile::open(&fixture(rel)).unwrap();
        let tensors: Vec<(String, Tensor)> = f
            .tensors()
            .keys()
            .map(|k| (k.clone(), f.tensor(k).unwrap()))
            .collect();
        let refs: Vec<(String, &Tensor)> = tensors.iter().map(|(n, t)| (n.clone(), t)).collect();
        let h = kohya_hashes(&refs, f.metadata()).unwrap();
        assert_eq!(Some(&h.model), f.metadata().get("sshs_model_hash"), "{rel}");
        assert_eq!(
            Some(&h.legacy),
            f.metadata().get("sshs_legacy_hash"),
            "{rel}"
        );
    }
}

#[test]
fn alphas_in_every_stored_form_resolve_like_kohya() {
    let a = read(GEN_SD15);
    let blk = "unet.down_blocks.0.attentions.0.transformer_blocks.0.";
    let cases = [
        (format!("{blk}attn1.to_q"), 2.0, 4),     // F16 []
        (format!("{blk}attn1.to_out.0"), 1.5, 4), // F32 []
        (format!("{blk}attn2.to_k"), 4.0, 4),     // F64 []
        (format!("{blk}ff.net.0.proj"), 2.0, 4),  // F32 [1]
        (
            "unet.down_blocks.1.resnets.0.conv_shortcut".to_string(),
            4.0,
            4,
        ), // I64
        (
            "unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_v".to_string(),
            8.0,
            8,
        ), // zero → r
        (
            "unet.up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_out.0".to_string(),
            4.0,
            4,
        ), // missing → r
        ("unet.down_blocks.0.resnets.0.conv1".to_string(), 1.0, 2), // 3x3 LoCon
    ];
    for (p, alpha, rank) in cases {
        let l = a.layers.get(&p).unwrap_or_else(|| panic!("{p} missing"));
        assert_eq!((l.alpha, l.rank()), (alpha, rank), "{p}");
    }
    assert_eq!(
        a.layers["unet.down_blocks.0.resnets.0.conv1"].kernel(),
        (3, 3)
    );
    assert_eq!(
        a.layers["unet.down_blocks.0.attentions.0.proj_in"].kind,
        LayerKind::Conv
    );
}

fn round_trip_via(a: &Adapter, via: Format) -> Adapter {
    let dir = tempdir();
    let mid = dir.path().join("mid");
    match via {
        Format::Peft => peft::write(a, &mid, &|_| {}).map(|_| ()),
        Format::Diffusers => diffusers::write(a, &mid, &|_| {}).map(|_| ()),
        _ => unreachable!("kohya round trips go through peft or diffusers"),
    }
    .unwrap();
    let b = read_adapter(&mid, None, &ctx(STRICT)).unwrap();
    assert_eq!(b.meta.source_format, Some(via));
    let back = dir.path().join("back.safetensors");
    kohya::write(&b, &back, &|_| {}).unwrap();
    kohya::read(&back, STRICT).unwrap()
}

#[test]
fn kohya_to_peft_and_diffusers_and_back_keeps_every_delta_bit_for_bit() {
    for rel in [C3LIER, GEN_SD15, GEN_SDXL] {
        let a = read(rel);
        for via in [Format::Peft, Format::Diffusers] {
            let b = round_trip_via(&a, via);
            // identical factor bytes and alphas: ΔW = (alpha/r)·up·down is identical bit for bit
            assert_same_layers(&a, &b);
        }
    }
}

#[test]
fn sdxl_names_come_back_as_sgm_names() {
    let src = SafetensorsFile::open(&fixture(GEN_SDXL)).unwrap();
    let a = read(GEN_SDXL);
    assert_eq!(a.meta.family.as_deref(), Some("sdxl"));
    assert!(a
        .layers
        .contains_key("text_encoder_2.text_model.encoder.layers.31.mlp.fc2"));
    assert!(a
        .layers
        .contains_key("text_encoder.text_model.encoder.layers.0.self_attn.q_proj"));
    let dir = tempdir();
    let out = dir.path().join("x.safetensors");
    kohya::write(&a, &out, &|_| {}).unwrap();
    let f = SafetensorsFile::open(&out).unwrap();
    // same module names (the source leaves one alpha out; loratool writes every alpha)
    let modules = |f: &SafetensorsFile| {
        let v: std::collections::BTreeSet<String> = f
            .tensors()
            .keys()
            .map(|k| k.split_once('.').map_or(k.as_str(), |(m, _)| m).to_string())
            .collect();
        v
    };
    assert_eq!(modules(&f), modules(&src));
    assert_eq!(
        f.metadata()
            .get("ss_base_model_version")
            .map(|s| s.as_str()),
        Some("sdxl_base_v1-0")
    );
}

#[test]
fn diffusers_layout_has_no_alpha_keys_and_carries_mixed_alphas_in_metadata() {
    let a = read(GEN_SDXL);
    let dir = tempdir();
    diffusers::write(&a, dir.path(), &|_| {}).unwrap();
    let f = SafetensorsFile::open(&dir.path().join(diffusers::WEIGHTS_FILE)).unwrap();
    assert!(f.tensors().keys().all(|k| !k.ends_with(".alpha")));
    assert!(f.tensors().keys().all(|k| !k.starts_with("base_model")));
    assert!(f
        .tensors()
        .keys()
        .all(|k| ["unet.", "text_encoder.", "text_encoder_2."]
            .iter()
            .any(|p| k.starts_with(p))));
    let md: serde_json::Value =
        serde_json::from_str(&f.metadata()[diffusers::METADATA_KEY]).unwrap();
    for comp in ["unet", "text_encoder", "text_encoder_2"] {
        assert!(md.get(format!("{comp}.r")).is_some(), "{comp}.r");
        assert!(
            md.get(format!("{comp}.lora_alpha")).is_some(),
            "{comp}.lora_alpha"
        );
    }
    let b = diffusers::read(dir.path(), STRICT).unwrap();
    for (p, l) in &a.layers {
        assert_eq!(b.layers[p].scale(), l.scale(), "{p}");
    }
}

fn one_module_file(
    extra: &[(&str, Tensor)],
    md: &[(&str, &str)],
) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempdir();
    let p = dir.path().join("x.safetensors");
    let name = "lora_te_text_model_encoder_layers_0_self_attn_q_proj";
    let mut t = vec![
        (
            format!("{name}.lora_down.weight"),
            pseudo(vec![4, 768], 1, DType::F16),
        ),
        (
            format!("{name}.lora_up.weight"),
            pseudo(vec![768, 4], 2, DType::F16),
        ),
    ];
    for (n, x) in extra {
        t.push((n.to_string(), x.clone()));
    }
    write_st(&p, &t, md);
    (dir, p)
}

#[test]
fn lycoris_modules_without_a_lora_form_are_refused_or_skipped_with_the_reason() {
    // LyCORIS modules are converted (tests/lycoris.rs); a full `diff` module has no LoRA form
    let (_d, p) = one_module_file(
        &[(
            "lora_unet_mid_block_resnets_0_conv1.diff",
            pseudo(vec![4, 4], 3, DType::F16),
        )],
        &[],
    );
    let err = kohya::read(&p, STRICT).unwrap_err();
    assert!(matches!(err, loratool::Error::UnknownKeys { .. }), "{err}");
    let e = err.to_string();
    for k in ["conv1.diff", "LyCORIS", "dense"] {
        assert!(e.contains(k), "missing {k}: {e}");
    }
    // the command line names the flag that turns the refusal into a warning
    let out = p.with_file_name("out");
    let o = loratool(&["convert", s(&p), "--to", "peft", "-o", s(&out)]);
    assert_eq!(o.status.code(), Some(1));
    for k in ["conv1.diff", "--skip-unknown"] {
        assert!(stderr(&o).contains(k), "missing {k}: {}", stderr(&o));
    }
    let a = kohya::read(
        &p,
        ReadOptions {
            skip_unknown: true,
            layout_only: false,
        },
    )
    .unwrap();
    assert_eq!(a.layers.len(), 1);
    assert!(a.meta.warnings.iter().any(|w| w.contains("conv1.diff")));
}

#[test]
fn malformed_lycoris_modules_are_errors_naming_the_module() {
    // LoHa and LoCon-Tucker keys in one module
    let (_d, p) = one_module_file(
        &[
            (
                "lora_unet_mid_block_resnets_0_conv1.hada_w1_a",
                pseudo(vec![4, 4], 3, DType::F16),
            ),
            (
                "lora_unet_mid_block_resnets_0_conv1.lora_mid.weight",
                pseudo(vec![4, 4], 3, DType::F16),
            ),
        ],
        &[],
    );
    let e = kohya::read(
        &p,
        ReadOptions {
            skip_unknown: true,
            layout_only: false,
        },
    )
    .unwrap_err()
    .to_string();
    for k in [
        "lora_unet_mid_block_resnets_0_conv1",
        "mixes",
        "LoHa",
        "LoCon",
    ] {
        assert!(e.contains(k), "missing {k}: {e}");
    }
    // an input-axis dora_scale (LyCORIS < 3.2.0) has no canonical DoRA form
    let (_d, p) = one_module_file(
        &[(
            "lora_te_text_model_encoder_layers_0_self_attn_q_proj.dora_scale",
            pseudo(vec![1, 768], 3, DType::F16),
        )],
        &[],
    );
    let e = kohya::read(&p, STRICT).unwrap_err().to_string();
    for k in [
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj",
        "input column",
    ] {
        assert!(e.contains(k), "missing {k}: {e}");
    }
}

#[test]
fn unmapped_names_bad_alphas_wrong_shapes_and_sd2_are_refused() {
    let (_d, p) = one_module_file(
        &[
            (
                "lora_unet_not_a_module.lora_down.weight",
                pseudo(vec![4, 8], 3, DType::F16),
            ),
            (
                "lora_unet_not_a_module.lora_up.weight",
                pseudo(vec![8, 4], 3, DType::F16),
            ),
        ],
        &[],
    );
    let e = kohya::read(&p, STRICT).unwrap_err().to_string();
    assert!(
        e.contains("lora_unet_not_a_module") && e.contains("unmapped"),
        "{e}"
    );

    let (_d, p) = one_module_file(
        &[(
            "lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha",
            pseudo(vec![2], 3, DType::F32),
        )],
        &[],
    );
    let e = kohya::read(&p, STRICT).unwrap_err().to_string();
    assert!(
        e.contains("q_proj.alpha") && e.contains("single number"),
        "{e}"
    );

    let dir = tempdir();
    let p = dir.path().join("wrong.safetensors");
    let name = "lora_te_text_model_encoder_layers_0_self_attn_q_proj";
    write_st(
        &p,
        &[
            (
                format!("{name}.lora_down.weight"),
                pseudo(vec![4, 1024], 1, DType::F16),
            ),
            (
                format!("{name}.lora_up.weight"),
                pseudo(vec![1024, 4], 2, DType::F16),
            ),
        ],
        &[("ss_base_model_version", "sd_v1")],
    );
    let e = kohya::read(&p, STRICT).unwrap_err().to_string();
    assert!(e.contains(name) && e.contains("different model"), "{e}");

    let (_d, p) = one_module_file(&[], &[("ss_v2", "True")]);
    let e = kohya::read(&p, STRICT).unwrap_err().to_string();
    assert!(e.contains("2.x"), "{e}");
}

#[test]
fn transformers_adapters_cannot_be_written_as_kohya() {
    let a = peft::read(&fixture("peft/plain"), STRICT).unwrap();
    let dir = tempdir();
    let out = dir.path().join("k.safetensors");
    let e = kohya::write(&a, &out, &|_| {}).unwrap_err().to_string();
    assert!(
        e.contains("model.layers.") && e.contains("write PEFT"),
        "{e}"
    );
    assert!(!out.exists());
    let e = diffusers::write(&a, dir.path(), &|_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("pipeline components"), "{e}");
}

#[test]
fn written_metadata_has_the_sd_scripts_minimum_keys() {
    // a PEFT-sourced SD adapter gets fresh ss_* keys computed from its layers
    let a = read(GEN_SD15);
    let dir = tempdir();
    diffusers::write(&a, dir.path(), &|_| {}).unwrap();
    let b = diffusers::read(dir.path(), STRICT).unwrap();
    let out = dir.path().join("k.safetensors");
    kohya::write(&b, &out, &|_| {}).unwrap();
    let f = SafetensorsFile::open(&out).unwrap();
    let md = f.metadata();
    assert_eq!(md["ss_network_module"], "networks.lora");
    assert_eq!(md["ss_base_model_version"], "sd_v1");
    assert_eq!(md["ss_v2"], "False");
    assert_eq!(md["ss_network_dim"], "Dynamic"); // ranks 4 and 8 among linears
    assert_eq!(
        md["ss_network_args"],
        r#"{"conv_dim": "2", "conv_alpha": "1"}"#
    );
    assert!(md.contains_key("sshs_model_hash") && md.contains_key("sshs_legacy_hash"));
    assert!(!md.contains_key(diffusers::METADATA_KEY));
}
