//! Reading a Flux / SD3 adapter file in any layout of [`super::Layout`]: group the keys by
//! module, pick the table (family) that knows the most modules at their shapes, turn each
//! module into one LoRA layer on its source module (plain factors kept as stored, LyCORIS
//! modules converted exactly), then split fused modules into their canonical parts and undo
//! swapped halves.

use super::names::{split_key, Entry, Layout, NameIndex};
use crate::adapter::fused;
use crate::adapter::lycoris::{self, ModuleTensors};
use crate::adapter::{report_unknown, Adapter, AdapterMeta, LayerKind, LoraLayer, ReadOptions};
use crate::error::{Error, Result};
use crate::formats::dit;
use crate::io::SafetensorsFile;
use crate::tensor::Tensor;
use std::collections::BTreeMap;
use std::path::Path;

/// Key prefixes only Flux / SD3 files use (the kohya codec hands such files here).
const DIT_PREFIXES: [&str; 12] = [
    "lora_unet_double_blocks_",
    "lora_unet_single_blocks_",
    "lora_unet_joint_blocks_",
    "lora_unet_final_layer_",
    "lora_unet_img_in",
    "lora_unet_txt_in",
    "lora_unet_x_embedder",
    "lora_unet_context_embedder",
    "lora_te3_",
    "lora_transformer_",
    "lycoris_",
    "diffusion_model.",
];

/// Whether a file with these tensor names is a Flux / SD3 adapter (any layout).
pub fn looks_like_dit<'a>(mut keys: impl Iterator<Item = &'a str>) -> bool {
    keys.any(|k| {
        DIT_PREFIXES.iter().any(|p| k.starts_with(p))
            || k.starts_with("text_encoders.")
            || k.contains(".processor.") && k.contains("_lora")
    })
}

/// Each module's tensor keys by local name (`lora_down`, `alpha`, `hada_w1_a`, …).
type Grouped = BTreeMap<String, BTreeMap<&'static str, String>>;

/// sd-scripts' `split_qkv=True` (from `ss_network_args`): fused modules were trained as
/// separate q/k/v(/mlp) LoRAs of rank r each, saved block-diagonally with rank J·r and the alpha
/// of one part.
fn split_qkv(md: &indexmap::IndexMap<String, String>) -> bool {
    md.get("ss_network_args")
        .and_then(|a| serde_json::from_str::<serde_json::Value>(a).ok())
        .and_then(|v| v.get("split_qkv").cloned())
        .is_some_and(|v| v == serde_json::json!("True") || v == serde_json::json!(true))
}

/// How many modules `index` resolves, and how many of those at their table shape.
fn score(file: &SafetensorsFile, index: &NameIndex, modules: &Grouped) -> (usize, usize) {
    let mut named = 0;
    let mut fit = 0;
    for (name, keys) in modules {
        let Some(e) = index.get(name) else { continue };
        named += 1;
        if shapes_fit(file, e, keys) {
            fit += 1;
        }
    }
    (fit, named)
}

/// Whether the module's up/down factor shapes fit the entry's output rows and input width
/// (headers only; LyCORIS modules are checked when converted).
fn shapes_fit(file: &SafetensorsFile, e: &Entry, keys: &BTreeMap<&'static str, String>) -> bool {
    let shape = |local: &str| {
        keys.get(local)
            .and_then(|k| file.info(k))
            .map(|i| i.shape.clone())
    };
    match (shape("lora_down"), shape("lora_up")) {
        (Some(d), Some(u)) => {
            let in_flat: usize = d.iter().skip(1).product();
            let row = e.parts[0].row;
            u.first() == Some(&e.out()) && (in_flat == row.in_ * row.kh * row.kw)
        }
        _ => true,
    }
}

