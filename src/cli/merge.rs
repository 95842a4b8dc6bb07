//! `loratool merge`: combine several adapters into one.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde::Serialize;
use std::path::PathBuf;

use super::adapter_io::{
    load_base, output_format, read_input_traced, save_output, write_output, GgufTarget, SaveOp,
};
use super::convert::{parse_dtype, parse_format};
use super::progress::modules_bar;
use crate::adapter::kohya::note_merge;
use crate::adapter::{Adapter, Format};
use crate::ops::merge::{
    merge_with_progress, MajoritySign, MergeInput, MergeMethod, MergeOptions, ModuleMerge,
};
use crate::tensor::DType;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Method {
    /// Exact weighted sum of the deltas, re-factored to its true rank (or optimally to --rank).
    Sum,
    /// Concatenated factors: rank Σrᵢ, exact (PEFT's `cat`).
    Cat,
    /// sd-scripts svd_merge_lora: truncated SVD to --rank, factors clamped at --clamp-quantile.
    Svd,
    /// TIES on each module's dense delta, re-factored to --rank.
    Ties,
    /// DARE (random drop, rescale) then linear sum, re-factored to --rank.
    #[value(name = "dare_linear", alias = "dare-linear")]
    DareLinear,
    /// DARE then TIES sign election, re-factored to --rank.
    #[value(name = "dare_ties", alias = "dare-ties")]
    DareTies,
    /// Magnitude pruning then linear sum, re-factored to --rank.
    #[value(name = "magnitude_prune", alias = "magnitude-prune")]
    MagnitudePrune,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Sign {
    /// Sign of the sum of the values (PEFT's and mergekit's default).
    Total,
    /// Sign held by more of the inputs.
    Frequency,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
pub enum Compat {
    /// PEFT add_weighted_adapter: factor-wise combination with its cross terms.
    Peft,
}

#[derive(Args)]
pub struct MergeArgs {
    /// Input adapters (any mix of PEFT, diffusers and kohya).
    #[arg(required = true, num_args = 2.., value_name = "ADAPTER")]
    pub inputs: Vec<PathBuf>,
    /// One weight per input, comma-separated (negative subtracts); default 1 each.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub weights: Vec<f64>,
    /// How the inputs are combined.
    #[arg(long, value_enum, default_value = "sum")]
    pub method: Method,
    /// Target rank (required for svd; for sum, truncates optimally; for ties/dare/magnitude_prune
    /// the default is the largest input rank of each module).
    #[arg(long)]
    pub rank: Option<usize>,
    /// Target rank for 3x3 convolutions (default: --rank).
    #[arg(long)]
    pub conv_rank: Option<usize>,
    /// svd: clamp both factors at this signed quantile of their values, or `none`. Default 0.99
    /// (sd-scripts); with --compat peft, none (PEFT does not clamp).
    #[arg(long)]
    pub clamp_quantile: Option<String>,
    /// ties / dare / magnitude_prune: fraction of entries kept.
    #[arg(long)]
    pub density: Option<f64>,
    /// ties / dare_ties: how the sign is elected.
    #[arg(long, value_enum, default_value = "total")]
    pub majority_sign: Sign,
    /// Seed for DARE's random drop (same seed, same output).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Reproduce a reference tool's results instead of the exact method.
    #[arg(long, value_enum)]
    pub compat: Option<Compat>,
    /// The base model (config.json or GGUF), for GGUF adapters in or out (see `convert --base`).
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// Output path.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Output format (default: the first input's).
    #[arg(long, value_parser = parse_format)]
    pub to: Option<Format>,
    /// Factor dtype of the output (default: the first input's).
    #[arg(long, value_parser = parse_dtype)]
    pub dtype: Option<DType>,
    /// Drop keys loratool cannot represent, with a warning.
    #[arg(long)]
    pub skip_unknown: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also add the output to the adapter store as name:tag, with its lineage.
    #[arg(long, value_name = "NAME:TAG")]
    pub save: Option<String>,
}

#[derive(Serialize)]
struct Report<'a> {
    method: &'static str,
    compat: Option<&'static str>,
    weights: &'a [f64],
    inputs: Vec<String>,
    output: String,
    format: Format,
    modules: &'a [ModuleMerge],
    params: usize,
    bytes: u64,
}

impl Method {
    fn library(self) -> MergeMethod {
        match self {
            Method::Sum => MergeMethod::Sum,
            Method::Cat => MergeMethod::Cat,
            Method::Svd => MergeMethod::Svd,
            Method::Ties => MergeMethod::Ties,
            Method::DareLinear => MergeMethod::DareLinear,
            Method::DareTies => MergeMethod::DareTies,
            Method::MagnitudePrune => MergeMethod::MagnitudePrune,
        }
    }
}

fn parse_weights(args: &MergeArgs) -> Result<Vec<f64>> {
    if args.weights.is_empty() {
        return Ok(vec![1.0; args.inputs.len()]);
    }
    if args.weights.len() != args.inputs.len() {
        bail!(
            "--weights has {} values for {} inputs; give one weight per input, in input order",
            args.weights.len(),
            args.inputs.len()
        );
    }
    if let Some(w) = args.weights.iter().find(|w| !w.is_finite()) {
        bail!("--weights: {w} is not a finite number");
    }
    Ok(args.weights.clone())
}

fn parse_clamp(args: &MergeArgs) -> Result<Option<f64>> {
    let default = if args.compat == Some(Compat::Peft) {
        "none"
    } else {
        "0.99"
    };
    let text = args.clamp_quantile.as_deref().unwrap_or(default);
    if args.method != Method::Svd {
        if args.clamp_quantile.is_some() {
            bail!("--clamp-quantile applies to --method svd only");
        }
        return Ok(None);
    }
    if text == "none" {
        return Ok(None);
    }
    let q = text
        .parse::<f64>()
        .ok()
        .filter(|q| *q > 0.0 && *q <= 1.0)
        .with_context(|| format!("--clamp-quantile {text}: expected a number in (0, 1] or none"))?;
    Ok(Some(q))
}

/// The name sd-scripts lists an input under in `modelspec.merged_from`: its title, else its
/// file name without extension.
fn input_title(path: &std::path::Path, adapter: &Adapter) -> String {
    adapter
        .meta
        .source_metadata
        .get("modelspec.title")
        .cloned()
        .unwrap_or_else(|| {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string())
        })
}

