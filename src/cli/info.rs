//! `loratool info`: what an adapter or a base model holds, from headers only.

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::fmt::{group_digits, human_bytes, trim_float};
use crate::adapter::detect::{detect_format, read_adapter};
use crate::adapter::{Adapter, Format, ReadOptions};
use crate::io::TensorStore;

#[derive(Args)]
pub struct InfoArgs {
    /// Adapter (PEFT directory, diffusers or kohya .safetensors, GGUF) or base model
    /// (.safetensors file, sharded index.json, model directory, or GGUF).
    pub path: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Read the adapter as this format instead of detecting it.
    #[arg(long, value_parser = super::convert::parse_format)]
    pub from: Option<Format>,
}

#[derive(Serialize)]
struct RankGroup {
    rank: usize,
    modules: usize,
    /// alpha → module count
    alphas: Vec<AlphaCount>,
}

#[derive(Serialize)]
struct AlphaCount {
    alpha: f64,
    scale: f64,
    modules: usize,
}

#[derive(Serialize)]
struct DtypeCount {
    dtype: String,
    tensors: usize,
    params: u64,
}

#[derive(Serialize)]
struct AdapterInfo {
    kind: &'static str,
    path: String,
    format: Format,
    family: Option<String>,
    base_model: Option<String>,
    file_bytes: u64,
    modules: usize,
    layer_kinds: BTreeMap<String, usize>,
    ranks: Vec<RankGroup>,
    dtypes: Vec<DtypeCount>,
    params: u64,
    targets: BTreeMap<String, usize>,
    dora: usize,
    full_tensors: Vec<String>,
    /// Layers converted from LyCORIS modules, grouped by algorithm.
    lycoris: Vec<crate::adapter::lycoris::Summary>,
    warnings: Vec<String>,
}

#[derive(Serialize)]
struct ModelInfo {
    kind: &'static str,
    path: String,
    files: usize,
    file_bytes: u64,
    tensors: usize,
    dtypes: Vec<DtypeCount>,
    params: u64,
}

pub fn run(args: InfoArgs) -> Result<()> {
    // a registry reference is laid out in a temp directory that lives until the end of run
    let input = super::adapter_io::resolve_input(&args.path)?;
    let path = &input.path;
    let args = InfoArgs {
        from: args.from.or(input.format),
        ..args
    };
    if path.is_file() && crate::io::gguf::is_gguf(path) {
        return super::info_gguf::run(path, args.json);
    }
    let is_adapter = args.from.is_some() || detect_format(path).is_ok();
    if is_adapter {
        let adapter = read_adapter(path, args.from, ReadOptions { skip_unknown: true })
            .with_context(|| format!("reading adapter {}", path.display()))?;
        let info = adapter_info(path, &adapter)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&info)?);
        } else {
            print_adapter(&info);
        }
    } else {
        let store = TensorStore::open(path).with_context(|| {
            format!(
                "{} is neither a LoRA adapter nor a safetensors model",
                path.display()
            )
        })?;
        let info = model_info(path, &store);
        if args.json {
            println!("{}", serde_json::to_string_pretty(&info)?);
        } else {
            print_model(&info);
        }
    }
    Ok(())
}

fn on_disk_bytes(path: &Path) -> u64 {
    if path.is_dir() {
        std::fs::read_dir(path)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| e.metadata().ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    } else {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }
}

