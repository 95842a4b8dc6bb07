//! All eigenvalues and a few leading eigenvectors of a small symmetric matrix: the r × r core
//! of the Gram path, where `r` is a LoRA rank (or a sum of ranks in a merge) and only the kept
//! singular directions need vectors.
//!
//! Why not a full eigendecomposition: accumulating every rotation of the QR algorithm into an
//! r × r eigenvector matrix costs several times the Householder tridiagonalisation; a merge of
//! a rank-32 and a rank-64 adapter to rank 16 needs 16 of 96 vectors. Here: tridiagonalise
//! (faer), all eigenvalues of the tridiagonal by the root-free implicit QL method with
//! Wilkinson shifts (O(r²), no vectors), the wanted eigenvectors of the tridiagonal by inverse iteration
//! (O(r) per solve, re-orthogonalised within clusters of close eigenvalues, as LAPACK's
//! `dstein` does), and one back-transformation of those vectors (O(r²k)).
//!
//! Every vector is checked (residual and orthogonality against the tridiagonal); a failure
//! returns `None` and the caller takes faer's full eigendecomposition instead.

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::evd::tridiag::{tridiag_in_place, tridiag_in_place_scratch};
use faer::linalg::householder::{
    apply_block_householder_sequence_on_the_left_in_place_scratch,
    apply_block_householder_sequence_on_the_left_in_place_with_conj,
};
use faer::{Conj, Mat, MatRef, Par};

/// QL sweeps allowed per eigenvalue before giving up (the method converges cubically; LAPACK
/// allows 30 per eigenvalue).
const MAX_SWEEPS: usize = 60;

/// Inverse-iteration solves per eigenvector (convergence is by the ratio of the shift error,
/// at roundoff level here, to the eigenvalue gap: one or two suffice; the residual check
/// catches the rest).
const SOLVES: usize = 2;

/// The tridiagonal form of a symmetric matrix and its eigenvalues.
pub(crate) struct SymEig {
    n: usize,
    /// faer's tridiagonalisation output: the Householder vectors below the subdiagonal.
    trid: Mat<f64>,
    householder: Mat<f64>,
    diag: Vec<f64>,
    off: Vec<f64>,
    /// Eigenvalues, descending.
    values: Vec<f64>,
}

impl SymEig {
    /// Tridiagonalise `a` (n × n, its lower triangle is read) and compute all its eigenvalues;
    /// `None` if the QL iteration does not converge.
    pub(crate) fn new(a: MatRef<'_, f64>) -> Option<SymEig> {
        let n = a.nrows();
        let mut trid = Mat::<f64>::zeros(n, n);
        trid.copy_from_triangular_lower(a);
        let bs = faer::linalg::qr::no_pivoting::factor::recommended_block_size::<f64>(n, n);
        let mut householder = Mat::<f64>::zeros(bs.max(1), n.saturating_sub(1));
        if n > 1 {
            let mut buf = MemBuffer::new(tridiag_in_place_scratch::<f64>(
                n,
                Par::Seq,
                Default::default(),
            ));
            tridiag_in_place(
                trid.as_mut(),
                householder.as_mut(),
                Par::Seq,
                MemStack::new(&mut buf),
                Default::default(),
            );
        }
        let diag: Vec<f64> = (0..n).map(|i| trid[(i, i)]).collect();
        let off: Vec<f64> = (0..n)
            .map(|i| if i + 1 < n { trid[(i + 1, i)] } else { 0.0 })
            .collect();
        // the root-free QL works on squares: scale to norm ~1 by a power of two (exact) so
        // they neither overflow nor underflow
        let norm = diag.iter().chain(&off).fold(0f64, |m, x| m.max(x.abs()));
        let unit = if norm > 0.0 && norm.is_finite() {
            2f64.powi(-norm.log2().round() as i32)
        } else {
            1.0
        };
        let mut values: Vec<f64> = diag.iter().map(|x| x * unit).collect();
        let mut squares: Vec<f64> = off.iter().map(|x| (x * unit) * (x * unit)).collect();
        rational_ql_eigenvalues(&mut values, &mut squares)?;
        values.iter_mut().for_each(|v| *v /= unit);
        values.sort_by(|x, y| y.total_cmp(x));
        Some(SymEig {
            n,
            trid,
            householder,
            diag,
            off,
            values,
        })
    }

    /// All eigenvalues, descending.
    pub(crate) fn values(&self) -> &[f64] {
        &self.values
    }

