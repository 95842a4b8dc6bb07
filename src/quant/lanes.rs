//! SIMD lanes across blocks: the K-quant scale searches run for N sub-blocks at once, one
//! sub-block per lane, each lane doing exactly the scalar arithmetic of ggml's reference code in
//! the same order (values visited in order, sums accumulated left to right, no fused
//! multiply-add, IEEE division and square root). Data-dependent choices become per-lane
//! selects, so every lane ends with the bits the scalar code would produce.
//!
//! Owns: the lane vector types and the three searches — `make_qkx2_quants` (also
//! `make_qkx3_quants`, identical given weights), `make_qx_quants` and `make_q3_quants` — plus
//! runtime dispatch to AVX-512 (16 lanes) or AVX2 (8 lanes) builds of a kernel. The types'
//! drivers (gathering sub-blocks, packing) live with each type.
//!
//! The vectors are plain `[f32; N]` arrays manipulated lane by lane in `#[inline(always)]`
//! functions; compiled inside a `#[target_feature]` function they become single AVX
//! instructions. The per-type finishing steps (re-quantization, packing) are `#[inline(always)]`
//! too, so each lane build also compiles them with its vector instructions; closures are
//! avoided in kernels because a closure the optimizer leaves out of line is compiled without
//! its caller's target features. Rust never contracts `a * b + c` into an FMA, so enabling `fma` cannot change
//! bits.

// Lane loops index by lane number on purpose: the straight `r[k] = a[k] op b[k]` form is what
// LLVM's SLP vectorizer turns into one vector instruction.
#![allow(clippy::needless_range_loop)]

use std::ops::{Add, Div, Mul, Sub};

/// N f32 lanes.
#[derive(Clone, Copy, Debug)]
pub(super) struct F<const N: usize>(pub [f32; N]);

/// N i32 lanes (quants, before conversion).
#[derive(Clone, Copy, Debug)]
pub(super) struct I<const N: usize>(pub [i32; N]);

/// N lane masks.
#[derive(Clone, Copy, Debug)]
pub(super) struct M<const N: usize>(pub [bool; N]);

macro_rules! lanewise {
    ($tr:ident, $f:ident, $op:tt) => {
        impl<const N: usize> $tr for F<N> {
            type Output = F<N>;
            #[inline(always)]
            fn $f(self, o: F<N>) -> F<N> {
                let mut r = [0f32; N];
                for k in 0..N {
                    r[k] = self.0[k] $op o.0[k];
                }
                F(r)
            }
        }
    };
}
lanewise!(Add, add, +);
lanewise!(Sub, sub, -);
lanewise!(Mul, mul, *);
lanewise!(Div, div, /);

impl<const N: usize> F<N> {
    #[inline(always)]
    pub fn splat(v: f32) -> F<N> {
        F([v; N])
    }
    #[inline(always)]
    pub fn map(self, f: impl Fn(f32) -> f32) -> F<N> {
        let mut r = [0f32; N];
        for k in 0..N {
            r[k] = f(self.0[k]);
        }
        F(r)
    }
    #[inline(always)]
    pub fn abs(self) -> F<N> {
        self.map(f32::abs)
    }
    #[inline(always)]
    pub fn sqrt(self) -> F<N> {
        self.map(f32::sqrt)
    }
    #[inline(always)]
    pub fn cmp(self, o: F<N>, f: impl Fn(f32, f32) -> bool) -> M<N> {
        let mut r = [false; N];
        for k in 0..N {
            r[k] = f(self.0[k], o.0[k]);
        }
        M(r)
    }
    #[inline(always)]
    pub fn lt(self, o: F<N>) -> M<N> {
        self.cmp(o, |a, b| a < b)
    }
    #[inline(always)]
    pub fn gt(self, o: F<N>) -> M<N> {
        self.cmp(o, |a, b| a > b)
    }
    /// ggml's `nearest_int` in every lane (round half to even via the 1.5·2^23 trick).
    #[inline(always)]
    pub fn nearest_int(self) -> I<N> {
        let mut r = [0i32; N];
        for k in 0..N {
            let v = self.0[k] + 12_582_912.0;
            r[k] = (v.to_bits() as i32 & 0x007F_FFFF) - 0x0040_0000;
        }
        I(r)
    }
}

