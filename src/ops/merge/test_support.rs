//! Test-only builders and independent references: small random adapters, dense deltas by plain
//! loops in f64, a dense SVD oracle, and PEFT's `merge_utils` formulas written out literally on
//! stacked tensors (the op under test streams them instead).

use super::plan::{load_terms, plan, Term};
use super::{MajoritySign, MergeInput, MergeMethod, MergeOptions};
use crate::adapter::{Adapter, AdapterMeta, LayerKind, LoraLayer};
use crate::tensor::{DType, Tensor};

/// `len` pseudo-normal values (xorshift64* + Box–Muller), deterministic per seed.
pub(crate) fn gaussian(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let x = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
        ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..len)
        .map(|_| {
            let (u1, u2) = (next(), next());
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect()
}

/// A layer from explicit row-major factors: `up` `out × rank`, `down` `rank × input`.
pub(crate) fn layer_from(
    up: &[f32],
    down: &[f32],
    out: usize,
    rank: usize,
    input: usize,
    alpha: f64,
    kind: LayerKind,
) -> LoraLayer {
    let down = Tensor::from_f32(vec![rank, input], down, DType::F32).expect("down");
    let up = Tensor::from_f32(vec![out, rank], up, DType::F32).expect("up");
    LoraLayer::new("test", down, up, alpha, kind).expect("valid layer")
}

pub(crate) fn linear_layer(
    out: usize,
    input: usize,
    rank: usize,
    alpha: f64,
    seed: u64,
) -> LoraLayer {
    layer_from(
        &gaussian(out * rank, seed),
        &gaussian(rank * input, seed + 1000),
        out,
        rank,
        input,
        alpha,
        LayerKind::Linear,
    )
}

fn embedding_layer(dim: usize, vocab: usize, rank: usize, alpha: f64, seed: u64) -> LoraLayer {
    layer_from(
        &gaussian(dim * rank, seed),
        &gaussian(rank * vocab, seed + 1000),
        dim,
        rank,
        vocab,
        alpha,
        LayerKind::Embedding,
    )
}

fn conv_layer(
    out: usize,
    input: usize,
    kernel: usize,
    rank: usize,
    alpha: f64,
    seed: u64,
) -> LoraLayer {
    let down = Tensor::from_f32(
        vec![rank, input, kernel, kernel],
        &gaussian(rank * input * kernel * kernel, seed + 1000),
        DType::F32,
    )
    .expect("down");
    let up = Tensor::from_f32(
        vec![out, rank, 1, 1],
        &gaussian(out * rank, seed),
        DType::F32,
    )
    .expect("up");
    LoraLayer::new("test", down, up, alpha, LayerKind::Conv).expect("valid conv layer")
}

pub(crate) fn adapter(layers: Vec<(&str, LoraLayer)>) -> Adapter {
    Adapter {
        layers: layers
            .into_iter()
            .map(|(p, l)| (p.to_string(), l))
            .collect(),
        full: Default::default(),
        meta: AdapterMeta::default(),
    }
}

pub(crate) fn input<'a>(label: &str, adapter: &'a Adapter) -> MergeInput<'a> {
    MergeInput {
        label: label.to_string(),
        adapter,
    }
}

pub(crate) fn options(method: MergeMethod, weights: &[f64]) -> MergeOptions {
    MergeOptions {
        method,
        weights: weights.to_vec(),
        ..MergeOptions::default()
    }
}

/// a: q (16×20, r4, α8), k (16×20, r4, α4), conv (4←3, 3×3, r2, α1);
/// b: q (16×20, r8, α8), v (12×20, r3, α6), conv (r3, α3). Ranks differ on shared modules.
pub(crate) fn two_adapters() -> (Adapter, Adapter) {
    let a = adapter(vec![
        ("q", linear_layer(16, 20, 4, 8.0, 1)),
        ("k", linear_layer(16, 20, 4, 4.0, 2)),
        ("conv", conv_layer(4, 3, 3, 2, 1.0, 3)),
    ]);
    let b = adapter(vec![
        ("q", linear_layer(16, 20, 8, 8.0, 4)),
        ("v", linear_layer(12, 20, 3, 6.0, 5)),
        ("conv", conv_layer(4, 3, 3, 3, 3.0, 6)),
    ]);
    (a, b)
}

/// Rank 4 everywhere (PEFT's factor-wise modes need equal ranks), with linear, embedding and
/// conv modules, some in one input only.
pub(crate) fn equal_rank_adapters() -> (Adapter, Adapter) {
    let a = adapter(vec![
        ("q", linear_layer(16, 20, 4, 8.0, 11)),
        ("k", linear_layer(16, 20, 4, 4.0, 12)),
        ("emb", embedding_layer(10, 30, 4, 4.0, 13)),
        ("conv", conv_layer(6, 3, 3, 4, 2.0, 14)),
    ]);
    let b = adapter(vec![
        ("q", linear_layer(16, 20, 4, 4.0, 15)),
        ("emb", embedding_layer(10, 30, 4, 8.0, 16)),
        ("conv", conv_layer(6, 3, 3, 4, 4.0, 17)),
        ("v", linear_layer(12, 20, 4, 4.0, 18)),
    ]);
    (a, b)
}

