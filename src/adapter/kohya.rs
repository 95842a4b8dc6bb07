//! kohya sd-scripts LoRA files for Stable Diffusion 1.x and SDXL: one safetensors file with
//! `<kohya_name>.lora_down.weight`, `.lora_up.weight` and `.alpha` per module, `ss_*` metadata,
//! and `sshs_*` hashes.
//!
//! kohya names replaced every `.` of the module path with `_`, which cannot be undone by string
//! surgery (`down_blocks_0` vs `down_blocks.0` vs `to_out_0`), so names are resolved only
//! through the tables in `formats/`.

use super::kohya_hash::kohya_hashes;
use super::lycoris;
use super::{report_unknown, Adapter, AdapterMeta, Format, LayerKind, LoraLayer, ReadOptions};
use crate::error::{Error, Result};
use crate::formats::sd::{self, ModuleRow, SdTable};
use crate::io::{stage_safetensors, PendingTensor, SafetensorsFile, WriteReport};
use crate::tensor::Tensor;
use indexmap::IndexMap;
use std::collections::BTreeMap;
use std::path::Path;

const DOWN: &str = "lora_down.weight";
const UP: &str = "lora_up.weight";
const ALPHA: &str = "alpha";

/// kohya's name for a module, given a table row, including the aliases other tools write:
/// SDXL files made from diffusers (`lora_unet_down_blocks_...`) and `lora_te1_` for SD1.x.
fn aliases(table: &SdTable, row: &ModuleRow) -> Vec<String> {
    let mut names = vec![row.kohya.clone()];
    if table.family == "sdxl" {
        if let Some(rest) = row.canonical.strip_prefix("unet.") {
            names.push(format!("lora_unet_{}", rest.replace('.', "_")));
        }
    } else if let Some(rest) = row.kohya.strip_prefix("lora_te_") {
        names.push(format!("lora_te1_{rest}"));
    }
    names
}

/// Lookup from every accepted kohya name to its row, for one family.
fn name_index(table: &'static SdTable) -> BTreeMap<String, &'static ModuleRow> {
    let mut map = BTreeMap::new();
    for row in &table.rows {
        for n in aliases(table, row) {
            map.entry(n).or_insert(row);
        }
    }
    map
}

/// Every kohya module name loratool accepts for `family` (aliases included) → the canonical
/// module path it reads as; `None` for a family without a table. Two names of one file that
/// map to the same path are the same module twice (the reader keeps one).
pub fn canonical_names(family: &str) -> Option<BTreeMap<String, String>> {
    let table = sd::table(family)?;
    Some(
        name_index(table)
            .into_iter()
            .map(|(k, row)| (k, row.canonical.clone()))
            .collect(),
    )
}

/// The kohya module name and part of a tensor key (`lora_unet_x.lora_down.weight` →
/// (`lora_unet_x`, `lora_down.weight`)).
pub fn split_key(key: &str) -> Option<(&str, &str)> {
    key.split_once('.')
}

/// The family the metadata declares, if it declares one loratool has a table for.
fn family_from_metadata(
    path: &Path,
    md: &IndexMap<String, String>,
) -> Result<Option<&'static str>> {
    let Some(v) = md.get("ss_base_model_version") else {
        return Ok(match md.get("ss_v2").map(|s| s.as_str()) {
            Some("True") => {
                return Err(Error::unsupported(
                    path,
                    "this is a Stable Diffusion 2.x LoRA (ss_v2 = True); loratool has tables for SD 1.x and SDXL only",
                ))
            }
            _ => None,
        });
    };
    if v.starts_with("sd_v1") {
        Ok(Some("sd15"))
    } else if v.starts_with("sdxl") {
        Ok(Some("sdxl"))
    } else {
        Err(Error::unsupported(
            path,
            format!(
                "ss_base_model_version is '{v}'; loratool's kohya tables cover SD 1.x (sd_v1) and SDXL (sdxl_base_v1-0) only"
            ),
        ))
    }
}

#[derive(Default)]
struct KohyaParts {
    down: Option<String>,
    up: Option<String>,
    alpha: Option<String>,
}

