//! `loratool quantize`: re-encode a GGUF model or adapter to one ggml type.

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

use super::adapter_io::{resolve_input, save_output, SaveOp};
use super::fmt::human_bytes;
use super::progress::bytes_bar;
use crate::io::gguf::GgufFile;
use crate::io::imatrix::ImportanceMatrix;
use crate::ops::gguf_quantize::{quantize_gguf, Imatrix, QuantizeOptions, TensorQuant};
use crate::ops::quant_preset::QuantTarget;

#[derive(Args)]
pub struct QuantizeArgs {
    /// Input GGUF (a llama.cpp model or LoRA adapter).
    pub input: PathBuf,
    /// Target: a ggml type for every quantizable tensor (q8_0, q4_0, q4_1, q5_0, q5_1, q2_k,
    /// q3_k, q4_k, q5_k, q6_k, f16, bf16, f32), or a llama-quantize preset with its per-tensor
    /// mixture (q2_k_s, q3_k_s, q3_k_m, q3_k_l, q4_k_s, q4_k_m, q5_k_s, q5_k_m; see --mixture).
    #[arg(long = "type")]
    pub ty: String,
    /// Read --type as llama-quantize reads it (its mixture, as without --pure): q2_k, q4_0,
    /// q4_1, q5_0 and q5_1 become llama-quantize's presets, q4_k means Q4_K_M.
    #[arg(long)]
    pub mixture: bool,
    /// Importance matrix from llama-imatrix (GGUF or legacy .dat), as `llama-quantize --imatrix`.
    #[arg(long, value_name = "FILE")]
    pub imatrix: Option<PathBuf>,
    /// Output GGUF.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Re-quantize tensors that are already block-quantized (each pass adds rounding error).
    #[arg(long)]
    pub allow_requantize: bool,
    /// Print one JSON object (every tensor and the totals) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also add the output (a GGUF LoRA adapter) to the adapter store as name:tag, with its
    /// lineage.
    #[arg(long, value_name = "NAME:TAG")]
    pub save: Option<String>,
}

#[derive(Serialize)]
struct Report<'a> {
    input: String,
    output: String,
    target: String,
    bytes_before: u64,
    bytes_after: u64,
    tensors: &'a [TensorQuant],
}

pub fn run(args: QuantizeArgs) -> Result<()> {
    let input = resolve_input(&args.input)?;
    let file =
        GgufFile::open(&input.path).with_context(|| format!("reading {}", args.input.display()))?;
    let total: u64 = file.tensors.values().map(|t| t.byte_len).sum();
    let bar = bytes_bar(total, "quantizing");
    let progress = |n: u64| bar.inc(n);
    let target = QuantTarget::parse(&args.ty, args.mixture)?;
    let matrix = match &args.imatrix {
        Some(p) => Some(ImportanceMatrix::open(p)?),
        None => None,
    };
    let imatrix_file = args.imatrix.as_ref().map(|p| p.display().to_string());
    let opts = QuantizeOptions {
        target,
        allow_requantize: args.allow_requantize,
        imatrix: matrix
            .as_ref()
            .zip(imatrix_file.as_deref())
            .map(|(matrix, file)| Imatrix { matrix, file }),
    };
    let result = quantize_gguf(&file, &args.output, opts, &progress);
    bar.finish_and_clear();
    let tensors = result.with_context(|| format!("quantizing {}", args.input.display()))?;
    save_output(
        args.save.as_deref(),
        &args.output,
        Some(crate::adapter::Format::Gguf),
        SaveOp {
            operation: "quantize",
            summary: format!("quantize({})", target.name()),
            parameters: vec![
                ("type", target.name().into()),
                ("allow_requantize", args.allow_requantize.into()),
            ],
            inputs: std::slice::from_ref(&input.source),
        },
    )?;
    let before = std::fs::metadata(&input.path).map_or(0, |m| m.len());
    let after = std::fs::metadata(&args.output).map_or(0, |m| m.len());
    if args.json {
        let r = Report {
            input: args.input.display().to_string(),
            output: args.output.display().to_string(),
            target: target.name(),
            bytes_before: before,
            bytes_after: after,
            tensors: &tensors,
        };
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let mut by_change: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for t in &tensors {
        *by_change.entry((t.from, t.to)).or_default() += 1;
    }
    for ((from, to), n) in &by_change {
        let verb = if from == to { "kept" } else { "→" };
        if from == to {
            println!("  {n:>5} tensors {verb} {from}");
        } else {
            println!("  {n:>5} tensors {from} {verb} {to}");
        }
    }
    let fallbacks: Vec<&TensorQuant> = tensors.iter().filter(|t| t.note.is_some()).collect();
    if let Some(first) = fallbacks.first() {
        println!(
            "  {} tensors not at {} (e.g. {}: {}, stored as {})",
            fallbacks.len(),
            target.name(),
            first.name,
            first.note.as_deref().unwrap_or_default(),
            first.to
        );
    }
    println!(
        "quantized {} to {}: {} → {} ({:.1}%), wrote {}",
        args.input.display(),
        target.name(),
        human_bytes(before),
        human_bytes(after),
        if before > 0 {
            after as f64 * 100.0 / before as f64
        } else {
            0.0
        },
        args.output.display()
    );
    Ok(())
}
