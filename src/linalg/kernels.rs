//! The f32 kernels of low-rank products: Gram matrices of skinny factors and their products
//! with small matrices (the Gram-based factored SVD), and rank-r updates `W += c·U·V` (bake),
//! vectorised for the CPU they run on.
//!
//! Owns: the arithmetic loops and the choice of instruction set (AVX-512, AVX2+FMA, or portable
//! code) at run time. Each kernel is written once, generic over a small vector trait
//! ([`Vf32`]) with one implementation per instruction set, and compiled per instruction set
//! inside a `#[target_feature]` entry point. Explicit vectors rather than auto-vectorised loops:
//! the compiler otherwise vectorises these loops across rows (with gathers), several times
//! slower.
//!
//! Layout: matrices are row-major f32 with a row stride that is a multiple of [`LANES`] and
//! zero padding beyond the logical columns ([`PaddedMatrix`]), so no kernel has a remainder
//! loop across a row. Gram matrices are accumulated in f32 over blocks of a few dozen products
//! and summed across blocks in f64: each entry then carries an error of a few f32 roundings of
//! its block sums, independent of the factor length.

// The tile loops index several register arrays in lockstep; iterators would obscure them.
#![allow(clippy::needless_range_loop)]

/// Row strides are multiples of this many f32 values (one AVX-512 register).
pub(crate) const LANES: usize = 16;

/// Products summed in f32 before the partial sum is added to the f64 total.
const F32_BLOCK: usize = 32;

/// `n` rounded up to a multiple of [`LANES`].
pub(crate) fn padded(n: usize) -> usize {
    n.div_ceil(LANES) * LANES
}

/// A row-major f32 matrix whose rows are `stride` apart, `stride` a multiple of [`LANES`],
/// with zeros in every padding position.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PaddedMatrix {
    pub data: Vec<f32>,
    pub rows: usize,
    pub cols: usize,
    pub stride: usize,
}

impl PaddedMatrix {
    /// A zero matrix with `rows` rows padded to `padded_rows` (extra zero rows) and columns
    /// padded to a multiple of [`LANES`].
    pub fn zeros(rows: usize, padded_rows: usize, cols: usize) -> PaddedMatrix {
        let stride = padded(cols);
        PaddedMatrix {
            data: vec![0.0; padded_rows.max(rows) * stride],
            rows,
            cols,
            stride,
        }
    }

    /// An `m × r` factor for [`gram_cols`] and [`mul_cols`] (an `up` factor).
    pub fn for_gram_cols(m: usize, r: usize) -> PaddedMatrix {
        PaddedMatrix::zeros(m, m, r)
    }

    /// An `r × n` factor for [`gram_rows`] and [`mul_rows`] (a `down` factor): rows padded to
    /// a multiple of 4 with zero rows.
    pub fn for_gram_rows(r: usize, n: usize) -> PaddedMatrix {
        PaddedMatrix::zeros(r, r.div_ceil(4) * 4, n)
    }

    /// Rows including the zero padding rows.
    pub fn stored_rows(&self) -> usize {
        self.data.len() / self.stride.max(1)
    }

    pub fn row_mut(&mut self, i: usize) -> &mut [f32] {
        &mut self.data[i * self.stride..i * self.stride + self.cols]
    }

    /// The logical `rows × cols` matrix, densely packed row-major.
    pub fn to_dense(&self) -> Vec<f32> {
        if self.stride == self.cols {
            return self.data[..self.rows * self.cols].to_vec();
        }
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for row in self.data.chunks_exact(self.stride).take(self.rows) {
            out.extend_from_slice(&row[..self.cols]);
        }
        out
    }
}

/// The instruction set a kernel runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    Avx512,
    Avx2,
    Portable,
}

impl Isa {
    /// The best instruction set this CPU supports.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    /// Every instruction set this CPU can run (for tests comparing them).
    #[cfg(test)]
    pub fn available() -> Vec<Isa> {
        let mut out = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                out.push(Isa::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                out.push(Isa::Avx512);
            }
        }
        out
    }
}

