//! PEFT adapters: `adapter_config.json` + `adapter_model.safetensors` with keys
//! `base_model.model.<module>.lora_A.weight` and friends.
//!
//! Reading folds `use_rslora`, `rank_pattern` and `alpha_pattern` into each layer's alpha;
//! writing emits full-path `target_modules` and anchored per-module patterns, so PEFT
//! recreates exactly the layers that were written, at exactly their scales.

use super::lycoris;
pub use super::peft_config::CONFIG_FILE;
use super::peft_config::{alpha_json, plan_rank_alpha, PeftConfig, PeftType};
use super::{report_unknown, Adapter, AdapterMeta, Format, LayerKind, LoraLayer, ReadOptions};
use crate::error::{Error, Result};
use crate::io::atomic::write_bytes_atomic;
use crate::io::staging::write_dir;
use crate::io::{write_safetensors, PendingTensor, SafetensorsFile, WriteReport};
use crate::tensor::Tensor;
use indexmap::IndexMap;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
const PREFIX: &str = "base_model.model.";

/// Which tensor of a LoRA module a key holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    A,
    B,
    BBias,
    EmbA,
    EmbB,
    Magnitude,
    /// A `.alpha` scalar (diffusers files converted from kohya sometimes carry them).
    Alpha,
}

#[derive(Debug, PartialEq, Eq)]
pub struct LoraKey {
    pub module: String,
    pub part: Part,
    pub adapter_name: Option<String>,
}

/// Parse a PEFT-style key (after any wrapper prefix has been removed).
/// Returns None for keys that are not LoRA tensors.
pub fn parse_lora_key(key: &str) -> Option<LoraKey> {
    let segs: Vec<&str> = key.split('.').collect();
    let markers = [
        "lora_A",
        "lora_B",
        "lora_embedding_A",
        "lora_embedding_B",
        "lora_magnitude_vector",
    ];
    let i = segs.iter().rposition(|s| markers.contains(s))?;
    if i == 0 {
        return None;
    }
    let module = segs[..i].join(".");
    let rest = &segs[i + 1..];
    let named = |n: &str| Some(n.to_string());
    let (part, adapter_name) = match (segs[i], rest) {
        ("lora_A", ["weight"]) => (Part::A, None),
        ("lora_A", [n, "weight"]) => (Part::A, named(n)),
        ("lora_B", ["weight"]) => (Part::B, None),
        ("lora_B", [n, "weight"]) => (Part::B, named(n)),
        ("lora_B", ["bias"]) => (Part::BBias, None),
        ("lora_B", [n, "bias"]) => (Part::BBias, named(n)),
        ("lora_embedding_A", []) => (Part::EmbA, None),
        ("lora_embedding_A", [n]) => (Part::EmbA, named(n)),
        ("lora_embedding_B", []) => (Part::EmbB, None),
        ("lora_embedding_B", [n]) => (Part::EmbB, named(n)),
        ("lora_magnitude_vector", []) | ("lora_magnitude_vector", ["weight"]) => {
            (Part::Magnitude, None)
        }
        ("lora_magnitude_vector", [n]) | ("lora_magnitude_vector", [n, "weight"]) => {
            (Part::Magnitude, named(n))
        }
        _ => return None,
    };
    Some(LoraKey {
        module,
        part,
        adapter_name,
    })
}

/// A key of a PEFT weights file, with the `base_model.model.` (or `base_model.`) wrapper
/// removed as the reader removes it, parsed into module and part.
pub fn parse_file_key(key: &str) -> Option<LoraKey> {
    let stripped = key
        .strip_prefix(PREFIX)
        .or_else(|| key.strip_prefix("base_model."))
        .unwrap_or(key);
    parse_lora_key(stripped)
}

/// The tensors found for one module, before they are checked and assembled.
#[derive(Default)]
pub(crate) struct Parts {
    pub a: Option<Tensor>,
    pub b: Option<Tensor>,
    pub bias: Option<Tensor>,
    pub magnitude: Option<Tensor>,
    pub alpha: Option<Tensor>,
    pub embedding: bool,
}

impl Parts {
    pub fn set(&mut self, part: Part, t: Tensor) {
        match part {
            Part::A => self.a = Some(t),
            Part::B => self.b = Some(t),
            Part::EmbA => {
                self.a = Some(t);
                self.embedding = true
            }
            Part::EmbB => {
                self.b = Some(t);
                self.embedding = true
            }
            Part::BBias => self.bias = Some(t),
            Part::Magnitude => self.magnitude = Some(t),
            Part::Alpha => self.alpha = Some(t),
        }
    }

