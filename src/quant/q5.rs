//! Q5_0 and Q5_1: 32 values per block, 5-bit quants split into nibbles plus a 32-bit mask.
//!
//! - Q5_0 (22 bytes): `d: f16`, `qh: u8[4]`, `qs: u8[16]`; `x = (q - 16) * d`, `d = max/-16`
//!   with `max` the signed value of largest magnitude (first on ties).
//! - Q5_1 (24 bytes): `d: f16`, `m: f16`, `qh: u8[4]`, `qs: u8[16]`; `x = q * d + m`,
//!   `d = (max - min) / 31`.
//!
//! Packing: `qs[j]` = low nibble of q[j] | low nibble of q[j + 16] << 4; bit 4 of q[j] is bit
//! j of the little-endian u32 `qh`, bit 4 of q[j + 16] is bit j + 16. Quants are
//! `MIN(31, (int8_t)(x * id + 16.5f))` (Q5_0) and `(uint8_t)((x - min) * id + 0.5f)` (Q5_1,
//! no cap), as in ggml's `quantize_row_q5_{0,1}_ref`.

use super::lanes;
use super::q4::{block, block_min_max, block_signed_absmax, trunc_i8};
#[cfg(test)]
use super::q4::{min_max, signed_absmax};
use super::{read_f16, write_f16};

pub(super) const BLOCK: usize = 32;
pub(super) const Q5_0_BYTES: usize = 2 + 4 + BLOCK / 2;
pub(super) const Q5_1_BYTES: usize = 4 + 4 + BLOCK / 2;

/// Packs 32 five-bit quants into `qh` (4 bytes) and `qs` (16 bytes).
#[inline(always)]
fn pack(q: &[u8; BLOCK], qh: &mut [u8], qs: &mut [u8]) {
    let mut bits = 0u32;
    for j in 0..BLOCK / 2 {
        let (q0, q1) = (q[j], q[j + BLOCK / 2]);
        qs[j] = (q0 & 0x0F) | ((q1 & 0x0F) << 4);
        bits |= u32::from((q0 & 0x10) >> 4) << j;
        bits |= u32::from((q1 & 0x10) >> 4) << (j + BLOCK / 2);
    }
    qh[..4].copy_from_slice(&bits.to_le_bytes());
}

/// The 32 five-bit quants of a block, in value order, as ggml's dequantizers read them.
#[inline(always)]
fn unpack(qh: &[u8], qs: &[u8], mut each: impl FnMut(usize, i32)) {
    let bits = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    for (j, &q) in qs[..BLOCK / 2].iter().enumerate() {
        let xh0 = ((bits >> j) << 4) & 0x10;
        let xh1 = (bits >> (j + 12)) & 0x10;
        each(j, (u32::from(q & 0x0F) | xh0) as i32);
        each(j + BLOCK / 2, (u32::from(q >> 4) | xh1) as i32);
    }
}

lanes::multiversion!(pub(super) fn quantize_q5_0, quantize_q5_0_with => q5_0_kernel(src: &[f32], dst: &mut [u8]));
lanes::multiversion!(pub(super) fn quantize_q5_1, quantize_q5_1_with => q5_1_kernel(src: &[f32], dst: &mut [u8]));

/// `quantize_row_q5_0_ref`, its block reduction as a tree; the lane count is unused.
#[inline(always)]
fn q5_0_kernel<const N: usize>(src: &[f32], dst: &mut [u8]) {
    for (x, y) in src
        .chunks_exact(BLOCK)
        .zip(dst.chunks_exact_mut(Q5_0_BYTES))
    {
        let x = block(x);
        q5_0_block(x, y, block_signed_absmax(x));
    }
}

#[inline(always)]
fn q5_0_block(x: &[f32; BLOCK], y: &mut [u8], max: f32) {
    let mut q = [0u8; BLOCK];
    let d = max / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    write_f16(y, d);
    for (qi, &v) in q.iter_mut().zip(x) {
        let t = trunc_i8(v * id + 16.5);
        *qi = (if 31 < t { 31 } else { t }) as u8;
    }
    let (qh, qs) = y[2..].split_at_mut(4);
    pack(&q, qh, qs);
}

