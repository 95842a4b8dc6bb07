//! Q4_0 and Q4_1: 32 values per block, 4-bit quants.
//!
//! - Q4_0 (18 bytes): `d: f16`, `qs: u8[16]`; `x = (q - 8) * d`. `d = max / -8` where `max`
//!   is the signed value of largest magnitude (the first one on ties), so that extreme maps
//!   to q = 0 exactly and the opposite sign clips at q = 15.
//! - Q4_1 (20 bytes): `d: f16`, `m: f16`, `qs: u8[16]`; `x = q * d + m`, `d = (max - min)/15`.
//!
//! Nibble order (both): byte j holds value j in its low nibble and value j + 16 in its high
//! nibble. Quants are `(int8_t)(x * id + 8.5f)` / `(int8_t)((x - min) * id + 0.5f)`: C
//! truncation toward zero, capped at 15 (ggml's `quantize_row_q4_{0,1}_ref`).

use super::lanes;
use super::{read_f16, write_f16};

pub(super) const BLOCK: usize = 32;
pub(super) const Q4_0_BYTES: usize = 2 + BLOCK / 2;
pub(super) const Q4_1_BYTES: usize = 4 + BLOCK / 2;

/// C's float-to-int conversion as x86-64 compiles it (`cvttss2si`): truncation toward zero,
/// and `i32::MIN` for NaN and values outside i32. Written so that LLVM vectorizes it: Rust's
/// saturating `as i32` is scalarized lane by lane on x86 (a compare and two branches per value,
/// most of a Q4_1 block's time).
#[inline(always)]
pub(super) fn cvtt_i32(f: f32) -> i32 {
    let in_range = (-2_147_483_648.0..2_147_483_648.0).contains(&f);
    let safe = if in_range { f } else { 0.0 };
    // SAFETY: `safe` is finite and inside i32's range.
    let i = unsafe { safe.to_int_unchecked::<i32>() };
    if in_range {
        i
    } else {
        i32::MIN
    }
}

/// C's `(int8_t)f` on x86-64: [`cvtt_i32`], keep the low byte.
#[inline(always)]
pub(super) fn trunc_i8(f: f32) -> i8 {
    cvtt_i32(f) as i8
}

/// C's `MIN(cap, q)` on an int8 quant, stored as uint8.
#[inline(always)]
fn cap(q: i8, cap: i8) -> u8 {
    (if cap < q { cap } else { q }) as u8
}