/// A vector of `N` f32 lanes with the operations the kernels use. The methods are `unsafe`:
/// an implementation may only be used in code compiled for, and running on, a CPU with its
/// instruction set (the `#[target_feature]` entry points below, entered after detection).
trait Vf32: Copy {
    const N: usize;
    unsafe fn zero() -> Self;
    unsafe fn splat(v: f32) -> Self;
    /// The first `N` values of `s` (`s.len() >= N`).
    unsafe fn load(s: &[f32]) -> Self;
    /// Writes the lanes into the first `N` values of `s` (`s.len() >= N`).
    unsafe fn store(self, s: &mut [f32]);
    /// `a·b + c`.
    unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self;
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Vf32;
    use std::arch::x86_64::*;

    #[derive(Clone, Copy)]
    pub(super) struct Avx512(__m512);

    impl Vf32 for Avx512 {
        const N: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> Self {
            Avx512(_mm512_setzero_ps())
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            Avx512(_mm512_set1_ps(v))
        }
        #[inline(always)]
        unsafe fn load(s: &[f32]) -> Self {
            debug_assert!(s.len() >= Self::N);
            Avx512(_mm512_loadu_ps(s.as_ptr()))
        }
        #[inline(always)]
        unsafe fn store(self, s: &mut [f32]) {
            debug_assert!(s.len() >= Self::N);
            _mm512_storeu_ps(s.as_mut_ptr(), self.0)
        }
        #[inline(always)]
        unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self {
            Avx512(_mm512_fmadd_ps(a.0, b.0, c.0))
        }
    }

    #[derive(Clone, Copy)]
    pub(super) struct Avx2(__m256);

    impl Vf32 for Avx2 {
        const N: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> Self {
            Avx2(_mm256_setzero_ps())
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            Avx2(_mm256_set1_ps(v))
        }
        #[inline(always)]
        unsafe fn load(s: &[f32]) -> Self {
            debug_assert!(s.len() >= Self::N);
            Avx2(_mm256_loadu_ps(s.as_ptr()))
        }
        #[inline(always)]
        unsafe fn store(self, s: &mut [f32]) {
            debug_assert!(s.len() >= Self::N);
            _mm256_storeu_ps(s.as_mut_ptr(), self.0)
        }
        #[inline(always)]
        unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self {
            Avx2(_mm256_fmadd_ps(a.0, b.0, c.0))
        }
    }
}

/// Plain arrays: any CPU. `a·b + c` with two roundings (a software fused multiply-add would
/// cost more than the whole kernel is worth).
#[derive(Clone, Copy)]
struct Portable([f32; 8]);

impl Vf32 for Portable {
    const N: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> Self {
        Portable([0.0; 8])
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        Portable([v; 8])
    }
    #[inline(always)]
    unsafe fn load(s: &[f32]) -> Self {
        let mut v = [0.0; 8];
        v.copy_from_slice(&s[..8]);
        Portable(v)
    }
    #[inline(always)]
    unsafe fn store(self, s: &mut [f32]) {
        s[..8].copy_from_slice(&self.0)
    }
    #[inline(always)]
    unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self {
        let mut out = c.0;
        for ((o, x), y) in out.iter_mut().zip(a.0).zip(b.0) {
            *o += x * y;
        }
        Portable(out)
    }
}

/// Runs `$kernel::<Vector, consts…>(args)` for `$isa`: one `#[target_feature]` entry point per
/// instruction set, each entered only when that instruction set was detected.
macro_rules! dispatch {
    ($isa:expr, $kernel:ident, avx512: [$($c512:tt)*], avx2: [$($c2:tt)*], portable: [$($cp:tt)*],
     ($($arg:ident: $ty:ty),*)) => {{
        match $isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn entry($($arg: $ty),*) {
                    $kernel::<x86::Avx512, $($c512)*>($($arg),*)
                }
                // SAFETY: `Isa::Avx512` is only produced after `avx512f` was detected.
                unsafe { entry($($arg),*) }
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn entry($($arg: $ty),*) {
                    $kernel::<x86::Avx2, $($c2)*>($($arg),*)
                }
                // SAFETY: `Isa::Avx2` is only produced after `avx2` and `fma` were detected.
                unsafe { entry($($arg),*) }
            }
            _ => {
                // SAFETY: `Portable` is plain Rust, valid on every CPU.
                unsafe { $kernel::<Portable, $($cp)*>($($arg),*) }
            }
        }
    }};
}

// ------------------------------------------------------------------------------------------
// Gram of the columns: G = Xᵀ·X for a row-major m × r matrix X (an `up` factor).

