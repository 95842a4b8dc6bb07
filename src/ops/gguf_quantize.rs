//! Re-encode the tensors of a GGUF model or LoRA adapter: one ggml type for every quantizable
//! tensor (`llama-quantize --pure`), or a llama-quantize preset's per-tensor mixture (Q4_K_M &
//! co., rules in [`crate::ops::quant_preset`]), optionally with an importance matrix.
//!
//! Models: which tensors are quantized, the mixture rules and the fallback for rows that do not
//! fit a type's block are llama-quantize's; everything else is copied byte for byte in its own
//! type. Adapters (which llama-quantize cannot open): every 2-D `lora_a` / `lora_b`, one type
//! for all. Already-quantized tensors are re-quantized only when allowed, as llama-quantize's
//! `--allow-requantize`, since every re-quantization loses precision.
//!
//! Importance matrices: each quantized tensor uses its matrix entry (the weighted encoders of
//! `llama-quantize --imatrix`). A tensor without an entry, or with an entry of the wrong size,
//! is an error naming it, except the token embedding and the output matrix, which llama-imatrix
//! does not collect by default and llama-quantize then quantizes without weights. The output
//! metadata records the matrix as llama-quantize does (`quantize.imatrix.*`).
//!
//! Memory: a few tensors' output bytes (one written, one or two encoded ahead) plus small f32
//! buffers per thread.

use crate::error::{Error, Result};
use crate::io::gguf::{write_gguf, GgufFile, GgufTensorInfo, GgufValue, PendingGgufTensor};
use crate::io::imatrix::ImportanceMatrix;
use crate::ops::quant_preset::{
    choose_types, fit_rows, ModelFacts, QuantTarget, TensorShape, TypeChoice,
};
use crate::quant::{transcode_into, QuantType};
use indexmap::IndexMap;
use std::borrow::Cow;
use std::path::Path;

/// An importance matrix and the name it is recorded under (`quantize.imatrix.file`).
#[derive(Clone, Copy)]
pub struct Imatrix<'a> {
    pub matrix: &'a ImportanceMatrix,
    pub file: &'a str,
}

#[derive(Clone, Copy)]
pub struct QuantizeOptions<'a> {
    pub target: QuantTarget,
    /// Re-quantize tensors that are already block-quantized (precision loss compounds).
    pub allow_requantize: bool,
    pub imatrix: Option<Imatrix<'a>>,
}

/// What happens to one tensor.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TensorQuant {
    pub name: String,
    pub from: &'static str,
    pub to: &'static str,
    /// Why the tensor is not at the type the rules chose, if it is not.
    pub note: Option<String>,
    /// Quantized with importance weights.
    pub weighted: bool,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// The adapter rule: every 2-D `lora_a` / `lora_b` gets the type, or llama-quantize's fallback
/// when its rows do not fit the type's block (rank-sized rows often do not).
fn adapter_choice(name: &str, info: &GgufTensorInfo, target: QuantType) -> TypeChoice {
    if info.dims.len() != 2 || !(name.ends_with(".lora_a") || name.ends_with(".lora_b")) {
        return TypeChoice {
            to: None,
            fallback: None,
        };
    }
    let (to, fallback) = fit_rows(name, info.dims[0], target);
    TypeChoice {
        to: Some(to),
        fallback,
    }
}

/// The importance weights of `name` (`ne0 * n_expert` values), `None` when the tensor is
/// quantized without them.
fn importance<'m>(
    m: &'m ImportanceMatrix,
    path: &Path,
    name: &str,
    info: &GgufTensorInfo,
) -> Result<Option<&'m [f32]>> {
    let embedding = name == "token_embd.weight" || name == "per_layer_token_embd.weight";
    let uncollected = embedding || name == "output.weight";
    let want = info.dims[0] * info.dims.get(2).copied().unwrap_or(1);
    match m.entries.get(name) {
        None if uncollected => Ok(None),
        None => Err(Error::bad_tensor(
            path,
            name,
            "the importance matrix has no entry for this tensor; was it computed for this model \
             (llama-imatrix on the same GGUF)?",
        )),
        Some(w) if w.len() as u64 == want => Ok(Some(w)),
        // llama-quantize tolerates a wrong-sized embedding entry and ignores it
        Some(_) if embedding => Ok(None),
        Some(w) => Err(Error::bad_tensor(
            path,
            name,
            format!(
                "the importance matrix has {} values for it, its rows need {want} \
                 ({} columns x {} experts); the matrix was computed for another model",
                w.len(),
                info.dims[0],
                info.dims.get(2).copied().unwrap_or(1)
            ),
        )),
    }
}

