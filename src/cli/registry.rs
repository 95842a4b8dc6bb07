//! The registry commands: `add`, `list`, `show`, `tag`, `rm`, `gc`, `verify`, `export`.
//! Printing and argument handling only; the store logic is `crate::registry`.

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use std::path::PathBuf;

use super::adapter_io::{load_base, read_resolved, resolve_reference, write_output, GgufTarget};
use super::convert::{parse_format, parse_storage};
use super::fmt::human_bytes;
use crate::adapter::Format;
use crate::quant::QuantType;
use crate::registry::manifest::ModelConfig;
use crate::registry::{Digest, Reference, Store};

/// Open the default store (`LORATOOL_HOME`, else the XDG data directory).
pub fn open_store() -> Result<Store> {
    let root = Store::default_root()?;
    Store::open(&root).with_context(|| format!("opening the adapter store {}", root.display()))
}

/// A reference given on the command line; a bare name means `name:latest`.
fn parse_ref(s: &str) -> Result<Reference> {
    Ok(Reference::parse_with_default(s, Some("latest"))?)
}

#[derive(Args)]
pub struct AddArgs {
    /// The adapter: PEFT directory, diffusers or kohya .safetensors, llama.cpp .gguf.
    pub path: PathBuf,
    /// The name to store it under: namespace/name:tag (tag defaults to latest).
    #[arg(long)]
    pub name: String,
    /// Read the input as this format instead of detecting it.
    #[arg(long, value_parser = parse_format)]
    pub from: Option<Format>,
}

pub fn add(args: AddArgs) -> Result<()> {
    let reference = parse_ref(&args.name)?;
    let store = open_store()?;
    let digest = store
        .add_path(&args.path, &reference, args.from, None)
        .with_context(|| format!("adding {} as {reference}", args.path.display()))?;
    println!("added {reference} {digest}");
    Ok(())
}

#[derive(Args)]
pub struct ListArgs {
    /// Print a JSON array instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Only adapters whose base model contains this text.
    #[arg(long)]
    pub base: Option<String>,
    /// Only adapters of this format.
    #[arg(long, value_parser = parse_format)]
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
    })
}

