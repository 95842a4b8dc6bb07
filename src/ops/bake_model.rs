//! Bake adapters into a Hugging Face model directory (one `model.safetensors` or shards with
//! `model.safetensors.index.json`), as PEFT's `merge_and_unload` does, streaming one tensor at
//! a time: `W += Σ wᵢ·ΔWᵢ` with `ΔW = s·B·A` (transposed for `fan_in_fan_out`, `(B·A)ᵀ` for
//! embeddings, `B·A` reshaped for convolutions), `bias += s·B.bias`, DoRA as PEFT merges it
//! (`W' = m/‖W + ΔW‖_row ⊙ (W + ΔW)`, the only adapter on that module). Computed in f32, stored in
//! the base tensor's dtype; untouched tensors, shard layout, shard metadata, the index and every
//! other file of the directory are copied unchanged.
//!
//! Every adapter module must find its base tensor with the right shape before anything is
//! written. The output directory is built under a temporary name next to it and renamed into
//! place when complete.

use crate::adapter::{Adapter, LayerKind, LoraLayer};
use crate::error::{Error, Result};
use crate::io::model::{TensorStore, INDEX_FILE};
use crate::io::{write_safetensors, PendingTensor};
use crate::tensor::Tensor;
use rayon::prelude::*;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

/// One adapter and its weight.
pub struct ModelBakeInput<'a> {
    pub label: String,
    pub adapter: &'a Adapter,
    pub weight: f64,
}

/// One base tensor the bake changes.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ChangedTensor {
    pub name: String,
    pub adapters: usize,
    pub dtype: String,
}

/// What to add to one base weight.
struct Contribution<'a> {
    layer: &'a LoraLayer,
    coef: f32,
    transpose: bool,
}

/// The base tensor a layer changes and the shape it must have.
fn target(layer: &LoraLayer, path: &str, fan_in_fan_out: bool) -> (String, Vec<usize>, bool) {
    let (out, inp) = (layer.out_features(), layer.in_features());
    match layer.kind {
        LayerKind::Embedding => (format!("{path}.weight"), vec![inp, out], true),
        LayerKind::Conv => {
            let (kh, kw) = layer.kernel();
            (format!("{path}.weight"), vec![out, inp, kh, kw], false)
        }
        LayerKind::Linear if fan_in_fan_out => (format!("{path}.weight"), vec![inp, out], true),
        LayerKind::Linear => (format!("{path}.weight"), vec![out, inp], false),
    }
}

/// `w += c·(B·A)` (or its transpose) for a row-major `w` of `rows × cols`.
fn add_delta(w: &mut [f32], cols: usize, c: &Contribution<'_>) {
    let r = c.layer.rank();
    let (a, b) = (c.layer.down.to_f32(), c.layer.up.to_f32());
    let a_cols = a.len() / r.max(1);
    w.par_chunks_mut(cols).enumerate().for_each(|(i, row)| {
        if c.transpose {
            // (B·A)ᵀ[i, j] = Σ_k A[k, i]·B[j, k]
            for (j, x) in row.iter_mut().enumerate() {
                let mut s = 0f32;
                for k in 0..r {
                    s += a[k * a_cols + i] * b[j * r + k];
                }
                *x += c.coef * s;
            }
        } else {
            for k in 0..r {
                let f = c.coef * b[i * r + k];
                for (x, y) in row.iter_mut().zip(&a[k * a_cols..(k + 1) * a_cols]) {
                    *x += f * y;
                }
            }
        }
    });
}

/// PEFT's DoRA merge on `w` = W + ΔW: each output row (column for `transpose`) scaled to the
/// magnitude `m`.
fn apply_dora(w: &mut [f32], cols: usize, magnitude: &[f32], transpose: bool) {
    if transpose {
        let rows = w.len() / cols;
        for (j, m) in magnitude.iter().enumerate().take(cols) {
            let n: f64 = (0..rows)
                .map(|i| f64::from(w[i * cols + j]).powi(2))
                .sum::<f64>()
                .sqrt();
            let f = if n > 0.0 {
                (f64::from(*m) / n) as f32
            } else {
                1.0
            };
            (0..rows).for_each(|i| w[i * cols + j] *= f);
        }
    } else {
        w.par_chunks_mut(cols)
            .zip(magnitude.par_iter())
            .for_each(|(row, m)| {
                let n: f64 = row
                    .iter()
                    .map(|&x| f64::from(x).powi(2))
                    .sum::<f64>()
                    .sqrt();
                let f = if n > 0.0 {
                    (f64::from(*m) / n) as f32
                } else {
                    1.0
                };
                row.iter_mut().for_each(|x| *x *= f);
            });
    }
}

