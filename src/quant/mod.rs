//! GGUF block codecs, bit-exact with ggml's reference C code.
//!
//! Owns: the tensor data types a GGUF file can hold that loratool writes ([`QuantType`]: F32,
//! F16, BF16, the legacy 32-value blocks Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 and the 256-value K-quant
//! super-blocks Q2_K..Q6_K), their byte layouts, and quantize/dequantize of runs of rows.
//! Does not own: files, tensor names or shapes, which tensors get which type (that is `ops`
//! and `io`).
//!
//! Exactness: every encoder computes what ggml's `quantize_row_*_ref` (what `llama-quantize`
//! runs without an importance matrix) or `quantize_row_*_impl` (with one, `weighted`) computes,
//! and every decoder what `dequantize_row_*` does, with the same float operation order per
//! block, the same rounding helpers (`roundf` for Q8_0,
//! truncation after `+ 8.5`/`+ 16.5`/`+ 0.5` for the legacy 4/5-bit types, `nearest_int`
//! = round half to even for K-quants) and ggml's fp32 -> fp16 conversion for scales. The
//! tests compare bytes and float bits with gguf-py (`gguf.quants`) and with golden bytes from
//! ggml's C code built without FMA contraction (see `fixtures/quant/README.md`). A llama.cpp
//! build whose C compiler fuses multiply-adds (gcc `-march=native` on an FMA machine) differs
//! from both: in up to ~10% of K-quant bytes on random data, and in a few Q4_0/Q5_0 bytes
//! per million.
//!
//! Speed: the block searches run in SIMD lanes across blocks and the per-value steps along the
//! values (`lanes`: AVX-512, AVX2 or baseline builds chosen at run time), each lane doing the
//! scalar arithmetic in order, so every build gives the same bytes; the scalar transcriptions of
//! the C code are kept as the tests' oracle (`quantize_reference`). Rows are independent:
//! [`quantize`], [`dequantize`] and [`transcode_into`] run rows in parallel (rayon) and never
//! allocate per block.

mod half;
mod k_quants;
#[macro_use]
mod lanes;
mod q2_k;
mod q3_k;
mod q4;
mod q4_k;
mod q5;
mod q5_k;
mod q6_k;
mod q8_0;
mod weighted;

use std::fmt;
use std::str::FromStr;

use rayon::prelude::*;

use crate::error::{Error, Result};

pub use half::{bf16_bits_to_f32, f16_bits_to_f32, f32_to_bf16_bits, f32_to_f16_bits};

/// Values per K-quant super-block (ggml's `QK_K`).
pub const QK_K: usize = 256;

/// A GGUF tensor data type loratool can encode and decode (a subset of ggml's `ggml_type`).
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuantType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
}

impl QuantType {
    pub const ALL: [QuantType; 13] = [
        QuantType::F32,
        QuantType::F16,
        QuantType::BF16,
        QuantType::Q8_0,
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q5_0,
        QuantType::Q5_1,
        QuantType::Q2_K,
        QuantType::Q3_K,
        QuantType::Q4_K,
        QuantType::Q5_K,
        QuantType::Q6_K,
    ];

    /// The `ggml_type` id stored in GGUF tensor infos (include/ggml.h).
    pub const fn ggml_type(self) -> u32 {
        match self {
            QuantType::F32 => 0,
            QuantType::F16 => 1,
            QuantType::Q4_0 => 2,
            QuantType::Q4_1 => 3,
            QuantType::Q5_0 => 6,
            QuantType::Q5_1 => 7,
            QuantType::Q8_0 => 8,
            QuantType::Q2_K => 10,
            QuantType::Q3_K => 11,
            QuantType::Q4_K => 12,
            QuantType::Q5_K => 13,
            QuantType::Q6_K => 14,
            QuantType::BF16 => 30,
        }
    }

    /// The type with this `ggml_type` id, if loratool has a codec for it.
    pub fn from_ggml_type(id: u32) -> Option<QuantType> {
        QuantType::ALL.into_iter().find(|t| t.ggml_type() == id)
    }

