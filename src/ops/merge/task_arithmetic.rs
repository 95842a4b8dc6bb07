//! PEFT's `merge_utils` formulas on flat f32 tensors: magnitude pruning, DARE's random drop
//! with `1/d` rescale, sign election and the TIES disjoint mean.
//!
//! Used twice: on each module's dense delta (loratool's `ties`/`dare_*`/`magnitude_prune`) and
//! on the A and B factors separately (`compat_peft`). The arithmetic follows PEFT's order of
//! operations in f32 (weights rounded to f32, `tᵢ·wᵢ` then a sequential sum over inputs) so the
//! deterministic methods reproduce PEFT's factors bit for bit.
//!
//! Memory: PEFT stacks all inputs (`n` tensors plus masks). Here the inputs are produced one at
//! a time by a callback and accumulated, so a merge holds at most four tensor-sized buffers
//! whatever the number of inputs; TIES-style methods take two passes (elect, then merge) and
//! ask for every input twice, which the callback recomputes.

use super::rng::DareMask;
use super::MajoritySign;
use crate::error::{Error, Result};

/// How each input tensor is sparsified before combination.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Sparsify {
    None,
    /// Keep the `int(d·numel)` entries of largest `|t|` (PEFT `magnitude_based_pruning`).
    Magnitude,
    /// Keep each entry with probability `d`, divide the kept ones by `d` (DARE,
    /// `random_pruning(rescale=True)`).
    Random,
}

/// The combination recipe of one merge method.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Recipe {
    pub sparsify: Sparsify,
    /// `Some`: TIES sign election and disjoint mean; `None`: weighted sum.
    pub elect: Option<MajoritySign>,
    /// Fraction kept, in `(0, 1]`; `≥ 1` disables pruning as in PEFT.
    pub density: f64,
}

/// `Σᵢ wᵢ·Tᵢ` or its TIES/DARE variants over `weights.len()` inputs of `numel` elements.
///
/// `fill(i, buf)` writes input `i`'s tensor into `buf` (called once per input, twice for
/// methods with sign election); `mask(i)` gives input `i`'s DARE stream (restarted per call).
pub(crate) fn combine(
    recipe: &Recipe,
    numel: usize,
    weights: &[f32],
    fill: &mut dyn FnMut(usize, &mut [f32]) -> Result<()>,
    mask: &dyn Fn(usize) -> DareMask,
) -> Result<Vec<f32>> {
    let mut buf = vec![0.0f32; numel];
    let mut acc = vec![0.0f32; numel];
    let mut prepared = |i: usize, buf: &mut [f32]| -> Result<()> {
        fill(i, buf)?;
        sparsify(recipe, buf, &mut || mask(i));
        Ok(())
    };

    let Some(sign_method) = recipe.elect else {
        // task_arithmetic / magnitude_prune / dare_linear: Σ wᵢ·Tᵢ.
        for (i, &w) in weights.iter().enumerate() {
            prepared(i, &mut buf)?;
            for (a, &t) in acc.iter_mut().zip(buf.iter()) {
                *a += t * w;
            }
        }
        return finite(acc);
    };

    // Pass 1: elect a sign per element from the pruned, unweighted tensors.
    for i in 0..weights.len() {
        prepared(i, &mut buf)?;
        match sign_method {
            MajoritySign::Total => acc.iter_mut().zip(&buf).for_each(|(a, &t)| *a += t),
            MajoritySign::Frequency => acc.iter_mut().zip(&buf).for_each(|(a, &t)| *a += sign(t)),
        }
    }
    // torch.where(sign_magnitude >= 0, 1, -1)
    let elected_positive: Vec<bool> = acc.iter().map(|&m| m >= 0.0).collect();

    // Pass 2: disjoint mean of the weighted entries that agree with the elected sign.
    acc.fill(0.0);
    let mut agreeing = vec![0u32; numel];
    for (i, &w) in weights.iter().enumerate() {
        prepared(i, &mut buf)?;
        for (j, &t) in buf.iter().enumerate() {
            // sign(0) = 0 never equals ±1, so pruned entries never count.
            let agrees = if elected_positive[j] {
                t > 0.0
            } else {
                t < 0.0
            };
            if agrees {
                acc[j] += t * w;
                agreeing[j] += 1;
            }
        }
    }
    for (a, &count) in acc.iter_mut().zip(&agreeing) {
        // torch.clamp(num_params_preserved, min=1.0)
        *a /= count.max(1) as f32;
    }
    finite(acc)
}

/// `torch.sign` for f32.
fn sign(t: f32) -> f32 {
    if t > 0.0 {
        1.0
    } else if t < 0.0 {
        -1.0
    } else {
        0.0
    }
}

