//! Q4_K: 256 values per 144-byte super-block: `d: f16`, `dmin: f16`, `scales: u8[12]`
//! (8 six-bit scales and 8 six-bit mins, see [`get_scale_min_k4`]), `qs: u8[128]`.
//! Sub-block j (32 values) decodes as `x = d * sc_j * q - dmin * m_j`, q in [0, 15].
//!
//! Port of ggml's `quantize_row_q4_K_ref`: per sub-block weights `sqrt(mean(x^2)) + |x|`,
//! `make_qkx2_quants(nmax 15, rmin -1, rdelta 0.1, nstep 20)`, scales and mins quantized to
//! 6 bits, then every value re-quantized against the fp16-rounded `d * sc` and `dmin * m`.
//! Nibbles: each 64-value chunk is 32 bytes, value c+l in the low nibble of byte l and value
//! c+l+32 in the high nibble.

use super::k_quants::{
    get_scale_min_k4, nearest_int, pack_scales_mins, search_sub_blocks_32, Qkx2,
};
use super::{read_f16, write_f16, QK_K};

pub(super) const BYTES: usize = 4 + 12 + QK_K / 2;

const SEARCH: Qkx2 = Qkx2 {
    nmax: 15,
    rmin: -1.0,
    rdelta: 0.1,
    nstep: 20,
    use_mad: false,
};

pub(super) fn quantize(src: &[f32], dst: &mut [u8]) {
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
pub(super) fn pack_nibbles(l: &[u8; QK_K], qs: &mut [u8]) {
    for (chunk, q) in l.chunks_exact(64).zip(qs.chunks_exact_mut(32)) {
        for (k, byte) in q.iter_mut().enumerate() {
            *byte = chunk[k] | (chunk[k + 32] << 4);
        }
    }
}

/// Shared by Q4_K/Q5_K: re-quantizes each sub-block against the stored (fp16, 6-bit) scale
/// and min; sub-blocks whose stored scale is zero keep their search result.
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
