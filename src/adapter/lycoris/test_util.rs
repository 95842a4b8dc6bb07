//! Test oracles: dense `ΔW` straight from the LyCORIS formulas (f64 loops, written
//! independently of the conversion code), a seeded generator and matrix comparisons.

use crate::adapter::LoraLayer;
use crate::tensor::{DType, Tensor};
use faer::Mat as FMat;

/// Seeded standard-normal-ish values (xorshift + Box–Muller), independent of `linalg`.
pub(crate) fn randn(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..len)
        .map(|_| {
            let (u, v) = (next(), next());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect()
}

pub(crate) fn tensor(shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_f32(shape.to_vec(), &randn(n, seed), DType::F32).unwrap()
}

/// A dense row-major f64 matrix.
#[derive(Clone, Debug)]
pub(crate) struct Dense {
    pub rows: usize,
    pub cols: usize,
    pub v: Vec<f64>,
}

impl Dense {
    pub fn of(t: &Tensor, rows: usize) -> Dense {
        let v = t.to_f64();
        Dense {
            rows,
            cols: v.len() / rows,
            v,
        }
    }
    pub fn mul(&self, o: &Dense) -> Dense {
        assert_eq!(self.cols, o.rows);
        let mut v = vec![0.0; self.rows * o.cols];
        for i in 0..self.rows {
            for l in 0..self.cols {
                for j in 0..o.cols {
                    v[i * o.cols + j] += self.v[i * self.cols + l] * o.v[l * o.cols + j];
                }
            }
        }
        Dense {
            rows: self.rows,
            cols: o.cols,
            v,
        }
    }
    pub fn t(&self) -> Dense {
        let mut v = vec![0.0; self.v.len()];
        for i in 0..self.rows {
            for j in 0..self.cols {
                v[j * self.rows + i] = self.v[i * self.cols + j];
            }
        }
        Dense {
            rows: self.cols,
            cols: self.rows,
            v,
        }
    }
    pub fn hadamard(&self, o: &Dense) -> Dense {
        Dense {
            rows: self.rows,
            cols: self.cols,
            v: self.v.iter().zip(&o.v).map(|(a, b)| a * b).collect(),
        }
    }
    pub fn scaled(&self, s: f64) -> Dense {
        Dense {
            rows: self.rows,
            cols: self.cols,
            v: self.v.iter().map(|x| x * s).collect(),
        }
    }
    /// `kron(self, o)` where `o`'s columns are `d·K` (a conv kernel kept with the second factor).
    pub fn kron(&self, o: &Dense) -> Dense {
        let (rows, cols) = (self.rows * o.rows, self.cols * o.cols);
        let mut v = vec![0.0; rows * cols];
        for i1 in 0..self.rows {
            for j1 in 0..self.cols {
                for i2 in 0..o.rows {
                    for j2 in 0..o.cols {
                        v[(i1 * o.rows + i2) * cols + j1 * o.cols + j2] =
                            self.v[i1 * self.cols + j1] * o.v[i2 * o.cols + j2];
                    }
                }
            }
        }
        Dense { rows, cols, v }
    }
    pub fn sv(&self) -> Vec<f64> {
        FMat::<f64>::from_fn(self.rows, self.cols, |i, j| self.v[i * self.cols + j])
            .singular_values()
            .unwrap()
    }
    pub fn frob2(&self) -> f64 {
        self.v.iter().map(|x| x * x).sum()
    }
    pub fn minus(&self, o: &Dense) -> Dense {
        Dense {
            rows: self.rows,
            cols: self.cols,
            v: self.v.iter().zip(&o.v).map(|(a, b)| a - b).collect(),
        }
    }
}

/// `W[p, (r,h,w)] = Σᵢⱼ core[i,j,h,w]·wa[i,p]·wb[j,r]` — LyCORIS `rebuild_tucker` /
/// `einsum("i j ..., i p, j r -> p r ...")`, flattened to `p × (r·K)`.
pub(crate) fn tucker(core: &Tensor, wa: &Dense, wb: &Dense) -> Dense {
    let s = core.shape();
    let (r1, r2, k) = (s[0], s[1], s[2] * s[3]);
    let c = core.to_f64();
    let (p, rr) = (wa.cols, wb.cols);
    let mut v = vec![0.0; p * rr * k];
    for i in 0..r1 {
        for j in 0..r2 {
            for kk in 0..k {
                let t = c[(i * r2 + j) * k + kk];
                for pp in 0..p {
                    for q in 0..rr {
                        v[(pp * rr + q) * k + kk] += t * wa.v[i * p + pp] * wb.v[j * rr + q];
                    }
                }
            }
        }
    }
    Dense {
        rows: p,
        cols: rr * k,
        v,
    }
}

/// `scale · up · down` of a canonical layer, dense.
pub(crate) fn layer_delta(l: &LoraLayer) -> Dense {
    let r = l.rank();
    let up = Dense::of(&l.up, l.up.shape()[0]);
    let down = Dense::of(&l.down, r);
    up.mul(&down).scaled(l.scale())
}

/// `‖a − b‖_F / ‖b‖_F`.
pub(crate) fn rel_err(a: &Dense, b: &Dense) -> f64 {
    assert_eq!((a.rows, a.cols), (b.rows, b.cols), "shapes differ");
    (a.minus(b).frob2() / b.frob2().max(1e-300)).sqrt()
}
