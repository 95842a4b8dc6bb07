//! Writing a canonical Flux / SD3 adapter in the fused layouts loaders read: kohya sd-scripts
//! (`lora_unet_double_blocks_0_img_attn_qkv`, what ComfyUI, Forge and sd-scripts load) and
//! BFL / ComfyUI (`diffusion_model.double_blocks.0.img_attn.qkv`). Split canonical modules are
//! fused exactly (`adapter::fused::fuse`; a part the adapter lacks is zero rows, which is its
//! exact ΔW), swapped halves are swapped back. The diffusers layout needs no table: the
//! canonical paths are its names (`adapter::diffusers`).

use crate::adapter::fused::{fuse, swap_halves, FusePart};
use crate::adapter::kohya::python_float_str;
use crate::adapter::kohya_hash::kohya_hashes;
use crate::adapter::{Adapter, Format, LayerKind, LoraLayer};
use crate::error::{Error, Result};
use crate::formats::dit::{self, DitTable, Rows};
use crate::io::{write_safetensors, PendingTensor, WriteReport};
use crate::tensor::{DType, Tensor};
use indexmap::IndexMap;
use std::collections::BTreeMap;
use std::path::Path;

/// The fused layouts this module writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteLayout {
    Kohya,
    Comfy,
}

/// The Flux / SD3 family whose table knows every layer of `adapter` at its shape: the one the
/// adapter says, else the first that fits.
pub fn guess_family(adapter: &Adapter) -> Option<&'static str> {
    let fits = |fam: &str| {
        dit::table(fam).is_some_and(|t| {
            !adapter.layers.is_empty()
                && adapter.layers.iter().all(|(p, l)| {
                    t.by_canonical(p).is_some_and(|r| {
                        (r.out, r.in_, (r.kh, r.kw))
                            == (l.out_features(), l.in_features(), l.kernel())
                    })
                })
        })
    };
    let own = adapter.meta.family.as_deref();
    dit::FAMILIES
        .iter()
        .copied()
        .find(|f| Some(*f) == own && fits(f))
        .or_else(|| dit::FAMILIES.iter().copied().find(|f| fits(f)))
}

/// One written module: its name in the layout and its layer on the original module.
struct Module {
    name: String,
    layer: LoraLayer,
}

/// The adapter's layers on the original (fused, unswapped) modules.
fn original_modules(
    adapter: &Adapter,
    table: &DitTable,
    layout: WriteLayout,
) -> Result<Vec<Module>> {
    let mut by_orig: BTreeMap<&str, ()> = BTreeMap::new();
    for (path, layer) in &adapter.layers {
        let row = table.by_canonical(path).ok_or_else(|| {
            Error::module(path, format!("not a module of the {} table", table.family))
        })?;
        let refuse = |what: &str| {
            Err(Error::module(
                path,
                format!(
                    "{what}; kohya and ComfyUI LoRA files cannot hold it (write diffusers instead)"
                ),
            ))
        };
        if layer.magnitude.is_some() {
            return refuse("a DoRA magnitude vector");
        }
        if layer.bias.is_some() {
            return refuse("a lora_B bias");
        }
        if layer.kind == LayerKind::Embedding {
            return refuse("an embedding LoRA");
        }
        by_orig.insert(row.orig.as_str(), ());
    }
    let mut out = Vec::new();
    for orig in by_orig.keys() {
        let parts = table.parts_of(orig);
        let Some(first) = parts.first() else { continue };
        let layer = if parts.len() > 1 {
            let fp: Vec<FusePart> = parts
                .iter()
                .map(|r| FusePart {
                    name: &r.canonical,
                    rows: r.out,
                    layer: adapter.layers.get(&r.canonical),
                })
                .collect();
            let dtypes: Vec<DType> = fp
                .iter()
                .filter_map(|p| p.layer.map(|l| l.dtype()))
                .collect();
            let fused = fuse(orig, &fp, true)?;
            // the fused factors are copies (and zeros) of the parts': keep a dtype they share
            match dtypes.split_first() {
                Some((d, rest)) if rest.iter().all(|x| x == d) => fused.cast(*d)?,
                _ => fused,
            }
        } else {
            let l = &adapter.layers[&first.canonical];
            if first.rows == Rows::SwapHalves {
                swap_halves(orig, l)?
            } else {
                l.clone()
            }
        };
        let name = match layout {
            WriteLayout::Kohya => first.kohya.clone(),
            WriteLayout::Comfy if orig.starts_with("text_encoders.") => orig.to_string(),
            WriteLayout::Comfy => format!("diffusion_model.{orig}"),
        };
        out.push(Module { name, layer });
    }
    Ok(out)
}

