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
