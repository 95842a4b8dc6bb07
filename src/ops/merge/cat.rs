//! `cat`: concatenated factors, exactly PEFT's `combination_type="cat"`. The weight and scale of
//! each input go on its A rows, B is copied: `A = [w₁s₁A₁; …; wₙsₙAₙ]`, `B = [B₁ | … | Bₙ]`, so
//! `B·A = Σ wᵢsᵢBᵢAᵢ` exactly, at rank `Σrᵢ` (of the inputs holding the module) and alpha = rank.
//!
//! PEFT rounds twice (`A * w` then `* s`, each in the factor dtype); with `peft_order` the same
//! two f32 roundings are done so its factors come out bit for bit, otherwise `wᵢ·sᵢ` is formed
//! in f64 and applied with one rounding.

use super::plan::Term;
use super::Factors;

pub(crate) fn merge_cat(terms: &[Term], rows: usize, cols: usize, peft_order: bool) -> Factors {
    let rank: usize = terms.iter().map(|t| t.rank).sum();
    let mut up = vec![0.0f32; rows * rank];
    let mut down = Vec::with_capacity(rank * cols);
    let mut offset = 0;
    for term in terms {
        // B block: columns offset..offset+rᵢ of the row-major rows × rank matrix.
        for (dst, src) in up
            .chunks_exact_mut(rank)
            .zip(term.up.chunks_exact(term.rank))
        {
            dst[offset..offset + term.rank].copy_from_slice(src);
        }
        if peft_order {
            let (w, s) = (term.weight as f32, term.scale as f32);
            down.extend(term.down.iter().map(|&a| a * w * s));
        } else {
            let c = term.coefficient();
            down.extend(term.down.iter().map(|&a| (f64::from(a) * c) as f32));
        }
        offset += term.rank;
    }
    Factors {
        up,
        down,
        rank,
        alpha: rank as f64,
        retained_fro: None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{merge, MergeMethod};

    #[test]
    fn cat_is_exact_and_has_the_summed_rank() {
        let (a, b) = two_adapters();
        let inputs = [input("a", &a), input("b", &b)];
        for compat in [false, true] {
            let mut opts = options(MergeMethod::Cat, &[0.6, -0.4]);
            opts.compat_peft = compat;
            let (merged, report) = merge(&inputs, &opts).expect("mergeable");
            for (path, layer) in &merged.layers {
                let expected = dense_weighted_sum(&inputs, &opts.weights, path);
                let err = rel_fro_diff(&dense_delta(layer), &expected);
                assert!(err < 1e-6, "{path}: {err:.2e}");
                assert_eq!(layer.alpha, layer.rank() as f64);
            }
            assert_eq!(merged.layers["q"].rank(), 12);
            assert_eq!(merged.layers["conv"].rank(), 5);
            assert_eq!(merged.layers["conv"].up.shape(), &[4, 5, 1, 1]);
            assert!(report.iter().all(|m| m.retained_fro.is_none()));
        }
    }

    #[test]
    fn cat_puts_weight_and_scale_on_down_only() {
        let (a, b) = two_adapters();
        let inputs = [input("a", &a), input("b", &b)];
        let (merged, _) = merge(&inputs, &options(MergeMethod::Cat, &[0.6, -0.4])).expect("ok");
        let (la, lb, lm) = (&a.layers["q"], &b.layers["q"], &merged.layers["q"]);
        let (ra, rb) = (la.rank(), lb.rank());
        let up = lm.up.to_f32();
        let (ua, ub) = (la.up.to_f32(), lb.up.to_f32());
        for row in 0..la.out_features() {
            assert_eq!(&up[row * 12..row * 12 + ra], &ua[row * ra..(row + 1) * ra]);
            assert_eq!(
                &up[row * 12 + ra..(row + 1) * 12],
                &ub[row * rb..(row + 1) * rb]
            );
        }
        let down = lm.down.to_f32();
        let da = la.down.to_f32();
        let c = 0.6 * la.scale();
        for (got, &x) in down.iter().zip(&da) {
            assert_eq!(*got, (f64::from(x) * c) as f32);
        }
    }
}