/// Decode `src` (rows of `row` values of type `from`) and encode it as `to`; with `weights`,
/// rows `[e * rows_per_matrix, (e + 1) * rows_per_matrix)` use `weights[e * row..(e + 1) *
/// row]` (one importance vector per expert matrix).
fn transcode(
    src: &[u8],
    from: QuantType,
    to: QuantType,
    row: usize,
    weights: Option<(&[f32], usize)>,
) -> Result<Vec<u8>> {
    let (in_row, out_row) = (from.row_bytes(row)?, to.row_bytes(row)?);
    let rows = src.len() / in_row;
    let mut out = vec![0u8; rows * out_row];
    match weights {
        None => transcode_into(from, to, src, row, None, &mut out)?,
        Some((weights, per_matrix)) => {
            for (e, (src, dst)) in src
                .chunks(in_row * per_matrix.max(1))
                .zip(out.chunks_mut(out_row * per_matrix.max(1)))
                .enumerate()
            {
                let w = weights.get(e * row..(e + 1) * row).ok_or_else(|| {
                    Error::Invalid(format!("no importance weights for expert matrix {e}"))
                })?;
                transcode_into(from, to, src, row, Some(w), dst)?;
            }
        }
    }
    Ok(out)
}

/// The metadata llama-quantize writes: the input's, with `general.quantization_version` and
/// `general.file_type` moved to the end with their new values, split keys dropped, and the
/// importance matrix recorded.
fn output_kv(
    file: &GgufFile,
    adapter: bool,
    opts: &QuantizeOptions<'_>,
) -> IndexMap<String, GgufValue> {
    let mut kv: IndexMap<String, GgufValue> = file.kv.clone();
    let mut set = |k: &str, v: GgufValue| {
        kv.shift_remove(k);
        kv.insert(k.to_string(), v);
    };
    set("general.quantization_version", GgufValue::U32(2));
    if adapter {
        return kv;
    }
    set("general.file_type", GgufValue::U32(opts.target.ftype()));
    for k in ["split.no", "split.count", "split.tensors.count"] {
        kv.shift_remove(k);
    }
    if let Some(im) = opts.imatrix {
        // llama-quantize copies these strings into 128-byte buffers
        let clip = |s: &str| {
            let mut end = s.len().min(127);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s[..end].to_string()
        };
        kv.shift_remove("quantize.imatrix.file");
        kv.insert(
            "quantize.imatrix.file".into(),
            GgufValue::String(clip(im.file)),
        );
        if let Some(ds) = im.matrix.datasets.first() {
            kv.shift_remove("quantize.imatrix.dataset");
            kv.insert(
                "quantize.imatrix.dataset".into(),
                GgufValue::String(clip(ds)),
            );
        }
        kv.shift_remove("quantize.imatrix.entries_count");
        kv.insert(
            "quantize.imatrix.entries_count".into(),
            GgufValue::U32(im.matrix.entries.len() as u32),
        );
        if im.matrix.chunk_count > 0 {
            kv.shift_remove("quantize.imatrix.chunks_count");
            kv.insert(
                "quantize.imatrix.chunks_count".into(),
                GgufValue::U32(im.matrix.chunk_count),
            );
        }
    }
    kv
}

/// One tensor's plan: its target (None: copied), the note, and its importance weights.
struct Plan<'a> {
    name: &'a String,
    info: &'a GgufTensorInfo,
    to: Option<QuantType>,
    note: Option<String>,
    weights: Option<&'a [f32]>,
}