fn finite(values: Vec<f32>) -> Result<Vec<f32>> {
    if values.iter().all(|x| x.is_finite()) {
        Ok(values)
    } else {
        Err(Error::Invalid(
            "the merged values overflow float32 (merge weights too large)".into(),
        ))
    }
}

/// Applies the recipe's sparsification to one tensor in place (PEFT `prune`).
pub(crate) fn sparsify(recipe: &Recipe, values: &mut [f32], mask: &mut dyn FnMut() -> DareMask) {
    // PEFT: `density >= 1` returns the tensor unchanged (no pruning, no rescale).
    if recipe.density >= 1.0 {
        return;
    }
    match recipe.sparsify {
        Sparsify::None => {}
        Sparsify::Magnitude => {
            let keep = (recipe.density * values.len() as f64) as usize;
            keep_largest_magnitudes(values, keep);
        }
        Sparsify::Random => {
            let density = recipe.density as f32;
            let mut stream = mask();
            for x in values.iter_mut() {
                // `tensor * mask / density`
                *x = if stream.keep() { *x / density } else { 0.0 };
            }
        }
    }
}

/// Zeroes all but the `keep` entries of largest `|x|`; among equal magnitudes at the cut the
/// lowest indices are kept (torch's `topk` leaves that order unspecified).
///
/// Selection without copying or sorting: `|x|`'s bit pattern orders like `|x|` for finite
/// floats, so two 16-bit histogram passes find the `keep`-th largest key in O(numel) time and
/// O(1) extra memory.
pub(crate) fn keep_largest_magnitudes(values: &mut [f32], keep: usize) {
    if keep >= values.len() {
        return;
    }
    if keep == 0 {
        values.fill(0.0);
        return;
    }
    let key = |x: f32| x.to_bits() & 0x7fff_ffff;
    let mut hist = vec![0usize; 1 << 16];
    for &x in values.iter() {
        hist[(key(x) >> 16) as usize] += 1;
    }
    // `above` counts entries whose key is strictly greater than the threshold found so far.
    let mut above = 0usize;
    let high = descend_to(&hist, keep, &mut above);
    hist.fill(0);
    for &x in values.iter() {
        let k = key(x);
        if (k >> 16) as usize == high {
            hist[(k & 0xffff) as usize] += 1;
        }
    }
    let low = descend_to(&hist, keep, &mut above);
    let threshold = ((high as u32) << 16) | low as u32;
    let mut ties_kept = keep - above;
    for x in values.iter_mut() {
        let k = key(*x);
        if k > threshold {
            continue;
        }
        if k == threshold && ties_kept > 0 {
            ties_kept -= 1;
            continue;
        }
        *x = 0.0;
    }
}

