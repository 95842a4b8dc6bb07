//! Bake LoRA adapters into a GGUF model: `W += Σ wᵢ·(αᵢ/rᵢ)·Bᵢ·Aᵢ` on each touched tensor,
//! with the base's q/k RoPE row permutation applied to `Bᵢ` (llama arch) and the token
//! embedding in llama.cpp's `[vocab, embd]` orientation.
//!
//! Touched tensors are dequantized to f32, summed, and re-quantized to their own type by default
//! (llama-export-lora writes them F16, losing the base's quantization; `export_lora_compat`
//! does the same for parity). Untouched tensors are copied byte for byte. Every adapter module
//! must find its base tensor with the right shape before anything is written.
//!
//! Memory: one base tensor in f32 at a time, plus the adapters' factors.

use crate::adapter::gguf::base::from_gguf;
use crate::adapter::gguf::rope::permute_rows;
use crate::adapter::{LayerKind, LoraLayer};
use crate::error::{Error, Result};
use crate::formats::gguf::{to_gguf, Transform};
use crate::io::gguf::{write_gguf, GgufFile, GgufValue, PendingGgufTensor};
use crate::linalg::add_low_rank;
use crate::quant::{dequantize, quantize, QuantType};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

pub use super::BakeInput;

/// What happened to one touched tensor.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BakedTensor {
    pub name: String,
    pub adapters: usize,
    pub from: &'static str,
    pub to: &'static str,
}

/// `c·U·V` to add to a base tensor: `U` is `rows × r`, `V` is `r × cols`, row-major.
struct Delta {
    coef: f32,
    u: Vec<f32>,
    v: Vec<f32>,
    r: usize,
}

fn delta_for(
    layer: &LoraLayer,
    transform: Transform,
    heads: Option<usize>,
    coef: f64,
) -> Result<Delta> {
    let r = layer.rank();
    let (a, b) = (layer.down.to_f32(), layer.up.to_f32());
    let coef = (coef * layer.scale()) as f32;
    if transform == Transform::Embed {
        // llama.cpp's token_embd is [vocab, embd]; PEFT's ΔE is (B·A)ᵀ = Aᵀ·Bᵀ
        let (vocab, embd) = (layer.in_features(), layer.out_features());
        let mut u = vec![0f32; vocab * r];
        for k in 0..r {
            for j in 0..vocab {
                u[j * r + k] = a[k * vocab + j];
            }
        }
        let mut v = vec![0f32; r * embd];
        for i in 0..embd {
            for k in 0..r {
                v[k * embd + i] = b[i * r + k];
            }
        }
        return Ok(Delta { coef, u, v, r });
    }
    let u = match heads {
        Some(h) => permute_rows(&b, r, h, false)?,
        None => b,
    };
    Ok(Delta { coef, u, v: a, r })
}

/// `w += Σ c·U·V`, rows in parallel.
fn add_deltas(w: &mut [f32], cols: usize, deltas: &[Delta]) {
    for d in deltas {
        add_low_rank(w, cols, d.coef, &d.u, &d.v, d.r);
    }
}

/// The base GGUF tensor `path` changes and how, if the base has it with the shape `layer`
/// needs (`[out, in]`; the token embedding `[vocab, embd]`); else why not (text to follow
/// the module's name).
fn fit(
    arch: &str,
    shapes: Option<&std::collections::HashMap<String, Vec<usize>>>,
    path: &str,
    layer: &LoraLayer,
) -> std::result::Result<(String, Transform), String> {
    let Some((tensor, transform)) = to_gguf(arch, path) else {
        return Err(format!(": no {arch} tensor for this module"));
    };
    let want = if transform == Transform::Embed {
        vec![layer.in_features(), layer.out_features()]
    } else {
        vec![layer.out_features(), layer.in_features()]
    };
    match shapes.and_then(|s| s.get(&tensor)) {
        Some(s) if *s == want => Ok((tensor, transform)),
        Some(s) => Err(format!(
            " → {tensor}: adapter needs {want:?}, base has {s:?}"
        )),
        None => Err(format!(" → {tensor}: not in the base model")),
    }
}

/// Every module of `adapter` that does not fit the GGUF base `base` (no tensor for it, or a
/// different shape), one line each; empty when all fit. Without tensor shapes (a
/// `config.json` base) only the names are checked.
pub fn gguf_fit_problems(
    base: &crate::adapter::gguf::GgufBase,
    adapter: &crate::adapter::Adapter,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (path, layer) in &adapter.layers {
        if layer.kind == LayerKind::Conv {
            problems.push(format!("{path}: a conv layer has no llama.cpp tensor"));
            continue;
        }
        let shapes = base.tensor_shapes.as_ref();
        match fit(&base.arch.arch, shapes, path, layer) {
            Err(why) if shapes.is_some() || why.starts_with(": no ") => {
                problems.push(format!("{path}{why}"))
            }
            _ => {}
        }
    }
    problems
}

