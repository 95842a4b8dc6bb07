//! Element conversions between stored bytes and f32/f64. Little-endian throughout, as both
//! safetensors and GGUF store data. Reads go byte-wise so unaligned mmap views are fine.

use super::DType;
use half::{bf16, f16};

/// Decode one FP8 E4M3 (the "fn" variant: no infinities, 0x7f/0xff are NaN, bias 7).
pub fn f8_e4m3_to_f32(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let exp = ((b >> 3) & 0x0f) as i32;
    let man = (b & 0x07) as f32;
    if exp == 0x0f && (b & 0x07) == 0x07 {
        return f32::NAN;
    }
    if exp == 0 {
        sign * man / 8.0 * 2f32.powi(-6)
    } else {
        sign * (1.0 + man / 8.0) * 2f32.powi(exp - 7)
    }
}

/// Decode one FP8 E5M2 (IEEE-like, bias 15, with infinities and NaNs).
pub fn f8_e5m2_to_f32(b: u8) -> f32 {
    // E5M2 is the top byte of an IEEE half.
    f16::from_bits((b as u16) << 8).to_f32()
}

/// Decode `bytes` of `dtype` into f32 values, appending to `out`.
/// Integer types convert by value (alpha scalars are sometimes stored as I64).
pub fn decode_f32(dtype: DType, bytes: &[u8], out: &mut Vec<f32>) {
    let n = bytes.len() / dtype.size();
    let start = out.len();
    out.resize(start + n, 0.0);
    decode_f32_into(dtype, bytes, &mut out[start..]);
}

/// Decode the first `out.len()` values of `bytes` (of `dtype`) into `out`.
/// f16 uses the CPU's conversion instructions where it has them (F16C, AVX-512), which give
/// the same results as converting one value at a time.
pub fn decode_f32_into(dtype: DType, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        DType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        DType::F16 => f16_to_f32(bytes, out),
        DType::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16);
            }
        }
        _ => {
            let mut tmp = Vec::with_capacity(out.len());
            decode_f64(dtype, bytes, &mut tmp);
            for (o, v) in out.iter_mut().zip(tmp) {
                *o = v as f32;
            }
        }
    }
}

/// Decode a row-major matrix of `row_len`-value rows from `bytes` into `out`, whose rows start
/// `stride` values apart (`stride >= row_len`); the values between rows are left untouched.
pub fn decode_f32_rows(dtype: DType, bytes: &[u8], row_len: usize, out: &mut [f32], stride: usize) {
    let row_bytes = row_len * dtype.size();
    if stride == row_len || row_len == 0 {
        let n = (bytes.len() / dtype.size()).min(out.len());
        decode_f32_into(dtype, bytes, &mut out[..n]);
        return;
    }
    for (src, dst) in bytes.chunks_exact(row_bytes).zip(out.chunks_mut(stride)) {
        decode_f32_into(dtype, src, &mut dst[..row_len]);
    }
}

/// f16 little-endian bytes (any alignment) to f32, `out.len()` values.
fn f16_to_f32(bytes: &[u8], out: &mut [f32]) {
    let n = out.len().min(bytes.len() / 2);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: avx512f was detected; the function reads and writes only whole 16-value
            // groups inside `bytes[..2n]` and `out[..n]`.
            done = unsafe { x86_f16::to_f32_avx512(&bytes[..2 * n], &mut out[..n]) };
        } else if std::arch::is_x86_feature_detected!("f16c")
            && std::arch::is_x86_feature_detected!("avx")
        {
            // SAFETY: f16c and avx were detected; as above, in groups of 8.
            done = unsafe { x86_f16::to_f32_f16c(&bytes[..2 * n], &mut out[..n]) };
        }
    }
    for (o, c) in out[done..n]
        .iter_mut()
        .zip(bytes[2 * done..].chunks_exact(2))
    {
        *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
    }
}

/// f32 to little-endian f16 bytes (round to nearest even), `values.len()` values.
fn f32_to_f16(values: &[f32], out: &mut [u8]) {
    let n = values.len().min(out.len() / 2);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("f16c") && std::arch::is_x86_feature_detected!("avx")
        {
            // SAFETY: f16c and avx were detected; whole groups of 8 inside `values[..n]` and
            // `out[..2n]` only.
            done = unsafe { x86_f16::from_f32_f16c(&values[..n], &mut out[..2 * n]) };
        }
    }
    for (v, o) in values[done..n]
        .iter()
        .zip(out[2 * done..].chunks_exact_mut(2))
    {
        o.copy_from_slice(&f16::from_f32(*v).to_le_bytes());
    }
}

