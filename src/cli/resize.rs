//! `loratool resize`: lower an adapter's rank, per module, without dense matrices.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde::Serialize;
use std::path::PathBuf;

use super::adapter_io::{
    load_base, output_format, read_input_traced, save_output, write_output, GgufTarget, SaveOp,
};
use super::convert::{parse_dtype, parse_format};
use super::progress::modules_bar;
use crate::adapter::kohya::{note_resize, ResizeNote};
use crate::adapter::Format;
use crate::linalg::{RankRule, SvSplit};
use crate::ops::resize::{resize_with_progress, ModuleResize, ResizeOptions};
use crate::tensor::DType;

// the variant names are the CLI values sd-scripts uses (sv_ratio, sv_fro, sv_cumulative)
#[allow(clippy::enum_variant_names)]
#[derive(Clone, Copy, ValueEnum)]
pub enum Method {
    /// Keep σ > σ_max / X.
    #[value(name = "sv_ratio", alias = "sv-ratio")]
    SvRatio,
    /// Smallest rank keeping a fraction X of the Frobenius norm.
    #[value(name = "sv_fro", alias = "sv-fro")]
    SvFro,
    /// Smallest rank keeping a fraction X of Σσ.
    #[value(name = "sv_cumulative", alias = "sv-cumulative")]
    SvCumulative,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::SvRatio => "sv_ratio",
            Method::SvFro => "sv_fro",
            Method::SvCumulative => "sv_cumulative",
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Split {
    /// All singular values on the up factor (sd-scripts).
    Up,
    /// √S on each factor.
    Sqrt,
}

#[derive(Args)]
pub struct ResizeArgs {
    /// Input adapter (PEFT directory, diffusers or kohya .safetensors).
    pub input: PathBuf,
    /// New rank; with --method, the largest rank allowed.
    #[arg(long)]
    pub rank: usize,
    /// New rank (or cap) for 3x3 convolutions; default: --rank.
    #[arg(long)]
    pub conv_rank: Option<usize>,
    /// Choose each module's rank from its singular values instead of a fixed rank.
    #[arg(long, value_enum, requires = "param")]
    pub method: Option<Method>,
    /// The --method threshold (ratio for sv_ratio, fraction in (0, 1] for sv_fro and sv_cumulative).
    #[arg(long, requires = "method")]
    pub param: Option<f64>,
    /// Choose ranks exactly as sd-scripts' resize_lora.py does (one more than needed for
    /// dynamic methods; fixed ranks above a module's rank kept as zero directions).
    #[arg(long)]
    pub kohya_compat: bool,
    /// Store this alpha on every module (the factors absorb the change); default keeps each
    /// module's scale: alpha · new_rank / old_rank.
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Where the singular values go.
    #[arg(long, value_enum, default_value = "up")]
    pub split: Split,
    /// The base model (config.json or GGUF), for GGUF adapters in or out (see `convert --base`).
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// Output path (format as the input unless --to).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Output format.
    #[arg(long, value_parser = parse_format)]
    pub to: Option<Format>,
    /// Factor dtype of the output (default: as read).
    #[arg(long, value_parser = parse_dtype)]
    pub dtype: Option<DType>,
    /// Read the input as this format.
    #[arg(long, value_parser = parse_format)]
    pub from: Option<Format>,
    /// Drop keys loratool cannot represent, with a warning.
    #[arg(long)]
    pub skip_unknown: bool,
    /// Print one JSON object (modules and summary) instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also add the output to the adapter store as name:tag, with its lineage.
    #[arg(long, value_name = "NAME:TAG")]
    pub save: Option<String>,
}

#[derive(Serialize)]
struct Summary {
    modules: usize,
    old_params: usize,
    new_params: usize,
    mean_fro_retained: f64,
    min_fro_retained: f64,
    max_rel_error: f64,
    output: String,
    format: Format,
    bytes: u64,
}

#[derive(Serialize)]
struct Report<'a> {
    modules: &'a [ModuleResize],
    summary: Summary,
}

/// The rank rule of `--method` and `--param` (shared with extract).
pub(super) fn rank_rule(method: Option<Method>, param: Option<f64>) -> Result<RankRule> {
    Ok(match (method, param) {
        (None, _) => RankRule::Fixed,
        (Some(m), Some(p)) => {
            if !(p.is_finite() && p > 0.0) {
                bail!("--param must be a positive number, got {p}");
            }
            match m {
                Method::SvRatio => RankRule::SvRatio(p),
                Method::SvFro => RankRule::SvFro(p),
                Method::SvCumulative => RankRule::SvCumulative(p),
            }
        }
        (Some(_), None) => bail!("--method needs --param"),
    })
}