pub fn read(path: &Path, opts: ReadOptions) -> Result<Adapter> {
    let file = SafetensorsFile::open(path)?;
    let md = file.metadata().clone();
    let declared = family_from_metadata(path, &md)?;

    let mut modules: BTreeMap<String, KohyaParts> = BTreeMap::new();
    let mut unknown = Vec::new();
    for key in file.tensors().keys() {
        let Some((name, suffix)) = key.split_once('.') else {
            unknown.push(key.clone());
            continue;
        };
        let slot = match suffix {
            DOWN => &mut modules.entry(name.to_string()).or_default().down,
            UP => &mut modules.entry(name.to_string()).or_default().up,
            ALPHA => &mut modules.entry(name.to_string()).or_default().alpha,
            _ => {
                unknown.push(key.clone());
                continue;
            }
        };
        *slot = Some(key.clone());
    }
    let mut meta = AdapterMeta {
        source_format: Some(Format::Kohya),
        source_metadata: md.clone(),
        ..Default::default()
    };
    // LyCORIS modules (LoHa, LoKr, Tucker, DoRA, …) are converted to LoRA through the table row
    let lyco = lycoris_modules(&file, &mut modules, &mut unknown, opts, &mut meta.warnings)?;

    let candidates: Vec<&'static str> = match declared {
        Some(f) => vec![f],
        None => sd::FAMILIES.to_vec(),
    };
    let mut best: Option<(&'static str, Resolved)> = None;
    for fam in candidates {
        let Some(table) = sd::table(fam) else {
            continue;
        };
        let resolved = resolve(&file, table, &modules, &lyco)?;
        let better = match &best {
            None => true,
            Some((_, b)) => resolved.unmapped.len() < b.unmapped.len(),
        };
        if better {
            best = Some((fam, resolved));
        }
        if best.as_ref().is_some_and(|(_, b)| b.unmapped.is_empty()) {
            break;
        }
    }
    let Some((family, resolved)) = best else {
        return Err(Error::unsupported(path, "no module table available"));
    };
    let unmapped_count = resolved.unmapped.len();
    unknown.extend(resolved.unmapped);
    report_unknown(
        path,
        &unknown,
        &format!("unmapped ({family} table)"),
        opts,
        &mut meta.warnings,
    )?;
    if resolved.layers.is_empty() {
        return Err(Error::unsupported(
            path,
            format!(
                "no kohya LoRA module of this file is in loratool's {family} table ({unmapped_count} keys unmapped); it may be for another model family"
            ),
        ));
    }
    meta.family = Some(family.to_string());
    meta.lycoris = resolved.origins;
    meta.warnings
        .extend(lycoris::truncation_warnings(&meta.lycoris));
    Ok(Adapter {
        layers: resolved.layers,
        full: BTreeMap::new(),
        meta,
    })
}

struct Resolved {
    layers: BTreeMap<String, LoraLayer>,
    origins: BTreeMap<String, lycoris::Origin>,
    /// Keys of modules the table does not know.
    unmapped: Vec<String>,
}

fn resolve(
    file: &SafetensorsFile,
    table: &'static SdTable,
    modules: &BTreeMap<String, KohyaParts>,
    lyco: &BTreeMap<String, BTreeMap<&'static str, String>>,
) -> Result<Resolved> {
    let path = file.path();
    let index = name_index(table);
    let mut layers = BTreeMap::new();
    let mut origins = BTreeMap::new();
    let mut unmapped = Vec::new();
    for (name, keys) in lyco {
        let Some(row) = index.get(name.as_str()) else {
            unmapped.extend(keys.values().cloned());
            continue;
        };
        let mut tensors = lycoris::ModuleTensors::new();
        for (&local, key) in keys {
            tensors.insert(local, file.tensor(key)?);
        }
        let opts = lycoris::Options {
            target: Some(lycoris::Target {
                kind: row.kind,
                out: row.out,
                in_: row.in_,
                kh: row.kh,
                kw: row.kw,
            }),
            ..lycoris::Options::lycoris()
        };
        let c = lycoris::convert(name, &tensors, &opts)
            .map_err(|e| Error::unsupported(path, format!("({}) {e}", row.canonical)))?;
        check_row_shape(path, name, row, &c.layer)?;
        layers.insert(row.canonical.clone(), c.layer);
        origins.insert(row.canonical.clone(), c.origin);
    }
    for (name, parts) in modules {
        let Some(row) = index.get(name.as_str()) else {
            unmapped.extend(
                [&parts.down, &parts.up, &parts.alpha]
                    .into_iter()
                    .flatten()
                    .cloned(),
            );
            continue;
        };
        let (down_key, up_key) = match (&parts.down, &parts.up) {
            (Some(d), Some(u)) => (d, u),
            _ => {
                return Err(Error::malformed(
                    path,
                    format!("module '{name}' needs both {DOWN} and {UP}; one is missing"),
                ))
            }
        };
        let down = file.tensor(down_key)?;
        let up = file.tensor(up_key)?;
        let rank = down.shape().first().copied().unwrap_or(0);
        let alpha = match &parts.alpha {
            None => rank as f64,
            Some(k) => {
                let t = file.tensor(k)?;
                let v = t.scalar_value().ok_or_else(|| {
                    Error::bad_tensor(
                        path,
                        k,
                        format!(
                            "alpha must be a single number (shape [] or [1]), got shape {:?}",
                            t.shape()
                        ),
                    )
                })?;
                // kohya: missing or zero alpha means alpha = rank (scale 1)
                if v == 0.0 {
                    rank as f64
                } else {
                    v
                }
            }
        };
        let (down, up) = shape_for_row(row, down, up)
            .map_err(|e| Error::bad_tensor(path, down_key, e.to_string()))?;
        let layer = LoraLayer::new(&row.canonical, down, up, alpha, row.kind)
            .map_err(|e| Error::unsupported(path, format!("{name}: {e}")))?;
        check_row_shape(path, name, row, &layer)?;
        layers.insert(row.canonical.clone(), layer);
    }
    Ok(Resolved {
        layers,
        origins,
        unmapped,
    })
}