#[cfg(target_arch = "x86_64")]
mod x86_f16 {
    use std::arch::x86_64::*;

    /// Converts whole groups of 16; returns how many values were converted.
    #[target_feature(enable = "avx512f,f16c,avx2")]
    pub(super) unsafe fn to_f32_avx512(bytes: &[u8], out: &mut [f32]) -> usize {
        let groups = out.len().min(bytes.len() / 2) / 16;
        for g in 0..groups {
            let h = _mm256_loadu_si256(bytes.as_ptr().add(32 * g) as *const __m256i);
            _mm512_storeu_ps(out.as_mut_ptr().add(16 * g), _mm512_cvtph_ps(h));
        }
        groups * 16
    }

    /// Converts whole groups of 8 with round-to-nearest-even; returns how many were converted.
    #[target_feature(enable = "f16c,avx")]
    pub(super) unsafe fn from_f32_f16c(values: &[f32], out: &mut [u8]) -> usize {
        let groups = values.len().min(out.len() / 2) / 8;
        for g in 0..groups {
            let v = _mm256_loadu_ps(values.as_ptr().add(8 * g));
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
            _mm_storeu_si128(out.as_mut_ptr().add(16 * g) as *mut __m128i, h);
        }
        groups * 8
    }

    /// Converts whole groups of 8; returns how many values were converted.
    #[target_feature(enable = "f16c,avx")]
    pub(super) unsafe fn to_f32_f16c(bytes: &[u8], out: &mut [f32]) -> usize {
        let groups = out.len().min(bytes.len() / 2) / 8;
        for g in 0..groups {
            let h = _mm_loadu_si128(bytes.as_ptr().add(16 * g) as *const __m128i);
            _mm256_storeu_ps(out.as_mut_ptr().add(8 * g), _mm256_cvtph_ps(h));
        }
        groups * 8
    }
}

/// Decode into f64 values (exact for every stored float type and for integers up to 2^53).
pub fn decode_f64(dtype: DType, bytes: &[u8], out: &mut Vec<f64>) {
    let it: Box<dyn Iterator<Item = f64> + '_> =
        match dtype {
            DType::Bool => Box::new(bytes.iter().map(|&b| (b != 0) as u8 as f64)),
            DType::U8 => Box::new(bytes.iter().map(|&b| b as f64)),
            DType::I8 => Box::new(bytes.iter().map(|&b| b as i8 as f64)),
            DType::F8E4M3 => Box::new(bytes.iter().map(|&b| f8_e4m3_to_f32(b) as f64)),
            DType::F8E5M2 => Box::new(bytes.iter().map(|&b| f8_e5m2_to_f32(b) as f64)),
            DType::I16 => Box::new(
                bytes
                    .chunks_exact(2)
                    .map(|c| i16::from_le_bytes([c[0], c[1]]) as f64),
            ),
            DType::U16 => Box::new(
                bytes
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]) as f64),
            ),
            DType::F16 => Box::new(
                bytes
                    .chunks_exact(2)
                    .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f64()),
            ),
            DType::BF16 => Box::new(
                bytes
                    .chunks_exact(2)
                    .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f64()),
            ),
            DType::I32 => Box::new(
                bytes
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64),
            ),
            DType::U32 => Box::new(
                bytes
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64),
            ),
            DType::F32 => Box::new(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64),
            ),
            DType::F64 => Box::new(
                bytes
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])),
            ),
            DType::I64 => Box::new(bytes.chunks_exact(8).map(|c| {
                i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f64
            })),
            DType::U64 => Box::new(bytes.chunks_exact(8).map(|c| {
                u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f64
            })),
        };
    out.extend(it);
}

/// Encode f32 values as `dtype` (round to nearest even for f16/bf16).
/// Returns None for types loratool never writes from floats.
pub fn encode_f32(dtype: DType, values: &[f32]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(values.len() * dtype.size());
    match dtype {
        DType::F32 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        DType::F16 => {
            out.resize(values.len() * 2, 0);
            f32_to_f16(values, &mut out);
        }
        DType::BF16 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&bf16::from_f32(*v).to_le_bytes())),
        DType::F64 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&(*v as f64).to_le_bytes())),
        _ => return None,
    }
    Some(out)
}

