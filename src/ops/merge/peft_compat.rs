//! `compat_peft`: PEFT `add_weighted_adapter` for `linear`, `ties`, `dare_linear`, `dare_ties`
//! and `magnitude_prune`, which combine the A factors and the B factors *separately*
//! (`LoraModel._generalized_task_arithmetic_weighted_adapter`, PEFT 0.21.2):
//!
//! - per input holding the module, `cᵢ = wᵢ·sᵢ`, `aᵢ = sign(cᵢ)·√|cᵢ|`, `bᵢ = √|cᵢ|` (rounded to
//!   f32, as `torch.tensor` does);
//! - `A = F([Aᵢ], a)`, `B = F([Bᵢ], b)` with `F` the `merge_utils` function of the method;
//! - rank = the inputs' common rank (PEFT requires equal ranks), alpha = rank (scale 1).
//!
//! For `linear` the product is `B·A = Σᵢ Σⱼ aᵢ·bⱼ·Bⱼ·Aᵢ`: the wanted terms `cᵢ·Bᵢ·Aᵢ` plus every
//! cross term `Bⱼ·Aᵢ` (i ≠ j), which mixes unrelated factor spaces. It equals the weighted sum of
//! deltas only for one input. loratool's `sum` is that weighted sum, exactly; this mode exists
//! to reproduce results made with PEFT. The arithmetic follows PEFT's f32 order, so `linear`,
//! `ties` and `magnitude_prune` match PEFT's factors bit for bit (except where `torch.topk`
//! breaks exact ties in |x| differently). DARE's masks come from loratool's seeded stream, not
//! torch's generator, so `dare_*` match PEFT only in distribution.

use super::plan::{ModulePlan, Term};
use super::rng::DareMask;
use super::task_arithmetic::{combine, Recipe};
use super::{Factors, MergeInput};
use crate::error::{Error, Result};

/// PEFT's error text for unequal ranks.
const PEFT_RANK_MESSAGE: &str = "All adapters must have the same r value when using \
     combination_type linear, ties, dare_ties or dare_linear.";