/// Take the LyCORIS modules out of `modules`/`unknown`: every module with a key beyond
/// `lora_down`/`lora_up`/`alpha` (LoHa, LoKr, `lora_mid`, `dora_scale`, …), as local name →
/// tensor key. Modules of an algorithm with no LoRA form (full `diff`, norms, (IA)³, OFT,
/// GLoRA) are reported like unknown keys, with the reason.
fn lycoris_modules(
    file: &SafetensorsFile,
    modules: &mut BTreeMap<String, KohyaParts>,
    unknown: &mut Vec<String>,
    opts: ReadOptions,
    warnings: &mut Vec<String>,
) -> Result<BTreeMap<String, BTreeMap<&'static str, String>>> {
    let mut lyco: BTreeMap<String, BTreeMap<&'static str, String>> = BTreeMap::new();
    unknown.retain(|key| match lycoris::split_key(key) {
        Some((module, local)) if !module.contains('.') => {
            lyco.entry(module.to_string())
                .or_default()
                .insert(local, key.clone());
            false
        }
        _ => true,
    });
    for (name, keys) in lyco.iter_mut() {
        if let Some(parts) = modules.remove(name) {
            let plain = [
                ("lora_down", parts.down),
                ("lora_up", parts.up),
                ("alpha", parts.alpha),
            ];
            for (local, key) in plain {
                if let Some(k) = key {
                    keys.insert(local, k);
                }
            }
        }
    }
    let mut refused = Vec::new();
    let mut reasons = Vec::new();
    lyco.retain(|name, keys| {
        let tensors: lycoris::ModuleTensors = keys
            .iter()
            .filter_map(|(&l, k)| file.tensor(k).ok().map(|t| (l, t)))
            .collect();
        match lycoris::classify(name, &tensors) {
            Ok(alg) if !lycoris::convertible(alg) => {
                refused.extend(keys.values().cloned());
                if reasons.len() < 3 {
                    reasons.push(format!("{name}: {}", lycoris::refusal(alg)));
                }
                false
            }
            _ => true,
        }
    });
    if !refused.is_empty() {
        report_unknown(
            file.path(),
            &refused,
            &format!("LyCORIS ({})", reasons.join("; ")),
            opts,
            warnings,
        )?;
    }
    Ok(lyco)
}

/// kohya stores 1x1 convs as 4-D and linears as 2-D; some tools write a linear's factors as
/// `[r, in, 1, 1]`. Bring the factors to the table row's kind.
fn shape_for_row(row: &ModuleRow, down: Tensor, up: Tensor) -> Result<(Tensor, Tensor)> {
    let squeeze = |t: Tensor| -> Result<Tensor> {
        let s = t.shape().to_vec();
        if s.len() == 4 && s[2] == 1 && s[3] == 1 {
            t.reshaped(vec![s[0], s[1]])
        } else {
            Ok(t)
        }
    };
    let unsqueeze = |t: Tensor| -> Result<Tensor> {
        let s = t.shape().to_vec();
        if s.len() == 2 {
            t.reshaped(vec![s[0], s[1], 1, 1])
        } else {
            Ok(t)
        }
    };
    Ok(match row.kind {
        LayerKind::Conv => (unsqueeze(down)?, unsqueeze(up)?),
        _ => (squeeze(down)?, squeeze(up)?),
    })
}

