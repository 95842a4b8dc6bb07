//! Exact SVD of a factored product `B·A` without ever forming the `m × n` matrix.
//!
//! Why: a LoRA delta `ΔW = s·B·A` has rank ≤ r. With thin QRs `B = Q_B·R_B` and
//! `Aᵀ = Q_A·R_A`, `B·A = Q_B·(R_B·R_Aᵀ)·Q_Aᵀ`, so the SVD of the small `r × r` core
//! `R_B·R_Aᵀ = U_c·Σ·V_cᵀ` gives the exact thin SVD `(Q_B·U_c)·Σ·(Q_A·V_c)ᵀ`. Cost
//! `O((m+n)·r² + r³)` and memory `O((m+n)·r)`, instead of a dense SVD at `O(m·n·min(m,n))`
//! (sd-scripts' resize takes minutes per Flux module that way).
//!
//! A weighted sum of LoRAs on one module is one factored product
//! `[w₁B₁ … wₙBₙ]·[A₁; …; Aₙ]`, so merges use the same kernel ([`weighted_sum_svd`]).
//!
//! Conv layers: the caller reshapes `down` `[r, in, kh, kw]` to `r × (in·kh·kw)` (row-major,
//! no copy needed) and `up` `[out, r, 1, 1]` to `out × r`; the resulting `Vᵀ` reshapes back to
//! `[k, in, kh, kw]`. This is exactly sd-scripts' `merge_conv` reshape.

use super::gram_svd::{view_cols, view_rows_transposed, GramCore};
use super::kernels::PaddedMatrix;
use super::layout::{all_finite, check_matrix, element_count, narrow, widen};
use super::low_rank::LowRankSvd;
use crate::error::{Error, Result};
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef};

/// One term `weight · up · down` of [`weighted_sum_svd`]: `(weight, up m×rᵢ row-major, rᵢ,
/// down rᵢ×n row-major)`. Fold the LoRA scale (`alpha/r`) into `weight`.
pub type WeightedTerm<'a> = (f64, &'a [f32], usize, &'a [f32]);

/// Exact thin SVD of `up·down`, where `up` is `m × rank` and `down` is `rank × n`, both
/// row-major.
///
/// Returns all `k = min(rank, m, n)` triplets, descending. Zero and rank-deficient products
/// are fine: the extra singular values are (numerically) zero and `U`, `V` stay orthonormal.
/// The LoRA scale is not applied: pass it folded into `up`, or scale `s` afterwards.
pub fn factored_svd(
    up: &[f32],
    down: &[f32],
    m: usize,
    rank: usize,
    n: usize,
) -> Result<LowRankSvd> {
    factored_svd_keeping(up, down, m, rank, n, |s| Ok(s.len())).map(|(svd, _)| svd)
}

/// [`factored_svd`] that forms singular vectors only for the `keep(σ)` largest triplets (chosen
/// from all singular values, which are returned too), the expensive part for large modules.
pub fn factored_svd_keeping(
    up: &[f32],
    down: &[f32],
    m: usize,
    rank: usize,
    n: usize,
    keep: impl FnOnce(&[f64]) -> Result<usize>,
) -> Result<(LowRankSvd, Vec<f64>)> {
    check_matrix("lora up (B)", up, m, rank)?;
    check_matrix("lora down (A)", down, rank, n)?;
    if m == 0 || n == 0 || rank == 0 {
        return Ok((LowRankSvd::empty(m, n), Vec::new()));
    }
    let mut b = PaddedMatrix::for_gram_cols(m, rank);
    for (i, row) in up.chunks_exact(rank).enumerate() {
        b.row_mut(i).copy_from_slice(row);
    }
    let mut a = PaddedMatrix::for_gram_rows(rank, n);
    for (j, row) in down.chunks_exact(n).enumerate() {
        a.row_mut(j).copy_from_slice(row);
    }
    svd_of_product(&b, &a, keep)
}

