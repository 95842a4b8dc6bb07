//! `loratool bake`: arguments and rendering; the work is `app::bake`.

use super::args::JsonArg;
use super::fmt::human_bytes;
use crate::app::bake::{BakeOutcome, BakeRequest};
use crate::app::{InputRef, Session};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

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
    #[command(flatten)]
    pub json: JsonArg,
}

pub fn run(session: &Session<'_>, args: BakeArgs) -> Result<()> {
    let outcome = session.bake(&BakeRequest {
        base: args.base.clone(),
        adapters: args
            .adapters
            .iter()
            .map(|p| InputRef::from_path(p))
            .collect::<crate::app::Result<_>>()?,
        weights: args.weights,
        output: args.output,
        export_lora_compat: args.export_lora_compat,
    })?;
    if args.json.json {
        return super::print_json(&outcome);
    }
    if super::quiet() {
        return Ok(());
    }
    match &outcome {
        BakeOutcome::Gguf(b) => println!(
            "baked {} adapter(s) into {} of {} tensors ({} re-quantized to their own type); copied the rest byte for byte; wrote {} ({})",
            b.adapters.len(),
            b.tensors.len(),
            b.base_tensors,
            b.requantized(),
            b.output,
            human_bytes(b.bytes)
        ),
        BakeOutcome::Model(b) => println!(
            "baked {} adapter(s) into {} tensors of {} ({}); copied the rest and the other files unchanged; wrote {}",
            b.adapters.len(),
            b.tensors.len(),
            b.base,
            b.layout,
            b.output
        ),
    }
    Ok(())
}
