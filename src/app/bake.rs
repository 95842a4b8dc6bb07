//! `bake`: add adapters' deltas into a base model's weights (a GGUF model, a Hugging Face
//! model directory, a diffusers pipeline, or a single-file SD checkpoint).

use super::error::{AppError, Result, ResultExt};
use super::input::{InputRef, LoadOptions, Loaded};
use super::session::{Session, Unit};
use crate::adapter::gguf::base::from_gguf;
use crate::io::gguf::{is_gguf, GgufFile};
use crate::ops::bake_model::{bake_model, describe, ChangedTensor};
use crate::ops::gguf_bake::{bake_gguf, BakedTensor};
use crate::ops::model_layout::ModelLayout;
use crate::ops::{input_weights, BakeInput};
use crate::quant::QuantType;
use serde::Serialize;
use std::path::PathBuf;

pub struct BakeRequest {
    pub base: PathBuf,
    pub adapters: Vec<InputRef>,
    /// One weight per adapter; empty for 1 each.
    pub weights: Vec<f64>,
    pub output: PathBuf,
    /// GGUF bases: write merged tensors as llama-export-lora does (F16, or F32 for F32 tensors).
    pub export_lora_compat: bool,
}

/// What the bake did, by kind of base.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum BakeOutcome {
    Gguf(GgufBake),
    Model(ModelBake),
}

#[derive(Debug, Serialize)]
pub struct GgufBake {
    pub base: String,
    pub adapters: Vec<String>,
    pub weights: Vec<f64>,
    pub output: String,
    pub bytes: u64,
    pub tensors: Vec<BakedTensor>,
    /// Tensors of the base, touched or not.
    #[serde(skip)]
    pub base_tensors: usize,
}

impl GgufBake {
    /// Touched tensors written back in their own block-quantized type.
    pub fn requantized(&self) -> usize {
        self.tensors
            .iter()
            .filter(|t| {
                t.from == t.to && t.from.parse::<QuantType>().is_ok_and(|q| q.is_quantized())
            })
            .count()
    }
}

#[derive(Debug, Serialize)]
pub struct ModelBake {
    pub base: String,
    pub adapters: Vec<String>,
    pub weights: Vec<f64>,
    /// What kind of model the base is (`Hugging Face model directory, 2 shards`).
    pub layout: String,
    pub output: String,
    pub tensors: Vec<ChangedTensor>,
}

impl Session<'_> {
    pub fn bake(&self, req: &BakeRequest) -> Result<BakeOutcome> {
        let weights = input_weights(&req.weights, req.adapters.len())?;
        if is_gguf(&req.base) {
            self.bake_gguf(req, weights).map(BakeOutcome::Gguf)
        } else {
            if req.export_lora_compat {
                return Err(AppError::Usage(
                    "--export-lora-compat applies to GGUF bases only".into(),
                ));
            }
            self.bake_model(req, weights).map(BakeOutcome::Model)
        }
    }

    fn bake_gguf(&self, req: &BakeRequest, weights: Vec<f64>) -> Result<GgufBake> {
        let base =
            GgufFile::open(&req.base).with_context(|| format!("reading {}", req.base.display()))?;
        let info = from_gguf(&base).with_context(|| format!("reading {}", req.base.display()))?;
        let loaded = self.load_all(
            &req.adapters,
            &LoadOptions {
                base: Some(&info),
                ..Default::default()
            },
        )?;
        let inputs = bake_inputs(&loaded, &weights);
        let total: u64 = base.tensors.values().map(|t| t.byte_len).sum();
        let bar = self.observer().progress("baking", total, Unit::Bytes);
        let result = bake_gguf(&base, &inputs, &req.output, req.export_lora_compat, &|n| {
            bar.advance(n)
        });
        drop(bar);
        let tensors = result.context("baking")?;
        Ok(GgufBake {
            base: req.base.display().to_string(),
            adapters: labels(&loaded),
            weights,
            output: req.output.display().to_string(),
            bytes: std::fs::metadata(&req.output).map_or(0, |m| m.len()),
            tensors,
            base_tensors: base.tensors.len(),
        })
    }

    fn bake_model(&self, req: &BakeRequest, weights: Vec<f64>) -> Result<ModelBake> {
        let loaded = self.load_all(&req.adapters, &LoadOptions::default())?;
        let inputs = bake_inputs(&loaded, &weights);
        let layout = ModelLayout::open(&req.base)
            .with_context(|| format!("reading the base model {}", req.base.display()))?;
        for p in &layout.ignored {
            self.observer().warn(&format!(
                "{} is not one of the model's weight files; copied unchanged, adapters not applied",
                p.display()
            ));
        }
        let bar = self
            .observer()
            .progress("baking", layout.weight_bytes(), Unit::Bytes);
        let result = bake_model(&layout, &inputs, &req.output, &|n| bar.advance(n));
        drop(bar);
        let tensors = result.context("baking")?;
        Ok(ModelBake {
            base: req.base.display().to_string(),
            adapters: labels(&loaded),
            weights,
            layout: describe(&layout),
            output: req.output.display().to_string(),
            tensors,
        })
    }
}

fn bake_inputs<'a>(loaded: &'a [Loaded], weights: &[f64]) -> Vec<BakeInput<'a>> {
    loaded
        .iter()
        .zip(weights)
        .map(|(l, &weight)| BakeInput {
            label: l.label.clone(),
            adapter: &l.adapter,
            weight,
        })
        .collect()
}

fn labels(loaded: &[Loaded]) -> Vec<String> {
    loaded.iter().map(|l| l.label.clone()).collect()
}
