//! `docs/json.md` is the contract for `--json`: run every command it documents and check the
//! output against its tables, both ways (every documented field is present unless marked
//! optional; every top-level field printed is documented).

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;

/// Section title → documented fields (`name`, `name[].field`, `name.field`) with whether each
/// is optional.
fn documented() -> BTreeMap<String, Vec<(String, bool)>> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/json.md"))
        .expect("docs/json.md");
    let mut out: BTreeMap<String, Vec<(String, bool)>> = BTreeMap::new();
    let mut section = None;
    for line in text.lines() {
        if let Some(t) = line.strip_prefix("## ") {
            section = Some(t.trim().to_string());
            out.entry(t.trim().to_string()).or_default();
        } else if let (Some(sec), Some(rest)) = (&section, line.strip_prefix("| `")) {
            let (field, rest) = rest.split_once('`').unwrap();
            let ty = rest.split('|').nth(1).unwrap_or("");
            out.get_mut(sec)
                .unwrap()
                .push((field.to_string(), ty.contains("optional")));
        }
    }
    out
}

/// The value at a documented path (`a`, `a.b`, `a[].b` on the first element).
fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for part in path.split('.') {
        cur = match part.strip_suffix("[]") {
            Some(name) => cur.get(name)?.as_array()?.first()?,
            None => cur.get(part)?,
        };
    }
    Some(cur)
}

fn json(args: &[&str]) -> Value {
    let out = run_ok(args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

#[test]
fn every_documented_command_prints_its_documented_fields() {
    let dir = tempdir();
    let d = |n: &str| dir.path().join(n);
    let kohya = fixture("kohya/sd15_lora_r4_a2_c3lier.safetensors");
    let other = fixture("kohya/sd15_lora_r8_a8_attn.safetensors");
    let llama = fixture("tiny_llama");
    let gguf_model = fixture("tiny_llama-f32.gguf");
    let baked = d("baked");
    let mut runs: BTreeMap<&str, Value> = BTreeMap::new();
    runs.insert("info: adapter", json(&["info", s(&kohya), "--json"]));
    runs.insert("info: model", json(&["info", s(&llama), "--json"]));
    runs.insert(
        "info: gguf model",
        json(&["info", s(&gguf_model), "--json"]),
    );
    runs.insert(
        "info: spectrum",
        json(&["info", s(&kohya), "--spectrum", "--json"]),
    );
    // a file with findings (sd-scripts' zero directions), so `findings[]` has elements
    let svd_merge = fixture("kohya/sd15_svd_merge_0.6_0.4_r4.safetensors");
    runs.insert("check", json(&["check", s(&svd_merge), "--json"]));
    runs.insert(
        "convert",
        json(&[
            "convert",
            s(&kohya),
            "--to",
            "peft",
            "-o",
            s(&d("p")),
            "--json",
        ]),
    );
    runs.insert(
        "resize",
        json(&[
            "resize",
            s(&kohya),
            "--rank",
            "2",
            "-o",
            s(&d("r.safetensors")),
            "--json",
        ]),
    );
    runs.insert(
        "merge",
        json(&[
            "merge",
            s(&kohya),
            s(&other),
            "--method",
            "svd",
            "--rank",
            "4",
            "-o",
            s(&d("m.safetensors")),
            "--json",
        ]),
    );
    runs.insert(
        "quantize",
        json(&[
            "quantize",
            s(&gguf_model),
            "--type",
            "q8_0",
            "-o",
            s(&d("q.gguf")),
            "--json",
        ]),
    );
    runs.insert(
        "bake: model",
        json(&[
            "bake",
            s(&llama),
            s(&fixture("peft/plain")),
            "-o",
            s(&baked),
            "--json",
        ]),
    );
    runs.insert(
        "bake: gguf",
        json(&[
            "bake",
            s(&gguf_model),
            s(&fixture("gguf/plain-f32.gguf")),
            "-o",
            s(&d("b.gguf")),
            "--json",
        ]),
    );
    runs.insert(
        "extract",
        json(&[
            "extract",
            "--base",
            s(&llama),
            "--tuned",
            s(&baked),
            "--rank",
            "4",
            "-o",
            s(&d("e")),
            "--json",
        ]),
    );
    let docs = documented();
    let sections: Vec<&String> = docs.keys().collect();
    let ran: Vec<&str> = runs.keys().copied().collect();
    assert_eq!(
        sections, ran,
        "every documented section is run, and only those"
    );
    for (section, fields) in &docs {
        let v = &runs[section.as_str()];
        let mut top: Vec<&str> = Vec::new();
        for (field, optional) in fields {
            top.push(field.split(['.', '[']).next().unwrap());
            if !optional {
                assert!(
                    lookup(v, field).is_some(),
                    "{section}: no `{field}` in {v:#}"
                );
            }
        }
        // the adapter fields documented under "info: adapter" hold for the spectrum run too
        if section == "info: spectrum" {
            top.extend(docs["info: adapter"].iter().map(|(f, _)| f.as_str()));
        }
        for key in v.as_object().unwrap().keys() {
            assert!(
                top.contains(&key.as_str()),
                "{section}: `{key}` is not documented"
            );
        }
    }
}