/// [`factored_svd_keeping`] for factors decoded straight into the kernels' layout, without an
/// intermediate copy: `fill_up(buf, stride)` writes the `m × rank` up factor and
/// `fill_down(buf, stride)` the `rank × n` down factor, row-major, into zeroed buffers whose
/// rows start `stride` values apart. The values are checked finite here.
pub fn factored_svd_filled(
    m: usize,
    rank: usize,
    n: usize,
    fill_up: impl FnOnce(&mut [f32], usize),
    fill_down: impl FnOnce(&mut [f32], usize),
    keep: impl FnOnce(&[f64]) -> Result<usize>,
) -> Result<(LowRankSvd, Vec<f64>)> {
    element_count("lora up (B)", m, rank)?;
    element_count("lora down (A)", rank, n)?;
    if m == 0 || n == 0 || rank == 0 {
        return Ok((LowRankSvd::empty(m, n), Vec::new()));
    }
    let mut b = PaddedMatrix::for_gram_cols(m, rank);
    fill_up(&mut b.data, b.stride);
    check_padded("lora up (B)", &b)?;
    let mut a = PaddedMatrix::for_gram_rows(rank, n);
    fill_down(&mut a.data, a.stride);
    check_padded("lora down (A)", &a)?;
    svd_of_product(&b, &a, keep)
}

/// Checks that every value of `x` is finite, naming the first one that is not.
fn check_padded(what: &str, x: &PaddedMatrix) -> Result<()> {
    if all_finite(&x.data) {
        return Ok(());
    }
    match x.data.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(Error::Invalid(format!(
            "{what}: value at row {}, column {} is {} (inputs must be finite)",
            i / x.stride,
            i % x.stride,
            x.data[i]
        ))),
        None => Ok(()),
    }
}

/// The exact SVD of `b·a` (`b` m × r, `a` r × n, both padded for the kernels) with vectors for
/// the `keep(σ)` largest triplets: the Gram path when it is accurate for these factors, else
/// Householder QRs (see [`super::gram_svd`]). Also returns all singular values. Signs are
/// canonical ([`LowRankSvd::canonicalize_signs`]), so both paths give the same factors.
pub(crate) fn svd_of_product(
    b: &PaddedMatrix,
    a: &PaddedMatrix,
    keep: impl FnOnce(&[f64]) -> Result<usize>,
) -> Result<(LowRankSvd, Vec<f64>)> {
    let (mut svd, s) = svd_of_product_any_signs(b, a, keep)?;
    svd.canonicalize_signs();
    Ok((svd, s))
}

fn svd_of_product_any_signs(
    b: &PaddedMatrix,
    a: &PaddedMatrix,
    keep: impl FnOnce(&[f64]) -> Result<usize>,
) -> Result<(LowRankSvd, Vec<f64>)> {
    let (m, r, n) = (b.rows, b.cols, a.cols);
    // a Gram matrix of a factor with more columns than rows is singular: Householder only
    if r <= m && r <= n {
        if let Some(core) = GramCore::new(b, a)? {
            let s = core.singular_values().to_vec();
            let k = keep(&s)?;
            return match core.into_svd(k, b, a) {
                Some(svd) => Ok((svd, s)),
                // same rank, chosen from values equal to f32 precision
                None => householder_svd(b, a, |_| Ok(k)),
            };
        }
    }
    householder_svd(b, a, keep)
}

fn householder_svd(
    b: &PaddedMatrix,
    a: &PaddedMatrix,
    keep: impl FnOnce(&[f64]) -> Result<usize>,
) -> Result<(LowRankSvd, Vec<f64>)> {
    let core = ProductCore::general(view_cols(b), view_rows_transposed(a))?;
    let s = core.singular_values().to_vec();
    let k = keep(&s)?;
    Ok((core.into_svd(k), s))
}

