//! Q2_K: 256 values per 84-byte super-block: `scales: u8[16]` (low nibble scale, high nibble
//! min, per 16-value sub-block), `qs: u8[64]`, `d: f16`, `dmin: f16`. Sub-block j decodes
//! as `x = d * (scales[j] & 15) * q - dmin * (scales[j] >> 4)`, q in [0, 3].
//!
//! Port of ggml's `quantize_row_q2_K_ref`: weights `|x|`, `make_qkx2_quants(16, nmax 3,
//! rmin -0.5, rdelta 0.1, nstep 15, use_mad)`, 4-bit scales/mins against `max/15`, then
//! re-quantization against the stored values. Packing per 128-value chunk: byte l holds
//! values l, l+32, l+64, l+96 at bit offsets 0, 2, 4, 6.

#[cfg(test)]
use super::k_quants::make_qkx2_quants;
use super::k_quants::{nearest_int, Qkx2};
use super::lanes::{self, gather, qkx_quants, qkx_search, Block};
use super::{read_f16, write_f16, QK_K};

pub(super) const BYTES: usize = QK_K / 16 + QK_K / 4 + 4;

const SEARCH: Qkx2 = Qkx2 {
    nmax: 3,
    rmin: -0.5,
    rdelta: 0.1,
    nstep: 15,
    use_mad: true,
};

lanes::multiversion!(pub(super) fn quantize, quantize_with => kernel(src: &[f32], dst: &mut [u8]));

/// The reference encoder with the 16 sub-block searches of a super-block run in N lanes.
#[inline(always)]
fn kernel<const N: usize>(src: &[f32], dst: &mut [u8]) {
    let mut l = [0u8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    let mut mins = [0f32; QK_K / 16];
    for (x, y) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(BYTES)) {
        for g in 0..QK_K / 16 / N {
            let xs = &x[16 * N * g..16 * N * (g + 1)];
            let xv: Block<N, 16> = gather(xs);
            let w: Block<N, 16> = std::array::from_fn(|i| xv[i].abs());
            let p = &SEARCH;
            let r = qkx_search(&xv, &w, p.nmax, p.rmin, p.rdelta, p.nstep, p.use_mad);
            for k in 0..N {
                let j = N * g + k;
                scales[j] = r.scale.0[k];
                mins[j] = r.the_min.0[k];
                let s = 16 * j..16 * j + 16;
                qkx_quants(&r, k, &x[s.clone()], p.nmax, &mut l[s]);
            }
        }
        finish(x, y, &mut l, &scales, &mins);
    }
}

/// The scalar transcription of `quantize_row_q2_K_ref`, the oracle the lane build is tested
/// against.
#[cfg(test)]
pub(super) fn quantize_reference(src: &[f32], dst: &mut [u8]) {
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 16];
    let mut weights = [0f32; 16];
    let mut scales = [0f32; QK_K / 16];
    let mut mins = [0f32; QK_K / 16];
    for (x, y) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(BYTES)) {
        for j in 0..QK_K / 16 {
            let xs = &x[16 * j..16 * j + 16];
            for (w, &v) in weights.iter_mut().zip(xs) {
                *w = v.abs();
            }
            let (scale, min) = make_qkx2_quants(
                &SEARCH,
                xs,
                &weights,
                &mut l[16 * j..16 * j + 16],
                &mut laux,
            );
            scales[j] = scale;
            mins[j] = min;
        }
        finish(x, y, &mut l, &scales, &mins);
    }
}

/// From the sub-block searches to the bytes: 4-bit scales and mins against the largest of
/// each, the fp16 super-block scales, then [`requantize_and_pack`].
#[inline(always)]
fn finish(x: &[f32], y: &mut [u8], l: &mut [u8; QK_K], scales: &[f32; 16], mins: &[f32; 16]) {
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for (&scale, &min) in scales.iter().zip(mins) {
        if scale > max_scale {
            max_scale = scale;
        }
        if min > max_min {
            max_min = min;
        }
    }
    let (sc, rest) = y.split_at_mut(QK_K / 16);
    let dd = &mut rest[QK_K / 4..];
    if max_scale > 0.0 {
        let iscale = 15.0 / max_scale;
        for (s, &scale) in sc.iter_mut().zip(scales) {
            *s = nearest_int(iscale * scale) as u8;
        }
        write_f16(&mut dd[0..2], max_scale / 15.0);
    } else {
        sc.fill(0);
        write_f16(&mut dd[0..2], 0.0);
    }
    if max_min > 0.0 {
        let iscale = 15.0 / max_min;
        for (s, &min) in sc.iter_mut().zip(mins) {
            *s |= (nearest_int(iscale * min) << 4) as u8;
        }
        write_f16(&mut dd[2..4], max_min / 15.0);
    } else {
        write_f16(&mut dd[2..4], 0.0);
    }
    requantize_and_pack(x, y, l);
}

/// The end of both Q2_K quantizers: each sub-block re-quantized against its stored (fp16,
/// 4-bit) scale and min (sub-blocks with a zero scale keep `l`), then packed.
#[inline(always)]
pub(super) fn requantize_and_pack(x: &[f32], y: &mut [u8], l: &mut [u8; QK_K]) {
    let (sc, rest) = y.split_at_mut(QK_K / 16);
    let (qs, dd) = rest.split_at_mut(QK_K / 4);
    let d_all = read_f16(&dd[0..2]);
    let dmin_all = read_f16(&dd[2..4]);
    for j in 0..QK_K / 16 {
        let d = d_all * f32::from(sc[j] & 0x0F);
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * f32::from(sc[j] >> 4);
        for ii in 0..16 {
            let q = nearest_int((x[16 * j + ii] + dm) / d).clamp(0, 3);
            l[16 * j + ii] = q as u8;
        }
    }
    pack_2bit(l, qs);
}

/// Two-bit packing shared with Q3_K: per 128 values, byte l = v[l] | v[l+32] << 2 |
/// v[l+64] << 4 | v[l+96] << 6.
#[inline(always)]
pub(super) fn pack_2bit(l: &[u8; QK_K], qs: &mut [u8]) {
    for (chunk, q) in l.chunks_exact(128).zip(qs.chunks_exact_mut(32)) {
        for (k, byte) in q.iter_mut().enumerate() {
            *byte = chunk[k] | (chunk[k + 32] << 2) | (chunk[k + 64] << 4) | (chunk[k + 96] << 6);
        }
    }
}

pub(super) fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let scales = &b[..16];
        let d = read_f16(&b[80..82]);
        let min = read_f16(&b[82..84]);
        let mut is = 0;
        let mut out = y.iter_mut();
        for q in b[16..80].chunks_exact(32) {
            for shift in [0, 2, 4, 6] {
                for half in [&q[..16], &q[16..]] {
                    let sc = scales[is];
                    is += 1;
                    let dl = d * f32::from(sc & 0x0F);
                    let ml = min * f32::from(sc >> 4);
                    for (&byte, o) in half.iter().zip(out.by_ref()) {
                        *o = dl * f32::from((byte >> shift) & 3) - ml;
                    }
                }
            }
        }
    }
}
