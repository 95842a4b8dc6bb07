//! Q3_K: 256 values per 110-byte super-block: `hmask: u8[32]` (high bit), `qs: u8[64]`
//! (low 2 bits), `scales: u8[12]` (16 six-bit signed scales, offset 32), `d: f16`. Sub-block
//! j (16 values) decodes as `x = d * (scale_j - 32) * (q - 4)`, q in [0, 7].
//!
//! Port of ggml's `quantize_row_q3_K_ref`: `make_q3_quants(16, nmax 4, do_rmse)` per
//! sub-block, the scale of largest magnitude sets `d = max / -32`, then re-quantization
//! against the stored `d * scale`. Scale packing: low nibbles of scales 0..8 in the low
//! nibbles of bytes 0..8, of scales 8..16 in their high nibbles; the top 2 bits of scale j
//! at bit 2*(j/4) of byte 8 + j%4. High bits: value j's bit 2 goes to bit j/32 of
//! `hmask[j % 32]`. Low 2 bits packed as Q2_K.

#[cfg(test)]
use super::k_quants::make_q3_quants_rmse;
use super::k_quants::nearest_int;
use super::lanes::{self, gather, q3_search, Block, I};
use super::q2_k::pack_2bit;
use super::{read_f16, write_f16, QK_K};

pub(super) const BYTES: usize = QK_K / 8 + QK_K / 4 + 12 + 2;

lanes::multiversion!(pub(super) fn quantize, quantize_with => kernel(src: &[f32], dst: &mut [u8]));

/// The reference encoder with the 16 `make_q3_quants` of a super-block run in N lanes.
#[inline(always)]
fn kernel<const N: usize>(src: &[f32], dst: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    for (x, y) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(BYTES)) {
        for g in 0..QK_K / 16 / N {
            let xv: Block<N, 16> = gather(&x[16 * N * g..16 * N * (g + 1)]);
            let mut lv = [I([0i32; N]); 16];
            let sv = q3_search(&xv, 4, &mut lv);
            for k in 0..N {
                let j = N * g + k;
                scales[j] = sv.0[k];
                for i in 0..16 {
                    l[16 * j + i] = lv[i].0[k] as i8;
                }
            }
        }
        finish(x, y, &mut l, &scales);
    }
}

/// The scalar transcription of `quantize_row_q3_K_ref`, the oracle the lane build is tested
/// against.
#[cfg(test)]
pub(super) fn quantize_reference(src: &[f32], dst: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    for (x, y) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(BYTES)) {
        for j in 0..QK_K / 16 {
            scales[j] =
                make_q3_quants_rmse(4, &x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
        }
        finish(x, y, &mut l, &scales);
    }
}

/// From the sub-block scales to the bytes: 6-bit scales against the one of largest magnitude,
/// the fp16 super-block scale, then [`requantize_and_pack`].
#[inline(always)]
fn finish(x: &[f32], y: &mut [u8], l: &mut [i8; QK_K], scales: &[f32; QK_K / 16]) {
    let mut max_scale = 0.0f32;
    let mut amax = 0.0f32;
    for &s in scales {
        if s.abs() > amax {
            amax = s.abs();
            max_scale = s;
        }
    }
    let (sc, dd) = y[QK_K / 8 + QK_K / 4..].split_at_mut(12);
    sc.fill(0);
    if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        for (j, &scale) in scales.iter().enumerate() {
            // `int8_t l = nearest_int(...)`: wraps to 8 bits before the clamp
            let q = nearest_int(iscale * scale) as i8;
            let q = (q.clamp(-32, 31) + 32) as u8;
            if j < 8 {
                sc[j] = q & 0x0F;
            } else {
                sc[j - 8] |= (q & 0x0F) << 4;
            }
            sc[j % 4 + 8] |= (q >> 4) << (2 * (j / 4));
        }
        write_f16(dd, 1.0 / iscale);
    } else {
        write_f16(dd, 0.0);
    }
    requantize_and_pack(x, y, l);
}

/// The end of both Q3_K quantizers: each sub-block re-quantized against its stored (fp16,
/// 6-bit) scale (sub-blocks with a zero scale keep `l`, offset by 4), then the high bits go to
/// `hmask` and the low two bits are packed.
#[inline(always)]
pub(super) fn requantize_and_pack(x: &[f32], y: &mut [u8], l: &mut [i8; QK_K]) {
    let (hmask, rest) = y.split_at_mut(QK_K / 8);
    let (qs, rest) = rest.split_at_mut(QK_K / 4);
    let (sc, dd) = rest.split_at_mut(12);
    let d_all = read_f16(dd);
    for j in 0..QK_K / 16 {
        let low = if j < 8 { sc[j] & 0x0F } else { sc[j - 8] >> 4 };
        let s = (low | (((sc[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) as i8 - 32;
        let d = d_all * f32::from(s);
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / d).clamp(-4, 3);
            l[16 * j + ii] = (q + 4) as i8;
        }
    }
    hmask.fill(0);
    let mut lu = [0u8; QK_K];
    // quants are in [0, 7]: ggml's `if (L[j] > 3) { set the bit; L[j] -= 4; }` without a branch
    for (j, (&q, out)) in l.iter().zip(lu.iter_mut()).enumerate() {
        let q = q as u8;
        hmask[j % 32] |= (q >> 2) << (j / 32);
        *out = q & 3;
    }
    pack_2bit(&lu, qs);
}

/// The 16 signed 6-bit scales (already minus 32) of a Q3_K block, as ggml's
/// `dequantize_row_q3_K` unpacks them with `kmask1`/`kmask2`.
fn unpack_scales(packed: &[u8]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (j, o) in out.iter_mut().enumerate() {
        let low = if j < 8 {
            packed[j] & 0x0F
        } else {
            packed[j - 8] >> 4
        };
        let high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
        *o = (low | (high << 4)) as i8 - 32;
    }
    out
}

pub(super) fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let hm = &b[..32];
        let scales = unpack_scales(&b[96..108]);
        let d_all = read_f16(&b[108..110]);
        let mut is = 0;
        let mut m = 1u8;
        let mut out = y.iter_mut();
        for q in b[32..96].chunks_exact(32) {
            for shift in [0, 2, 4, 6] {
                for (q, hm) in [(&q[..16], &hm[..16]), (&q[16..], &hm[16..])] {
                    let dl = d_all * f32::from(scales[is]);
                    is += 1;
                    for ((&byte, &h), o) in q.iter().zip(hm).zip(out.by_ref()) {
                        let v = ((byte >> shift) & 3) as i8 - if h & m != 0 { 0 } else { 4 };
                        *o = dl * f32::from(v);
                    }
                }
                m <<= 1;
            }
        }
    }
}
