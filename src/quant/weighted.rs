//! The quantizers `llama-quantize --imatrix` runs: ggml's `quantize_row_*_impl` with
//! `quant_weights`, one row at a time with the importance weights of that row's columns.
//!
//! Owns the per-type weighted scale searches (Q4_0/Q4_1/Q5_0/Q5_1 and Q2_K..Q6_K); the block
//! layouts, the re-quantization against the stored scales and the packing are shared with the
//! unweighted encoders of each type. Q8_0 and the float types have no weighted variant in ggml
//! (`quantize_q8_0` ignores the weights).
//!
//! Speed: the per-block searches run in SIMD lanes across blocks ([`super::lanes`]), as the
//! reference encoders do; the scalar transcriptions of the C functions stay as the tests'
//! oracle (`reference`).
//!
//! Weights: ggml multiplies each importance value by `sqrt(sigma2 + x^2)`, where `sigma2` is the
//! mean square of the row (Q4_0..Q5_1), of the super-block (Q2_K) or twice it (Q3_K..Q5_K);
//! Q6_K uses the importance values as they are. Same evaluation order as the C code, as
//! everywhere in `quant`.

use super::k_quants::{make_qp_quants, make_qx_quants, pack_k4, Qkx2};
use super::lanes::{self, gather, qkx_quants, qkx_search, qx_quants, qx_search, Block, F};
use super::q4::{Q4_0_BYTES, Q4_1_BYTES};
use super::q5::{Q5_0_BYTES, Q5_1_BYTES};
use super::{q2_k, q3_k, q4_k, q5_k, q6_k, write_f16, QuantType, QK_K};

/// `make_qkx3_quants` as the weighted quantizers call it: identical to `make_qkx2_quants` with
/// given weights (the `max <= min` test equals `max == min` once `min` is clamped to <= 0),
/// with a finer and longer scale search.
const fn qkx3(nmax: i32) -> Qkx2 {
    Qkx2 {
        nmax,
        rmin: -0.9,
        rdelta: 0.05,
        nstep: 36,
        use_mad: false,
    }
}

/// Encodes one row `x` with importance weights `qw` (one per column) into `y`; lengths checked
/// by the caller. Types without a weighted variant use the unweighted encoder.
pub(super) fn quantize_row(ty: QuantType, x: &[f32], qw: &[f32], y: &mut [u8]) {
    match ty {
        QuantType::Q4_0 => q4_0(x, qw, y),
        QuantType::Q4_1 => q4_1(x, qw, y),
        QuantType::Q5_0 => q5_0(x, qw, y),
        QuantType::Q5_1 => q5_1(x, qw, y),
        QuantType::Q2_K => q2_k(x, qw, y),
        QuantType::Q3_K => q3_k(x, qw, y),
        QuantType::Q4_K => q4_k(x, qw, y),
        QuantType::Q5_K => q5_k(x, qw, y),
        QuantType::Q6_K => q6_k(x, qw, y),
        QuantType::F32 | QuantType::F16 | QuantType::BF16 | QuantType::Q8_0 => {
            super::encode(ty, x, y)
        }
    }
}

lanes::multiversion!(fn q4_0, q4_0_with => q4_0_lanes(x: &[f32], qw: &[f32], y: &mut [u8]));
lanes::multiversion!(fn q5_0, q5_0_with => q5_0_lanes(x: &[f32], qw: &[f32], y: &mut [u8]));
lanes::multiversion!(fn q4_1, q4_1_with => q4_1_lanes(x: &[f32], qw: &[f32], y: &mut [u8]));
lanes::multiversion!(fn q5_1, q5_1_with => q5_1_lanes(x: &[f32], qw: &[f32], y: &mut [u8]));
lanes::multiversion!(fn q2_k, q2_k_with => q2_k_lanes(x: &[f32], qw: &[f32], y: &mut [u8]));
lanes::multiversion!(fn q3_k, q3_k_with => q3_k_lanes(x: &[f32], qw: &[f32], y: &mut [u8]));
lanes::multiversion!(fn q4_k, q4_k_with => q4_k_lanes(x: &[f32], qw: &[f32], y: &mut [u8]));
lanes::multiversion!(fn q5_k, q5_k_with => q5_k_lanes(x: &[f32], qw: &[f32], y: &mut [u8]));
lanes::multiversion!(fn q6_k, q6_k_with => q6_k_lanes(x: &[f32], qw: &[f32], y: &mut [u8]));

