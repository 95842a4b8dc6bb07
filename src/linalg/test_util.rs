//! Test-only oracles: dense f64 products, dense f64 SVDs and matrix comparisons. The kernels
//! under test never form `m × n` products; these helpers do, so tests stay small.

use super::low_rank::LowRankSvd;
use super::randomized::standard_normal;

/// `len` seeded standard-normal values.
pub(crate) fn gaussian(len: usize, seed: u64) -> Vec<f32> {
    standard_normal(len, seed)
}

pub(crate) use crate::testing::{dense_product, rel_fro_diff, singular_values};

/// `U·diag(S)·Vᵀ` as a dense row-major f64 matrix.
pub(crate) fn reconstruct(svd: &LowRankSvd) -> Vec<f64> {
    let (m, n, k) = (svd.m, svd.n, svd.rank());
    let mut out = vec![0.0f64; m * n];
    for i in 0..m {
        for l in 0..k {
            let us = f64::from(svd.u[i * k + l]) * svd.s[l];
            for j in 0..n {
                out[i * n + j] += us * f64::from(svd.vt[l * n + j]);
            }
        }
    }
    out
}

/// Largest entry of `|GᵀG − I|` for the columns (`by_columns`) or rows of a row-major
/// `rows × cols` matrix.
pub(crate) fn orthonormality_error(
    data: &[f32],
    rows: usize,
    cols: usize,
    by_columns: bool,
) -> f64 {
    let at = |i: usize, j: usize| f64::from(data[i * cols + j]);
    let (count, len) = if by_columns {
        (cols, rows)
    } else {
        (rows, cols)
    };
    let mut worst = 0.0f64;
    for a in 0..count {
        for b in 0..count {
            let dot: f64 = (0..len)
                .map(|t| {
                    if by_columns {
                        at(t, a) * at(t, b)
                    } else {
                        at(a, t) * at(b, t)
                    }
                })
                .sum();
            let target = if a == b { 1.0 } else { 0.0 };
            worst = worst.max((dot - target).abs());
        }
    }
    worst
}

/// Element-wise `|a − b| ≤ tol·|b|`, with a readable failure.
pub(crate) fn assert_close_rel(actual: &[f64], expected: &[f64], tol: f64) {
    assert_eq!(actual.len(), expected.len(), "lengths differ");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= tol * e.abs(),
            "σ[{i}]: got {a}, expected {e} (relative error {:.3e} > {tol:.0e})",
            ((a - e) / e).abs()
        );
    }
}
