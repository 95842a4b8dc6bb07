//! The quantizers `llama-quantize --imatrix` runs: ggml's `quantize_row_*_impl` with
//! `quant_weights`, one row at a time with the importance weights of that row's columns.
//!
//! Owns the per-type weighted scale searches (Q4_0/Q4_1/Q5_0/Q5_1 and Q2_K..Q6_K); the block
//! layouts, the re-quantization against the stored scales and the packing are shared with the
//! unweighted encoders of each type. Q8_0 and the float types have no weighted variant in ggml
//! (`quantize_q8_0` ignores the weights).
//!
//! Weights: ggml multiplies each importance value by `sqrt(sigma2 + x^2)`, where `sigma2` is the
//! mean square of the row (Q4_0..Q5_1), of the super-block (Q2_K) or twice it (Q3_K..Q5_K);
//! Q6_K uses the importance values as they are. Same evaluation order as the C code, as
//! everywhere in `quant`.

use super::k_quants::{make_qkx2_quants, make_qp_quants, make_qx_quants, pack_k4, Qkx2};
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
        QuantType::Q4_1 => qx_1(x, qw, y, 15),
        QuantType::Q5_0 => q5_0(x, qw, y),
        QuantType::Q5_1 => qx_1(x, qw, y, 31),
        QuantType::Q2_K => q2_k(x, qw, y),
        QuantType::Q3_K => q3_k(x, qw, y),
        QuantType::Q4_K => q45_k(x, qw, y, 15),
        QuantType::Q5_K => q45_k(x, qw, y, 31),
        QuantType::Q6_K => q6_k(x, qw, y),
        QuantType::F32 | QuantType::F16 | QuantType::BF16 | QuantType::Q8_0 => {
            super::encode(ty, x, y)
        }
    }
}

/// Mean square of `x`, summed left to right and divided by its length as ggml does.
fn mean_square(x: &[f32]) -> f32 {
    let mut sum_x2 = 0.0f32;
    for &v in x {
        sum_x2 += v * v;
    }
    sum_x2 / x.len() as f32
}

/// `weight[j] = qw[j] * sqrtf(sigma2 + x[j]*x[j])`.
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

/// `quantize_row_q4_0_impl`: `make_qx_quants(32, 8, weights)` per block.
fn q4_0(x: &[f32], qw: &[f32], y: &mut [u8]) {
    let sigma2 = mean_square(x);
    let mut weight = [0f32; 32];
    let mut l = [0i8; 32];
    for ((xb, qb), yb) in x
        .chunks_exact(32)
        .zip(qw.chunks_exact(32))
        .zip(y.chunks_exact_mut(Q4_0_BYTES))
    {
        fill_weights(&mut weight, qb, xb, sigma2);
        let d = make_qx_quants(8, xb, Some(&weight), &mut l);
        write_f16(yb, d);
        for j in 0..16 {
            yb[2 + j] = (l[j] as u8) | ((l[j + 16] as u8) << 4);
        }
    }
}

/// `quantize_row_q5_0_impl`: `make_qx_quants(32, 16, weights)` per block.
fn q5_0(x: &[f32], qw: &[f32], y: &mut [u8]) {
    let sigma2 = mean_square(x);
    let mut weight = [0f32; 32];
    let mut l = [0i8; 32];
    for ((xb, qb), yb) in x
        .chunks_exact(32)
        .zip(qw.chunks_exact(32))
        .zip(y.chunks_exact_mut(Q5_0_BYTES))
    {
        fill_weights(&mut weight, qb, xb, sigma2);
        let d = make_qx_quants(16, xb, Some(&weight), &mut l);
        write_f16(yb, d);
        pack_5bit(&l.map(|v| v as u8), &mut yb[2..]);
    }
}

/// `quantize_row_q4_1_impl` (`nmax` 15) and `quantize_row_q5_1_impl` (31):
/// `make_qkx3_quants(32, nmax, weights)` per block, `d` and `m = -min` stored.
fn qx_1(x: &[f32], qw: &[f32], y: &mut [u8], nmax: i32) {
    let sigma2 = mean_square(x);
    let search = qkx3(nmax);
    let bytes = if nmax == 15 { Q4_1_BYTES } else { Q5_1_BYTES };
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
        write_f16(&mut yb[0..2], d);
        write_f16(&mut yb[2..4], -min);
        if nmax == 15 {
            for j in 0..16 {
                yb[4 + j] = l[j] | (l[j + 16] << 4);
            }
        } else {
            pack_5bit(&l, &mut yb[4..]);
        }
    }
}

