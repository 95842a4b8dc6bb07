//! PEFT-style adapter → llama.cpp GGUF LoRA, as `convert_lora_to_gguf.py` lays it out, with
//! what that script gets wrong done right: per-module alphas and rsLoRA are kept (llama.cpp has
//! one `adapter.lora.alpha` per file, so a module whose `alpha/r` differs has the ratio folded
//! into its B), and architectures without a name table are refused instead of guessed.

use super::base::GgufBase;
use super::rope::permute_rows;
use crate::adapter::{Adapter, LayerKind, LoraLayer};
use crate::error::{Error, Result};
use crate::formats::gguf::{to_gguf, Transform};
use crate::io::gguf::{write_gguf, GgufValue, PendingGgufTensor};
use crate::io::WriteReport;
use crate::quant::{quantize, QuantType};
use indexmap::IndexMap;
use std::borrow::Cow;
use std::path::Path;

/// One tensor to write: its f32 values (row-major), row-major shape and storage type.
struct Planned<'a> {
    name: String,
    layer: &'a LoraLayer,
    part: Part,
    shape: [usize; 2],
    ty: QuantType,
}

#[derive(Clone, Copy)]
enum Part {
    /// `lora_a`: PEFT A as stored (`[r, in]`), or transposed for the token embedding.
    A { transpose: bool },
    /// `lora_b`: PEFT B (`[out, r]`) times `fold`, rows permuted for llama-arch q/k.
    B {
        fold: f64,
        rope_heads: Option<usize>,
    },
}

/// The file's single alpha: the most common per-module alpha (fewest modules need folding);
/// ties go to the larger, so an all-rsLoRA file gets `alpha·√r`.
fn file_alpha(adapter: &Adapter) -> f64 {
    let mut counts: Vec<(f64, usize)> = Vec::new();
    for l in adapter.layers.values() {
        match counts.iter_mut().find(|(a, _)| *a == l.alpha) {
            Some((_, n)) => *n += 1,
            None => counts.push((l.alpha, 1)),
        }
    }
    counts
        .into_iter()
        .max_by(|x, y| x.1.cmp(&y.1).then(x.0.total_cmp(&y.0)))
        .map_or(0.0, |(a, _)| a)
}

/// Refuse what llama.cpp cannot load, with the reason.
fn check_representable(adapter: &Adapter, base: &GgufBase) -> Result<()> {
    if let Some(name) = adapter.full.keys().next() {
        return Err(Error::Invalid(format!(
            "the adapter carries fully trained tensors ({name}{}; PEFT modules_to_save, e.g. resized embeddings for new tokens). llama.cpp loads only lora_a/lora_b pairs onto an unchanged base, so convert_lora_to_gguf.py refuses these too: retrain without new tokens / modules_to_save, or bake the adapter into the base model instead",
            if adapter.full.len() > 1 { format!(" and {} more", adapter.full.len() - 1) } else { String::new() }
        )));
    }
    for (path, l) in &adapter.layers {
        if l.magnitude.is_some() {
            return Err(Error::module(path, "DoRA magnitudes cannot be expressed in a llama.cpp LoRA (it has no DoRA support); bake the adapter into the base model instead"));
        }
        if l.bias.is_some() {
            return Err(Error::module(
                path,
                "LoRA biases (lora_B.bias) cannot be expressed in a llama.cpp LoRA",
            ));
        }
        if l.kind == LayerKind::Conv {
            return Err(Error::module(
                path,
                "convolution LoRA has no llama.cpp representation",
            ));
        }
    }
    let arch = &base.arch.arch;
    let unmapped: Vec<&str> = adapter
        .layers
        .keys()
        .filter(|p| to_gguf(arch, p).is_none())
        .map(|p| p.as_str())
        .take(8)
        .collect();
    if !unmapped.is_empty() {
        return Err(Error::Invalid(format!(
            "no llama.cpp tensor for module(s) {} on architecture {arch} (base {}); llama.cpp's {arch} graph applies LoRA only to the tensors in formats/gguf_names.tsv",
            unmapped.join(", "),
            base.source
        )));
    }
    Ok(())
}

