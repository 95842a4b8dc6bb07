//! Tensors as loratool holds them: a dtype, a shape and bytes that are either a view into a
//! memory-mapped file or an owned buffer. Numbers are decoded only when an op asks for them.

mod convert;
mod dtype;

pub use convert::{
    decode_f32, decode_f32_into, decode_f32_rows, decode_f64, encode_f32, encode_scalar_exact,
};
pub use dtype::DType;

use crate::error::{Error, Result};
use memmap2::Mmap;
use std::sync::Arc;

/// Where a tensor's bytes live. Cloning is cheap (reference counted).
#[derive(Clone)]
pub enum Bytes {
    Mapped {
        map: Arc<Mmap>,
        start: usize,
        len: usize,
    },
    Owned(Arc<Vec<u8>>),
}

impl Bytes {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped { map, start, len } => &map[*start..*start + *len],
            Bytes::Owned(v) => v,
        }
    }
}

#[derive(Clone)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    bytes: Bytes,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({} {:?})", self.dtype, self.shape)
    }
}

/// Product of the dimensions, or None on overflow.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

impl Tensor {
    /// A tensor over existing bytes. The caller guarantees `bytes` holds exactly
    /// `numel(shape) * dtype.size()` bytes; it is checked here anyway.
    pub fn new(dtype: DType, shape: Vec<usize>, bytes: Bytes) -> Result<Tensor> {
        let want = checked_numel(&shape)
            .and_then(|n| n.checked_mul(dtype.size()))
            .ok_or_else(|| Error::Invalid(format!("tensor shape {shape:?} overflows")))?;
        let have = bytes.as_slice().len();
        if want != have {
            return Err(Error::Invalid(format!(
                "tensor of {dtype} {shape:?} needs {want} bytes, got {have}"
            )));
        }
        Ok(Tensor {
            dtype,
            shape,
            bytes,
        })
    }

    pub fn from_f32(shape: Vec<usize>, values: &[f32], dtype: DType) -> Result<Tensor> {
        let bytes = encode_f32(dtype, values)
            .ok_or_else(|| Error::Invalid(format!("cannot write {dtype} tensors from floats")))?;
        Tensor::new(dtype, shape, Bytes::Owned(Arc::new(bytes)))
    }

    /// A zero-dimensional tensor holding `value`, exactly, in `dtype`.
    pub fn scalar(value: f64, dtype: DType) -> Option<Tensor> {
        let bytes = encode_scalar_exact(dtype, value)?;
        Some(Tensor {
            dtype,
            shape: vec![],
            bytes: Bytes::Owned(Arc::new(bytes)),
        })
    }

    /// An alpha scalar as sd-scripts saves it: in `dtype` (the factors') when that holds the
    /// value exactly, else F32, else F64; an error naming the value when none does.
    pub fn alpha(value: f64, dtype: DType) -> Result<Tensor> {
        [dtype, DType::F32, DType::F64]
            .into_iter()
            .find_map(|d| Tensor::scalar(value, d))
            .ok_or_else(|| Error::Invalid(format!("alpha {value} cannot be stored")))
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn bytes(&self) -> &[u8] {
        self.bytes.as_slice()
    }
    pub fn byte_len(&self) -> usize {
        self.bytes().len()
    }

    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = Vec::new();
        decode_f32(self.dtype, self.bytes(), &mut out);
        out
    }

    pub fn to_f64(&self) -> Vec<f64> {
        let mut out = Vec::new();
        decode_f64(self.dtype, self.bytes(), &mut out);
        out
    }

    /// The value of a one-element tensor (shape `[]` or `[1]`), exactly.
    pub fn scalar_value(&self) -> Option<f64> {
        if self.numel() != 1 {
            return None;
        }
        self.to_f64().first().copied()
    }

    /// The same data in `dtype`. A no-op (same bytes) when the dtype already matches, so
    /// conversions that keep the dtype are bit-exact.
    pub fn cast(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype {
            return Ok(self.clone());
        }
        Tensor::from_f32(self.shape.clone(), &self.to_f32(), dtype)
    }

    /// The same bytes under another shape with the same element count.
    pub fn reshaped(&self, shape: Vec<usize>) -> Result<Tensor> {
        Tensor::new(self.dtype, shape, self.bytes.clone())
    }
}
