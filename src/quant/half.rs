//! F32/F16/BF16 as GGUF stores them, and the fp16 conversion every block scale goes through.
//!
//! ggml rounds fp32 -> fp16 (`GGML_FP32_TO_FP16`) and fp32 -> bf16 (`GGML_FP32_TO_BF16`) to
//! nearest, ties to even, overflow to infinity, exactly as the `half` crate does; the one
//! difference is NaN: ggml writes fp16 NaN as `0x7E00 | sign` (payload dropped), `half` keeps
//! the payload, so NaN is special-cased here. bf16 NaN is `bits >> 16 | 0x40` in both.

use ::half::{bf16, f16};

/// fp32 -> fp16 bits exactly as ggml's `ggml_compute_fp32_to_fp16`.
#[inline(always)]
pub fn f32_to_f16_bits(value: f32) -> u16 {
    if value.is_nan() {
        return ((value.to_bits() >> 16) as u16 & 0x8000) | 0x7E00;
    }
    f16::from_f32(value).to_bits()
}

/// fp16 bits -> fp32 (exact; NaN quieted with its payload, like ggml).
#[inline(always)]
pub fn f16_bits_to_f32(bits: u16) -> f32 {
    f16::from_bits(bits).to_f32()
}

/// fp32 -> bf16 bits exactly as ggml's `ggml_compute_fp32_to_bf16`.
#[inline(always)]
pub fn f32_to_bf16_bits(value: f32) -> u16 {
    bf16::from_f32(value).to_bits()
}

/// bf16 bits -> fp32 (exact).
#[inline(always)]
pub fn bf16_bits_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

pub(super) fn quantize_f32(src: &[f32], dst: &mut [u8]) {
    for (v, out) in src.iter().zip(dst.chunks_exact_mut(4)) {
        out.copy_from_slice(&v.to_le_bytes());
    }
}