/// Quantize `file` into `out`. Returns what happened to every tensor.
pub fn quantize_gguf(
    file: &GgufFile,
    out: &Path,
    opts: QuantizeOptions<'_>,
    progress: &dyn Fn(u64),
) -> Result<Vec<TensorQuant>> {
    let path = file.path();
    let adapter = file.kv.get("general.type").and_then(GgufValue::as_str) == Some("adapter");
    let choices: Vec<TypeChoice> = if adapter {
        let QuantTarget::Uniform(t) = opts.target else {
            return Err(Error::Invalid(format!(
                "{}: presets such as {} are llama-quantize's mixtures for models; quantize an \
                 adapter to one ggml type (q8_0, q4_k, ...)",
                path.display(),
                opts.target.name()
            )));
        };
        if opts.imatrix.is_some() {
            return Err(Error::Invalid(format!(
                "{}: an importance matrix describes a model's activations, not an adapter's",
                path.display()
            )));
        }
        file.tensors
            .iter()
            .map(|(n, i)| adapter_choice(n, i, t))
            .collect()
    } else {
        let facts = match opts.target {
            QuantTarget::Preset(_) => {
                ModelFacts::from_kv(&file.kv).map_err(|e| Error::malformed(path, e.to_string()))?
            }
            QuantTarget::Uniform(_) => ModelFacts::arch_only(file.architecture().unwrap_or("")),
        };
        let shapes: Vec<TensorShape<'_>> = file
            .tensors
            .iter()
            .map(|(name, info)| TensorShape {
                name,
                dims: &info.dims,
            })
            .collect();
        choose_types(opts.target, &facts, &shapes, opts.imatrix.is_some()).map_err(|e| match e {
            Error::Invalid(m) => Error::malformed(path, m),
            other => other,
        })?
    };
    let mut plans = Vec::with_capacity(choices.len());
    for ((name, info), choice) in file.tensors.iter().zip(choices) {
        let mut plan = Plan {
            name,
            info,
            to: choice.to,
            note: choice.fallback,
            weights: None,
        };
        let from = QuantType::from_ggml_type(info.ggml_type);
        match (plan.to, from) {
            (None, _) => {}
            (Some(_), None) => {
                plan.to = None;
                plan.note = Some("type has no loratool codec; copied".into());
            }
            (Some(to), Some(from)) if to == from => plan.to = None,
            (Some(to), Some(from)) => {
                if from.is_quantized() && !opts.allow_requantize {
                    return Err(Error::bad_tensor(
                        path,
                        name.as_str(),
                        format!(
                            "already {from}; re-quantizing it to {to} compounds the rounding \
                             error. Quantize from the F16/F32 model, or pass --allow-requantize"
                        ),
                    ));
                }
                if let Some(im) = opts.imatrix {
                    if to.is_quantized() && to != QuantType::Q8_0 {
                        plan.weights = importance(im.matrix, path, name, info)?;
                    }
                }
            }
        }
        plans.push(plan);
    }
    let kv = output_kv(file, adapter, &opts);
    let mut report = Vec::with_capacity(plans.len());
    let mut jobs = Vec::with_capacity(plans.len());
    let mut layouts = Vec::with_capacity(plans.len());
    for plan in plans {
        let Plan {
            name,
            info,
            to,
            note,
            weights,
        } = plan;
        let from_name = crate::io::gguf::ggml_type_layout(info.ggml_type).map_or("?", |l| l.2);
        let (ggml_type, bytes_out) = match to {
            Some(t) => {
                let rows: u64 = info.dims[1..].iter().product();
                (
                    t.ggml_type(),
                    rows * t.row_bytes(info.dims[0] as usize)? as u64,
                )
            }
            None => (info.ggml_type, info.byte_len),
        };
        report.push(TensorQuant {
            name: name.clone(),
            from: from_name,
            to: to.map_or(from_name, |t| t.name()),
            note,
            weighted: weights.is_some(),
            bytes_in: info.byte_len,
            bytes_out,
        });
        jobs.push(Job {
            name,
            from: QuantType::from_ggml_type(info.ggml_type),
            to,
            row: info.dims[0] as usize,
            per_matrix: info.dims.get(1).copied().unwrap_or(1) as usize,
            weights,
        });
        layouts.push((name.clone(), info.dims.clone(), ggml_type));
    }
    // The next tensors are encoded on a worker thread (itself parallel, rayon) while the
    // writer writes the previous one, so encoding and writing overlap; at most PREFETCH
    // encoded tensors wait in the channel.
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, Result<Cow<'_, [u8]>>)>(PREFETCH);
        scope.spawn(move || {
            for (i, job) in jobs.iter().enumerate() {
                // a closed channel means the writer stopped (an error): stop too
                if tx.send((i, job.encode(file))).is_err() {
                    break;
                }
            }
        });
        let rx = std::sync::Mutex::new(rx);
        let pending: Vec<PendingGgufTensor<'_>> = layouts
            .into_iter()
            .enumerate()
            .map(|(i, (name, dims, ggml_type))| {
                let rx = &rx;
                let released = name.clone();
                PendingGgufTensor {
                    name,
                    dims,
                    ggml_type,
                    data: Box::new(move || {
                        let next = rx.lock().map_err(|_| poisoned())?.recv();
                        match next {
                            Ok((j, bytes)) if j == i => bytes,
                            _ => Err(poisoned()),
                        }
                    }),
                    // the input's pages go once written: RSS stays near a few tensors
                    written: Some(Box::new(move || file.release(&released))),
                }
            })
            .collect();
        let written = write_gguf(out, &kv, &pending, progress);
        // dropping the receiver ends the worker if the writer stopped early
        drop(pending);
        drop(rx);
        written
    })?;
    Ok(report)
}

