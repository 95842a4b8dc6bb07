//! Extract a LoRA from a fine-tune: per weight, `Δ = W_tuned − W_base` in f32 (one module in
//! memory at a time), skipped when `max |Δ| ≤ min_diff`, factorised by randomized SVD
//! (`linalg::randomized_svd`: oversampling 10, 4 power iterations, seeded) or, with `exact`, a
//! full thin SVD in f64. The factors carry `U_k·S_k` and `V_kᵀ` with alpha = rank (scale 1), so
//! `B·A` is the best rank-k approximation of `Δ` the SVD found.
//!
//! Both models are [`ModelLayout`]s paired by canonical name, so a model directory, a diffusers
//! pipeline and a single-file SD checkpoint can be on either side (SDXL text encoder 2's fused
//! q/k/v weight gives three modules). Which tensors: 2-D `*.weight` (linear) and 4-D (conv)
//! present in both models with the same shape; for SD models, only modules of loratool's SD
//! table (what kohya and diffusers LoRA files can name). Token and position embeddings
//! (`*embed_tokens.weight`, GPT-2 `wte`/`wpe`) and `lm_head.weight` follow `embeddings`: a LoRA
//! (embedding layout `(B·A)ᵀ`), the full tuned tensor (PEFT `modules_to_save`), or nothing.
//! GPT-2's `Conv1D` projections (`[in, out]`) are factored transposed and the adapter marked
//! `fan_in_fan_out`, as PEFT builds it for those models. 1-D tensors (norms, biases) cannot be a
//! LoRA: those that changed are reported.

use crate::adapter::{Adapter, AdapterMeta, LayerKind, LoraLayer};
use crate::error::{Error, Result};
use crate::linalg::{
    exact_svd_dense_f64, randomized_svd, select_rank, RankRule, RsvdParams, SvSplit,
};
use crate::ops::model_layout::{LogicalTensor, ModelLayout};
use crate::tensor::{decode_f32, DType, Tensor};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmbeddingMode {
    Lora,
    Full,
    Skip,
}

crate::named_enum!(EmbeddingMode, "embedding mode", [
    Lora => "lora", [], "an embedding LoRA (and lm_head as a linear LoRA)",
    Full => "full", [], "the full tuned tensors, as PEFT modules_to_save",
    Skip => "skip", [], "leave them out",
]);

#[derive(Clone, Copy, Debug)]
pub struct ExtractOptions {
    /// Rank, or the cap for a dynamic rule.
    pub rank: usize,
    pub rule: RankRule,
    /// Skip modules whose largest |Δ| is at most this.
    pub min_diff: f64,
    pub exact: bool,
    pub embeddings: EmbeddingMode,
    /// Factor dtype of the adapter.
    pub dtype: DType,
    pub seed: u64,
}

/// Randomized SVD settings for fine-tune deltas, whose spectra decay slowly.
pub const EXTRACT_RSVD: RsvdParams = RsvdParams {
    oversample: 10,
    power_iters: 4,
};