/// `Xᵀ·X` (`cols × cols`, row-major f64) of the logical columns of `x`.
pub(crate) fn gram_cols(x: &PaddedMatrix, isa: Isa) -> Vec<f64> {
    let rp = x.stride;
    let mut g = vec![0.0f64; rp * rp];
    let data = &x.data[..x.rows * rp];
    let out = g.as_mut_slice();
    dispatch!(isa, gram_cols_kernel, avx512: [16, 1], avx2: [4, 2], portable: [4, 2],
        (data: &[f32], rp: usize, out: &mut [f64]));
    crop_symmetric(g, rp, x.cols)
}

/// Tiles of `I` rows × `JV` vectors of columns of G over its upper triangle; each tile streams
/// every row of X, accumulating in registers over [`F32_BLOCK`] rows, then in f64.
#[inline(always)]
unsafe fn gram_cols_kernel<V: Vf32, const I: usize, const JV: usize>(
    x: &[f32],
    rp: usize,
    g: &mut [f64],
) {
    let j_width = JV * V::N;
    let mut tile = vec![0f64; I * j_width];
    let mut lanes = [0f32; 16];
    for i0 in (0..rp).step_by(I) {
        for j0 in (0..rp).step_by(j_width) {
            if j0 + j_width <= i0 {
                continue;
            }
            tile.iter_mut().for_each(|t| *t = 0.0);
            for block in x.chunks(F32_BLOCK * rp) {
                let mut acc = [[V::zero(); JV]; I];
                for row in block.chunks_exact(rp) {
                    let mut v = [V::zero(); JV];
                    for (t, vt) in v.iter_mut().enumerate() {
                        let at = j0 + t * V::N;
                        *vt = V::load(&row[at..at + V::N]);
                    }
                    let b = &row[i0..i0 + I];
                    for i in 0..I {
                        let bi = V::splat(b[i]);
                        for t in 0..JV {
                            acc[i][t] = V::fmadd(bi, v[t], acc[i][t]);
                        }
                    }
                }
                for i in 0..I {
                    for t in 0..JV {
                        acc[i][t].store(&mut lanes[..V::N]);
                        let dst = &mut tile[i * j_width + t * V::N..i * j_width + (t + 1) * V::N];
                        for (d, &l) in dst.iter_mut().zip(&lanes[..V::N]) {
                            *d += f64::from(l);
                        }
                    }
                }
            }
            for i in 0..I {
                let at = (i0 + i) * rp + j0;
                g[at..at + j_width].copy_from_slice(&tile[i * j_width..(i + 1) * j_width]);
            }
        }
    }
}

/// The leading `n × n` block of the `rp × rp` matrix `g`, with the lower triangle taken from
/// the upper one (the kernels compute the upper triangle; the diagonal tiles hold both).
fn crop_symmetric(g: Vec<f64>, rp: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0.0f64; n * n];
    for i in 0..n {
        for j in i..n {
            let v = g[i * rp + j];
            out[i * n + j] = v;
            out[j * n + i] = v;
        }
    }
    out
}

// ------------------------------------------------------------------------------------------
// Gram of the rows: G = X·Xᵀ for a row-major r × n matrix X (a `down` factor).

/// `X·Xᵀ` (`rows × rows`, row-major f64) of the logical rows of `x`. `x` must store a multiple
/// of 4 rows (zero rows beyond `rows`, see [`PaddedMatrix::for_gram_rows`]).
pub(crate) fn gram_rows(x: &PaddedMatrix, isa: Isa) -> Vec<f64> {
    let np = x.stride;
    let rows = x.stored_rows();
    debug_assert_eq!(rows % 4, 0);
    let mut g = vec![0.0f64; rows * rows];
    let data = x.data.as_slice();
    let out = g.as_mut_slice();
    dispatch!(isa, gram_rows_kernel, avx512: [4, 4], avx2: [2, 4], portable: [2, 2],
        (data: &[f32], rows: usize, np: usize, out: &mut [f64]));
    crop_symmetric(g, rows, x.rows)
}