    /// Values per block (1 for the float types).
    pub const fn block_size(self) -> usize {
        match self {
            QuantType::F32 | QuantType::F16 | QuantType::BF16 => 1,
            QuantType::Q8_0
            | QuantType::Q4_0
            | QuantType::Q4_1
            | QuantType::Q5_0
            | QuantType::Q5_1 => 32,
            QuantType::Q2_K
            | QuantType::Q3_K
            | QuantType::Q4_K
            | QuantType::Q5_K
            | QuantType::Q6_K => QK_K,
        }
    }

    /// Bytes per block (ggml's `type_size`, the `sizeof` of the block struct).
    pub const fn type_size(self) -> usize {
        match self {
            QuantType::F32 => 4,
            QuantType::F16 | QuantType::BF16 => 2,
            QuantType::Q8_0 => q8_0::BYTES,
            QuantType::Q4_0 => q4::Q4_0_BYTES,
            QuantType::Q4_1 => q4::Q4_1_BYTES,
            QuantType::Q5_0 => q5::Q5_0_BYTES,
            QuantType::Q5_1 => q5::Q5_1_BYTES,
            QuantType::Q2_K => q2_k::BYTES,
            QuantType::Q3_K => q3_k::BYTES,
            QuantType::Q4_K => q4_k::BYTES,
            QuantType::Q5_K => q5_k::BYTES,
            QuantType::Q6_K => q6_k::BYTES,
        }
    }

    /// ggml's type name (`ggml_type_name`): `f32`, `f16`, `bf16`, `q8_0`, ..., `q4_K`.
    pub const fn name(self) -> &'static str {
        match self {
            QuantType::F32 => "f32",
            QuantType::F16 => "f16",
            QuantType::BF16 => "bf16",
            QuantType::Q8_0 => "q8_0",
            QuantType::Q4_0 => "q4_0",
            QuantType::Q4_1 => "q4_1",
            QuantType::Q5_0 => "q5_0",
            QuantType::Q5_1 => "q5_1",
            QuantType::Q2_K => "q2_K",
            QuantType::Q3_K => "q3_K",
            QuantType::Q4_K => "q4_K",
            QuantType::Q5_K => "q5_K",
            QuantType::Q6_K => "q6_K",
        }
    }

    /// True for the block-quantized types (not F32, F16, BF16).
    pub const fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bytes of one row of `row_len` values; errors if `row_len` is not a whole number of
    /// blocks.
    pub fn row_bytes(self, row_len: usize) -> Result<usize> {
        let block = self.block_size();
        if !row_len.is_multiple_of(block) {
            return Err(Error::Invalid(format!(
                "{self}: row length {row_len} is not a multiple of the {self} block size {block}; \
                 keep such tensors in f16 or f32 (as llama-quantize does)"
            )));
        }
        (row_len / block)
            .checked_mul(self.type_size())
            .ok_or_else(|| Error::Invalid(format!("{self}: row length {row_len} is too large")))
    }

    /// Values held by `n_bytes` bytes of this type; errors if they are not whole blocks.
    pub fn values_in(self, n_bytes: usize) -> Result<usize> {
        let size = self.type_size();
        if !n_bytes.is_multiple_of(size) {
            return Err(Error::Invalid(format!(
                "{self}: {n_bytes} bytes is not a whole number of {size}-byte blocks"
            )));
        }
        Ok(n_bytes / size * self.block_size())
    }
}

impl fmt::Display for QuantType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for QuantType {
    type Err = Error;

    /// Case-insensitive ggml/gguf-py name: `q4_k`, `Q4_K`, `q8_0`, `bf16`, ...
    fn from_str(s: &str) -> Result<QuantType> {
        QuantType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let known: Vec<&str> = QuantType::ALL.iter().map(|t| t.name()).collect();
                Error::Invalid(format!(
                    "unknown quantization type '{s}'; known: {}",
                    known.join(", ")
                ))
            })
    }
}

