//! `loratool info`: arguments and rendering; the work is `app::info`. The adapter summary
//! block is shared with `show`, so both print an adapter the same way.

use super::args::{named, JsonArg};
use super::fmt::{group_digits, human_bytes, trim_float};
use crate::adapter::summary::AdapterSummary;
use crate::adapter::Format;
use crate::app::info::{GgufContainer, Info, InfoRequest, ModelInfo};
use crate::app::spectrum::SpectrumRequest;
use crate::app::{InputRef, Session};
use crate::ops::spectrum::Spectrum;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct InfoArgs {
    /// Adapter (PEFT directory, diffusers or kohya .safetensors, GGUF, or name:tag) or base
    /// model (.safetensors file, sharded index.json, model directory, or GGUF).
    pub path: PathBuf,
    #[command(flatten)]
    pub json: JsonArg,
    /// Read the adapter as this format instead of detecting it.
    #[arg(long, value_parser = named::<Format>())]
    pub from: Option<Format>,
    /// Also print, per block group, the fraction of the Frobenius norm kept at ranks 1, 2, 4,
    /// 8, 16, 32 (exact, from the factors).
    #[arg(long)]
    pub spectrum: bool,
    /// Draw energy kept versus rank per block group into this .svg or .png file (implies
    /// --spectrum).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// The `resize --method sv_fro --param X` threshold whose ranks the spectrum and the plot
    /// mark.
    #[arg(long, value_name = "X", default_value_t = 0.9)]
    pub sv_fro: f64,
}

pub fn run(session: &Session<'_>, args: InfoArgs) -> Result<()> {
    let info = session.info(&InfoRequest {
        input: InputRef::from_path(&args.path)?,
        from: args.from,
    })?;
    let spectrum = if args.spectrum || args.plot.is_some() {
        if !matches!(info, Info::Adapter(_)) {
            anyhow::bail!(
                "--spectrum and --plot describe an adapter; {} is a base model",
                args.path.display()
            );
        }
        Some(session.spectrum(&SpectrumRequest {
            input: InputRef::from_path(&args.path)?,
            from: args.from,
            sv_fro: args.sv_fro,
            plot: args.plot.clone(),
        })?)
    } else {
        None
    };
    if args.json.json {
        let mut v = serde_json::to_value(&info)?;
        if let (Some(sp), Some(obj)) = (&spectrum, v.as_object_mut()) {
            obj.insert("spectrum".into(), serde_json::to_value(sp)?);
        }
        return super::print_json(&v);
    }
    match &info {
        Info::Adapter(a) => {
            println!("{}", a.path);
            print_summary(&a.summary, Some(a.file_bytes));
            if let Some(g) = &a.gguf {
                print_gguf(g);
            }
        }
        Info::Model(m) => print_model(m),
    }
    if let Some(sp) = &spectrum {
        print_spectrum(sp);
    }
    if let Some(p) = &args.plot {
        println!("wrote {}", p.display());
    }
    Ok(())
}

fn print_spectrum(s: &Spectrum) {
    let width = super::fmt::column_width(s.groups.iter().map(|g| g.group.as_str()), 11);
    println!(
        "  spectrum    fraction of ||dW||_F kept at rank (per block group; sv_fro {} picks):",
        s.sv_fro
    );
    let ranks: String = s
        .ranks
        .iter()
        .map(|r| format!("{:>7}", format!("r{r}")))
        .collect();
    println!(
        "    {:<width$} {:>7}{ranks}  {:>9}",
        "group", "modules", "sv_fro r"
    );
    for g in &s.groups {
        let kept: String = g
            .kept
            .iter()
            .map(|k| format!("{:>6.1}%", k * 100.0))
            .collect();
        println!(
            "    {:<width$} {:>7}{kept}  {:>4} ({:.1})",
            g.group, g.modules, g.sv_fro_max, g.sv_fro_mean
        );
    }
}

/// The lines that describe an adapter (under a heading line the caller prints).
pub(super) fn print_summary(s: &AdapterSummary, file_bytes: Option<u64>) {
    println!("  format      {}", s.format);
    println!("  family      {}", s.family.as_deref().unwrap_or("unknown"));
    if let Some(b) = &s.base_model {
        println!("  base model  {b}");
    }
    if let Some(n) = file_bytes {
        println!("  file size   {}", human_bytes(n));
    }
    let kinds: Vec<String> = s
        .layer_kinds
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    println!("  modules     {} ({})", s.modules, kinds.join(", "));
    println!("  parameters  {}", group_digits(s.params));
    println!("  ranks");
    for g in &s.ranks {
        for a in &g.alphas {
            println!(
                "    r={:<4} alpha={:<8} scale={:<8} {} modules",
                g.rank,
                trim_float(a.alpha),
                trim_float(a.scale),
                a.modules
            );
        }
    }
    let dt: Vec<String> = s
        .dtypes
        .iter()
        .map(|d| format!("{} ({} tensors)", d.dtype, d.tensors))
        .collect();
    println!("  dtypes      {}", dt.join(", "));
    let tg: Vec<String> = s.targets.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
    println!("  targets     {}", tg.join(", "));
    if s.dora > 0 {
        println!("  DoRA        {} modules carry a magnitude vector", s.dora);
    }
    if !s.full_tensors.is_empty() {
        println!("  full        {}", s.full_tensors.join(", "));
    }
    for g in &s.lycoris {
        let variant = format!(
            "{}{}{}",
            g.algorithm,
            if g.tucker { "+Tucker" } else { "" },
            if g.dora { "+DoRA" } else { "" }
        );
        let ranks: Vec<String> = g
            .exact_ranks
            .iter()
            .map(|(r, n)| format!("{r} ×{n}"))
            .collect();
        println!(
            "  LyCORIS     {variant}: {} modules, exact LoRA rank {}; e.g. {}",
            g.modules,
            ranks.join(", "),
            g.example
        );
        if g.truncated > 0 {
            println!(
                "              {} truncated (at most {:.3} % of ‖ΔW‖² dropped)",
                g.truncated,
                100.0 * g.max_dropped_energy
            );
        }
        for n in &g.notes {
            println!("              {n}");
        }
    }
}

fn print_gguf(g: &GgufContainer) {
    println!("  container   GGUF v{}", g.gguf_version);
    println!(
        "  kind        {} ({})",
        g.gguf_type.as_deref().unwrap_or("model"),
        g.architecture
            .as_deref()
            .unwrap_or("no general.architecture")
    );
    if let Some(a) = g.lora_alpha {
        println!("  lora alpha  {a}");
    }
    println!("  metadata    {} keys", g.metadata_keys);
    println!("  tensors     {}", g.tensors);
    for (t, (n, e)) in &g.types {
        println!("  {t:<11} {n} tensors, {} elements", group_digits(*e));
    }
}

fn print_model(m: &ModelInfo) {
    println!("{}", m.path);
    if let Some(st) = &m.safetensors {
        println!("  kind        base model ({} file(s))", st.files);
        println!("  file size   {}", human_bytes(m.file_bytes));
        println!("  tensors     {}", st.tensors);
        println!("  parameters  {}", group_digits(m.params));
        for d in &st.dtypes {
            println!(
                "  {:<11} {} tensors, {} parameters",
                d.dtype,
                d.tensors,
                group_digits(d.params)
            );
        }
    }
    if let Some(g) = &m.gguf {
        println!("  file size   {}", human_bytes(m.file_bytes));
        println!("  parameters  {}", group_digits(m.params));
        print_gguf(g);
    }
}
