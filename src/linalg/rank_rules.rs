//! Rank selection on singular values, plus the retention statistics resize reports.
//!
//! Two families, because compatibility is a feature but not the default:
//! - [`select_rank`]: the exact criteria (the smallest rank that satisfies the rule).
//! - [`select_rank_kohya`]: sd-scripts `networks/resize_lora.py` `rank_resize` bit for bit,
//!   including its off-by-one (every dynamic method keeps one more singular value than needed),
//!   its `[1, len−1]` index clamp, its zero-matrix rule and its float32 arithmetic. sd-scripts
//!   runs these on the full-length `S` of a full SVD (`len = min(out, in·kh·kw)`), which the
//!   caller reproduces through `full_len` (missing values are zeros: the true rank is ≤ r).

use crate::error::{Error, Result};

/// sd-scripts' `MIN_SV`: a matrix whose largest singular value is at most this is "zero" and
/// resized to rank 1.
pub const KOHYA_MIN_SV: f64 = 1e-6;

/// How to choose the new rank. `max_rank` (the `--new_rank` / `--new_conv_rank` value) is the
/// fixed rank for [`RankRule::Fixed`] and the cap for the dynamic rules.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RankRule {
    /// Rank = `max_rank`.
    Fixed,
    /// Keep `σ > σ₀ / param` (`param` = largest allowed ratio σ₀/σ, > 0).
    SvRatio(f64),
    /// Smallest k with `√(Σ_{i<k} σ²) / ‖σ‖ ≥ param` (fraction of the Frobenius norm).
    SvFro(f64),
    /// Smallest k with `Σ_{i<k} σ / Σ σ ≥ param` (fraction of the nuclear norm).
    SvCumulative(f64),
}

/// The dynamic rules by name (sd-scripts' `--dynamic_method` values).
#[allow(clippy::enum_variant_names)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RankMethod {
    SvRatio,
    SvFro,
    SvCumulative,
}

crate::named_enum!(RankMethod, "rank method", [
    SvRatio => "sv_ratio", ["sv-ratio"], "keep σ > σ_max / X",
    SvFro => "sv_fro", ["sv-fro"], "smallest rank keeping a fraction X of the Frobenius norm",
    SvCumulative => "sv_cumulative", ["sv-cumulative"], "smallest rank keeping a fraction X of Σσ",
]);

impl RankRule {
    /// `Fixed` without a method, else the method's rule with threshold `param`.
    pub fn from_method(method: Option<RankMethod>, param: Option<f64>) -> Result<RankRule> {
        let Some(method) = method else {
            return Ok(RankRule::Fixed);
        };
        let p = param
            .ok_or_else(|| Error::bad_option("param", format!("{method} needs a threshold")))?;
        if !(p.is_finite() && p > 0.0) {
            return Err(Error::bad_option(
                "param",
                format!("must be a positive number, got {p}"),
            ));
        }
        Ok(match method {
            RankMethod::SvRatio => RankRule::SvRatio(p),
            RankMethod::SvFro => RankRule::SvFro(p),
            RankMethod::SvCumulative => RankRule::SvCumulative(p),
        })
    }

    /// The dynamic method and its threshold; `None` for `Fixed`.
    pub fn method(&self) -> Option<(RankMethod, f64)> {
        match *self {
            RankRule::Fixed => None,
            RankRule::SvRatio(p) => Some((RankMethod::SvRatio, p)),
            RankRule::SvFro(p) => Some((RankMethod::SvFro, p)),
            RankRule::SvCumulative(p) => Some((RankMethod::SvCumulative, p)),
        }
    }

    fn check(&self, max_rank: usize) -> Result<()> {
        if max_rank == 0 {
            return Err(Error::Invalid("maximum rank must be at least 1".into()));
        }
        match *self {
            RankRule::Fixed => Ok(()),
            RankRule::SvRatio(p) | RankRule::SvFro(p) | RankRule::SvCumulative(p) => {
                if p.is_finite() && p > 0.0 {
                    Ok(())
                } else {
                    Err(Error::Invalid(format!(
                        "dynamic rank parameter must be a positive number, got {p}"
                    )))
                }
            }
        }
    }
}

