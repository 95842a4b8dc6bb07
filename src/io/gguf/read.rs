//! Reading GGUF (v2/v3, little-endian): memory-mapped, every count, length, offset and size
//! checked against the file before it is used, and nothing allocated from a declared size
//! larger than the bytes that could hold it.

use super::value::{type_id, GgufValue};
use super::{ggml_type_layout, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_DIMS, MAX_NAME_BYTES};
use crate::error::{Error, Result};
use indexmap::IndexMap;
use memmap2::Mmap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct GgufTensorInfo {
    /// Dimensions in ggml order: `dims[0]` is the contiguous (innermost) one.
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    /// Offset from the start of the data section.
    pub offset: u64,
    pub byte_len: u64,
}

impl GgufTensorInfo {
    /// Row-major shape (numpy / torch order), the reverse of `dims`.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

pub struct GgufFile {
    path: PathBuf,
    map: Arc<Mmap>,
    pub version: u32,
    pub kv: IndexMap<String, GgufValue>,
    pub tensors: IndexMap<String, GgufTensorInfo>,
    pub alignment: u64,
    pub data_start: u64,
}

/// A bounds-checked little-endian cursor over the mapped bytes.
struct Cursor<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(Error::malformed(
                self.path,
                format!(
                    "{what} at byte {} needs {n} bytes but the file ends at {} (truncated or corrupt)",
                    self.pos,
                    self.bytes.len()
                ),
            )),
        }
    }
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }
    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        if len > self.remaining() as u64 {
            return Err(Error::malformed(
                self.path,
                format!("{what}: string length {len} runs past the end of the file"),
            ));
        }
        let b = self.take(len as usize, what)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| Error::malformed(self.path, format!("{what} is not valid UTF-8")))
    }
    fn value(&mut self, ty: u32, key: &str) -> Result<GgufValue> {
        use type_id::*;
        let what = &format!("value of '{key}'");
        Ok(match ty {
            U8 => GgufValue::U8(self.u8(what)?),
            I8 => GgufValue::I8(self.u8(what)? as i8),
            U16 => GgufValue::U16(self.u16(what)?),
            I16 => GgufValue::I16(self.u16(what)? as i16),
            U32 => GgufValue::U32(self.u32(what)?),
            I32 => GgufValue::I32(self.u32(what)? as i32),
            F32 => GgufValue::F32(f32::from_bits(self.u32(what)?)),
            BOOL => match self.u8(what)? {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => {
                    return Err(Error::malformed(
                        self.path,
                        format!("'{key}': bool byte {b} is neither 0 nor 1"),
                    ))
                }
            },
            STRING => GgufValue::String(self.string(what)?),
            U64 => GgufValue::U64(self.u64(what)?),
            I64 => GgufValue::I64(self.u64(what)? as i64),
            F64 => GgufValue::F64(f64::from_bits(self.u64(what)?)),
            ARRAY => {
                let elem_type = self.u32(what)?;
                if elem_type == ARRAY {
                    return Err(Error::malformed(
                        self.path,
                        format!("'{key}' is a nested array, which GGUF readers reject"),
                    ));
                }
                let min_size: u64 = match elem_type {
                    U8 | I8 | BOOL => 1,
                    U16 | I16 => 2,
                    U32 | I32 | F32 => 4,
                    U64 | I64 | F64 | STRING => 8,
                    other => {
                        return Err(Error::malformed(
                            self.path,
                            format!("'{key}' is an array of unknown value type {other}"),
                        ))
                    }
                };
                let count = self.u64(what)?;
                // every element takes at least `min_size` bytes (a string its length): a count
                // beyond what the rest of the file can hold is a lie, refused before anything
                // is allocated for it
                if count > self.remaining() as u64 / min_size {
                    return Err(Error::malformed(
                        self.path,
                        format!(
                            "'{key}': array of {count} elements cannot fit in the rest of the file"
                        ),
                    ));
                }
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(elem_type, key)?);
                }
                GgufValue::Array { elem_type, items }
            }
            other => {
                return Err(Error::malformed(
                    self.path,
                    format!("'{key}' has unknown value type {other}"),
                ))
            }
        })
    }
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<GgufFile> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: read-only mapping; loratool replaces files by rename, never in place.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let p = parse(path, &map)?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            map: Arc::new(map),
            version: p.version,
            kv: p.kv,
            tensors: p.tensors,
            alignment: p.alignment,
            data_start: p.data_start,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw bytes of one tensor.
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::bad_tensor(&self.path, name, "no such tensor in this file"))?;
        let start = (self.data_start + t.offset) as usize;
        Ok(&self.map[start..start + t.byte_len as usize])
    }

    /// Tell the kernel a tensor's pages will not be read again, so streaming through a model
    /// keeps about one tensor resident instead of the whole file. Best effort: an error only
    /// means the pages stay cached.
    pub fn release(&self, name: &str) {
        let Some(t) = self.tensors.get(name) else {
            return;
        };
        let start = (self.data_start + t.offset) as usize;
        // SAFETY: the mapping is read-only and file-backed, so dropped pages are re-read from
        // the file if touched again; no data can be lost.
        let _ = unsafe {
            self.map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                start,
                t.byte_len as usize,
            )
        };
    }

    pub fn architecture(&self) -> Option<&str> {
        self.kv.get("general.architecture").and_then(|v| v.as_str())
    }
}

