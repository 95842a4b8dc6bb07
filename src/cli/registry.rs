//! The registry commands: `add`, `list`, `show`, `tag`, `rm`, `gc`, `verify`, `export`.
//! Arguments and rendering; the store is `crate::registry`, what to record and the lineage
//! tree are `app::store`.

use super::args::{named, storage_type, BaseArg, JsonArg};
use super::fmt::{column_width, group_digits, human_bytes, trim_float};
use crate::adapter::Format;
use crate::app::input::load_base;
use crate::app::store::{lineage_tree, ExportAs, LineageNode, ListFilter};
use crate::app::Session;
use crate::quant::QuantType;
use crate::registry::manifest::{AdapterInfo, ModelConfig};
use crate::registry::{Digest, Reference};
use anyhow::{bail, Result};
use clap::Args;
use serde_json::json;
use std::path::PathBuf;

/// A reference given on the command line; a bare name means `name:latest`.
fn parse_ref(s: &str) -> Result<Reference> {
    Ok(Reference::parse_with_default(s, Some("latest"))?)
}

#[derive(Args)]
pub struct AddArgs {
    /// The adapter: PEFT directory, diffusers or kohya .safetensors, llama.cpp .gguf adapter.
    /// Its files are stored as they are.
    pub path: PathBuf,
    /// The name to store it under: namespace/name:tag (tag defaults to latest).
    #[arg(long)]
    pub name: String,
    /// Read the input as this format instead of detecting it.
    #[arg(long, value_parser = named::<Format>())]
    pub from: Option<Format>,
}

pub fn add(session: &Session<'_>, args: AddArgs) -> Result<()> {
    let reference = parse_ref(&args.name)?;
    let digest = session.add(&args.path, &reference, args.from)?;
    println!("added {reference} {digest}");
    Ok(())
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub json: JsonArg,
    /// Only adapters whose base model contains this text.
    #[arg(long)]
    pub base: Option<String>,
    /// Only adapters of this format.
    #[arg(long, value_parser = named::<Format>())]
    pub format: Option<Format>,
    /// Only references containing this text.
    #[arg(long)]
    pub name: Option<String>,
}

fn entry_json(
    reference: &str,
    digest: &Digest,
    size: u64,
    config: Option<&ModelConfig>,
) -> serde_json::Value {
    let info = config.map(|c| &c.loratool);
    json!({
        "reference": reference,
        "digest": digest.as_str(),
        "size": size,
        "format": info.map(|i| i.format.clone()),
        "base_model": info.and_then(|i| i.base_model.clone()),
        "family": info.and_then(|i| i.family.clone()),
        "ranks": info.map(|i| i.ranks.clone()),
        "alphas": info.map(|i| i.alphas.clone()),
        "target_modules": info.map(|i| i.target_modules.clone()),
        "dtypes": info.map(|i| i.dtypes.clone()),
        "modules": info.map(|i| i.modules),
        "parameters": info.map(|i| i.parameters),
        "created": info.map(|i| i.created.clone()),
        "lineage": info.and_then(|i| i.lineage.clone()),
        "summary": info.and_then(|i| i.summary.clone()),
    })
}

pub fn list(session: &Session<'_>, args: ListArgs) -> Result<()> {
    let store = session.store()?;
    let filter = ListFilter {
        base: args.base,
        format: args.format,
        name: args.name,
    };
    let shown: Vec<_> = store
        .entries()?
        .into_iter()
        .filter(|e| filter.accepts(e))
        .collect();
    if args.json.json {
        let v: Vec<_> = shown
            .iter()
            .map(|e| entry_json(&e.reference, &e.digest, e.size(), e.config.as_ref()))
            .collect();
        return super::print_json(&v);
    }
    let width = column_width(shown.iter().map(|e| e.reference.as_str()), 9);
    println!(
        "{:<width$}  {:<12}  {:<9}  {:<8}  {:>9}  BASE MODEL",
        "REFERENCE", "DIGEST", "FORMAT", "RANKS", "SIZE"
    );
    for e in shown {
        let info = e.config.as_ref().map(|c| &c.loratool);
        let ranks = info
            .map(|i| {
                join(
                    &i.ranks.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                    ",",
                )
            })
            .unwrap_or_else(|| "?".into());
        println!(
            "{:<width$}  {:<12}  {:<9}  {:<8}  {:>9}  {}",
            e.reference,
            e.digest.short(),
            info.map_or("?", |i| i.format.as_str()),
            ranks,
            human_bytes(e.size()),
            info.and_then(|i| i.base_model.as_deref()).unwrap_or("-"),
        );
    }
    Ok(())
}

