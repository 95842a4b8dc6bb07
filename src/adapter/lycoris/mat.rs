//! The small dense algebra the LyCORIS conversions need, on row-major f32 matrices: the
//! row-wise and column-wise Khatri–Rao (face-splitting) products, the Kronecker product, a
//! transpose and the Tucker-core contraction. Sums are accumulated in f64.
//!
//! Nothing here forms an `out × in` delta: every product is of factor size (`out × r₁r₂`,
//! `r₁r₂ × in`, or the Kronecker of two SVD factors).

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// A row-major `rows × cols` f32 matrix.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Mat {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl Mat {
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Mat {
        debug_assert_eq!(data.len(), rows * cols);
        Mat { rows, cols, data }
    }

    /// A tensor read as `rows × cols` (its trailing dimensions flattened row-major), or an
    /// error naming `what` when the element count differs.
    pub fn from_tensor(t: &Tensor, rows: usize, what: &str) -> Result<Mat> {
        let numel = t.numel();
        if rows == 0 || !numel.is_multiple_of(rows) || numel == 0 {
            return Err(Error::Invalid(format!(
                "{what} {:?} cannot be read as a matrix with {rows} rows",
                t.shape()
            )));
        }
        Ok(Mat::new(rows, numel / rows, t.to_f32()))
    }

    /// A tensor's first dimension as rows, everything else flattened into columns.
    pub fn rows_of(t: &Tensor, what: &str) -> Result<Mat> {
        let rows = t.shape().first().copied().unwrap_or(0);
        Mat::from_tensor(t, rows, what)
    }

    #[cfg(test)]
    pub fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.cols + j]
    }

    pub fn transpose(&self) -> Mat {
        let mut data = vec![0.0f32; self.data.len()];
        for i in 0..self.rows {
            for j in 0..self.cols {
                data[j * self.rows + i] = self.data[i * self.cols + j];
            }
        }
        Mat::new(self.cols, self.rows, data)
    }

    /// `self · other`, f64 accumulation (factor-sized operands only).
    #[cfg(test)]
    pub fn matmul(&self, other: &Mat) -> Mat {
        debug_assert_eq!(self.cols, other.rows);
        let (m, k, n) = (self.rows, self.cols, other.cols);
        let mut acc = vec![0.0f64; m * n];
        for i in 0..m {
            let row = &mut acc[i * n..(i + 1) * n];
            for l in 0..k {
                let a = f64::from(self.data[i * k + l]);
                if a == 0.0 {
                    continue;
                }
                for (dst, &b) in row.iter_mut().zip(&other.data[l * n..(l + 1) * n]) {
                    *dst += a * f64::from(b);
                }
            }
        }
        Mat::new(m, n, acc.into_iter().map(|x| x as f32).collect())
    }
}

/// Row-wise Khatri–Rao (face-splitting) product: `(P•Q)[i, a·q + b] = P[i,a]·Q[i,b]` for
/// `P` `m × p`, `Q` `m × q`. With [`face_split_cols`] it turns a Hadamard product of two
/// low-rank products into one: `(P₁D₁) ⊙ (P₂D₂) = (P₁•P₂)·(D₁ᵀ•D₂ᵀ)ᵀ`.
pub(crate) fn face_split_rows(p: &Mat, q: &Mat) -> Mat {
    debug_assert_eq!(p.rows, q.rows);
    let (pc, qc) = (p.cols, q.cols);
    let mut data = Vec::with_capacity(p.rows * pc * qc);
    for i in 0..p.rows {
        let pr = &p.data[i * pc..(i + 1) * pc];
        let qr = &q.data[i * qc..(i + 1) * qc];
        for &a in pr {
            data.extend(qr.iter().map(|&b| a * b));
        }
    }
    Mat::new(p.rows, pc * qc, data)
}

/// Column-wise Khatri–Rao product: `(D₁ ∘ D₂)[a·r₂ + b, j] = D₁[a,j]·D₂[b,j]` for `D₁`
/// `r₁ × n`, `D₂` `r₂ × n`.
pub(crate) fn face_split_cols(d1: &Mat, d2: &Mat) -> Mat {
    debug_assert_eq!(d1.cols, d2.cols);
    let n = d1.cols;
    let mut data = Vec::with_capacity(d1.rows * d2.rows * n);
    for a in 0..d1.rows {
        let ra = &d1.data[a * n..(a + 1) * n];
        for b in 0..d2.rows {
            let rb = &d2.data[b * n..(b + 1) * n];
            data.extend(ra.iter().zip(rb).map(|(&x, &y)| x * y));
        }
    }
    Mat::new(d1.rows * d2.rows, n, data)
}