/// Exact thin SVD of `Σ wᵢ·upᵢ·downᵢ` for terms of possibly different ranks `rᵢ` on the same
/// `m × n` module: the factored SVD of `[w₁B₁ … wₙBₙ]·[A₁; …; Aₙ]`.
///
/// Returns `k = min(Σrᵢ, m, n)` triplets. The weights are applied in f64 and rounded once to
/// f32. Each `weight` should already include the term's LoRA scale (`alpha/r`, or
/// `alpha/√r` for rsLoRA) times its merge weight.
pub fn weighted_sum_svd(terms: &[WeightedTerm<'_>], m: usize, n: usize) -> Result<LowRankSvd> {
    weighted_sum_svd_keeping(terms, m, n, |s| Ok(s.len())).map(|(svd, _)| svd)
}

/// [`weighted_sum_svd`] forming vectors only for the `keep(σ)` largest triplets (see
/// [`factored_svd_keeping`]); also returns all singular values.
pub fn weighted_sum_svd_keeping(
    terms: &[WeightedTerm<'_>],
    m: usize,
    n: usize,
    keep: impl FnOnce(&[f64]) -> Result<usize>,
) -> Result<(LowRankSvd, Vec<f64>)> {
    let mut total_rank = 0usize;
    for (i, &(weight, up, rank, down)) in terms.iter().enumerate() {
        if !weight.is_finite() {
            return Err(Error::Invalid(format!(
                "term {i}: weight {weight} is not finite"
            )));
        }
        check_matrix(&format!("term {i}: lora up (B)"), up, m, rank)?;
        check_matrix(&format!("term {i}: lora down (A)"), down, rank, n)?;
        total_rank = total_rank
            .checked_add(rank)
            .ok_or_else(|| Error::Invalid("sum of term ranks overflows usize".into()))?;
    }
    element_count("concatenated up", m, total_rank)?;
    element_count("concatenated down", total_rank, n)?;

    // B_cat (m × R) and A_cat (R × n), blocks in term order; the weights go on B in f64,
    // rounded once to f32.
    let mut b = PaddedMatrix::for_gram_cols(m, total_rank);
    let mut a = PaddedMatrix::for_gram_rows(total_rank, n);
    let mut offset = 0;
    let mut finite = true;
    for &(weight, up, rank, down) in terms {
        if rank > 0 {
            for (i, row) in up.chunks_exact(rank).enumerate() {
                let dst = &mut b.row_mut(i)[offset..offset + rank];
                for (d, &x) in dst.iter_mut().zip(row) {
                    let v = (weight * f64::from(x)) as f32;
                    finite &= v.is_finite();
                    *d = v;
                }
            }
        }
        for (j, row) in down.chunks_exact(n.max(1)).enumerate().take(rank) {
            a.row_mut(offset + j).copy_from_slice(row);
        }
        offset += rank;
    }
    // only reachable when a weight overflows a factor: the inputs were checked finite
    if !finite {
        return Err(Error::Invalid(
            "weighted up factors overflow float32 (weights too large)".into(),
        ));
    }
    if m == 0 || n == 0 || total_rank == 0 {
        return Ok((LowRankSvd::empty(m, n), Vec::new()));
    }
    svd_of_product(&b, &a, keep)
}

/// One term of [`weighted_sum_svd_filled`]: `weight · up · down` (rank `rank`), its factors
/// written by callbacks straight into the kernels' buffers. `up(buf, stride, weight)` writes
/// `weight · up` (`m × rank`, the product taken in f64 and rounded once to f32) row-major with
/// rows `stride` apart, `down(buf, stride, 1.0)` the `rank × n` factor likewise; either may
/// refuse the values (e.g. non-finite ones) with an error.
pub struct FilledTerm<'a> {
    pub weight: f64,
    pub rank: usize,
    pub up: &'a FillFactor<'a>,
    pub down: &'a FillFactor<'a>,
}

/// See [`FilledTerm`].
pub type FillFactor<'a> = dyn Fn(&mut [f32], usize, f64) -> Result<()> + 'a;

/// [`weighted_sum_svd_keeping`] with the factors decoded by the caller directly into the
/// concatenated buffers (no intermediate copy), weights applied as they are written.
pub fn weighted_sum_svd_filled(
    terms: &[FilledTerm<'_>],
    m: usize,
    n: usize,
    keep: impl FnOnce(&[f64]) -> Result<usize>,
) -> Result<(LowRankSvd, Vec<f64>)> {
    let mut total_rank = 0usize;
    for (i, t) in terms.iter().enumerate() {
        if !t.weight.is_finite() {
            return Err(Error::Invalid(format!(
                "term {i}: weight {} is not finite",
                t.weight
            )));
        }
        total_rank = total_rank
            .checked_add(t.rank)
            .ok_or_else(|| Error::Invalid("sum of term ranks overflows usize".into()))?;
    }
    element_count("concatenated up", m, total_rank)?;
    element_count("concatenated down", total_rank, n)?;
    if m == 0 || n == 0 || total_rank == 0 {
        return Ok((LowRankSvd::empty(m, n), Vec::new()));
    }
    let mut b = PaddedMatrix::for_gram_cols(m, total_rank);
    let mut a = PaddedMatrix::for_gram_rows(total_rank, n);
    let mut offset = 0;
    for t in terms {
        if t.rank == 0 {
            continue;
        }
        (t.up)(&mut b.data[offset..], b.stride, t.weight)?;
        (t.down)(&mut a.data[offset * a.stride..], a.stride, 1.0)?;
        offset += t.rank;
    }
    // the inputs are finite (the callbacks check): only a weight can overflow a factor
    if !all_finite(&b.data) {
        return Err(Error::Invalid(
            "weighted up factors overflow float32 (weights too large)".into(),
        ));
    }
    svd_of_product(&b, &a, keep)
}

/// The left basis of a [`ProductCore`]: Householder reflectors of `B`'s QR, or `B` itself.
enum LeftBasis<'a> {
    Householder(faer::linalg::solvers::Qr<f32>),
    Orthonormal(MatRef<'a, f32>),
}

/// The exact SVD of `b · atᵀ` before its singular vectors are formed: the QRs of both factors
/// and the SVD of the small core. Callers read all singular values (to choose a rank), then
/// form only the vectors they keep: forming `U = Q_B·U_c` for `keep` columns by applying the
/// Householder reflectors costs `O(m·r·keep)`, instead of forming `Q_B` (`O(m·r²)`) and
/// multiplying.
pub(crate) struct ProductCore<'a> {
    left: LeftBasis<'a>,
    right: faer::linalg::solvers::Qr<f32>,
    u_core: Mat<f32>,
    v_core: Mat<f32>,
    s: Vec<f64>,
    m: usize,
    n: usize,
}

impl<'a> ProductCore<'a> {
    /// QR both factors and take the SVD of the core, `b` `m × r` (any), `at` `n × r`.
    pub(crate) fn general(b: MatRef<'_, f32>, at: MatRef<'_, f32>) -> Result<ProductCore<'static>> {
        let qr = b.qr();
        let r_b = widen(qr.thin_R());
        ProductCore::with_left(LeftBasis::Householder(qr), r_b, b.nrows(), at)
    }

    /// As [`general`](Self::general) for a `b` whose columns are already orthonormal.
    pub(crate) fn orthonormal(b: MatRef<'a, f32>, at: MatRef<'_, f32>) -> Result<Self> {
        let r = b.ncols();
        ProductCore::with_left(
            LeftBasis::Orthonormal(b),
            Mat::<f64>::identity(r, r),
            b.nrows(),
            at,
        )
    }

    fn with_left(
        left: LeftBasis<'a>,
        r_b: Mat<f64>,
        m: usize,
        at: MatRef<'_, f32>,
    ) -> Result<Self> {
        let n = at.nrows();
        let r = at.ncols();
        let right = at.qr();
        let r_a = widen(right.thin_R());
        // The small core in f64: accuracy is free at this size.
        let core = &r_b * r_a.transpose();
        let core_svd = core.thin_svd().map_err(|e| {
            Error::Invalid(format!("SVD of the {r}×{r} core did not converge: {e:?}"))
        })?;
        let s = core_svd.S().column_vector().iter().copied().collect();
        Ok(ProductCore {
            left,
            right,
            u_core: narrow(core_svd.U()),
            v_core: narrow(core_svd.V()),
            s,
            m,
            n,
        })
    }

    /// All `k = min(r, m, n)` singular values, descending.
    pub(crate) fn singular_values(&self) -> &[f64] {
        &self.s
    }

    /// The SVD restricted to the `keep` largest triplets (`keep` is capped at `k`).
    pub(crate) fn into_svd(self, keep: usize) -> LowRankSvd {
        let keep = keep.min(self.s.len());
        let (m, n) = (self.m, self.n);
        let par = faer::get_global_parallelism();
        // U (m × keep) straight into a row-major buffer.
        let mut u = vec![0.0f32; m * keep];
        let u_core = self.u_core.as_ref().subcols(0, keep);
        let u_view = MatMut::from_row_major_slice_mut(&mut u, m, keep);
        match &self.left {
            LeftBasis::Orthonormal(b) => matmul(u_view, Accum::Replace, *b, u_core, 1.0f32, par),
            LeftBasis::Householder(qr) => apply_q(qr, u_core, u_view, par),
        }
        // Vᵀ (keep × n row-major) is V = Q_A·V_c (n × keep) column-major: the same bytes.
        let mut vt = vec![0.0f32; keep * n];
        let v_core = self.v_core.as_ref().subcols(0, keep);
        apply_q(
            &self.right,
            v_core,
            MatMut::from_column_major_slice_mut(&mut vt, n, keep),
            par,
        );
        let mut s = self.s;
        s.truncate(keep);
        LowRankSvd { u, s, vt, m, n }
    }
}