fn join(v: &[String], sep: &str) -> String {
    if v.is_empty() {
        "-".to_string()
    } else {
        v.join(sep)
    }
}

#[derive(Args)]
pub struct ShowArgs {
    /// name:tag or name@sha256:<digest>.
    pub reference: String,
    #[command(flatten)]
    pub json: JsonArg,
}

pub fn show(session: &Session<'_>, args: ShowArgs) -> Result<()> {
    let reference = parse_ref(&args.reference)?;
    let store = session.store()?;
    let r = store.resolve(&reference)?;
    let size: u64 = r.manifest.layers.iter().map(|l| l.size).sum();
    let tags = store.tags_of(&r.digest)?;
    if args.json.json {
        let mut v = entry_json(&reference.to_string(), &r.digest, size, Some(&r.config));
        v["files"] = r
            .manifest
            .files()
            .iter()
            .map(|(t, d, s)| json!({"name": t, "digest": d.as_str(), "size": s}))
            .collect();
        v["tags"] = json!(tags);
        return super::print_json(&v);
    }
    let i = &r.config.loratool;
    println!("{reference}");
    println!("  digest      {}", r.digest);
    println!("  tags        {}", join(&tags, ", "));
    match &i.summary {
        Some(s) => super::info::print_summary(s, Some(size)),
        None => print_recorded(i),
    }
    println!("  created     {}", i.created);
    println!("  files");
    for (title, digest, s) in r.manifest.files() {
        println!("    {title:<32} {:>9}  {digest}", human_bytes(s));
    }
    println!("  lineage");
    match lineage_tree(&store, &r.config) {
        Some(node) => print_lineage(&node, 2),
        None => println!("    (none recorded)"),
    }
    Ok(())
}

/// The flat record of an adapter stored before summaries were recorded.
fn print_recorded(i: &AdapterInfo) {
    println!("  format      {}", i.format);
    println!("  family      {}", i.family.as_deref().unwrap_or("-"));
    println!("  base model  {}", i.base_model.as_deref().unwrap_or("-"));
    let ranks: Vec<String> = i.ranks.iter().map(|r| r.to_string()).collect();
    println!("  ranks       {}", join(&ranks, ", "));
    let alphas: Vec<String> = i.alphas.iter().map(|a| trim_float(*a)).collect();
    println!("  alphas      {}", join(&alphas, ", "));
    println!(
        "  modules     {} ({})",
        i.modules,
        join(&i.target_modules, ", ")
    );
    println!("  dtypes      {}", join(&i.dtypes, ", "));
    println!("  parameters  {}", group_digits(i.parameters));
}

fn print_lineage(node: &LineageNode, depth: usize) {
    let pad = "  ".repeat(depth);
    println!("{pad}{}", node.summary);
    for input in &node.inputs {
        let named = if input.tags.is_empty() {
            String::new()
        } else {
            format!(" [{}]", input.tags.join(", "))
        };
        println!(
            "{pad}└─ {} {}{named} ({})",
            input.source, input.digest, input.kind
        );
        if let Some(parent) = &input.lineage {
            print_lineage(parent, depth + 2);
        }
    }
}

#[derive(Args)]
pub struct TagArgs {
    /// Existing reference (name:tag or name@sha256:<digest>).
    pub reference: String,
    /// New reference name:tag.
    pub new_reference: String,
}