pub(crate) use crate::testing::{dense_delta, dense_svd, rel_fro_diff, singular_values};

/// `Σ wᵢ·ΔWᵢ` over the inputs holding `path`.
pub(crate) fn dense_weighted_sum(
    inputs: &[MergeInput<'_>],
    weights: &[f64],
    path: &str,
) -> Vec<f64> {
    let mut out: Vec<f64> = Vec::new();
    for (inp, w) in inputs.iter().zip(weights) {
        if let Some(layer) = inp.adapter.layers.get(path) {
            let d = dense_delta(layer);
            if out.is_empty() {
                out = vec![0.0; d.len()];
            }
            out.iter_mut().zip(&d).for_each(|(o, x)| *o += w * x);
        }
    }
    out
}

/// The op's own loaded terms of one module (for kernel-level checks).
pub(crate) fn terms_of(inputs: &[MergeInput<'_>], weights: &[f64], path: &str) -> Vec<Term> {
    let plans = plan(inputs).expect("mergeable");
    let module = plans
        .iter()
        .find(|p| p.path == path)
        .expect("module present");
    load_terms(module, inputs, weights).expect("finite")
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum ReferenceMethod {
    Linear,
    MagnitudePrune,
    Ties(MajoritySign),
    DareLinear,
    DareTies(MajoritySign),
}

/// PEFT `merge_utils` on a stack of tensors, written as in Python: prune every tensor, stack,
/// (elect signs on the unweighted stack,) weight, sum or disjoint-merge. f32 throughout, sums
/// in input order. `masks` are DARE's keep-masks, one per tensor.
pub(crate) fn peft_reference(
    method: ReferenceMethod,
    tensors: &[Vec<f32>],
    weights: &[f32],
    density: f64,
    masks: Option<&[Vec<bool>]>,
) -> Vec<f32> {
    use ReferenceMethod::*;
    let numel = tensors[0].len();
    let topk = |t: &[f32]| -> Vec<f32> {
        let k = (density * t.len() as f64) as usize;
        let mut order: Vec<usize> = (0..t.len()).collect();
        order.sort_by(|&a, &b| t[b].abs().total_cmp(&t[a].abs()).then(a.cmp(&b)));
        let mut mask = vec![0.0f32; t.len()];
        for &i in &order[..k] {
            mask[i] = 1.0;
        }
        t.iter().zip(&mask).map(|(x, m)| x * m).collect()
    };
    let stack: Vec<Vec<f32>> = tensors
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if density >= 1.0 {
                return t.clone();
            }
            match method {
                Linear => t.clone(),
                MagnitudePrune | Ties(_) => topk(t),
                DareLinear | DareTies(_) => {
                    let m = &masks.expect("DARE needs masks")[i];
                    t.iter()
                        .zip(m)
                        .map(|(x, &keep)| (x * if keep { 1.0 } else { 0.0 }) / density as f32)
                        .collect()
                }
            }
        })
        .collect();
    let sign = |x: f32| {
        if x > 0.0 {
            1.0f32
        } else if x < 0.0 {
            -1.0
        } else {
            0.0
        }
    };
    match method {
        Ties(how) | DareTies(how) => (0..numel)
            .map(|j| {
                let mut magnitude = 0.0f32;
                for t in &stack {
                    magnitude += match how {
                        MajoritySign::Total => t[j],
                        MajoritySign::Frequency => sign(t[j]),
                    };
                }
                let majority = if magnitude >= 0.0 { 1.0 } else { -1.0 };
                let mut mixed = 0.0f32;
                let mut preserved = 0.0f32;
                for (t, w) in stack.iter().zip(weights) {
                    let agree = if sign(t[j]) == majority { 1.0 } else { 0.0 };
                    mixed += (t[j] * w) * agree;
                    preserved += agree;
                }
                mixed / preserved.max(1.0)
            })
            .collect(),
        _ => (0..numel)
            .map(|j| {
                let mut acc = 0.0f32;
                for (t, w) in stack.iter().zip(weights) {
                    acc += t[j] * w;
                }
                acc
            })
            .collect(),
    }
}

/// PEFT's factor-wise merge of one module, written out: weights `a = sign(c)·√|c|`,
/// `b = √|c|` with `c = w·alpha/r`, then `merge_utils` on the A stack and on the B stack.
/// Returns `(down, up)`.
pub(crate) fn factorwise_reference(
    inputs: &[MergeInput<'_>],
    weights: &[f64],
    path: &str,
    method: ReferenceMethod,
    density: f64,
) -> (Vec<f32>, Vec<f32>) {
    let mut a_stack = Vec::new();
    let mut b_stack = Vec::new();
    let mut a_w = Vec::new();
    let mut b_w = Vec::new();
    for (inp, &w) in inputs.iter().zip(weights) {
        if let Some(layer) = inp.adapter.layers.get(path) {
            let c = w * layer.alpha / layer.rank() as f64;
            let root = c.abs().sqrt();
            a_w.push((if c >= 0.0 { root } else { -root }) as f32);
            b_w.push(root as f32);
            a_stack.push(layer.down.to_f32());
            b_stack.push(layer.up.to_f32());
        }
    }
    (
        peft_reference(method, &a_stack, &a_w, density, None),
        peft_reference(method, &b_stack, &b_w, density, None),
    )
}