/// The sequential transcription of `quantize_row_q5_0_ref`, the tests' oracle.
#[cfg(test)]
pub(super) fn quantize_q5_0_reference(src: &[f32], dst: &mut [u8]) {
    for (x, y) in src
        .chunks_exact(BLOCK)
        .zip(dst.chunks_exact_mut(Q5_0_BYTES))
    {
        q5_0_block(block(x), y, signed_absmax(x));
    }
}

pub(super) fn dequantize_q5_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src
        .chunks_exact(Q5_0_BYTES)
        .zip(dst.chunks_exact_mut(BLOCK))
    {
        let d = read_f16(b);
        unpack(&b[2..6], &b[6..], |j, q| y[j] = (q - 16) as f32 * d);
    }
}

/// `quantize_row_q5_1_ref`, its block reduction as a tree; the lane count is unused.
#[inline(always)]
fn q5_1_kernel<const N: usize>(src: &[f32], dst: &mut [u8]) {
    for (x, y) in src
        .chunks_exact(BLOCK)
        .zip(dst.chunks_exact_mut(Q5_1_BYTES))
    {
        let x = block(x);
        let (min, max) = block_min_max(x);
        q5_1_block(x, y, min, max);
    }
}

#[inline(always)]
fn q5_1_block(x: &[f32; BLOCK], y: &mut [u8], min: f32, max: f32) {
    let mut q = [0u8; BLOCK];
    let d = (max - min) / 31.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    write_f16(&mut y[0..2], d);
    write_f16(&mut y[2..4], min);
    for (qi, &v) in q.iter_mut().zip(x) {
        *qi = trunc_i8((v - min) * id + 0.5) as u8;
    }
    let (qh, qs) = y[4..].split_at_mut(4);
    pack(&q, qh, qs);
}

/// The sequential transcription of `quantize_row_q5_1_ref`, the tests' oracle.
#[cfg(test)]
pub(super) fn quantize_q5_1_reference(src: &[f32], dst: &mut [u8]) {
    for (x, y) in src
        .chunks_exact(BLOCK)
        .zip(dst.chunks_exact_mut(Q5_1_BYTES))
    {
        let (min, max) = min_max(x);
        q5_1_block(block(x), y, min, max);
    }
}

pub(super) fn dequantize_q5_1(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src
        .chunks_exact(Q5_1_BYTES)
        .zip(dst.chunks_exact_mut(BLOCK))
    {
        let d = read_f16(&b[0..2]);
        let m = read_f16(&b[2..4]);
        unpack(&b[4..8], &b[8..], |j, q| y[j] = q as f32 * d + m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q5_0_high_bits_go_to_bit_j_and_j_plus_16() {
        // max = -16 -> d = 1; x = q - 16.
        let mut x = [0f32; BLOCK];
        x[0] = -16.0; // q 0
        x[2] = 15.0; // q 31: high bit -> bit 2
        x[18] = 0.0; // q 16: high bit -> bit 18
        x[17] = -1.0; // q 15: no high bit
        let mut y = [0u8; Q5_0_BYTES];
        quantize_q5_0(&x, &mut y);
        let qh = u32::from_le_bytes([y[2], y[3], y[4], y[5]]);
        assert_eq!(qh & (1 << 2), 1 << 2);
        assert_eq!(qh & (1 << 18), 1 << 18);
        assert_eq!(qh & (1 << 17), 0);
        assert_eq!(qh & 1, 0);
        let mut back = [0f32; BLOCK];
        dequantize_q5_0(&y, &mut back);
        assert_eq!(back, x);
    }

    #[test]
    fn q5_1_constant_block_stores_min_and_zero_scale() {
        let x = [0.75f32; BLOCK];
        let mut y = [0u8; Q5_1_BYTES];
        quantize_q5_1(&x, &mut y);
        assert_eq!(read_f16(&y[0..2]), 0.0);
        assert_eq!(read_f16(&y[2..4]), 0.75);
        let mut back = [0f32; BLOCK];
        dequantize_q5_1(&y, &mut back);
        assert_eq!(back, x);
    }
}
