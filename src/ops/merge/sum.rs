//! `sum`: the exact weighted sum of the deltas, `Σ wᵢ·(αᵢ/rᵢ)·Bᵢ·Aᵢ`, re-factored to its
//! numerical rank or optimally truncated. Never dense: the SVD of the concatenated factors
//! (`linalg::weighted_sum_svd`) costs `O((out + in)·(Σrᵢ)²)`.

use super::plan::{decode_factor, ModulePlan};
use super::{Factors, MergeInput};
use crate::error::Result;
use crate::linalg::{weighted_sum_svd_filled, FillFactor, FilledTerm, LowRankSvd, SvSplit};
use std::cell::Cell;

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

/// The SVD of the module's weighted sum of deltas `Σ wᵢsᵢ·Bᵢ·Aᵢ`, the factors decoded straight
/// into the kernels' buffers, with singular vectors formed only for the `keep(σ, bound)`
/// largest triplets, where `bound = Σ |wᵢsᵢ|·‖Bᵢ‖_F·‖Aᵢ‖_F` is what the numerical rank is
/// measured against (see [`SUM_RANK_RTOL`]). Also returns all singular values and the bound.
pub(crate) fn weighted_svd(
    plan: &ModulePlan<'_>,
    inputs: &[MergeInput<'_>],
    weights: &[f64],
    keep: impl FnOnce(&[f64], f64) -> Result<usize>,
) -> Result<(LowRankSvd, Vec<f64>, f64)> {
    let (rows, cols) = (plan.geometry.out, plan.geometry.cols());
    // ‖Bᵢ‖_F², ‖Aᵢ‖_F² as the factors are decoded
    let norms: Vec<[Cell<f64>; 2]> = plan
        .sources
        .iter()
        .map(|_| [Cell::new(0.0), Cell::new(0.0)])
        .collect();
    let fills: Vec<(Box<FillFactor<'_>>, Box<FillFactor<'_>>)> = plan
        .sources
        .iter()
        .zip(&norms)
        .map(|(&(input, layer), norm)| {
            let label = inputs[input].label.as_str();
            let rank = layer.rank();
            let up: Box<FillFactor<'_>> = Box::new(move |buf, stride, w| {
                let t = &layer.up;
                norm[0].set(decode_factor(
                    plan,
                    label,
                    "lora up (B)",
                    t,
                    rank,
                    buf,
                    stride,
                    w,
                )?);
                Ok(())
            });
            let down: Box<FillFactor<'_>> = Box::new(move |buf, stride, w| {
                let t = &layer.down;
                norm[1].set(decode_factor(
                    plan,
                    label,
                    "lora down (A)",
                    t,
                    cols,
                    buf,
                    stride,
                    w,
                )?);
                Ok(())
            });
            (up, down)
        })
        .collect();
    let terms: Vec<FilledTerm<'_>> = plan
        .sources
        .iter()
        .zip(&fills)
        .map(|(&(input, layer), (up, down))| FilledTerm {
            weight: weights[input] * layer.scale(),
            rank: layer.rank(),
            up: up.as_ref(),
            down: down.as_ref(),
        })
        .collect();
    // the norms are set once the callbacks have run, before `keep` is called
    let bound = || -> f64 {
        terms
            .iter()
            .zip(&norms)
            .map(|(t, [b, a])| t.weight.abs() * b.get().sqrt() * a.get().sqrt())
            .sum()
    };
    let (svd, s) = weighted_sum_svd_filled(&terms, rows, cols, |s| keep(s, bound()))?;
    Ok((svd, s, bound()))
}

/// The number of singular values above the noise floor [`SUM_RANK_RTOL`]` · bound`.
pub(crate) fn numerical_rank(s: &[f64], bound: f64) -> usize {
    let tolerance = SUM_RANK_RTOL * bound;
    s.iter().take_while(|&&x| x > tolerance).count()
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
    plan: &ModulePlan<'_>,
    inputs: &[MergeInput<'_>],
    weights: &[f64],
    rank_cap: Option<usize>,
) -> Result<Factors> {
    let (rows, cols) = (plan.geometry.out, plan.geometry.cols());
    let mut numerical = 0;
    let (svd, s, _) = weighted_svd(plan, inputs, weights, |s, bound| {
        numerical = numerical_rank(s, bound);
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
        let plans = super::super::plan::plan(&inputs).expect("mergeable");
        let (_, s, bound) =
            super::weighted_svd(&plans[0], &inputs, &[1.0, -1.0], |_, _| Ok(0)).expect("finite");
        // the bound accumulated while decoding equals Σ|c|·‖B‖·‖A‖ of the loaded terms
        let norm = |x: &[f32]| x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
        let expected: f64 = terms_of(&inputs, &[1.0, -1.0], "m")
            .iter()
            .map(|t| t.coefficient().abs() * norm(&t.up) * norm(&t.down))
            .sum();
        // (sum_squares sums in f32 lanes: relative error well below 1e-6)
        assert!(
            (bound - expected).abs() < 1e-6 * expected,
            "{bound} vs {expected}"
        );
        let noise = s[0] / bound;
        assert!(noise < super::SUM_RANK_RTOL / 20.0, "noise {noise:.2e}");
    }
}