pub fn run(args: ResizeArgs) -> Result<()> {
    let rule = rank_rule(args.method, args.param)?;
    let base = load_base(args.base.as_deref())?;
    let (adapter, source) =
        read_input_traced(&args.input, args.from, args.skip_unknown, base.as_ref())?;
    let to = output_format(&adapter, args.to)?;
    let opts = ResizeOptions {
        rank: args.rank,
        conv_rank: args.conv_rank,
        rule,
        kohya_compat: args.kohya_compat,
        alpha: args.alpha,
        split: match args.split {
            Split::Up => SvSplit::Up,
            Split::Sqrt => SvSplit::Sqrt,
        },
    };
    let old_params = adapter.param_count();
    let old_dim = adapter.layers.values().map(|l| l.rank()).max().unwrap_or(0);
    let bar = modules_bar(adapter.layers.len(), "resizing");
    let done = || bar.inc(1);
    let result = resize_with_progress(&adapter, &opts, &done);
    bar.finish_and_clear();
    let (mut resized, modules) = result.context("resizing")?;
    if let Some(d) = args.dtype {
        resized = resized.cast(d).context("casting the factors")?;
    }
    if to == Format::Kohya && resized.meta.source_format == Some(Format::Kohya) {
        let note = match args.method {
            None => ResizeNote::Fixed {
                new_rank: args.rank,
                new_conv_rank: args.conv_rank.unwrap_or(args.rank),
            },
            Some(m) => ResizeNote::Dynamic {
                method: m.name(),
                param: args.param.unwrap_or_default(),
            },
        };
        note_resize(&mut resized, old_dim, note);
    }
    let report = write_output(
        &resized,
        to,
        &args.output,
        GgufTarget::with_base(base.as_ref()),
    )?;
    let method = args.method.map(|m| m.name());
    save_output(
        args.save.as_deref(),
        &args.output,
        Some(to),
        SaveOp {
            operation: "resize",
            summary: match (method, args.param) {
                (Some(m), Some(p)) => format!("resize({m} {p}, max rank {})", args.rank),
                _ => format!("resize(rank {})", args.rank),
            },
            parameters: vec![
                ("rank", args.rank.into()),
                ("conv_rank", args.conv_rank.into()),
                ("method", method.into()),
                ("param", args.param.into()),
                ("alpha", args.alpha.into()),
            ],
            inputs: &[source],
        },
    )?;

    let fro: Vec<f64> = modules
        .iter()
        .map(|m| m.fro_retained)
        .filter(|x| x.is_finite())
        .collect();
    let summary = Summary {
        modules: modules.len(),
        old_params,
        new_params: resized.param_count(),
        mean_fro_retained: fro.iter().sum::<f64>() / (fro.len().max(1) as f64),
        min_fro_retained: fro.iter().copied().fold(f64::INFINITY, f64::min),
        max_rel_error: modules.iter().map(|m| m.rel_error).fold(0.0, f64::max),
        output: args.output.display().to_string(),
        format: to,
        bytes: report.bytes,
    };
    if args.json {
        let r = Report {
            modules: &modules,
            summary,
        };
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let width = super::fmt::column_width(modules.iter().map(|m| m.path.as_str()), 6);
    println!(
        "{:<width$}  {:>4} {:>4}  {:>9}  {:>9}",
        "module", "old", "new", "fro kept", "rel err"
    );
    for m in &modules {
        println!(
            "{:<width$}  {:>4} {:>4}  {:>8.2}%  {:>9.2e}",
            m.path,
            m.old_rank,
            m.new_rank,
            m.fro_retained * 100.0,
            m.rel_error
        );
    }
    println!(
        "resized {} modules: parameters {} → {}, mean Frobenius kept {:.2}% (min {:.2}%), max relative error {:.2e}; wrote {} ({}, {})",
        summary.modules,
        super::fmt::group_digits(summary.old_params as u64),
        super::fmt::group_digits(summary.new_params as u64),
        summary.mean_fro_retained * 100.0,
        summary.min_fro_retained * 100.0,
        summary.max_rel_error,
        summary.output,
        to,
        super::fmt::human_bytes(summary.bytes)
    );
    Ok(())
}
