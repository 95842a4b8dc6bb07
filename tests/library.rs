//! The library used without the command line: everything a command does is reachable through
//! `loratool::app` (no `cli::` item here).

mod common;

use common::*;
use loratool::adapter::codec::{read_adapter, ReadContext};
use loratool::adapter::Format;
use loratool::app::merge::MergeRequest;
use loratool::app::{AppError, InputRef, Session};
use loratool::ops::merge::{MergeMethod, MergeOptions};
use loratool::registry::{Reference, Store};

fn reference(s: &str) -> Reference {
    Reference::parse(s).unwrap()
}

#[test]
fn reference_merge_write_kohya_and_save_with_lineage_through_the_library() {
    let home = tempdir();
    let session = Session::new().with_store_root(home.path());
    let (a, b) = (
        fixture("kohya/sd15_lora_r4_a2_c3lier.safetensors"),
        fixture("kohya/sd15_lora_r8_a8_attn.safetensors"),
    );
    let da = session.add(&a, &reference("acme/a:v1"), None).unwrap();
    let db = session.add(&b, &reference("acme/b:v1"), None).unwrap();

    let out = home.path().join("merged.safetensors");
    let outcome = session
        .merge(&MergeRequest {
            inputs: vec![
                InputRef::parse("acme/a:v1").unwrap(),
                InputRef::parse("acme/b:v1").unwrap(),
            ],
            skip_unknown: false,
            base: None,
            options: MergeOptions {
                method: MergeMethod::Sum,
                weights: vec![0.7, 0.3],
                ..Default::default()
            },
            output: out.clone(),
            to: Some(Format::Kohya),
            save: Some(reference("acme/merged:v1")),
        })
        .unwrap();
    let saved = outcome.saved.expect("saved");
    assert_eq!(saved.reference, "acme/merged:v1");

    // the written file is kohya and holds the exact weighted sum of the two inputs
    let merged = read_adapter(&out, None, &ReadContext::default()).unwrap();
    assert_eq!(merged.meta.source_format, Some(Format::Kohya));
    let (la, lb) = (read_any(&a), read_any(&b));
    let mut worst = 0.0f64;
    for (path, layer) in &merged.layers {
        let mut terms = Vec::new();
        if let Some(l) = la.layers.get(path) {
            terms.push((l, 0.7));
        }
        if let Some(l) = lb.layers.get(path) {
            terms.push((l, 0.3));
        }
        worst = worst.max(layer_rel_diff(layer, &terms));
    }
    assert!(worst < 2e-3, "worst module error {worst} (f16 storage)");

    // the store holds it, with lineage naming both inputs by manifest digest
    let store = Store::open(home.path()).unwrap();
    let r = store.resolve(&reference("acme/merged:v1")).unwrap();
    assert_eq!(r.digest.to_string(), saved.digest);
    let lineage = r.config.loratool.lineage.expect("lineage");
    assert_eq!(lineage.operation, "merge");
    let inputs: Vec<(&str, &str)> = lineage
        .inputs
        .iter()
        .map(|i| (i.kind.as_str(), i.digest.as_str()))
        .collect();
    assert_eq!(
        inputs,
        [("manifest", da.as_str()), ("manifest", db.as_str())]
    );
    assert_eq!(lineage.parameters["weights"], serde_json::json!([0.7, 0.3]));
}

#[test]
fn conditions_a_caller_acts_on_are_typed() {
    let session = Session::new().with_store_root(tempdir().path());
    // a llama GGUF adapter cannot be converted without the base model's head counts
    let out = tempdir();
    let err = session
        .convert(&loratool::app::convert::ConvertRequest {
            input: InputRef::from_path(&fixture("gguf/plain-f32.gguf")).unwrap(),
            from: None,
            to: Format::Peft,
            output: out.path().join("x"),
            base: None,
            dtype: None,
            skip_unknown: false,
            save: None,
        })
        .unwrap_err();
    assert!(
        matches!(err.lib(), Some(loratool::Error::NeedsBase { .. })),
        "{err:?}"
    );
    // a reference the store does not hold
    let err = session
        .load(
            &InputRef::parse("acme/none:v1").unwrap(),
            &Default::default(),
        )
        .unwrap_err();
    assert!(
        matches!(
            err.root(),
            AppError::Store(loratool::registry::RegistryError::NotFound { .. })
        ),
        "{err:?}"
    );
    assert!(!out.path().join("x").exists());
}
