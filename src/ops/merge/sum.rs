//! `sum`: the exact weighted sum of the deltas, `Σ wᵢ·(αᵢ/rᵢ)·Bᵢ·Aᵢ`, re-factored to its
//! numerical rank or optimally truncated. Never dense: the SVD of the concatenated factors
//! (`linalg::weighted_sum_svd`) costs `O((out + in)·(Σrᵢ)²)`.

use super::plan::Term;
use super::Factors;
use crate::error::Result;
use crate::linalg::{weighted_sum_svd_keeping, LowRankSvd, SvSplit, WeightedTerm};

/// Singular values at or below `SUM_RANK_RTOL · Σᵢ |wᵢsᵢ|·‖Bᵢ‖_F·‖Aᵢ‖_F` are dropped as
/// numerical zeros.
///
/// Why this scale: the kernel rounds the weighted factors to f32 and orthonormalises them in
/// f32, so its singular values carry an absolute error of a few f32 ulps (ε ≈ 1.2e-7) of the
/// factor norms, not of σ₀: when terms cancel (`w` and `−w` of one adapter) σ₀ itself is
/// noise. `Σ |wᵢsᵢ|·‖Bᵢ‖_F·‖Aᵢ‖_F` bounds both ‖ΔW‖_F and that noise scale. 1e-5 of it sits
/// more than two orders of magnitude above the measured noise (3.6e-8 of the bound for an
/// exactly cancelling 320×768 rank-16 sum, see the tests) and far below anything a float16 or
/// bfloat16 file could store relative to the largest direction. Dropping a direction at the
/// tolerance changes ΔW by at most that much per direction.
pub const SUM_RANK_RTOL: f64 = 1e-5;

/// The SVD of the module's weighted sum of deltas, with singular vectors formed only for the
/// `keep(σ)` largest triplets; also all singular values.
pub(crate) fn weighted_svd(
    terms: &[Term],
    rows: usize,
    cols: usize,
    keep: impl FnOnce(&[f64]) -> Result<usize>,
) -> Result<(LowRankSvd, Vec<f64>)> {
    let weighted: Vec<WeightedTerm<'_>> = terms
        .iter()
        .map(|t| (t.coefficient(), t.up.as_slice(), t.rank, t.down.as_slice()))
        .collect();
    weighted_sum_svd_keeping(&weighted, rows, cols, keep)
}

/// The number of singular values above the noise floor of [`SUM_RANK_RTOL`].
pub(crate) fn numerical_rank(s: &[f64], terms: &[Term]) -> usize {
    let bound: f64 = terms
        .iter()
        .map(|t| t.coefficient().abs() * frobenius(&t.up) * frobenius(&t.down))
        .sum();
    let tolerance = SUM_RANK_RTOL * bound;
    s.iter().take_while(|&&x| x > tolerance).count()
}

fn frobenius(values: &[f32]) -> f64 {
    crate::linalg::sum_squares(values).sqrt()
}

/// `√(Σ kept σ² / Σ σ²)` over all singular values `s`, 1 for a zero matrix.
pub(crate) fn retained_fro(s: &[f64], kept: usize) -> f64 {
    let total: f64 = s.iter().map(|x| x * x).sum();
    let tail: f64 = s.iter().skip(kept).map(|x| x * x).sum();
    if total > 0.0 {
        ((total - tail) / total).clamp(0.0, 1.0).sqrt()
    } else {
        1.0
    }
}

