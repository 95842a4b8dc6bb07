//! Boundary checks and layout conversions between row-major slices and faer matrices.
//!
//! Every public kernel validates its slices here before building a faer view, because faer
//! asserts (panics) on a length mismatch and its SVD does not converge on NaN/inf input.

use crate::error::{Error, Result};
use faer::{Mat, MatRef};

/// `rows * cols`, or an error naming the matrix when the product overflows `usize`.
pub(crate) fn element_count(what: &str, rows: usize, cols: usize) -> Result<usize> {
    rows.checked_mul(cols)
        .ok_or_else(|| Error::Invalid(format!("{what}: {rows}×{cols} elements overflow usize")))
}

/// Checks that `data` holds exactly a `rows × cols` matrix of finite numbers.
pub(crate) fn check_matrix(what: &str, data: &[f32], rows: usize, cols: usize) -> Result<()> {
    let expected = element_count(what, rows, cols)?;
    if data.len() != expected {
        return Err(Error::Invalid(format!(
            "{what}: expected {rows}×{cols} = {expected} values, got {}",
            data.len()
        )));
    }
    if all_finite(data) {
        return Ok(());
    }
    if let Some(i) = data.iter().position(|x| !x.is_finite()) {
        return Err(Error::Invalid(format!(
            "{what}: value at row {}, column {} is {} (inputs must be finite)",
            i / cols.max(1),
            i % cols.max(1),
            data[i]
        )));
    }
    Ok(())
}

/// Whether every value is finite. Written as a non-short-circuiting fold over exponent bits
/// (no early exit, no float reassociation) so it vectorises: it runs over every factor read.
pub fn all_finite(data: &[f32]) -> bool {
    const EXP: u32 = 0x7f80_0000;
    data.chunks(1 << 12)
        .all(|c| c.iter().fold(true, |ok, x| ok & (x.to_bits() & EXP != EXP)))
}

/// `Σ x²` in f64, summed in f32 lanes within short chunks (vectorises; relative error well
/// below 1e-6, enough for norms used as scales and tolerances).
pub fn sum_squares(data: &[f32]) -> f64 {
    data.chunks(1024)
        .map(|c| {
            let mut lanes = [0f32; 8];
            let mut it = c.chunks_exact(8);
            for x in &mut it {
                for k in 0..8 {
                    lanes[k] += x[k] * x[k];
                }
            }
            let rest: f32 = it.remainder().iter().map(|x| x * x).sum();
            f64::from(lanes.iter().sum::<f32>() + rest)
        })
        .sum()
}

/// Copies a faer matrix into a new row-major buffer.
pub(crate) fn to_row_major(mat: MatRef<'_, f32>) -> Vec<f32> {
    let (rows, cols) = mat.shape();
    let mut out = Vec::with_capacity(rows * cols);
    for i in 0..rows {
        out.extend((0..cols).map(|j| mat[(i, j)]));
    }
    out
}

/// Widens an f32 matrix to f64 (for the small cores, where accuracy is cheap).
pub(crate) fn widen(mat: MatRef<'_, f32>) -> Mat<f64> {
    Mat::from_fn(mat.nrows(), mat.ncols(), |i, j| f64::from(mat[(i, j)]))
}

/// Narrows an f64 matrix to f32 (rounding to nearest).
pub(crate) fn narrow(mat: MatRef<'_, f64>) -> Mat<f32> {
    Mat::from_fn(mat.nrows(), mat.ncols(), |i, j| mat[(i, j)] as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_finite_finds_any_non_finite_value() {
        let mut v: Vec<f32> = (0..10_000).map(|i| (i as f32 - 5000.0) * 1e30).collect();
        assert!(all_finite(&v));
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for at in [0, 7, 4095, 4096, 9999] {
                let keep = v[at];
                v[at] = bad;
                assert!(!all_finite(&v), "{bad} at {at}");
                v[at] = keep;
            }
        }
        assert!(all_finite(&[
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            0.0,
            -0.0
        ]));
    }

    #[test]
    fn sum_squares_matches_a_plain_f64_sum() {
        let v: Vec<f32> = (0..3001)
            .map(|i| ((i * 7919) % 1000) as f32 / 37.0 - 13.0)
            .collect();
        let naive: f64 = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        assert!((sum_squares(&v) - naive).abs() / naive < 1e-6);
        assert_eq!(sum_squares(&[]), 0.0);
    }
}