/// Bake `inputs` into the model directory `base`, writing the directory `out`.
pub fn bake_model_dir(
    base: &Path,
    inputs: &[ModelBakeInput<'_>],
    out: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<ChangedTensor>> {
    if out.exists()
        && std::fs::read_dir(out)
            .map_err(|e| Error::io(out, e))?
            .next()
            .is_some()
    {
        return Err(Error::Invalid(format!(
            "{} exists and is not empty; choose a new output directory",
            out.display()
        )));
    }
    let store = TensorStore::open(base)?;
    let mut plan: BTreeMap<String, Vec<Contribution<'_>>> = BTreeMap::new();
    let mut bias: BTreeMap<String, Vec<Contribution<'_>>> = BTreeMap::new();
    let mut problems = Vec::new();
    for input in inputs {
        if let Some(name) = input.adapter.full.keys().next() {
            problems.push(format!(
                "{}: fully trained tensor {name} (modules_to_save) is not supported by bake yet",
                input.label
            ));
        }
        let fifo = input.adapter.meta.fan_in_fan_out;
        for (path, layer) in &input.adapter.layers {
            let (name, want, transpose) =
                target(layer, path, fifo && layer.kind == LayerKind::Linear);
            match store.info(&name) {
                Some(i) if i.shape == want => {}
                Some(i) => {
                    problems.push(format!(
                        "{}: {path} needs {name} of shape {want:?}, the base has {:?}",
                        input.label, i.shape
                    ));
                    continue;
                }
                None => {
                    problems.push(format!(
                        "{}: {path}: the base has no tensor {name}",
                        input.label
                    ));
                    continue;
                }
            }
            let c = Contribution {
                layer,
                coef: (input.weight * layer.scale()) as f32,
                transpose,
            };
            if layer.bias.is_some() {
                let b = format!("{path}.bias");
                if store.info(&b).is_none() {
                    problems.push(format!(
                        "{}: {path} has a LoRA bias but the base has no {b}",
                        input.label
                    ));
                }
                bias.entry(b).or_default().push(Contribution { ..c });
            }
            let entry = plan.entry(name.clone()).or_default();
            entry.push(c);
            let doras = entry.iter().filter(|c| c.layer.magnitude.is_some()).count();
            if doras > 0 && entry.len() > 1 {
                problems.push(format!(
                    "{name}: a DoRA adapter can only be baked alone on a module"
                ));
            }
        }
    }
    if !problems.is_empty() {
        let n = problems.len();
        problems.truncate(10);
        return Err(Error::Invalid(format!(
            "{n} adapter module(s) do not fit the base model {} (wrong base model?); nothing was written: {}",
            base.display(),
            problems.join("; ")
        )));
    }

    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let staging = tempfile::Builder::new()
        .prefix(".loratool-bake-")
        .tempdir_in(parent)
        .map_err(|e| Error::io(parent, e))?;
    let mut changed = Vec::new();
    let root = store.root().to_path_buf();
    for file in store.files() {
        let shard_name = file
            .path()
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        let mut pending = Vec::with_capacity(file.tensors().len());
        for (name, info) in file.tensors() {
            let contributions = plan.get(name).or_else(|| bias.get(name));
            if let Some(cs) = contributions {
                changed.push(ChangedTensor {
                    name: name.clone(),
                    adapters: cs.len(),
                    dtype: info.dtype.to_string(),
                });
            }
            let is_bias = bias.contains_key(name);
            let shape = info.shape.clone();
            let dtype = info.dtype;
            pending.push(PendingTensor {
                name: name.clone(),
                dtype,
                shape: shape.clone(),
                data: Box::new(move || {
                    let t = file.tensor(name)?;
                    let out = match contributions {
                        None => t.bytes().to_vec(),
                        Some(cs) => {
                            let mut w = t.to_f32();
                            if is_bias {
                                for c in cs {
                                    if let Some(b) = &c.layer.bias {
                                        for (x, y) in w.iter_mut().zip(b.to_f32()) {
                                            *x += c.coef * y;
                                        }
                                    }
                                }
                            } else {
                                let cols = w.len() / shape[0].max(1);
                                for c in cs {
                                    add_delta(&mut w, cols, c);
                                }
                                if let Some(m) = cs.iter().find_map(|c| c.layer.magnitude.as_ref())
                                {
                                    apply_dora(&mut w, cols, &m.to_f32(), cs[0].transpose);
                                }
                            }
                            if w.iter().any(|x| !x.is_finite()) {
                                return Err(Error::bad_tensor(
                                    file.path(),
                                    name,
                                    "the baked weight has non-finite values",
                                ));
                            }
                            Tensor::from_f32(shape.clone(), &w, dtype)?.bytes().to_vec()
                        }
                    };
                    file.release(name);
                    Ok(Cow::Owned(out))
                }),
            });
        }
        let md = file.metadata();
        let target = staging.path().join(&shard_name);
        write_safetensors(&target, &pending, (!md.is_empty()).then_some(md), progress)?;
    }
    // everything else in the model directory (config, tokenizer, the index) as it is; a bare
    // .safetensors file brings nothing else along
    if base.is_dir() || base.file_name().is_some_and(|n| n == INDEX_FILE) {
        for entry in std::fs::read_dir(&root).map_err(|e| Error::io(&root, e))? {
            let entry = entry.map_err(|e| Error::io(&root, e))?;
            let p = entry.path();
            let name = entry.file_name();
            if !p.is_file() || staging.path().join(&name).exists() {
                continue;
            }
            let is_shard = store.files().iter().any(|f| f.path() == p);
            if !is_shard || name == INDEX_FILE {
                std::fs::copy(&p, staging.path().join(&name)).map_err(|e| Error::io(&p, e))?;
            }
        }
    }
    let staged = staging.keep();
    if out.exists() {
        std::fs::remove_dir(out).map_err(|e| Error::io(out, e))?;
    }
    std::fs::rename(&staged, out).map_err(|e| Error::io(out, e))?;
    Ok(changed)
}
