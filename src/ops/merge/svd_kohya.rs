//! `svd`: truncated SVD merge with sd-scripts' `svd_merge_lora.py` conventions.
//!
//! sd-scripts forms `M = Σ ratioᵢ·(αᵢ/rᵢ)·upᵢ·downᵢ` densely and runs a full SVD on it. Here the
//! SVD comes from the factors (`linalg::weighted_sum_svd`): the same singular triplets up to
//! float error, without the dense matrix. Then, as sd-scripts does:
//! - `k = min(rank, in_channels, out)` — `conv_rank` for spatial convs; the cap uses input
//!   *channels*, not `in·kh·kw`;
//! - `up = U_k·diag(S_k)`, `down = V_kᵀ`;
//! - with a clamp quantile `q` (sd-scripts: 0.99), `hi` = the `q` quantile of all values of
//!   `up` and `down` (signed, linear interpolation) and both are clamped to `[−hi, hi]`;
//! - alpha = `k` (scale 1).
//!
//! The clamp threshold is a quantile of *signed* values, so it depends on the sign each SVD
//! gives a singular pair (`uⱼ, vⱼ` and `−uⱼ, −vⱼ` are equally valid). sd-scripts gets LAPACK's
//! signs, which no cheap rule predicts; ours come from a different SVD. Clamped products
//! therefore differ from sd-scripts' by the effect of a slightly different threshold (median
//! 0.6 %, max 4 % on the SD1.5 fixture), and match to float16 precision once the signs agree.
//!
//! Where the merged delta has fewer than `k` non-zero directions, sd-scripts' extra singular
//! vectors are arbitrary unit vectors times σ ≈ 0; here those rows and columns are zero. The
//! product is the same, but the clamp quantile sees zeros instead of those vectors' entries, so
//! a clamped module of that kind can differ from sd-scripts' file (see tests/merge.rs).
//!
//! With `compat_peft`, PEFT's `combination_type="svd"` instead (PEFT 0.21.2,
//! `_svd_generalized_task_arithmetic_weighted_adapter`): `M = Σ wᵢ·ΔWᵢ`, the same factor
//! convention, rank = `rank` or the largest input rank, no channel cap, and clamping only if a
//! quantile is given (PEFT's `svd_clamp` defaults to none).

use super::plan::ModulePlan;
use super::sum::{retained_fro, weighted_svd};
use super::{Factors, MergeInput};
use crate::error::Result;
use crate::linalg::{clamp_factors, SvSplit};