#[derive(Clone, Debug, serde::Serialize)]
pub struct ModuleExtract {
    pub path: String,
    pub rank: usize,
    /// `‖Δ_k‖_F / ‖Δ‖_F`.
    pub fro_retained: f64,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ExtractReport {
    pub modules: Vec<ModuleExtract>,
    /// Tensors with no measurable change (`max |Δ| ≤ min_diff`).
    pub unchanged: usize,
    /// Changed tensors a LoRA cannot carry (norms, biases), by name.
    pub changed_not_lora: Vec<String>,
    /// Full tensors stored as `modules_to_save`.
    pub full: Vec<String>,
    /// `‖Δ − Δ_k‖_F / ‖Δ‖_F` over all extracted modules together.
    pub overall_rel_error: f64,
}

/// `‖Δ − up·down‖_F²`, computed in place in `delta`.
fn residual_sq(delta: &mut [f32], up: &[f32], down: &[f32], m: usize, k: usize, n: usize) -> f64 {
    use faer::{linalg::matmul::matmul, Accum, MatMut, MatRef};
    matmul(
        MatMut::from_row_major_slice_mut(delta, m, n),
        Accum::Add,
        MatRef::from_row_major_slice(up, m, k),
        MatRef::from_row_major_slice(down, k, n),
        -1.0f32,
        faer::get_global_parallelism(),
    );
    crate::linalg::sum_squares(delta)
}

/// Token and position embeddings (`nn.Embedding`): llama-style and GPT-2 names.
fn is_embedding(name: &str) -> bool {
    name.ends_with("embed_tokens.weight")
        || name.ends_with(".wte.weight")
        || name.ends_with(".wpe.weight")
}

fn is_embedding_like(name: &str) -> bool {
    is_embedding(name) || name == "lm_head.weight" || name.ends_with(".lm_head.weight")
}

/// transformers' `Conv1D` projections of GPT-2/GPT-1 blocks, stored `[in, out]`.
fn is_conv1d(name: &str) -> bool {
    [
        ".c_attn.weight",
        ".c_proj.weight",
        ".c_fc.weight",
        ".q_attn.weight",
    ]
    .iter()
    .any(|s| name.ends_with(s))
}

/// One weight's change between the two models, decoded to f32.
struct Change {
    shape: Vec<usize>,
    /// `tuned − base`, row-major.
    delta: Vec<f32>,
    /// The tuned values (for `modules_to_save`).
    tuned: Vec<f32>,
}

/// Pair `logical` with the fine-tune and decode its change: `Ok(None)` when the fine-tune
/// lacks it or it is unchanged (`max |Δ| ≤ min_diff`, counted in `unchanged`). Input pages
/// are released as soon as the values are decoded.
fn read_change(
    base: &ModelLayout,
    tuned: &ModelLayout,
    logical: &LogicalTensor,
    min_diff: f64,
    unchanged: &mut usize,
    progress: &dyn Fn(u64),
) -> Result<Option<Change>> {
    let name = logical.canonical.as_str();
    let bloc = &logical.location;
    let Ok(tloc) = tuned.locate(name) else {
        return Ok(None);
    };
    let (Some(shape), Some(tshape)) = (base.shape(bloc), tuned.shape(&tloc)) else {
        return Ok(None);
    };
    if tshape != shape {
        return Err(Error::Invalid(format!(
            "{name}: shape {tshape:?} in the fine-tune, {shape:?} in the base (different architectures?)"
        )));
    }
    let (tt, tr) = tuned.tensor(&tloc)?;
    let (bt, br) = base.tensor(bloc)?;
    let (tb, bb) = (&tt.bytes()[tr], &bt.bytes()[br]);
    let byte_len = tb.len() as u64;
    // identical bytes (most tensors of a LoRA-style fine-tune): no f32 copies at all
    if tt.dtype() == bt.dtype() && tb == bb {
        tuned.release(&tloc);
        base.release(bloc);
        progress(byte_len);
        *unchanged += 1;
        return Ok(None);
    }
    let (mut t, mut b) = (Vec::new(), Vec::new());
    decode_f32(tt.dtype(), tb, &mut t);
    decode_f32(bt.dtype(), bb, &mut b);
    drop((tt, bt));
    let delta: Vec<f32> = t.iter().zip(&b).map(|(x, y)| x - y).collect();
    drop(b);
    tuned.release(&tloc);
    base.release(bloc);
    progress(byte_len);
    let max = delta.iter().fold(0f32, |m, x| m.max(x.abs()));
    if f64::from(max) <= min_diff {
        *unchanged += 1;
        return Ok(None);
    }
    Ok(Some(Change {
        shape,
        delta,
        tuned: t,
    }))
}

/// A module's LoRA from its change, with what the truncation kept.
struct Factored {
    layer: LoraLayer,
    module: ModuleExtract,
    norm_sq: f64,
    tail_sq: f64,
}

/// Factor one change by SVD at the rank `opts` chooses. A token embedding is factored as
/// PEFT's embedding LoRA (`ΔEᵀ`, `[dim, num_embeddings]`), a `Conv1D` weight transposed (PEFT's
/// `fan_in_fan_out`).
fn factor(
    path: &str,
    change: Change,
    token_embedding: bool,
    conv1d: bool,
    opts: &ExtractOptions,
) -> Result<Factored> {
    let Change {
        shape, mut delta, ..
    } = change;
    let (mut m, n) = (shape[0], shape[1..].iter().product::<usize>());
    let mut cols = n;
    if token_embedding || conv1d {
        let mut tr = vec![0f32; delta.len()];
        for i in 0..m {
            for j in 0..n {
                tr[j * m + i] = delta[i * n + j];
            }
        }
        delta = tr;
        (m, cols) = (n, m);
    }
    let norm_sq: f64 = delta.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    let cap = opts.rank.min(m).min(cols);
    let svd = if opts.exact {
        exact_svd_dense_f64(&delta, m, cols)
    } else {
        randomized_svd(&delta, m, cols, cap, EXTRACT_RSVD, opts.seed)
    }
    .map_err(|e| Error::module(path, e.to_string()))?;
    let k = select_rank(&svd.s, opts.rule, cap)?.min(svd.s.len()).max(1);
    let (up, down) = svd.into_factors(k, SvSplit::Up);
    // the residual itself, Δ − B·A: `‖Δ‖² − Σσ²` would cancel down to f32 noise
    let tail_sq = residual_sq(&mut delta, &up, &down, m, k, cols);
    let kept = (norm_sq - tail_sq).max(0.0);
    let (kind, down_shape, up_shape) = if token_embedding {
        (LayerKind::Embedding, vec![k, cols], vec![m, k])
    } else if shape.len() == 4 {
        (
            LayerKind::Conv,
            vec![k, shape[1], shape[2], shape[3]],
            vec![m, k, 1, 1],
        )
    } else {
        (LayerKind::Linear, vec![k, cols], vec![m, k])
    };
    let layer = LoraLayer::new(
        path,
        Tensor::from_f32(down_shape, &down, opts.dtype)?,
        Tensor::from_f32(up_shape, &up, opts.dtype)?,
        k as f64,
        kind,
    )?;
    Ok(Factored {
        layer,
        module: ModuleExtract {
            path: path.to_string(),
            rank: k,
            fro_retained: if norm_sq > 0.0 {
                (kept / norm_sq).min(1.0).sqrt()
            } else {
                1.0
            },
        },
        norm_sq,
        tail_sq,
    })
}

/// Extract the difference `tuned − base` as an adapter.
pub fn extract(
    base: &ModelLayout,
    tuned: &ModelLayout,
    opts: &ExtractOptions,
    progress: &dyn Fn(u64),
) -> Result<(Adapter, ExtractReport)> {
    if opts.rank == 0 {
        return Err(Error::bad_option("rank", "must be at least 1"));
    }
    let mut layers = BTreeMap::new();
    let mut full = BTreeMap::new();
    let mut report = ExtractReport::default();
    let (mut total_sq, mut tail_sq) = (0f64, 0f64);
    let conv1d_model = base.uses_conv1d();
    let mut fan_in_fan_out = false;
    for logical in base.logical_tensors() {
        let Some(change) = read_change(
            base,
            tuned,
            &logical,
            opts.min_diff,
            &mut report.unchanged,
            progress,
        )?
        else {
            continue;
        };
        let name = logical.canonical.as_str();
        if change.shape.len() < 2 || !name.ends_with(".weight") || !logical.lora_target {
            report.changed_not_lora.push(name.to_string());
            continue;
        }
        let embed = is_embedding_like(name);
        match opts.embeddings {
            EmbeddingMode::Skip if embed => continue,
            EmbeddingMode::Full if embed => {
                let t = Tensor::from_f32(change.shape.clone(), &change.tuned, opts.dtype)?;
                full.insert(name.to_string(), t);
                report.full.push(name.to_string());
                continue;
            }
            _ => {}
        }
        let conv1d = conv1d_model && change.shape.len() == 2 && is_conv1d(name);
        fan_in_fan_out |= conv1d;
        let path = name.trim_end_matches(".weight");
        let f = factor(path, change, embed && is_embedding(name), conv1d, opts)?;
        total_sq += f.norm_sq;
        tail_sq += f.tail_sq;
        report.modules.push(f.module);
        layers.insert(path.to_string(), f.layer);
    }
    if layers.is_empty() && full.is_empty() {
        return Err(Error::Invalid(format!(
            "no weight differs by more than the minimum difference {} between the two models: nothing to extract",
            opts.min_diff
        )));
    }
    report.overall_rel_error = if total_sq > 0.0 {
        (tail_sq / total_sq).sqrt()
    } else {
        0.0
    };
    let adapter = Adapter {
        layers,
        full,
        meta: AdapterMeta {
            base_model: Some(base.path.display().to_string()),
            family: base.family.map(str::to_string),
            fan_in_fan_out,
            ..Default::default()
        },
    };
    Ok((adapter, report))
}
