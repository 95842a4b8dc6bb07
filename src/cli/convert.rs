//! `loratool convert`: read an adapter in one format, write it in another.

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;

use super::adapter_io::{read_input, write_output};
use crate::adapter::Format;
use crate::tensor::DType;

#[derive(Args)]
pub struct ConvertArgs {
    /// Input adapter: PEFT directory, diffusers or kohya .safetensors file.
    pub input: PathBuf,
    /// Output format: peft (transformers models), diffusers (SD pipelines' load_lora_weights),
    /// kohya (sd-scripts, ComfyUI, A1111).
    #[arg(long, value_parser = parse_format)]
    pub to: Format,
    /// Output path: a directory for peft; a .safetensors file for kohya; a directory or a
    /// .safetensors file for diffusers.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Store the factors in this dtype (f32, f16, bf16; default: as read).
    #[arg(long, value_parser = parse_dtype)]
    pub dtype: Option<DType>,
    /// Read the input as this format instead of detecting it.
    #[arg(long, value_parser = parse_format)]
    pub from: Option<Format>,
    /// Drop keys loratool cannot represent (LyCORIS, unmapped names) with a warning instead of
    /// failing.
    #[arg(long)]
    pub skip_unknown: bool,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn parse_format(s: &str) -> Result<Format, String> {
    match s.to_ascii_lowercase().as_str() {
        "peft" => Ok(Format::Peft),
        "kohya" => Ok(Format::Kohya),
        "diffusers" => Ok(Format::Diffusers),
        _ => Err(format!(
            "unknown format '{s}' (expected peft, diffusers or kohya)"
        )),
    }
}

pub fn parse_dtype(s: &str) -> Result<DType, String> {
    match DType::parse_user(s) {
        Some(d @ (DType::F32 | DType::F16 | DType::BF16)) => Ok(d),
        _ => Err(format!(
            "unsupported dtype '{s}' (expected f32, f16 or bf16)"
        )),
    }
}

#[derive(Serialize)]
struct Summary {
    input: String,
    from: Format,
    output: String,
    to: Format,
    modules: usize,
    tensors: usize,
    bytes: u64,
    warnings: Vec<String>,
}

pub fn run(args: ConvertArgs) -> Result<()> {
    let mut adapter = read_input(&args.input, args.from, args.skip_unknown)?;
    if let Some(d) = args.dtype {
        adapter = adapter.cast(d).context("casting the factors")?;
    }
    let report = write_output(&adapter, args.to, &args.output)?;
    let from = adapter
        .meta
        .source_format
        .context("reader did not record the format")?;
    let summary = Summary {
        input: args.input.display().to_string(),
        from,
        output: args.output.display().to_string(),
        to: args.to,
        modules: adapter.layers.len(),
        tensors: report.tensors,
        bytes: report.bytes,
        warnings: adapter.meta.warnings.clone(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "converted {} modules {} → {}: {} ({} tensors, {})",
            summary.modules,
            from,
            args.to,
            summary.output,
            summary.tensors,
            super::fmt::human_bytes(summary.bytes)
        );
    }
    Ok(())
}