/// Q5_0/Q5_1 packing: 4 bytes of high bits (bit j = value j, bit j+16 = value j+16) then 16
/// bytes of nibble pairs.
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
/// `qw * sqrt(sigma2 + x^2)` weights (`sigma2` the super-block's mean square), then the 4-bit
/// scales and mins by `make_qp_quants(16, 15)` weighted by each sub-block's weight sum.
fn q2_k(x: &[f32], qw: &[f32], y: &mut [u8]) {
    let search = qkx3(3);
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 16];
    let mut weight = [0f32; 16];
    let mut scales = [0f32; QK_K / 16];
    let mut mins = [0f32; QK_K / 16];
    let mut sw = [0f32; QK_K / 16];
    let mut ls = [0u8; QK_K / 16];
    let mut lm = [0u8; QK_K / 16];
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
        let dm = make_qp_quants(15, &scales, &mut ls, &sw);
        let mm = make_qp_quants(15, &mins, &mut lm, &sw);
        write_f16(&mut yb[80..82], dm);
        write_f16(&mut yb[82..84], mm);
        for j in 0..QK_K / 16 {
            yb[j] = ls[j] | (lm[j] << 4);
        }
        q2_k::requantize_and_pack(xb, yb, &mut l);
    }
}

/// `quantize_row_q3_K_impl`: per sub-block `make_qx_quants(16, 4)` with
/// `qw * sqrt(2*mean(x^2) + x^2)` weights, then the 6-bit scales by
/// `make_qx_quants(16, 32)` weighted by the sub-block weight sums.
fn q3_k(x: &[f32], qw: &[f32], y: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut weight = [0f32; 16];
    let mut scales = [0f32; QK_K / 16];
    let mut sw = [0f32; QK_K / 16];
    let mut ls = [0i8; QK_K / 16];
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
        let (sc, dd) = yb[QK_K / 8 + QK_K / 4..].split_at_mut(12);
        sc.fill(0);
        let d_block = make_qx_quants(32, &scales, Some(&sw), &mut ls);
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
        q3_k::requantize_and_pack(xb, yb, &mut l);
    }
}

/// `2*sum_x2/QK_K` of Q3_K..Q5_K.
fn twice_mean_square(x: &[f32]) -> f32 {
    let mut sum_x2 = 0.0f32;
    for &v in x {
        sum_x2 += v * v;
    }
    2.0 * sum_x2 / QK_K as f32
}

/// `quantize_row_q4_K_impl` (`nmax` 15) and `quantize_row_q5_K_impl` (31): per 32-value
/// sub-block `make_qkx3_quants(32, nmax)` with `qw * sqrt(2*mean(x^2) + x^2)` weights, scales and
/// mins by `make_qp_quants(8, 63)` weighted by the sub-block weight sums.
fn q45_k(x: &[f32], qw: &[f32], y: &mut [u8], nmax: i32) {
    let search = qkx3(nmax);
    let bytes = if nmax == 15 { q4_k::BYTES } else { q5_k::BYTES };
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 32];
    let mut weight = [0f32; 32];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let mut sw = [0f32; 8];
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
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
        let d_block = make_qp_quants(63, &scales, &mut ls, &sw);
        let m_block = make_qp_quants(63, &mins, &mut lm, &sw);
        if nmax == 31 {
            // only quantize_row_q5_K_impl caps them (`ls = MIN(63, ls)`)
            ls = ls.map(|v| v.min(63));
            lm = lm.map(|v| v.min(63));
        }
        pack_k4(&ls, &lm, &mut yb[4..16]);
        write_f16(&mut yb[0..2], d_block);
        write_f16(&mut yb[2..4], m_block);
        q4_k::requantize_with_stored_scales(xb, &yb[..16], nmax, &mut l);
        if nmax == 15 {
            q4_k::pack_nibbles(&l, &mut yb[16..]);
        } else {
            q5_k::pack(&l, &mut yb[16..]);
        }
    }
}

/// `quantize_row_q6_K_impl`: the reference algorithm with the importance values themselves as
/// the weights of each sub-block's `make_qx_quants(16, 32)`.
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
