//! `loratool info` on a GGUF file (llama.cpp model or LoRA adapter): header only.

use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

use super::fmt::{group_digits, human_bytes};
use crate::io::gguf::{ggml_type_layout, GgufFile};

#[derive(Serialize)]
struct GgufInfo {
    kind: &'static str,
    path: String,
    container: &'static str,
    gguf_version: u32,
    architecture: Option<String>,
    gguf_type: Option<String>,
    lora_alpha: Option<f64>,
    file_bytes: u64,
    metadata_keys: usize,
    tensors: usize,
    /// ggml type name → (tensors, elements)
    types: BTreeMap<String, (usize, u64)>,
    params: u64,
}

pub fn run(path: &Path, json: bool) -> Result<()> {
    let f = GgufFile::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut types: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    let mut params = 0u64;
    for t in f.tensors.values() {
        let n: u64 = t.dims.iter().product();
        let name = ggml_type_layout(t.ggml_type)
            .map_or("?", |l| l.2)
            .to_string();
        let e = types.entry(name).or_insert((0, 0));
        e.0 += 1;
        e.1 += n;
        params += n;
    }
    let gguf_type =
        f.kv.get("general.type")
            .and_then(|v| v.as_str())
            .map(str::to_string);
    let info = GgufInfo {
        kind: if gguf_type.as_deref() == Some("adapter") {
            "adapter"
        } else {
            "model"
        },
        path: path.display().to_string(),
        container: "gguf",
        gguf_version: f.version,
        architecture: f.architecture().map(str::to_string),
        gguf_type,
        lora_alpha: f.kv.get("adapter.lora.alpha").and_then(|v| v.as_f64()),
        file_bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        metadata_keys: f.kv.len(),
        tensors: f.tensors.len(),
        types,
        params,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    println!("{}", info.path);
    println!("  container   GGUF v{}", info.gguf_version);
    println!(
        "  kind        {} ({})",
        info.kind,
        info.architecture
            .as_deref()
            .unwrap_or("no general.architecture")
    );
    if let Some(a) = info.lora_alpha {
        println!("  lora alpha  {a}");
    }
    println!("  file size   {}", human_bytes(info.file_bytes));
    println!("  metadata    {} keys", info.metadata_keys);
    println!("  tensors     {}", info.tensors);
    println!("  parameters  {}", group_digits(info.params));
    for (t, (n, e)) in &info.types {
        println!("  {t:<11} {n} tensors, {} elements", group_digits(*e));
    }
    Ok(())
}
