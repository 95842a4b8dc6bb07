//! Q8_0: 32 values per 34-byte block, `d: f16` then `qs: i8[32]`; `x = qs * d`.
//!
//! Port of ggml's `quantize_row_q8_0_ref` / `dequantize_row_q8_0`: `d = amax / 127` in f32,
//! quantized with the unrounded `1/d` and `roundf` (ties away from zero); only the stored
//! scale is rounded to fp16.

use super::lanes;
use super::q4::{block, has_nan};
use super::{read_f16, write_f16};

pub(super) const BLOCK: usize = 32;
pub(super) const BYTES: usize = 2 + BLOCK;

lanes::multiversion!(pub(super) fn quantize, quantize_with => kernel(src: &[f32], dst: &mut [u8]));

/// `quantize_row_q8_0_ref`, the block maximum as a tree on NaN-free blocks (C's `MAX` loop
/// otherwise: it forgets a NaN unless it is last); the lane count is unused.
#[inline(always)]
fn kernel<const N: usize>(src: &[f32], dst: &mut [u8]) {
    for (x, y) in src.chunks_exact(BLOCK).zip(dst.chunks_exact_mut(BYTES)) {
        let x = block(x);
        let amax = if has_nan(x) {
            amax_loop(x)
        } else {
            let mut a = [0f32; BLOCK];
            for i in 0..BLOCK {
                a[i] = x[i].abs();
            }
            let mut n = BLOCK / 2;
            while n > 0 {
                for i in 0..n {
                    a[i] = if a[i + n] > a[i] { a[i + n] } else { a[i] };
                }
                n /= 2;
            }
            a[0]
        };
        quantize_block(x, y, amax);
    }
}

/// The sequential transcription of `quantize_row_q8_0_ref`, the tests' oracle.
#[cfg(test)]
pub(super) fn quantize_reference(src: &[f32], dst: &mut [u8]) {
    for (x, y) in src.chunks_exact(BLOCK).zip(dst.chunks_exact_mut(BYTES)) {
        quantize_block(x, y, amax_loop(x));
    }
}

/// ggml's `amax = MAX(amax, fabsf(x[j]))` loop.
#[inline(always)]
fn amax_loop(x: &[f32]) -> f32 {
    let mut amax = 0.0f32;
    for &v in x {
        let a = v.abs();
        // C's MAX(amax, fabsf(v)): `amax > a ? amax : a`
        amax = if amax > a { amax } else { a };
    }
    amax
}

pub(super) fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BYTES).zip(dst.chunks_exact_mut(BLOCK)) {
        let d = read_f16(b);
        for (out, &q) in y.iter_mut().zip(&b[2..BYTES]) {
            *out = f32::from(q as i8) * d;
        }
    }
}

#[inline(always)]
fn quantize_block(x: &[f32], y: &mut [u8], amax: f32) {
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    write_f16(y, d);
    for (q, &v) in y[2..BYTES].iter_mut().zip(x) {
        *q = roundf(v * id) as i8 as u8;
    }
}

/// C's `roundf` (half away from zero) converted to an integer, for |v| < 2^31; no libm call.
/// `v - trunc(v)` is exact in f32, so the comparison with 0.5 decides ties exactly.
#[inline(always)]
pub(super) fn roundf(v: f32) -> i32 {
    let t = super::q4::cvtt_i32(v);
    let frac = v - t as f32;
    if frac >= 0.5 {
        t.wrapping_add(1)
    } else if frac <= -0.5 {
        t.wrapping_sub(1)
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundf_rounds_half_away_from_zero() {
        for (v, r) in [
            (0.5f32, 1),
            (1.5, 2),
            (2.5, 3),
            (-0.5, -1),
            (-2.5, -3),
            (0.49999997, 0),
            (-0.49999997, 0),
            (126.5, 127),
            (8388607.5, 8388608),
            (0.0, 0),
        ] {
            assert_eq!(roundf(v), r, "{v}");
            assert_eq!(roundf(v) as f32, v.round(), "{v}");
        }
    }

    #[test]
    fn integers_with_amax_127_round_trip_exactly() {
        let x: Vec<f32> = (0..32).map(|i| (i * 8 - 127) as f32).collect();
        let mut y = [0u8; BYTES];
        quantize_block(&x, &mut y, amax_loop(&x));
        assert_eq!(&y[..2], &[0x00, 0x3C], "d = 1.0 in fp16");
        let mut back = [0f32; BLOCK];
        dequantize(&y, &mut back);
        assert_eq!(x, back);
    }
}