/// The highest bucket at which the count of entries at or above it reaches `keep`, adding the
/// counts of the buckets above it to `above`.
fn descend_to(hist: &[usize], keep: usize, above: &mut usize) -> usize {
    for (bucket, &count) in hist.iter().enumerate().rev() {
        if *above + count >= keep {
            return bucket;
        }
        *above += count;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{gaussian, peft_reference, ReferenceMethod};
    use super::*;

    fn recipe(sparsify: Sparsify, elect: Option<MajoritySign>, density: f64) -> Recipe {
        Recipe {
            sparsify,
            elect,
            density,
        }
    }

    fn run(recipe: &Recipe, tensors: &[Vec<f32>], weights: &[f32], seed: u64) -> Vec<f32> {
        let numel = tensors[0].len();
        combine(
            recipe,
            numel,
            weights,
            &mut |i, buf| {
                buf.copy_from_slice(&tensors[i]);
                Ok(())
            },
            &|i| DareMask::new(seed, "m", i, recipe.density),
        )
        .expect("finite inputs")
    }

    fn inputs() -> (Vec<Vec<f32>>, Vec<f32>) {
        (
            vec![gaussian(300, 1), gaussian(300, 2), gaussian(300, 3)],
            vec![0.7, 1.3, -0.4],
        )
    }

    #[test]
    fn keeps_exactly_the_largest_magnitudes() {
        let mut v = vec![0.5, -3.0, 2.0, -0.1, 4.0, 1.0];
        keep_largest_magnitudes(&mut v, 3);
        assert_eq!(v, vec![0.0, -3.0, 2.0, 0.0, 4.0, 0.0]);
    }

    #[test]
    fn magnitude_ties_at_the_cut_keep_the_lowest_indices() {
        let mut v = vec![1.0, -2.0, 2.0, 0.5, -2.0, 2.0];
        keep_largest_magnitudes(&mut v, 3);
        assert_eq!(v, vec![0.0, -2.0, 2.0, 0.0, -2.0, 0.0]);
        let mut all_equal = vec![3.0f32; 7];
        keep_largest_magnitudes(&mut all_equal, 2);
        assert_eq!(all_equal, vec![3.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn magnitude_prune_matches_sorting_on_random_values() {
        let values = gaussian(10_000, 9);
        for keep in [0, 1, 17, 5_000, 9_999, 10_000] {
            let mut pruned = values.clone();
            keep_largest_magnitudes(&mut pruned, keep);
            let mut order: Vec<usize> = (0..values.len()).collect();
            order.sort_by(|&a, &b| values[b].abs().total_cmp(&values[a].abs()).then(a.cmp(&b)));
            let mut expected = vec![0.0f32; values.len()];
            for &i in &order[..keep] {
                expected[i] = values[i];
            }
            assert_eq!(pruned, expected, "keep {keep}");
        }
    }

    #[test]
    fn linear_is_the_weighted_sum() {
        let (t, w) = inputs();
        let got = run(&recipe(Sparsify::None, None, 1.0), &t, &w, 0);
        let expected = peft_reference(ReferenceMethod::Linear, &t, &w, 1.0, None);
        assert_eq!(got, expected);
    }

    #[test]
    fn magnitude_prune_matches_the_peft_formula() {
        let (t, w) = inputs();
        let got = run(&recipe(Sparsify::Magnitude, None, 0.3), &t, &w, 0);
        let expected = peft_reference(ReferenceMethod::MagnitudePrune, &t, &w, 0.3, None);
        assert_eq!(got, expected);
    }

    #[test]
    fn ties_matches_the_peft_formula_for_both_sign_methods() {
        let (t, w) = inputs();
        for sign in [MajoritySign::Total, MajoritySign::Frequency] {
            let got = run(&recipe(Sparsify::Magnitude, Some(sign), 0.5), &t, &w, 0);
            let expected = peft_reference(ReferenceMethod::Ties(sign), &t, &w, 0.5, None);
            assert_eq!(got, expected, "{sign:?}");
        }
    }

    #[test]
    fn dare_matches_the_peft_formula_with_the_same_masks() {
        let (t, w) = inputs();
        let density = 0.4;
        let masks: Vec<Vec<bool>> = (0..3)
            .map(|i| {
                let mut m = DareMask::new(5, "m", i, density);
                (0..300).map(|_| m.keep()).collect()
            })
            .collect();
        let got = run(&recipe(Sparsify::Random, None, density), &t, &w, 5);
        let expected = peft_reference(ReferenceMethod::DareLinear, &t, &w, density, Some(&masks));
        assert_eq!(got, expected);
        for sign in [MajoritySign::Total, MajoritySign::Frequency] {
            let got = run(&recipe(Sparsify::Random, Some(sign), density), &t, &w, 5);
            let expected = peft_reference(
                ReferenceMethod::DareTies(sign),
                &t,
                &w,
                density,
                Some(&masks),
            );
            assert_eq!(got, expected, "{sign:?}");
        }
    }

    #[test]
    fn density_one_disables_pruning() {
        let (t, w) = inputs();
        let linear = run(&recipe(Sparsify::None, None, 1.0), &t, &w, 0);
        assert_eq!(run(&recipe(Sparsify::Random, None, 1.0), &t, &w, 3), linear);
        assert_eq!(
            run(&recipe(Sparsify::Magnitude, None, 1.0), &t, &w, 3),
            linear
        );
    }

    #[test]
    fn disjoint_mean_averages_only_agreeing_entries() {
        // Element 0: +1 and +3 agree (total +3.5 ≥ 0): (1·1 + 1·3)/2. Element 1: −2 and +1 and
        // −0.5 → total −1.5 < 0: elected −, mean of (−2, −0.5) weighted by 1. Element 2: all zero.
        let t = vec![
            vec![1.0, -2.0, 0.0],
            vec![3.0, 1.0, 0.0],
            vec![-0.5, -0.5, 0.0],
        ];
        let w = vec![1.0, 1.0, 1.0];
        let got = run(
            &recipe(Sparsify::None, Some(MajoritySign::Total), 1.0),
            &t,
            &w,
            0,
        );
        assert_eq!(got, vec![2.0, -1.25, 0.0]);
        // Frequency: element 0 has signs +,+,− → +; element 1 −,+,− → −.
        let got = run(
            &recipe(Sparsify::None, Some(MajoritySign::Frequency), 1.0),
            &t,
            &w,
            0,
        );
        assert_eq!(got, vec![2.0, -1.25, 0.0]);
    }

    #[test]
    fn overflow_is_an_error() {
        let t = [vec![3e38f32], vec![3e38f32]];
        let r = combine(
            &recipe(Sparsify::None, None, 1.0),
            1,
            &[1.0, 1.0],
            &mut |i, b| {
                b.copy_from_slice(&t[i]);
                Ok(())
            },
            &|i| DareMask::new(0, "m", i, 1.0),
        );
        assert!(r.is_err());
    }
}