fn plan<'a>(
    adapter: &'a Adapter,
    base: &GgufBase,
    alpha: f64,
    dtype: Option<QuantType>,
) -> Result<Vec<Planned<'a>>> {
    let arch = &base.arch.arch;
    let mut out = Vec::with_capacity(adapter.layers.len() * 2);
    let mut mismatches = Vec::new();
    for (path, l) in &adapter.layers {
        let (tensor, transform) =
            to_gguf(arch, path).ok_or_else(|| Error::module(path, "unmapped"))?;
        if transform == Transform::LmHead && base.tied_embeddings {
            return Err(Error::module(path, format!(
                "the base ({}) ties lm_head to the token embedding, so its GGUF has no output.weight for this LoRA to attach to (llama.cpp would refuse the file; convert_lora_to_gguf.py raises \"lm_head is present in adapter, but is ignored in base model\"). Retrain without lm_head in target_modules", base.source
            )));
        }
        let r = l.rank();
        let (out_dim, in_dim) = (l.up.shape()[0], l.in_features());
        let embed = l.kind == LayerKind::Embedding;
        if let Some(shapes) = &base.tensor_shapes {
            // base GGUF shape (row-major): [out, in]; the token embedding: [vocab, embd]
            let want = if embed {
                vec![in_dim, out_dim]
            } else {
                vec![out_dim, in_dim]
            };
            match shapes.get(&tensor) {
                Some(s) if *s == want => {}
                Some(s) => mismatches.push(format!(
                    "{path} → {tensor}: adapter needs {want:?}, base has {s:?}"
                )),
                None => mismatches.push(format!("{path} → {tensor}: not in the base model")),
            }
        }
        let rope_heads = match transform {
            Transform::RopeQ if base.arch.rope_permute => Some(base.n_head),
            Transform::RopeK if base.arch.rope_permute => Some(base.n_kv_head),
            _ => None,
        };
        let ty = |row_len: usize| -> QuantType {
            let want = dtype.unwrap_or(QuantType::from_float(l.dtype()));
            // as the reference converter: a block type that does not fit the row falls back to F16
            if row_len.is_multiple_of(want.block_size()) {
                want
            } else {
                QuantType::F16
            }
        };
        let a_shape = if embed { [in_dim, r] } else { [r, in_dim] };
        out.push(Planned {
            name: format!("{tensor}.lora_a"),
            layer: l,
            part: Part::A { transpose: embed },
            shape: a_shape,
            ty: ty(a_shape[1]),
        });
        out.push(Planned {
            name: format!("{tensor}.lora_b"),
            layer: l,
            part: Part::B {
                fold: l.alpha / alpha,
                rope_heads,
            },
            shape: [out_dim, r],
            ty: ty(r),
        });
    }
    if !mismatches.is_empty() {
        return Err(Error::BaseMismatch {
            base: base.source.clone(),
            problems: mismatches,
        });
    }
    Ok(out)
}

/// The bytes of one planned tensor.
fn tensor_bytes(p: &Planned<'_>) -> Result<Vec<u8>> {
    let values = match p.part {
        Part::A { transpose } => {
            let a = p.layer.down.to_f32();
            if transpose {
                let (r, n) = (p.shape[1], p.shape[0]);
                let mut t = vec![0.0f32; a.len()];
                for k in 0..r {
                    for j in 0..n {
                        t[j * r + k] = a[k * n + j];
                    }
                }
                t
            } else {
                a
            }
        }
        Part::B { fold, rope_heads } => {
            let mut b = p.layer.up.to_f32();
            if fold != 1.0 {
                for x in &mut b {
                    *x = (f64::from(*x) * fold) as f32;
                }
            }
            match rope_heads {
                Some(h) => permute_rows(&b, p.shape[1], h, false)?,
                None => b,
            }
        }
    };
    quantize(p.ty, &values, p.shape[1])
}

/// Write `adapter` as a llama.cpp LoRA for `base`. `dtype`: storage type of the factors
/// (default: the adapter's own float type); a block type falls back to F16 for rows whose
/// length is not a multiple of its block, as `convert_lora_to_gguf.py` does.
pub fn write(
    adapter: &Adapter,
    base: &GgufBase,
    out: &Path,
    dtype: Option<QuantType>,
    progress: &dyn Fn(u64),
) -> Result<WriteReport> {
    check_representable(adapter, base)?;
    if adapter.layers.is_empty() {
        return Err(Error::Invalid(
            "the adapter has no LoRA modules to write".into(),
        ));
    }
    let alpha = file_alpha(adapter);
    let planned = plan(adapter, base, alpha, dtype)?;
    let mut kv: IndexMap<String, GgufValue> = IndexMap::new();
    kv.insert(
        "general.architecture".into(),
        GgufValue::String(base.arch.arch.clone()),
    );
    kv.insert("general.type".into(), GgufValue::String("adapter".into()));
    kv.insert("adapter.type".into(), GgufValue::String("lora".into()));
    if let Some(name) = out.file_stem().map(|s| s.to_string_lossy().into_owned()) {
        kv.insert("general.name".into(), GgufValue::String(name));
    }
    kv.insert("adapter.lora.alpha".into(), GgufValue::F32(alpha as f32));
    kv.insert("general.quantization_version".into(), GgufValue::U32(2));
    let tensors: Vec<PendingGgufTensor<'_>> = planned
        .iter()
        .map(|p| PendingGgufTensor {
            written: None,
            name: p.name.clone(),
            dims: vec![p.shape[1] as u64, p.shape[0] as u64],
            ggml_type: p.ty.ggml_type(),
            data: Box::new(move || tensor_bytes(p).map(Cow::Owned)),
        })
        .collect();
    let bytes = write_gguf(out, &kv, &tensors, progress)?;
    Ok(WriteReport {
        bytes,
        tensors: tensors.len(),
    })
}