/// Read a Flux / SD3 adapter file in any layout (see the module docs); `source_format` is the
/// layout most of its modules are named in.
pub fn read(path: &Path, opts: ReadOptions) -> Result<Adapter> {
    let file = SafetensorsFile::open(path)?;
    let md = file.metadata().clone();
    let mut modules: Grouped = BTreeMap::new();
    let mut unknown = Vec::new();
    for key in file.tensors().keys() {
        match split_key(key) {
            Some((module, local)) => {
                let slot = modules.entry(module.to_string()).or_default();
                if let Some(prev) = slot.insert(local, key.clone()) {
                    return Err(Error::malformed(
                        path,
                        format!("module '{module}' has both '{prev}' and '{key}' for its {local}"),
                    ));
                }
            }
            None => unknown.push(key.clone()),
        }
    }
    // the family whose table knows the most modules at their shapes
    let mut best: Option<(NameIndex, (usize, usize))> = None;
    for fam in dit::FAMILIES {
        let Some(table) = dit::table(fam) else {
            continue;
        };
        let index = NameIndex::new(table);
        let s = score(&file, &index, &modules);
        if best.as_ref().is_none_or(|(_, b)| s > *b) {
            best = Some((index, s));
        }
    }
    let Some((index, (_, named))) = best.filter(|(_, s)| s.1 > 0) else {
        return Err(Error::unsupported(
            path,
            "no module of this file is a Flux.1 or SD3/SD3.5 module in any layout loratool knows (kohya lora_unet_double_blocks_…/joint_blocks_…, diffusion_model.…, lora_transformer_…, XLabs …processor…, lycoris_…)",
        ));
    };
    let family = index.table.family;
    let kohya_split_qkv = split_qkv(&md);
    let mut meta = AdapterMeta {
        family: Some(family.to_string()),
        source_metadata: md,
        ..Default::default()
    };
    let mut layers: BTreeMap<String, LoraLayer> = BTreeMap::new();
    let mut from: BTreeMap<String, String> = BTreeMap::new();
    let mut layouts: BTreeMap<Layout, usize> = BTreeMap::new();
    for (name, keys) in &modules {
        let Some(entry) = index.get(name) else {
            unknown.extend(keys.values().cloned());
            continue;
        };
        *layouts.entry(entry.layout).or_default() += 1;
        let mut tensors = ModuleTensors::new();
        for (&local, key) in keys {
            tensors.insert(local, file.tensor(key)?);
        }
        let on = |e: Error| Error::unsupported(path, e.to_string());
        let (mut layer, origin) = source_layer(name, entry, &tensors).map_err(on)?;
        if kohya_split_qkv && entry.layout == Layout::Kohya && entry.parts.len() > 1 {
            let ranges = ranges(entry);
            layer = fused::sd_scripts_split_qkv(name, &layer, &ranges).map_err(on)?;
        }
        for (canonical, part) in distribute(name, entry, &layer).map_err(on)? {
            if let Some(prev) = from.insert(canonical.clone(), name.clone()) {
                return Err(Error::malformed(
                    path,
                    format!("module {canonical} is given twice, by '{prev}' and '{name}'"),
                ));
            }
            if let Some(o) = &origin {
                meta.lycoris.insert(canonical.clone(), o.clone());
            }
            layers.insert(canonical, part);
        }
    }
    if kohya_split_qkv {
        meta.warnings.push(
            "ss_network_args has split_qkv=True: fused q/k/v(/mlp) modules read at the scale sd-scripts trained them (alpha × parts), not the fused file's nominal alpha/rank".into(),
        );
    }
    meta.warnings
        .extend(lycoris::truncation_warnings(&meta.lycoris));
    report_unknown(
        path,
        &unknown,
        &format!("not in loratool's {family} table ({named} modules are)"),
        opts,
        &mut meta.warnings,
    )?;
    if layers.is_empty() {
        return Err(Error::unsupported(path, "no LoRA module found"));
    }
    // the layout most modules are named in (text encoders share kohya's names)
    meta.source_format = layouts
        .iter()
        .filter(|(l, _)| **l != Layout::Kohya || layouts.len() == 1)
        .max_by_key(|(_, n)| **n)
        .or_else(|| layouts.iter().next())
        .map(|(l, _)| l.format());
    Ok(Adapter {
        layers,
        full: BTreeMap::new(),
        meta,
    })
}

/// Row ranges of the entry's parts, named by canonical path.
fn ranges(entry: &Entry) -> Vec<(String, std::ops::Range<usize>)> {
    entry
        .parts
        .iter()
        .map(|p| (p.row.canonical.clone(), p.range.clone()))
        .collect()
}