impl<const N: usize> I<N> {
    /// `MAX(lo, MIN(hi, l))`.
    #[inline(always)]
    pub fn clamp(self, lo: i32, hi: i32) -> I<N> {
        let mut r = [0i32; N];
        for k in 0..N {
            r[k] = lo.max(hi.min(self.0[k]));
        }
        I(r)
    }
    #[inline(always)]
    pub fn ne(self, o: I<N>) -> M<N> {
        let mut r = [false; N];
        for k in 0..N {
            r[k] = self.0[k] != o.0[k];
        }
        M(r)
    }
    #[inline(always)]
    pub fn to_f32(self) -> F<N> {
        let mut r = [0f32; N];
        for k in 0..N {
            r[k] = self.0[k] as f32;
        }
        F(r)
    }
}

impl<const N: usize> M<N> {
    #[inline(always)]
    pub fn and(self, o: M<N>) -> M<N> {
        let mut r = [false; N];
        for k in 0..N {
            r[k] = self.0[k] & o.0[k];
        }
        M(r)
    }
    #[inline(always)]
    pub fn or(self, o: M<N>) -> M<N> {
        let mut r = [false; N];
        for k in 0..N {
            r[k] = self.0[k] | o.0[k];
        }
        M(r)
    }
    /// `if m { a } else { b }` per lane, for quants.
    #[inline(always)]
    pub fn select_i(self, a: I<N>, b: I<N>) -> I<N> {
        let mut r = [0i32; N];
        for k in 0..N {
            r[k] = if self.0[k] { a.0[k] } else { b.0[k] };
        }
        I(r)
    }
    #[inline(always)]
    pub fn any(self) -> bool {
        let mut a = false;
        for k in 0..N {
            a |= self.0[k];
        }
        a
    }
    /// `if m { a } else { b }` per lane.
    #[inline(always)]
    pub fn select(self, a: F<N>, b: F<N>) -> F<N> {
        let mut r = [0f32; N];
        for k in 0..N {
            r[k] = if self.0[k] { a.0[k] } else { b.0[k] };
        }
        F(r)
    }
}

/// `S` values of N sub-blocks, value-major: `x[i].0[k]` is value i of the sub-block in lane k.
pub(super) type Block<const N: usize, const S: usize> = [F<N>; S];

/// Gathers N consecutive sub-blocks of `S` values from `src` (lane k ← `src[k*S..(k+1)*S]`);
/// lanes past the end of `src` are zero.
#[inline(always)]
pub(super) fn gather<const N: usize, const S: usize>(src: &[f32]) -> Block<N, S> {
    let mut x = [F([0f32; N]); S];
    for (k, sub) in src.chunks_exact(S).take(N).enumerate() {
        for i in 0..S {
            x[i].0[k] = sub[i];
        }
    }
    x
}

/// `use_mad ? fabsf(diff) : diff * diff`.
#[inline(always)]
fn err<const N: usize>(d: F<N>, use_mad: bool) -> F<N> {
    if use_mad {
        d.abs()
    } else {
        d * d
    }
}

/// The result of `make_qkx2_quants` in each lane, and what reproduces its quants: `L[i] =
/// clamp(nearest_int(sel_iscale * (x[i] - sel_min)), 0, nmax)`, or 0 where `flat`.
pub(super) struct Qkx<const N: usize> {
    pub scale: F<N>,
    /// `the_min` (>= 0).
    pub the_min: F<N>,
    pub sel_iscale: F<N>,
    pub sel_min: F<N>,
    pub flat: M<N>,
}