/// The exact sum, at its numerical rank or at most `rank_cap` (Eckart–Young optimal), with the
/// singular values on `up` and alpha = rank (scale 1). A sum that is numerically zero becomes a
/// rank-1 layer of zeros, so the module stays present.
pub(crate) fn merge_sum(
    terms: &[Term],
    rows: usize,
    cols: usize,
    rank_cap: Option<usize>,
) -> Result<Factors> {
    let mut numerical = 0;
    let (svd, s) = weighted_svd(terms, rows, cols, |s| {
        numerical = numerical_rank(s, terms);
        Ok(rank_cap.map_or(numerical, |cap| cap.min(numerical)))
    })?;
    let kept = svd.rank();
    // a numerically zero sum (e.g. an adapter minus itself) loses nothing worth reporting
    let retained = if numerical == 0 {
        1.0
    } else {
        retained_fro(&s, kept)
    };
    let rank = kept.max(1);
    let (up, down) = if kept == 0 {
        (vec![0.0; rows], vec![0.0; cols])
    } else {
        svd.into_factors(rank, SvSplit::Up)
    };
    Ok(Factors {
        up,
        down,
        rank,
        alpha: rank as f64,
        retained_fro: Some(retained),
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{merge, MergeMethod};

    #[test]
    fn sum_is_exact_at_full_rank() {
        let (a, b) = two_adapters();
        let inputs = [input("a", &a), input("b", &b)];
        let opts = options(MergeMethod::Sum, &[0.6, -0.4]);
        let (merged, report) = merge(&inputs, &opts).expect("mergeable");
        for (path, layer) in &merged.layers {
            let expected = dense_weighted_sum(&inputs, &opts.weights, path);
            let got = dense_delta(layer);
            let err = rel_fro_diff(&got, &expected);
            assert!(err < 1e-5, "{path}: relative error {err:.2e}");
            assert_eq!(layer.alpha, layer.rank() as f64, "scale 1");
        }
        // q: rank 4 + 8 (both inputs), k: rank 4 (a only), conv: 2 + 3 capped by out = 4.
        let ranks: Vec<(String, usize, usize)> = report
            .iter()
            .map(|m| (m.path.clone(), m.rank, m.inputs))
            .collect();
        assert_eq!(
            ranks,
            vec![
                ("conv".to_string(), 4, 2),
                ("k".to_string(), 4, 1),
                ("q".to_string(), 12, 2),
                ("v".to_string(), 3, 1),
            ]
        );
        assert!(report.iter().all(|m| m.retained_fro == Some(1.0)));
    }

    #[test]
    fn truncated_sum_error_is_the_sum_of_dropped_squares() {
        let (a, b) = two_adapters();
        let inputs = [input("a", &a), input("b", &b)];
        let mut opts = options(MergeMethod::Sum, &[1.0, 0.5]);
        opts.rank = Some(3);
        let (merged, report) = merge(&inputs, &opts).expect("mergeable");
        let layer = &merged.layers["q"];
        assert_eq!(layer.rank(), 3);
        let (rows, cols) = (layer.out_features(), layer.down.numel() / 3);
        let exact = dense_weighted_sum(&inputs, &opts.weights, "q");
        let sigma = singular_values(&exact, rows, cols);
        let dropped: f64 = sigma[3..].iter().map(|s| s * s).sum();
        let err_sq: f64 = dense_delta(layer)
            .iter()
            .zip(&exact)
            .map(|(x, y)| (x - y) * (x - y))
            .sum();
        assert!(
            ((err_sq - dropped) / dropped).abs() < 1e-4,
            "‖ΔW − ΔW₃‖² = {err_sq}, Σ dropped σ² = {dropped}"
        );
        let total: f64 = sigma.iter().map(|s| s * s).sum();
        let retained = report
            .iter()
            .find(|m| m.path == "q")
            .and_then(|m| m.retained_fro);
        let expected = ((total - dropped) / total).sqrt();
        assert!((retained.unwrap_or(0.0) - expected).abs() < 1e-6);
    }

    #[test]
    fn conv_rank_applies_to_spatial_convs_only() {
        let (a, b) = two_adapters();
        let inputs = [input("a", &a), input("b", &b)];
        let mut opts = options(MergeMethod::Sum, &[1.0, 1.0]);
        opts.rank = Some(6);
        opts.conv_rank = Some(1);
        let (merged, _) = merge(&inputs, &opts).expect("mergeable");
        assert_eq!(merged.layers["conv"].rank(), 1);
        assert_eq!(merged.layers["conv"].down.shape(), &[1, 3, 3, 3]);
        assert_eq!(merged.layers["q"].rank(), 6);
    }

    #[test]
    fn cancelling_inputs_give_a_zero_rank_one_layer() {
        let (a, _) = two_adapters();
        let inputs = [input("a", &a), input("again", &a)];
        let (merged, report) =
            merge(&inputs, &options(MergeMethod::Sum, &[0.7, -0.7])).expect("mergeable");
        for (path, layer) in &merged.layers {
            assert_eq!(layer.rank(), 1, "{path}");
            assert!(dense_delta(layer).iter().all(|&x| x == 0.0), "{path}");
        }
        assert!(report.iter().all(|m| m.rank == 1));
        assert!(report.iter().all(|m| m.retained_fro == Some(1.0)));
    }

    #[test]
    fn duplicate_inputs_keep_the_true_rank() {
        // 0.5·X + 0.5·X = X: rank 4, not 8.
        let (a, _) = two_adapters();
        let inputs = [input("a", &a), input("again", &a)];
        let (merged, _) =
            merge(&inputs, &options(MergeMethod::Sum, &[0.5, 0.5])).expect("mergeable");
        assert_eq!(merged.layers["q"].rank(), 4);
        let err = rel_fro_diff(
            &dense_delta(&merged.layers["q"]),
            &dense_delta(&a.layers["q"]),
        );
        assert!(err < 1e-5, "{err:.2e}");
    }

    #[test]
    fn rank_noise_floor_is_well_below_the_tolerance() {
        // Measure the kernel's noise on an exactly cancelling sum at realistic sizes: every σ
        // must sit far below SUM_RANK_RTOL times the bound, so real directions are never
        // confused with noise and noise is never kept.
        let a = adapter(vec![("m", linear_layer(320, 768, 16, 16.0, 77))]);
        let inputs = [input("a", &a), input("b", &a)];
        let (merged, report) =
            merge(&inputs, &options(MergeMethod::Sum, &[1.0, -1.0])).expect("mergeable");
        assert_eq!(report[0].rank, 1);
        assert!(dense_delta(&merged.layers["m"]).iter().all(|&x| x == 0.0));
        let plan_terms = terms_of(&inputs, &[1.0, -1.0], "m");
        let (_, s) = super::weighted_svd(&plan_terms, 320, 768, |_| Ok(0)).expect("finite");
        let bound: f64 = plan_terms
            .iter()
            .map(|t| t.coefficient().abs() * super::frobenius(&t.up) * super::frobenius(&t.down))
            .sum();
        let noise = s[0] / bound;
        assert!(noise < super::SUM_RANK_RTOL / 20.0, "noise {noise:.2e}");
    }
}