/// Tiles of `I × J` rows over the upper triangle: `I·J` vectors of partial dot products, summed
/// in f32 over [`F32_BLOCK`] vectors of each row, then across lanes and blocks in f64.
#[inline(always)]
unsafe fn gram_rows_kernel<V: Vf32, const I: usize, const J: usize>(
    x: &[f32],
    rows: usize,
    np: usize,
    g: &mut [f64],
) {
    let chunk = F32_BLOCK * V::N;
    let mut lanes = [0f32; 16];
    for i0 in (0..rows).step_by(I) {
        for j0 in (0..rows).step_by(J) {
            if j0 + J <= i0 {
                continue;
            }
            let mut tile = [[0f64; J]; I];
            for c0 in (0..np).step_by(chunk) {
                let c1 = (c0 + chunk).min(np);
                let mut acc = [[V::zero(); J]; I];
                for c in (c0..c1).step_by(V::N) {
                    let mut a = [V::zero(); I];
                    for (i, ai) in a.iter_mut().enumerate() {
                        let at = (i0 + i) * np + c;
                        *ai = V::load(&x[at..at + V::N]);
                    }
                    let mut b = [V::zero(); J];
                    for (j, bj) in b.iter_mut().enumerate() {
                        let at = (j0 + j) * np + c;
                        *bj = V::load(&x[at..at + V::N]);
                    }
                    for i in 0..I {
                        for j in 0..J {
                            acc[i][j] = V::fmadd(a[i], b[j], acc[i][j]);
                        }
                    }
                }
                for i in 0..I {
                    for j in 0..J {
                        acc[i][j].store(&mut lanes[..V::N]);
                        tile[i][j] += lanes[..V::N].iter().map(|&l| f64::from(l)).sum::<f64>();
                    }
                }
            }
            for (i, row) in tile.iter().enumerate() {
                let at = (i0 + i) * rows + j0;
                g[at..at + J].copy_from_slice(row);
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Products with small matrices.

/// `X·P` for `x` (`m × r`, padded) and a small row-major `p` (`r × k`): an `m × k` padded
/// matrix (the left singular vectors from an `up` factor).
pub(crate) fn mul_cols(x: &PaddedMatrix, p: &[f32], k: usize, isa: Isa) -> PaddedMatrix {
    let (m, r, rp) = (x.rows, x.cols, x.stride);
    let mut out = PaddedMatrix::zeros(m, m, k);
    let kp = out.stride;
    // p padded to rp × kp so the kernel needs no bounds of its own
    let mut pp = vec![0f32; rp * kp];
    for (j, row) in p.chunks_exact(k.max(1)).take(r).enumerate() {
        pp[j * kp..j * kp + k].copy_from_slice(row);
    }
    let xs = &x.data[..m * rp];
    let pp = pp.as_slice();
    let o = out.data.as_mut_slice();
    dispatch!(isa, mul_cols_kernel, avx512: [8], avx2: [8], portable: [4],
        (xs: &[f32], rp: usize, pp: &[f32], kp: usize, o: &mut [f32]));
    out
}

/// `Q` rows of X at a time against one vector-wide column block of P (a remainder of rows runs
/// one at a time).
#[inline(always)]
unsafe fn mul_cols_kernel<V: Vf32, const Q: usize>(
    x: &[f32],
    rp: usize,
    p: &[f32],
    kp: usize,
    out: &mut [f32],
) {
    let m = x.len() / rp;
    let full = m - m % Q;
    mul_cols_rows::<V, Q>(x, 0, full, rp, p, kp, out);
    mul_cols_rows::<V, 1>(x, full, m, rp, p, kp, out);
}

#[inline(always)]
unsafe fn mul_cols_rows<V: Vf32, const Q: usize>(
    x: &[f32],
    from: usize,
    to: usize,
    rp: usize,
    p: &[f32],
    kp: usize,
    out: &mut [f32],
) {
    for c0 in (0..kp).step_by(V::N) {
        for i in (from..to).step_by(Q) {
            let mut acc = [V::zero(); Q];
            let rows = &x[i * rp..(i + Q) * rp];
            for j in 0..rp {
                let pv = V::load(&p[j * kp + c0..j * kp + c0 + V::N]);
                for (t, a) in acc.iter_mut().enumerate() {
                    *a = V::fmadd(V::splat(rows[t * rp + j]), pv, *a);
                }
            }
            for (t, a) in acc.iter().enumerate() {
                let at = (i + t) * kp + c0;
                a.store(&mut out[at..at + V::N]);
            }
        }
    }
}

/// `Yᵀ·X` for a small row-major `y` (`r × k`) and `x` (`r × n`, padded): a `k × n` padded
/// matrix (the right singular vectors, transposed, from a `down` factor).
pub(crate) fn mul_rows(y: &[f32], k: usize, x: &PaddedMatrix, isa: Isa) -> PaddedMatrix {
    let (r, n, np) = (x.rows, x.cols, x.stride);
    // output rows padded to a multiple of 8 so the kernel always fills whole row blocks
    let kq = k.div_ceil(8) * 8;
    let mut out = PaddedMatrix::zeros(k, kq, n);
    // y transposed and padded: yt[l][i] = y[i][l], kq × r
    let mut yt = vec![0f32; kq * r];
    for (i, row) in y.chunks_exact(k.max(1)).take(r).enumerate() {
        for (l, &v) in row.iter().enumerate() {
            yt[l * r + i] = v;
        }
    }
    let xs = &x.data[..r * np];
    let yt = yt.as_slice();
    let o = out.data.as_mut_slice();
    dispatch!(isa, mul_rows_kernel, avx512: [8, 2], avx2: [4, 2], portable: [4, 1],
        (yt: &[f32], r: usize, xs: &[f32], np: usize, o: &mut [f32]));
    out
}

/// `Q` output rows × `JV` vectors of columns at a time, streaming the rows of X (a last
/// partial group of columns one vector at a time).
#[inline(always)]
unsafe fn mul_rows_kernel<V: Vf32, const Q: usize, const JV: usize>(
    yt: &[f32],
    r: usize,
    x: &[f32],
    np: usize,
    out: &mut [f32],
) {
    let kq = yt.len() / r.max(1);
    let width = JV * V::N;
    let wide = np - np % width;
    for l0 in (0..kq).step_by(Q) {
        let w = &yt[l0 * r..(l0 + Q) * r];
        for c0 in (0..wide).step_by(width) {
            let mut acc = [[V::zero(); JV]; Q];
            for i in 0..r {
                let mut xv = [V::zero(); JV];
                for (j, v) in xv.iter_mut().enumerate() {
                    let at = i * np + c0 + j * V::N;
                    *v = V::load(&x[at..at + V::N]);
                }
                for t in 0..Q {
                    let s = V::splat(w[t * r + i]);
                    for j in 0..JV {
                        acc[t][j] = V::fmadd(s, xv[j], acc[t][j]);
                    }
                }
            }
            for t in 0..Q {
                for j in 0..JV {
                    let at = (l0 + t) * np + c0 + j * V::N;
                    acc[t][j].store(&mut out[at..at + V::N]);
                }
            }
        }
        for c0 in (wide..np).step_by(V::N) {
            let mut acc = [V::zero(); Q];
            for i in 0..r {
                let xv = V::load(&x[i * np + c0..i * np + c0 + V::N]);
                for (t, a) in acc.iter_mut().enumerate() {
                    *a = V::fmadd(V::splat(w[t * r + i]), xv, *a);
                }
            }
            for (t, a) in acc.iter().enumerate() {
                let at = (l0 + t) * np + c0;
                a.store(&mut out[at..at + V::N]);
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Rank-r updates of a dense matrix.

/// `w += c·U·V` for a row-major `w` (`rows × cols`), `u` (`rows × r`) and `v` (`r × cols`),
/// rows in parallel. Each element accumulates its `r` products in order with fused
/// multiply-adds (two roundings each on CPUs without FMA).
pub fn add_low_rank(w: &mut [f32], cols: usize, c: f32, u: &[f32], v: &[f32], r: usize) {
    use rayon::prelude::*;
    if cols == 0 || r == 0 {
        return;
    }
    let rows = w.len() / cols;
    assert!(
        u.len() >= rows * r && v.len() >= r * cols,
        "add_low_rank: factor sizes"
    );
    let isa = Isa::detect();
    // blocks of rows big enough to amortise a task, small enough to balance two cores
    let block = (1 << 16) / cols.max(1) + 1;
    w.par_chunks_mut(block * cols)
        .enumerate()
        .for_each(|(b, wb)| {
            let ub = &u[b * block * r..];
            dispatch!(isa, add_low_rank_kernel, avx512: [4, 2], avx2: [2, 2], portable: [2, 1],
                (wb: &mut [f32], cols: usize, c: f32, ub: &[f32], v: &[f32], r: usize));
        });
}

/// `Q` rows × `JV` vectors of columns at a time: the block of `w` stays in registers while the
/// `r` rows of V stream past; a partial vector at the end of each row goes through a padded
/// copy.
#[inline(always)]
unsafe fn add_low_rank_kernel<V: Vf32, const Q: usize, const JV: usize>(
    w: &mut [f32],
    cols: usize,
    c: f32,
    u: &[f32],
    v: &[f32],
    r: usize,
) {
    let rows = w.len() / cols;
    let width = JV * V::N;
    let full_cols = cols - cols % width;
    let mut i = 0;
    while i < rows {
        let q = Q.min(rows - i);
        let mut coef = [[0f32; Q]; 64];
        // c·u for these rows, k-major; ranks above 64 take several passes
        for k0 in (0..r).step_by(64) {
            let kn = (r - k0).min(64);
            for (k, row) in coef.iter_mut().enumerate().take(kn) {
                for t in 0..q {
                    row[t] = c * u[(i + t) * r + k0 + k];
                }
            }
            let mut c0 = 0;
            while c0 < full_cols {
                let mut acc = [[V::zero(); JV]; Q];
                for t in 0..q {
                    for j in 0..JV {
                        let at = (i + t) * cols + c0 + j * V::N;
                        acc[t][j] = V::load(&w[at..at + V::N]);
                    }
                }
                for (k, ck) in coef.iter().enumerate().take(kn) {
                    let mut vk = [V::zero(); JV];
                    for (j, x) in vk.iter_mut().enumerate() {
                        let at = (k0 + k) * cols + c0 + j * V::N;
                        *x = V::load(&v[at..at + V::N]);
                    }
                    for t in 0..Q {
                        let s = V::splat(ck[t]);
                        for j in 0..JV {
                            acc[t][j] = V::fmadd(s, vk[j], acc[t][j]);
                        }
                    }
                }
                for t in 0..q {
                    for j in 0..JV {
                        let at = (i + t) * cols + c0 + j * V::N;
                        acc[t][j].store(&mut w[at..at + V::N]);
                    }
                }
                c0 += width;
            }
            // the last partial block of columns, one vector at a time through padded copies
            while c0 < cols {
                let n = (cols - c0).min(V::N);
                let mut pad = [0f32; 16];
                for t in 0..q {
                    let at = (i + t) * cols + c0;
                    pad[..n].copy_from_slice(&w[at..at + n]);
                    let mut acc = V::load(&pad[..V::N]);
                    let mut vpad = [0f32; 16];
                    for (k, ck) in coef.iter().enumerate().take(kn) {
                        let vat = (k0 + k) * cols + c0;
                        vpad[..n].copy_from_slice(&v[vat..vat + n]);
                        acc = V::fmadd(V::splat(ck[t]), V::load(&vpad[..V::N]), acc);
                    }
                    acc.store(&mut pad[..V::N]);
                    w[at..at + n].copy_from_slice(&pad[..n]);
                }
                c0 += n;
            }
        }
        i += q;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    fn padded_cols(data: &[f32], rows: usize, cols: usize) -> PaddedMatrix {
        let mut p = PaddedMatrix::for_gram_cols(rows, cols);
        for (i, row) in data.chunks_exact(cols).enumerate() {
            p.row_mut(i).copy_from_slice(row);
        }
        p
    }

    fn padded_rows(data: &[f32], rows: usize, cols: usize) -> PaddedMatrix {
        let mut p = PaddedMatrix::for_gram_rows(rows, cols);
        for (i, row) in data.chunks_exact(cols).enumerate() {
            p.row_mut(i).copy_from_slice(row);
        }
        p
    }

    /// Shapes with every kind of padding: ranks below, at and across the vector width, row
    /// counts that are not multiples of the row blocks, lengths across f32 block boundaries.
    const SHAPES: [(usize, usize); 7] = [
        (1, 1),
        (7, 3),
        (33, 16),
        (100, 17),
        (1000, 32),
        (77, 48),
        (130, 96),
    ];

    #[test]
    fn gram_kernels_match_f64_dot_products_on_every_instruction_set() {
        for isa in Isa::available() {
            for (seed, &(m, r)) in SHAPES.iter().enumerate() {
                let x = values(m * r, seed as u64);
                let g = gram_cols(&padded_cols(&x, m, r), isa);
                // the same matrix transposed, r × m, through the row kernel
                let mut xt = vec![0f32; r * m];
                for i in 0..m {
                    for j in 0..r {
                        xt[j * m + i] = x[i * r + j];
                    }
                }
                let h = gram_rows(&padded_rows(&xt, r, m), isa);
                for i in 0..r {
                    for j in 0..r {
                        let (mut want, mut scale) = (0f64, 0f64);
                        for k in 0..m {
                            let p = f64::from(x[k * r + i]) * f64::from(x[k * r + j]);
                            want += p;
                            scale += p.abs();
                        }
                        for (what, got) in [("cols", g[i * r + j]), ("rows", h[i * r + j])] {
                            assert!(
                                (got - want).abs() <= 1e-6 * scale.max(1e-30),
                                "{isa:?} {what} m={m} r={r} ({i},{j}): {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn small_products_match_f64_products_on_every_instruction_set() {
        for isa in Isa::available() {
            for (seed, &(m, r)) in SHAPES.iter().enumerate() {
                for k in [1, 5, 8, 16, 19] {
                    let x = values(m * r, seed as u64);
                    let p = values(r * k, 100 + seed as u64);
                    let u = mul_cols(&padded_cols(&x, m, r), &p, k, isa);
                    assert_eq!((u.rows, u.cols), (m, k));
                    // X as r × m rows: Pᵀ·X is k × m
                    let mut xt = vec![0f32; r * m];
                    for i in 0..m {
                        for j in 0..r {
                            xt[j * m + i] = x[i * r + j];
                        }
                    }
                    let vt = mul_rows(&p, k, &padded_rows(&xt, r, m), isa);
                    assert_eq!((vt.rows, vt.cols), (k, m));
                    let (u, vt) = (u.to_dense(), vt.to_dense());
                    for i in 0..m {
                        for l in 0..k {
                            let want: f64 = (0..r)
                                .map(|j| f64::from(x[i * r + j]) * f64::from(p[j * k + l]))
                                .sum();
                            let scale: f64 = (0..r)
                                .map(|j| (f64::from(x[i * r + j]) * f64::from(p[j * k + l])).abs())
                                .sum();
                            let tol = 1e-6 * scale.max(1e-30);
                            assert!((f64::from(u[i * k + l]) - want).abs() <= tol, "{isa:?} U");
                            assert!((f64::from(vt[l * m + i]) - want).abs() <= tol, "{isa:?} Vt");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn low_rank_update_matches_an_f64_product_on_every_instruction_set() {
        for isa in Isa::available() {
            for (seed, &(rows, cols)) in [(1, 1), (3, 7), (5, 16), (9, 33), (64, 100), (2, 500)]
                .iter()
                .enumerate()
            {
                for r in [1, 4, 16, 70] {
                    let w0 = values(rows * cols, seed as u64);
                    let u = values(rows * r, 7 + seed as u64);
                    let v = values(r * cols, 9 + seed as u64);
                    let c = -0.75f32;
                    let mut w = w0.clone();
                    let (wb, ub, vb) = (w.as_mut_slice(), u.as_slice(), v.as_slice());
                    dispatch!(isa, add_low_rank_kernel, avx512: [4, 2], avx2: [2, 2], portable: [2, 1],
                        (wb: &mut [f32], cols: usize, c: f32, ub: &[f32], vb: &[f32], r: usize));
                    let mut public = w0.clone();
                    add_low_rank(&mut public, cols, c, &u, &v, r);
                    for i in 0..rows {
                        for j in 0..cols {
                            let terms: Vec<f64> = (0..r)
                                .map(|k| f64::from(c * u[i * r + k]) * f64::from(v[k * cols + j]))
                                .collect();
                            let want = f64::from(w0[i * cols + j]) + terms.iter().sum::<f64>();
                            let scale = f64::from(w0[i * cols + j]).abs()
                                + terms.iter().map(|t| t.abs()).sum::<f64>();
                            let tol = 1e-6 * scale.max(1e-30);
                            for got in [w[i * cols + j], public[i * cols + j]] {
                                assert!(
                                    (f64::from(got) - want).abs() <= tol,
                                    "{isa:?} {rows}x{cols} r={r} ({i},{j}): {got} vs {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
