//! `loratool quantize`: arguments and rendering; the work is `app::quantize`.

use super::args::{JsonArg, SaveArgs};
use super::fmt::human_bytes;
use crate::app::quantize::{QuantizeOutcome, QuantizeRequest};
use crate::app::{InputRef, Session};
use crate::ops::gguf_quantize::TensorQuant;
use crate::ops::quant_preset::QuantTarget;
use anyhow::Result;
use clap::Args;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Args)]
pub struct QuantizeArgs {
    /// Input GGUF (a llama.cpp model or LoRA adapter, or a stored GGUF adapter's name:tag).
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
    #[command(flatten)]
    pub json: JsonArg,
    /// Also add the output (a GGUF LoRA adapter) to the adapter store as name:tag, with its
    /// lineage.
    #[command(flatten)]
    pub save: SaveArgs,
}

pub fn run(session: &Session<'_>, args: QuantizeArgs) -> Result<()> {
    let outcome = session.quantize(&QuantizeRequest {
        input: InputRef::from_path(&args.input)?,
        target: QuantTarget::parse(&args.ty, args.mixture)?,
        allow_requantize: args.allow_requantize,
        imatrix: args.imatrix,
        output: args.output,
        save: args.save.reference()?,
    })?;
    super::print_saved(outcome.saved.as_ref());
    if args.json.json {
        return super::print_json(&outcome);
    }
    if super::quiet() {
        return Ok(());
    }
    print_report(&outcome);
    Ok(())
}

fn print_report(o: &QuantizeOutcome) {
    let target = &o.target;
    let mut by_change: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for t in &o.tensors {
        *by_change.entry((t.from, t.to)).or_default() += 1;
    }
    for ((from, to), n) in &by_change {
        if from == to {
            println!("  {n:>5} tensors kept {from}");
        } else {
            println!("  {n:>5} tensors {from} → {to}");
        }
    }
    let fallbacks: Vec<&TensorQuant> = o.tensors.iter().filter(|t| t.note.is_some()).collect();
    if let Some(first) = fallbacks.first() {
        println!(
            "  {} tensors not at {} (e.g. {}: {}, stored as {})",
            fallbacks.len(),
            target,
            first.name,
            first.note.as_deref().unwrap_or_default(),
            first.to
        );
    }
    let (before, after) = (o.bytes_before, o.bytes_after);
    println!(
        "quantized {} to {}: {} → {} ({:.1}%), wrote {}",
        o.input,
        target,
        human_bytes(before),
        human_bytes(after),
        if before > 0 {
            after as f64 * 100.0 / before as f64
        } else {
            0.0
        },
        o.output
    );
}