pub fn tag(session: &Session<'_>, args: TagArgs) -> Result<()> {
    let src = parse_ref(&args.reference)?;
    let new = parse_ref(&args.new_reference)?;
    let digest = session.store()?.tag(&src, &new)?;
    println!("tagged {new} {digest}");
    Ok(())
}

#[derive(Args)]
pub struct RmArgs {
    /// The tag to remove (name:tag), or name@sha256:<digest> for all of name's tags on it.
    pub reference: String,
}

pub fn rm(session: &Session<'_>, args: RmArgs) -> Result<()> {
    let reference = parse_ref(&args.reference)?;
    for r in session.store()?.remove(&reference)? {
        println!("removed {r}");
    }
    println!("(blobs stay until `loratool gc`)");
    Ok(())
}

#[derive(Args)]
pub struct GcArgs {
    /// Report what would be deleted without deleting it.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn gc(session: &Session<'_>, args: GcArgs) -> Result<()> {
    let report = session.store()?.gc(args.dry_run)?;
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    for (d, s) in &report.removed {
        println!("{verb} {d} ({})", human_bytes(*s));
    }
    println!(
        "{verb} {} unreachable blob(s), {}; kept {}; {} stale temp file(s)",
        report.removed.len(),
        human_bytes(report.bytes()),
        report.kept,
        report.temp.len()
    );
    Ok(())
}

#[derive(Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub json: JsonArg,
}

pub fn verify(session: &Session<'_>, args: VerifyArgs) -> Result<()> {
    let store = session.store()?;
    let report = store.verify()?;
    if args.json.json {
        let v = json!({
            "ok": report.ok(),
            "checked": report.checked,
            "corrupt": report.corrupt.iter().map(|(d, a)| json!({"digest": d.as_str(), "actual": a.as_str()})).collect::<Vec<_>>(),
            "missing": report.missing.iter().map(|(d, w)| json!({"digest": d.as_str(), "needed_by": w})).collect::<Vec<_>>(),
            "problems": report.problems,
        });
        super::print_json(&v)?;
    } else {
        for (d, actual) in &report.corrupt {
            println!("corrupt: {d} (content hashes to {actual})");
        }
        for (d, what) in &report.missing {
            println!("missing: {d} ({what})");
        }
        for p in &report.problems {
            println!("problem: {p}");
        }
        println!(
            "checked {} blob(s): {} corrupt, {} missing, {} other problem(s)",
            report.checked,
            report.corrupt.len(),
            report.missing.len(),
            report.problems.len()
        );
    }
    if !report.ok() {
        bail!(
            "the store {} failed verification; remove damaged adapters with `loratool rm` and add them again",
            store.root().display()
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct ExportArgs {
    /// name:tag or name@sha256:<digest>.
    pub reference: String,
    /// Output: a directory for the stored files; with --to, the output path as `convert -o`.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Convert to this format instead of copying the stored files.
    #[arg(long, value_parser = named::<Format>())]
    pub to: Option<Format>,
    #[command(flatten)]
    pub base: BaseArg,
    /// For --to gguf: f32, f16, bf16 or q8_0.
    #[arg(long, value_parser = storage_type)]
    pub dtype: Option<QuantType>,
}

pub fn export(session: &Session<'_>, args: ExportArgs) -> Result<()> {
    let reference = parse_ref(&args.reference)?;
    let base = load_base(args.base.base.as_deref())?;
    let as_ = args.to.map(|format| ExportAs {
        format,
        base: base.as_ref(),
        quant: args.dtype,
    });
    let exported = session.export(&reference, &args.output, as_)?;
    match (exported.format, exported.tensors, exported.bytes) {
        (Some(f), Some(t), Some(b)) => println!(
            "exported {reference} as {f}: {} ({t} tensors, {})",
            args.output.display(),
            human_bytes(b)
        ),
        _ => {
            for p in &exported.files {
                println!("wrote {}", p.display());
            }
        }
    }
    Ok(())
}