/// Bake `inputs` into `base`, writing `out`.
pub fn bake_gguf(
    base: &GgufFile,
    inputs: &[BakeInput<'_>],
    out: &Path,
    export_lora_compat: bool,
    progress: &dyn Fn(u64),
) -> Result<Vec<BakedTensor>> {
    let info = from_gguf(base)?;
    let arch = info.arch;
    let shapes = info.tensor_shapes.as_ref();
    let mut by_tensor: BTreeMap<String, Vec<Delta>> = BTreeMap::new();
    let mut problems = Vec::new();
    for input in inputs {
        if let Some(name) = input.adapter.full.keys().next() {
            return Err(Error::Invalid(format!(
                "{}: fully trained tensors ({name}, PEFT modules_to_save) are not LoRA deltas; loratool does not bake them into GGUF",
                input.label
            )));
        }
        for (path, layer) in &input.adapter.layers {
            let here = format!("{}: {path}", input.label);
            if layer.magnitude.is_some() || layer.bias.is_some() || layer.kind == LayerKind::Conv {
                problems.push(format!(
                    "{here}: DoRA, LoRA biases and conv layers cannot be baked into a GGUF model"
                ));
                continue;
            }
            let (tensor, transform) = match fit(&arch.arch, shapes, path, layer) {
                Ok(t) => t,
                Err(why) => {
                    problems.push(format!("{here}{why}"));
                    continue;
                }
            };
            let heads = match transform {
                Transform::RopeQ if arch.rope_permute => Some(info.n_head),
                Transform::RopeK if arch.rope_permute => Some(info.n_kv_head),
                _ => None,
            };
            let d = delta_for(layer, transform, heads, input.weight)
                .map_err(|e| Error::module(path, e.to_string()))?;
            by_tensor.entry(tensor).or_default().push(d);
        }
    }
    if !problems.is_empty() {
        return Err(Error::BaseMismatch {
            base: base.path().display().to_string(),
            problems,
        });
    }

    let mut kv = base.kv.clone();
    if export_lora_compat {
        kv.insert("general.file_type".into(), GgufValue::U32(1));
    }
    let mut report = Vec::new();
    let mut pending = Vec::with_capacity(base.tensors.len());
    for (name, t) in &base.tensors {
        let Some(deltas) = by_tensor.get(name) else {
            pending.push(PendingGgufTensor {
                name: name.clone(),
                dims: t.dims.clone(),
                ggml_type: t.ggml_type,
                data: Box::new(move || base.tensor_bytes(name).map(Cow::Borrowed)),
                // the base's pages go once written: RSS stays near one tensor
                written: Some(Box::new(move || base.release(name))),
            });
            continue;
        };
        let from = QuantType::from_ggml_type(t.ggml_type).ok_or_else(|| {
            Error::bad_tensor(
                base.path(),
                name,
                format!(
                    "ggml type {} has no loratool codec, so it cannot be baked",
                    t.ggml_type
                ),
            )
        })?;
        let to = match (export_lora_compat, from) {
            (true, QuantType::F32) => QuantType::F32,
            (true, _) => QuantType::F16,
            (false, f) => f,
        };
        report.push(BakedTensor {
            name: name.clone(),
            adapters: deltas.len(),
            from: from.name(),
            to: to.name(),
        });
        let cols = t.dims[0] as usize;
        pending.push(PendingGgufTensor {
            name: name.clone(),
            dims: t.dims.clone(),
            ggml_type: to.ggml_type(),
            data: Box::new(move || {
                let mut w = dequantize(from, base.tensor_bytes(name)?, cols)?;
                base.release(name);
                add_deltas(&mut w, cols, deltas);
                quantize(to, &w, cols).map(Cow::Owned)
            }),
            written: None,
        });
    }
    write_gguf(out, &kv, &pending, progress)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_deltas_equals_a_dense_product() {
        let (rows, cols, r) = (5, 7, 3);
        let u: Vec<f32> = (0..rows * r).map(|x| (x as f32 * 0.37).sin()).collect();
        let v: Vec<f32> = (0..r * cols).map(|x| (x as f32 * 0.71).cos()).collect();
        let mut w: Vec<f32> = (0..rows * cols).map(|x| x as f32).collect();
        let mut want = w.clone();
        for i in 0..rows {
            for j in 0..cols {
                let s: f32 = (0..r).map(|k| u[i * r + k] * v[k * cols + j]).sum();
                want[i * cols + j] += 0.5 * s;
            }
        }
        add_deltas(&mut w, cols, &[Delta { coef: 0.5, u, v, r }]);
        for (a, b) in w.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}