/// Encodes `src` (a whole number of blocks) into `dst`, which must be exactly the right size.
pub fn quantize_row_into(ty: QuantType, src: &[f32], dst: &mut [u8]) -> Result<()> {
    let n_bytes = ty.row_bytes(src.len())?;
    if dst.len() != n_bytes {
        return Err(Error::Invalid(format!(
            "{ty}: output buffer holds {} bytes, {n_bytes} needed for {} values",
            dst.len(),
            src.len()
        )));
    }
    encode(ty, src, dst);
    Ok(())
}

/// Decodes `src` (a whole number of blocks) into `dst`, which must be exactly the right size.
pub fn dequantize_row_into(ty: QuantType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    let n_values = ty.values_in(src.len())?;
    if dst.len() != n_values {
        return Err(Error::Invalid(format!(
            "{ty}: output buffer holds {} values, {n_values} decoded from {} bytes",
            dst.len(),
            src.len()
        )));
    }
    decode(ty, src, dst);
    Ok(())
}

/// Encodes `src` (a whole number of blocks) and appends the bytes to `dst`.
pub fn quantize_row(ty: QuantType, src: &[f32], dst: &mut Vec<u8>) -> Result<()> {
    let n_bytes = ty.row_bytes(src.len())?;
    let start = dst.len();
    dst.resize(start + n_bytes, 0);
    encode(ty, src, &mut dst[start..]);
    Ok(())
}

/// Decodes `src` (a whole number of blocks) and appends the values to `dst`.
pub fn dequantize_row(ty: QuantType, src: &[u8], dst: &mut Vec<f32>) -> Result<()> {
    let n_values = ty.values_in(src.len())?;
    let start = dst.len();
    dst.resize(start + n_values, 0.0);
    decode(ty, src, &mut dst[start..]);
    Ok(())
}

/// Quantizes row-major `data` made of rows of `row_len` values, rows in parallel.
pub fn quantize(ty: QuantType, data: &[f32], row_len: usize) -> Result<Vec<u8>> {
    let rows = count_rows(ty, data.len(), row_len)?;
    let mut out = vec![0u8; rows * ty.row_bytes(row_len)?];
    quantize_into(ty, data, row_len, &mut out)?;
    Ok(out)
}

/// [`quantize`] into a caller-provided buffer of exactly `rows * row_bytes` bytes.
pub fn quantize_into(ty: QuantType, data: &[f32], row_len: usize, out: &mut [u8]) -> Result<()> {
    let rows = count_rows(ty, data.len(), row_len)?;
    let row_bytes = ty.row_bytes(row_len)?;
    if out.len() != rows * row_bytes {
        return Err(Error::Invalid(format!(
            "quantize {ty}: output buffer holds {} bytes, {rows} rows of {row_bytes} bytes needed",
            out.len()
        )));
    }
    if rows == 0 {
        return Ok(());
    }
    let per_task = rows_per_task(row_len);
    out.par_chunks_mut(row_bytes * per_task)
        .zip(data.par_chunks(row_len * per_task))
        .for_each(|(dst, src)| encode(ty, src, dst));
    Ok(())
}

/// [`quantize_into`] with importance weights, as `llama-quantize --imatrix` encodes: `weights`
/// holds one value per column (`row_len`), used for every row. Types ggml has no weighted
/// encoder for (Q8_0, the float types) encode as [`quantize_into`] does.
pub fn quantize_weighted_into(
    ty: QuantType,
    data: &[f32],
    row_len: usize,
    weights: &[f32],
    out: &mut [u8],
) -> Result<()> {
    let rows = count_rows(ty, data.len(), row_len)?;
    let row_bytes = ty.row_bytes(row_len)?;
    if weights.len() != row_len {
        return Err(Error::Invalid(format!(
            "quantize {ty}: {} importance weights for rows of {row_len} values",
            weights.len()
        )));
    }
    if out.len() != rows * row_bytes {
        return Err(Error::Invalid(format!(
            "quantize {ty}: output buffer holds {} bytes, {rows} rows of {row_bytes} bytes needed",
            out.len()
        )));
    }
    if rows == 0 {
        return Ok(());
    }
    let per_task = rows_per_task(row_len);
    out.par_chunks_mut(row_bytes * per_task)
        .zip(data.par_chunks(row_len * per_task))
        .for_each(|(dst, src)| {
            for (y, x) in dst
                .chunks_exact_mut(row_bytes)
                .zip(src.chunks_exact(row_len))
            {
                weighted::quantize_row(ty, x, weights, y);
            }
        });
    Ok(())
}

