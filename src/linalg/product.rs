//! The exact SVD of `up·down` when the inner rank `r` is at least `min(m, n)`: then the
//! factors hold at least as many numbers as the product, the factored route's `r × r` core is
//! no smaller than the matrix, and forming `up·down` (`O(m·n·r)`) and taking its thin SVD is the
//! cheaper exact route (LoHa's face-split factors, rank r², reach this on most modules).

use super::layout::{check_matrix, element_count, to_row_major};
use super::low_rank::LowRankSvd;
use crate::error::{Error, Result};
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef};

/// Thin SVD (all `min(m, n)` triplets, f32) of the product of `up` (`m × r`) and `down`
/// (`r × n`), both row-major, through the dense `m × n` product.
pub fn dense_product_svd(
    up: &[f32],
    down: &[f32],
    m: usize,
    r: usize,
    n: usize,
) -> Result<LowRankSvd> {
    check_matrix("up", up, m, r)?;
    check_matrix("down", down, r, n)?;
    element_count("product", m, n)?;
    if m == 0 || n == 0 {
        return Ok(LowRankSvd::empty(m, n));
    }
    let mut p = Mat::<f32>::zeros(m, n);
    matmul(
        p.as_mut(),
        Accum::Replace,
        MatRef::from_row_major_slice(up, m, r),
        MatRef::from_row_major_slice(down, r, n),
        1.0f32,
        faer::get_global_parallelism(),
    );
    let svd = p.thin_svd().map_err(|e| {
        Error::Invalid(format!(
            "SVD of the {m}×{n} product did not converge: {e:?}"
        ))
    })?;
    Ok(LowRankSvd {
        u: to_row_major(svd.U()),
        s: svd
            .S()
            .column_vector()
            .iter()
            .map(|&x| f64::from(x))
            .collect(),
        vt: to_row_major(svd.V().transpose()),
        m,
        n,
    })
}