struct Parsed {
    version: u32,
    kv: IndexMap<String, GgufValue>,
    tensors: IndexMap<String, GgufTensorInfo>,
    alignment: u64,
    data_start: u64,
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Parsed> {
    let bad = |m: String| Error::malformed(path, m);
    let mut c = Cursor {
        path,
        bytes,
        pos: 0,
    };
    let magic = c.take(4, "magic")?;
    if magic != GGUF_MAGIC {
        return Err(bad("not a GGUF file (no 'GGUF' magic)".into()));
    }
    let version = c.u32("version")?;
    if version & 0xFFFF == 0 && version != 0 {
        return Err(bad(format!(
            "version field {version:#x} looks byte-swapped: big-endian GGUF is not supported"
        )));
    }
    if !(2..=3).contains(&version) {
        return Err(bad(format!(
            "GGUF version {version} is not supported (2 or 3)"
        )));
    }
    let n_tensors = c.u64("tensor count")?;
    let n_kv = c.u64("metadata count")?;
    // a KV needs at least 8 + 1 + 4 bytes, a tensor info at least 8 + 1 + 4 + 8 + 4 + 8
    if n_kv > (c.remaining() / 13) as u64 || n_tensors > (c.remaining() / 33) as u64 {
        return Err(bad(format!(
            "header declares {n_kv} metadata entries and {n_tensors} tensors, more than the file can hold"
        )));
    }
    let mut kv = IndexMap::with_capacity(n_kv as usize);
    for i in 0..n_kv {
        let key = c.string(&format!("metadata key #{i}"))?;
        if key.is_empty() {
            return Err(bad(format!("metadata key #{i} is empty")));
        }
        let ty = c.u32(&format!("type of '{key}'"))?;
        let value = c.value(ty, &key)?;
        if kv.insert(key.clone(), value).is_some() {
            return Err(bad(format!("duplicate metadata key '{key}'")));
        }
    }
    let alignment = match kv.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(GgufValue::U32(a)) if a.is_power_of_two() => *a as u64,
        Some(GgufValue::U32(a)) => {
            return Err(bad(format!("general.alignment {a} is not a power of two")))
        }
        Some(v) => {
            return Err(bad(format!(
                "general.alignment must be UINT32, found type {}",
                v.type_id()
            )))
        }
    };
    let mut infos = Vec::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let name = c.string(&format!("tensor name #{i}"))?;
        let tbad = |m: String| Error::bad_tensor(path, &name, m);
        if name.len() >= MAX_NAME_BYTES {
            return Err(tbad(format!(
                "name is {} bytes; GGUF allows at most {}",
                name.len(),
                MAX_NAME_BYTES - 1
            )));
        }
        let n_dims = c.u32(&format!("dimension count of '{name}'"))?;
        if n_dims == 0 || n_dims as usize > MAX_DIMS {
            return Err(tbad(format!(
                "{n_dims} dimensions (1 to {MAX_DIMS} allowed)"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64(&format!("dimensions of '{name}'"))?);
        }
        let ggml_type = c.u32(&format!("type of '{name}'"))?;
        let offset = c.u64(&format!("offset of '{name}'"))?;
        let (block, type_size, tname) = ggml_type_layout(ggml_type)
            .ok_or_else(|| tbad(format!("ggml type {ggml_type} is not supported")))?;
        if dims[0] % block as u64 != 0 {
            return Err(tbad(format!(
                "row length {} is not a multiple of the {tname} block size {block}",
                dims[0]
            )));
        }
        let numel = dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| tbad(format!("dimensions {dims:?} overflow")))?;
        let byte_len = (numel / block as u64)
            .checked_mul(type_size as u64)
            .ok_or_else(|| tbad(format!("dimensions {dims:?} overflow")))?;
        if offset % alignment != 0 {
            return Err(tbad(format!(
                "data offset {offset} is not a multiple of the alignment {alignment}"
            )));
        }
        infos.push((
            name,
            GgufTensorInfo {
                dims,
                ggml_type,
                offset,
                byte_len,
            },
        ));
    }
    let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
    // A file cut inside the padding before its data: even a zero-byte tensor's view would
    // start past the end (fuzz finding 9). Without tensors there is nothing to view.
    if data_start > bytes.len() as u64 && !infos.is_empty() {
        return Err(bad(format!(
            "the tensor data starts at byte {data_start} (after padding to {alignment}), past the end of the {}-byte file (truncated file?)",
            bytes.len()
        )));
    }
    let data_len = (bytes.len() as u64).saturating_sub(data_start);
    let mut tensors = IndexMap::with_capacity(infos.len());
    let mut spans: Vec<(u64, u64, String)> = Vec::with_capacity(infos.len());
    for (name, info) in infos {
        let end = info.offset.checked_add(info.byte_len);
        if end.is_none_or(|e| e > data_len) {
            return Err(Error::bad_tensor(
                path,
                &name,
                format!(
                    "data [{}, +{}) runs past the {data_len}-byte data section (truncated file?)",
                    info.offset, info.byte_len
                ),
            ));
        }
        spans.push((info.offset, info.offset + info.byte_len, name.clone()));
        if tensors.insert(name.clone(), info).is_some() {
            return Err(Error::bad_tensor(
                path,
                &name,
                "appears twice in the tensor list",
            ));
        }
    }
    spans.sort();
    for w in spans.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(Error::bad_tensor(
                path,
                &w[1].2,
                format!("data overlaps tensor '{}'", w[0].2),
            ));
        }
    }
    Ok(Parsed {
        version,
        kv,
        tensors,
        alignment,
        data_start,
    })
}