fn adapter_info(path: &Path, a: &Adapter) -> Result<AdapterInfo> {
    let mut ranks: BTreeMap<usize, BTreeMap<u64, usize>> = BTreeMap::new();
    let mut layer_kinds = BTreeMap::new();
    let mut targets = BTreeMap::new();
    let mut dtypes: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    let mut add_dtype = |d: String, n: usize| {
        let e = dtypes.entry(d).or_insert((0, 0));
        e.0 += 1;
        e.1 += n as u64;
    };
    for (p, l) in &a.layers {
        *ranks
            .entry(l.rank())
            .or_default()
            .entry(l.alpha.to_bits())
            .or_default() += 1;
        *layer_kinds.entry(l.kind.to_string()).or_insert(0) += 1;
        // `to_out.0` and `ff.net.2` end in an index: name them by their last two segments
        let mut segs = p.rsplit('.');
        let last = segs.next().unwrap_or(p);
        let leaf = match (last.parse::<usize>(), segs.next()) {
            (Ok(_), Some(prev)) => format!("{prev}.{last}"),
            _ => last.to_string(),
        };
        *targets.entry(leaf).or_insert(0) += 1;
        for t in [
            Some(&l.down),
            Some(&l.up),
            l.magnitude.as_ref(),
            l.bias.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            add_dtype(t.dtype().to_string(), t.numel());
        }
    }
    for t in a.full.values() {
        add_dtype(t.dtype().to_string(), t.numel());
    }
    let format = a
        .meta
        .source_format
        .context("reader did not record the format")?;
    Ok(AdapterInfo {
        kind: "adapter",
        path: path.display().to_string(),
        format,
        family: a.meta.family.clone(),
        base_model: a.meta.base_model.clone(),
        file_bytes: on_disk_bytes(path),
        modules: a.layers.len(),
        layer_kinds,
        ranks: ranks
            .into_iter()
            .map(|(rank, alphas)| RankGroup {
                rank,
                modules: alphas.values().sum(),
                alphas: alphas
                    .into_iter()
                    .map(|(bits, modules)| {
                        let alpha = f64::from_bits(bits);
                        AlphaCount {
                            alpha,
                            scale: alpha / rank as f64,
                            modules,
                        }
                    })
                    .collect(),
            })
            .collect(),
        dtypes: dtype_counts(dtypes),
        params: a.param_count() as u64,
        targets,
        dora: a.layers.values().filter(|l| l.magnitude.is_some()).count(),
        full_tensors: a.full.keys().cloned().collect(),
        lycoris: crate::adapter::lycoris::summarize(&a.meta.lycoris),
        warnings: a.meta.warnings.clone(),
    })
}

fn dtype_counts(m: BTreeMap<String, (usize, u64)>) -> Vec<DtypeCount> {
    m.into_iter()
        .map(|(dtype, (tensors, params))| DtypeCount {
            dtype,
            tensors,
            params,
        })
        .collect()
}

fn model_info(path: &Path, store: &TensorStore) -> ModelInfo {
    let mut dtypes: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    let mut params = 0u64;
    for name in store.names() {
        if let Some(i) = store.info(name) {
            let e = dtypes.entry(i.dtype.to_string()).or_insert((0, 0));
            e.0 += 1;
            e.1 += i.numel() as u64;
            params += i.numel() as u64;
        }
    }
    ModelInfo {
        kind: "model",
        path: path.display().to_string(),
        files: store.files().len(),
        file_bytes: store.total_file_bytes(),
        tensors: store.len(),
        dtypes: dtype_counts(dtypes),
        params,
    }
}

fn print_adapter(i: &AdapterInfo) {
    println!("{}", i.path);
    println!("  format      {}", i.format);
    println!("  family      {}", i.family.as_deref().unwrap_or("unknown"));
    if let Some(b) = &i.base_model {
        println!("  base model  {b}");
    }
    println!("  file size   {}", human_bytes(i.file_bytes));
    let kinds: Vec<String> = i
        .layer_kinds
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    println!("  modules     {} ({})", i.modules, kinds.join(", "));
    println!("  parameters  {}", group_digits(i.params));
    println!("  ranks");
    for g in &i.ranks {
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
    let dt: Vec<String> = i
        .dtypes
        .iter()
        .map(|d| format!("{} ({} tensors)", d.dtype, d.tensors))
        .collect();
    println!("  dtypes      {}", dt.join(", "));
    let tg: Vec<String> = i.targets.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
    println!("  targets     {}", tg.join(", "));
    if i.dora > 0 {
        println!("  DoRA        {} modules carry a magnitude vector", i.dora);
    }
    if !i.full_tensors.is_empty() {
        println!("  full        {}", i.full_tensors.join(", "));
    }
    for g in &i.lycoris {
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
    super::print_warnings(&i.warnings);
}

fn print_model(i: &ModelInfo) {
    println!("{}", i.path);
    println!("  kind        base model ({} file(s))", i.files);
    println!("  file size   {}", human_bytes(i.file_bytes));
    println!("  tensors     {}", i.tensors);
    println!("  parameters  {}", group_digits(i.params));
    for d in &i.dtypes {
        println!(
            "  {:<11} {} tensors, {} parameters",
            d.dtype,
            d.tensors,
            group_digits(d.params)
        );
    }
}
