//! The changes a bake makes to one base tensor, and their arithmetic in f32.
//!
//! Several adapters' deltas add up. DoRA follows PEFT after PR #3609: each DoRA adapter's
//! magnitude is normalised against the *unmerged* base weight, so the baked weight equals the
//! unmerged forward pass `W₀ + Σ_lora ΔWᵢ + Σ_dora [(fᵢ − 1) ⊙ W₀ + fᵢ ⊙ ΔWᵢ]` with
//! `fᵢ = mᵢ / ‖W₀ + ΔWᵢ‖_row`; one DoRA adapter alone gives `f ⊙ (W₀ + ΔW)`.

use crate::adapter::LoraLayer;
use crate::linalg::add_low_rank;
use crate::tensor::Tensor;
use rayon::prelude::*;
use std::ops::Range;

/// One change to a base tensor. `rows` limits it to a block of rows (a fused q/k/v weight).
pub enum Edit<'a> {
    /// `W += coef·B·A` (`(B·A)ᵀ` when `transpose`), then DoRA's rescaling if the layer has a
    /// magnitude.
    Delta {
        layer: &'a LoraLayer,
        coef: f32,
        transpose: bool,
        rows: Option<Range<usize>>,
    },
    /// `b += coef·B.bias`.
    Bias {
        layer: &'a LoraLayer,
        coef: f32,
        rows: Option<Range<usize>>,
    },
    /// A fully trained tensor (`modules_to_save`): `W = W₀ + weight·(T − W₀)`, `T` itself at 1.
    Replace { tensor: &'a Tensor, weight: f32 },
}

impl Edit<'_> {
    fn needs_base(&self) -> bool {
        match self {
            Edit::Delta { layer, .. } => layer.magnitude.is_some(),
            Edit::Replace { weight, .. } => *weight != 1.0,
            Edit::Bias { .. } => false,
        }
    }
}

/// Apply `edits` to `w` (the base tensor in f32, `rows` rows).
pub fn apply_edits(w: &mut [f32], rows: usize, edits: &[Edit<'_>]) {
    let cols = w.len() / rows.max(1);
    let base: Option<Vec<f32>> = edits.iter().any(Edit::needs_base).then(|| w.to_vec());
    for e in edits {
        match e {
            Edit::Delta {
                layer,
                coef,
                transpose,
                rows: block,
            } => {
                let range = block.clone().unwrap_or(0..rows);
                let span = range.start * cols..range.end * cols;
                match (&layer.magnitude, &base) {
                    (Some(m), Some(base)) => {
                        let w0 = &base[span.clone()];
                        let mut merged = w0.to_vec();
                        add_delta(&mut merged, cols, layer, *coef, *transpose);
                        let f = dora_factors(&merged, cols, &m.to_f32(), *transpose);
                        let f_of = |i: usize| if *transpose { f[i % cols] } else { f[i / cols] };
                        for (i, (x, (t, b))) in
                            w[span].iter_mut().zip(merged.iter().zip(w0)).enumerate()
                        {
                            *x += f_of(i) * t - b;
                        }
                    }
                    _ => add_delta(&mut w[span], cols, layer, *coef, *transpose),
                }
            }
            Edit::Bias {
                layer,
                coef,
                rows: block,
            } => {
                if let Some(b) = &layer.bias {
                    let start = block.as_ref().map_or(0, |r| r.start);
                    for (x, y) in w[start..].iter_mut().zip(b.to_f32()) {
                        *x += coef * y;
                    }
                }
            }
            Edit::Replace { tensor, weight } => {
                let t = tensor.to_f32();
                match &base {
                    Some(base) if *weight != 1.0 => {
                        for ((x, t), b) in w.iter_mut().zip(&t).zip(base) {
                            *x = b + weight * (t - b);
                        }
                    }
                    _ => w.copy_from_slice(&t),
                }
            }
        }
    }
}

/// `w += c·(B·A)` (or its transpose) for a row-major `w` with `cols` columns.
fn add_delta(w: &mut [f32], cols: usize, layer: &LoraLayer, c: f32, transpose: bool) {
    let r = layer.rank();
    let (a, b) = (layer.down.to_f32(), layer.up.to_f32());
    if transpose {
        // (B·A)ᵀ = Aᵀ·Bᵀ: `w` is `in × out`
        let (n_in, n_out) = (a.len() / r.max(1), b.len() / r.max(1));
        let at = transposed(&a, r, n_in);
        let bt = transposed(&b, n_out, r);
        add_low_rank(w, cols, c, &at, &bt, r);
    } else {
        add_low_rank(w, cols, c, &b, &a, r);
    }
}

/// The `cols × rows` transpose of a row-major `rows × cols` matrix.
fn transposed(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; x.len()];
    for (i, row) in x.chunks_exact(cols.max(1)).enumerate().take(rows) {
        for (j, &v) in row.iter().enumerate() {
            t[j * rows + i] = v;
        }
    }
    t
}

/// DoRA's `m / ‖W + ΔW‖` per output: per row, or per column of a transposed (`[in, out]`)
/// weight. A zero norm leaves the output unscaled.
fn dora_factors(merged: &[f32], cols: usize, magnitude: &[f32], transpose: bool) -> Vec<f32> {
    let rows = merged.len() / cols.max(1);
    let norms: Vec<f64> = if transpose {
        (0..cols)
            .map(|j| {
                (0..rows)
                    .map(|i| f64::from(merged[i * cols + j]).powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .collect()
    } else {
        merged
            .par_chunks(cols)
            .map(|row| {
                row.iter()
                    .map(|&x| f64::from(x).powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .collect()
    };
    norms
        .iter()
        .zip(magnitude)
        .map(|(&n, &m)| {
            if n > 0.0 {
                (f64::from(m) / n) as f32
            } else {
                1.0
            }
        })
        .collect()
}