/// Mean square of `x`, summed left to right and divided by its length as ggml does.
fn mean_square(x: &[f32]) -> f32 {
    let mut sum_x2 = 0.0f32;
    for &v in x {
        sum_x2 += v * v;
    }
    sum_x2 / x.len() as f32
}

/// `2*sum_x2/QK_K` of Q3_K..Q5_K.
fn twice_mean_square(x: &[f32]) -> f32 {
    let mut sum_x2 = 0.0f32;
    for &v in x {
        sum_x2 += v * v;
    }
    2.0 * sum_x2 / QK_K as f32
}

/// `weight[i] = qw[i] * sqrtf(sigma2 + x[i]*x[i])` in every lane.
#[inline(always)]
fn lane_weights<const N: usize, const S: usize>(
    x: &Block<N, S>,
    qw: &Block<N, S>,
    sigma2: F<N>,
) -> Block<N, S> {
    let mut w = [F::splat(0.0); S];
    for i in 0..S {
        w[i] = qw[i] * (sigma2 + x[i] * x[i]).sqrt();
    }
    w
}

/// The weights of each lane summed left to right from 0, as ggml sums them.
#[inline(always)]
fn lane_sum<const N: usize, const S: usize>(w: &Block<N, S>) -> F<N> {
    let mut s = F::splat(0.0);
    for v in w {
        s = s + *v;
    }
    s
}

/// `quantize_row_q4_0_impl` / `quantize_row_q5_0_impl`: `make_qx_quants(32, nmax, weights)`
/// per block, N blocks of the row at a time.
#[inline(always)]
fn qx_0_lanes<const N: usize>(x: &[f32], qw: &[f32], y: &mut [u8], nmax: i32, bytes: usize) {
    let sigma2 = F::splat(mean_square(x));
    let mut l = [0i8; 32];
    for ((xs, qs), ys) in x
        .chunks(32 * N)
        .zip(qw.chunks(32 * N))
        .zip(y.chunks_mut(bytes * N))
    {
        let xv: Block<N, 32> = gather(xs);
        let w = lane_weights(&xv, &gather(qs), sigma2);
        let r = qx_search(&xv, &w, nmax);
        for (k, (xb, yb)) in xs
            .chunks_exact(32)
            .zip(ys.chunks_exact_mut(bytes))
            .enumerate()
        {
            qx_quants(&r, k, xb, nmax, &mut l);
            write_f16(yb, r.scale.0[k]);
            if nmax == 8 {
                for j in 0..16 {
                    yb[2 + j] = (l[j] as u8) | ((l[j + 16] as u8) << 4);
                }
            } else {
                pack_5bit(&l.map(|v| v as u8), &mut yb[2..]);
            }
        }
    }
}

#[inline(always)]
fn q4_0_lanes<const N: usize>(x: &[f32], qw: &[f32], y: &mut [u8]) {
    qx_0_lanes::<N>(x, qw, y, 8, Q4_0_BYTES)
}

#[inline(always)]
fn q5_0_lanes<const N: usize>(x: &[f32], qw: &[f32], y: &mut [u8]) {
    qx_0_lanes::<N>(x, qw, y, 16, Q5_0_BYTES)
}

