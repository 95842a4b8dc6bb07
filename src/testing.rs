//! Test oracles shared by unit tests, integration tests and benches (cargo feature
//! `test-support`, off in release builds; the tests and benches turn it on): dense references
//! that the kernels under test never form. Kept small and obviously correct rather than fast.

use crate::adapter::LoraLayer;
use faer::Mat;

/// `Σ wᵢ·upᵢ·downᵢ` as a dense row-major `m × n` f64 matrix, by plain loops. Each term is
/// `(w, up, r, down)` with `up` row-major `m × r` and `down` row-major `r × n`.
pub fn dense_product(terms: &[(f64, &[f32], usize, &[f32])], m: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0.0f64; m * n];
    for &(w, up, r, down) in terms {
        for i in 0..m {
            for l in 0..r {
                let u = w * f64::from(up[i * r + l]);
                for j in 0..n {
                    out[i * n + j] += u * f64::from(down[l * n + j]);
                }
            }
        }
    }
    out
}

/// A layer's `ΔW = (alpha / r)·up·down` as a row-major `[out, in·kh·kw]` f64 matrix
/// (embeddings: PEFT's `[dim, num_embeddings]` orientation, untransposed).
pub fn dense_delta(layer: &LoraLayer) -> Vec<f64> {
    dense_weighted(&[(layer, 1.0)])
}

/// `Σ wᵢ·ΔWᵢ` of layers on the same module, dense f64.
pub fn dense_weighted(terms: &[(&LoraLayer, f64)]) -> Vec<f64> {
    let Some((first, _)) = terms.first() else {
        return Vec::new();
    };
    let m = first.out_features();
    let n = first.down.numel() / first.rank();
    let owned: Vec<(f64, Vec<f32>, usize, Vec<f32>)> = terms
        .iter()
        .map(|(l, w)| (w * l.scale(), l.up.to_f32(), l.rank(), l.down.to_f32()))
        .collect();
    let borrowed: Vec<(f64, &[f32], usize, &[f32])> = owned
        .iter()
        .map(|(w, u, r, d)| (*w, u.as_slice(), *r, d.as_slice()))
        .collect();
    dense_product(&borrowed, m, n)
}

/// `‖a − b‖_F / ‖b‖_F`.
pub fn rel_fro_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "shapes differ");
    let diff: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let norm: f64 = b.iter().map(|y| y * y).sum();
    (diff / norm).sqrt()
}

/// Dense thin SVD in f64 (faer): `U` row-major `rows × k`, `S` descending, `Vᵀ` row-major
/// `k × cols`, `k = min(rows, cols)`.
pub fn dense_svd(dense: &[f64], rows: usize, cols: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mat = Mat::<f64>::from_fn(rows, cols, |i, j| dense[i * cols + j]);
    let svd = mat.thin_svd().expect("reference SVD converges");
    let k = rows.min(cols);
    let s: Vec<f64> = svd.S().column_vector().iter().copied().collect();
    let u = (0..rows * k).map(|x| svd.U()[(x / k, x % k)]).collect();
    let vt = (0..k * cols)
        .map(|x| svd.V()[(x % cols, x / cols)])
        .collect();
    (u, s, vt)
}

/// Singular values of a dense row-major f64 matrix, descending.
pub fn singular_values(dense: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mat = Mat::<f64>::from_fn(rows, cols, |i, j| dense[i * cols + j]);
    mat.singular_values().expect("reference SVD converges")
}

/// The best rank-`k` approximation of a dense matrix (Eckart–Young), dense f64.
pub fn truncated(dense: &[f64], rows: usize, cols: usize, k: usize) -> Vec<f64> {
    let (u, s, vt) = dense_svd(dense, rows, cols);
    let kk = rows.min(cols);
    let mut out = vec![0.0; rows * cols];
    for l in 0..k.min(kk) {
        for i in 0..rows {
            let us = u[i * kk + l] * s[l];
            for j in 0..cols {
                out[i * cols + j] += us * vt[l * cols + j];
            }
        }
    }
    out
}

/// `⟨ΔW_x, ΔW_y⟩_F` from the factors alone: `tr((B_xᵀB_y)(A_yA_xᵀ))·s_x·s_y`, so large
/// modules need no dense matrix.
pub fn fro_inner(x: &LoraLayer, y: &LoraLayer) -> f64 {
    let (bx, ax, rx) = (x.up.to_f64(), x.down.to_f64(), x.rank());
    let (by, ay, ry) = (y.up.to_f64(), y.down.to_f64(), y.rank());
    let (m, n) = (x.out_features(), ax.len() / rx);
    assert_eq!(m, y.out_features(), "out features differ");
    assert_eq!(n, ay.len() / ry, "in features differ");
    let mut t = 0.0;
    for i in 0..rx {
        for j in 0..ry {
            let bb: f64 = (0..m).map(|o| bx[o * rx + i] * by[o * ry + j]).sum();
            let aa: f64 = (0..n).map(|c| ax[i * n + c] * ay[j * n + c]).sum();
            t += bb * aa;
        }
    }
    t * x.scale() * y.scale()
}

/// `‖ΔW_ours − Σ wᵢ·ΔWᵢ‖_F / ‖Σ wᵢ·ΔWᵢ‖_F`, from the factors only.
pub fn layer_rel_diff(ours: &LoraLayer, terms: &[(&LoraLayer, f64)]) -> f64 {
    let xx = fro_inner(ours, ours);
    let xy: f64 = terms.iter().map(|(l, w)| w * fro_inner(ours, l)).sum();
    let mut yy = 0.0;
    for (a, wa) in terms {
        for (b, wb) in terms {
            yy += wa * wb * fro_inner(a, b);
        }
    }
    ((xx + yy - 2.0 * xy).max(0.0)).sqrt() / yy.sqrt().max(1e-300)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::LayerKind;
    use crate::tensor::{DType, Tensor};

    #[test]
    fn the_dense_reference_matches_a_hand_computed_product() {
        // up = [[1, 2], [3, 4]], down = [[1, 0, 2], [0, 1, 1]], alpha 4, r 2 → scale 2
        let up = Tensor::from_f32(vec![2, 2], &[1., 2., 3., 4.], DType::F32).unwrap();
        let down = Tensor::from_f32(vec![2, 3], &[1., 0., 2., 0., 1., 1.], DType::F32).unwrap();
        let l = LoraLayer::new("m", down, up, 4.0, LayerKind::Linear).unwrap();
        assert_eq!(dense_delta(&l), vec![2., 4., 8., 6., 8., 20.]);
        let d = dense_delta(&l);
        assert!((fro_inner(&l, &l) - d.iter().map(|x| x * x).sum::<f64>()).abs() < 1e-9);
        assert!(layer_rel_diff(&l, &[(&l, 1.0)]) < 1e-12);
    }
}
