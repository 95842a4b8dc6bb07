//! `loratool resize`: arguments and rendering; the work is `app::resize`.

use super::args::{float_dtype, named, BaseArg, JsonArg, OutputArgs, ReadArgs, SaveArgs, TableArg};
use super::fmt::{column_width, group_digits, human_bytes, largest_by, ATTENTION};
use crate::app::input::load_base;
use crate::app::resize::{ResizeOutcome, ResizeRequest};
use crate::app::{InputRef, Session};
use crate::linalg::{RankMethod, RankRule, SvSplit};
use crate::ops::resize::{ModuleResize, ResizeOptions};
use crate::tensor::DType;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// `--rank`, `--method`, `--param`: shared by resize and extract.
#[derive(Args, Clone, Debug)]
pub struct RankArgs {
    /// Rank of every module; with --method, the largest rank allowed.
    #[arg(long)]
    pub rank: usize,
    /// Choose each module's rank from its singular values instead of a fixed rank.
    #[arg(long, value_parser = named::<RankMethod>(), requires = "param")]
    pub method: Option<RankMethod>,
    /// The --method threshold (ratio for sv_ratio, fraction in (0, 1] for sv_fro and sv_cumulative).
    #[arg(long, requires = "method")]
    pub param: Option<f64>,
}

impl RankArgs {
    pub fn rule(&self) -> Result<RankRule> {
        Ok(RankRule::from_method(self.method, self.param)?)
    }
}

#[derive(Args)]
pub struct ResizeArgs {
    /// Input adapter (PEFT directory, diffusers or kohya .safetensors, GGUF, or name:tag).
    pub input: PathBuf,
    #[command(flatten)]
    pub rank: RankArgs,
    /// New rank (or cap) for 3x3 convolutions; default: --rank.
    #[arg(long)]
    pub conv_rank: Option<usize>,
    /// Choose ranks exactly as sd-scripts' resize_lora.py does (one more than needed for
    /// dynamic methods; fixed ranks above a module's rank kept as zero directions).
    #[arg(long)]
    pub kohya_compat: bool,
    /// Store this alpha on every module (the factors absorb the change); default keeps each
    /// module's scale: alpha · new_rank / old_rank.
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Where the singular values go.
    #[arg(long, value_parser = named::<SvSplit>(), default_value = "up")]
    pub split: SvSplit,
    #[command(flatten)]
    pub base: BaseArg,
    #[command(flatten)]
    pub out: OutputArgs,
    /// Factor dtype of the output (default: as read).
    #[arg(long, value_parser = float_dtype)]
    pub dtype: Option<DType>,
    #[command(flatten)]
    pub read: ReadArgs,
    #[command(flatten)]
    pub json: JsonArg,
    #[command(flatten)]
    pub table: TableArg,
    #[command(flatten)]
    pub save: SaveArgs,
}

pub fn run(session: &Session<'_>, args: ResizeArgs) -> Result<()> {
    let base = load_base(args.base.base.as_deref())?;
    let outcome = session.resize(&ResizeRequest {
        input: InputRef::from_path(&args.input)?,
        from: args.read.from,
        skip_unknown: args.read.skip_unknown,
        base: base.as_ref(),
        options: ResizeOptions {
            rank: args.rank.rank,
            conv_rank: args.conv_rank,
            rule: args.rank.rule()?,
            kohya_compat: args.kohya_compat,
            alpha: args.alpha,
            split: args.split,
        },
        dtype: args.dtype,
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
        print_attention(&outcome);
    }
    let s = &outcome.summary;
    println!(
        "resized {} modules: parameters {} → {}, mean Frobenius kept {:.2}% (min {:.2}%), max relative error {:.2e}; wrote {} ({}, {})",
        s.modules,
        group_digits(s.old_params as u64),
        group_digits(s.new_params as u64),
        s.mean_fro_retained * 100.0,
        s.min_fro_retained * 100.0,
        s.max_rel_error,
        s.output,
        s.format,
        human_bytes(s.bytes)
    );
    Ok(())
}

/// The few modules that lost the most (largest relative error, which is also the lowest
/// Frobenius norm kept), and how many more there are.
fn print_attention(outcome: &ResizeOutcome) {
    let lossy: Vec<&ModuleResize> = outcome
        .modules
        .iter()
        .filter(|m| m.rel_error > 0.0)
        .collect();
    if lossy.is_empty() {
        println!("every module kept exactly (no singular value dropped)");
        return;
    }
    let worst = largest_by(&lossy, ATTENTION, |m| m.rel_error);
    println!(
        "largest errors ({} of the {} modules that lost something; --table for all):",
        worst.len(),
        lossy.len()
    );
    print_table(&worst.into_iter().copied().collect::<Vec<_>>());
}

fn print_table<M: std::borrow::Borrow<ModuleResize>>(modules: &[M]) {
    let modules: Vec<&ModuleResize> = modules.iter().map(|m| m.borrow()).collect();
    let width = column_width(modules.iter().map(|m| m.path.as_str()), 6);
    println!(
        "{:<width$}  {:>4} {:>4}  {:>9}  {:>9}",
        "module", "old", "new", "fro kept", "rel err"
    );
    for m in modules {
        println!(
            "{:<width$}  {:>4} {:>4}  {:>8.2}%  {:>9.2e}",
            m.path,
            m.old_rank,
            m.new_rank,
            m.fro_retained * 100.0,
            m.rel_error
        );
    }
}
