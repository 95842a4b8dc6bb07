//! Bringing `scale·up·down` (any inner rank `R`) to a canonical layer: kept as it is when `R`
//! fits, else compressed exactly (to `min(out, in)`) or truncated optimally (to a requested
//! rank) through the factored SVD, which never forms the `out × in` product — unless
//! `R ≥ min(out, in)`, where the factors are already no smaller than `ΔW` and its dense SVD is
//! the cheaper exact route (LoHa's rank `r²` on most modules).

use super::mat::Mat;
use super::Truncation;
use crate::error::{Error, Result};
use crate::linalg::{dense_product_svd, factored_svd_keeping, SvSplit};

pub(super) struct Reduced {
    pub up: Mat,
    pub down: Mat,
    /// `scale · rank`, so the layer's `alpha / rank` is the module's scale.
    pub alpha: f64,
    /// The exact rank of the product (an upper bound, `min(R, out, in)`, when no SVD ran).
    pub exact_rank: usize,
    pub truncation: Option<Truncation>,
}

/// Singular values above this are signal: `σ₀ · max(dims) · ε_f32`, the usual numerical-rank
/// threshold for a product of f32 factors.
pub(super) fn numerical_rank(s: &[f64], dims: usize) -> usize {
    let Some(&top) = s.first() else { return 0 };
    let tol = top * dims as f64 * f64::from(f32::EPSILON);
    s.iter().filter(|&&x| x > tol && x > 0.0).count()
}

pub(super) fn reduce(
    module: &str,
    up: Mat,
    down: Mat,
    scale: f64,
    max_rank: Option<usize>,
) -> Result<Reduced> {
    let (m, r, n) = (up.rows, up.cols, down.cols);
    let full = m.min(n);
    let cap = max_rank.map_or(full, |k| k.min(full)).max(1);
    if r <= cap {
        return Ok(Reduced {
            alpha: scale * r as f64,
            exact_rank: r.min(full),
            up,
            down,
            truncation: None,
        });
    }
    let mut exact = 0;
    let dims = m.max(n).max(r);
    let (svd, s) = if r >= full {
        // the factors are no smaller than ΔW: its dense SVD is the cheaper exact route
        let mut svd = dense_product_svd(&up.data, &down.data, m, r, n)
            .map_err(|e| Error::module(module, e.to_string()))?;
        exact = numerical_rank(&svd.s, dims);
        let s = svd.s.clone();
        svd.truncate(cap.min(exact).max(1));
        (svd, s)
    } else {
        factored_svd_keeping(&up.data, &down.data, m, r, n, |s| {
            exact = numerical_rank(s, dims);
            Ok(cap.min(exact).max(1))
        })
        .map_err(|e| Error::module(module, e.to_string()))?
    };
    let k = svd.rank();
    let total: f64 = s.iter().map(|x| x * x).sum();
    let dropped: f64 = s.iter().skip(k).map(|x| x * x).sum();
    let truncation = (exact > k).then(|| Truncation {
        from: exact,
        to: k,
        dropped_energy: if total > 0.0 { dropped / total } else { 0.0 },
    });
    let (u, d) = svd.into_factors(k, SvSplit::Sqrt);
    Ok(Reduced {
        up: Mat::new(m, k, u),
        down: Mat::new(k, n, d),
        alpha: scale * k as f64,
        exact_rank: exact,
        truncation,
    })
}