pub(super) fn dequantize_f32(src: &[u8], dst: &mut [f32]) {
    for (b, out) in src.chunks_exact(4).zip(dst) {
        *out = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

pub(super) fn quantize_f16(src: &[f32], dst: &mut [u8]) {
    for (&v, out) in src.iter().zip(dst.chunks_exact_mut(2)) {
        out.copy_from_slice(&f32_to_f16_bits(v).to_le_bytes());
    }
}

/// Exact widening, 256 values at a time through the `half` crate's slice conversion (F16C
/// vector instructions when the CPU has them, detected at run time).
pub(super) fn dequantize_f16(src: &[u8], dst: &mut [f32]) {
    use ::half::slice::HalfFloatSliceExt;
    let mut bits = [f16::ZERO; 256];
    for (b, out) in src.chunks(512).zip(dst.chunks_mut(256)) {
        let n = out.len();
        for (h, b) in bits.iter_mut().zip(b.chunks_exact(2)) {
            *h = f16::from_bits(u16::from_le_bytes([b[0], b[1]]));
        }
        bits[..n].convert_to_f32_slice(out);
    }
}

pub(super) fn quantize_bf16(src: &[f32], dst: &mut [u8]) {
    for (&v, out) in src.iter().zip(dst.chunks_exact_mut(2)) {
        out.copy_from_slice(&f32_to_bf16_bits(v).to_le_bytes());
    }
}

pub(super) fn dequantize_bf16(src: &[u8], dst: &mut [f32]) {
    for (b, out) in src.chunks_exact(2).zip(dst) {
        *out = bf16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ggml's `ggml_compute_fp32_to_fp16` (ggml-impl.h), transcribed: an independent oracle.
    fn ggml_fp32_to_fp16(f: f32) -> u16 {
        let scale_to_inf = f32::from_bits(0x7780_0000);
        let scale_to_zero = f32::from_bits(0x0880_0000);
        let mut base = (f.abs() * scale_to_inf) * scale_to_zero;
        let w = f.to_bits();
        let shl1_w = w.wrapping_add(w);
        let sign = w & 0x8000_0000;
        let mut bias = shl1_w & 0xFF00_0000;
        if bias < 0x7100_0000 {
            bias = 0x7100_0000;
        }
        base += f32::from_bits((bias >> 1) + 0x0780_0000);
        let bits = base.to_bits();
        let exp_bits = (bits >> 13) & 0x0000_7C00;
        let mantissa_bits = bits & 0x0000_0FFF;
        let nonsign = exp_bits + mantissa_bits;
        ((sign >> 16)
            | if shl1_w > 0xFF00_0000 {
                0x7E00
            } else {
                nonsign
            }) as u16
    }

    /// ggml's `ggml_compute_fp16_to_fp32`, transcribed.
    fn ggml_fp16_to_fp32(h: u16) -> f32 {
        let w = u32::from(h) << 16;
        let sign = w & 0x8000_0000;
        let two_w = w.wrapping_add(w);
        let exp_offset = 0xE0u32 << 23;
        let exp_scale = f32::from_bits(0x0780_0000);
        let normalized = f32::from_bits((two_w >> 4) + exp_offset) * exp_scale;
        let magic_mask = 126u32 << 23;
        let denormalized = f32::from_bits((two_w >> 17) | magic_mask) - 0.5;
        let cutoff = 1u32 << 27;
        f32::from_bits(
            sign | if two_w < cutoff {
                denormalized.to_bits()
            } else {
                normalized.to_bits()
            },
        )
    }

    /// ggml's `ggml_compute_fp32_to_bf16`, transcribed.
    fn ggml_fp32_to_bf16(s: f32) -> u16 {
        let i = s.to_bits();
        if i & 0x7fff_ffff > 0x7f80_0000 {
            return ((i >> 16) | 64) as u16;
        }
        ((i as u64 + (0x7fff + ((i >> 16) & 1)) as u64) >> 16) as u16
    }

    /// Deterministic spread of f32 bit patterns: every exponent, edge mantissas, NaNs, infs.
    fn patterns() -> impl Iterator<Item = u32> {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let random = (0..2_000_000).map(move |_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 16) as u32
        });
        let edges = (0..512u32).flat_map(|se| {
            [
                0u32, 1, 0xFFF, 0x1000, 0x1001, 0x1FFF, 0x2000, 0x3FFF, 0x7F_E000, 0x7F_EFFF,
                0x7F_F000, 0x7F_FFFF,
            ]
            .into_iter()
            .map(move |m| (se << 23) | m)
        });
        random.chain(edges)
    }

    #[test]
    fn f32_to_f16_matches_ggml_bit_for_bit() {
        for bits in patterns() {
            let f = f32::from_bits(bits);
            assert_eq!(f32_to_f16_bits(f), ggml_fp32_to_fp16(f), "{bits:#010x}");
        }
    }

    #[test]
    fn f16_to_f32_matches_ggml_for_all_65536_values() {
        for h in 0..=u16::MAX {
            assert_eq!(
                f16_bits_to_f32(h).to_bits(),
                ggml_fp16_to_fp32(h).to_bits(),
                "{h:#06x}"
            );
        }
    }

    #[test]
    fn f32_to_bf16_matches_ggml_bit_for_bit() {
        for bits in patterns() {
            let f = f32::from_bits(bits);
            assert_eq!(f32_to_bf16_bits(f), ggml_fp32_to_bf16(f), "{bits:#010x}");
        }
    }

    #[test]
    fn f16_rounds_ties_to_even_and_overflows_to_infinity() {
        assert_eq!(f32_to_f16_bits(1.0 + 2f32.powi(-11)), 0x3C00);
        assert_eq!(f32_to_f16_bits(1.0 + 3.0 * 2f32.powi(-11)), 0x3C02);
        assert_eq!(f32_to_f16_bits(65519.0), 0x7BFF);
        assert_eq!(f32_to_f16_bits(65520.0), 0x7C00);
        assert_eq!(f32_to_f16_bits(-f32::NAN), 0xFE00);
        assert_eq!(f32_to_f16_bits(f32::from_bits(0x7FFF_FFFF)), 0x7E00);
        assert_eq!(f32_to_bf16_bits(1.0 + 2f32.powi(-8)), 0x3F80);
        assert_eq!(f32_to_bf16_bits(1.0 + 3.0 * 2f32.powi(-8)), 0x3F82);
    }
}