/// The exact rule on `s` (descending): the smallest rank satisfying it, in `[1, max_rank]`.
///
/// `Fixed` gives `min(max_rank, s.len())`; ranks above `s.len()` would only add zero
/// directions. A zero (or empty) spectrum gives 1, since a LoRA module needs rank ≥ 1. An
/// unreachable target (e.g. `SvFro(1.5)`) keeps all of `s`, capped at `max_rank`.
pub fn select_rank(s: &[f64], rule: RankRule, max_rank: usize) -> Result<usize> {
    rule.check(max_rank)?;
    let largest = s.first().copied().unwrap_or(0.0);
    let raw = if largest <= 0.0 {
        1
    } else {
        match rule {
            RankRule::Fixed => s.len(),
            RankRule::SvRatio(p) => {
                let threshold = largest / p;
                s.iter().filter(|&&x| x > threshold).count()
            }
            RankRule::SvFro(p) => smallest_prefix_reaching(s.iter().map(|x| x * x), p * p),
            RankRule::SvCumulative(p) => smallest_prefix_reaching(s.iter().copied(), p),
        }
    };
    Ok(raw.clamp(1, max_rank))
}

/// Smallest `k` with `Σ_{i<k} xᵢ ≥ fraction · Σ xᵢ` (all of them if never reached).
fn smallest_prefix_reaching(values: impl Iterator<Item = f64> + Clone, fraction: f64) -> usize {
    // The total is the final running sum, so fraction = 1 is reached exactly at the end.
    let total: f64 = values.clone().fold(0.0, |acc, x| acc + x);
    let target = fraction * total;
    let mut acc = 0.0;
    let mut count = 0;
    for x in values {
        acc += x;
        count += 1;
        if acc >= target {
            return count;
        }
    }
    count
}

/// sd-scripts' `rank_resize` new rank, reproduced exactly.
///
/// `s` is descending; it is extended with zeros to `full_len` (use `min(out, in·kh·kw)` to
/// match sd-scripts, or `s.len()` when a shorter `full_len` is given). Steps, as in
/// `networks/resize_lora.py`:
/// 1. dynamic: `idx` = `count(S > S₀/param)` (sv_ratio), `searchsorted(cumsum(S)/ΣS, param) + 1`
///    (sv_cumulative) or `searchsorted(cumsum(S²)/ΣS², param²) + 1` (sv_fro); clamp `idx` to
///    `max(1, min(idx, len−1))`; `new_rank = idx + 1`. Fixed: `new_rank = max_rank`.
/// 2. if `S₀ ≤ 1e-6` → 1; else cap at `max_rank`.
///
/// Arithmetic follows torch on float32: values are rounded to f32, cumulative sums accumulate
/// in f64 (torch's CPU accumulator) and are stored as f32, ratios and comparisons are f32.
/// Results can differ from sd-scripts only where its own singular values (from a float32 dense
/// SVD) differ from `s` across a threshold.
pub fn select_rank_kohya(
    s: &[f64],
    full_len: usize,
    rule: RankRule,
    max_rank: usize,
) -> Result<usize> {
    rule.check(max_rank)?;
    let len = full_len.max(s.len());
    let padded: Vec<f32> = s
        .iter()
        .map(|&x| x as f32)
        .chain(std::iter::repeat(0.0))
        .take(len)
        .collect();
    let largest = padded.first().copied().unwrap_or(0.0);

    let clamp_index = |idx: usize| idx.min(len.saturating_sub(1)).max(1);
    let new_rank = match rule {
        RankRule::Fixed => max_rank,
        RankRule::SvRatio(p) => {
            let min_sv = largest / p as f32;
            clamp_index(padded.iter().filter(|&&x| x > min_sv).count()) + 1
        }
        RankRule::SvCumulative(p) => {
            clamp_index(searchsorted_normalised_cumsum(&padded, p as f32) + 1) + 1
        }
        RankRule::SvFro(p) => {
            let squares: Vec<f32> = padded.iter().map(|x| x * x).collect();
            clamp_index(searchsorted_normalised_cumsum(&squares, (p * p) as f32) + 1) + 1
        }
    };

    // torch compares the float32 S[0] with MIN_SV rounded to float32.
    if largest <= KOHYA_MIN_SV as f32 {
        Ok(1)
    } else {
        Ok(new_rank.min(max_rank))
    }
}

/// `torch.searchsorted(torch.cumsum(x) / float(torch.sum(x)), target)` on float32 `x`: the
/// number of normalised prefix sums strictly below `target` (left insertion point).
fn searchsorted_normalised_cumsum(x: &[f32], target: f32) -> usize {
    let total = x.iter().map(|&v| f64::from(v)).sum::<f64>() as f32;
    let mut acc = 0.0f64;
    let mut below = 0;
    for &v in x {
        acc += f64::from(v);
        let normalised = (acc as f32) / total;
        // Prefix sums are non-decreasing, so the first one ≥ target ends the search.
        // (A NaN from 0/0 compares false here, like torch's searchsorted places it last.)
        if normalised < target {
            below += 1;
        } else if !normalised.is_nan() {
            break;
        }
    }
    below
}

