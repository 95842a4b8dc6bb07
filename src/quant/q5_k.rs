//! Q5_K: 256 values per 176-byte super-block: `d: f16`, `dmin: f16`, `scales: u8[12]` (as
//! Q4_K), `qh: u8[32]`, `qs: u8[128]`. Sub-block j decodes as `x = d * sc_j * q - dmin * m_j`,
//! q in [0, 31].
//!
//! Port of ggml's `quantize_row_q5_K_ref`: as Q4_K with `make_qkx2_quants(nmax 31,
//! rmin -0.5, rdelta 0.1, nstep 15)`. Packing per 64-value chunk n (n = 0..4): low nibbles
//! as Q4_K; bit 4 of value 64n+l goes to bit 2n of `qh[l]`, of value 64n+l+32 to bit 2n+1.

use super::k_quants::{get_scale_min_k4, Qkx2};
use super::lanes;
use super::q4_k::quantize_k45;
use super::{read_f16, QK_K};

pub(super) const BYTES: usize = 4 + 12 + QK_K / 8 + QK_K / 2;

const SEARCH: Qkx2 = Qkx2 {
    nmax: 31,
    rmin: -0.5,
    rdelta: 0.1,
    nstep: 15,
    use_mad: false,
};

lanes::multiversion!(pub(super) fn quantize, quantize_with => kernel(src: &[f32], dst: &mut [u8]));

#[inline(always)]
fn kernel<const N: usize>(src: &[f32], dst: &mut [u8]) {
    quantize_k45::<N>(src, dst, &SEARCH, BYTES, pack)
}

/// The scalar transcription of `quantize_row_q5_K_ref`, the oracle the lane build is tested
/// against.
#[cfg(test)]
pub(super) fn quantize_reference(src: &[f32], dst: &mut [u8]) {
    use super::k_quants::{pack_scales_mins, search_sub_blocks_32};
    use super::q4_k::requantize_with_stored_scales;
    use super::write_f16;
    let mut l = [0u8; QK_K];
    for (x, y) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(BYTES)) {
        let (scales, mins) = search_sub_blocks_32(&SEARCH, x, &mut l);
        let (d, dmin) = pack_scales_mins(&scales, &mins, &mut y[4..16]);
        write_f16(&mut y[0..2], d);
        write_f16(&mut y[2..4], dmin);
        requantize_with_stored_scales(x, &y[..16], 31, &mut l);
        pack(&l, &mut y[16..]);
    }
}

/// Q5_K quants into `qh` (32 bytes: bit 2n / 2n+1 of byte k = high bit of value 64n+k /
/// 64n+k+32) and `ql` (128 bytes, low nibbles as Q4_K).
#[inline(always)]
pub(super) fn pack(l: &[u8; QK_K], out: &mut [u8]) {
    let (qh, ql) = out.split_at_mut(QK_K / 8);
    qh.fill(0);
    for (n, (chunk, q)) in l.chunks_exact(64).zip(ql.chunks_exact_mut(32)).enumerate() {
        let (m1, m2) = (1u8 << (2 * n), 2u8 << (2 * n));
        // quants are in [0, 31]: ggml's `if (l > 15) { l -= 16; set the bit; }` without a
        // branch
        for (k, byte) in q.iter_mut().enumerate() {
            let (l1, l2) = (chunk[k], chunk[k + 32]);
            qh[k] |= ((l1 >> 4) * m1) | ((l2 >> 4) * m2);
            *byte = (l1 & 15) | ((l2 & 15) << 4);
        }
    }
}

pub(super) fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let d = read_f16(&b[0..2]);
        let min = read_f16(&b[2..4]);
        let scales = &b[4..16];
        let qh = &b[16..48];
        for (c, (ql, out)) in b[48..]
            .chunks_exact(32)
            .zip(y.chunks_exact_mut(64))
            .enumerate()
        {
            let (sc, m) = get_scale_min_k4(2 * c, scales);
            let (d1, m1) = (d * f32::from(sc), min * f32::from(m));
            let (sc, m) = get_scale_min_k4(2 * c + 1, scales);
            let (d2, m2) = (d * f32::from(sc), min * f32::from(m));
            let (u1, u2) = (1u8 << (2 * c), 2u8 << (2 * c));
            let (lo, hi) = out.split_at_mut(32);
            for (l, (o1, o2)) in lo.iter_mut().zip(hi).enumerate() {
                let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
                *o1 = d1 * f32::from((ql[l] & 0x0F) + h1) - m1;
                *o2 = d2 * f32::from((ql[l] >> 4) + h2) - m2;
            }
        }
    }
}