/// `make_qkx2_quants(S, nmax, x, weights, L, &the_min, Laux, rmin, rdelta, nstep, use_mad)`
/// in every lane (`make_qkx3_quants` with weights is the same function).
#[inline(always)]
pub(super) fn qkx_search<const N: usize, const S: usize>(
    x: &Block<N, S>,
    w: &Block<N, S>,
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> Qkx<N> {
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = w[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..S {
        min = x[i].lt(min).select(x[i], min);
        max = x[i].gt(max).select(x[i], max);
        sum_w = sum_w + w[i];
        sum_x = sum_x + w[i] * x[i];
    }
    let zero = F::splat(0.0);
    min = min.gt(zero).select(zero, min);
    let flat = max.cmp(min, |a, b| a == b);
    let nmax_f = F::splat(nmax as f32);
    let iscale = nmax_f / (max - min);
    let mut scale = F::splat(1.0) / iscale;
    let mut best_error = zero;
    for i in 0..S {
        let l = (iscale * (x[i] - min))
            .nearest_int()
            .clamp(0, nmax)
            .to_f32();
        let diff = scale * l + min - x[i];
        best_error = best_error + w[i] * err(diff, use_mad);
    }
    let mut sel_iscale = iscale;
    let mut sel_min = min;
    let mut laux = [zero; S];
    // `if (nstep < 1) return` in C: the loop below then does not run
    for is in 0..=nstep.max(-1) {
        // `min` moves to each accepted candidate's minimum, and the range with it
        let iscale = (F::splat(rmin + rdelta * is as f32) + nmax_f) / (max - min);
        let mut sum_l = zero;
        let mut sum_l2 = zero;
        let mut sum_xl = zero;
        for i in 0..S {
            let l = (iscale * (x[i] - min))
                .nearest_int()
                .clamp(0, nmax)
                .to_f32();
            laux[i] = l;
            let wl = w[i] * l;
            sum_l = sum_l + wl;
            sum_l2 = sum_l2 + wl * l;
            sum_xl = sum_xl + wl * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
        let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
        let pos = this_min.gt(zero);
        this_scale = pos.select(sum_xl / sum_l2, this_scale);
        this_min = pos.select(zero, this_min);
        let mut cur_error = zero;
        for i in 0..S {
            let diff = this_scale * laux[i] + this_min - x[i];
            cur_error = cur_error + w[i] * err(diff, use_mad);
        }
        let better = d.gt(zero).and(cur_error.lt(best_error));
        best_error = better.select(cur_error, best_error);
        scale = better.select(this_scale, scale);
        sel_iscale = better.select(iscale, sel_iscale);
        sel_min = better.select(min, sel_min);
        min = better.select(this_min, min);
    }
    Qkx {
        scale: flat.select(zero, scale),
        // `*the_min = -min`: a negation (-0.0 for 0.0), not a subtraction
        the_min: min.map(|v| -v),
        sel_iscale,
        sel_min,
        flat,
    }
}

/// The quants of lane `k` of a [`qkx_search`], as `make_qkx2_quants` leaves them in `L`.
#[inline(always)]
pub(super) fn qkx_quants<const N: usize>(r: &Qkx<N>, k: usize, x: &[f32], nmax: i32, l: &mut [u8]) {
    if r.flat.0[k] {
        l.fill(0);
        return;
    }
    let (iscale, min) = (r.sel_iscale.0[k], r.sel_min.0[k]);
    for (q, &v) in l.iter_mut().zip(x) {
        let f = iscale * (v - min) + 12_582_912.0;
        let n = (f.to_bits() as i32 & 0x007F_FFFF) - 0x0040_0000;
        *q = n.clamp(0, nmax) as u8;
    }
}

/// The result of `make_qx_quants(S, nmax, x, L, rmse_type 1, qw)` in each lane, and what
/// reproduces its quants: `L[i] = nmax + clamp(nearest_int(sel_iscale * x[i]), -nmax,
/// nmax - 1)`, or 0 where `zero`.
pub(super) struct Qx<const N: usize> {
    pub scale: F<N>,
    pub sel_iscale: F<N>,
    pub zero: M<N>,
}

/// `make_qx_quants(S, nmax, x, L, 1, qw)` in every lane; `w` holds `qw`, or `x*x` for the
/// reference quantizers (`qw == NULL`).
#[inline(always)]
pub(super) fn qx_search<const N: usize, const S: usize>(
    x: &Block<N, S>,
    w: &Block<N, S>,
    nmax: i32,
) -> Qx<N> {
    let zero = F::splat(0.0);
    let mut max = zero;
    let mut amax = zero;
    for v in x {
        let ax = v.abs();
        let m = ax.gt(amax);
        amax = m.select(ax, amax);
        max = m.select(*v, max);
    }
    let is_zero = amax.lt(F::splat(super::k_quants::GROUP_MAX_EPS));
    let nmax_f = nmax as f32;
    let iscale0 = F::splat(-nmax_f) / max;
    let (sumlx, suml2) = qx_sums(x, w, nmax, iscale0);
    let mut scale = suml2.cmp(zero, |a, b| a != b).select(sumlx / suml2, zero);
    let mut best = scale * sumlx;
    let mut sel_iscale = iscale0;
    for is in -9i32..=9 {
        if is == 0 {
            continue;
        }
        let iscale = F::splat(-(nmax_f + 0.1f32 * is as f32)) / max;
        let (sumlx, suml2) = qx_sums(x, w, nmax, iscale);
        let better = suml2.gt(zero).and((sumlx * sumlx).gt(best * suml2));
        sel_iscale = better.select(iscale, sel_iscale);
        let s = sumlx / suml2;
        scale = better.select(s, scale);
        best = better.select(s * sumlx, best);
    }
    Qx {
        scale: is_zero.select(zero, scale),
        sel_iscale,
        zero: is_zero,
    }
}

/// `sumlx` and `suml2` of `make_qx_quants` for one candidate scale (a function, not a closure:
/// a closure is compiled apart from the `#[target_feature]` caller when not inlined).
#[inline(always)]
fn qx_sums<const N: usize, const S: usize>(
    x: &Block<N, S>,
    w: &Block<N, S>,
    nmax: i32,
    iscale: F<N>,
) -> (F<N>, F<N>) {
    let mut sumlx = F::splat(0.0);
    let mut suml2 = F::splat(0.0);
    for i in 0..S {
        let l = (iscale * x[i])
            .nearest_int()
            .clamp(-nmax, nmax - 1)
            .to_f32();
        sumlx = sumlx + w[i] * x[i] * l;
        suml2 = suml2 + w[i] * l * l;
    }
    (sumlx, suml2)
}

/// The quants of lane `k` of a [`qx_search`], as `make_qx_quants` leaves them in `L`.
#[inline(always)]
pub(super) fn qx_quants<const N: usize>(r: &Qx<N>, k: usize, x: &[f32], nmax: i32, l: &mut [i8]) {
    if r.zero.0[k] {
        l.fill(0);
        return;
    }
    let iscale = r.sel_iscale.0[k];
    for (q, &v) in l.iter_mut().zip(x) {
        let f = iscale * v + 12_582_912.0;
        let n = (f.to_bits() as i32 & 0x007F_FFFF) - 0x0040_0000;
        *q = (nmax + n.clamp(-nmax, nmax - 1)) as i8;
    }
}

/// `make_q3_quants(16, nmax, x, L, do_rmse = true)` in every lane: returns the scales and
/// fills `l` (value-major, `l[i].0[k]`) with the quants `L[i]` (offset by `nmax`).
#[inline(always)]
pub(super) fn q3_search<const N: usize, const S: usize>(
    x: &Block<N, S>,
    nmax: i32,
    l: &mut [I<N>; S],
) -> F<N> {
    let zero = F::splat(0.0);
    let mut max = zero;
    let mut amax = zero;
    for v in x {
        let ax = v.abs();
        let m = ax.gt(amax);
        amax = m.select(ax, amax);
        max = m.select(*v, max);
    }
    let is_zero = amax.lt(F::splat(super::k_quants::GROUP_MAX_EPS));
    let iscale = F::splat(-(nmax as f32)) / max;
    let mut sumlx = zero;
    let mut suml2 = zero;
    let mut lf = [zero; S];
    for i in 0..S {
        let li = (iscale * x[i]).nearest_int().clamp(-nmax, nmax - 1);
        l[i] = li;
        lf[i] = li.to_f32();
        let w = x[i] * x[i];
        sumlx = sumlx + w * x[i] * lf[i];
        suml2 = suml2 + w * lf[i] * lf[i];
    }
    for _ in 0..5 {
        let mut changed = M([false; N]);
        for i in 0..S {
            let w = x[i] * x[i];
            let wx = w * x[i];
            let cur = lf[i];
            let slx = sumlx - wx * cur;
            let sl2 = suml2 - w * cur * cur;
            let new_l = (x[i] * sl2 / slx).nearest_int().clamp(-nmax, nmax - 1);
            let nf = new_l.to_f32();
            let slx2 = slx + wx * nf;
            let sl2b = sl2 + w * nf * nf;
            let differs = new_l.ne(l[i]);
            let accept = slx
                .gt(zero)
                .and(differs)
                .and(sl2b.gt(zero))
                .and((slx2 * slx2 * suml2).gt(sumlx * sumlx * sl2b));
            lf[i] = accept.select(nf, cur);
            l[i] = accept.select_i(new_l, l[i]);
            sumlx = accept.select(slx2, sumlx);
            suml2 = accept.select(sl2b, suml2);
            changed = changed.or(accept);
        }
        // a lane whose pass changed nothing would change nothing in another pass (same state,
        // same arithmetic), so running more passes for the other lanes leaves it as it is
        if !changed.any() {
            break;
        }
    }
    for li in l.iter_mut() {
        for k in 0..N {
            li.0[k] = if is_zero.0[k] { 0 } else { li.0[k] + nmax };
        }
    }
    let scale = suml2.gt(zero).select(sumlx / suml2, zero);
    is_zero.select(zero, scale)
}

/// The widest lane build the CPU runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Level {
    /// 16 lanes, AVX-512 (F, VL, BW, DQ).
    Avx512,
    /// 8 lanes, AVX2 + FMA.
    Avx2,
    /// 8 lanes, compiled for the baseline target.
    Base,
}

impl Level {
    /// Every level this CPU can run, widest first.
    pub fn available() -> Vec<Level> {
        let mut v = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                v.push(Level::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                v.push(Level::Avx2);
            }
        }
        v.push(Level::Base);
        v
    }

    fn rank(self) -> u8 {
        match self {
            Level::Avx512 => 2,
            Level::Avx2 => 1,
            Level::Base => 0,
        }
    }

    /// `self`, or the best level the CPU has if `self` is wider (each level implies the ones
    /// below it).
    pub fn supported(self) -> Level {
        let best = Level::best();
        if self.rank() > best.rank() {
            best
        } else {
            self
        }
    }

    /// The widest level, detected once.
    pub fn best() -> Level {
        static BEST: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| Level::available()[0])
    }
}

