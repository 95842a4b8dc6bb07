//! diffusers pipeline LoRAs: one `pytorch_lora_weights.safetensors` whose keys are
//! `<component>.<module path>.lora_A.weight` (components `unet`, `text_encoder`,
//! `text_encoder_2`, `transformer`), read by `pipeline.load_lora_weights`.
//!
//! diffusers rejects `.alpha` keys next to PEFT-style keys, so alphas travel in the
//! `lora_adapter_metadata` header: per component, the LoraConfig fields (`unet.r`,
//! `unet.lora_alpha`, `unet.rank_pattern`, ...) that diffusers passes verbatim to
//! `LoraConfig(**kwargs)`. Anchored per-module patterns make every module's scale exactly its
//! own `alpha / r`, mixed alphas included.

use super::peft::{parse_lora_key, Part, Parts};
use super::peft_config::{alpha_json, plan_rank_alpha, PeftConfig};
use super::{report_unknown, Adapter, AdapterMeta, Format, LayerKind, LoraLayer, ReadOptions};
use crate::error::{Error, Result};
use crate::io::{write_safetensors, PendingTensor, SafetensorsFile, WriteReport};
use crate::tensor::Tensor;
use indexmap::IndexMap;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const WEIGHTS_FILE: &str = "pytorch_lora_weights.safetensors";
pub const COMPONENTS: [&str; 5] = [
    "unet",
    "text_encoder",
    "text_encoder_2",
    "text_encoder_3",
    "transformer",
];
pub const METADATA_KEY: &str = "lora_adapter_metadata";

/// Split `unet.down_blocks.0...` into (`unet`, `down_blocks.0...`). Longest component first,
/// so `text_encoder_2.` is not taken for `text_encoder`.
pub fn split_component(path: &str) -> Option<(&'static str, &str)> {
    let mut comps = COMPONENTS;
    comps.sort_by_key(|c| std::cmp::Reverse(c.len()));
    comps.into_iter().find_map(|c| {
        path.strip_prefix(c)
            .and_then(|r| r.strip_prefix('.'))
            .map(|r| (c, r))
    })
}

fn weights_path(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join(WEIGHTS_FILE)
    } else {
        path.to_path_buf()
    }
}

/// Per-component LoraConfigs from the `lora_adapter_metadata` header, if present.
fn component_configs(
    path: &Path,
    md: &IndexMap<String, String>,
) -> Result<BTreeMap<String, PeftConfig>> {
    let mut out = BTreeMap::new();
    let Some(text) = md.get(METADATA_KEY) else {
        return Ok(out);
    };
    let json: Value = serde_json::from_str(text)
        .map_err(|e| Error::malformed(path, format!("{METADATA_KEY} is not valid JSON: {e}")))?;
    let Value::Object(obj) = json else {
        return Err(Error::malformed(
            path,
            format!("{METADATA_KEY} is not a JSON object"),
        ));
    };
    let mut grouped: BTreeMap<&'static str, Map<String, Value>> = BTreeMap::new();
    for (k, v) in obj {
        if let Some((comp, field)) = split_component(&k) {
            grouped
                .entry(comp)
                .or_default()
                .insert(field.to_string(), v);
        }
    }
    for (comp, mut fields) in grouped {
        fields
            .entry("peft_type".to_string())
            .or_insert_with(|| json!("LORA"));
        let cfg = PeftConfig::from_json(path, &Value::Object(fields))
            .map_err(|e| Error::malformed(path, format!("{METADATA_KEY} for '{comp}': {e}")))?;
        out.insert(comp.to_string(), cfg);
    }
    Ok(out)
}

