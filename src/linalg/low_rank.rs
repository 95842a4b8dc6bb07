//! [`LowRankSvd`]: a thin SVD `U·diag(S)·Vᵀ` held as row-major f32 factors and f64 singular
//! values, plus the operations every caller needs on it: truncation, energies (for rank rules
//! and "retained %" reports) and conversion back into LoRA `(up, down)` factors.

/// How the singular values are distributed between the two LoRA factors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SvSplit {
    /// All of `S` on `up`: `up = U·diag(S)`, `down = Vᵀ`. kohya's convention (resize_lora,
    /// svd_merge_lora, extract_lora_from_models); needed to reproduce their files.
    Up,
    /// `√S` on each side: `up = U·diag(√S)`, `down = diag(√S)·Vᵀ`. Balanced factor norms
    /// (mergekit / PEFT-style re-factorisation); better for later low-precision storage.
    Sqrt,
}

crate::named_enum!(SvSplit, "singular value split", [
    Up => "up", [], "all singular values on the up factor (sd-scripts)",
    Sqrt => "sqrt", [], "√S on each factor",
]);

/// A thin SVD of an `m × n` matrix: `M = U·diag(s)·Vᵀ`, with `k = s.len()` triplets.
///
/// `s` is non-negative and non-increasing. The columns of `U` and the rows of `Vᵀ` are
/// orthonormal (to f32 precision); singular vectors have no canonical sign, so compare products
/// or singular values, never the vectors themselves.
#[derive(Clone, Debug, PartialEq)]
pub struct LowRankSvd {
    /// Left singular vectors, `m × k`, row-major.
    pub u: Vec<f32>,
    /// Singular values, length `k`, descending.
    pub s: Vec<f64>,
    /// Right singular vectors transposed, `k × n`, row-major.
    pub vt: Vec<f32>,
    /// Rows of the decomposed matrix (out_features).
    pub m: usize,
    /// Columns of the decomposed matrix (in_features, or `in·kh·kw` for a conv).
    pub n: usize,
}

impl LowRankSvd {
    /// The SVD of an `m × n` matrix with no triplets (`k = 0`), e.g. for `r = 0` or an empty shape.
    pub(crate) fn empty(m: usize, n: usize) -> Self {
        LowRankSvd {
            u: Vec::new(),
            s: Vec::new(),
            vt: Vec::new(),
            m,
            n,
        }
    }

    /// Number of singular triplets held (`k`).
    pub fn rank(&self) -> usize {
        self.s.len()
    }

    /// Keeps the `rank` largest triplets (Eckart–Young optimal). A `rank` at or above the
    /// current one changes nothing.
    pub fn truncate(&mut self, rank: usize) {
        let old = self.rank();
        if rank >= old {
            return;
        }
        // U is row-major m × old: repack each row to its first `rank` entries.
        let mut u = Vec::with_capacity(self.m * rank);
        for row in self.u.chunks_exact(old) {
            u.extend_from_slice(&row[..rank]);
        }
        self.u = u;
        self.s.truncate(rank);
        self.vt.truncate(rank * self.n);
    }

    /// Gives every singular pair the sign that makes the largest-magnitude entry of its left
    /// vector positive (the first such entry on ties), as scikit-learn's `svd_flip` does.
    ///
    /// Why: `(uⱼ, vⱼ)` and `(−uⱼ, −vⱼ)` are equally valid, and which one an SVD returns depends
    /// on its algorithm and even its instruction set; a fixed rule makes the factors the same
    /// whichever kernel computed them (it matters where values are used on their own, e.g. the
    /// quantile clamp of kohya's svd merge).
    pub fn canonicalize_signs(&mut self) {
        let k = self.rank();
        if k == 0 {
            return;
        }
        // one pass over the row-major U: the entry of largest magnitude of every column
        let mut best = vec![0f32; k];
        for row in self.u.chunks_exact(k) {
            for (b, &x) in best.iter_mut().zip(row) {
                if x.abs() > b.abs() {
                    *b = x;
                }
            }
        }
        let flip: Vec<bool> = best.iter().map(|&b| b < 0.0).collect();
        if !flip.contains(&true) {
            return;
        }
        for row in self.u.chunks_exact_mut(k) {
            for (x, &f) in row.iter_mut().zip(&flip) {
                if f {
                    *x = -*x;
                }
            }
        }
        if self.n > 0 {
            for (row, &f) in self.vt.chunks_exact_mut(self.n).zip(&flip) {
                if f {
                    row.iter_mut().for_each(|x| *x = -*x);
                }
            }
        }
    }

    /// `‖M‖_F² = Σ σᵢ²`.
    pub fn frob_norm_sq(&self) -> f64 {
        self.s.iter().map(|x| x * x).sum()
    }

    /// `Σ_{i ≥ rank} σᵢ²`: the squared Frobenius error of truncating to `rank` (Eckart–Young).
    pub fn tail_energy(&self, rank: usize) -> f64 {
        self.s.iter().skip(rank).map(|x| x * x).sum()
    }