fn check_row_shape(path: &Path, name: &str, row: &ModuleRow, layer: &LoraLayer) -> Result<()> {
    let got = (layer.out_features(), layer.in_features(), layer.kernel());
    let want = (row.out, row.in_, (row.kh, row.kw));
    if got != want {
        return Err(Error::unsupported(
            path,
            format!(
                "module '{name}' ({}) has out {} / in {} / kernel {:?}, but that module of the base model is out {} / in {} / kernel {:?}: the LoRA is for a different model",
                row.canonical, got.0, got.1, got.2, want.0, want.1, want.2
            ),
        ));
    }
    Ok(())
}

/// Python's `str(float(x))`, which is how kohya writes `ss_network_alpha`.
pub fn python_float_str(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let a = x.abs();
    if a != 0.0 && !(1e-4..1e16).contains(&a) {
        // Python: shortest repr digits, exponent with sign and at least two digits
        let s = format!("{x:e}");
        let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mant}e{sign}{:02}", exp.abs());
    }
    let s = format!("{x}");
    if s.contains('.') {
        s
    } else {
        format!("{s}.0")
    }
}

/// An alpha as a user would type it on sd-scripts' command line (`1`, `0.5`).
fn trim_alpha(a: f64) -> String {
    if a.fract() == 0.0 && a.abs() < 1e15 {
        format!("{}", a as i64)
    } else {
        format!("{a}")
    }
}

/// The single value all items share, or "Dynamic" (kohya's word for mixed ranks).
fn common_or_dynamic(values: impl Iterator<Item = String>) -> Option<String> {
    let mut it = values;
    let first = it.next()?;
    Some(if it.all(|v| v == first) {
        first
    } else {
        "Dynamic".to_string()
    })
}

/// The SD family to write `adapter` for: its own, or the table that knows all its modules.
pub fn family_for(adapter: &Adapter) -> Result<&'static str> {
    if let Some(f) = adapter.meta.family.as_deref() {
        if let Some(fam) = sd::FAMILIES.iter().copied().find(|x| *x == f) {
            return Ok(fam);
        }
    }
    super::family::guess_sd_family(adapter).ok_or_else(|| {
        let example = adapter
            .layers
            .keys()
            .find(|p| sd::FAMILIES.iter().all(|f| sd::table(f).is_some_and(|t| t.by_canonical(p).is_none())))
            .or_else(|| adapter.layers.keys().next())
            .cloned()
            .unwrap_or_default();
        Error::Invalid(format!(
            "the kohya format names modules through the SD 1.5 and SDXL tables, and this adapter's modules are not all in either (e.g. '{example}', or its shape differs). kohya files exist only for Stable Diffusion models; write PEFT instead"
        ))
    })
}