/// Defines `$name(src, dst)` running `$kernel::<N>` at the best [`Level`], and
/// `$with(level, src, dst)` at a given one (tests compare levels). Kernels are generic over the
/// lane count and `#[inline(always)]` throughout, so each level compiles to its own code.
macro_rules! multiversion {
    ($vis:vis fn $name:ident, $with:ident => $kernel:ident($($arg:ident: $ty:ty),*)) => {
        $vis fn $name($($arg: $ty),*) {
            $with($crate::quant::lanes::Level::best(), $($arg),*)
        }

        $vis fn $with(level: $crate::quant::lanes::Level, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
                unsafe fn wide($($arg: $ty),*) {
                    $kernel::<16>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn narrow($($arg: $ty),*) {
                    $kernel::<8>($($arg),*)
                }
                match level.supported() {
                    // SAFETY: `Level::available` only offers levels the CPU has.
                    $crate::quant::lanes::Level::Avx512 => return unsafe { wide($($arg),*) },
                    // SAFETY: as above.
                    $crate::quant::lanes::Level::Avx2 => return unsafe { narrow($($arg),*) },
                    $crate::quant::lanes::Level::Base => {}
                }
            }
            let _ = level;
            $kernel::<8>($($arg),*)
        }
    };
}
pub(super) use multiversion;