pub fn read(path: &Path, opts: ReadOptions) -> Result<Adapter> {
    let weights = weights_path(path);
    let file = SafetensorsFile::open(&weights)?;
    let configs = component_configs(&weights, file.metadata())?;
    let mut meta = AdapterMeta {
        source_format: Some(Format::Diffusers),
        source_metadata: file.metadata().clone(),
        ..Default::default()
    };
    let mut modules: BTreeMap<String, Parts> = BTreeMap::new();
    let mut unknown = Vec::new();
    for key in file.tensors().keys() {
        if split_component(key).is_none() {
            unknown.push(key.clone());
            continue;
        }
        if let Some(module) = key.strip_suffix(".alpha") {
            modules
                .entry(module.to_string())
                .or_default()
                .set(Part::Alpha, file.tensor(key)?);
            continue;
        }
        match parse_lora_key(key) {
            Some(k) if k.adapter_name.is_none() => {
                modules
                    .entry(k.module)
                    .or_default()
                    .set(k.part, file.tensor(key)?);
            }
            _ => unknown.push(key.clone()),
        }
    }
    report_unknown(&weights, &unknown, "non-LoRA", opts, &mut meta.warnings)?;
    let mut layers = BTreeMap::new();
    for (module, mut parts) in modules {
        let alpha_tensor = parts.alpha.take();
        let (comp, rel) = split_component(&module).unwrap_or(("", &module));
        let config = configs.get(comp);
        let layer = parts.into_layer(&weights, &module, |rank| {
            if let Some(cfg) = config {
                let (cfg_rank, _) = cfg.rank_for(rel);
                if cfg_rank != rank {
                    return Err(Error::malformed(
                        &weights,
                        format!(
                            "module '{module}': {METADATA_KEY} gives rank {cfg_rank} but the tensors have rank {rank}"
                        ),
                    ));
                }
                let a = cfg.alpha_for(rel);
                return Ok(if cfg.use_rslora { a * (rank as f64).sqrt() } else { a });
            }
            match &alpha_tensor {
                Some(t) => t.scalar_value().ok_or_else(|| {
                    Error::bad_tensor(&weights, format!("{module}.alpha"), "alpha must be a single number")
                }),
                // diffusers convention without alphas: W + B·A, scale 1
                None => Ok(rank as f64),
            }
        })?;
        layers.insert(module, layer);
    }
    if layers.is_empty() {
        return Err(Error::malformed(&weights, "no LoRA tensors found"));
    }
    let mut adapter = Adapter {
        layers,
        full: BTreeMap::new(),
        meta,
    };
    adapter.meta.family = super::family::guess_sd_family(&adapter)
        .or_else(|| super::dit::guess_family(&adapter))
        .map(str::to_string);
    Ok(adapter)
}

/// The LoraConfig fields diffusers needs for one component's layers (paths relative to it).
/// How PEFT must name a module of `component` in target_modules and patterns.
///
/// transformers 5 flattened `CLIPTextModel` (no `text_model.` level) while checkpoints and
/// older versions keep it; diffusers strips the prefix from the weights but passes the metadata
/// through unchanged. So text-encoder modules are named without `text_model.` and matched as
/// dotted suffixes (unanchored), which finds them under either layout.
fn peft_module_key(component: &str, rel: &str) -> String {
    if component.starts_with("text_encoder") {
        rel.strip_prefix("text_model.").unwrap_or(rel).to_string()
    } else {
        rel.to_string()
    }
}

fn component_config(component: &str, layers: &[(&str, &LoraLayer)]) -> Map<String, Value> {
    let anchored = !component.starts_with("text_encoder");
    let plan = plan_rank_alpha(
        layers.iter().map(|(p, l)| (*p, l.rank(), l.alpha)),
        |p| peft_module_key(component, p),
        anchored,
    );
    let alpha_pattern: Map<String, Value> = plan
        .alpha_pattern
        .iter()
        .map(|(k, a)| (k.clone(), alpha_json(*a)))
        .collect();
    let mut m = Map::new();
    m.insert("peft_type".into(), json!("LORA"));
    m.insert("r".into(), json!(plan.r));
    m.insert("lora_alpha".into(), alpha_json(plan.lora_alpha));
    m.insert("rank_pattern".into(), json!(plan.rank_pattern));
    m.insert("alpha_pattern".into(), Value::Object(alpha_pattern));
    let targets: Vec<String> = layers
        .iter()
        .map(|(p, _)| peft_module_key(component, p))
        .collect();
    m.insert("target_modules".into(), json!(targets));
    m.insert("use_rslora".into(), json!(false));
    m.insert(
        "use_dora".into(),
        json!(layers.iter().any(|(_, l)| l.magnitude.is_some())),
    );
    m.insert(
        "lora_bias".into(),
        json!(layers.iter().any(|(_, l)| l.bias.is_some())),
    );
    m.insert("lora_dropout".into(), json!(0.0));
    m.insert("bias".into(), json!("none"));
    m.insert("init_lora_weights".into(), json!(true));
    m
}