/// Metadata for the written file: the source's kohya metadata (never its stale hashes), with
/// the minimum keys sd-scripts writes set to describe these layers.
fn build_metadata(adapter: &Adapter, family: &str) -> IndexMap<String, String> {
    let mut md: IndexMap<String, String> = IndexMap::new();
    if adapter.meta.source_format == Some(Format::Kohya) {
        // layers converted from LyCORIS are plain LoRA now: the network keys are recomputed
        let converted = !adapter.meta.lycoris.is_empty();
        for (k, v) in &adapter.meta.source_metadata {
            let network_key = k.starts_with("ss_network_");
            if !(k.starts_with("sshs_") || converted && network_key) {
                md.insert(k.clone(), v.clone());
            }
        }
    }
    let is_3x3 = |l: &LoraLayer| l.kind == LayerKind::Conv && l.kernel() != (1, 1);
    let linear = || adapter.layers.values().filter(|l| !is_3x3(l));
    let conv = || adapter.layers.values().filter(|l| is_3x3(l));
    // A kohya source's own values stay (they describe these layers unless an op changed
    // them, and ops set them explicitly); other sources get values computed from the layers.
    md.entry("ss_network_module".into())
        .or_insert_with(|| "networks.lora".into());
    let dim = common_or_dynamic(linear().map(|l| l.rank().to_string()))
        .or_else(|| common_or_dynamic(conv().map(|l| l.rank().to_string())));
    let alpha = common_or_dynamic(linear().map(|l| python_float_str(l.alpha)))
        .or_else(|| common_or_dynamic(conv().map(|l| python_float_str(l.alpha))));
    if let Some(d) = dim {
        md.entry("ss_network_dim".into()).or_insert(d);
    }
    if let Some(a) = alpha {
        md.entry("ss_network_alpha".into()).or_insert(a);
    }
    let conv_dim = common_or_dynamic(conv().map(|l| l.rank().to_string()));
    let conv_alpha = common_or_dynamic(conv().map(|l| trim_alpha(l.alpha)));
    // json.dumps of sd-scripts' net kwargs (strings, default separators)
    let args = match (conv_dim, conv_alpha) {
        (Some(d), Some(a)) => format!("{{\"conv_dim\": \"{d}\", \"conv_alpha\": \"{a}\"}}"),
        _ => "null".to_string(),
    };
    md.entry("ss_network_args".into()).or_insert(args);
    let version = if family == "sdxl" {
        "sdxl_base_v1-0"
    } else {
        "sd_v1"
    };
    md.entry("ss_base_model_version".into())
        .or_insert_with(|| version.into());
    md.entry("ss_v2".into()).or_insert_with(|| "False".into());
    md
}

/// How `resize` changed the ranks, for the `ss_*` keys sd-scripts' resize_lora.py updates.
pub enum ResizeNote<'a> {
    Fixed {
        new_rank: usize,
        new_conv_rank: usize,
    },
    Dynamic {
        method: &'a str,
        param: f64,
    },
}

/// Update kohya metadata after a resize, as resize_lora.py does: `ss_training_comment` gets
/// "dimension is resized from OLD to NEW[ (conv: C)]; " (or "Dynamic resize with METHOD: PARAM
/// from OLD; ") in front of the old comment, `ss_network_dim` / `ss_network_alpha` become the new
/// rank and the alpha of the last module in file order (or "Dynamic").
pub fn note_resize(adapter: &mut Adapter, old_dim: usize, note: ResizeNote<'_>) {
    let last_alpha = last_module_in_file_order(adapter)
        .and_then(|p| adapter.layers.get(&p))
        .map(|l| python_float_str(l.alpha));
    let md = &mut adapter.meta.source_metadata;
    let old_comment = md.get("ss_training_comment").cloned().unwrap_or_default();
    let (comment, dim, alpha) = match note {
        ResizeNote::Fixed {
            new_rank,
            new_conv_rank,
        } => {
            let conv = if new_conv_rank == new_rank {
                String::new()
            } else {
                format!(" (conv: {new_conv_rank})")
            };
            (
                format!("dimension is resized from {old_dim} to {new_rank}{conv}"),
                new_rank.to_string(),
                last_alpha.unwrap_or_else(|| "Dynamic".into()),
            )
        }
        ResizeNote::Dynamic { method, param } => (
            format!(
                "Dynamic resize with {method}: {} from {old_dim}",
                python_float_str(param)
            ),
            "Dynamic".to_string(),
            "Dynamic".to_string(),
        ),
    };
    md.insert(
        "ss_training_comment".into(),
        format!("{comment}; {old_comment}"),
    );
    md.insert("ss_network_dim".into(), dim);
    md.insert("ss_network_alpha".into(), alpha);
}

/// Replace the first input's metadata with what sd-scripts' merge scripts write for a merged
/// file: its training keys (`ss_tag_frequency`, learning rates, …) describe one input only, so
/// only the keys that describe the model stay (`ss_base_model_version`, `ss_v2`,
/// `ss_network_module`, `modelspec.*`); `modelspec.title` becomes `title` and
/// `modelspec.merged_from` lists the inputs. `ss_network_dim`/`_alpha`/`_args` are then
/// computed from the merged layers by the writer.
pub fn note_merge(adapter: &mut Adapter, title: &str, merged_from: &[String]) {
    const KEEP: [&str; 3] = ["ss_base_model_version", "ss_v2", "ss_network_module"];
    let source_is_kohya = adapter.meta.source_format == Some(Format::Kohya);
    let old = std::mem::take(&mut adapter.meta.source_metadata);
    let md = &mut adapter.meta.source_metadata;
    if source_is_kohya {
        for (k, v) in old {
            if KEEP.contains(&k.as_str())
                || (k.starts_with("modelspec.")
                    && k != "modelspec.date"
                    && k != "modelspec.hash_sha256")
            {
                md.insert(k, v);
            }
        }
    }
    md.insert("modelspec.title".into(), title.into());
    md.insert("modelspec.merged_from".into(), merged_from.join(", "));
    // the writer keeps source metadata only from kohya sources
    adapter.meta.source_format = Some(Format::Kohya);
}

