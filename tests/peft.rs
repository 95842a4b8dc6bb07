//! PEFT adapters: scales resolved as PEFT resolves them, round trips, and every refusal.

mod common;

use common::*;
use loratool::adapter::codec::read_adapter;
use loratool::adapter::{peft, Format, LayerKind, ReadOptions};
use loratool::tensor::DType;
use std::path::Path;

const STRICT: ReadOptions = ReadOptions {
    skip_unknown: false,
    layout_only: false,
};

fn scale(a: &loratool::adapter::Adapter, p: &str) -> f64 {
    a.layers[p].scale()
}

#[test]
fn rslora_and_patterns_fold_into_each_layers_scale() {
    // PEFT's scales for this fixture (its README): q 16/√2, v 3/√8, others 16/√8
    let a = peft::read(&fixture("peft/rslora_patterns"), STRICT).unwrap();
    assert_eq!(a.layers.len(), 14);
    for l in 0..2 {
        let p = |m: &str| format!("model.layers.{l}.{m}");
        assert!((scale(&a, &p("self_attn.q_proj")) - 16.0 / 2f64.sqrt()).abs() < 1e-12);
        assert_eq!(a.layers[&p("self_attn.q_proj")].rank(), 2);
        assert!((scale(&a, &p("self_attn.v_proj")) - 3.0 / 8f64.sqrt()).abs() < 1e-12);
        for m in [
            "self_attn.k_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        ] {
            assert!((scale(&a, &p(m)) - 16.0 / 8f64.sqrt()).abs() < 1e-12, "{m}");
        }
    }
}

#[test]
fn generated_fixture_patterns_resolve() {
    let a = peft::read(&fixture("gen_llama_peft"), STRICT).unwrap();
    for l in 0..2 {
        let p = |m: &str| format!("model.layers.{l}.{m}");
        assert_eq!(scale(&a, &p("self_attn.o_proj")), 4.0); // r 2, alpha 8
        assert_eq!(scale(&a, &p("self_attn.v_proj")), 0.75); // r 4, alpha 3
        assert_eq!(scale(&a, &p("mlp.down_proj")), 2.0);
    }
    assert_eq!(a.layers.values().next().unwrap().dtype(), DType::F16);
}

#[test]
fn peft_round_trip_is_bit_exact_for_every_fixture() {
    for name in [
        "peft/plain",
        "peft/rslora_patterns",
        "peft/dora",
        "peft/embed",
        "gen_llama_peft",
    ] {
        let a = read_adapter(&fixture(name), None, &ctx(STRICT)).unwrap();
        let dir = tempdir();
        peft::write(&a, dir.path(), &|_| {}).unwrap();
        let b = peft::read(dir.path(), STRICT).unwrap();
        assert_same_layers(&a, &b);
        for (p, l) in &a.layers {
            let m =
                |x: &loratool::adapter::LoraLayer| x.magnitude.as_ref().map(|t| t.bytes().to_vec());
            assert_eq!(m(l), m(&b.layers[p]), "{name} {p}: DoRA magnitude");
        }
        assert_eq!(b.meta.base_model.as_deref(), Some("tiny_llama"), "{name}");
    }
}

#[test]
fn dora_and_embedding_layers_are_recognised() {
    let d = peft::read(&fixture("peft/dora"), STRICT).unwrap();
    assert!(d.layers.values().all(|l| l.magnitude.is_some()));
    let e = peft::read(&fixture("peft/embed"), STRICT).unwrap();
    let emb = &e.layers["model.embed_tokens"];
    assert_eq!(emb.kind, LayerKind::Embedding);
    assert_eq!(emb.down.shape(), &[4, 512]);
    assert!(
        e.meta
            .warnings
            .iter()
            .any(|w| w.contains("embed_tokens.base_layer.weight")),
        "{:?}",
        e.meta.warnings
    );
}

fn copy_plain(dir: &Path) {
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(fixture("peft/plain").join(f), dir.join(f)).unwrap();
    }
}