pub fn list(args: ListArgs) -> Result<()> {
    let store = open_store()?;
    let entries = store.entries()?;
    let shown: Vec<_> = entries
        .iter()
        .filter(|e| args.name.as_deref().is_none_or(|n| e.reference.contains(n)))
        .filter(|e| {
            args.format.is_none_or(|f| {
                e.config
                    .as_ref()
                    .is_some_and(|c| c.loratool.format == f.name())
            })
        })
        .filter(|e| {
            args.base.as_deref().is_none_or(|b| {
                e.config
                    .as_ref()
                    .and_then(|c| c.loratool.base_model.as_deref())
                    .is_some_and(|m| m.contains(b))
            })
        })
        .collect();
    if args.json {
        let v: Vec<_> = shown
            .iter()
            .map(|e| entry_json(&e.reference, &e.digest, e.size(), e.config.as_ref()))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let width = super::fmt::column_width(shown.iter().map(|e| e.reference.as_str()), 9);
    println!(
        "{:<width$}  {:<12}  {:<9}  {:<8}  {:>9}  BASE MODEL",
        "REFERENCE", "DIGEST", "FORMAT", "RANKS", "SIZE"
    );
    for e in shown {
        let info = e.config.as_ref().map(|c| &c.loratool);
        let ranks = info
            .map(|i| {
                i.ranks
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
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

#[derive(Args)]
pub struct ShowArgs {
    /// name:tag or name@sha256:<digest>.
    pub reference: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn show(args: ShowArgs) -> Result<()> {
    let reference = parse_ref(&args.reference)?;
    let store = open_store()?;
    let r = store.resolve(&reference)?;
    let size: u64 = r.manifest.layers.iter().map(|l| l.size).sum();
    if args.json {
        let mut v = entry_json(&reference.to_string(), &r.digest, size, Some(&r.config));
        v["files"] = r
            .manifest
            .files()
            .iter()
            .map(|(t, d, s)| json!({"name": t, "digest": d.as_str(), "size": s}))
            .collect();
        v["tags"] = json!(store.tags_of(&r.digest)?);
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let i = &r.config.loratool;
    let join = |v: &[String]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(", ")
        }
    };
    println!("{reference}");
    println!("  digest      {}", r.digest);
    println!("  tags        {}", join(&store.tags_of(&r.digest)?));
    println!("  format      {}", i.format);
    println!("  family      {}", i.family.as_deref().unwrap_or("-"));
    println!("  base model  {}", i.base_model.as_deref().unwrap_or("-"));
    println!(
        "  ranks       {}",
        join(&i.ranks.iter().map(|r| r.to_string()).collect::<Vec<_>>())
    );
    println!(
        "  alphas      {}",
        join(
            &i.alphas
                .iter()
                .map(|a| super::fmt::trim_float(*a))
                .collect::<Vec<_>>()
        )
    );
    println!("  modules     {} ({})", i.modules, join(&i.target_modules));
    println!("  dtypes      {}", join(&i.dtypes));
    println!("  parameters  {}", super::fmt::group_digits(i.parameters));
    println!("  created     {}", i.created);
    println!("  files");
    for (title, digest, s) in r.manifest.files() {
        println!("    {title:<32} {:>9}  {digest}", human_bytes(s));
    }
    println!("  lineage");
    print_lineage(&store, &r.config, 2, &mut Vec::new());
    Ok(())
}

/// Print an adapter's lineage as a tree, following inputs that are themselves stored
/// (depth-limited and cycle-checked: configs are store files, hence untrusted).
fn print_lineage(store: &Store, config: &ModelConfig, depth: usize, seen: &mut Vec<String>) {
    let pad = "  ".repeat(depth);
    let Some(l) = &config.loratool.lineage else {
        println!("{pad}(none recorded)");
        return;
    };
    println!("{pad}{}", l.summary);
    for input in &l.inputs {
        let digest = Digest::parse(&input.digest);
        let tags = digest
            .as_ref()
            .and_then(|d| store.tags_of(d).ok())
            .unwrap_or_default();
        let named = if input.kind == "manifest" && !tags.is_empty() {
            format!(" [{}]", tags.join(", "))
        } else {
            String::new()
        };
        println!(
            "{pad}└─ {} {}{named} ({})",
            input.source, input.digest, input.kind
        );
        if input.kind != "manifest" || depth > 12 || seen.contains(&input.digest) {
            continue;
        }
        if let Some(parent) = digest.and_then(|d| store.load(&d).ok()) {
            seen.push(input.digest.clone());
            print_lineage(store, &parent.config, depth + 2, seen);
            seen.pop();
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

pub fn tag(args: TagArgs) -> Result<()> {
    let src = parse_ref(&args.reference)?;
    let new = parse_ref(&args.new_reference)?;
    let store = open_store()?;
    let digest = store.tag(&src, &new)?;
    println!("tagged {new} {digest}");
    Ok(())
}

#[derive(Args)]
pub struct RmArgs {
    /// The tag to remove (name:tag), or name@sha256:<digest> for all of name's tags on it.
    pub reference: String,
}

pub fn rm(args: RmArgs) -> Result<()> {
    let reference = parse_ref(&args.reference)?;
    let store = open_store()?;
    for r in store.remove(&reference)? {
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

pub fn gc(args: GcArgs) -> Result<()> {
    let store = open_store()?;
    let report = store.gc(args.dry_run)?;
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
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn verify(args: VerifyArgs) -> Result<()> {
    let store = open_store()?;
    let report = store.verify()?;
    if args.json {
        let v = json!({
            "ok": report.ok(),
            "checked": report.checked,
            "corrupt": report.corrupt.iter().map(|(d, a)| json!({"digest": d.as_str(), "actual": a.as_str()})).collect::<Vec<_>>(),
            "missing": report.missing.iter().map(|(d, w)| json!({"digest": d.as_str(), "needed_by": w})).collect::<Vec<_>>(),
            "problems": report.problems,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
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
    #[arg(long, value_parser = parse_format)]
    pub to: Option<Format>,
    /// The base model (config.json or GGUF), needed for --to gguf.
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// For --to gguf: f32, f16, bf16 or q8_0.
    #[arg(long, value_parser = parse_storage)]
    pub dtype: Option<QuantType>,
}

pub fn export(args: ExportArgs) -> Result<()> {
    let reference = parse_ref(&args.reference)?;
    let Some(to) = args.to else {
        let store = open_store()?;
        let r = store.resolve(&reference)?;
        let written = store
            .export_files(&r, &args.output)
            .with_context(|| format!("exporting {reference} to {}", args.output.display()))?;
        for p in &written {
            println!("wrote {}", p.display());
        }
        return Ok(());
    };
    let base = load_base(args.base.as_deref())?;
    let input = resolve_reference(&reference)?;
    let adapter = read_resolved(&input, None, false, base.as_ref())?;
    let report = write_output(
        &adapter,
        to,
        &args.output,
        GgufTarget {
            base: base.as_ref(),
            dtype: if to == Format::Gguf { args.dtype } else { None },
        },
    )?;
    println!(
        "exported {reference} as {to}: {} ({} tensors, {})",
        args.output.display(),
        report.tensors,
        human_bytes(report.bytes)
    );
    Ok(())
}
