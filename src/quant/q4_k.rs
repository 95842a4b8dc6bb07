//! Q4_K: 256 values per 144-byte super-block: `d: f16`, `dmin: f16`, `scales: u8[12]`
//! (8 six-bit scales and 8 six-bit mins, see [`get_scale_min_k4`]), `qs: u8[128]`.
//! Sub-block j (32 values) decodes as `x = d * sc_j * q - dmin * m_j`, q in [0, 15].
//!
//! Port of ggml's `quantize_row_q4_K_ref`: per sub-block weights `sqrt(mean(x^2)) + |x|`,
//! `make_qkx2_quants(nmax 15, rmin -1, rdelta 0.1, nstep 20)`, scales and mins quantized to
//! 6 bits, then every value re-quantized against the fp16-rounded `d * sc` and `dmin * m`.
//! Nibbles: each 64-value chunk is 32 bytes, value c+l in the low nibble of byte l and value
//! c+l+32 in the high nibble.

use super::k_quants::{get_scale_min_k4, nearest_int, pack_scales_mins, Qkx2};
use super::lanes::{self, gather, qkx_quants, qkx_search, Block, F};
use super::{read_f16, write_f16, QK_K};

pub(super) const BYTES: usize = 4 + 12 + QK_K / 2;

const SEARCH: Qkx2 = Qkx2 {
    nmax: 15,
    rmin: -1.0,
    rdelta: 0.1,
    nstep: 20,
    use_mad: false,
};

lanes::multiversion!(pub(super) fn quantize, quantize_with => kernel(src: &[f32], dst: &mut [u8]));

#[inline(always)]
fn kernel<const N: usize>(src: &[f32], dst: &mut [u8]) {
    quantize_k45::<N>(src, dst, &SEARCH, BYTES, pack_nibbles)
}

/// The Q4_K/Q5_K reference encoders with the sub-block searches of N sub-blocks (N/8
/// super-blocks) run in lanes: per sub-block weights `sqrt(mean(x^2)) + |x|`, the search, then
/// per super-block the 6-bit scales, the re-quantization and `pack`.
#[inline(always)]
pub(super) fn quantize_k45<const N: usize>(
    src: &[f32],
    dst: &mut [u8],
    p: &Qkx2,
    bytes: usize,
    pack: fn(&[u8; QK_K], &mut [u8]),
) {
    let per_group = N / 8;
    let mut l = [0u8; QK_K];
    for (xs, ys) in src
        .chunks(QK_K * per_group)
        .zip(dst.chunks_mut(bytes * per_group))
    {
        let x: Block<N, 32> = gather(xs);
        let mut sum_x2 = F::splat(0.0);
        for v in &x {
            sum_x2 = sum_x2 + *v * *v;
        }
        let av_x = (sum_x2 / F::splat(32.0)).sqrt();
        let w: Block<N, 32> = std::array::from_fn(|i| av_x + x[i].abs());
        let r = qkx_search(&x, &w, p.nmax, p.rmin, p.rdelta, p.nstep, p.use_mad);
        for (b, (xb, yb)) in xs
            .chunks_exact(QK_K)
            .zip(ys.chunks_exact_mut(bytes))
            .enumerate()
        {
            let lane = 8 * b;
            let scales: [f32; 8] = std::array::from_fn(|j| r.scale.0[lane + j]);
            let mins: [f32; 8] = std::array::from_fn(|j| r.the_min.0[lane + j]);
            for j in 0..8 {
                let s = 32 * j..32 * j + 32;
                qkx_quants(&r, lane + j, &xb[s.clone()], p.nmax, &mut l[s]);
            }
            let (d, dmin) = pack_scales_mins(&scales, &mins, &mut yb[4..16]);
            write_f16(&mut yb[0..2], d);
            write_f16(&mut yb[2..4], dmin);
            requantize_with_stored_scales(xb, &yb[..16], p.nmax, &mut l);
            pack(&l, &mut yb[16..]);
        }
    }
}

/// The scalar transcription of `quantize_row_q4_K_ref`, the oracle the lane build is tested
/// against.
#[cfg(test)]
pub(super) fn quantize_reference(src: &[f32], dst: &mut [u8]) {
    use super::k_quants::search_sub_blocks_32;
    let mut l = [0u8; QK_K];
    for (x, y) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(BYTES)) {
        let (scales, mins) = search_sub_blocks_32(&SEARCH, x, &mut l);
        let (d, dmin) = pack_scales_mins(&scales, &mins, &mut y[4..16]);
        write_f16(&mut y[0..2], d);
        write_f16(&mut y[2..4], dmin);
        requantize_with_stored_scales(x, &y[..16], 15, &mut l);
        pack_nibbles(&l, &mut y[16..]);
    }
}

/// Q4_K quants into 128 bytes: per 64-value chunk, value c+k in the low nibble of byte k and
/// value c+k+32 in the high nibble.
#[inline(always)]
pub(super) fn pack_nibbles(l: &[u8; QK_K], qs: &mut [u8]) {
    for (chunk, q) in l.chunks_exact(64).zip(qs.chunks_exact_mut(32)) {
        for (k, byte) in q.iter_mut().enumerate() {
            *byte = chunk[k] | (chunk[k + 32] << 4);
        }
    }
}

/// Shared by Q4_K/Q5_K: re-quantizes each sub-block against the stored (fp16, 6-bit) scale
/// and min; sub-blocks whose stored scale is zero keep their search result.
#[inline(always)]
pub(super) fn requantize_with_stored_scales(
    x: &[f32],
    header: &[u8],
    nmax: i32,
    l: &mut [u8; QK_K],
) {
    let d_all = read_f16(&header[0..2]);
    let dmin_all = read_f16(&header[2..4]);
    for j in 0..QK_K / 32 {
        let (sc, m) = get_scale_min_k4(j, &header[4..16]);
        let d = d_all * f32::from(sc);
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * f32::from(m);
        for ii in 0..32 {
            let q = nearest_int((x[32 * j + ii] + dm) / d).clamp(0, nmax);
            l[32 * j + ii] = q as u8;
        }
    }
}

pub(super) fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let d = read_f16(&b[0..2]);
        let min = read_f16(&b[2..4]);
        let scales = &b[4..16];
        for (c, (q, out)) in b[16..]
            .chunks_exact(32)
            .zip(y.chunks_exact_mut(64))
            .enumerate()
        {
            let (sc, m) = get_scale_min_k4(2 * c, scales);
            let (d1, m1) = (d * f32::from(sc), min * f32::from(m));
            let (sc, m) = get_scale_min_k4(2 * c + 1, scales);
            let (d2, m2) = (d * f32::from(sc), min * f32::from(m));
            let (lo, hi) = out.split_at_mut(32);
            for ((&byte, o1), o2) in q.iter().zip(lo).zip(hi) {
                *o1 = d1 * f32::from(byte & 0x0F) - m1;
                *o2 = d2 * f32::from(byte >> 4) - m2;
            }
        }
    }
}