    /// LoRA factors of the rank-`rank` truncation: `(up: m × rank, down: rank × n)`, both
    /// row-major, with `up·down = U_k·diag(S_k)·V_kᵀ`.
    ///
    /// If `rank` exceeds [`rank`](Self::rank), the extra columns of `up` and rows of `down`
    /// are zero, so the product is unchanged and the shapes are what the caller asked for
    /// (this is what sd-scripts produces, up to noise, for a fixed rank above the true one).
    pub fn into_factors(self, rank: usize, split: SvSplit) -> (Vec<f32>, Vec<f32>) {
        let k = self.rank();
        let kept = rank.min(k);
        let weight = |j: usize| -> (f64, f64) {
            let sigma = self.s[j];
            match split {
                SvSplit::Up => (sigma, 1.0),
                SvSplit::Sqrt => (sigma.sqrt(), sigma.sqrt()),
            }
        };
        let weights: Vec<(f64, f64)> = (0..kept).map(weight).collect();

        let mut up = vec![0.0f32; self.m * rank];
        for (src, dst) in self
            .u
            .chunks_exact(k.max(1))
            .zip(up.chunks_exact_mut(rank.max(1)))
        {
            for j in 0..kept {
                dst[j] = (f64::from(src[j]) * weights[j].0) as f32;
            }
        }
        let mut down = vec![0.0f32; rank * self.n];
        if self.n > 0 {
            for (j, (src, dst)) in self
                .vt
                .chunks_exact(self.n)
                .zip(down.chunks_exact_mut(self.n))
                .take(kept)
                .enumerate()
            {
                let w = weights[j].1;
                for (d, v) in dst.iter_mut().zip(src) {
                    *d = (f64::from(*v) * w) as f32;
                }
            }
        }
        (up, down)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// diag(3, 2, 1) embedded in a 3×4 matrix: U = I₃, Vᵀ = [I₃ | 0].
    fn diagonal() -> LowRankSvd {
        let mut vt = vec![0.0; 12];
        for i in 0..3 {
            vt[i * 4 + i] = 1.0;
        }
        LowRankSvd {
            u: vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            s: vec![3.0, 2.0, 1.0],
            vt,
            m: 3,
            n: 4,
        }
    }

    #[test]
    fn truncate_keeps_leading_triplets() {
        let mut svd = diagonal();
        svd.truncate(2);
        assert_eq!(svd.s, vec![3.0, 2.0]);
        assert_eq!(svd.u, vec![1.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
        assert_eq!(svd.vt, vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
        svd.truncate(5);
        assert_eq!(svd.rank(), 2);
    }

    #[test]
    fn energies_are_sums_of_squared_singular_values() {
        let svd = diagonal();
        assert_eq!(svd.frob_norm_sq(), 14.0);
        assert_eq!(svd.tail_energy(1), 5.0);
        assert_eq!(svd.tail_energy(3), 0.0);
        assert_eq!(svd.tail_energy(9), 0.0);
    }

    #[test]
    fn up_split_puts_all_singular_values_on_up() {
        let (up, down) = diagonal().into_factors(2, SvSplit::Up);
        assert_eq!(up, vec![3.0, 0.0, 0.0, 2.0, 0.0, 0.0]);
        assert_eq!(down, vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn sqrt_split_balances_factors() {
        let (up, down) = diagonal().into_factors(1, SvSplit::Sqrt);
        let r3 = 3.0f64.sqrt() as f32;
        assert_eq!(up, vec![r3, 0.0, 0.0]);
        assert_eq!(down, vec![r3, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn factors_beyond_rank_are_zero_padded() {
        let (up, down) = diagonal().into_factors(4, SvSplit::Up);
        assert_eq!(up.len(), 12);
        assert_eq!(down.len(), 16);
        assert_eq!(&up[0..4], &[3.0, 0.0, 0.0, 0.0]);
        assert!(down[12..].iter().all(|&x| x == 0.0));
    }

    #[test]
    fn canonical_signs_make_the_largest_left_entry_positive_and_keep_the_product() {
        // u columns (0.6, -0.8) and (0.8, 0.6); the first flips, the second stays
        let mut svd = LowRankSvd {
            u: vec![0.6, 0.8, -0.8, 0.6],
            s: vec![2.0, 1.0],
            vt: vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            m: 2,
            n: 3,
        };
        svd.canonicalize_signs();
        assert_eq!(svd.u, vec![-0.6, 0.8, 0.8, 0.6]);
        assert_eq!(svd.vt, vec![-1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
        let again = svd.clone();
        svd.canonicalize_signs();
        assert_eq!(svd, again, "idempotent");
    }

    #[test]
    fn empty_svd_gives_zero_factors() {
        let (up, down) = LowRankSvd::empty(2, 3).into_factors(1, SvSplit::Up);
        assert_eq!(up, vec![0.0; 2]);
        assert_eq!(down, vec![0.0; 3]);
    }
}