/// Re-encodes rows of type `from` (`src`, rows of `row_len` values) as `to` into `dst`, rows in
/// parallel, each task decoding its rows into a small per-thread f32 buffer and encoding them
/// at once (the f32 values stay in cache). With `weights`, the weighted encoders (see
/// [`quantize_weighted_into`]).
pub fn transcode_into(
    from: QuantType,
    to: QuantType,
    src: &[u8],
    row_len: usize,
    weights: Option<&[f32]>,
    dst: &mut [u8],
) -> Result<()> {
    let (in_row, out_row) = (from.row_bytes(row_len)?, to.row_bytes(row_len)?);
    let rows = count_byte_rows(from, src.len(), row_len, in_row)?;
    if dst.len() != rows * out_row {
        return Err(Error::Invalid(format!(
            "transcode {from} -> {to}: output buffer holds {} bytes, {rows} rows of {out_row} \
             bytes needed",
            dst.len()
        )));
    }
    if weights.is_some_and(|w| w.len() != row_len) {
        return Err(Error::Invalid(format!(
            "transcode {from} -> {to}: importance weights for rows of {row_len} values needed"
        )));
    }
    thread_local! {
        static ROWS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let per_task = rows_per_task(row_len);
    dst.par_chunks_mut(out_row * per_task)
        .zip(src.par_chunks(in_row * per_task))
        .for_each(|(dst, src)| {
            ROWS.with_borrow_mut(|buf| {
                let n = src.len() / in_row * row_len;
                if buf.len() < n {
                    buf.resize(n, 0.0);
                }
                let values = &mut buf[..n];
                decode(from, src, values);
                match weights {
                    Some(w) => {
                        for (y, x) in dst
                            .chunks_exact_mut(out_row)
                            .zip(values.chunks_exact(row_len))
                        {
                            weighted::quantize_row(to, x, w, y);
                        }
                    }
                    None => encode(to, values, dst),
                }
            })
        });
    Ok(())
}

/// Dequantizes row-major `data` holding rows of `row_len` values, rows in parallel.
pub fn dequantize(ty: QuantType, data: &[u8], row_len: usize) -> Result<Vec<f32>> {
    let row_bytes = ty.row_bytes(row_len)?;
    let rows = count_byte_rows(ty, data.len(), row_len, row_bytes)?;
    let mut out = vec![0f32; rows * row_len];
    dequantize_into(ty, data, row_len, &mut out)?;
    Ok(out)
}

/// [`dequantize`] into a caller-provided buffer of exactly `rows * row_len` values.
pub fn dequantize_into(ty: QuantType, data: &[u8], row_len: usize, out: &mut [f32]) -> Result<()> {
    let row_bytes = ty.row_bytes(row_len)?;
    let rows = count_byte_rows(ty, data.len(), row_len, row_bytes)?;
    if out.len() != rows * row_len {
        return Err(Error::Invalid(format!(
            "dequantize {ty}: output buffer holds {} values, {rows} rows of {row_len} needed",
            out.len()
        )));
    }
    if rows == 0 {
        return Ok(());
    }
    let per_task = rows_per_task(row_len);
    out.par_chunks_mut(row_len * per_task)
        .zip(data.par_chunks(row_bytes * per_task))
        .for_each(|(dst, src)| decode(ty, src, dst));
    Ok(())
}

/// Rows per rayon task: enough values (~64 Ki) that task overhead stays negligible.
fn rows_per_task(row_len: usize) -> usize {
    (65_536 / row_len.max(1)).max(1)
}

fn count_rows(ty: QuantType, n_values: usize, row_len: usize) -> Result<usize> {
    if row_len == 0 {
        return Err(Error::Invalid(format!("quantize {ty}: row length is 0")));
    }
    ty.row_bytes(row_len)?;
    if !n_values.is_multiple_of(row_len) {
        return Err(Error::Invalid(format!(
            "quantize {ty}: {n_values} values do not split into rows of {row_len}"
        )));
    }
    Ok(n_values / row_len)
}

fn count_byte_rows(
    ty: QuantType,
    n_bytes: usize,
    row_len: usize,
    row_bytes: usize,
) -> Result<usize> {
    if row_len == 0 {
        return Err(Error::Invalid(format!("dequantize {ty}: row length is 0")));
    }
    if !n_bytes.is_multiple_of(row_bytes) {
        return Err(Error::Invalid(format!(
            "dequantize {ty}: {n_bytes} bytes do not split into rows of {row_bytes} bytes \
             ({row_len} values each)"
        )));
    }
    Ok(n_bytes / row_bytes)
}

/// Encodes whole blocks; lengths already checked.
fn encode(ty: QuantType, src: &[f32], dst: &mut [u8]) {
    debug_assert_eq!(Ok(dst.len()), ty.row_bytes(src.len()).map_err(|_| ()));
    match ty {
        QuantType::F32 => half::quantize_f32(src, dst),
        QuantType::F16 => half::quantize_f16(src, dst),
        QuantType::BF16 => half::quantize_bf16(src, dst),
        QuantType::Q8_0 => q8_0::quantize(src, dst),
        QuantType::Q4_0 => q4::quantize_q4_0(src, dst),
        QuantType::Q4_1 => q4::quantize_q4_1(src, dst),
        QuantType::Q5_0 => q5::quantize_q5_0(src, dst),
        QuantType::Q5_1 => q5::quantize_q5_1(src, dst),
        QuantType::Q2_K => q2_k::quantize(src, dst),
        QuantType::Q3_K => q3_k::quantize(src, dst),
        QuantType::Q4_K => q4_k::quantize(src, dst),
        QuantType::Q5_K => q5_k::quantize(src, dst),
        QuantType::Q6_K => q6_k::quantize(src, dst),
    }
}

/// Decodes whole blocks; lengths already checked.
fn decode(ty: QuantType, src: &[u8], dst: &mut [f32]) {
    debug_assert_eq!(Ok(dst.len()), ty.values_in(src.len()).map_err(|_| ()));
    match ty {
        QuantType::F32 => half::dequantize_f32(src, dst),
        QuantType::F16 => half::dequantize_f16(src, dst),
        QuantType::BF16 => half::dequantize_bf16(src, dst),
        QuantType::Q8_0 => q8_0::dequantize(src, dst),
        QuantType::Q4_0 => q4::dequantize_q4_0(src, dst),
        QuantType::Q4_1 => q4::dequantize_q4_1(src, dst),
        QuantType::Q5_0 => q5::dequantize_q5_0(src, dst),
        QuantType::Q5_1 => q5::dequantize_q5_1(src, dst),
        QuantType::Q2_K => q2_k::dequantize(src, dst),
        QuantType::Q3_K => q3_k::dequantize(src, dst),
        QuantType::Q4_K => q4_k::dequantize(src, dst),
        QuantType::Q5_K => q5_k::dequantize(src, dst),
        QuantType::Q6_K => q6_k::dequantize(src, dst),
    }
}

/// Little-endian fp16 at `b[0..2]` as f32.
#[inline(always)]
fn read_f16(b: &[u8]) -> f32 {
    f16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]))
}