/// `out = Q·[small; 0]` for the thin Q of `qr`, by applying its Householder reflectors.
fn apply_q(
    qr: &faer::linalg::solvers::Qr<f32>,
    small: MatRef<'_, f32>,
    mut out: MatMut<'_, f32>,
    par: faer::Par,
) {
    use faer::dyn_stack::{MemBuffer, MemStack};
    use faer::linalg::householder;
    out.fill(0.0);
    let rows = small.nrows().min(out.nrows());
    out.as_mut()
        .subrows_mut(0, rows)
        .copy_from(small.subrows(0, rows));
    let basis = qr.Q_basis();
    let coeff = qr.Q_coeff();
    let scratch = householder::apply_block_householder_sequence_on_the_left_in_place_scratch::<f32>(
        basis.nrows(),
        coeff.nrows(),
        out.ncols(),
    );
    let mut buf = MemBuffer::new(scratch);
    householder::apply_block_householder_sequence_on_the_left_in_place_with_conj(
        basis,
        coeff,
        faer::Conj::No,
        out,
        par,
        MemStack::new(&mut buf),
    );
}

/// The exact thin SVD of `q · atᵀ` for a `q` (`m × r`) with orthonormal columns (e.g. a
/// randomized range finder's basis), all triplets.
pub(crate) fn svd_of_orthonormal_product(
    q: MatRef<'_, f32>,
    at: MatRef<'_, f32>,
) -> Result<LowRankSvd> {
    let (m, r) = q.shape();
    let n = at.nrows();
    if m == 0 || n == 0 || r == 0 {
        return Ok(LowRankSvd::empty(m, n));
    }
    let core = ProductCore::orthonormal(q, at)?;
    let k = core.singular_values().len();
    Ok(core.into_svd(k))
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{
        assert_close_rel, dense_product, gaussian, orthonormality_error, reconstruct, rel_fro_diff,
        singular_values,
    };
    use super::*;

    /// A random `m × r` up and `r × n` down, seeded.
    fn lora(m: usize, r: usize, n: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
        (gaussian(m * r, seed), gaussian(r * n, seed ^ 0x9e37_79b9))
    }

    fn check_against_dense(m: usize, r: usize, n: usize, seed: u64) {
        let (up, down) = lora(m, r, n, seed);
        let svd = factored_svd(&up, &down, m, r, n).expect("valid input");
        let dense = dense_product(&[(1.0, &up, r, &down)], m, n);
        let reference = singular_values(&dense, m, n);
        let k = r.min(m).min(n);
        assert_eq!(svd.rank(), k);
        assert_close_rel(&svd.s, &reference[..k], 1e-5);
        assert!(rel_fro_diff(&reconstruct(&svd), &dense) < 1e-5);
        assert!(orthonormality_error(&svd.u, m, k, true) < 1e-5);
        assert!(orthonormality_error(&svd.vt, k, n, false) < 1e-5);
    }

    #[test]
    fn factored_svd_matches_dense_svd_of_product() {
        for (seed, &(m, r, n)) in [(40, 8, 30), (64, 4, 96), (17, 5, 23), (50, 16, 50)]
            .iter()
            .enumerate()
        {
            check_against_dense(m, r, n, seed as u64 + 1);
        }
    }

    #[test]
    fn factored_svd_handles_rank_above_matrix_dims() {
        // r > min(m, n): k = min(r, m, n), still exact.
        check_against_dense(6, 10, 9, 7);
        check_against_dense(12, 10, 5, 8);
        check_against_dense(3, 8, 4, 9);
    }

    #[test]
    fn truncation_error_is_sum_of_dropped_squares() {
        let (m, r, n) = (48, 12, 36);
        let (up, down) = lora(m, r, n, 11);
        let dense = dense_product(&[(1.0, &up, r, &down)], m, n);
        for k in [1, 4, 8, 11] {
            let mut svd = factored_svd(&up, &down, m, r, n).expect("valid input");
            let expected = svd.tail_energy(k);
            svd.truncate(k);
            let approx = reconstruct(&svd);
            let err_sq: f64 = approx
                .iter()
                .zip(&dense)
                .map(|(a, b)| (a - b) * (a - b))
                .sum();
            assert!(
                ((err_sq - expected) / expected).abs() < 1e-4,
                "k={k}: ‖BA − T_k‖² = {err_sq}, Σ dropped σ² = {expected}"
            );
        }
    }

    #[test]
    fn frobenius_norm_of_product_is_kept() {
        let (m, r, n) = (30, 6, 20);
        let (up, down) = lora(m, r, n, 12);
        let dense = dense_product(&[(1.0, &up, r, &down)], m, n);
        let direct: f64 = dense.iter().map(|x| x * x).sum();
        let svd = factored_svd(&up, &down, m, r, n).expect("valid input");
        assert!(((svd.frob_norm_sq() - direct) / direct).abs() < 1e-5);
    }

    #[test]
    fn zero_product_gives_zero_singular_values_and_no_nan() {
        let (m, r, n) = (10, 4, 7);
        let svd = factored_svd(&vec![0.0; m * r], &gaussian(r * n, 3), m, r, n).expect("valid");
        assert_eq!(svd.rank(), 4);
        assert!(svd.s.iter().all(|&x| x == 0.0));
        assert!(svd.u.iter().chain(&svd.vt).all(|x| x.is_finite()));
        let svd = factored_svd(&vec![0.0; m * r], &vec![0.0; r * n], m, r, n).expect("valid");
        assert!(svd.s.iter().all(|&x| x == 0.0));
        assert!(svd.u.iter().chain(&svd.vt).all(|x| x.is_finite()));
    }

    #[test]
    fn rank_deficient_factors_give_true_rank() {
        // up has two identical columns and a zero column: true rank 2 of 4.
        let (m, r, n) = (20, 4, 15);
        let col = gaussian(m, 21);
        let other = gaussian(m, 22);
        let mut up = vec![0.0f32; m * r];
        for i in 0..m {
            up[i * r] = col[i];
            up[i * r + 1] = col[i];
            up[i * r + 2] = other[i];
        }
        let down = gaussian(r * n, 23);
        let svd = factored_svd(&up, &down, m, r, n).expect("valid input");
        let dense = dense_product(&[(1.0, &up, r, &down)], m, n);
        let reference = singular_values(&dense, m, n);
        assert_close_rel(&svd.s[..2], &reference[..2], 1e-5);
        assert!(svd.s[2] < 1e-5 * svd.s[0] && svd.s[3] < 1e-5 * svd.s[0]);
        assert!(svd.u.iter().chain(&svd.vt).all(|x| x.is_finite()));
        assert!(orthonormality_error(&svd.u, m, 4, true) < 1e-5);
        assert!(rel_fro_diff(&reconstruct(&svd), &dense) < 1e-5);
    }

    #[test]
    fn weighted_sum_matches_dense_sum_of_products() {
        let (m, n) = (36, 28);
        let (u1, d1) = lora(m, 4, n, 31);
        let (u2, d2) = lora(m, 8, n, 32);
        let (u3, d3) = lora(m, 2, n, 33);
        let terms: [WeightedTerm; 3] =
            [(0.6, &u1, 4, &d1), (-0.4, &u2, 8, &d2), (1.5, &u3, 2, &d3)];
        let svd = weighted_sum_svd(&terms, m, n).expect("valid input");
        let dense = dense_product(&terms, m, n);
        let reference = singular_values(&dense, m, n);
        assert_eq!(svd.rank(), 14);
        assert_close_rel(&svd.s, &reference[..14], 1e-5);
        assert!(rel_fro_diff(&reconstruct(&svd), &dense) < 1e-5);
        assert!(orthonormality_error(&svd.u, m, 14, true) < 1e-5);
        assert!(orthonormality_error(&svd.vt, 14, n, false) < 1e-5);
    }

    #[test]
    fn cancelling_terms_give_a_numerically_zero_sum() {
        let (m, r, n) = (16, 3, 12);
        let (up, down) = lora(m, r, n, 41);
        let terms: [WeightedTerm; 2] = [(1.0, &up, r, &down), (-1.0, &up, r, &down)];
        let svd = weighted_sum_svd(&terms, m, n).expect("valid input");
        let single = factored_svd(&up, &down, m, r, n).expect("valid input");
        assert!(svd.s[0] < 1e-5 * single.s[0], "σ₀ = {}", svd.s[0]);
        assert!(svd.u.iter().chain(&svd.vt).all(|x| x.is_finite()));
    }

    #[test]
    fn empty_shapes_give_empty_svd() {
        let svd = factored_svd(&[], &[], 5, 0, 4).expect("valid input");
        assert_eq!((svd.rank(), svd.m, svd.n), (0, 5, 4));
        let svd = weighted_sum_svd(&[], 3, 2).expect("valid input");
        assert_eq!(svd.rank(), 0);
    }

    #[test]
    fn wrong_lengths_and_non_finite_values_are_errors() {
        let up = vec![1.0f32; 6];
        let down = vec![1.0f32; 8];
        assert!(factored_svd(&up, &down, 3, 2, 4).is_ok());
        assert!(factored_svd(&up, &down, 3, 2, 5).is_err());
        assert!(factored_svd(&up[..5], &down, 3, 2, 4).is_err());
        let mut bad = up.clone();
        bad[4] = f32::NAN;
        assert!(factored_svd(&bad, &down, 3, 2, 4).is_err());
        assert!(factored_svd(&up, &down, usize::MAX, 2, 4).is_err());
        let terms: [WeightedTerm; 1] = [(f64::INFINITY, &up, 2, &down)];
        assert!(weighted_sum_svd(&terms, 3, 4).is_err());
        let terms: [WeightedTerm; 1] = [(1e300, &up, 2, &down)];
        assert!(weighted_sum_svd(&terms, 3, 4).is_err());
    }
}
