//! `loratool convert`: read an adapter in one format, write it in another.

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;

use super::adapter_io::{
    load_base, read_input_traced, save_output, write_output, GgufTarget, SaveOp,
};
use crate::adapter::Format;
use crate::quant::QuantType;
use crate::tensor::DType;

#[derive(Args)]
pub struct ConvertArgs {
    /// Input adapter: PEFT directory, diffusers or kohya .safetensors file, llama.cpp .gguf.
    pub input: PathBuf,
    /// Output format: peft (transformers models), diffusers (SD pipelines' load_lora_weights),
    /// kohya (sd-scripts, ComfyUI, A1111), gguf (llama.cpp, Ollama; needs --base).
    #[arg(long, value_parser = parse_format)]
    pub to: Format,
    /// Output path: a directory for peft; a .safetensors file for kohya; a directory or a
    /// .safetensors file for diffusers; a .gguf file for gguf.
    #[arg(short, long)]
    pub output: PathBuf,
    /// The base model, for GGUF: its Hugging Face config.json (or the directory holding it) or
    /// its GGUF file (then every module's shape is checked against it). Required to write GGUF,
    /// and to read a llama-arch GGUF adapter (its q/k rows are RoPE-permuted).
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// Store the factors in this dtype: f32, f16, bf16, or q8_0 for gguf (rows whose length is
    /// not a multiple of 32 fall back to f16, as llama.cpp's converter does). Default: as read.
    #[arg(long, value_parser = parse_storage)]
    pub dtype: Option<QuantType>,
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
    /// Also add the output to the adapter store as name:tag, with its lineage.
    #[arg(long, value_name = "NAME:TAG")]
    pub save: Option<String>,
}

pub fn parse_format(s: &str) -> Result<Format, String> {
    match s.to_ascii_lowercase().as_str() {
        "peft" => Ok(Format::Peft),
        "kohya" => Ok(Format::Kohya),
        "diffusers" => Ok(Format::Diffusers),
        "gguf" => Ok(Format::Gguf),
        _ => Err(format!(
            "unknown format '{s}' (expected peft, diffusers, kohya or gguf)"
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

/// f32, f16, bf16 or q8_0 (the last for GGUF only).
pub fn parse_storage(s: &str) -> Result<QuantType, String> {
    match s.to_ascii_lowercase().as_str() {
        "q8_0" => Ok(QuantType::Q8_0),
        _ => parse_dtype(s).map(|d| match d {
            DType::F16 => QuantType::F16,
            DType::BF16 => QuantType::BF16,
            _ => QuantType::F32,
        }),
    }
    .map_err(|_| format!("unsupported dtype '{s}' (expected f32, f16, bf16, or q8_0 for gguf)"))
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
    let base = load_base(args.base.as_deref())?;
    let (mut adapter, source) =
        read_input_traced(&args.input, args.from, args.skip_unknown, base.as_ref())?;
    let gguf_dtype = match (args.to, args.dtype) {
        (Format::Gguf, d) => d,
        (_, Some(QuantType::Q8_0)) => bail!("--dtype q8_0 applies to --to gguf only"),
        (_, Some(q)) => {
            let d = match q {
                QuantType::F16 => DType::F16,
                QuantType::BF16 => DType::BF16,
                _ => DType::F32,
            };
            adapter = adapter.cast(d).context("casting the factors")?;
            None
        }
        (_, None) => None,
    };
    let target = GgufTarget {
        base: base.as_ref(),
        dtype: gguf_dtype,
    };
    let report = write_output(&adapter, args.to, &args.output, target)?;
    let dtype = args.dtype.map(|d| d.name());
    save_output(
        args.save.as_deref(),
        &args.output,
        Some(args.to),
        SaveOp {
            operation: "convert",
            summary: match dtype {
                Some(d) => format!("convert(to {}, dtype {d})", args.to),
                None => format!("convert(to {})", args.to),
            },
            parameters: vec![("to", args.to.name().into()), ("dtype", dtype.into())],
            inputs: &[source],
        },
    )?;
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