/// The signed value of largest magnitude, first one on ties (`if (amax < fabsf(v))`).
#[inline(always)]
pub(super) fn signed_absmax(x: &[f32]) -> f32 {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// (min, max) as ggml's Q4_1/Q5_1 loops find them, starting from (FLT_MAX, -FLT_MAX).
#[inline(always)]
pub(super) fn min_max(x: &[f32]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// Whether a block holds a NaN. The tree reductions below equal ggml's sequential loops only
/// without NaN (a NaN is skipped or kept depending on where it sits), so blocks with one take
/// the sequential loops.
#[inline(always)]
pub(super) fn has_nan(x: &[f32; BLOCK]) -> bool {
    let mut any = false;
    for &v in x {
        any |= v.is_nan();
    }
    any
}

/// The largest (`LARGEST`) or smallest value of `v`, by a tree of comparisons (vector
/// instructions; without NaN the order cannot change the value).
#[inline(always)]
fn tree_extreme<const LARGEST: bool>(mut v: [f32; BLOCK]) -> f32 {
    let mut n = BLOCK / 2;
    while n > 0 {
        for i in 0..n {
            let right = if LARGEST {
                v[i + n] > v[i]
            } else {
                v[i + n] < v[i]
            };
            v[i] = if right { v[i + n] } else { v[i] };
        }
        n /= 2;
    }
    v[0]
}

/// The first element of `x` whose key equals `key` (one exists).
#[inline(always)]
fn first_equal(x: &[f32; BLOCK], keys: &[f32; BLOCK], key: f32) -> f32 {
    let mut bits = 0u32;
    for (i, &k) in keys.iter().enumerate() {
        bits |= u32::from(k == key) << i;
    }
    x[(bits.trailing_zeros() as usize).min(BLOCK - 1)]
}

/// [`signed_absmax`] for a NaN-free block: the largest magnitude by a tree, then the first
/// value with that magnitude (the sequential loop keeps the first of equal magnitudes); 0 when
/// every magnitude is 0 (the loop's starting value).
#[inline(always)]
pub(super) fn signed_absmax_tree(x: &[f32; BLOCK]) -> f32 {
    let mut a = [0f32; BLOCK];
    for i in 0..BLOCK {
        a[i] = x[i].abs();
    }
    let amax = tree_extreme::<true>(a);
    if amax > 0.0 {
        first_equal(x, &a, amax)
    } else {
        0.0
    }
}

/// [`min_max`] for a NaN-free block: the extreme values by trees; the loop's starting values
/// when no element beats them. An extreme of zero takes the sign of the first zero (the loop's
/// first-wins); any other extreme has a single bit pattern, so the tree's value is the loop's.
#[inline(always)]
pub(super) fn min_max_tree(x: &[f32; BLOCK]) -> (f32, f32) {
    let lo = tree_extreme::<false>(*x);
    let hi = tree_extreme::<true>(*x);
    let settle = |v: f32, start: f32, beats: bool| {
        if !beats {
            start
        } else if v == 0.0 {
            first_equal(x, x, v)
        } else {
            v
        }
    };
    (
        settle(lo, f32::MAX, lo < f32::MAX),
        settle(hi, -f32::MAX, hi > -f32::MAX),
    )
}

/// The signed maximum of a block: the tree when it is NaN-free, else ggml's loop.
#[inline(always)]
pub(super) fn block_signed_absmax(x: &[f32; BLOCK]) -> f32 {
    if has_nan(x) {
        signed_absmax(x)
    } else {
        signed_absmax_tree(x)
    }
}

/// The (min, max) of a block: the trees when it is NaN-free, else ggml's loop.
#[inline(always)]
pub(super) fn block_min_max(x: &[f32; BLOCK]) -> (f32, f32) {
    if has_nan(x) {
        min_max(x)
    } else {
        min_max_tree(x)
    }
}

/// One 32-value block as an array (the slices come from `chunks_exact(BLOCK)`).
#[inline(always)]
pub(super) fn block(x: &[f32]) -> &[f32; BLOCK] {
    x.try_into().unwrap_or(&[0.0; BLOCK])
}

lanes::multiversion!(pub(super) fn quantize_q4_0, quantize_q4_0_with => q4_0_kernel(src: &[f32], dst: &mut [u8]));
lanes::multiversion!(pub(super) fn quantize_q4_1, quantize_q4_1_with => q4_1_kernel(src: &[f32], dst: &mut [u8]));

/// `quantize_row_q4_0_ref`, its block reduction as a tree; the lane count is unused (each
/// block is vectorized along its values).
#[inline(always)]
fn q4_0_kernel<const N: usize>(src: &[f32], dst: &mut [u8]) {
    for (x, y) in src
        .chunks_exact(BLOCK)
        .zip(dst.chunks_exact_mut(Q4_0_BYTES))
    {
        let x = block(x);
        q4_0_block(x, y, block_signed_absmax(x));
    }
}

#[inline(always)]
fn q4_0_block(x: &[f32; BLOCK], y: &mut [u8], max: f32) {
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    write_f16(y, d);
    let (lo, hi) = x.split_at(BLOCK / 2);
    for ((q, &x0), &x1) in y[2..].iter_mut().zip(lo).zip(hi) {
        let xi0 = cap(trunc_i8(x0 * id + 8.5), 15);
        let xi1 = cap(trunc_i8(x1 * id + 8.5), 15);
        *q = xi0 | (xi1 << 4);
    }
}

/// The sequential transcription of `quantize_row_q4_0_ref`, the tests' oracle.
#[cfg(test)]
pub(super) fn quantize_q4_0_reference(src: &[f32], dst: &mut [u8]) {
    for (x, y) in src
        .chunks_exact(BLOCK)
        .zip(dst.chunks_exact_mut(Q4_0_BYTES))
    {
        let max = signed_absmax(x);
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        write_f16(y, d);
        let (lo, hi) = x.split_at(BLOCK / 2);
        for ((q, &x0), &x1) in y[2..].iter_mut().zip(lo).zip(hi) {
            let xi0 = cap(trunc_i8(x0 * id + 8.5), 15);
            let xi1 = cap(trunc_i8(x1 * id + 8.5), 15);
            *q = xi0 | (xi1 << 4);
        }
    }
}

pub(super) fn dequantize_q4_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src
        .chunks_exact(Q4_0_BYTES)
        .zip(dst.chunks_exact_mut(BLOCK))
    {
        let d = read_f16(b);
        let (lo, hi) = y.split_at_mut(BLOCK / 2);
        for ((&q, y0), y1) in b[2..].iter().zip(lo).zip(hi) {
            *y0 = ((q & 0x0F) as i32 - 8) as f32 * d;
            *y1 = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

#[inline(always)]
fn q4_1_kernel<const N: usize>(src: &[f32], dst: &mut [u8]) {
    for (x, y) in src
        .chunks_exact(BLOCK)
        .zip(dst.chunks_exact_mut(Q4_1_BYTES))
    {
        let x = block(x);
        let (min, max) = block_min_max(x);
        q4_1_block(x, y, min, max);
    }
}

#[inline(always)]
fn q4_1_block(x: &[f32; BLOCK], y: &mut [u8], min: f32, max: f32) {
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    write_f16(&mut y[0..2], d);
    write_f16(&mut y[2..4], min);
    let (lo, hi) = x.split_at(BLOCK / 2);
    for ((q, &x0), &x1) in y[4..].iter_mut().zip(lo).zip(hi) {
        let xi0 = cap(trunc_i8((x0 - min) * id + 0.5), 15);
        let xi1 = cap(trunc_i8((x1 - min) * id + 0.5), 15);
        *q = xi0 | (xi1 << 4);
    }
}

/// The sequential transcription of `quantize_row_q4_1_ref`, the tests' oracle.
#[cfg(test)]
pub(super) fn quantize_q4_1_reference(src: &[f32], dst: &mut [u8]) {
    for (x, y) in src
        .chunks_exact(BLOCK)
        .zip(dst.chunks_exact_mut(Q4_1_BYTES))
    {
        let (min, max) = min_max(x);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        write_f16(&mut y[0..2], d);
        write_f16(&mut y[2..4], min);
        let (lo, hi) = x.split_at(BLOCK / 2);
        for ((q, &x0), &x1) in y[4..].iter_mut().zip(lo).zip(hi) {
            let xi0 = cap(trunc_i8((x0 - min) * id + 0.5), 15);
            let xi1 = cap(trunc_i8((x1 - min) * id + 0.5), 15);
            *q = xi0 | (xi1 << 4);
        }
    }
}

pub(super) fn dequantize_q4_1(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src
        .chunks_exact(Q4_1_BYTES)
        .zip(dst.chunks_exact_mut(BLOCK))
    {
        let d = read_f16(&b[0..2]);
        let m = read_f16(&b[2..4]);
        let (lo, hi) = y.split_at_mut(BLOCK / 2);
        for ((&q, y0), y1) in b[4..].iter().zip(lo).zip(hi) {
            *y0 = (q & 0x0F) as f32 * d + m;
            *y1 = (q >> 4) as f32 * d + m;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_0_packs_value_j_and_j_plus_16_in_one_byte() {
        // max = -8 -> d = 1, id = 1; x = q - 8.
        let mut x = [0f32; BLOCK];
        x[0] = -8.0; // q 0
        x[16] = 7.0; // q 15
        x[1] = 3.0; // q 11
        x[17] = -5.0; // q 3
        let mut y = [0u8; Q4_0_BYTES];
        quantize_q4_0(&x, &mut y);
        assert_eq!(&y[..2], &[0x00, 0x3C]);
        assert_eq!(y[2], 0xF0);
        assert_eq!(y[3], 0x3B);
        let mut back = [0f32; BLOCK];
        dequantize_q4_0(&y, &mut back);
        assert_eq!(back, x);
    }

    #[test]
    fn q4_0_first_of_equal_magnitudes_sets_the_sign() {
        let mut x = [0f32; BLOCK];
        x[3] = 2.0;
        x[10] = -2.0;
        let mut y = [0u8; Q4_0_BYTES];
        quantize_q4_0(&x, &mut y);
        assert_eq!(read_f16(&y), -0.25);
        x[3] = -2.0;
        x[10] = 2.0;
        quantize_q4_0(&x, &mut y);
        assert_eq!(read_f16(&y), 0.25);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn cvtt_i32_is_the_x86_instruction() {
        use std::arch::x86_64::{_mm_cvttss_si32, _mm_set_ss};
        let mut v = vec![
            0.0,
            -0.0,
            2.9,
            -2.9,
            15.5,
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN,
            3e9,
            -3e9,
            -2_147_483_648.0,
            2_147_483_520.0,
            2_147_483_648.0,
            -2_147_483_904.0,
            f32::MIN_POSITIVE,
            1e-45,
        ];
        let mut bits = 0x1234_5678u32;
        for _ in 0..100_000 {
            bits ^= bits << 13;
            bits ^= bits >> 17;
            bits ^= bits << 5;
            v.push(f32::from_bits(bits));
        }
        for f in v {
            // SAFETY: SSE is part of x86-64.
            let want = unsafe { _mm_cvttss_si32(_mm_set_ss(f)) };
            assert_eq!(cvtt_i32(f), want, "{f:e} ({:#x})", f.to_bits());
        }
    }

    #[test]
    fn truncation_after_half_offset_rounds_ties_up() {
        // Q4_1 with min 0, max 15: d = 1, q = trunc(x + 0.5): 2.5 -> 3, 3.5 -> 4.
        let mut x = [0f32; BLOCK];
        x[1] = 15.0;
        x[2] = 2.5;
        x[3] = 3.5;
        let mut y = [0u8; Q4_1_BYTES];
        quantize_q4_1(&x, &mut y);
        assert_eq!(y[4 + 2] & 0x0F, 3);
        assert_eq!(y[4 + 3] & 0x0F, 4);
    }
}