/// f32 rounded to fp16 like `GGML_FP32_TO_FP16`, stored little-endian at `b[0..2]`.
#[inline(always)]
fn write_f16(b: &mut [u8], v: f32) {
    b[..2].copy_from_slice(&f32_to_f16_bits(v).to_le_bytes());
}

/// The float types as tensor dtypes, both ways: the one place GGUF's float storage types and
/// loratool's tensor dtypes are matched.
impl QuantType {
    /// The tensor dtype of a float storage type; `None` for block-quantized types.
    pub fn float_dtype(self) -> Option<crate::tensor::DType> {
        use crate::tensor::DType;
        match self {
            QuantType::F32 => Some(DType::F32),
            QuantType::F16 => Some(DType::F16),
            QuantType::BF16 => Some(DType::BF16),
            _ => None,
        }
    }

    /// The storage type of a tensor dtype: F16 and BF16 as themselves, every other dtype as
    /// F32 (GGUF has no f64 or f8 storage).
    pub fn from_float(dtype: crate::tensor::DType) -> QuantType {
        use crate::tensor::DType;
        match dtype {
            DType::F16 => QuantType::F16,
            DType::BF16 => QuantType::BF16,
            _ => QuantType::F32,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn type_table_matches_ggml() {
        // (ggml id, block size, bytes per block) from ggml-common.h / GGML_QUANT_SIZES.
        let expected = [
            (QuantType::F32, 0, 1, 4),
            (QuantType::F16, 1, 1, 2),
            (QuantType::BF16, 30, 1, 2),
            (QuantType::Q8_0, 8, 32, 34),
            (QuantType::Q4_0, 2, 32, 18),
            (QuantType::Q4_1, 3, 32, 20),
            (QuantType::Q5_0, 6, 32, 22),
            (QuantType::Q5_1, 7, 32, 24),
            (QuantType::Q2_K, 10, 256, 84),
            (QuantType::Q3_K, 11, 256, 110),
            (QuantType::Q4_K, 12, 256, 144),
            (QuantType::Q5_K, 13, 256, 176),
            (QuantType::Q6_K, 14, 256, 210),
        ];
        for (ty, id, block, size) in expected {
            assert_eq!(ty.ggml_type(), id, "{ty}");
            assert_eq!(ty.block_size(), block, "{ty}");
            assert_eq!(ty.type_size(), size, "{ty}");
            assert_eq!(QuantType::from_ggml_type(id), Some(ty));
            assert_eq!(ty.name().parse::<QuantType>().unwrap(), ty);
            assert_eq!(ty.name().to_uppercase().parse::<QuantType>().unwrap(), ty);
        }
        assert_eq!(QuantType::from_ggml_type(4), None);
        assert!("q7_0".parse::<QuantType>().is_err());
    }

    #[test]
    fn row_not_multiple_of_block_is_invalid() {
        let err = quantize(QuantType::Q4_K, &[0.0; 100], 100).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)));
        assert!(
            err.to_string()
                .contains("not a multiple of the q4_K block size 256"),
            "{err}"
        );
    }

    #[test]
    fn parallel_equals_row_by_row() {
        let row_len = 512;
        let data: Vec<f32> = (0..row_len * 37)
            .map(|i| ((i * 7919) % 1013) as f32 / 97.0 - 5.0)
            .collect();
        for ty in QuantType::ALL {
            let all = quantize(ty, &data, row_len).unwrap();
            let mut serial = Vec::new();
            for row in data.chunks(row_len) {
                quantize_row(ty, row, &mut serial).unwrap();
            }
            assert_eq!(all, serial, "{ty}");
            let back = dequantize(ty, &all, row_len).unwrap();
            let mut serial_back = Vec::new();
            dequantize_row(ty, &serial, &mut serial_back).unwrap();
            assert_eq!(
                back.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                serial_back.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{ty}"
            );
        }
    }

    /// Varied test data: per super-block a different distribution and scale (Gaussian-like,
    /// uniform, heavy-tailed, sparse, constant, integers, tiny, zero sub-blocks, one outlier).
    pub(crate) fn varied_blocks(n_blocks: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32
        };
        let mut out = Vec::with_capacity(n_blocks * QK_K);
        for b in 0..n_blocks {
            let scale = [1.0f32, 1e-3, 37.0, 1e-6, 0.02, 5e3][b % 6];
            let kind = (b / 6) % 9;
            for i in 0..QK_K {
                let u = next() - 0.5;
                let g = (next() + next() + next() + next() - 2.0) * 1.7;
                let v = match kind {
                    0 => g,
                    1 => u,
                    2 => g * g * g,
                    3 if next() < 0.8 => 0.0,
                    3 => g,
                    4 => 0.75,
                    5 => (g * 8.0).round(),
                    6 if (i / 16) % 3 == 0 => 0.0,
                    6 => g + 0.5,
                    7 if i == (b * 37) % QK_K => 40.0,
                    7 => u,
                    _ => g.abs(),
                };
                out.push(v * scale);
            }
        }
        out
    }

    #[test]
    fn lane_builds_equal_the_scalar_reference() {
        type Reference = fn(&[f32], &mut [u8]);
        type Lanes = fn(lanes::Level, &[f32], &mut [u8]);
        let kernels: [(QuantType, Reference, Lanes); 10] = [
            (
                QuantType::Q8_0,
                q8_0::quantize_reference,
                q8_0::quantize_with,
            ),
            (
                QuantType::Q4_0,
                q4::quantize_q4_0_reference,
                q4::quantize_q4_0_with,
            ),
            (
                QuantType::Q4_1,
                q4::quantize_q4_1_reference,
                q4::quantize_q4_1_with,
            ),
            (
                QuantType::Q5_0,
                q5::quantize_q5_0_reference,
                q5::quantize_q5_0_with,
            ),
            (
                QuantType::Q5_1,
                q5::quantize_q5_1_reference,
                q5::quantize_q5_1_with,
            ),
            (
                QuantType::Q2_K,
                q2_k::quantize_reference,
                q2_k::quantize_with,
            ),
            (
                QuantType::Q3_K,
                q3_k::quantize_reference,
                q3_k::quantize_with,
            ),
            (
                QuantType::Q4_K,
                q4_k::quantize_reference,
                q4_k::quantize_with,
            ),
            (
                QuantType::Q5_K,
                q5_k::quantize_reference,
                q5_k::quantize_with,
            ),
            (
                QuantType::Q6_K,
                q6_k::quantize_reference,
                q6_k::quantize_with,
            ),
        ];
        // 163 super-blocks: groups of 1 and 2 plus a partial last group; then blocks where
        // reduction order matters: NaN at the start, middle and end, signed zeros, ties of
        // +-max, infinities
        let mut x = varied_blocks(163, 11);
        let specials = [
            f32::NAN,
            -0.0,
            0.0,
            3.0,
            -3.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        for b in 0..64usize {
            let mut blk = [0f32; QK_K];
            for (i, v) in blk.iter_mut().enumerate() {
                *v = match (b + i * 7) % 11 {
                    0..=2 => specials[(b + i) % specials.len()],
                    3 if b % 3 == 0 => -0.0,
                    _ => ((i * 31 + b) % 13) as f32 * 0.25 - 1.5,
                };
            }
            if b % 4 == 1 {
                blk.iter_mut()
                    .for_each(|v| *v = if v.is_nan() { 1.0 } else { *v });
            }
            if b % 8 == 2 {
                blk.iter_mut()
                    .for_each(|v| *v = if v.is_nan() { -0.0 } else { 0.0 });
            }
            x.extend_from_slice(&blk);
        }
        for (ty, reference, fast) in kernels {
            let n = ty.row_bytes(x.len()).unwrap();
            let mut want = vec![0u8; n];
            reference(&x, &mut want);
            for level in lanes::Level::available() {
                let mut got = vec![0xAAu8; n];
                fast(level, &x, &mut got);
                let first = got.iter().zip(&want).position(|(a, b)| a != b);
                assert_eq!(first, None, "{ty} at {level:?}: first differing byte");
            }
        }
    }

    #[test]
    fn empty_input_is_empty_output() {
        for ty in QuantType::ALL {
            assert!(quantize(ty, &[], 256).unwrap().is_empty());
            assert!(dequantize(ty, &[], 256).unwrap().is_empty());
        }
    }
}