pub(crate) fn merge_svd(
    plan: &ModulePlan<'_>,
    inputs: &[MergeInput<'_>],
    weights: &[f64],
    rank: usize,
    clamp_quantile: Option<f64>,
    channel_cap: bool,
) -> Result<Factors> {
    let geometry = &plan.geometry;
    let k = if channel_cap {
        rank.min(geometry.input).min(geometry.out)
    } else {
        rank
    }
    .max(1);
    let (svd, s, _) = weighted_svd(plan, inputs, weights, |_, _| Ok(k))?;
    let retained = retained_fro(&s, svd.rank());
    let (mut up, mut down) = svd.into_factors(k, SvSplit::Up);
    if let Some(q) = clamp_quantile {
        clamp_factors(&mut up, &mut down, q)?;
    }
    Ok(Factors {
        up,
        down,
        rank: k,
        alpha: k as f64,
        retained_fro: Some(retained),
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{merge, MergeMethod, MergeOptions};

    /// sd-scripts' svd_merge on a dense matrix, written out: full SVD, `U_k·S_k`, `Vh_k`,
    /// optional clamp at the quantile of both (by sorting), product.
    ///
    /// The clamp is not invariant under the sign freedom of a singular pair (flipping `uⱼ, vⱼ`
    /// changes the signed values whose quantile is taken), so the reference adopts the signs of
    /// `signs_from` (our unclamped `up`, `rows × k`); sd-scripts gets LAPACK's.
    fn kohya_reference(
        dense: &[f64],
        (rows, cols, k): (usize, usize, usize),
        q: Option<f64>,
        signs_from: &[f32],
    ) -> Vec<f64> {
        let (mut u, s, mut vt) = dense_svd(dense, rows, cols);
        let full = s.len();
        for l in 0..k {
            let dot: f64 = (0..rows)
                .map(|i| u[i * full + l] * f64::from(signs_from[i * k + l]))
                .sum();
            if dot < 0.0 {
                (0..rows).for_each(|i| u[i * full + l] = -u[i * full + l]);
                (0..cols).for_each(|j| vt[l * cols + j] = -vt[l * cols + j]);
            }
        }
        let mut us: Vec<f64> = (0..rows * k)
            .map(|idx| {
                let (i, j) = (idx / k, idx % k);
                u[i * full + j] * s[j]
            })
            .collect();
        let mut vh: Vec<f64> = vt[..k * cols].to_vec();
        if let Some(q) = q {
            let mut all: Vec<f64> = us.iter().chain(&vh).copied().collect();
            all.sort_by(f64::total_cmp);
            let pos = q * (all.len() - 1) as f64;
            let (lo, frac) = (pos.floor() as usize, pos - pos.floor());
            let hi_val = all[lo] + frac * (all[(lo + 1).min(all.len() - 1)] - all[lo]);
            for x in us.iter_mut().chain(vh.iter_mut()) {
                *x = x.clamp(-hi_val, hi_val);
            }
        }
        let mut out = vec![0.0; rows * cols];
        for i in 0..rows {
            for l in 0..k {
                for j in 0..cols {
                    out[i * cols + j] += us[i * k + l] * vh[l * cols + j];
                }
            }
        }
        out
    }

    #[test]
    fn svd_merge_matches_the_kohya_formula_with_and_without_clamp() {
        let (a, b) = two_adapters();
        let inputs = [input("a", &a), input("b", &b)];
        let mut unclamped = options(MergeMethod::Svd, &[0.6, 0.4]);
        unclamped.rank = Some(3);
        let (plain, _) = merge(&inputs, &unclamped).expect("mergeable");
        for q in [None, Some(0.99), Some(0.9)] {
            let opts = MergeOptions {
                clamp_quantile: q,
                ..unclamped.clone()
            };
            let (merged, report) = merge(&inputs, &opts).expect("mergeable");
            for (path, layer) in &merged.layers {
                let (rows, cols) = (layer.out_features(), layer.down.numel() / layer.rank());
                let dense = dense_weighted_sum(&inputs, &opts.weights, path);
                let k = 3.min(layer.in_features()).min(rows);
                assert_eq!(layer.rank(), k, "{path}");
                assert_eq!(layer.alpha, k as f64);
                let signs = plain.layers[path].up.to_f32();
                let expected = kohya_reference(&dense, (rows, cols, k), q, &signs);
                let err = rel_fro_diff(&dense_delta(layer), &expected);
                assert!(err < 2e-5, "{path} q={q:?}: {err:.2e}");
            }
            assert!(report.iter().all(|m| m.retained_fro.is_some()));
        }
    }

    #[test]
    fn svd_rank_is_capped_by_input_channels_not_kernel_columns() {
        // conv: in 3 channels, 3x3 kernel (27 columns), out 4: k = min(8, 3, 4) = 3.
        let (a, b) = two_adapters();
        let inputs = [input("a", &a), input("b", &b)];
        let mut opts = options(MergeMethod::Svd, &[1.0, 1.0]);
        opts.rank = Some(8);
        let (merged, _) = merge(&inputs, &opts).expect("mergeable");
        assert_eq!(merged.layers["conv"].rank(), 3);
        assert_eq!(merged.layers["conv"].down.shape(), &[3, 3, 3, 3]);
        assert_eq!(merged.layers["q"].rank(), 8);
    }

    #[test]
    fn svd_without_rank_is_an_error_unless_peft_compat() {
        let (a, b) = two_adapters();
        let inputs = [input("a", &a), input("b", &b)];
        let opts = options(MergeMethod::Svd, &[1.0, 1.0]);
        let err = merge(&inputs, &opts).expect_err("needs a rank").to_string();
        assert!(err.contains("rank"), "{err}");
        let mut opts = options(MergeMethod::Svd, &[1.0, 1.0]);
        opts.compat_peft = true;
        let (merged, _) = merge(&inputs, &opts).expect("PEFT default: largest input rank");
        // the largest rank of any input layer is 8 (b's q); PEFT pads, never caps by channels
        assert!(merged.layers.values().all(|l| l.rank() == 8));
    }
}
