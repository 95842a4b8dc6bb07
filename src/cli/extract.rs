//! `loratool extract`: a LoRA from the difference between a fine-tune and its base.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use std::path::PathBuf;

use super::adapter_io::{save_output, write_output, GgufTarget, SaveOp};
use super::convert::{parse_dtype, parse_format};
use super::progress::bytes_bar;
use super::resize::{rank_rule, Method};
use crate::adapter::Format;
use crate::ops::extract::{extract, EmbeddingMode, ExtractOptions};
use crate::ops::model_layout::{LayoutKind, ModelLayout};
use crate::tensor::DType;

#[derive(Clone, Copy, ValueEnum)]
pub enum Embeddings {
    /// An embedding LoRA (and lm_head as a linear LoRA).
    Lora,
    /// The full tuned tensors, as PEFT modules_to_save.
    Full,
    /// Leave them out.
    Skip,
}

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
    /// Rank of every module; with --method, the largest rank allowed.
    #[arg(long)]
    pub rank: usize,
    /// Choose each module's rank from its singular values.
    #[arg(long, value_enum, requires = "param")]
    pub method: Option<Method>,
    /// The --method threshold.
    #[arg(long, requires = "method")]
    pub param: Option<f64>,
    /// Skip weights whose largest absolute change is at most this.
    #[arg(long, default_value_t = 1e-6)]
    pub min_diff: f64,
    /// A full thin SVD (in f64) per module instead of the randomized one (slower; exact truncation).
    #[arg(long)]
    pub exact: bool,
    /// What to do with token embeddings and lm_head.
    #[arg(long, value_enum, default_value = "lora")]
    pub embeddings: Embeddings,
    /// Output adapter.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Output format. Default: peft for a Hugging Face model, diffusers for a diffusers pipeline,
    /// kohya for a single-file SD checkpoint.
    #[arg(long, value_parser = parse_format)]
    pub to: Option<Format>,
    /// Factor dtype (default f32).
    #[arg(long, value_parser = parse_dtype)]
    pub dtype: Option<DType>,
    /// Seed of the randomized SVD.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also add the output to the adapter store as name:tag, with its lineage (the two model
    /// paths and the settings; models are not store inputs, so no input digests).
    #[arg(long, value_name = "NAME:TAG")]
    pub save: Option<String>,
}

pub fn run(args: ExtractArgs) -> Result<()> {
    let rule = rank_rule(args.method, args.param)?;
    if !(args.min_diff.is_finite() && args.min_diff >= 0.0) {
        bail!("--min-diff must be a non-negative number");
    }
    let base = ModelLayout::open(&args.base)
        .with_context(|| format!("reading the base model {}", args.base.display()))?;
    let tuned = ModelLayout::open(&args.tuned)
        .with_context(|| format!("reading the fine-tuned model {}", args.tuned.display()))?;
    let to = args.to.unwrap_or(match base.kind {
        LayoutKind::Pipeline if base.family.is_some() => Format::Diffusers,
        LayoutKind::Checkpoint(_) => Format::Kohya,
        _ => Format::Peft,
    });
    let opts = ExtractOptions {
        rank: args.rank,
        rule,
        min_diff: args.min_diff,
        exact: args.exact,
        embeddings: match args.embeddings {
            Embeddings::Lora => EmbeddingMode::Lora,
            Embeddings::Full => EmbeddingMode::Full,
            Embeddings::Skip => EmbeddingMode::Skip,
        },
        dtype: args.dtype.unwrap_or(DType::F32),
        seed: args.seed,
    };
    let bar = bytes_bar(tuned.primary_bytes(), "extracting");
    let progress = |n: u64| bar.inc(n);
    let result = extract(&base, &tuned, &opts, &progress);
    bar.finish_and_clear();
    let (adapter, report) = result.context("extracting")?;
    let written = write_output(&adapter, to, &args.output, GgufTarget::default())?;
    save_output(
        args.save.as_deref(),
        &args.output,
        Some(to),
        SaveOp {
            operation: "extract",
            summary: format!(
                "extract(rank {}{}, from {} − {})",
                args.rank,
                if args.exact { ", exact" } else { "" },
                args.tuned.display(),
                args.base.display()
            ),
            parameters: vec![
                ("base", args.base.display().to_string().into()),
                ("tuned", args.tuned.display().to_string().into()),
                ("rank", args.rank.into()),
                ("param", args.param.into()),
                ("exact", args.exact.into()),
                ("min_diff", args.min_diff.into()),
                ("seed", args.seed.into()),
            ],
            inputs: &[],
        },
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let width = super::fmt::column_width(report.modules.iter().map(|m| m.path.as_str()), 6);
    println!("{:<width$}  {:>4}  {:>9}", "module", "rank", "fro kept");
    for m in &report.modules {
        println!(
            "{:<width$}  {:>4}  {:>8.2}%",
            m.path,
            m.rank,
            m.fro_retained * 100.0
        );
    }
    if !report.changed_not_lora.is_empty() {
        eprintln!(
            "warning: {} changed tensors cannot be carried by a LoRA and were left out: {}",
            report.changed_not_lora.len(),
            report.changed_not_lora.join(", ")
        );
    }
    println!(
        "extracted {} modules ({} full tensors, {} unchanged skipped), overall relative error {:.2e}; wrote {} ({}, {})",
        report.modules.len(),
        report.full.len(),
        report.unchanged,
        report.overall_rel_error,
        args.output.display(),
        to,
        super::fmt::human_bytes(written.bytes)
    );
    Ok(())
}