/// Kronecker product `P ⊗ Q`: `[(i₁·q_rows + i₂), (j₁·q_cols + j₂)] = P[i₁,j₁]·Q[i₂,j₂]`.
#[cfg(test)]
pub(crate) fn kron(p: &Mat, q: &Mat) -> Mat {
    let (rows, cols) = (p.rows * q.rows, p.cols * q.cols);
    let mut data = vec![0.0f32; rows * cols];
    for i1 in 0..p.rows {
        for i2 in 0..q.rows {
            let row = i1 * q.rows + i2;
            for j1 in 0..p.cols {
                let a = p.at(i1, j1);
                for j2 in 0..q.cols {
                    data[row * cols + j1 * q.cols + j2] = a * q.at(i2, j2);
                }
            }
        }
    }
    Mat::new(rows, cols, data)
}

/// Contract a Tucker core with its input-mode factor:
/// `out[i, c·K + p] = Σ_j core[i, j, p]·b[j, c]` for `core` `[r₁, r₂, kh, kw]` (`K = kh·kw`)
/// and `b` `r₂ × in`. The result is the `r₁ × (in·kh·kw)` down factor of a conv LoRA whose up
/// factor is the core's output-mode matrix (LyCORIS `lora_mid`, `hada_t*`, `lokr_t2`).
pub(crate) fn tucker_down(core: &Tensor, b: &Mat, what: &str) -> Result<Mat> {
    let s = core.shape();
    if s.len() < 2 || s[1] != b.rows {
        return Err(Error::Invalid(format!(
            "{what} {s:?} does not fit its {}×{} input-mode factor (needs [r, {}, kh, kw])",
            b.rows, b.cols, b.rows
        )));
    }
    let (r1, r2) = (s[0], s[1]);
    let k: usize = s[2..].iter().product();
    let c = core.to_f32();
    let n = b.cols;
    let mut out = vec![0.0f64; r1 * n * k];
    for i in 0..r1 {
        for j in 0..r2 {
            let brow = &b.data[j * n..(j + 1) * n];
            for p in 0..k {
                let t = f64::from(c[(i * r2 + j) * k + p]);
                if t == 0.0 {
                    continue;
                }
                let base = i * n * k;
                for (ch, &bv) in brow.iter().enumerate() {
                    out[base + ch * k + p] += t * f64::from(bv);
                }
            }
        }
    }
    Ok(Mat::new(
        r1,
        n * k,
        out.into_iter().map(|x| x as f32).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(rows: usize, cols: usize, v: &[f32]) -> Mat {
        Mat::new(rows, cols, v.to_vec())
    }

    #[test]
    fn face_splitting_turns_a_hadamard_of_products_into_one_product() {
        // (P1 D1) ⊙ (P2 D2), hand-sized: 2×2 outputs from rank-2 and rank-1 factors
        let p1 = m(2, 2, &[1.0, 2.0, 3.0, 4.0]);
        let d1 = m(2, 2, &[1.0, 0.0, 1.0, 1.0]);
        let p2 = m(2, 1, &[2.0, -1.0]);
        let d2 = m(1, 2, &[3.0, 5.0]);
        let w1 = p1.matmul(&d1); // [[3,2],[7,4]]
        let w2 = p2.matmul(&d2); // [[6,10],[-3,-5]]
        let had: Vec<f32> = w1.data.iter().zip(&w2.data).map(|(a, b)| a * b).collect();
        assert_eq!(had, vec![18.0, 20.0, -21.0, -20.0]);
        let prod = face_split_rows(&p1, &p2).matmul(&face_split_cols(&d1, &d2));
        assert_eq!(prod.data, had);
    }

    #[test]
    fn kron_layout_and_mixed_product_rule() {
        let p = m(1, 2, &[1.0, 2.0]);
        let q = m(2, 1, &[3.0, 4.0]);
        assert_eq!(kron(&p, &q).data, vec![3.0, 6.0, 4.0, 8.0]);
        // kron(P1 Q1, P2 Q2) = kron(P1, P2) kron(Q1, Q2)
        let p1 = m(2, 1, &[1.0, -2.0]);
        let q1 = m(1, 3, &[0.5, 1.0, 2.0]);
        let p2 = m(2, 2, &[1.0, 2.0, 0.0, 1.0]);
        let q2 = m(2, 2, &[3.0, 0.0, 1.0, -1.0]);
        let lhs = kron(&p1.matmul(&q1), &p2.matmul(&q2));
        let rhs = kron(&p1, &p2).matmul(&kron(&q1, &q2));
        assert_eq!(lhs, rhs);
    }

    #[test]
    fn tucker_down_contracts_the_input_mode() {
        // core [1, 2, 1, 2], b [2, 1]: out[0, c*2+p] = Σ_j core[0,j,p] b[j,c]
        let core = Tensor::from_f32(
            vec![1, 2, 1, 2],
            &[1.0, 2.0, 3.0, 4.0],
            crate::tensor::DType::F32,
        )
        .unwrap();
        let b = m(2, 1, &[10.0, 100.0]);
        let out = tucker_down(&core, &b, "core").unwrap();
        assert_eq!((out.rows, out.cols), (1, 2));
        assert_eq!(out.data, vec![310.0, 420.0]);
    }
}