/// The canonical path of the module whose tensors come last in a kohya file (names sorted).
fn last_module_in_file_order(adapter: &Adapter) -> Option<String> {
    let table = sd::table(family_for(adapter).ok()?)?;
    adapter
        .layers
        .keys()
        .filter_map(|p| table.by_canonical(p).map(|r| (r.kohya.as_str(), p)))
        .max()
        .map(|(_, p)| p.clone())
}

/// Write `adapter` as one kohya LoRA file.
pub fn write(
    adapter: &Adapter,
    out: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<WriteReport> {
    if !adapter.full.is_empty() {
        let names: Vec<&str> = adapter.full.keys().map(|s| s.as_str()).collect();
        return Err(Error::Invalid(format!(
            "the adapter carries fully trained tensors (PEFT modules_to_save: {}); kohya LoRA files cannot hold them",
            names.join(", ")
        )));
    }
    let family = family_for(adapter)?;
    let table =
        sd::table(family).ok_or_else(|| Error::Invalid(format!("no table for {family}")))?;
    let mut alphas = Vec::new();
    let mut rows = Vec::new();
    for (path, layer) in &adapter.layers {
        let refuse = |what: &str| {
            Err(Error::module(
                path,
                format!(
                    "{what}; kohya LoRA files cannot hold it (write PEFT or diffusers instead)"
                ),
            ))
        };
        if layer.kind == LayerKind::Embedding {
            return refuse("an embedding LoRA");
        }
        if layer.magnitude.is_some() {
            return refuse(
                "a DoRA magnitude vector (kohya's dora_scale is a different convention)",
            );
        }
        if layer.bias.is_some() {
            return refuse("a lora_B bias");
        }
        let row = table
            .by_canonical(path)
            .ok_or_else(|| Error::module(path, format!("not a module of the {family} table")))?;
        check_row_shape(Path::new(path), &row.kohya, row, layer)
            .map_err(|e| Error::module(path, e.to_string()))?;
        alphas.push(Tensor::alpha(layer.alpha, layer.dtype())?);
        rows.push((row, layer));
    }
    // linear factors are 2-D in kohya files, 1x1 and 3x3 convs 4-D
    let mut names: Vec<(String, &Tensor)> = Vec::new();
    for ((row, layer), alpha) in rows.iter().zip(&alphas) {
        names.push((format!("{}.{DOWN}", row.kohya), &layer.down));
        names.push((format!("{}.{UP}", row.kohya), &layer.up));
        names.push((format!("{}.{ALPHA}", row.kohya), alpha));
    }
    let mut md = build_metadata(adapter, family);
    // The hashes go into the header, which is written last: the data region is written while
    // it is hashed, under a header reserved with placeholders of the hashes' fixed widths.
    let mut reserved = md.clone();
    reserved.insert(MODEL_HASH.into(), "0".repeat(64));
    reserved.insert(LEGACY_HASH.into(), "0".repeat(8));
    let pending: Vec<PendingTensor> = names
        .iter()
        .map(|(n, t)| PendingTensor::from_tensor(n.clone(), t))
        .collect();
    let (hashes, staged) = rayon::join(
        || kohya_hashes(&names, &md),
        || stage_safetensors(out, &pending, Some(&reserved), progress),
    );
    let (hashes, staged) = (hashes?, staged?);
    md.insert(MODEL_HASH.into(), hashes.model);
    md.insert(LEGACY_HASH.into(), hashes.legacy);
    staged.finish(Some(&md))
}

const MODEL_HASH: &str = "sshs_model_hash";
const LEGACY_HASH: &str = "sshs_legacy_hash";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_float_formatting_matches_str_float() {
        let cases = [
            (8.0, "8.0"),
            (0.5, "0.5"),
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (123456.75, "123456.75"),
            (-2.0, "-2.0"),
            (0.0, "0.0"),
        ];
        for (x, want) in cases {
            assert_eq!(python_float_str(x), want, "{x}");
        }
    }
}