/// The statistics sd-scripts prints per module after choosing `rank`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Retention {
    /// `Σ_{i<rank} |σᵢ| / Σ |σᵢ|` ("sum(S) retained").
    pub sum_retained: f64,
    /// `√(Σ_{i<rank} σᵢ²) / √(Σ σᵢ²)` ("fro retained").
    pub fro_retained: f64,
    /// `σ₀ / σ_{rank−1}` ("max(S) ratio"); `inf` when `σ_{rank−1}` is zero or beyond `s`.
    pub max_ratio: f64,
}

/// Retention statistics of keeping the first `rank` of `s` (descending), in f64.
///
/// For a zero matrix the fractions are NaN (0/0), as in sd-scripts, which skips NaN when it
/// averages "Frobenius norm retention"; callers should do the same. Zeros beyond `s` (the
/// `full_len` padding) change none of these numbers.
pub fn retention(s: &[f64], rank: usize) -> Retention {
    let kept = rank.min(s.len());
    let sum_all: f64 = s.iter().map(|x| x.abs()).sum();
    let sum_kept: f64 = s[..kept].iter().map(|x| x.abs()).sum();
    let sq_all: f64 = s.iter().map(|x| x * x).sum();
    let sq_kept: f64 = s[..kept].iter().map(|x| x * x).sum();
    let first = s.first().copied().unwrap_or(0.0);
    let last = match rank {
        0 => f64::NAN,
        r => s.get(r - 1).copied().unwrap_or(0.0),
    };
    Retention {
        sum_retained: sum_kept / sum_all,
        fro_retained: sq_kept.sqrt() / sq_all.sqrt(),
        max_ratio: first / last,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SD_EXAMPLE: [f64; 5] = [8.0, 4.0, 2.0, 1.0, 0.5];

    fn exact(s: &[f64], rule: RankRule, max_rank: usize) -> usize {
        select_rank(s, rule, max_rank).expect("valid rule")
    }

    fn kohya(s: &[f64], full_len: usize, rule: RankRule, max_rank: usize) -> usize {
        select_rank_kohya(s, full_len, rule, max_rank).expect("valid rule")
    }

    #[test]
    fn sv_ratio_sd_scripts_example() {
        // σ₀/4 = 2: {8, 4} are strictly above. Exact keeps 2; sd-scripts keeps count + 1 = 3.
        assert_eq!(exact(&SD_EXAMPLE, RankRule::SvRatio(4.0), 8), 2);
        assert_eq!(kohya(&SD_EXAMPLE, 5, RankRule::SvRatio(4.0), 8), 3);
    }

    #[test]
    fn sv_fro_smallest_rank_reaching_fraction() {
        // σ² = 64, 16, 4, 1, 0.25; total 85.25; prefix fractions .7507, .9384, .9853, .9971, 1.
        // param 0.9 → target 0.81: first prefix ≥ .81 is k = 2.
        assert_eq!(exact(&SD_EXAMPLE, RankRule::SvFro(0.9), 8), 2);
        // searchsorted(.., .81) = 1 → idx 2 → new_rank 3.
        assert_eq!(kohya(&SD_EXAMPLE, 5, RankRule::SvFro(0.9), 8), 3);
        // param 0.99 → 0.9801: k = 3 exact, kohya 4.
        assert_eq!(exact(&SD_EXAMPLE, RankRule::SvFro(0.99), 8), 3);
        assert_eq!(kohya(&SD_EXAMPLE, 5, RankRule::SvFro(0.99), 8), 4);
    }

    #[test]
    fn sv_cumulative_smallest_rank_reaching_fraction() {
        // Σσ = 15.5; prefix fractions .5161, .7742, .9032, .9677, 1.
        assert_eq!(exact(&SD_EXAMPLE, RankRule::SvCumulative(0.5), 8), 1);
        assert_eq!(exact(&SD_EXAMPLE, RankRule::SvCumulative(0.9), 8), 3);
        // searchsorted(.., .9) = 2 → idx 3 → new_rank 4.
        assert_eq!(kohya(&SD_EXAMPLE, 5, RankRule::SvCumulative(0.9), 8), 4);
        // param 0.5: searchsorted = 0 → idx 1 → new_rank 2.
        assert_eq!(kohya(&SD_EXAMPLE, 5, RankRule::SvCumulative(0.5), 8), 2);
    }

    #[test]
    fn full_target_keeps_everything_exact_and_len_in_kohya() {
        assert_eq!(exact(&SD_EXAMPLE, RankRule::SvCumulative(1.0), 8), 5);
        assert_eq!(exact(&SD_EXAMPLE, RankRule::SvFro(1.0), 8), 5);
        assert_eq!(exact(&SD_EXAMPLE, RankRule::SvFro(2.0), 8), 5);
        // searchsorted(…, 4.0) = 5 → idx 6 → clamp to len−1 = 4 → new_rank 5.
        assert_eq!(kohya(&SD_EXAMPLE, 5, RankRule::SvFro(2.0), 8), 5);
    }

    #[test]
    fn kohya_clamps_index_to_len_minus_one() {
        // sv_ratio huge: count = 5, clamp to len−1 = 4 → new_rank 5.
        assert_eq!(kohya(&SD_EXAMPLE, 5, RankRule::SvRatio(1000.0), 8), 5);
        // With zero padding to len 10 the clamp is 9: count(S > 0.008) = 5 → new_rank 6.
        assert_eq!(kohya(&SD_EXAMPLE, 10, RankRule::SvRatio(1000.0), 8), 6);
        // sv_ratio ≤ 1: count = 0, clamp up to 1 → new_rank 2.
        assert_eq!(kohya(&SD_EXAMPLE, 5, RankRule::SvRatio(1.0), 8), 2);
        assert_eq!(exact(&SD_EXAMPLE, RankRule::SvRatio(1.0), 8), 1);
        // A single singular value: min(idx, 0) then max(1, ·) → idx 1 → new_rank 2.
        assert_eq!(kohya(&[3.0], 1, RankRule::SvRatio(2.0), 8), 2);
    }

    #[test]
    fn dynamic_rank_is_capped_at_max_rank() {
        assert_eq!(exact(&SD_EXAMPLE, RankRule::SvCumulative(0.99), 2), 2);
        assert_eq!(kohya(&SD_EXAMPLE, 5, RankRule::SvCumulative(0.99), 3), 3);
    }

    #[test]
    fn zero_matrix_gets_rank_one() {
        let zeros = [0.0; 4];
        for rule in [
            RankRule::Fixed,
            RankRule::SvRatio(4.0),
            RankRule::SvFro(0.9),
            RankRule::SvCumulative(0.9),
        ] {
            assert_eq!(exact(&zeros, rule, 8), 1, "{rule:?}");
            assert_eq!(kohya(&zeros, 64, rule, 8), 1, "{rule:?}");
            assert_eq!(kohya(&[], 0, rule, 8), 1, "{rule:?}");
        }
        // sd-scripts' threshold is absolute: S₀ = 1e-6 counts as zero, 2e-6 does not.
        assert_eq!(kohya(&[1e-6, 1e-7], 2, RankRule::Fixed, 8), 1);
        assert_eq!(kohya(&[2e-6, 1e-7], 2, RankRule::Fixed, 8), 8);
    }

    #[test]
    fn fixed_rank_is_max_rank() {
        assert_eq!(exact(&SD_EXAMPLE, RankRule::Fixed, 3), 3);
        assert_eq!(exact(&SD_EXAMPLE, RankRule::Fixed, 8), 5);
        assert_eq!(kohya(&SD_EXAMPLE, 5, RankRule::Fixed, 8), 8);
    }

    #[test]
    fn invalid_parameters_are_errors() {
        assert!(select_rank(&SD_EXAMPLE, RankRule::Fixed, 0).is_err());
        assert!(select_rank(&SD_EXAMPLE, RankRule::SvRatio(0.0), 4).is_err());
        assert!(select_rank_kohya(&SD_EXAMPLE, 5, RankRule::SvFro(f64::NAN), 4).is_err());
        assert!(select_rank_kohya(&SD_EXAMPLE, 5, RankRule::SvCumulative(-0.5), 4).is_err());
    }

    #[test]
    fn retention_statistics_match_sd_scripts_formulas() {
        let stats = retention(&SD_EXAMPLE, 3);
        assert!((stats.sum_retained - 14.0 / 15.5).abs() < 1e-12);
        assert!((stats.fro_retained - (84.0f64 / 85.25).sqrt()).abs() < 1e-12);
        assert_eq!(stats.max_ratio, 4.0);
        let full = retention(&SD_EXAMPLE, 5);
        assert_eq!(
            (full.sum_retained, full.fro_retained, full.max_ratio),
            (1.0, 1.0, 16.0)
        );
        assert_eq!(retention(&SD_EXAMPLE, 7).max_ratio, f64::INFINITY);
        assert!(retention(&[0.0, 0.0], 1).fro_retained.is_nan());
    }
}
