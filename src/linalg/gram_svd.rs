//! The fast path of the factored SVD: the exact SVD of `B·A` from the Gram matrices of its
//! factors, with an accuracy check that hands hard cases back to the Householder path.
//!
//! Why: the Householder QRs of both factors cost `2(m+n)r²` flops in blocked kernels that run
//! far below the CPU's peak on skinny matrices, plus `4(m+n)rk` to apply them. The Gram
//! matrices `G_B = BᵀB` and `G_A = A·Aᵀ` cost `(m+n)r²/2` multiply-adds in a kernel that runs
//! near peak, and the kept singular vectors `(m+n)rk` more (see [`super::kernels`]).
//!
//! The algebra, with `G_B = L·Lᵀ` (Cholesky) so that `R_B = Lᵀ` is the R factor of `B`'s QR:
//! - `M = Lᵀ·G_A·L` (r × r) equals `C·Cᵀ` for the QR core `C = R_B·R_Aᵀ` of the product, so
//!   its eigenvalues are the squared singular values of `B·A` and its eigenvectors `U_c` are
//!   the core's left singular vectors;
//! - with `Y = L·U_c,k·S_k⁻¹`: `V_k = Aᵀ·Y` and `U_k = B·(G_A·Y·S_k⁻¹)` (from
//!   `V = Q_A·Cᵀ·U_c·S⁻¹` and `U = B·A·V·S⁻¹`), so neither factor's Q is ever formed and
//!   neither triangular factor is inverted.
//!
//! Accuracy: a Gram matrix squares its factor's condition number, so this path is taken only
//! when it cannot lose what the Householder path keeps:
//! - every Cholesky pivot keeps at least [`PIVOT_MIN`] of its column's squared norm (no column
//!   of `B` lies almost inside the span of the others; exactly dependent columns, e.g. a merge
//!   of an adapter with itself, always fail this);
//! - every kept singular value is non-zero, well above the f64 noise of `M`;
//! - the computed `U_k` and `V_k` are orthonormal to [`ORTHO_TOL`]: `U_kᵀU_k − I` and
//!   `V_kᵀV_k − I` are exactly the Gram errors projected on the kept directions, so this
//!   measures the result itself rather than bounding it.
//!
//! Any failure returns `None` and the caller runs the Householder path on the same data.

use super::kernels::{gram_cols, gram_rows, mul_cols, mul_rows, Isa, PaddedMatrix};
use super::low_rank::LowRankSvd;
use super::sym_eig::SymEig;
use crate::error::{Error, Result};
use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{matmul as tri_matmul, BlockStructure};
use faer::{Accum, Mat, MatRef, Par};

/// Smallest Cholesky pivot, as a fraction of its column's squared norm, the f32-accumulated
/// Gram matrix is trusted with. The Gram entries carry relative errors near 1e-8 (f32 block
/// sums added in f64), so a pivot of 1e-3 keeps about 1e-5 relative accuracy in the worst case
/// and the singular values it contributes stay within ~1e-7 of `‖B‖·‖A‖`.
const PIVOT_MIN: f64 = 1e-3;

/// Largest deviation of `U_kᵀU_k` or `V_kᵀV_k` from the identity accepted from this path: the
/// Householder path's own f32 rounding reaches a few 1e-7 on these shapes.
pub(crate) const ORTHO_TOL: f64 = 2e-6;

/// Kept singular values below this fraction of the largest are left to the Householder path
/// (their vectors would be divided by numerical noise).
const SIGMA_MIN: f64 = 1e-6;

/// The Gram path's state after the eigendecomposition, before singular vectors are formed.
pub(crate) struct GramCore {
    /// Lower Cholesky factor of `G_B`, r × r.
    l: Mat<f64>,
    /// `G_A`, r × r.
    ga: Mat<f64>,
    /// `M = Lᵀ·G_A·L` (lower triangle), for the full eigendecomposition if the partial one fails.
    mm: Mat<f64>,
    /// `M`'s tridiagonal form and eigenvalues.
    eig: SymEig,
    /// Singular values, descending.
    s: Vec<f64>,
    isa: Isa,
}

impl GramCore {
    /// Gram matrices, Cholesky and eigendecomposition for `b` (m × r) and `a` (r × n). `None`
    /// when a Cholesky pivot is too small for the f32 Gram matrix (see [`PIVOT_MIN`]).
    pub(crate) fn new(b: &PaddedMatrix, a: &PaddedMatrix) -> Result<Option<GramCore>> {
        let r = b.cols;
        debug_assert_eq!(a.rows, r);
        let isa = Isa::detect();
        let gb = gram_cols(b, isa);
        let Some(l) = cholesky(&gb, r) else {
            return Ok(None);
        };
        let ga_flat = gram_rows(a, isa);
        let ga = Mat::<f64>::from_fn(r, r, |i, j| ga_flat[i * r + j]);
        // M = Lᵀ·G_A·L (lower triangle), using L's triangle
        let mut t = Mat::<f64>::zeros(r, r);
        tri_matmul(
            t.as_mut(),
            BlockStructure::Rectangular,
            Accum::Replace,
            ga.as_ref(),
            BlockStructure::Rectangular,
            l.as_ref(),
            BlockStructure::TriangularLower,
            1.0,
            Par::Seq,
        );
        let mut mm = Mat::<f64>::zeros(r, r);
        tri_matmul(
            mm.as_mut(),
            BlockStructure::TriangularLower,
            Accum::Replace,
            l.transpose(),
            BlockStructure::TriangularUpper,
            t.as_ref(),
            BlockStructure::Rectangular,
            1.0,
            Par::Seq,
        );
        let eig = SymEig::new(mm.as_ref()).ok_or_else(|| {
            Error::Invalid(format!("eigenvalues of the {r}×{r} core did not converge"))
        })?;
        let s: Vec<f64> = eig.values().iter().map(|&v| v.max(0.0).sqrt()).collect();
        Ok(Some(GramCore {
            l,
            ga,
            mm,
            eig,
            s,
            isa,
        }))
    }