/// `quantize_row_q4_1_impl` (`nmax` 15) / `quantize_row_q5_1_impl` (31):
/// `make_qkx3_quants(32, nmax, weights)` per block, `d` and `m = -min` stored; N blocks at a
/// time.
#[inline(always)]
fn qx_1_lanes<const N: usize>(x: &[f32], qw: &[f32], y: &mut [u8], nmax: i32, bytes: usize) {
    let sigma2 = F::splat(mean_square(x));
    let p = qkx3(nmax);
    let mut l = [0u8; 32];
    for ((xs, qs), ys) in x
        .chunks(32 * N)
        .zip(qw.chunks(32 * N))
        .zip(y.chunks_mut(bytes * N))
    {
        let xv: Block<N, 32> = gather(xs);
        let w = lane_weights(&xv, &gather(qs), sigma2);
        let r = qkx_search(&xv, &w, p.nmax, p.rmin, p.rdelta, p.nstep, p.use_mad);
        for (k, (xb, yb)) in xs
            .chunks_exact(32)
            .zip(ys.chunks_exact_mut(bytes))
            .enumerate()
        {
            qkx_quants(&r, k, xb, nmax, &mut l);
            write_qx_1(yb, r.scale.0[k], r.the_min.0[k], &l, nmax);
        }
    }
}

/// Q4_1/Q5_1 block bytes from the search result: `d`, `m = -the_min`, the quants.
#[inline(always)]
fn write_qx_1(yb: &mut [u8], d: f32, the_min: f32, l: &[u8; 32], nmax: i32) {
    write_f16(&mut yb[0..2], d);
    write_f16(&mut yb[2..4], -the_min);
    if nmax == 15 {
        for j in 0..16 {
            yb[4 + j] = l[j] | (l[j + 16] << 4);
        }
    } else {
        pack_5bit(l, &mut yb[4..]);
    }
}

#[inline(always)]
fn q4_1_lanes<const N: usize>(x: &[f32], qw: &[f32], y: &mut [u8]) {
    qx_1_lanes::<N>(x, qw, y, 15, Q4_1_BYTES)
}

#[inline(always)]
fn q5_1_lanes<const N: usize>(x: &[f32], qw: &[f32], y: &mut [u8]) {
    qx_1_lanes::<N>(x, qw, y, 31, Q5_1_BYTES)
}

