//! `loratool extract`: arguments and rendering; the work is `app::extract`.

use super::args::{float_dtype, named, JsonArg, SaveArgs};
use super::fmt::{column_width, human_bytes};
use super::resize::RankArgs;
use crate::adapter::Format;
use crate::app::extract::{ExtractOutcome, ExtractRequest};
use crate::app::Session;
use crate::ops::extract::{EmbeddingMode, ExtractOptions};
use crate::tensor::DType;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct ExtractArgs {
    /// The base model: a Hugging Face model directory (or its model.safetensors or index), a
    /// diffusers pipeline directory, or a single-file SD1.5/SDXL checkpoint.
    #[arg(long)]
    pub base: PathBuf,
    /// The fine-tuned model, same architecture (any of the --base layouts; tensors are paired
    /// by their canonical names).
    #[arg(long)]
    pub tuned: PathBuf,
    #[command(flatten)]
    pub rank: RankArgs,
    /// Skip weights whose largest absolute change is at most this.
    #[arg(long, default_value_t = 1e-6)]
    pub min_diff: f64,
    /// A full thin SVD (in f64) per module instead of the randomized one (slower; exact truncation).
    #[arg(long)]
    pub exact: bool,
    /// What to do with token embeddings and lm_head.
    #[arg(long, value_parser = named::<EmbeddingMode>(), default_value = "lora")]
    pub embeddings: EmbeddingMode,
    /// Output adapter.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Output format. Default: peft for a Hugging Face model, diffusers for a diffusers pipeline,
    /// kohya for a single-file SD checkpoint.
    #[arg(long, value_parser = named::<Format>())]
    pub to: Option<Format>,
    /// Factor dtype (default f32).
    #[arg(long, value_parser = float_dtype)]
    pub dtype: Option<DType>,
    /// Seed of the randomized SVD.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub json: JsonArg,
    /// Also add the output to the adapter store as name:tag, with its lineage (the two model
    /// paths and the settings; models are not store inputs, so no input digests).
    #[command(flatten)]
    pub save: SaveArgs,
}

pub fn run(session: &Session<'_>, args: ExtractArgs) -> Result<()> {
    let outcome = session.extract(&ExtractRequest {
        options: ExtractOptions {
            rank: args.rank.rank,
            rule: args.rank.rule()?,
            min_diff: args.min_diff,
            exact: args.exact,
            embeddings: args.embeddings,
            dtype: args.dtype.unwrap_or(DType::F32),
            seed: args.seed,
        },
        base: args.base,
        tuned: args.tuned,
        output: args.output.clone(),
        to: args.to,
        save: args.save.reference()?,
    })?;
    super::print_saved(outcome.saved.as_ref());
    if args.json.json {
        return super::print_json(&outcome);
    }
    if super::quiet() {
        return Ok(());
    }
    print_report(&outcome, &args.output);
    Ok(())
}

fn print_report(outcome: &ExtractOutcome, output: &std::path::Path) {
    let report = &outcome.report;
    let width = column_width(report.modules.iter().map(|m| m.path.as_str()), 6);
    println!("{:<width$}  {:>4}  {:>9}", "module", "rank", "fro kept");
    for m in &report.modules {
        println!(
            "{:<width$}  {:>4}  {:>8.2}%",
            m.path,
            m.rank,
            m.fro_retained * 100.0
        );
    }
    println!(
        "extracted {} modules ({} full tensors, {} unchanged skipped), overall relative error {:.2e}; wrote {} ({}, {})",
        report.modules.len(),
        report.full.len(),
        report.unchanged,
        report.overall_rel_error,
        output.display(),
        outcome.format,
        human_bytes(outcome.bytes)
    );
}