    /// Orthonormal eigenvectors (n × k, columns) of the `k` largest eigenvalues, or `None` if
    /// inverse iteration did not give accurate ones.
    pub(crate) fn leading_vectors(&self, k: usize) -> Option<Mat<f64>> {
        let n = self.n;
        let k = k.min(n);
        let scale = self
            .diag
            .iter()
            .chain(&self.off)
            .fold(0f64, |m, x| m.max(x.abs()));
        let mut z = Mat::<f64>::zeros(n, k);
        if scale == 0.0 {
            // the zero matrix: any orthonormal basis
            for j in 0..k {
                z[(j, j)] = 1.0;
            }
        } else {
            let cluster_gap = 1e-3 * scale;
            let mut vectors: Vec<Vec<f64>> = Vec::with_capacity(k);
            for j in 0..k {
                let lambda = self.values[j];
                // earlier vectors whose eigenvalues are close: keep this one orthogonal to them
                let cluster: Vec<usize> = (0..j)
                    .filter(|&i| (self.values[i] - lambda).abs() < cluster_gap)
                    .collect();
                let v = self.inverse_iteration(lambda, j, scale, &vectors, &cluster)?;
                vectors.push(v);
            }
            if !self.accurate(&vectors, scale) {
                return None;
            }
            for (j, v) in vectors.iter().enumerate() {
                for (i, &x) in v.iter().enumerate() {
                    z[(i, j)] = x;
                }
            }
        }
        if n > 1 {
            let bs = self.householder.nrows();
            let mut buf = MemBuffer::new(
                apply_block_householder_sequence_on_the_left_in_place_scratch::<f64>(n - 1, bs, k),
            );
            apply_block_householder_sequence_on_the_left_in_place_with_conj(
                self.trid.as_ref().submatrix(1, 0, n - 1, n - 1),
                self.householder.as_ref(),
                Conj::No,
                z.as_mut().subrows_mut(1, n - 1),
                Par::Seq,
                MemStack::new(&mut buf),
            );
        }
        Some(z)
    }

    /// An eigenvector of the tridiagonal for `lambda` (the `index`-th largest eigenvalue), by
    /// inverse iteration from a fixed start, orthogonalised against `done[i]` for `i` in
    /// `cluster`.
    fn inverse_iteration(
        &self,
        lambda: f64,
        index: usize,
        scale: f64,
        done: &[Vec<f64>],
        cluster: &[usize],
    ) -> Option<Vec<f64>> {
        let n = self.n;
        // a shift a few ulps off the eigenvalue keeps the factorisation non-singular
        let shift = lambda + f64::EPSILON * scale * (index as f64 + 1.0);
        let lu = TridiagLu::new(&self.diag, &self.off, shift, scale);
        // deterministic start, different per eigenvector so clusters separate
        let mut x: Vec<f64> = (0..n)
            .map(|i| 1.0 + ((i * 7 + index * 13) % 17) as f64 / 17.0)
            .collect();
        for _ in 0..SOLVES {
            lu.solve(&mut x);
            for &c in cluster {
                let d: f64 = x.iter().zip(&done[c]).map(|(a, b)| a * b).sum();
                for (a, b) in x.iter_mut().zip(&done[c]) {
                    *a -= d * b;
                }
            }
            // scaled by the largest entry first: the solve can grow x by 1/(ε·scale), which
            // overflows a sum of squares for tiny matrices
            let big = x.iter().fold(0f64, |m, v| m.max(v.abs()));
            if !(big.is_finite() && big > 0.0) {
                return None;
            }
            x.iter_mut().for_each(|v| *v /= big);
            let norm = x.iter().map(|v| v * v).sum::<f64>().sqrt();
            x.iter_mut().for_each(|v| *v /= norm);
        }
        Some(x)
    }

    /// Residuals `‖T·v − λ·v‖` and pairwise orthogonality of the tridiagonal's eigenvectors,
    /// both within a small multiple of roundoff.
    fn accurate(&self, vectors: &[Vec<f64>], scale: f64) -> bool {
        let n = self.n;
        let tol = 1e3 * f64::EPSILON * (n as f64).max(1.0) * scale;
        for (j, v) in vectors.iter().enumerate() {
            let lambda = self.values[j];
            let mut worst = 0f64;
            for i in 0..n {
                let mut t = (self.diag[i] - lambda) * v[i];
                if i > 0 {
                    t += self.off[i - 1] * v[i - 1];
                }
                if i + 1 < n {
                    t += self.off[i] * v[i + 1];
                }
                worst = worst.max(t.abs());
            }
            if worst.is_nan() || worst > tol {
                return false;
            }
        }
        let otol = 1e3 * f64::EPSILON * (n as f64).max(1.0);
        for i in 0..vectors.len() {
            for j in 0..i {
                let d: f64 = vectors[i].iter().zip(&vectors[j]).map(|(a, b)| a * b).sum();
                if d.is_nan() || d.abs() > otol {
                    return false;
                }
            }
        }
        true
    }
}