/// Q5_0/Q5_1 packing: 4 bytes of high bits (bit j = value j, bit j+16 = value j+16) then 16
/// bytes of nibble pairs.
#[inline(always)]
fn pack_5bit(l: &[u8; 32], out: &mut [u8]) {
    let mut qh = 0u32;
    for j in 0..16 {
        let (xi0, xi1) = (l[j], l[j + 16]);
        out[4 + j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
        qh |= u32::from((xi0 & 0x10) >> 4) << j;
        qh |= u32::from((xi1 & 0x10) >> 4) << (j + 16);
    }
    out[..4].copy_from_slice(&qh.to_le_bytes());
}

/// `quantize_row_q2_K_impl`: per 16-value sub-block `make_qkx3_quants(16, 3)` with
/// `qw * sqrt(sigma2 + x^2)` weights (`sigma2` the super-block's mean square), the 16
/// sub-blocks of a super-block in lanes.
#[inline(always)]
fn q2_k_lanes<const N: usize>(x: &[f32], qw: &[f32], y: &mut [u8]) {
    let p = qkx3(3);
    let mut l = [0u8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    let mut mins = [0f32; QK_K / 16];
    let mut sw = [0f32; QK_K / 16];
    for ((xb, qb), yb) in x
        .chunks_exact(QK_K)
        .zip(qw.chunks_exact(QK_K))
        .zip(y.chunks_exact_mut(q2_k::BYTES))
    {
        let sigma2 = F::splat(mean_square(xb));
        for g in 0..QK_K / 16 / N {
            let sub = 16 * N * g..16 * N * (g + 1);
            let xv: Block<N, 16> = gather(&xb[sub.clone()]);
            let w = lane_weights(&xv, &gather(&qb[sub]), sigma2);
            let sums = lane_sum(&w);
            let r = qkx_search(&xv, &w, p.nmax, p.rmin, p.rdelta, p.nstep, p.use_mad);
            for k in 0..N {
                let j = N * g + k;
                sw[j] = sums.0[k];
                scales[j] = r.scale.0[k];
                mins[j] = r.the_min.0[k];
                let s = 16 * j..16 * j + 16;
                qkx_quants(&r, k, &xb[s.clone()], p.nmax, &mut l[s]);
            }
        }
        q2_k_finish(xb, yb, &mut l, &scales, &mins, &sw);
    }
}

/// The end of `quantize_row_q2_K_impl`: 4-bit scales and mins by `make_qp_quants(16, 15)`
/// weighted by the sub-block weight sums, then re-quantization and packing.
#[inline(always)]
fn q2_k_finish(
    xb: &[f32],
    yb: &mut [u8],
    l: &mut [u8; QK_K],
    scales: &[f32; 16],
    mins: &[f32; 16],
    sw: &[f32; 16],
) {
    let mut ls = [0u8; QK_K / 16];
    let mut lm = [0u8; QK_K / 16];
    let dm = make_qp_quants(15, scales, &mut ls, sw);
    let mm = make_qp_quants(15, mins, &mut lm, sw);
    write_f16(&mut yb[80..82], dm);
    write_f16(&mut yb[82..84], mm);
    for j in 0..QK_K / 16 {
        yb[j] = ls[j] | (lm[j] << 4);
    }
    q2_k::requantize_and_pack(xb, yb, l);
}

/// `quantize_row_q3_K_impl`: per sub-block `make_qx_quants(16, 4)` with
/// `qw * sqrt(2*mean(x^2) + x^2)` weights, the 16 sub-blocks of a super-block in lanes.
#[inline(always)]
fn q3_k_lanes<const N: usize>(x: &[f32], qw: &[f32], y: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    let mut sw = [0f32; QK_K / 16];
    for ((xb, qb), yb) in x
        .chunks_exact(QK_K)
        .zip(qw.chunks_exact(QK_K))
        .zip(y.chunks_exact_mut(q3_k::BYTES))
    {
        let sigma2 = F::splat(twice_mean_square(xb));
        for g in 0..QK_K / 16 / N {
            let sub = 16 * N * g..16 * N * (g + 1);
            let xv: Block<N, 16> = gather(&xb[sub.clone()]);
            let w = lane_weights(&xv, &gather(&qb[sub]), sigma2);
            let sums = lane_sum(&w);
            let r = qx_search(&xv, &w, 4);
            for k in 0..N {
                let j = N * g + k;
                sw[j] = sums.0[k];
                scales[j] = r.scale.0[k];
                let s = 16 * j..16 * j + 16;
                qx_quants(&r, k, &xb[s.clone()], 4, &mut l[s]);
            }
        }
        q3_k_finish(xb, yb, &mut l, &scales, &sw);
    }
}

/// The end of `quantize_row_q3_K_impl`: the 6-bit scales by `make_qx_quants(16, 32)`
/// weighted by the sub-block weight sums, then re-quantization and packing.
#[inline(always)]
fn q3_k_finish(xb: &[f32], yb: &mut [u8], l: &mut [i8; QK_K], scales: &[f32; 16], sw: &[f32; 16]) {
    let mut ls = [0i8; QK_K / 16];
    let (sc, dd) = yb[QK_K / 8 + QK_K / 4..].split_at_mut(12);
    sc.fill(0);
    let d_block = make_qx_quants(32, scales, Some(sw), &mut ls);
    for (j, &q) in ls.iter().enumerate() {
        let q = q as u8;
        if j < 8 {
            sc[j] = q & 0x0F;
        } else {
            sc[j - 8] |= (q & 0x0F) << 4;
        }
        sc[j % 4 + 8] |= (q >> 4) << (2 * (j / 4));
    }
    write_f16(dd, d_block);
    q3_k::requantize_and_pack(xb, yb, l);
}

/// `quantize_row_q4_K_impl` (`nmax` 15) and `quantize_row_q5_K_impl` (31): per 32-value
/// sub-block `make_qkx3_quants(32, nmax)` with `qw * sqrt(2*mean(x^2) + x^2)` weights; N
/// sub-blocks (N/8 super-blocks of the row) in lanes.
#[inline(always)]
fn q45_k_lanes<const N: usize>(x: &[f32], qw: &[f32], y: &mut [u8], nmax: i32, bytes: usize) {
    let p = qkx3(nmax);
    let per_group = N / 8;
    let mut l = [0u8; QK_K];
    for ((xs, qs), ys) in x
        .chunks(QK_K * per_group)
        .zip(qw.chunks(QK_K * per_group))
        .zip(y.chunks_mut(bytes * per_group))
    {
        // sigma2 of the super-block each lane's sub-block belongs to
        let mut sig = [0f32; N];
        for (b, xb) in xs.chunks_exact(QK_K).enumerate() {
            sig[8 * b..8 * b + 8].fill(twice_mean_square(xb));
        }
        let xv: Block<N, 32> = gather(xs);
        let w = lane_weights(&xv, &gather(qs), F(sig));
        let sums = lane_sum(&w);
        let r = qkx_search(&xv, &w, p.nmax, p.rmin, p.rdelta, p.nstep, p.use_mad);
        for (b, (xb, yb)) in xs
            .chunks_exact(QK_K)
            .zip(ys.chunks_exact_mut(bytes))
            .enumerate()
        {
            let lane = 8 * b;
            let scales: [f32; 8] = std::array::from_fn(|j| r.scale.0[lane + j]);
            let mins: [f32; 8] = std::array::from_fn(|j| r.the_min.0[lane + j]);
            let sw: [f32; 8] = std::array::from_fn(|j| sums.0[lane + j]);
            for j in 0..8 {
                let s = 32 * j..32 * j + 32;
                qkx_quants(&r, lane + j, &xb[s.clone()], nmax, &mut l[s]);
            }
            q45_k_finish(xb, yb, &mut l, &scales, &mins, &sw, nmax);
        }
    }
}

/// The end of `quantize_row_q{4,5}_K_impl`: scales and mins by `make_qp_quants(8, 63)`
/// weighted by the sub-block weight sums, then re-quantization and packing.
#[inline(always)]
fn q45_k_finish(
    xb: &[f32],
    yb: &mut [u8],
    l: &mut [u8; QK_K],
    scales: &[f32; 8],
    mins: &[f32; 8],
    sw: &[f32; 8],
    nmax: i32,
) {
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    let d_block = make_qp_quants(63, scales, &mut ls, sw);
    let m_block = make_qp_quants(63, mins, &mut lm, sw);
    if nmax == 31 {
        // only quantize_row_q5_K_impl caps them (`ls = MIN(63, ls)`)
        ls = ls.map(|v| v.min(63));
        lm = lm.map(|v| v.min(63));
    }
    pack_k4(&ls, &lm, &mut yb[4..16]);
    write_f16(&mut yb[0..2], d_block);
    write_f16(&mut yb[2..4], m_block);
    q4_k::requantize_with_stored_scales(xb, &yb[..16], nmax, l);
    if nmax == 15 {
        q4_k::pack_nibbles(l, &mut yb[16..]);
    } else {
        q5_k::pack(l, &mut yb[16..]);
    }
}

#[inline(always)]
fn q4_k_lanes<const N: usize>(x: &[f32], qw: &[f32], y: &mut [u8]) {
    q45_k_lanes::<N>(x, qw, y, 15, q4_k::BYTES)
}

#[inline(always)]
fn q5_k_lanes<const N: usize>(x: &[f32], qw: &[f32], y: &mut [u8]) {
    q45_k_lanes::<N>(x, qw, y, 31, q5_k::BYTES)
}

/// `quantize_row_q6_K_impl`: the reference algorithm with the importance values themselves as
/// the weights of each sub-block's `make_qx_quants(16, 32)`.
#[inline(always)]
fn q6_k_lanes<const N: usize>(x: &[f32], qw: &[f32], y: &mut [u8]) {
    q6_k::quantize_lanes::<N>(x, Some(qw), y)
}

/// The scalar transcriptions of ggml's `quantize_row_*_impl`, the oracle the lane builds are
/// tested against.
#[cfg(test)]
pub(super) mod reference {
    use super::super::k_quants::make_qkx2_quants;
    use super::*;

    pub fn quantize_row(ty: QuantType, x: &[f32], qw: &[f32], y: &mut [u8]) {
        match ty {
            QuantType::Q4_0 => qx_0(x, qw, y, 8, Q4_0_BYTES),
            QuantType::Q4_1 => qx_1(x, qw, y, 15, Q4_1_BYTES),
            QuantType::Q5_0 => qx_0(x, qw, y, 16, Q5_0_BYTES),
            QuantType::Q5_1 => qx_1(x, qw, y, 31, Q5_1_BYTES),
            QuantType::Q2_K => q2_k(x, qw, y),
            QuantType::Q3_K => q3_k(x, qw, y),
            QuantType::Q4_K => q45_k(x, qw, y, 15, q4_k::BYTES),
            QuantType::Q5_K => q45_k(x, qw, y, 31, q5_k::BYTES),
            QuantType::Q6_K => q6_k(x, qw, y),
            _ => super::super::encode(ty, x, y),
        }
    }

    fn fill_weights(w: &mut [f32], qw: &[f32], x: &[f32], sigma2: f32) {
        for ((w, &q), &v) in w.iter_mut().zip(qw).zip(x) {
            *w = q * (sigma2 + v * v).sqrt();
        }
    }

    fn sum(w: &[f32]) -> f32 {
        let mut s = 0.0f32;
        for &v in w {
            s += v;
        }
        s
    }

    fn qx_0(x: &[f32], qw: &[f32], y: &mut [u8], nmax: i32, bytes: usize) {
        let sigma2 = mean_square(x);
        let mut weight = [0f32; 32];
        let mut l = [0i8; 32];
        for ((xb, qb), yb) in x
            .chunks_exact(32)
            .zip(qw.chunks_exact(32))
            .zip(y.chunks_exact_mut(bytes))
        {
            fill_weights(&mut weight, qb, xb, sigma2);
            let d = make_qx_quants(nmax, xb, Some(&weight), &mut l);
            write_f16(yb, d);
            if nmax == 8 {
                for j in 0..16 {
                    yb[2 + j] = (l[j] as u8) | ((l[j + 16] as u8) << 4);
                }
            } else {
                pack_5bit(&l.map(|v| v as u8), &mut yb[2..]);
            }
        }
    }

    fn qx_1(x: &[f32], qw: &[f32], y: &mut [u8], nmax: i32, bytes: usize) {
        let sigma2 = mean_square(x);
        let search = qkx3(nmax);
        let mut weight = [0f32; 32];
        let mut l = [0u8; 32];
        let mut laux = [0u8; 32];
        for ((xb, qb), yb) in x
            .chunks_exact(32)
            .zip(qw.chunks_exact(32))
            .zip(y.chunks_exact_mut(bytes))
        {
            fill_weights(&mut weight, qb, xb, sigma2);
            let (d, min) = make_qkx2_quants(&search, xb, &weight, &mut l, &mut laux);
            write_qx_1(yb, d, min, &l, nmax);
        }
    }

    fn q2_k(x: &[f32], qw: &[f32], y: &mut [u8]) {
        let search = qkx3(3);
        let mut l = [0u8; QK_K];
        let mut laux = [0u8; 16];
        let mut weight = [0f32; 16];
        let mut scales = [0f32; QK_K / 16];
        let mut mins = [0f32; QK_K / 16];
        let mut sw = [0f32; QK_K / 16];
        for ((xb, qb), yb) in x
            .chunks_exact(QK_K)
            .zip(qw.chunks_exact(QK_K))
            .zip(y.chunks_exact_mut(q2_k::BYTES))
        {
            let sigma2 = mean_square(xb);
            for j in 0..QK_K / 16 {
                let xs = &xb[16 * j..16 * j + 16];
                fill_weights(&mut weight, &qb[16 * j..16 * j + 16], xs, sigma2);
                sw[j] = sum(&weight);
                let (scale, min) =
                    make_qkx2_quants(&search, xs, &weight, &mut l[16 * j..16 * j + 16], &mut laux);
                scales[j] = scale;
                mins[j] = min;
            }
            q2_k_finish(xb, yb, &mut l, &scales, &mins, &sw);
        }
    }

    fn q3_k(x: &[f32], qw: &[f32], y: &mut [u8]) {
        let mut l = [0i8; QK_K];
        let mut weight = [0f32; 16];
        let mut scales = [0f32; QK_K / 16];
        let mut sw = [0f32; QK_K / 16];
        for ((xb, qb), yb) in x
            .chunks_exact(QK_K)
            .zip(qw.chunks_exact(QK_K))
            .zip(y.chunks_exact_mut(q3_k::BYTES))
        {
            let sigma2 = twice_mean_square(xb);
            for j in 0..QK_K / 16 {
                let xs = &xb[16 * j..16 * j + 16];
                fill_weights(&mut weight, &qb[16 * j..16 * j + 16], xs, sigma2);
                sw[j] = sum(&weight);
                scales[j] = make_qx_quants(4, xs, Some(&weight), &mut l[16 * j..16 * j + 16]);
            }
            q3_k_finish(xb, yb, &mut l, &scales, &sw);
        }
    }

    fn q45_k(x: &[f32], qw: &[f32], y: &mut [u8], nmax: i32, bytes: usize) {
        let search = qkx3(nmax);
        let mut l = [0u8; QK_K];
        let mut laux = [0u8; 32];
        let mut weight = [0f32; 32];
        let mut scales = [0f32; 8];
        let mut mins = [0f32; 8];
        let mut sw = [0f32; 8];
        for ((xb, qb), yb) in x
            .chunks_exact(QK_K)
            .zip(qw.chunks_exact(QK_K))
            .zip(y.chunks_exact_mut(bytes))
        {
            let sigma2 = twice_mean_square(xb);
            for j in 0..8 {
                let xs = &xb[32 * j..32 * j + 32];
                fill_weights(&mut weight, &qb[32 * j..32 * j + 32], xs, sigma2);
                sw[j] = sum(&weight);
                let (scale, min) =
                    make_qkx2_quants(&search, xs, &weight, &mut l[32 * j..32 * j + 32], &mut laux);
                scales[j] = scale;
                mins[j] = min;
            }
            q45_k_finish(xb, yb, &mut l, &scales, &mins, &sw, nmax);
        }
    }

    fn q6_k(x: &[f32], qw: &[f32], y: &mut [u8]) {
        let mut l = [0i8; QK_K];
        let mut scales = [0f32; QK_K / 16];
        for ((xb, qb), yb) in x
            .chunks_exact(QK_K)
            .zip(qw.chunks_exact(QK_K))
            .zip(y.chunks_exact_mut(q6_k::BYTES))
        {
            let mut max_scale = 0.0f32;
            let mut max_abs_scale = 0.0f32;
            for (ib, s) in scales.iter_mut().enumerate() {
                let r = 16 * ib..16 * ib + 16;
                let scale = make_qx_quants(32, &xb[r.clone()], Some(&qb[r.clone()]), &mut l[r]);
                *s = scale;
                if scale.abs() > max_abs_scale {
                    max_abs_scale = scale.abs();
                    max_scale = scale;
                }
            }
            q6_k::finish(xb, yb, &mut l, &scales, max_scale, max_abs_scale);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// With equal importance everywhere the weighted encoders still decode close to the input:
    /// a sanity bound per type (the exact bytes are checked against llama-quantize in
    /// tests/quant_presets.rs).
    #[test]
    fn uniform_importance_reconstructs_within_the_type_error() {
        let row = 512;
        let x = values(row * 4, 7);
        let qw = vec![1.0f32; row];
        for (ty, bound) in [
            (QuantType::Q4_0, 0.12),
            (QuantType::Q4_1, 0.10),
            (QuantType::Q5_0, 0.06),
            (QuantType::Q5_1, 0.05),
            (QuantType::Q2_K, 0.45),
            (QuantType::Q3_K, 0.25),
            (QuantType::Q4_K, 0.10),
            (QuantType::Q5_K, 0.05),
            (QuantType::Q6_K, 0.03),
        ] {
            let mut bytes = vec![0u8; 4 * ty.row_bytes(row).unwrap()];
            for (xr, yr) in x
                .chunks(row)
                .zip(bytes.chunks_mut(ty.row_bytes(row).unwrap()))
            {
                quantize_row(ty, xr, &qw, yr);
            }
            let back = super::super::dequantize(ty, &bytes, row).unwrap();
            let err: f32 = x
                .iter()
                .zip(&back)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f32>();
            let norm: f32 = x.iter().map(|a| a * a).sum::<f32>();
            let rel = (err / norm).sqrt();
            assert!(rel < bound, "{ty}: relative error {rel}");
        }
    }

    /// Every lane build equals the scalar transcription, on varied data and importance values
    /// (zero, tiny, huge, varied), rows of 1, 3 and 22 super-blocks.
    #[test]
    fn lane_builds_equal_the_scalar_reference() {
        type Lanes = fn(lanes::Level, &[f32], &[f32], &mut [u8]);
        let kernels: [(QuantType, Lanes); 9] = [
            (QuantType::Q4_0, q4_0_with),
            (QuantType::Q4_1, q4_1_with),
            (QuantType::Q5_0, q5_0_with),
            (QuantType::Q5_1, q5_1_with),
            (QuantType::Q2_K, q2_k_with),
            (QuantType::Q3_K, q3_k_with),
            (QuantType::Q4_K, q4_k_with),
            (QuantType::Q5_K, q5_k_with),
            (QuantType::Q6_K, q6_k_with),
        ];
        for (row_blocks, seed) in [(1usize, 3u64), (3, 5), (22, 7)] {
            let row = row_blocks * QK_K;
            let x = crate::quant::tests::varied_blocks(row_blocks * 4, seed);
            let mut qw = values(row, seed + 1);
            for (i, w) in qw.iter_mut().enumerate() {
                *w = match i % 7 {
                    0 => 0.0,
                    1 => 1e-6,
                    2 => 3e4,
                    _ => w.abs() * 10.0,
                };
            }
            for (ty, fast) in kernels {
                let rb = ty.row_bytes(row).unwrap();
                let mut want = vec![0u8; 4 * rb];
                for (xr, yr) in x.chunks(row).zip(want.chunks_mut(rb)) {
                    reference::quantize_row(ty, xr, &qw, yr);
                }
                for level in lanes::Level::available() {
                    let mut got = vec![0xAAu8; 4 * rb];
                    for (xr, yr) in x.chunks(row).zip(got.chunks_mut(rb)) {
                        fast(level, xr, &qw, yr);
                    }
                    let first = got.iter().zip(&want).position(|(a, b)| a != b);
                    assert_eq!(
                        first, None,
                        "{ty} at {level:?}, rows of {row}: first differing byte"
                    );
                }
            }
        }
    }

    #[test]
    fn zero_importance_block_is_still_valid() {
        // All-zero weights make every least-squares sum zero; ggml falls back to zero scales.
        let x = values(QK_K, 3);
        let qw = vec![0.0f32; QK_K];
        for ty in [
            QuantType::Q2_K,
            QuantType::Q3_K,
            QuantType::Q4_K,
            QuantType::Q6_K,
        ] {
            let mut y = vec![0u8; ty.row_bytes(QK_K).unwrap()];
            quantize_row(ty, &x, &qw, &mut y);
            let back = super::super::dequantize(ty, &y, QK_K).unwrap();
            assert!(back.iter().all(|v| v.is_finite()), "{ty}");
        }
    }
}
