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
    out.reserve(n);
    match dtype {
        DType::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        DType::F16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        DType::BF16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        _ => {
            let mut tmp = Vec::with_capacity(n);
            decode_f64(dtype, bytes, &mut tmp);
            out.extend(tmp.into_iter().map(|v| v as f32));
        }
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
        DType::F16 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&f16::from_f32(*v).to_le_bytes())),
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

    #[test]
    fn scalar_exactness_is_checked() {
        assert!(encode_scalar_exact(DType::F16, 2.0).is_some());
        assert!(encode_scalar_exact(DType::F16, 8.0 * 2f64.sqrt()).is_none());
        assert!(encode_scalar_exact(DType::I64, 4.0).is_some());
        assert!(encode_scalar_exact(DType::I64, 4.5).is_none());
    }
}
