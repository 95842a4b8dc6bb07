//! `torch.quantile` (linear interpolation) by selection, and kohya's factor clamp.
//!
//! Why selection: sd-scripts clamps merged/extracted factors to the 0.99 quantile of their
//! values. `torch.quantile` sorts (O(n log n)) and refuses inputs above 2^24 elements
//! (pytorch#67592), which breaks large modules. Two `select_nth_unstable` passes give the same
//! two order statistics in O(n) with no size limit. The clamp, on every module of a merge,
//! first narrows the search with a threshold taken from a sample (one read-only pass keeps the
//! values at or above it), then selects among those few; the threshold is verified by count, so
//! the result is the same order statistic exactly, and an unlucky sample only costs the plain
//! selection.

use crate::error::{Error, Result};

/// Inputs up to this many elements get torch's float32 rank arithmetic bit for bit; torch
/// itself refuses larger ones, where the rank is computed in f64 instead (more accurate).
const TORCH_MAX_ELEMENTS: usize = 1 << 24;

/// `torch.quantile(x, q)` with the default `interpolation='linear'` on float32 `values`.
///
/// Copies `values` once; see [`quantile_linear_in_place`] to reuse a scratch buffer. Errors on
/// an empty input, `q` outside `[0, 1]` or a NaN value.
pub fn quantile_linear(values: &[f32], q: f64) -> Result<f32> {
    let mut scratch = values.to_vec();
    quantile_linear_in_place(&mut scratch, q)
}

/// [`quantile_linear`] that reorders `values` (a scratch buffer) instead of copying it.
///
/// Arithmetic mirrors torch for float32: `q` is rounded to f32, the rank `q·(n−1)` is an f32
/// product, the weight is `rank − ⌊rank⌋` and the result is torch's `lerp` of the two
/// neighbouring order statistics. (torch's vectorised lerp may fuse a multiply-add, so a
/// 1-ulp difference is possible in principle.)
pub fn quantile_linear_in_place(values: &mut [f32], q: f64) -> Result<f32> {
    let n = values.len();
    if n == 0 {
        return Err(Error::Invalid("quantile of an empty set of values".into()));
    }
    if !(0.0..=1.0).contains(&q) {
        return Err(Error::Invalid(format!(
            "quantile q must be in [0, 1], got {q}"
        )));
    }
    if let Some(i) = values.iter().position(|x| x.is_nan()) {
        return Err(Error::Invalid(format!(
            "quantile input has NaN at index {i}"
        )));
    }

    let (below, weight) = torch_rank(n, q);
    let (_, nth, right) = values.select_nth_unstable_by(below, f32::total_cmp);
    let low = *nth;
    let high = if weight > 0.0 {
        // The next order statistic is the minimum of everything after position `below`.
        right.iter().copied().min_by(f32::total_cmp).unwrap_or(low)
    } else {
        low
    };
    Ok(torch_lerp(low, high, weight))
}

/// The position of the lower order statistic and the interpolation weight, as torch computes
/// them for `n` float32 values (see [`quantile_linear_in_place`]).
fn torch_rank(n: usize, q: f64) -> (usize, f32) {
    let last = n - 1;
    let q32 = q as f32;
    let (below, weight) = if n <= TORCH_MAX_ELEMENTS {
        let rank = q32 * last as f32;
        (rank.floor() as usize, rank - rank.floor())
    } else {
        let rank = f64::from(q32) * last as f64;
        (rank.floor() as usize, (rank - rank.floor()) as f32)
    };
    (below.min(last), weight)
}

/// A key whose signed integer order is `f32::total_cmp`'s order.
#[inline]
fn total_key(x: f32) -> i32 {
    let b = x.to_bits() as i32;
    b ^ ((((b >> 31) as u32) >> 1) as i32)
}