/// Encoded tensors that may wait for the writer.
const PREFETCH: usize = 1;

fn poisoned() -> Error {
    Error::Invalid("the tensor encoder stopped unexpectedly".into())
}

/// One tensor to encode (or copy) for the writer.
struct Job<'a> {
    name: &'a str,
    from: Option<QuantType>,
    to: Option<QuantType>,
    row: usize,
    per_matrix: usize,
    weights: Option<&'a [f32]>,
}

impl<'a> Job<'a> {
    fn encode(&self, file: &'a GgufFile) -> Result<Cow<'a, [u8]>> {
        let src = file.tensor_bytes(self.name)?;
        Ok(match (self.to, self.from) {
            (Some(to), Some(from)) => Cow::Owned(transcode(
                src,
                from,
                to,
                self.row,
                self.weights.map(|w| (w, self.per_matrix)),
            )?),
            _ => Cow::Borrowed(src),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(dims: &[u64], ty: QuantType) -> GgufTensorInfo {
        GgufTensorInfo {
            dims: dims.to_vec(),
            ggml_type: ty.ggml_type(),
            offset: 0,
            byte_len: 0,
        }
    }

    fn model_choice(name: &str, dims: &[u64], target: QuantTarget) -> Option<QuantType> {
        let shapes = [TensorShape { name, dims }];
        choose_types(target, &ModelFacts::arch_only("llama"), &shapes, false).unwrap()[0].to
    }

    #[test]
    fn which_tensors_and_which_type() {
        let q4k = QuantTarget::Uniform(QuantType::Q4_K);
        let m = |n: &str, d: &[u64]| model_choice(n, d, q4k);
        assert_eq!(m("blk.0.attn_q.weight", &[256, 8]), Some(QuantType::Q4_K));
        assert_eq!(m("blk.0.attn_norm.weight", &[256]), None);
        assert_eq!(m("output_norm.weight", &[256, 1]), None);
        assert_eq!(m("blk.0.ffn_gate_inp.weight", &[256, 8]), None);
        assert_eq!(m("blk.0.attn_q.bias", &[256, 8]), None);
        // [256, 1]: one dimension for ggml, so kept
        assert_eq!(m("blk.0.attn_q.weight", &[256, 1]), None);
        // 352 = 11·32: not a multiple of 256, Q5_0 fits
        assert_eq!(m("blk.0.ffn_down.weight", &[352, 8]), Some(QuantType::Q5_0));
        // rank-4 lora_b: nothing with blocks fits
        let a =
            |n: &str, d: &[u64]| adapter_choice(n, &info(d, QuantType::F32), QuantType::Q4_K).to;
        assert_eq!(
            a("blk.0.attn_q.weight.lora_b", &[4, 128]),
            Some(QuantType::F16)
        );
        assert_eq!(
            a("blk.0.attn_q.weight.lora_a", &[256, 4]),
            Some(QuantType::Q4_K)
        );
        assert_eq!(a("blk.0.attn_norm.weight", &[256]), None);
    }

    /// Parallel tasks (65536 values each) with a partial last one give the bytes of encoding
    /// the whole tensor at once.
    #[test]
    fn transcode_in_tasks_equals_whole_tensor() {
        let row = 64;
        let rows = (65_536 / row) * 5 + 3;
        let data: Vec<f32> = (0..rows * row)
            .map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0)
            .collect();
        let src = crate::quant::quantize(QuantType::F32, &data, row).unwrap();
        let whole = crate::quant::quantize(QuantType::Q4_0, &data, row).unwrap();
        assert_eq!(
            transcode(&src, QuantType::F32, QuantType::Q4_0, row, None).unwrap(),
            whole
        );
    }

    /// Expert matrices use their own slice of the importance weights, also when a parallel
    /// task boundary falls inside a matrix.
    #[test]
    fn transcode_weights_follow_the_expert_matrix() {
        let row = 256;
        let per_matrix = 65_536 / row + 5;
        let n_mat = 3;
        let data: Vec<f32> = (0..row * per_matrix * n_mat)
            .map(|i| ((i * 7919) % 1013) as f32 / 97.0 - 5.0)
            .collect();
        let weights: Vec<f32> = (0..row * n_mat).map(|i| 0.5 + (i % 17) as f32).collect();
        let src = crate::quant::quantize(QuantType::F32, &data, row).unwrap();
        let got = transcode(
            &src,
            QuantType::F32,
            QuantType::Q4_K,
            row,
            Some((&weights, per_matrix)),
        )
        .unwrap();
        let out_row = QuantType::Q4_K.row_bytes(row).unwrap();
        let mut want = vec![0u8; got.len()];
        for e in 0..n_mat {
            let rows = e * per_matrix..(e + 1) * per_matrix;
            crate::quant::quantize_weighted_into(
                QuantType::Q4_K,
                &data[rows.start * row..rows.end * row],
                row,
                &weights[e * row..(e + 1) * row],
                &mut want[rows.start * out_row..rows.end * out_row],
            )
            .unwrap();
        }
        assert!(got == want);
    }

    #[test]
    fn missing_or_mis_sized_importance_is_an_error_naming_the_tensor() {
        let mut m = ImportanceMatrix::default();
        m.entries
            .insert("blk.0.attn_q.weight".into(), vec![1.0; 256]);
        m.entries.insert("token_embd.weight".into(), vec![1.0; 3]);
        let p = Path::new("model.gguf");
        let i = info(&[256, 8], QuantType::F16);
        assert!(importance(&m, p, "blk.0.attn_q.weight", &i)
            .unwrap()
            .is_some());
        let err = importance(&m, p, "blk.0.attn_k.weight", &i)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("blk.0.attn_k.weight") && err.contains("no entry"),
            "{err}"
        );
        let i512 = info(&[512, 8], QuantType::F16);
        let err = importance(&m, p, "blk.0.attn_q.weight", &i512)
            .unwrap_err()
            .to_string();
        assert!(err.contains("256 values") && err.contains("512"), "{err}");
        // what llama-imatrix does not collect is quantized without weights
        assert!(importance(&m, p, "output.weight", &i).unwrap().is_none());
        assert!(importance(&m, p, "token_embd.weight", &i)
            .unwrap()
            .is_none());
    }
}