/// The module as one LoRA layer on its source module (`out` = the entry's rows).
fn source_layer(
    name: &str,
    entry: &Entry,
    tensors: &ModuleTensors,
) -> Result<(LoraLayer, Option<lycoris::Origin>)> {
    let row = entry.parts[0].row;
    let (out, in_) = (entry.out(), entry.in_());
    if lycoris::needs_conversion(tensors.keys().copied()) {
        let opts = lycoris::Options {
            target: Some(lycoris::Target {
                kind: row.kind,
                out,
                in_,
                kh: row.kh,
                kw: row.kw,
            }),
            ..lycoris::Options::lycoris()
        };
        let c = lycoris::convert(name, tensors, &opts)?;
        return Ok((c.layer, Some(c.origin)));
    }
    let (down, up) = match (tensors.get("lora_down"), tensors.get("lora_up")) {
        (Some(d), Some(u)) => (d.clone(), u.clone()),
        (d, _) => {
            return Err(Error::module(
                name,
                format!(
                    "has {} but no {}: a LoRA module needs both factors",
                    if d.is_some() {
                        "a down (A) factor"
                    } else {
                        "an up (B) factor"
                    },
                    if d.is_some() { "up (B)" } else { "down (A)" }
                ),
            ))
        }
    };
    let (down, up) = shape_for(row.kind, down, up)?;
    let rank = down.shape().first().copied().unwrap_or(0);
    let alpha = match tensors.get("alpha") {
        None => rank as f64,
        Some(t) => {
            let v = t.scalar_value().ok_or_else(|| {
                Error::module(
                    name,
                    format!("alpha must be a single number, got shape {:?}", t.shape()),
                )
            })?;
            // kohya / ComfyUI: a zero alpha means alpha = rank (scale 1)
            if v == 0.0 {
                rank as f64
            } else {
                v
            }
        }
    };
    let layer = LoraLayer::new(name, down, up, alpha, row.kind)?;
    let got = (layer.out_features(), layer.in_features(), layer.kernel());
    if got != (out, in_, (row.kh, row.kw)) {
        return Err(Error::module(
            name,
            format!(
                "has out {} / in {} / kernel {:?}, but the {} module it names is out {out} / in {in_} / kernel {:?}: the LoRA is for a model of another width",
                got.0, got.1, got.2, family_label(entry), (row.kh, row.kw)
            ),
        ));
    }
    Ok((layer, None))
}

fn family_label(entry: &Entry) -> &'static str {
    if entry.parts[0].row.orig.contains("joint_blocks") {
        "SD3"
    } else {
        "Flux / SD3"
    }
}

/// Linear factors are 2-D; some tools store them `[r, in, 1, 1]` / `[out, r, 1, 1]`.
fn shape_for(kind: LayerKind, down: Tensor, up: Tensor) -> Result<(Tensor, Tensor)> {
    let fix = |t: Tensor| -> Result<Tensor> {
        let s = t.shape().to_vec();
        match kind {
            LayerKind::Conv if s.len() == 2 => t.reshaped(vec![s[0], s[1], 1, 1]),
            LayerKind::Linear if s.len() == 4 && s[2] == 1 && s[3] == 1 => {
                t.reshaped(vec![s[0], s[1]])
            }
            _ => Ok(t),
        }
    };
    Ok((fix(down)?, fix(up)?))
}

/// The source module's layer as canonical layers: split by rows, halves swapped back.
fn distribute(name: &str, entry: &Entry, layer: &LoraLayer) -> Result<Vec<(String, LoraLayer)>> {
    if let [part] = entry.parts.as_slice() {
        let l = if part.swap {
            fused::swap_halves(name, layer)?
        } else {
            layer.clone()
        };
        return Ok(vec![(part.row.canonical.clone(), l)]);
    }
    // a part whose rows of B are all zero while others are not has ΔW = 0 exactly: a writer
    // filled in a module the adapter did not train (fusing needs every part), so it is not a
    // module of the adapter (an untrained all-zero LoRA keeps all its parts)
    let mut parts = fused::split(name, layer, &ranges(entry))?;
    let nonzero: Vec<bool> = parts
        .iter()
        .map(|(_, l)| l.up.to_f32().iter().any(|&x| x != 0.0))
        .collect();
    if nonzero.iter().any(|&n| n) {
        let mut keep = nonzero.into_iter();
        parts.retain(|_| keep.next().unwrap_or(true));
    }
    Ok(parts)
}
