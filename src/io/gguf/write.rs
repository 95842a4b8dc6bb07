//! Writing GGUF v3 (little-endian), streamed tensor by tensor into a temp file renamed into
//! place when complete. Layout as llama.cpp's reader demands: metadata in insertion order with
//! the types given, tensor infos in data order with contiguous offsets, the data section and
//! every tensor (the last one too) padded to `general.alignment` (default 32).

use super::value::{type_id, GgufValue};
use super::{ggml_type_layout, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_DIMS, MAX_NAME_BYTES};
use crate::error::{Error, Result};
use crate::io::atomic::write_atomic;
use indexmap::IndexMap;
use std::borrow::Cow;
use std::io::Write;
use std::path::Path;

pub struct PendingGgufTensor<'a> {
    pub name: String,
    /// ggml order: `dims[0]` is the contiguous dimension (the reverse of a row-major shape).
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    pub data: Box<dyn Fn() -> Result<Cow<'a, [u8]>> + Send + Sync + 'a>,
    /// Called once the bytes are written (see [`crate::io::safetensors_write::PendingTensor`]).
    pub written: Option<crate::io::safetensors_write::Written<'a>>,
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, key: &str, v: &GgufValue) -> Result<()> {
    match v {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.push(*x as u8),
        GgufValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Bool(x) => out.push(*x as u8),
        GgufValue::String(s) => put_string(out, s),
        GgufValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Array { elem_type, items } => {
            if *elem_type == type_id::ARRAY {
                return Err(Error::Invalid(format!(
                    "metadata '{key}': nested arrays are rejected by llama.cpp"
                )));
            }
            if let Some(bad) = items.iter().find(|i| i.type_id() != *elem_type) {
                return Err(Error::Invalid(format!(
                    "metadata '{key}': array of type {elem_type} holds a value of type {}",
                    bad.type_id()
                )));
            }
            out.extend_from_slice(&elem_type.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for i in items {
                put_value(out, key, i)?;
            }
        }
    }
    Ok(())
}

/// The largest `general.alignment` written. Readers accept any power of two, but each file
/// pads its header to the alignment, so a hostile 2 GiB alignment in an input's metadata
/// would otherwise turn a 4 KiB model into a 2 GiB output.
pub const MAX_WRITE_ALIGNMENT: u64 = 1 << 20;

fn alignment_of(kv: &IndexMap<String, GgufValue>) -> Result<u64> {
    match kv.get("general.alignment") {
        None => Ok(DEFAULT_ALIGNMENT),
        Some(GgufValue::U32(a)) if a.is_power_of_two() && u64::from(*a) <= MAX_WRITE_ALIGNMENT => {
            Ok(*a as u64)
        }
        Some(GgufValue::U32(a)) if a.is_power_of_two() => Err(Error::Invalid(format!(
            "general.alignment {a} is larger than the {MAX_WRITE_ALIGNMENT} bytes loratool writes (real files use 32)"
        ))),
        Some(v) => Err(Error::Invalid(format!(
            "general.alignment must be a UINT32 power of two, got {v}"
        ))),
    }
}

/// Write `n` zero bytes without allocating them.
fn write_zeros(w: &mut impl Write, n: u64) -> std::io::Result<()> {
    const ZEROS: [u8; 4096] = [0; 4096];
    let mut left = n;
    while left > 0 {
        let k = left.min(ZEROS.len() as u64) as usize;
        w.write_all(&ZEROS[..k])?;
        left -= k as u64;
    }
    Ok(())
}

fn pad_to(n: u64, a: u64) -> u64 {
    n.div_ceil(a) * a
}

/// Write a GGUF file. Returns the number of bytes written.
pub fn write_gguf(
    path: &Path,
    kv: &IndexMap<String, GgufValue>,
    tensors: &[PendingGgufTensor<'_>],
    progress: &dyn Fn(u64),
) -> Result<u64> {
    let alignment = alignment_of(kv)?;
    let mut head = Vec::new();
    head.extend_from_slice(GGUF_MAGIC);
    head.extend_from_slice(&3u32.to_le_bytes());
    head.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    head.extend_from_slice(&(kv.len() as u64).to_le_bytes());
    for (k, v) in kv {
        if k.is_empty() {
            return Err(Error::Invalid("empty metadata key".into()));
        }
        put_string(&mut head, k);
        head.extend_from_slice(&v.type_id().to_le_bytes());
        put_value(&mut head, k, v)?;
    }
    let mut sizes = Vec::with_capacity(tensors.len());
    let mut seen = std::collections::HashSet::new();
    let mut offset = 0u64;
    for t in tensors {
        let bad = |m: String| Error::Invalid(format!("tensor '{}': {m}", t.name));
        if t.name.len() >= MAX_NAME_BYTES {
            return Err(bad(format!(
                "name is {} bytes; GGUF allows at most {}",
                t.name.len(),
                MAX_NAME_BYTES - 1
            )));
        }
        if !seen.insert(t.name.as_str()) {
            return Err(bad("appears twice".into()));
        }
        if t.dims.is_empty() || t.dims.len() > MAX_DIMS {
            return Err(bad(format!(
                "{} dimensions (1 to {MAX_DIMS})",
                t.dims.len()
            )));
        }
        let (block, type_size, tname) = ggml_type_layout(t.ggml_type)
            .ok_or_else(|| bad(format!("ggml type {} is not supported", t.ggml_type)))?;
        if t.dims[0] % block as u64 != 0 {
            return Err(bad(format!(
                "row length {} is not a multiple of the {tname} block size {block}",
                t.dims[0]
            )));
        }
        let numel = t
            .dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| bad("dimensions overflow".into()))?;
        let size = numel / block as u64 * type_size as u64;
        put_string(&mut head, &t.name);
        head.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            head.extend_from_slice(&d.to_le_bytes());
        }
        head.extend_from_slice(&t.ggml_type.to_le_bytes());
        head.extend_from_slice(&offset.to_le_bytes());
        sizes.push(size);
        offset += pad_to(size, alignment);
    }
    let head_len = pad_to(head.len() as u64, alignment);
    write_atomic(path, |w| {
        w.write_all(&head).map_err(|e| Error::io(path, e))?;
        write_zeros(w, head_len - head.len() as u64).map_err(|e| Error::io(path, e))?;
        for (t, &size) in tensors.iter().zip(&sizes) {
            let bytes = (t.data)()?;
            if bytes.len() as u64 != size {
                return Err(Error::Invalid(format!(
                    "tensor '{}' produced {} bytes, its dimensions and type need {size}",
                    t.name,
                    bytes.len()
                )));
            }
            w.write_all(&bytes).map_err(|e| Error::io(path, e))?;
            drop(bytes);
            if let Some(done) = &t.written {
                done();
            }
            write_zeros(w, pad_to(size, alignment) - size).map_err(|e| Error::io(path, e))?;
            progress(size);
        }
        Ok(head_len + offset)
    })
}
