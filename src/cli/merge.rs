//! `loratool merge`: arguments and rendering; the work is `app::merge`.

use super::args::{float_dtype, named, BaseArg, JsonArg, OutputArgs, SaveArgs, TableArg};
use super::fmt::{column_width, group_digits, human_bytes, largest_by, ATTENTION};
use crate::app::input::load_base;
use crate::app::merge::{clamp_quantile, method_label, MergeOutcome, MergeRequest};
use crate::app::{InputRef, Session};
use crate::ops::merge::{Compat, MajoritySign, MergeMethod, MergeOptions, ModuleMerge};
use crate::tensor::DType;
use anyhow::Result;
use clap::Args;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Args)]
pub struct MergeArgs {
    /// Input adapters (any mix of PEFT, diffusers, kohya and GGUF, or name:tag references).
    #[arg(required = true, num_args = 2.., value_name = "ADAPTER")]
    pub inputs: Vec<PathBuf>,
    /// One weight per input, comma-separated (negative subtracts); default 1 each.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub weights: Vec<f64>,
    /// How the inputs are combined.
    #[arg(long, value_parser = named::<MergeMethod>(), default_value = "sum")]
    pub method: MergeMethod,
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
    #[arg(long, value_parser = named::<MajoritySign>(), default_value = "total")]
    pub majority_sign: MajoritySign,
    /// Seed for DARE's random drop (same seed, same output).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Reproduce a reference tool's results instead of the exact method.
    #[arg(long, value_parser = named::<Compat>())]
    pub compat: Option<Compat>,
    #[command(flatten)]
    pub base: BaseArg,
    #[command(flatten)]
    pub out: OutputArgs,
    /// Factor dtype of the output (default: the first input's).
    #[arg(long, value_parser = float_dtype)]
    pub dtype: Option<DType>,
    /// Drop keys loratool cannot represent, with a warning.
    #[arg(long)]
    pub skip_unknown: bool,
    #[command(flatten)]
    pub json: JsonArg,
    #[command(flatten)]
    pub table: TableArg,
    #[command(flatten)]
    pub save: SaveArgs,
}

pub fn run(session: &Session<'_>, args: MergeArgs) -> Result<()> {
    let compat_peft = args.compat == Some(Compat::Peft);
    let options = MergeOptions {
        method: args.method,
        weights: args.weights.clone(),
        rank: args.rank,
        conv_rank: args.conv_rank,
        clamp_quantile: clamp_quantile(args.clamp_quantile.as_deref(), args.method, compat_peft)?,
        density: args.density,
        majority_sign: args.majority_sign,
        seed: args.seed,
        compat_peft,
        dtype: args.dtype,
    };
    let base = load_base(args.base.base.as_deref())?;
    let outcome = session.merge(&MergeRequest {
        inputs: args
            .inputs
            .iter()
            .map(|p| InputRef::from_path(p))
            .collect::<crate::app::Result<_>>()?,
        skip_unknown: args.skip_unknown,
        base: base.as_ref(),
        options: options.clone(),
        output: args.out.output,
        to: args.out.to,
        save: args.save.reference()?,
    })?;
    super::print_saved(outcome.saved.as_ref());
    if args.json.json {
        return super::print_json(&outcome);
    }
    if super::quiet() {
        return Ok(());
    }
    if args.table.table {
        print_table(&outcome.modules);
    } else {
        print_attention(&outcome.modules);
    }
    print_summary(&outcome, &options);
    Ok(())
}

fn print_summary(o: &MergeOutcome, options: &MergeOptions) {
    let mut ranks = BTreeMap::<usize, usize>::new();
    for m in &o.modules {
        *ranks.entry(m.rank).or_default() += 1;
    }
    let ranks: Vec<String> = ranks
        .iter()
        .map(|(r, n)| format!("rank {r} ×{n}"))
        .collect();
    let weights: Vec<String> = o.weights.iter().map(|w| w.to_string()).collect();
    println!(
        "merged {} inputs ({}, weights {}) into {} modules ({}), {} parameters; wrote {} ({}, {})",
        o.inputs.len(),
        method_label(options),
        weights.join("/"),
        o.modules.len(),
        ranks.join(", "),
        group_digits(o.params as u64),
        o.output,
        o.format,
        human_bytes(o.bytes)
    );
}

/// The few modules whose merged delta lost the most to the rank cut (lowest Frobenius norm
/// kept); nothing for exact methods.
fn print_attention(modules: &[ModuleMerge]) {
    let lossy: Vec<&ModuleMerge> = modules
        .iter()
        .filter(|m| m.retained_fro.is_some_and(|f| f < 1.0))
        .collect();
    if lossy.is_empty() {
        return;
    }
    let worst = largest_by(&lossy, ATTENTION, |m| -m.retained_fro.unwrap_or(1.0));
    println!(
        "lowest Frobenius norm kept ({} of the {} modules that lost something; --table for all):",
        worst.len(),
        lossy.len()
    );
    print_table(&worst.into_iter().copied().cloned().collect::<Vec<_>>());
}

fn print_table(modules: &[ModuleMerge]) {
    let width = column_width(modules.iter().map(|m| m.path.as_str()), 6);
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