    /// All `r` singular values of the product, descending.
    pub(crate) fn singular_values(&self) -> &[f64] {
        &self.s
    }

    /// The `keep` leading triplets, or `None` when they fail the accuracy checks.
    pub(crate) fn into_svd(
        self,
        keep: usize,
        b: &PaddedMatrix,
        a: &PaddedMatrix,
    ) -> Option<LowRankSvd> {
        let r = self.s.len();
        let k = keep.min(r);
        let (m, n) = (b.rows, a.cols);
        if k == 0 {
            return Some(LowRankSvd::empty(m, n));
        }
        let s0 = self.s[0];
        let sk = self.s[k - 1];
        if !(s0 > 0.0 && sk > SIGMA_MIN * s0) {
            return None;
        }
        // the eigenvectors of M for the kept values
        let uc = match self.eig.leading_vectors(k) {
            Some(uc) => uc,
            None => {
                let evd = self.mm.self_adjoint_eigen(faer::Side::Lower).ok()?;
                let v = evd.U();
                // ascending order there
                Mat::<f64>::from_fn(r, k, |i, j| v[(i, r - 1 - j)])
            }
        };
        // Y = L·U_c,k·S⁻¹ (r × k), P = G_A·Y·S⁻¹ (r × k)
        let mut y = Mat::<f64>::zeros(r, k);
        matmul(
            y.as_mut(),
            Accum::Replace,
            self.l.as_ref(),
            uc.as_ref(),
            1.0,
            Par::Seq,
        );
        for j in 0..k {
            let inv = 1.0 / self.s[j];
            y.col_mut(j).iter_mut().for_each(|v| *v *= inv);
        }
        let mut p = Mat::<f64>::zeros(r, k);
        matmul(
            p.as_mut(),
            Accum::Replace,
            self.ga.as_ref(),
            y.as_ref(),
            1.0,
            Par::Seq,
        );
        let mut p32 = vec![0f32; r * k];
        let mut y32 = vec![0f32; r * k];
        for i in 0..r {
            for j in 0..k {
                p32[i * k + j] = (p[(i, j)] / self.s[j]) as f32;
                y32[i * k + j] = y[(i, j)] as f32;
            }
        }
        let u = mul_cols(b, &p32, k, self.isa);
        let vt = mul_rows(&y32, k, a, self.isa);
        let deviation = identity_deviation(&gram_cols(&u, self.isa), k)
            .max(identity_deviation(&gram_rows(&vt, self.isa), k));
        if deviation.is_nan() || deviation > ORTHO_TOL {
            return None;
        }
        let mut s = self.s;
        s.truncate(k);
        Some(LowRankSvd {
            u: u.to_dense(),
            s,
            vt: vt.to_dense(),
            m,
            n,
        })
    }
}

/// Largest `|g_ij − δ_ij|` of a `k × k` row-major matrix.
fn identity_deviation(g: &[f64], k: usize) -> f64 {
    let mut worst = 0.0f64;
    for i in 0..k {
        for j in 0..k {
            let want = if i == j { 1.0 } else { 0.0 };
            worst = worst.max((g[i * k + j] - want).abs());
        }
    }
    worst
}

/// Lower Cholesky factor of the `r × r` row-major `g`, or `None` if a pivot `L_jj²` falls
/// below [`PIVOT_MIN`] of its diagonal entry `g_jj` (or the factorisation fails outright).
fn cholesky(g: &[f64], r: usize) -> Option<Mat<f64>> {
    let gm = MatRef::from_row_major_slice(g, r, r);
    let llt = gm.llt(faer::Side::Lower).ok()?;
    let l = llt.L().to_owned();
    for j in 0..r {
        let (pivot, diag) = (l[(j, j)] * l[(j, j)], g[j * r + j]);
        if !(pivot >= PIVOT_MIN * diag && diag.is_finite()) {
            return None;
        }
    }
    Some(l)
}

/// The Householder path's view of a padded factor: `b` as an `m × r` matrix.
pub(crate) fn view_cols(b: &PaddedMatrix) -> MatRef<'_, f32> {
    MatRef::from_row_major_slice_with_stride(&b.data[..b.rows * b.stride], b.rows, b.cols, b.stride)
}

/// `a` (`r × n`, padded) as the `n × r` matrix `Aᵀ`.
pub(crate) fn view_rows_transposed(a: &PaddedMatrix) -> MatRef<'_, f32> {
    MatRef::from_row_major_slice_with_stride(&a.data[..a.rows * a.stride], a.rows, a.cols, a.stride)
        .transpose()
}