#[test]
fn config_rank_that_disagrees_with_tensors_names_the_module() {
    let dir = tempdir();
    copy_plain(dir.path());
    let cfg_path = dir.path().join("adapter_config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["rank_pattern"] = serde_json::json!({"layers.1.self_attn.k_proj": 8});
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let e = peft::read(dir.path(), STRICT).unwrap_err().to_string();
    assert!(
        e.contains("model.layers.1.self_attn.k_proj")
            && e.contains("rank 8")
            && e.contains("rank 4"),
        "{e}"
    );
}

#[test]
fn adapter_name_segments_are_accepted_and_several_adapters_refused() {
    let dir = tempdir();
    let w = |n: &str, s: u64, shape: Vec<usize>| (n.to_string(), pseudo(shape, s, DType::F32));
    let cfg = r#"{"peft_type":"LORA","r":2,"lora_alpha":4,"target_modules":["q_proj"]}"#;
    std::fs::write(dir.path().join("adapter_config.json"), cfg).unwrap();
    let file = dir.path().join("adapter_model.safetensors");
    write_st(
        &file,
        &[
            w(
                "base_model.model.m.q_proj.lora_A.default.weight",
                1,
                vec![2, 8],
            ),
            w(
                "base_model.model.m.q_proj.lora_B.default.weight",
                2,
                vec![8, 2],
            ),
        ],
        &[],
    );
    let a = peft::read(dir.path(), STRICT).unwrap();
    assert_eq!(a.layers["m.q_proj"].scale(), 2.0);

    write_st(
        &file,
        &[
            w("base_model.model.m.q_proj.lora_A.one.weight", 1, vec![2, 8]),
            w("base_model.model.m.q_proj.lora_B.one.weight", 2, vec![8, 2]),
            w("base_model.model.m.k_proj.lora_A.two.weight", 1, vec![2, 8]),
            w("base_model.model.m.k_proj.lora_B.two.weight", 2, vec![8, 2]),
        ],
        &[],
    );
    let e = peft::read(dir.path(), STRICT).unwrap_err().to_string();
    assert!(e.contains("one, two"), "{e}");
}

#[test]
fn modules_to_save_become_full_tensors_and_unknown_keys_are_never_dropped_silently() {
    let dir = tempdir();
    let w = |n: &str, s: u64, shape: Vec<usize>| (n.to_string(), pseudo(shape, s, DType::F32));
    let cfg = r#"{"peft_type":"LORA","r":2,"lora_alpha":2,"target_modules":["q_proj"],"modules_to_save":["score"]}"#;
    std::fs::write(dir.path().join("adapter_config.json"), cfg).unwrap();
    let file = dir.path().join("adapter_model.safetensors");
    let base = vec![
        w("base_model.model.m.q_proj.lora_A.weight", 1, vec![2, 8]),
        w("base_model.model.m.q_proj.lora_B.weight", 2, vec![8, 2]),
        w("base_model.model.score.weight", 3, vec![3, 8]),
    ];
    write_st(&file, &base, &[]);
    let a = peft::read(dir.path(), STRICT).unwrap();
    assert_eq!(a.full.keys().collect::<Vec<_>>(), vec!["score.weight"]);
    // PEFT round trip keeps it; kohya refuses it by name
    let out = tempdir();
    peft::write(&a, out.path(), &|_| {}).unwrap();
    let b = peft::read(out.path(), STRICT).unwrap();
    assert_eq!(
        b.full["score.weight"].bytes(),
        a.full["score.weight"].bytes()
    );
    let e = loratool::adapter::kohya::write(&a, &out.path().join("k.safetensors"), &|_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("score.weight") && e.contains("modules_to_save"),
        "{e}"
    );

    let mut more = base.clone();
    more.push(w("base_model.model.m.q_proj.hada_w1_a", 4, vec![2, 2]));
    write_st(&file, &more, &[]);
    let err = peft::read(dir.path(), STRICT).unwrap_err();
    assert!(
        matches!(&err, loratool::Error::UnknownKeys { keys, .. } if keys.iter().any(|k| k.contains("hada_w1_a"))),
        "{err}"
    );
    // the command line names the flag that turns the refusal into a warning
    let o2 = loratool(&[
        "convert",
        s(dir.path()),
        "--to",
        "peft",
        "-o",
        s(&dir.path().join("out")),
    ]);
    assert_eq!(o2.status.code(), Some(1), "{}", stderr(&o2));
    let e = stderr(&o2);
    assert!(
        e.contains("hada_w1_a") && e.contains("--skip-unknown"),
        "{e}"
    );

    let a = peft::read(
        dir.path(),
        ReadOptions {
            skip_unknown: true,
            layout_only: false,
        },
    )
    .unwrap();
    assert!(a.meta.warnings.iter().any(|w| w.contains("hada_w1_a")));
}

#[test]
fn pickle_adapters_and_missing_configs_are_refused_with_the_fix() {
    let dir = tempdir();
    std::fs::write(
        dir.path().join("adapter_config.json"),
        r#"{"peft_type":"LORA"}"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("adapter_model.bin"), b"\x80\x02").unwrap();
    let e = peft::read(dir.path(), STRICT).unwrap_err().to_string();
    assert!(
        e.contains("adapter_model.bin") && e.contains("safe_serialization"),
        "{e}"
    );

    let lone = tempdir();
    let f = lone.path().join("adapter_model.safetensors");
    std::fs::copy(fixture("peft/plain/adapter_model.safetensors"), &f).unwrap();
    let e = peft::read(&f, STRICT).unwrap_err().to_string();
    assert!(e.contains("adapter_config.json"), "{e}");
}

#[test]
fn written_config_has_what_peft_needs() {
    let a = peft::read(&fixture("peft/rslora_patterns"), STRICT).unwrap();
    let dir = tempdir();
    peft::write(&a, dir.path(), &|_| {}).unwrap();
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["use_rslora"], false, "rsLoRA is folded into alphas");
    assert_eq!(cfg["base_model_name_or_path"], "tiny_llama");
    assert_eq!(cfg["r"], 8);
    assert_eq!(cfg["target_modules"].as_array().unwrap().len(), 14);
    assert_eq!(cfg["rank_pattern"].as_object().unwrap().len(), 2);
    assert!(cfg["rank_pattern"]
        .as_object()
        .unwrap()
        .keys()
        .all(|k| k.starts_with("^model\\.layers\\.")));
    let st =
        loratool::io::SafetensorsFile::open(&dir.path().join("adapter_model.safetensors")).unwrap();
    assert_eq!(st.metadata().get("format").map(|s| s.as_str()), Some("pt"));
    assert!(st
        .tensors()
        .keys()
        .all(|k| k.starts_with("base_model.model.model.layers.")));
    let _ = Format::Peft;
}