/// Encode one f64 scalar as `dtype`, if it is exactly representable there.
pub fn encode_scalar_exact(dtype: DType, value: f64) -> Option<Vec<u8>> {
    match dtype {
        DType::F64 => Some(value.to_le_bytes().to_vec()),
        DType::F32 => {
            let v = value as f32;
            (v as f64 == value).then(|| v.to_le_bytes().to_vec())
        }
        DType::F16 => {
            let v = f16::from_f64(value);
            (v.to_f64() == value).then(|| v.to_le_bytes().to_vec())
        }
        DType::BF16 => {
            let v = bf16::from_f64(value);
            (v.to_f64() == value).then(|| v.to_le_bytes().to_vec())
        }
        DType::I64 => {
            let v = value as i64;
            (v as f64 == value).then(|| v.to_le_bytes().to_vec())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f8_e4m3_known_values() {
        assert_eq!(f8_e4m3_to_f32(0x38), 1.0); // exp 7, man 0
        assert_eq!(f8_e4m3_to_f32(0x7e), 448.0); // largest finite
        assert_eq!(f8_e4m3_to_f32(0x01), 2f32.powi(-9)); // smallest subnormal
        assert_eq!(f8_e4m3_to_f32(0xb8), -1.0);
        assert!(f8_e4m3_to_f32(0x7f).is_nan());
    }

    #[test]
    fn f8_e5m2_known_values() {
        assert_eq!(f8_e5m2_to_f32(0x3c), 1.0);
        assert_eq!(f8_e5m2_to_f32(0x7b), 57344.0);
        assert!(f8_e5m2_to_f32(0x7c).is_infinite());
    }

    #[test]
    fn f16_encoding_rounds_to_nearest_even() {
        // 1 + 2^-11 lies exactly between 1 and 1 + 2^-10: ties to even (1.0).
        let tie = 1.0f32 + 2f32.powi(-11);
        let b = encode_f32(DType::F16, &[tie]).unwrap();
        assert_eq!(u16::from_le_bytes([b[0], b[1]]), 0x3c00);
        // 1 + 3·2^-11 lies between 1+2^-10 and 1+2^-9: ties to even (1 + 2^-9).
        let tie2 = 1.0f32 + 3.0 * 2f32.powi(-11);
        let b = encode_f32(DType::F16, &[tie2]).unwrap();
        assert_eq!(u16::from_le_bytes([b[0], b[1]]), 0x3c02);
    }

    /// The vectorised paths (F16C/AVX-512 where the CPU has them) against `half`'s software
    /// conversions (its `const` functions never use the CPU's instructions), on every f16 bit
    /// pattern and on f32 values at and around every f16 rounding boundary.
    #[test]
    fn slice_conversions_match_scalar_conversions() {
        let all: Vec<u8> = (0..=u16::MAX).flat_map(|b| b.to_le_bytes()).collect();
        // an odd offset: mapped tensor data need not be aligned
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&all);
        let mut got = Vec::new();
        decode_f32(DType::F16, &shifted[1..], &mut got);
        for (bits, v) in (0..=u16::MAX).zip(&got) {
            let want = f16::from_bits(bits).to_f32_const();
            assert!(
                want.to_bits() == v.to_bits() || (want.is_nan() && v.is_nan()),
                "f16 {bits:#06x}: {v} vs {want}"
            );
        }
        let mut bf = Vec::new();
        decode_f32(DType::BF16, &shifted[1..], &mut bf);
        for (bits, v) in (0..=u16::MAX).zip(&bf) {
            let want = bf16::from_bits(bits).to_f32();
            assert!(want.to_bits() == v.to_bits() || (want.is_nan() && v.is_nan()));
        }
        // f32 → f16: each finite f16, the midpoints to its neighbours and one ulp either side
        let mut values = Vec::new();
        for bits in 0..0x7c00u16 {
            let x = f16::from_bits(bits).to_f32_const();
            let next = f16::from_bits(bits + 1).to_f32_const();
            let mid = (x + next) / 2.0;
            for v in [
                x,
                mid,
                f32::from_bits(mid.to_bits() - 1),
                f32::from_bits(mid.to_bits() + 1),
            ] {
                values.push(v);
                values.push(-v);
            }
        }
        values.extend([
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e9,
            -1e9,
            f32::MIN_POSITIVE,
        ]);
        let bytes = encode_f32(DType::F16, &values).unwrap();
        for (v, b) in values.iter().zip(bytes.chunks_exact(2)) {
            assert_eq!(
                u16::from_le_bytes([b[0], b[1]]),
                f16::from_f32_const(*v).to_bits(),
                "{v}"
            );
        }
    }

    #[test]
    fn scalar_exactness_is_checked() {
        assert!(encode_scalar_exact(DType::F16, 2.0).is_some());
        assert!(encode_scalar_exact(DType::F16, 8.0 * 2f64.sqrt()).is_none());
        assert!(encode_scalar_exact(DType::I64, 4.0).is_some());
        assert!(encode_scalar_exact(DType::I64, 4.5).is_none());
    }
}
