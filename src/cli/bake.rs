//! `loratool bake`: add adapters' deltas into a base model's weights.

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;

use super::adapter_io::read_input;
use super::fmt::human_bytes;
use super::progress::bytes_bar;
use crate::adapter::gguf::base::from_gguf;
use crate::io::gguf::{is_gguf, GgufFile};
use crate::ops::bake_model::{bake_model, describe, ModelBakeInput};
use crate::ops::gguf_bake::{bake_gguf, BakeInput, BakedTensor};
use crate::ops::model_layout::ModelLayout;

#[derive(Args)]
pub struct BakeArgs {
    /// Base model: a llama.cpp GGUF model (any of loratool's tensor types, quantized included),
    /// a Hugging Face model directory (`model.safetensors`, or shards with
    /// `model.safetensors.index.json`), a diffusers pipeline directory (`unet/`, `text_encoder/`,
    /// `text_encoder_2/`, ...), or a single-file SD1.5/SDXL checkpoint (`.safetensors`).
    pub base: PathBuf,
    /// Adapters to add: PEFT directories, diffusers or kohya LoRA files, GGUF LoRA files, or
    /// registry references.
    #[arg(required = true, value_name = "ADAPTER")]
    pub adapters: Vec<PathBuf>,
    /// One scale per adapter, comma-separated (llama.cpp's --lora-scaled); default 1 each.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub weights: Vec<f64>,
    /// Output: a new directory for a directory base (model or pipeline); a file for a file base
    /// (.gguf, single-file checkpoint).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Write merged tensors as llama-export-lora does: F16 (F32 if the base tensor is F32),
    /// general.file_type = MOSTLY_F16. Default: each merged tensor re-quantized to its own type.
    #[arg(long)]
    pub export_lora_compat: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Report<'a> {
    base: String,
    adapters: Vec<String>,
    weights: &'a [f64],
    output: String,
    bytes: u64,
    tensors: &'a [BakedTensor],
}

pub fn run(args: BakeArgs) -> Result<()> {
    let weights = if args.weights.is_empty() {
        vec![1.0; args.adapters.len()]
    } else if args.weights.len() == args.adapters.len() {
        args.weights.clone()
    } else {
        bail!(
            "--weights has {} values for {} adapters",
            args.weights.len(),
            args.adapters.len()
        );
    };
    if let Some(w) = weights.iter().find(|w| !w.is_finite()) {
        bail!("--weights: {w} is not a finite number");
    }
    if !is_gguf(&args.base) {
        return run_safetensors(&args, &weights);
    }
    let base =
        GgufFile::open(&args.base).with_context(|| format!("reading {}", args.base.display()))?;
    let info = from_gguf(&base).with_context(|| format!("reading {}", args.base.display()))?;
    let adapters = args
        .adapters
        .iter()
        .map(|p| read_input(p, None, false, Some(&info)))
        .collect::<Result<Vec<_>>>()?;
    let inputs: Vec<BakeInput> = args
        .adapters
        .iter()
        .zip(&adapters)
        .zip(&weights)
        .map(|((p, a), &weight)| BakeInput {
            label: p.display().to_string(),
            adapter: a,
            weight,
        })
        .collect();
    let total: u64 = base.tensors.values().map(|t| t.byte_len).sum();
    let bar = bytes_bar(total, "baking");
    let progress = |n: u64| bar.inc(n);
    let result = bake_gguf(
        &base,
        &inputs,
        &args.output,
        args.export_lora_compat,
        &progress,
    );
    bar.finish_and_clear();
    let tensors = result.context("baking")?;
    let bytes = std::fs::metadata(&args.output).map_or(0, |m| m.len());
    if args.json {
        let r = Report {
            base: args.base.display().to_string(),
            adapters: args
                .adapters
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            weights: &weights,
            output: args.output.display().to_string(),
            bytes,
            tensors: &tensors,
        };
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let requantized = tensors
        .iter()
        .filter(|t| {
            t.from == t.to
                && t.from
                    .parse::<crate::quant::QuantType>()
                    .is_ok_and(|q| q.is_quantized())
        })
        .count();
    println!(
        "baked {} adapter(s) into {} of {} tensors ({} re-quantized to their own type); copied the rest byte for byte; wrote {} ({})",
        args.adapters.len(),
        tensors.len(),
        base.tensors.len(),
        requantized,
        args.output.display(),
        human_bytes(bytes)
    );
    Ok(())
}

/// A safetensors base: model directory, pipeline directory or single file.
fn run_safetensors(args: &BakeArgs, weights: &[f64]) -> Result<()> {
    if args.export_lora_compat {
        bail!("--export-lora-compat applies to GGUF bases only");
    }
    let adapters = args
        .adapters
        .iter()
        .map(|p| read_input(p, None, false, None))
        .collect::<Result<Vec<_>>>()?;
    let inputs: Vec<ModelBakeInput> = args
        .adapters
        .iter()
        .zip(&adapters)
        .zip(weights)
        .map(|((p, a), &weight)| ModelBakeInput {
            label: p.display().to_string(),
            adapter: a,
            weight,
        })
        .collect();
    let layout = ModelLayout::open(&args.base)
        .with_context(|| format!("reading the base model {}", args.base.display()))?;
    for p in &layout.ignored {
        eprintln!(
            "warning: {} is not one of the model's weight files; copied unchanged, adapters not applied",
            p.display()
        );
    }
    let bar = bytes_bar(layout.weight_bytes(), "baking");
    let progress = |n: u64| bar.inc(n);
    let result = bake_model(&layout, &inputs, &args.output, &progress);
    bar.finish_and_clear();
    let changed = result.context("baking")?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "base": args.base.display().to_string(),
                "adapters": args.adapters.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
                "weights": weights,
                "layout": describe(&layout),
                "output": args.output.display().to_string(),
                "tensors": changed,
            }))?
        );
        return Ok(());
    }
    println!(
        "baked {} adapter(s) into {} tensors of {} ({}); copied the rest and the other files unchanged; wrote {}",
        args.adapters.len(),
        changed.len(),
        args.base.display(),
        describe(&layout),
        args.output.display()
    );
    Ok(())
}