/// Write `adapter` in the diffusers layout. `out` is a directory (the file inside is
/// `pytorch_lora_weights.safetensors`) or a path ending in `.safetensors`.
pub fn write(
    adapter: &Adapter,
    out: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<WriteReport> {
    if !adapter.full.is_empty() {
        return Err(Error::Invalid(
            "the adapter carries fully trained tensors (modules_to_save), which the diffusers LoRA layout cannot hold".into(),
        ));
    }
    let mut by_comp: BTreeMap<&str, Vec<(&str, &LoraLayer)>> = BTreeMap::new();
    let mut names: Vec<(String, &Tensor)> = Vec::new();
    for (path, layer) in &adapter.layers {
        let (comp, rel) = split_component(path).ok_or_else(|| {
            Error::module(
                path,
                format!(
                    "the diffusers layout holds pipeline components ({}) only; this path is not under one (write PEFT for transformers models)",
                    COMPONENTS.join(", ")
                ),
            )
        })?;
        by_comp.entry(comp).or_default().push((rel, layer));
        let (a, b) = match layer.kind {
            LayerKind::Embedding => ("lora_embedding_A", "lora_embedding_B"),
            _ => ("lora_A.weight", "lora_B.weight"),
        };
        names.push((format!("{path}.{a}"), &layer.down));
        names.push((format!("{path}.{b}"), &layer.up));
        if let Some(bias) = &layer.bias {
            names.push((format!("{path}.lora_B.bias"), bias));
        }
        if let Some(m) = &layer.magnitude {
            names.push((format!("{path}.lora_magnitude_vector"), m));
        }
    }
    let mut flat: BTreeMap<String, Value> = BTreeMap::new();
    for (comp, layers) in &by_comp {
        for (k, v) in component_config(comp, layers) {
            flat.insert(format!("{comp}.{k}"), v);
        }
    }
    let text = serde_json::to_string_pretty(&flat)
        .map_err(|e| Error::Invalid(format!("cannot serialise {METADATA_KEY}: {e}")))?;
    let mut md = IndexMap::new();
    md.insert("format".to_string(), "pt".to_string());
    md.insert(METADATA_KEY.to_string(), text);
    let pending: Vec<PendingTensor> = names
        .iter()
        .map(|(n, t)| PendingTensor::from_tensor(n.clone(), t))
        .collect();
    if out.extension().is_some_and(|e| e == "safetensors") {
        write_safetensors(out, &pending, Some(&md), progress)
    } else {
        // a directory output is staged beside `out`: a failed write leaves no empty directory
        crate::io::staging::write_dir(out, |staging| {
            write_safetensors(&staging.join(WEIGHTS_FILE), &pending, Some(&md), progress)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_split_longest_first() {
        assert_eq!(
            split_component("text_encoder_2.text_model.x"),
            Some(("text_encoder_2", "text_model.x"))
        );
        assert_eq!(
            split_component("text_encoder.text_model.x"),
            Some(("text_encoder", "text_model.x"))
        );
        assert_eq!(split_component("unet.a"), Some(("unet", "a")));
        assert_eq!(split_component("unetx.a"), None);
        assert_eq!(split_component("model.layers.0"), None);
    }

    #[test]
    fn written_metadata_resolves_to_each_layers_rank_and_alpha() {
        use crate::tensor::DType;
        let mk = |r: usize, alpha: f64| {
            let d = Tensor::from_f32(vec![r, 3], &vec![0.5; r * 3], DType::F32).unwrap();
            let u = Tensor::from_f32(vec![2, r], &vec![0.25; r * 2], DType::F32).unwrap();
            LoraLayer::new("m", d, u, alpha, LayerKind::Linear).unwrap()
        };
        let layers = [
            ("down_blocks.0.attn1.to_q", mk(4, 2.0)),
            ("down_blocks.0.attn1.to_k", mk(4, 4.0)),
            ("mid_block.to_q", mk(2, 4.0)),
            ("down_blocks.0.attn1.to_q_extra", mk(4, 2.0)),
        ];
        let refs: Vec<(&str, &LoraLayer)> = layers.iter().map(|(p, l)| (*p, l)).collect();
        for comp in ["unet", "text_encoder"] {
            let cfg = PeftConfig::from_json(
                Path::new("x"),
                &Value::Object(component_config(comp, &refs)),
            )
            .unwrap();
            for (p, l) in &layers {
                assert_eq!(cfg.rank_for(p).0, l.rank(), "{comp} {p}");
                assert_eq!(cfg.alpha_for(p), l.alpha, "{comp} {p}");
            }
        }
    }
}
