//! Q6_K: 256 values per 210-byte super-block: `ql: u8[128]` (low 4 bits), `qh: u8[64]`
//! (high 2 bits), `scales: i8[16]`, `d: f16` (last). Sub-block j (16 values) decodes as
//! `x = d * scales[j] * (q - 32)`, q in [0, 63].
//!
//! Port of ggml's `quantize_row_q6_K_ref`: `make_qx_quants(16, 32, rmse_type 1)` per
//! sub-block, the sub-block scale of largest magnitude sets `d = max / -128`, scales are
//! `min(127, nearest_int(-128 / max * scale))`, then values are re-quantized against the
//! stored `d * scale`. A super-block whose scales are all below 1e-15 is all zero bytes.
//! Packing per 128-value chunk: `ql[l] = q[l] | q[l+64] << 4`, `ql[l+32] = q[l+32] |
//! q[l+96] << 4` (low nibbles), `qh[l]` = bits 4-5 of q[l], q[l+32], q[l+64], q[l+96] at
//! bit offsets 0, 2, 4, 6.

#[cfg(test)]
use super::k_quants::make_qx_quants;
use super::k_quants::{nearest_int, GROUP_MAX_EPS};
use super::lanes::{self, gather, qx_quants, qx_search, Block};
use super::{read_f16, write_f16, QK_K};

pub(super) const BYTES: usize = QK_K / 2 + QK_K / 4 + QK_K / 16 + 2;

lanes::multiversion!(pub(super) fn quantize, quantize_with => kernel(src: &[f32], dst: &mut [u8]));

#[inline(always)]
fn kernel<const N: usize>(src: &[f32], dst: &mut [u8]) {
    quantize_lanes::<N>(src, None, dst)
}

/// The Q6_K encoders with the 16 sub-block searches (`make_qx_quants(16, 32)`, weights `x^2`
/// or the importance values `qw` of the row) of a super-block run in N lanes.
#[inline(always)]
pub(super) fn quantize_lanes<const N: usize>(src: &[f32], qw: Option<&[f32]>, dst: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    for (b, (x, y)) in src
        .chunks_exact(QK_K)
        .zip(dst.chunks_exact_mut(BYTES))
        .enumerate()
    {
        let mut max_scale = 0.0f32;
        let mut max_abs_scale = 0.0f32;
        for g in 0..QK_K / 16 / N {
            let sub = 16 * N * g..16 * N * (g + 1);
            let xv: Block<N, 16> = gather(&x[sub.clone()]);
            let w: Block<N, 16> = match qw {
                Some(qw) => gather(&qw[QK_K * b..QK_K * (b + 1)][sub]),
                None => std::array::from_fn(|i| xv[i] * xv[i]),
            };
            let r = qx_search(&xv, &w, 32);
            for k in 0..N {
                let ib = N * g + k;
                let s = 16 * ib..16 * ib + 16;
                qx_quants(&r, k, &x[s.clone()], 32, &mut l[s]);
                let scale = r.scale.0[k];
                scales[ib] = scale;
                if scale.abs() > max_abs_scale {
                    max_abs_scale = scale.abs();
                    max_scale = scale;
                }
            }
        }
        finish(x, y, &mut l, &scales, max_scale, max_abs_scale);
    }
}

/// The scalar transcription of `quantize_row_q6_K_ref`, the oracle the lane build is tested
/// against.
#[cfg(test)]
pub(super) fn quantize_reference(src: &[f32], dst: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    for (x, y) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(BYTES)) {
        let mut max_scale = 0.0f32;
        let mut max_abs_scale = 0.0f32;
        for ib in 0..QK_K / 16 {
            let scale = make_qx_quants(
                32,
                &x[16 * ib..16 * ib + 16],
                None,
                &mut l[16 * ib..16 * ib + 16],
            );
            scales[ib] = scale;
            if scale.abs() > max_abs_scale {
                max_abs_scale = scale.abs();
                max_scale = scale;
            }
        }
        finish(x, y, &mut l, &scales, max_scale, max_abs_scale);
    }
}

/// The end of both Q6_K quantizers, from the sub-block scales and the one of largest
/// magnitude: an all-zero block, or the int8 scales against `d = max / -128`, then
/// [`requantize_and_pack`].
#[inline(always)]
pub(super) fn finish(
    x: &[f32],
    y: &mut [u8],
    l: &mut [i8; QK_K],
    scales: &[f32; QK_K / 16],
    max_scale: f32,
    max_abs_scale: f32,
) {
    if max_abs_scale < GROUP_MAX_EPS {
        y.fill(0);
        return;
    }
    let iscale = -128.0 / max_scale;
    write_f16(&mut y[208..210], 1.0 / iscale);
    for (s, &scale) in y[QK_K / 2 + QK_K / 4..].iter_mut().zip(scales) {
        *s = nearest_int(iscale * scale).min(127) as i8 as u8;
    }
    requantize_and_pack(x, y, l);
}

/// The end of both Q6_K quantizers: each sub-block re-quantized against its stored (fp16,
/// int8) scale (sub-blocks with a zero scale keep `l`), then split into low nibbles `ql` and
/// high bit pairs `qh`.
#[inline(always)]
pub(super) fn requantize_and_pack(x: &[f32], y: &mut [u8], l: &mut [i8; QK_K]) {
    let (ql_qh, tail) = y.split_at_mut(QK_K / 2 + QK_K / 4);
    let d_all = read_f16(&tail[QK_K / 16..]);
    for j in 0..QK_K / 16 {
        let d = d_all * f32::from(tail[j] as i8);
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / d).clamp(-32, 31);
            l[16 * j + ii] = (q + 32) as i8;
        }
    }
    let (ql, qh) = ql_qh.split_at_mut(QK_K / 2);
    for ((chunk, ql), qh) in l
        .chunks_exact(128)
        .zip(ql.chunks_exact_mut(64))
        .zip(qh.chunks_exact_mut(32))
    {
        let q = |i: usize| chunk[i] as u8;
        for k in 0..32 {
            ql[k] = (q(k) & 0x0F) | ((q(k + 64) & 0x0F) << 4);
            ql[k + 32] = (q(k + 32) & 0x0F) | ((q(k + 96) & 0x0F) << 4);
            qh[k] = (q(k) >> 4)
                | ((q(k + 32) >> 4) << 2)
                | ((q(k + 64) >> 4) << 4)
                | ((q(k + 96) >> 4) << 6);
        }
    }
}

pub(super) fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let d = read_f16(&b[208..210]);
        let (ql_all, rest) = b.split_at(QK_K / 2);
        let (qh_all, sc_all) = rest.split_at(QK_K / 4);
        for (n, out) in y.chunks_exact_mut(128).enumerate() {
            let ql = &ql_all[64 * n..64 * n + 64];
            let qh = &qh_all[32 * n..32 * n + 32];
            let sc = &sc_all[8 * n..8 * n + 8];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i8 - 32;
                let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
                out[l] = d * f32::from(sc[is] as i8) * f32::from(q1);
                out[l + 32] = d * f32::from(sc[is + 2] as i8) * f32::from(q2);
                out[l + 64] = d * f32::from(sc[is + 4] as i8) * f32::from(q3);
                out[l + 96] = d * f32::from(sc[is + 6] as i8) * f32::from(q4);
            }
        }
    }
}