/// All eigenvalues of the symmetric tridiagonal matrix with diagonal `d` and squared
/// sub-diagonal `e2` (`e2[i]` couples `i` and `i + 1`), by the root-free ("rational") QL method
/// of Pal, Walker and Kahan as in EISPACK's `tqlrat`: the implicit QL method with Wilkinson
/// shifts, without the square root per rotation that bounds the latency of the plain sweep. The eigenvalues
/// replace `d` (unordered); `e2` is destroyed.
fn rational_ql_eigenvalues(d: &mut [f64], e2: &mut [f64]) -> Option<()> {
    let n = d.len();
    if n == 0 {
        return Some(());
    }
    e2[n - 1] = 0.0;
    let (mut f, mut t, mut b, mut c) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for l in 0..n {
        let h = d[l].abs() + e2[l].sqrt();
        if t < h {
            t = h;
            b = f64::EPSILON * t;
            c = b * b;
        }
        // the first negligible squared sub-diagonal element at or after l splits the matrix
        let mut m = l;
        while m + 1 < n && e2[m] > c {
            m += 1;
        }
        let mut sweeps = 0;
        // (m stays fixed across sweeps, as in EISPACK: the convergence test is on e2[l])
        if m != l {
            loop {
                sweeps += 1;
                if sweeps > MAX_SWEEPS {
                    return None;
                }
                // shift from the leading 2 × 2 block, subtracted from the whole block
                let s = e2[l].sqrt();
                let g = d[l];
                let p = (d[l + 1] - g) / (2.0 * s);
                let r = pythag(p, 1.0);
                d[l] = s / (p + r.copysign(p));
                let h = g - d[l];
                for x in &mut d[l + 1..] {
                    *x -= h;
                }
                f += h;
                // rational QL transformation
                let mut g = if d[m] == 0.0 { b } else { d[m] };
                let mut h = g;
                let mut s = 0.0;
                for i in (l..m).rev() {
                    let p = g * h;
                    let r = p + e2[i];
                    e2[i + 1] = s * r;
                    s = e2[i] / r;
                    d[i + 1] = h + s * (h + d[i]);
                    g = d[i] - e2[i] / g;
                    if g == 0.0 {
                        g = b;
                    }
                    h = g * p / r;
                }
                e2[l] = s * g;
                d[l] = h;
                // converged, guarding the test against underflow
                if h == 0.0 || e2[l].abs() <= (c / h).abs() {
                    break;
                }
                e2[l] *= h;
                if e2[l] == 0.0 {
                    break;
                }
            }
        }
        d[l] += f;
    }
    Some(())
}

/// `√(a² + b²)` without overflow or underflow: directly in the wide middle range (libm's
/// correctly rounded `hypot` costs more than the rest of the QL sweep), scaled outside it.
#[inline]
fn pythag(a: f64, b: f64) -> f64 {
    let (a, b) = (a.abs(), b.abs());
    let (big, small) = if a >= b { (a, b) } else { (b, a) };
    if big == 0.0 {
        0.0
    } else if big < 1e150 && big > 1e-150 && (small == 0.0 || small > 1e-150) {
        (a * a + b * b).sqrt()
    } else {
        let r = small / big;
        big * (1.0 + r * r).sqrt()
    }
}

/// LU factorisation with partial pivoting of a shifted symmetric tridiagonal `T − σI`, as
/// inverse iteration needs it: `L` unit lower bidiagonal (multipliers), `U` upper with two
/// super-diagonals. Zero pivots are replaced by a tiny multiple of the matrix scale, so the
/// solve of an (almost) singular system grows toward the eigenvector instead of failing.
struct TridiagLu {
    /// reciprocals of the pivots
    u0: Vec<f64>,
    u1: Vec<f64>,
    u2: Vec<f64>,
    mult: Vec<f64>,
    swapped: Vec<bool>,
}

impl TridiagLu {
    fn new(d: &[f64], e: &[f64], shift: f64, scale: f64) -> TridiagLu {
        let n = d.len();
        let tiny = f64::EPSILON * scale;
        let mut u0 = vec![0f64; n];
        let mut u1 = vec![0f64; n];
        let mut u2 = vec![0f64; n];
        let mut mult = vec![0f64; n];
        let mut swapped = vec![false; n];
        // the working row i holds (diag, super, super2) of the not yet eliminated part
        let mut cur_d = d.first().map_or(0.0, |&x| x - shift);
        let mut cur_s = if n > 1 { e[0] } else { 0.0 };
        for i in 0..n {
            if i + 1 == n {
                u0[i] = 1.0 / if cur_d == 0.0 { tiny } else { cur_d };
                break;
            }
            let below = e[i]; // T[i+1][i]
            let next_d = d[i + 1] - shift;
            let next_s = if i + 2 < n { e[i + 1] } else { 0.0 };
            if cur_d.abs() >= below.abs() {
                let piv = if cur_d == 0.0 { tiny } else { cur_d };
                let l = below / piv;
                u0[i] = 1.0 / piv;
                u1[i] = cur_s;
                u2[i] = 0.0;
                mult[i] = l;
                cur_d = next_d - l * cur_s;
                cur_s = next_s;
            } else {
                // swap rows i and i + 1
                let l = cur_d / below;
                u0[i] = 1.0 / below;
                u1[i] = next_d;
                u2[i] = next_s;
                mult[i] = l;
                swapped[i] = true;
                cur_d = cur_s - l * next_d;
                cur_s = -l * next_s;
            }
        }
        TridiagLu {
            u0,
            u1,
            u2,
            mult,
            swapped,
        }
    }