pub fn run(args: MergeArgs) -> Result<()> {
    let weights = parse_weights(&args)?;
    let clamp = parse_clamp(&args)?;
    let base = load_base(args.base.as_deref())?;
    let (adapters, sources): (Vec<_>, Vec<_>) = args
        .inputs
        .iter()
        .map(|p| read_input_traced(p, None, args.skip_unknown, base.as_ref()))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .unzip();
    let to = output_format(&adapters[0], args.to)?;
    let inputs: Vec<MergeInput> = args
        .inputs
        .iter()
        .zip(&adapters)
        .map(|(p, a)| MergeInput {
            label: p.display().to_string(),
            adapter: a,
        })
        .collect();
    let opts = MergeOptions {
        method: args.method.library(),
        weights: weights.clone(),
        rank: args.rank,
        conv_rank: args.conv_rank,
        clamp_quantile: clamp,
        density: args.density,
        majority_sign: match args.majority_sign {
            Sign::Total => MajoritySign::Total,
            Sign::Frequency => MajoritySign::Frequency,
        },
        seed: args.seed,
        compat_peft: args.compat == Some(Compat::Peft),
        dtype: args.dtype,
    };
    let modules_total = adapters
        .iter()
        .flat_map(|a| a.layers.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let bar = modules_bar(modules_total, "merging");
    let done = || bar.inc(1);
    let result = merge_with_progress(&inputs, &opts, &done);
    bar.finish_and_clear();
    let (mut merged, modules) = result.context("merging")?;
    if to == Format::Kohya {
        let titles: Vec<String> = args
            .inputs
            .iter()
            .zip(&adapters)
            .map(|(p, a)| input_title(p, a))
            .collect();
        let title = args
            .output
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        note_merge(&mut merged, &title, &titles);
    }
    let report = write_output(
        &merged,
        to,
        &args.output,
        GgufTarget::with_base(base.as_ref()),
    )?;
    let method = opts.method.name();
    let weights_text: Vec<String> = weights.iter().map(|w| w.to_string()).collect();
    save_output(
        args.save.as_deref(),
        &args.output,
        Some(to),
        SaveOp {
            operation: "merge",
            summary: format!(
                "merge({method}{}, weights {})",
                if opts.compat_peft {
                    ", PEFT compat"
                } else {
                    ""
                },
                weights_text.join("/")
            ),
            parameters: vec![
                ("method", method.into()),
                ("weights", weights.clone().into()),
                ("rank", args.rank.into()),
                ("conv_rank", args.conv_rank.into()),
                ("clamp_quantile", opts.clamp_quantile.into()),
                ("density", args.density.into()),
                ("seed", args.seed.into()),
                ("compat_peft", opts.compat_peft.into()),
            ],
            inputs: &sources,
        },
    )?;
    if args.json {
        let r = Report {
            method,
            compat: opts.compat_peft.then_some("peft"),
            weights: &weights,
            inputs: args
                .inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            output: args.output.display().to_string(),
            format: to,
            modules: &modules,
            params: merged.param_count(),
            bytes: report.bytes,
        };
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    print_table(&modules);
    let mut ranks = std::collections::BTreeMap::<usize, usize>::new();
    for m in &modules {
        *ranks.entry(m.rank).or_default() += 1;
    }
    let ranks: Vec<String> = ranks
        .iter()
        .map(|(r, n)| format!("rank {r} ×{n}"))
        .collect();
    let weights: Vec<String> = weights.iter().map(|w| w.to_string()).collect();
    println!(
        "merged {} inputs ({method}{}, weights {}) into {} modules ({}), {} parameters; wrote {} ({}, {})",
        args.inputs.len(),
        if opts.compat_peft { ", PEFT compat" } else { "" },
        weights.join("/"),
        modules.len(),
        ranks.join(", "),
        super::fmt::group_digits(merged.param_count() as u64),
        args.output.display(),
        to,
        super::fmt::human_bytes(report.bytes)
    );
    Ok(())
}

fn print_table(modules: &[ModuleMerge]) {
    let width = super::fmt::column_width(modules.iter().map(|m| m.path.as_str()), 6);
    println!(
        "{:<width$}  {:>6} {:>4}  {:>9}",
        "module", "inputs", "rank", "fro kept"
    );
    for m in modules {
        let kept = m
            .retained_fro
            .map(|f| format!("{:>8.2}%", f * 100.0))
            .unwrap_or_else(|| format!("{:>9}", "-"));
        println!("{:<width$}  {:>6} {:>4}  {kept}", m.path, m.inputs, m.rank);
    }
}