/// The single value all items share, or kohya's "Dynamic".
fn common(values: impl Iterator<Item = String>) -> Option<String> {
    let mut it = values;
    let first = it.next()?;
    Some(if it.all(|v| v == first) {
        first
    } else {
        "Dynamic".into()
    })
}

/// Write a Flux / SD3 adapter as one `.safetensors` file in `layout`.
pub fn write(
    adapter: &Adapter,
    layout: WriteLayout,
    out: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<WriteReport> {
    if !adapter.full.is_empty() {
        return Err(Error::Invalid(
            "the adapter carries fully trained tensors (modules_to_save), which kohya / ComfyUI LoRA files cannot hold".into(),
        ));
    }
    let family = guess_family(adapter).ok_or_else(|| {
        let example = adapter.layers.keys().next().cloned().unwrap_or_default();
        Error::Invalid(format!(
            "this adapter is not a Flux.1 or SD3/SD3.5 adapter whose every module is in loratool's tables at its shape (e.g. '{example}')"
        ))
    })?;
    let table =
        dit::table(family).ok_or_else(|| Error::Invalid(format!("no table for {family}")))?;
    let modules = original_modules(adapter, table, layout)?;
    let (down_suffix, up_suffix) = ("lora_down.weight", "lora_up.weight");
    let alphas: Vec<Tensor> = modules
        .iter()
        .map(|m| Tensor::alpha(m.layer.alpha, m.layer.dtype()))
        .collect::<Result<_>>()?;
    let mut names: Vec<(String, &Tensor)> = Vec::new();
    for (m, a) in modules.iter().zip(&alphas) {
        names.push((format!("{}.{down_suffix}", m.name), &m.layer.down));
        names.push((format!("{}.{up_suffix}", m.name), &m.layer.up));
        names.push((format!("{}.alpha", m.name), a));
    }
    let mut md: IndexMap<String, String> = IndexMap::new();
    if adapter.meta.source_format == Some(Format::Kohya) {
        // training keys stay; hashes and network keys describe the source's layers (and a
        // source's split_qkv has been applied to the scales already)
        for (k, v) in &adapter.meta.source_metadata {
            if !(k.starts_with("sshs_") || k.starts_with("ss_network_")) {
                md.insert(k.clone(), v.clone());
            }
        }
    }
    if layout == WriteLayout::Kohya {
        let module = if family == "flux1" {
            "networks.lora_flux"
        } else {
            "networks.lora_sd3"
        };
        md.insert("ss_network_module".into(), module.into());
        if let Some(d) = common(modules.iter().map(|m| m.layer.rank().to_string())) {
            md.insert("ss_network_dim".into(), d);
        }
        if let Some(a) = common(modules.iter().map(|m| python_float_str(m.layer.alpha))) {
            md.insert("ss_network_alpha".into(), a);
        }
        let hashes = kohya_hashes(&names, &md)?;
        md.insert("sshs_model_hash".into(), hashes.model);
        md.insert("sshs_legacy_hash".into(), hashes.legacy);
    }
    let pending: Vec<PendingTensor> = names
        .iter()
        .map(|(n, t)| PendingTensor::from_tensor(n.clone(), t))
        .collect();
    write_safetensors(out, &pending, Some(&md), progress)
}