/// [`quantile_linear`] of the concatenation of `parts`, without copying them when the sample
/// threshold works (see the module documentation).
fn quantile_of_parts(parts: &[&[f32]], q: f64) -> Result<f32> {
    let n: usize = parts.iter().map(|p| p.len()).sum();
    let fallback = || {
        let mut all: Vec<f32> = Vec::with_capacity(n);
        parts.iter().for_each(|p| all.extend_from_slice(p));
        quantile_linear_in_place(&mut all, q)
    };
    const SAMPLES: usize = 1024;
    if n < 16 * SAMPLES || !(0.0..=1.0).contains(&q) {
        return fallback();
    }
    // NaN check as a non-short-circuiting fold (vectorises)
    if parts
        .iter()
        .any(|p| p.iter().fold(false, |nan, x| nan | x.is_nan()))
    {
        return fallback(); // reports the NaN
    }
    let (below, weight) = torch_rank(n, q);
    // sample keys, evenly spaced over the concatenation
    let step = n / SAMPLES;
    let mut sample: Vec<i32> = Vec::with_capacity(SAMPLES + parts.len());
    let mut skip = 0usize;
    for part in parts {
        let mut i = skip;
        while i < part.len() {
            sample.push(total_key(part[i]));
            i += step;
        }
        skip = i - part.len();
    }
    sample.sort_unstable();
    let ns = sample.len() as f64;
    let p = below as f64 / n as f64;
    // a sample rank safely below the wanted one: 4 standard deviations of the sample count
    let margin = 4.0 * (ns * p * (1.0 - p)).sqrt() + 2.0;
    let j = (p * ns - margin).floor();
    if j < 1.0 {
        return fallback();
    }
    let threshold = sample[j as usize];
    let mut count_below = 0usize;
    let mut kept: Vec<f32> = Vec::with_capacity(n / 16);
    for part in parts {
        // counting is branch-free; the few values at or above the threshold are copied
        count_below += part
            .iter()
            .map(|&x| usize::from(total_key(x) < threshold))
            .sum::<usize>();
        kept.extend(part.iter().copied().filter(|&x| total_key(x) >= threshold));
    }
    if count_below > below || kept.len() > n / 4 {
        // the threshold is above the wanted rank (or barely filters): plain selection
        return fallback();
    }
    let local = below - count_below;
    let (_, nth, right) = kept.select_nth_unstable_by(local, f32::total_cmp);
    let low = *nth;
    let high = if weight > 0.0 {
        right.iter().copied().min_by(f32::total_cmp).unwrap_or(low)
    } else {
        low
    };
    Ok(torch_lerp(low, high, weight))
}

/// `torch.lerp(start, end, weight)` for float32 (ATen `lerp`: two formulas for stability).
fn torch_lerp(start: f32, end: f32, weight: f32) -> f32 {
    if weight.abs() < 0.5 {
        start + weight * (end - start)
    } else {
        end - (end - start) * (1.0 - weight)
    }
}