    /// Check and assemble; `alpha_for(rank)` gives the canonical alpha.
    pub fn into_layer(
        self,
        path: &Path,
        module: &str,
        alpha_for: impl FnOnce(usize) -> Result<f64>,
    ) -> Result<LoraLayer> {
        let (a, b) = match (self.a, self.b) {
            (Some(a), Some(b)) => (a, b),
            (None, _) => {
                return Err(Error::unsupported(
                    path,
                    format!("module '{module}' has lora_B but no lora_A"),
                ))
            }
            (_, None) => {
                return Err(Error::unsupported(
                    path,
                    format!("module '{module}' has lora_A but no lora_B"),
                ))
            }
        };
        let kind = if self.embedding {
            LayerKind::Embedding
        } else {
            match a.shape().len() {
                2 => LayerKind::Linear,
                4 => LayerKind::Conv,
                n => {
                    return Err(Error::unsupported(
                        path,
                        format!("module '{module}': {n}-D lora_A {:?}; only Linear, Conv2d and Embedding LoRA are supported", a.shape()),
                    ))
                }
            }
        };
        let rank = a.shape().first().copied().unwrap_or(0);
        let alpha = alpha_for(rank)?;
        let layer = LoraLayer {
            down: a,
            up: b,
            alpha,
            kind,
            magnitude: self.magnitude,
            bias: self.bias,
        };
        layer
            .validate(module)
            .map_err(|e| Error::unsupported(path, e.to_string()))?;
        Ok(layer)
    }
}

/// Where a PEFT adapter's files are, given a directory or its safetensors file.
pub fn locate(path: &Path) -> Result<(PathBuf, PathBuf)> {
    if path.is_dir() {
        let weights = path.join(WEIGHTS_FILE);
        if !weights.is_file() {
            if path.join("adapter_model.bin").is_file() {
                return Err(Error::unsupported(
                    path,
                    "adapter_model.bin is a pickle file, which loratool does not load (it can run code); re-save the adapter with safe_serialization=True",
                ));
            }
            return Err(Error::malformed(
                path,
                format!("no {WEIGHTS_FILE} in this directory"),
            ));
        }
        Ok((path.join(CONFIG_FILE), weights))
    } else {
        let dir = path.parent().unwrap_or(Path::new("."));
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        Ok((dir.join(CONFIG_FILE), path.to_path_buf()))
    }
}

