//! `info`: what an adapter or a base model holds, from headers (and kohya's scalar alphas)
//! only. Adapters are described by the same [`AdapterSummary`] the registry records.

use super::error::{AppError, Result, ResultExt};
use super::input::{InputRef, LoadOptions};
use super::session::Session;
use crate::adapter::codec::detect_format;
use crate::adapter::summary::{dtype_counts, AdapterSummary, DtypeCount};
use crate::adapter::Format;
use crate::io::gguf::{ggml_type_layout, is_gguf, GgufFile, GgufValue};
use crate::io::{SafetensorsFile, TensorStore};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

pub struct InfoRequest {
    pub input: InputRef,
    /// Read the adapter as this format instead of detecting it.
    pub from: Option<Format>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Info {
    Adapter(AdapterInfo),
    Model(ModelInfo),
}

#[derive(Debug, Serialize)]
pub struct AdapterInfo {
    pub kind: &'static str,
    pub path: String,
    pub file_bytes: u64,
    #[serde(flatten)]
    pub summary: AdapterSummary,
    pub warnings: Vec<String>,
    /// The GGUF container, for a GGUF adapter.
    #[serde(flatten)]
    pub gguf: Option<GgufContainer>,
}

#[derive(Debug, Serialize)]
pub struct ModelInfo {
    pub kind: &'static str,
    pub path: String,
    pub file_bytes: u64,
    pub params: u64,
    /// A safetensors model (file, shards, directory).
    #[serde(flatten)]
    pub safetensors: Option<SafetensorsModel>,
    /// A GGUF model.
    #[serde(flatten)]
    pub gguf: Option<GgufContainer>,
}

#[derive(Debug, Serialize)]
pub struct SafetensorsModel {
    pub files: usize,
    pub tensors: usize,
    pub dtypes: Vec<DtypeCount>,
}

/// A GGUF file's header, as `info` shows it.
#[derive(Debug, Serialize)]
pub struct GgufContainer {
    pub container: &'static str,
    pub gguf_version: u32,
    pub architecture: Option<String>,
    pub gguf_type: Option<String>,
    pub lora_alpha: Option<f64>,
    pub metadata_keys: usize,
    pub tensors: usize,
    /// ggml type name → (tensors, elements).
    pub types: BTreeMap<String, (usize, u64)>,
    #[serde(skip)]
    pub elements: u64,
}

impl Session<'_> {
    pub fn info(&self, req: &InfoRequest) -> Result<Info> {
        // a stored adapter is laid out in a temp directory that lives until the end
        let located = self.locate(&req.input)?;
        let path = &located.path;
        let from = req.from.or(located.format);
        let file_bytes = on_disk_bytes(path);
        if path.is_file() && is_gguf(path) {
            let file =
                GgufFile::open(path).with_context(|| format!("reading {}", located.label))?;
            let gguf = gguf_container(&file);
            if gguf.gguf_type.as_deref() != Some("adapter") {
                return Ok(Info::Model(ModelInfo {
                    kind: "model",
                    path: located.label.clone(),
                    file_bytes,
                    params: gguf.elements,
                    safetensors: None,
                    gguf: Some(gguf),
                }));
            }
            let loaded = self.describe(&located, Some(Format::Gguf))?;
            return Ok(Info::Adapter(AdapterInfo {
                kind: "adapter",
                path: located.label.clone(),
                file_bytes,
                summary: loaded.0,
                warnings: loaded.1,
                gguf: Some(gguf),
            }));
        }
        if from.is_some() || detect_format(path).is_ok() {
            let (summary, warnings) = self.describe(&located, from)?;
            return Ok(Info::Adapter(AdapterInfo {
                kind: "adapter",
                path: located.label.clone(),
                file_bytes,
                summary,
                warnings,
                gguf: None,
            }));
        }
        if let Some(why) = unplaceable_lora(path) {
            return Err(AppError::Lib(crate::error::Error::unsupported(path, why)));
        }
        let store = TensorStore::open(path).with_context(|| {
            format!(
                "{} is neither a LoRA adapter nor a safetensors model",
                located.label
            )
        })?;
        Ok(Info::Model(model_info(&located.label, &store)))
    }