/// sd-scripts' factor clamp (svd_merge_lora / extract_lora_from_models): `hi` = the `q`
/// quantile of all values of `up` and `down` together (signed, linear interpolation), `lo =
/// −hi`, and both factors clamped to `[lo, hi]` in place. Returns `hi`.
///
/// sd-scripts uses `q = 0.99`. As with `torch.clamp`, if `hi < 0` (so `lo > hi`) every value
/// becomes `hi`.
pub fn clamp_factors(up: &mut [f32], down: &mut [f32], q: f64) -> Result<f32> {
    if up.is_empty() && down.is_empty() {
        return Err(Error::Invalid("quantile of an empty set of values".into()));
    }
    if !(0.0..=1.0).contains(&q) {
        return Err(Error::Invalid(format!(
            "quantile q must be in [0, 1], got {q}"
        )));
    }
    let hi = quantile_of_parts(&[up, down], q)?;
    let lo = -hi;
    for part in [up, down] {
        for x in part.iter_mut() {
            *x = x.max(lo).min(hi);
        }
    }
    Ok(hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quantile(values: &[f32], q: f64) -> f32 {
        quantile_linear(values, q).expect("valid input")
    }

    #[test]
    fn interpolates_between_order_statistics() {
        // rank = 0.99·3 = 2.97: 3 + 0.97·(4 − 3).
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.99), 3.97);
        assert_eq!(quantile(&[4.0, 1.0, 3.0, 2.0], 0.99), 3.97);
        // rank = 0.5·3 = 1.5: 2.5.
        assert_eq!(quantile(&[3.0, 1.0, 4.0, 2.0], 0.5), 2.5);
        // rank = 0.25·4 = 1: exactly the second smallest.
        assert_eq!(quantile(&[10.0, -1.0, 3.0, 7.0, 5.0], 0.25), 3.0);
    }

    #[test]
    fn endpoints_are_min_and_max() {
        let v = [0.5, -2.0, 9.0, 3.0];
        assert_eq!(quantile(&v, 0.0), -2.0);
        assert_eq!(quantile(&v, 1.0), 9.0);
        assert_eq!(quantile(&[42.0], 0.7), 42.0);
    }

    #[test]
    fn ties_are_handled_like_a_sort() {
        // sorted [1, 2, 5, 5, 5]: rank 2 → 5; rank 1.2 → 2 + 0.2·3 = 2.6.
        let v = [5.0, 1.0, 5.0, 5.0, 2.0];
        assert_eq!(quantile(&v, 0.5), 5.0);
        let expected = {
            let w = 0.3f32 * 4.0 - 1.0;
            2.0 + w * 3.0
        };
        assert_eq!(quantile(&v, 0.3), expected);
        assert!((quantile(&v, 0.3) - 2.6).abs() < 1e-6);
        // All equal.
        assert_eq!(quantile(&[7.0; 9], 0.99), 7.0);
    }

    #[test]
    fn matches_sorting_reference_on_random_values() {
        let values = super::super::test_util::gaussian(10_007, 5);
        let mut sorted = values.clone();
        sorted.sort_by(f32::total_cmp);
        for q in [0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0] {
            let rank = (q as f32) * (sorted.len() - 1) as f32;
            let (lo, w) = (rank.floor() as usize, rank - rank.floor());
            let hi = (lo + 1).min(sorted.len() - 1);
            let expected = torch_lerp(sorted[lo], sorted[hi], w);
            assert_eq!(quantile(&values, q), expected, "q = {q}");
        }
    }

    #[test]
    fn the_sampled_threshold_gives_the_same_order_statistics_as_a_sort() {
        // large enough for the sampled path; spread values, heavy ties, all-equal, a spike of
        // extremes at the top, negative-only, and signed zeros (total order: -0 < +0)
        let gauss = super::super::test_util::gaussian(70_001, 9);
        let ties: Vec<f32> = (0..50_000).map(|i| ((i * 7) % 13) as f32).collect();
        let mut spike = super::super::test_util::gaussian(40_000, 3);
        for x in spike.iter_mut().take(2_000) {
            *x = 1e30;
        }
        let negative: Vec<f32> = gauss.iter().map(|x| -x.abs() - 1.0).collect();
        let zeros: Vec<f32> = (0..40_000)
            .map(|i| if i % 3 == 0 { -0.0 } else { 0.0 })
            .collect();
        for values in [gauss, ties, vec![2.5f32; 30_000], spike, negative, zeros] {
            let (a, b) = values.split_at(values.len() / 3);
            let mut sorted = values.clone();
            sorted.sort_by(f32::total_cmp);
            for q in [0.0, 0.01, 0.5, 0.97, 0.99, 0.999, 1.0] {
                let (lo, w) = torch_rank(sorted.len(), q);
                let hi = (lo + 1).min(sorted.len() - 1);
                let expected = torch_lerp(sorted[lo], sorted[hi], w);
                let got = quantile_of_parts(&[a, b], q).expect("valid");
                assert_eq!(
                    got.to_bits(),
                    expected.to_bits(),
                    "q = {q}: {got} vs {expected}"
                );
            }
        }
        let mut nan = super::super::test_util::gaussian(40_000, 4);
        nan[39_999] = f32::NAN;
        assert!(quantile_of_parts(&[&nan[..100], &nan[100..]], 0.99).is_err());
    }

    #[test]
    fn invalid_inputs_are_errors() {
        assert!(quantile_linear(&[], 0.5).is_err());
        assert!(quantile_linear(&[1.0], 1.5).is_err());
        assert!(quantile_linear(&[1.0], -0.1).is_err());
        assert!(quantile_linear(&[1.0], f64::NAN).is_err());
        assert!(quantile_linear(&[1.0, f32::NAN], 0.5).is_err());
    }

    #[test]
    fn clamp_uses_quantile_of_both_factors() {
        // sorted up ∪ down = [-10, -3, 1, 2, 4, 5, 6, 8, 9, 10]: rank 0.99·9 = 8.91 → 9.91.
        let mut up = vec![10.0, -3.0, 2.0, 4.0];
        let mut down = vec![-10.0, 1.0, 9.0, 8.0, 5.0, 6.0];
        let hi = clamp_factors(&mut up, &mut down, 0.99).expect("valid input");
        let mut all = vec![10.0f32, -3.0, 2.0, 4.0, -10.0, 1.0, 9.0, 8.0, 5.0, 6.0];
        all.sort_by(f32::total_cmp);
        let rank = 0.99f32 * 9.0;
        let w = rank - rank.floor();
        assert_eq!(hi, torch_lerp(all[8], all[9], w));
        assert_eq!(up, vec![hi, -3.0, 2.0, 4.0]);
        assert_eq!(down, vec![-hi, 1.0, 9.0, 8.0, 5.0, 6.0]);
    }

    #[test]
    fn clamp_with_negative_quantile_sets_everything_to_hi() {
        let mut up = vec![-5.0, -4.0];
        let mut down = vec![-3.0, -2.0];
        let hi = clamp_factors(&mut up, &mut down, 0.5).expect("valid input");
        assert_eq!(hi, -3.5);
        assert!(up.iter().chain(&down).all(|&x| x == hi));
    }
}