pub fn read(path: &Path, opts: ReadOptions) -> Result<Adapter> {
    let (config_path, weights_path) = locate(path)?;
    if !config_path.is_file() {
        return Err(Error::malformed(
            &weights_path,
            format!(
                "no {CONFIG_FILE} beside it; PEFT adapters need their config for alpha and patterns (pass the adapter directory)"
            ),
        ));
    }
    let config = PeftConfig::read(&config_path)?;
    let file = SafetensorsFile::open(&weights_path)?;
    let mut meta = AdapterMeta {
        base_model: config.base_model_name_or_path.clone(),
        source_format: Some(Format::Peft),
        fan_in_fan_out: config.fan_in_fan_out,
        task_type: config.task_type.clone(),
        source_metadata: file.metadata().clone(),
        ..Default::default()
    };

    let mut modules: BTreeMap<String, Parts> = BTreeMap::new();
    let mut full = BTreeMap::new();
    let mut names = BTreeSet::new();
    let mut unknown = Vec::new();
    let mut base_layers = Vec::new();
    let mut lyco: BTreeMap<String, lycoris::ModuleTensors> = BTreeMap::new();
    for key in file.tensors().keys() {
        let stripped = key
            .strip_prefix(PREFIX)
            .or_else(|| key.strip_prefix("base_model."))
            .unwrap_or(key);
        if config.peft_type != PeftType::Lora {
            if let Some((module, local)) = lycoris::split_key(stripped) {
                lyco.entry(module.to_string())
                    .or_default()
                    .insert(local, file.tensor(key)?);
                continue;
            }
        }
        if let Some(k) = parse_lora_key(stripped) {
            if k.part == Part::Alpha {
                unknown.push(key.clone());
                continue;
            }
            if let Some(n) = &k.adapter_name {
                names.insert(n.clone());
            }
            modules
                .entry(k.module)
                .or_default()
                .set(k.part, file.tensor(key)?);
            continue;
        }
        let module = stripped.rsplit_once('.').map_or(stripped, |(m, _)| m);
        if config.saves_module(module) {
            full.insert(stripped.to_string(), file.tensor(key)?);
        } else if module.ends_with(".base_layer") {
            base_layers.push(key.clone());
        } else {
            unknown.push(key.clone());
        }
    }
    if names.len() > 1 {
        return Err(Error::unsupported(
            &weights_path,
            format!(
                "the file holds several adapters ({}); save each adapter on its own",
                names.into_iter().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    report_unknown(
        &weights_path,
        &unknown,
        "non-LoRA",
        opts,
        &mut meta.warnings,
    )?;
    if !base_layers.is_empty() {
        meta.warnings.push(format!(
            "ignored {} base-layer tensor(s) PEFT saved alongside the adapter ({}); they are the base model's own weights, not part of the LoRA",
            base_layers.len(),
            base_layers.join(", ")
        ));
    }

    let mut layers = BTreeMap::new();
    for (module, parts) in modules {
        let layer = parts.into_layer(&weights_path, &module, |rank| {
            let (cfg_rank, key) = config.rank_for(&module);
            if cfg_rank != rank {
                let source = match key {
                    Some(k) => format!("rank_pattern key '{k}'"),
                    None => "\"r\"".to_string(),
                };
                return Err(Error::malformed(
                    &config_path,
                    format!(
                        "module '{module}': the config gives rank {cfg_rank} (from {source}) but its tensors have rank {rank}; PEFT would refuse to load this adapter (size mismatch)"
                    ),
                ));
            }
            let alpha = config.alpha_for(&module);
            Ok(if config.use_rslora {
                alpha * (rank as f64).sqrt()
            } else {
                alpha
            })
        })?;
        layers.insert(module, layer);
    }
    // PEFT LoHa/LoKr: scale alpha/r from the config, converted exactly to LoRA
    for (module, tensors) in lyco {
        let opts = lycoris::Options {
            convention: lycoris::Convention::Peft {
                alpha: config.alpha_for(&module),
                rank: config.rank_for(&module).0,
            },
            ..lycoris::Options::lycoris()
        };
        let c = lycoris::convert(&module, &tensors, &opts)
            .map_err(|e| Error::unsupported(&weights_path, e.to_string()))?;
        layers.insert(module.clone(), c.layer);
        meta.lycoris.insert(module, c.origin);
    }
    meta.warnings
        .extend(lycoris::truncation_warnings(&meta.lycoris));
    if layers.is_empty() {
        return Err(Error::malformed(&weights_path, "no LoRA tensors found"));
    }
    meta.family = super::family::guess_family(layers.keys().map(|s| s.as_str()));
    Ok(Adapter { layers, full, meta })
}

/// Write `adapter` as a PEFT adapter directory for a transformers model.
pub fn write(
    adapter: &Adapter,
    dir: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<WriteReport> {
    if adapter.layers.is_empty() {
        return Err(Error::Invalid("the adapter has no layers to write".into()));
    }
    let mut names: Vec<(String, &Tensor)> = Vec::new();
    for (path, layer) in &adapter.layers {
        let (a, b) = match layer.kind {
            LayerKind::Embedding => ("lora_embedding_A", "lora_embedding_B"),
            _ => ("lora_A.weight", "lora_B.weight"),
        };
        names.push((format!("{PREFIX}{path}.{a}"), &layer.down));
        names.push((format!("{PREFIX}{path}.{b}"), &layer.up));
        if let Some(bias) = &layer.bias {
            names.push((format!("{PREFIX}{path}.lora_B.bias"), bias));
        }
        if let Some(m) = &layer.magnitude {
            names.push((format!("{PREFIX}{path}.lora_magnitude_vector"), m));
        }
    }
    for (name, t) in &adapter.full {
        names.push((format!("{PREFIX}{name}"), t));
    }
    let pending: Vec<PendingTensor> = names
        .iter()
        .map(|(n, t)| PendingTensor::from_tensor(n.clone(), t))
        .collect();
    let mut md = IndexMap::new();
    md.insert("format".to_string(), "pt".to_string());

    let config = config_json(adapter, |p| p.to_string());
    let config_text = serde_json::to_string_pretty(&config)
        .map_err(|e| Error::Invalid(format!("cannot serialise adapter config: {e}")))?;
    // both files are staged beside `dir` and moved in together: a failed write leaves neither
    write_dir(dir, |staging| {
        let report = write_safetensors(&staging.join(WEIGHTS_FILE), &pending, Some(&md), progress)?;
        write_bytes_atomic(&staging.join(CONFIG_FILE), config_text.as_bytes())?;
        Ok(report)
    })
}

/// The LoraConfig fields for these layers. Keys sorted (as PEFT writes them).
pub fn config_json(adapter: &Adapter, module_key: impl Fn(&str) -> String) -> Value {
    let plan = plan_rank_alpha(
        adapter
            .layers
            .iter()
            .map(|(p, l)| (p.as_str(), l.rank(), l.alpha)),
        &module_key,
        true,
    );
    let targets: Vec<String> = adapter.layers.keys().map(|p| module_key(p)).collect();
    let modules_to_save: Vec<String> = adapter
        .full
        .keys()
        .map(|n| {
            n.rsplit_once('.')
                .map_or(n.as_str(), |(m, _)| m)
                .to_string()
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let alpha_pattern: serde_json::Map<String, Value> = plan
        .alpha_pattern
        .iter()
        .map(|(k, a)| (k.clone(), alpha_json(*a)))
        .collect();
    let mut obj: BTreeMap<&str, Value> = BTreeMap::new();
    obj.insert("peft_type", json!("LORA"));
    obj.insert("task_type", json!(adapter.meta.task_type));
    obj.insert("base_model_name_or_path", json!(adapter.meta.base_model));
    obj.insert("revision", Value::Null);
    obj.insert("r", json!(plan.r));
    obj.insert("lora_alpha", alpha_json(plan.lora_alpha));
    obj.insert("rank_pattern", json!(plan.rank_pattern));
    obj.insert("alpha_pattern", Value::Object(alpha_pattern));
    obj.insert("target_modules", json!(targets));
    obj.insert("use_rslora", json!(false));
    obj.insert(
        "use_dora",
        json!(adapter.layers.values().any(|l| l.magnitude.is_some())),
    );
    obj.insert(
        "lora_bias",
        json!(adapter.layers.values().any(|l| l.bias.is_some())),
    );
    obj.insert("fan_in_fan_out", json!(adapter.meta.fan_in_fan_out));
    obj.insert("bias", json!("none"));
    obj.insert("lora_dropout", json!(0.0));
    obj.insert(
        "modules_to_save",
        if modules_to_save.is_empty() {
            Value::Null
        } else {
            json!(modules_to_save)
        },
    );
    obj.insert("init_lora_weights", json!(true));
    obj.insert("inference_mode", json!(true));
    json!(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(key: &str) -> Option<(String, Part, Option<String>)> {
        parse_lora_key(key).map(|k| (k.module, k.part, k.adapter_name))
    }

    #[test]
    fn keys_with_and_without_adapter_names_parse() {
        assert_eq!(
            k("model.layers.0.q_proj.lora_A.weight"),
            Some(("model.layers.0.q_proj".into(), Part::A, None))
        );
        assert_eq!(
            k("model.layers.0.q_proj.lora_B.default.weight"),
            Some((
                "model.layers.0.q_proj".into(),
                Part::B,
                Some("default".into())
            ))
        );
        assert_eq!(
            k("model.embed_tokens.lora_embedding_A"),
            Some(("model.embed_tokens".into(), Part::EmbA, None))
        );
        assert_eq!(
            k("model.embed_tokens.lora_embedding_B.other"),
            Some((
                "model.embed_tokens".into(),
                Part::EmbB,
                Some("other".into())
            ))
        );
        assert_eq!(
            k("m.q.lora_magnitude_vector"),
            Some(("m.q".into(), Part::Magnitude, None))
        );
        assert_eq!(
            k("m.q.lora_magnitude_vector.weight"),
            Some(("m.q".into(), Part::Magnitude, None))
        );
        assert_eq!(
            k("m.q.lora_B.bias"),
            Some(("m.q".into(), Part::BBias, None))
        );
        assert_eq!(k("model.layers.0.q_proj.weight"), None);
        assert_eq!(k("score.weight"), None);
    }

    #[test]
    fn module_named_like_marker_uses_last_marker() {
        // a module path segment that itself is a marker name is not confused with the suffix
        assert_eq!(
            k("blocks.lora_A.proj.lora_A.weight"),
            Some(("blocks.lora_A.proj".into(), Part::A, None))
        );
    }
}