/// Factor-wise merge of one module, PEFT style.
pub(crate) fn merge_factorwise(
    plan: &ModulePlan<'_>,
    inputs: &[MergeInput<'_>],
    terms: &[Term],
    recipe: &Recipe,
    seed: u64,
) -> Result<Factors> {
    let rank = terms.first().map_or(0, |t| t.rank);
    if let Some(other) = terms.iter().find(|t| t.rank != rank) {
        return Err(Error::module(
            plan.path,
            format!(
                "{PEFT_RANK_MESSAGE} (PEFT-compatible merge: {} has rank {rank}, {} has rank {})",
                inputs[terms[0].input].label, inputs[other.input].label, other.rank
            ),
        ));
    }
    let (rows, cols) = (plan.geometry.out, plan.geometry.cols());
    // math.sqrt(abs(weight * scaling)) (* sign on A), in f64, then torch.tensor → f32.
    let root = |t: &Term| t.coefficient().abs().sqrt();
    let a_weights: Vec<f32> = terms
        .iter()
        .map(|t| {
            let sign = if t.coefficient() >= 0.0 { 1.0 } else { -1.0 };
            (root(t) * sign) as f32
        })
        .collect();
    let b_weights: Vec<f32> = terms.iter().map(|t| root(t) as f32).collect();
    // Distinct DARE streams for A and B of the same input: PEFT draws them one after the other.
    let down = combine(
        recipe,
        rank * cols,
        &a_weights,
        &mut |i, buf| {
            buf.copy_from_slice(&terms[i].down);
            Ok(())
        },
        &|i| {
            DareMask::new(
                seed,
                &format!("{}#lora_A", plan.path),
                terms[i].input,
                recipe.density,
            )
        },
    )?;
    let up = combine(
        recipe,
        rows * rank,
        &b_weights,
        &mut |i, buf| {
            buf.copy_from_slice(&terms[i].up);
            Ok(())
        },
        &|i| {
            DareMask::new(
                seed,
                &format!("{}#lora_B", plan.path),
                terms[i].input,
                recipe.density,
            )
        },
    )?;
    Ok(Factors {
        up,
        down,
        rank,
        alpha: rank as f64,
        retained_fro: None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{merge, MajoritySign, MergeMethod, MergeOptions};
    use crate::adapter::LayerKind;

    fn compat(method: MergeMethod, weights: &[f64]) -> MergeOptions {
        MergeOptions {
            compat_peft: true,
            ..options(method, weights)
        }
    }

    #[test]
    fn linear_compat_has_the_cross_terms_checked_by_hand() {
        // Two 1×1 rank-1 "LoRAs": B₁A₁ = 2·3, B₂A₂ = 5·7, scales s₁ = 2 (alpha 2, r 1), s₂ = 1.
        // Weights 0.5 and 2: c₁ = 1, c₂ = 2; a = (1, √2), b = (1, √2).
        // A = 1·3 + √2·7, B = 1·2 + √2·5; B·A = 6 + 2·35 (diagonal: c₁B₁A₁ + c₂B₂A₂ = 76)
        //   + √2·(2·7 + 5·3) (cross terms B₁A₂ + B₂A₁ = 29·√2 ≈ 41.01).
        let a = adapter(vec![(
            "m",
            layer_from(&[2.0], &[3.0], 1, 1, 1, 2.0, LayerKind::Linear),
        )]);
        let b = adapter(vec![(
            "m",
            layer_from(&[5.0], &[7.0], 1, 1, 1, 1.0, LayerKind::Linear),
        )]);
        let inputs = [input("a", &a), input("b", &b)];
        let (merged, report) = merge(&inputs, &compat(MergeMethod::Sum, &[0.5, 2.0])).expect("ok");
        let l = &merged.layers["m"];
        let r2 = 2f64.sqrt();
        let expected = 76.0 + r2 * 29.0;
        let got = dense_delta(l)[0];
        assert!((got - expected).abs() < 1e-4, "{got} vs {expected}");
        assert_eq!((l.rank(), l.alpha), (1, 1.0));
        assert!((f64::from(l.down.to_f32()[0]) - (3.0 + r2 * 7.0)).abs() < 1e-5);
        assert!((f64::from(l.up.to_f32()[0]) - (2.0 + r2 * 5.0)).abs() < 1e-5);
        assert_eq!(report[0].retained_fro, None);
        // The exact `sum` has no cross terms.
        let (exact, _) = merge(&inputs, &options(MergeMethod::Sum, &[0.5, 2.0])).expect("ok");
        assert!((dense_delta(&exact.layers["m"])[0] - 76.0).abs() < 1e-4);
    }

    #[test]
    fn negative_weights_put_the_sign_on_a_only() {
        // c = −4·1: a = −2, b = 2 → B·A = −4·B·A for a single input (exact).
        let a = adapter(vec![("m", linear_layer(6, 5, 2, 2.0, 3))]);
        let inputs = [input("a", &a)];
        let (merged, _) = merge(&inputs, &compat(MergeMethod::Sum, &[-4.0])).expect("ok");
        let expected: Vec<f64> = dense_delta(&a.layers["m"])
            .iter()
            .map(|x| -4.0 * x)
            .collect();
        assert!(rel_fro_diff(&dense_delta(&merged.layers["m"]), &expected) < 1e-6);
        let down = merged.layers["m"].down.to_f32();
        let src = a.layers["m"].down.to_f32();
        assert_eq!(down[0], src[0] * -2.0);
    }

    #[test]
    fn linear_compat_is_the_factorwise_formula() {
        let (a, b) = equal_rank_adapters();
        let inputs = [input("a", &a), input("b", &b)];
        let weights = [0.6, 0.4];
        let (merged, _) = merge(&inputs, &compat(MergeMethod::Sum, &weights)).expect("ok");
        for (path, layer) in &merged.layers {
            let (down, up) =
                factorwise_reference(&inputs, &weights, path, ReferenceMethod::Linear, 1.0);
            assert_eq!(layer.down.to_f32(), down, "{path}");
            assert_eq!(layer.up.to_f32(), up, "{path}");
        }
    }

    #[test]
    fn ties_and_magnitude_prune_compat_prune_the_factors() {
        let (a, b) = equal_rank_adapters();
        let inputs = [input("a", &a), input("b", &b)];
        let weights = [0.6, 1.4];
        for (method, reference) in [
            (
                MergeMethod::Ties,
                ReferenceMethod::Ties(MajoritySign::Total),
            ),
            (MergeMethod::MagnitudePrune, ReferenceMethod::MagnitudePrune),
        ] {
            let opts = MergeOptions {
                density: Some(0.5),
                ..compat(method, &weights)
            };
            let (merged, _) = merge(&inputs, &opts).expect("ok");
            for (path, layer) in &merged.layers {
                let (down, up) = factorwise_reference(&inputs, &weights, path, reference, 0.5);
                assert_eq!(layer.down.to_f32(), down, "{method:?} {path}");
                assert_eq!(layer.up.to_f32(), up, "{method:?} {path}");
            }
        }
    }

    #[test]
    fn compat_requires_equal_ranks() {
        let (a, b) = two_adapters();
        let inputs = [input("a.safetensors", &a), input("b.safetensors", &b)];
        let err = merge(&inputs, &compat(MergeMethod::Sum, &[1.0, 1.0]))
            .expect_err("ranks 4 and 8 on q")
            .to_string();
        assert!(err.contains("same r value"), "{err}");
        assert!(
            err.contains("a.safetensors") && err.contains("b.safetensors"),
            "{err}"
        );
    }
}
