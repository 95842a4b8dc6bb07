//! `loratool merge`: combine several adapters into one.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde::Serialize;
use std::path::PathBuf;

use super::adapter_io::{output_format, read_input, write_output};
use super::convert::{parse_dtype, parse_format};
use crate::adapter::kohya::python_float_str;
use crate::adapter::Format;
use crate::ops::merge::{merge, MajoritySign, MergeInput, MergeMethod, MergeOptions, ModuleMerge};
use crate::tensor::DType;

#[derive(Clone, Copy, ValueEnum)]
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
    Total,
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
    #[arg(required = true, num_args = 2..)]
    pub inputs: Vec<PathBuf>,
    /// One weight per input, comma-separated (negative subtracts); default 1 each.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub weights: Vec<f64>,
    #[arg(long, value_enum, default_value = "sum")]
    pub method: Method,
    /// Target rank (required for svd; for sum, truncates optimally; for ties/dare/magnitude_prune
    /// the default is the largest input rank of each module).
    #[arg(long)]
    pub rank: Option<usize>,
    /// Target rank for 3x3 convolutions (default: --rank).
    #[arg(long)]
    pub conv_rank: Option<usize>,
    /// svd: clamp both factors at this signed quantile of their values (sd-scripts: 0.99);
    /// `none` to disable.
    #[arg(long, default_value = "0.99")]
    pub clamp_quantile: String,
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
}

#[derive(Serialize)]
struct Report<'a> {
    method: &'static str,
    weights: &'a [f64],
    inputs: Vec<String>,
    output: String,
    format: Format,
    modules: &'a [ModuleMerge],
    bytes: u64,
}

fn method_name(m: Method) -> &'static str {
    match m {
        Method::Sum => "sum",
        Method::Cat => "cat",
        Method::Svd => "svd",
        Method::Ties => "ties",
        Method::DareLinear => "dare_linear",
        Method::DareTies => "dare_ties",
        Method::MagnitudePrune => "magnitude_prune",
    }
}

pub fn run(args: MergeArgs) -> Result<()> {
    let weights = if args.weights.is_empty() {
        vec![1.0; args.inputs.len()]
    } else {
        args.weights.clone()
    };
    if weights.len() != args.inputs.len() {
        bail!(
            "--weights has {} values for {} inputs",
            weights.len(),
            args.inputs.len()
        );
    }
    if let Some(w) = weights.iter().find(|w| !w.is_finite()) {
        bail!("weight {w} is not a finite number");
    }
    let clamp = match args.clamp_quantile.as_str() {
        "none" => None,
        q => {
            let q: f64 = q
                .parse()
                .ok()
                .filter(|q: &f64| *q > 0.0 && *q <= 1.0)
                .with_context(|| format!("--clamp-quantile {q}: expected a number in (0, 1] or none"))?;
            Some(q)
        }
    };
    let adapters = args
        .inputs
        .iter()
        .map(|p| read_input(p, None, args.skip_unknown))
        .collect::<Result<Vec<_>>>()?;
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
    let method = match args.method {
        Method::Sum => MergeMethod::Sum,
        Method::Cat => MergeMethod::Cat,
        Method::Svd => MergeMethod::Svd,
        Method::Ties => MergeMethod::Ties,
        Method::DareLinear => MergeMethod::DareLinear,
        Method::DareTies => MergeMethod::DareTies,
        Method::MagnitudePrune => MergeMethod::MagnitudePrune,
    };
    let opts = MergeOptions {
        method,
        weights: weights.clone(),
        rank: args.rank,
        conv_rank: args.conv_rank,
        clamp_quantile: if args.method == Method::Svd { clamp } else { None },
        density: args.density,
        majority_sign: match args.majority_sign {
            Sign::Total => MajoritySign::Total,
            Sign::Frequency => MajoritySign::Frequency,
        },
        seed: args.seed,
        compat_peft: args.compat == Some(Compat::Peft),
    };
    let (mut merged, modules) = merge(&inputs, &opts).context("merging")?;
    if let Some(d) = args.dtype {
        merged = merged.cast(d).context("casting the factors")?;
    }
    if to == Format::Kohya {
        note_merge_metadata(&mut merged, &modules);
    }
    let report = write_output(&merged, to, &args.output)?;
    if args.json {
        let r = Report {
            method: method_name(args.method),
            weights: &weights,
            inputs: args.inputs.iter().map(|p| p.display().to_string()).collect(),
            output: args.output.display().to_string(),
            format: to,
            modules: &modules,
            bytes: report.bytes,
        };
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let ranks: std::collections::BTreeMap<usize, usize> =
        modules.iter().fold(Default::default(), |mut m, x| {
            *m.entry(x.rank).or_insert(0) += 1;
            m
        });
    let ranks: Vec<String> = ranks.iter().map(|(r, n)| format!("r={r} ×{n}")).collect();
    println!(
        "merged {} inputs ({}, weights {}) into {} modules [{}]: wrote {} ({}, {})",
        args.inputs.len(),
        method_name(args.method),
        weights
            .iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
            .join("/"),
        modules.len(),
        ranks.join(", "),
        args.output.display(),
        to,
        super::fmt::human_bytes(report.bytes)
    );
    Ok(())
}

impl PartialEq for Method {
    fn eq(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

/// kohya metadata for a merged file: the merged ranks and alphas (sd-scripts' merge tools write
/// the minimum keys with the new dim and alpha, or "Dynamic").
fn note_merge_metadata(merged: &mut crate::adapter::Adapter, modules: &[ModuleMerge]) {
    let one = |v: Vec<String>| -> String {
        match v.split_first() {
            Some((f, rest)) if rest.iter().all(|x| x == f) => f.clone(),
            Some(_) => "Dynamic".into(),
            None => "Dynamic".into(),
        }
    };
    let dim = one(modules.iter().map(|m| m.rank.to_string()).collect());
    let alpha = one(
        merged
            .layers
            .values()
            .map(|l| python_float_str(l.alpha))
            .collect(),
    );
    let md = &mut merged.meta.source_metadata;
    md.insert("ss_network_dim".into(), dim);
    md.insert("ss_network_alpha".into(), alpha);
    // the inputs' conv_dim/conv_alpha no longer describe the result: the writer recomputes them
    md.shift_remove("ss_network_args");
}