    /// Solve `(T − σI)·x = b` in place (`u0` holds reciprocal pivots).
    fn solve(&self, x: &mut [f64]) {
        let n = x.len();
        for i in 0..n.saturating_sub(1) {
            if self.swapped[i] {
                x.swap(i, i + 1);
            }
            x[i + 1] -= self.mult[i] * x[i];
        }
        for i in (0..n).rev() {
            let mut v = x[i];
            if i + 1 < n {
                v -= self.u1[i] * x[i + 1];
            }
            if i + 2 < n {
                v -= self.u2[i] * x[i + 2];
            }
            x[i] = v * self.u0[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A symmetric matrix `Q·diag(λ)·Qᵀ` with a random orthogonal `Q` (QR of a seeded matrix).
    fn with_eigenvalues(lambda: &[f64], seed: u64) -> Mat<f64> {
        let n = lambda.len();
        let mut x = seed | 1;
        let g = Mat::<f64>::from_fn(n, n, |_, _| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        });
        let q = g.qr().compute_Q();
        let d = Mat::<f64>::from_fn(n, n, |i, j| if i == j { lambda[i] } else { 0.0 });
        &q * &d * q.transpose()
    }

    fn check(a: &Mat<f64>, k: usize) {
        let n = a.nrows();
        let eig = SymEig::new(a.as_ref()).expect("converges");
        let mut want: Vec<f64> = a
            .self_adjoint_eigenvalues(faer::Side::Lower)
            .expect("reference converges");
        want.sort_by(|x, y| y.total_cmp(x));
        let norm = want.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-300);
        for (got, want) in eig.values().iter().zip(&want) {
            assert!((got - want).abs() <= 1e-12 * norm, "n={n}: {got} vs {want}");
        }
        let z = eig.leading_vectors(k).expect("accurate vectors");
        let az = a * &z;
        for j in 0..k.min(n) {
            for i in 0..n {
                let r = az[(i, j)] - eig.values()[j] * z[(i, j)];
                assert!(r.abs() <= 1e-10 * norm, "n={n} residual {r:e}");
            }
        }
        let ztz = z.transpose() * &z;
        for i in 0..k.min(n) {
            for j in 0..k.min(n) {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((ztz[(i, j)] - want).abs() < 1e-10, "n={n} orthonormality");
            }
        }
    }

    #[test]
    fn eigenpairs_match_faer_on_spread_spectra() {
        for (seed, n) in [1usize, 2, 3, 10, 32, 96].into_iter().enumerate() {
            let lambda: Vec<f64> = (0..n).map(|i| 10.0 / (1.0 + i as f64).powi(2)).collect();
            check(&with_eigenvalues(&lambda, seed as u64 + 1), n.min(16));
        }
    }

    #[test]
    fn clusters_repeated_and_zero_eigenvalues_give_orthonormal_vectors() {
        let mut lambda = vec![5.0, 5.0, 5.0, 5.0 + 1e-12, 2.0, 2.0 - 1e-9, 1.0];
        lambda.extend(std::iter::repeat_n(0.0, 20));
        check(&with_eigenvalues(&lambda, 7), 7);
        check(&with_eigenvalues(&lambda, 8), lambda.len());
        // already diagonal (tridiagonalisation is the identity), with ties
        let d = Mat::<f64>::from_fn(6, 6, |i, j| {
            if i == j {
                [3.0, 1.0, 3.0, 0.0, 2.0, 3.0][i]
            } else {
                0.0
            }
        });
        check(&d, 6);
        // the zero matrix
        check(&Mat::<f64>::zeros(5, 5), 3);
    }

    #[test]
    fn tiny_and_huge_scales_are_handled() {
        let lambda: Vec<f64> = (0..12).map(|i| 1.0 / (1.0 + i as f64)).collect();
        for s in [1e-150, 1e-20, 1e20, 1e150] {
            let scaled: Vec<f64> = lambda.iter().map(|x| x * s).collect();
            check(&with_eigenvalues(&scaled, 3), 5);
        }
    }
}
