//! Shared machinery of the K-quants (Q2_K..Q6_K, 256-value super-blocks): ggml's rounding
//! helper `nearest_int`, its scale searches `make_qx_quants`, `make_q3_quants` and
//! `make_qkx2_quants`, and the 6-bit scale/min packing of Q4_K/Q5_K.
//!
//! These are transcriptions of `ggml-quants.c`, kept in C's evaluation order: each `a*b*c`
//! is `(a*b)*c`, int operands are converted to f32 where C converts them, sums accumulate
//! left to right, and nothing is fused (the C oracle is built without FMA contraction).
//! Changing any of that changes bytes.

/// ggml's `nearest_int`: round half to even via the 1.5 * 2^23 trick. Exact for |f| <= 2^22
/// (ggml asserts that); outside it returns what ggml's bit manipulation returns.
#[inline]
pub(super) fn nearest_int(f: f32) -> i32 {
    let val = f + 12_582_912.0;
    (val.to_bits() as i32 & 0x007F_FFFF) - 0x0040_0000
}

/// ggml's `GROUP_MAX_EPS`: groups whose largest magnitude is below this quantize to zero.
pub(super) const GROUP_MAX_EPS: f32 = 1e-15;

/// `make_qx_quants(n, nmax, x, L, rmse_type = 1, qw)`: signed quants `L[i] - nmax` in
/// [-nmax, nmax-1] with weights `qw` (or `x^2` when `qw` is `None`), trying 18 scales around
/// `-nmax/max`; returns the least-squares scale of the best one.
pub(super) fn make_qx_quants(nmax: i32, x: &[f32], qw: Option<&[f32]>, l_out: &mut [i8]) -> f32 {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let weight = |i: usize, v: f32| match qw {
        Some(w) => w[i],
        None => v * v,
    };
    let nmax_f = nmax as f32;
    let clamp = |l: i32| (-nmax).max((nmax - 1).min(l));
    let mut iscale = -nmax_f / max;
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for (i, (li, &v)) in l_out.iter_mut().zip(x).enumerate() {
        let l = clamp(nearest_int(iscale * v));
        *li = (l + nmax) as i8;
        let w = weight(i, v);
        let lf = l as f32;
        sumlx += w * v * lf;
        suml2 += w * lf * lf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9i32..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax_f + 0.1f32 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for (i, &v) in x.iter().enumerate() {
            let lf = clamp(nearest_int(iscale * v)) as f32;
            let w = weight(i, v);
            sumlx += w * v * lf;
            suml2 += w * lf * lf;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (li, &v) in l_out.iter_mut().zip(x) {
                *li = (nmax + clamp(nearest_int(iscale * v))) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// `make_q3_quants(n, nmax, x, L, do_rmse = true)`: signed quants `L[i] - nmax` in
/// [-nmax, nmax-1], refined coordinate-wise (up to 5 passes) to minimise the `x^2`-weighted
/// error; returns the least-squares scale.
#[cfg(test)]
pub(super) fn make_q3_quants_rmse(nmax: i32, x: &[f32], l_out: &mut [i8]) -> f32 {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let clamp = |l: i32| (-nmax).max((nmax - 1).min(l));
    let iscale = -(nmax as f32) / max;
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for (li, &v) in l_out.iter_mut().zip(x) {
        let l = clamp(nearest_int(iscale * v));
        *li = l as i8;
        let w = v * v;
        let lf = l as f32;
        sumlx += w * v * lf;
        suml2 += w * lf * lf;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for (li, &v) in l_out.iter_mut().zip(x) {
            let w = v * v;
            let cur = f32::from(*li);
            let mut slx = sumlx - w * v * cur;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * cur * cur;
                let new_l = clamp(nearest_int(v * sl2 / slx));
                if new_l != i32::from(*li) {
                    let nf = new_l as f32;
                    slx += w * v * nf;
                    sl2 += w * nf * nf;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *li = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    for li in l_out.iter_mut() {
        *li += nmax as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Search parameters of `make_qkx2_quants`.
pub(super) struct Qkx2 {
    pub nmax: i32,
    pub rmin: f32,
    pub rdelta: f32,
    pub nstep: i32,
    pub use_mad: bool,
}

/// `make_qkx2_quants`: unsigned quants `L` in [0, nmax] for `x ≈ scale * L - the_min`,
/// weighted least squares over `nstep + 1` candidate scales. Returns `(scale, the_min)`
/// (`the_min >= 0`). `laux` is scratch of `x.len()` bytes.
#[cfg(test)]
pub(super) fn make_qkx2_quants(
    p: &Qkx2,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    laux: &mut [u8],
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out[..n].fill(0);
        return (0.0, -min);
    }
    let nmax = p.nmax;
    let err = |diff: f32| if p.use_mad { diff.abs() } else { diff * diff };
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l_out[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        best_error += weights[i] * err(diff);
    }
    if p.nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=p.nstep {
        iscale = (p.rmin + p.rdelta * is as f32 + nmax as f32) / (max - min);
        let mut sum_l = 0.0f32;
        let mut sum_l2 = 0.0f32;
        let mut sum_xl = 0.0f32;
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = l as u8;
            let w = weights[i];
            let lf = l as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * err(diff);
            }
            if cur_error < best_error {
                l_out[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Q4_K/Q5_K `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` (0..8) from the
/// 12 packed bytes.
#[inline]
pub(super) fn get_scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The Q4_K/Q5_K super-block scales: per-sub-block `(scale, min)` from `make_qkx2_quants`
/// quantized to 6 bits against `max/63`, packed into `packed` (12 bytes); returns the f32
/// `(d, dmin)` to store as fp16. Mirrors the middle of `quantize_row_q{4,5}_K_ref`.
#[inline(always)]
pub(super) fn pack_scales_mins(
    scales: &[f32; 8],
    mins: &[f32; 8],
    packed: &mut [u8],
) -> (f32, f32) {
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..8 {
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    // `uint8_t ls = nearest_int(...)`: wraps to 8 bits, then MIN(63, ls)
    let ls = std::array::from_fn(|j| (nearest_int(inv_scale * scales[j]) as u8).min(63));
    let lm = std::array::from_fn(|j| (nearest_int(inv_min * mins[j]) as u8).min(63));
    pack_k4(&ls, &lm, packed);
    (max_scale / 63.0, max_min / 63.0)
}

/// The Q4_K/Q5_K 12-byte scale/min packing of eight 6-bit scales `ls` and mins `lm`, with C's
/// uint8 semantics: bits above the sixth are dropped where ggml's stores drop them.
#[inline(always)]
pub(super) fn pack_k4(ls: &[u8; 8], lm: &[u8; 8], packed: &mut [u8]) {
    packed[..12].fill(0);
    for j in 0..8 {
        let (ls, lm) = (ls[j], lm[j]);
        if j < 4 {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = (ls & 0x0F) | ((lm & 0x0F) << 4);
            packed[j - 4] |= (ls >> 4) << 6;
            packed[j] |= (lm >> 4) << 6;
        }
    }
}

/// `make_qp_quants(n, nmax, x, L, quant_weights)`: unsigned quants `L` in [0, nmax] of the
/// non-negative `x` (the super-block scales or mins) with weights `qw`, a 9-scale search then
/// up to 5 coordinate-descent passes; returns the least-squares scale. `L` is `uint8_t` in C:
/// a negative quant (possible only for negative `x`) wraps, and the wrapped value is what later
/// passes read, so this keeps the same wrapping.
pub(super) fn make_qp_quants(nmax: i32, x: &[f32], l_out: &mut [u8], qw: &[f32]) -> f32 {
    let mut max = 0.0f32;
    for &v in x {
        // MAX(max, x[i])
        max = if max > v { max } else { v };
    }
    if max < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let nmax_f = nmax as f32;
    let mut iscale = nmax_f / max;
    for (l, &v) in l_out.iter_mut().zip(x) {
        *l = nearest_int(iscale * v) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0.0f32;
    for ((&l, &v), &w) in l_out.iter().zip(x).zip(qw) {
        let diff = v - scale * f32::from(l);
        best_mse += w * diff * diff;
    }
    for is in -4i32..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1f32 * is as f32 + nmax_f) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0.0f32;
        for (&v, &w) in x.iter().zip(qw) {
            let l = nmax.min(nearest_int(iscale_is * v));
            let diff = v - scale_is * l as f32;
            mse += w * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for ((lo, &v), &w) in l_out.iter_mut().zip(x).zip(qw) {
        let l = nmax.min(nearest_int(iscale * v));
        *lo = l as u8;
        let lf = l as f32;
        sumlx += w * v * lf;
        suml2 += w * lf * lf;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for ((lo, &v), &w) in l_out.iter_mut().zip(x).zip(qw) {
            let cur = f32::from(*lo);
            let mut slx = sumlx - w * v * cur;
            let mut sl2 = suml2 - w * cur * cur;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nmax.min(nearest_int(v * sl2 / slx));
                if new_l != i32::from(*lo) {
                    let nf = new_l as f32;
                    slx += w * v * nf;
                    sl2 += w * nf * nf;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *lo = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Q4_K/Q5_K sub-block search: the `av_x + |x|` weights and `make_qkx2_quants` for each of
/// the 8 sub-blocks of 32 values. Returns per-sub-block `(scales, mins)`; fills `l`.
#[cfg(test)]
pub(super) fn search_sub_blocks_32(p: &Qkx2, x: &[f32], l: &mut [u8; 256]) -> ([f32; 8], [f32; 8]) {
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let mut weights = [0f32; 32];
    let mut laux = [0u8; 32];
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (scale, min) =
            make_qkx2_quants(p, xs, &weights, &mut l[32 * j..32 * j + 32], &mut laux);
        scales[j] = scale;
        mins[j] = min;
    }
    (scales, mins)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        for (v, r) in [
            (0.5f32, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (-2.5, -2),
            (3.49, 3),
            (-3.51, -4),
            (4194303.0, 4194303),
            (-4194303.0, -4194303),
        ] {
            assert_eq!(nearest_int(v), r, "{v}");
            assert_eq!(nearest_int(v) as f32, v.round_ties_even(), "{v}");
        }
    }

    #[test]
    fn scale_min_packing_round_trips_all_6_bit_values() {
        for seed in 0..64u32 {
            // with a maximum of 63, inv = 1 and each 6-bit value is stored as given
            let ls: Vec<u8> = (0..8u32)
                .map(|j| {
                    if j == 0 {
                        63
                    } else {
                        ((seed + 7 * j) & 63) as u8
                    }
                })
                .collect();
            let lm: Vec<u8> = (0..8u32)
                .map(|j| {
                    if j == 5 {
                        63
                    } else {
                        ((seed * 3 + 11 * j) & 63) as u8
                    }
                })
                .collect();
            let scales: [f32; 8] = std::array::from_fn(|j| f32::from(ls[j]));
            let mins: [f32; 8] = std::array::from_fn(|j| f32::from(lm[j]));
            let mut packed = [0xFFu8; 12];
            assert_eq!(pack_scales_mins(&scales, &mins, &mut packed), (1.0, 1.0));
            for j in 0..8 {
                assert_eq!(
                    get_scale_min_k4(j, &packed),
                    (ls[j], lm[j]),
                    "seed {seed} j {j}"
                );
            }
        }
    }
}
