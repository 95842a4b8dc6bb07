//! `loratool convert`: read an adapter in one format, write it in another.

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;

use super::progress::bytes_bar;
use crate::adapter::detect::read_adapter;
use crate::adapter::{diffusers, kohya, peft, Adapter, Format, ReadOptions};
use crate::io::WriteReport;
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

/// Write `adapter` in `to` format, with a progress bar by bytes.
pub fn write_adapter(
    adapter: &Adapter,
    to: Format,
    output: &std::path::Path,
) -> Result<WriteReport> {
    let total: u64 = adapter
        .layers
        .values()
        .map(|l| (l.param_count() * l.dtype().size()) as u64)
        .sum();
    let bar = bytes_bar(total, "writing");
    let progress = |n: u64| bar.inc(n);
    let report = match to {
        Format::Peft => peft::write(adapter, output, &progress),
        Format::Kohya => kohya::write(adapter, output, &progress),
        Format::Diffusers => diffusers::write(adapter, output, &progress),
    };
    bar.finish_and_clear();
    report.with_context(|| format!("writing {} as {to}", output.display()))
}

pub fn run(args: ConvertArgs) -> Result<()> {
    if args.to == Format::Kohya && args.output.is_dir() {
        bail!(
            "{} is a directory; kohya output is one .safetensors file (e.g. -o {}/lora.safetensors)",
            args.output.display(),
            args.output.display()
        );
    }
    let opts = ReadOptions {
        skip_unknown: args.skip_unknown,
    };
    let mut adapter = read_adapter(&args.input, args.from, opts)
        .with_context(|| format!("reading {}", args.input.display()))?;
    super::print_warnings(&adapter.meta.warnings);
    if let Some(d) = args.dtype {
        adapter = adapter.cast(d).context("casting the factors")?;
    }
    let report = write_adapter(&adapter, args.to, &args.output)?;
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