    /// The summary of an adapter and its reader's warnings (a layout-only read, which keeps
    /// unknown keys as warnings and needs no base model).
    fn describe(
        &self,
        located: &super::input::Located,
        from: Option<Format>,
    ) -> Result<(AdapterSummary, Vec<String>)> {
        let loaded = self.load_located(
            located,
            &LoadOptions {
                from,
                skip_unknown: true,
                base: None,
                layout_only: true,
            },
        )?;
        self.warn_all(&loaded.adapter.meta.warnings);
        let summary = AdapterSummary::of(&loaded.adapter, loaded.format);
        Ok((summary, loaded.adapter.meta.warnings))
    }
}

/// Why a safetensors file whose keys look like LoRA factors is not an adapter loratool can
/// place (`m.lora_down.weight` without a kohya prefix, say), or `None` when it does not look
/// like a LoRA at all.
fn unplaceable_lora(path: &Path) -> Option<String> {
    if !path.is_file() {
        return None;
    }
    let file = SafetensorsFile::open(path).ok()?;
    const MARKS: [&str; 8] = [
        ".lora_down",
        ".lora_up",
        ".lora_A",
        ".lora_B",
        "hada_w",
        "lokr_w",
        ".lora.down",
        ".lora.up",
    ];
    let lora: Vec<&String> = file
        .tensors()
        .keys()
        .filter(|k| MARKS.iter().any(|m| k.contains(m)))
        .collect();
    let example = lora.first()?;
    Some(format!(
        "this looks like a LoRA ({} of {} tensors are LoRA factors, e.g. '{example}'), but loratool cannot place its key layout: it knows kohya (lora_unet_*, lora_te*_*), PEFT (base_model.model.<path>.lora_A.weight, with adapter_config.json) and diffusers (unet.<path>, text_encoder.<path>, transformer.<path>); pass --from to read it as one of those",
        lora.len(),
        file.tensors().len()
    ))
}

fn on_disk_bytes(path: &Path) -> u64 {
    if path.is_dir() {
        std::fs::read_dir(path)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| e.metadata().ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    } else {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }
}

fn gguf_container(f: &GgufFile) -> GgufContainer {
    let mut types: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    let mut elements = 0u64;
    for t in f.tensors.values() {
        let n: u64 = t.dims.iter().product();
        let name = ggml_type_layout(t.ggml_type)
            .map_or("?", |l| l.2)
            .to_string();
        let e = types.entry(name).or_insert((0, 0));
        e.0 += 1;
        e.1 += n;
        elements += n;
    }
    GgufContainer {
        container: "gguf",
        gguf_version: f.version,
        architecture: f.architecture().map(str::to_string),
        gguf_type: f
            .kv
            .get("general.type")
            .and_then(GgufValue::as_str)
            .map(str::to_string),
        lora_alpha: f.kv.get("adapter.lora.alpha").and_then(|v| v.as_f64()),
        metadata_keys: f.kv.len(),
        tensors: f.tensors.len(),
        types,
        elements,
    }
}

fn model_info(label: &str, store: &TensorStore) -> ModelInfo {
    let infos: Vec<_> = store.names().filter_map(|n| store.info(n)).collect();
    ModelInfo {
        kind: "model",
        path: label.to_string(),
        file_bytes: store.total_file_bytes(),
        params: infos.iter().map(|i| i.numel() as u64).sum(),
        safetensors: Some(SafetensorsModel {
            files: store.files().len(),
            tensors: store.len(),
            dtypes: dtype_counts(infos.iter().map(|i| (i.dtype.to_string(), i.numel()))),
        }),
        gguf: None,
    }
}
