//! Reading safetensors files: memory-mapped, header validated before anything is trusted.
//!
//! The header is parsed here rather than by the `safetensors` crate so that every error names
//! the file and the tensor, gaps between tensors are tolerated (some writers pad), and nothing
//! is ever allocated from a size the file declares. Tensor data is never touched until a view
//! is decoded, so inspecting a multi-GB file reads only its header pages.

use crate::error::{Error, Result};
use crate::tensor::{checked_numel, Bytes, DType, Tensor};
use indexmap::IndexMap;
use memmap2::Mmap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Headers beyond this are refused (the reference implementation uses the same limit).
pub const MAX_HEADER_LEN: u64 = 100 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Absolute byte range in the file.
    pub start: usize,
    pub end: usize,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn byte_len(&self) -> usize {
        self.end - self.start
    }
}

pub struct SafetensorsFile {
    path: PathBuf,
    map: Option<Arc<Mmap>>,
    /// The open file behind `map`, for in-kernel copies of tensor bytes.
    file: Option<File>,
    file_len: u64,
    header_len: u64,
    tensors: IndexMap<String, TensorInfo>,
    metadata: IndexMap<String, String>,
}

impl SafetensorsFile {
    pub fn open(path: &Path) -> Result<SafetensorsFile> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if file_len < 8 {
            return Err(Error::malformed(
                path,
                format!("not a safetensors file: {file_len} bytes, shorter than the 8-byte header length"),
            ));
        }
        // SAFETY: the file is opened read-only; loratool never writes a file it has mapped,
        // and writers elsewhere replace files by rename, which leaves this mapping intact.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let map = Arc::new(map);
        let mut parsed = parse_header(path, &map, file_len)?;
        parsed.map = Some(map);
        parsed.file = Some(file);
        Ok(parsed)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn file_len(&self) -> u64 {
        self.file_len
    }
    pub fn header_len(&self) -> u64 {
        self.header_len
    }
    /// Offset of the data region (8 + header length).
    pub fn data_start(&self) -> usize {
        8 + self.header_len as usize
    }
    pub fn tensors(&self) -> &IndexMap<String, TensorInfo> {
        &self.tensors
    }
    pub fn metadata(&self) -> &IndexMap<String, String> {
        &self.metadata
    }
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name)
    }

    /// Where one tensor's bytes are in the open file, for a writer to copy them in the kernel
    /// (`None` for a file parsed from bytes rather than opened).
    pub fn span(&self, name: &str) -> Option<crate::io::FileSpan<'_>> {
        let info = self.tensors.get(name)?;
        Some(crate::io::FileSpan {
            file: self.file.as_ref()?,
            offset: info.start as u64,
        })
    }

    /// A zero-copy view of one tensor.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        let info = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::bad_tensor(&self.path, name, "no such tensor in this file"))?;
        let map = self
            .map
            .as_ref()
            .ok_or_else(|| Error::malformed(&self.path, "file is not mapped"))?;
        Tensor::new(
            info.dtype,
            info.shape.clone(),
            Bytes::Mapped {
                map: map.clone(),
                start: info.start,
                len: info.byte_len(),
            },
        )
        .map_err(|e| Error::bad_tensor(&self.path, name, e.to_string()))
    }

    /// One tensor's bytes, borrowed from the mapping.
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        let info = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::bad_tensor(&self.path, name, "no such tensor in this file"))?;
        let map = self
            .map
            .as_ref()
            .ok_or_else(|| Error::malformed(&self.path, "file is not mapped"))?;
        map.get(info.start..info.start + info.byte_len())
            .ok_or_else(|| Error::bad_tensor(&self.path, name, "data outside the file"))
    }

    /// Drop one tensor's pages from memory once it has been consumed (best effort), so streaming
    /// through a large model keeps about one tensor resident.
    pub fn release(&self, name: &str) {
        if let (Some(map), Some(info)) = (&self.map, self.tensors.get(name)) {
            // SAFETY: the mapping is read-only and file-backed: dropped pages are re-read from the
            // file if touched again, so no data can be lost.
            let _ = unsafe {
                map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    info.start,
                    info.byte_len(),
                )
            };
        }
    }

    /// The raw bytes of the data region (for hashing).
    pub fn data_region(&self) -> &[u8] {
        match &self.map {
            Some(m) => &m[self.data_start()..],
            None => &[],
        }
    }
}

/// Parse and validate the header of `bytes` (the whole file, or at least its header).
/// Top-level header keys that occur more than once, in order of their second occurrence.
/// JSON parsers keep only one of them (the last, for serde_json and Python's `json`), so a
/// repeated tensor name silently hides a tensor; `check` reports it.
pub fn repeated_header_keys(path: &Path) -> Result<Vec<String>> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(
            self,
            mut map: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            let mut seen = std::collections::HashSet::new();
            let mut repeated = Vec::new();
            while let Some(k) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                if !seen.insert(k.clone()) {
                    repeated.push(k);
                }
            }
            Ok(repeated)
        }
    }
    let file = SafetensorsFile::open(path)?;
    let Some(map) = &file.map else {
        return Ok(Vec::new());
    };
    let header = &map[8..8 + file.header_len as usize];
    let text = std::str::from_utf8(header)
        .map_err(|_| Error::malformed(path, "header is not valid UTF-8"))?;
    let mut de = serde_json::Deserializer::from_str(text.trim_end_matches(' '));
    de.deserialize_map(Keys)
        .map_err(|e| Error::malformed(path, format!("header is not valid JSON: {e}")))
}

pub fn parse_header(path: &Path, bytes: &[u8], file_len: u64) -> Result<SafetensorsFile> {
    let bad = |m: String| Error::malformed(path, m);
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(bytes.get(..8).ok_or_else(|| {
        bad(format!(
            "not a safetensors file: {} bytes, shorter than the 8-byte header length",
            bytes.len()
        ))
    })?);
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER_LEN {
        return Err(bad(format!(
            "header length {header_len} exceeds the {MAX_HEADER_LEN}-byte limit (corrupt or not a safetensors file)"
        )));
    }
    if 8 + header_len > file_len {
        return Err(bad(format!(
            "header length {header_len} runs past the end of the {file_len}-byte file (truncated or not a safetensors file)"
        )));
    }
    let header = bytes.get(8..8 + header_len as usize).ok_or_else(|| {
        bad(format!(
            "header length {header_len} runs past the {} bytes read (truncated file?)",
            bytes.len()
        ))
    })?;
    let text = std::str::from_utf8(header)
        .map_err(|_| bad("header is not valid UTF-8 (not a safetensors file?)".into()))?;
    let value: serde_json::Value = serde_json::from_str(text.trim_end_matches(' '))
        .map_err(|e| bad(format!("header is not valid JSON: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| bad("header is not a JSON object".into()))?;

    let data_start = 8 + header_len;
    let data_len = file_len - data_start;
    let mut metadata = IndexMap::new();
    let mut tensors = IndexMap::with_capacity(obj.len());
    for (name, entry) in obj {
        if name == "__metadata__" {
            let m = entry
                .as_object()
                .ok_or_else(|| bad("__metadata__ is not an object of strings".into()))?;
            for (k, v) in m {
                let v = v
                    .as_str()
                    .ok_or_else(|| bad(format!("__metadata__ value of '{k}' is not a string")))?;
                metadata.insert(k.clone(), v.to_string());
            }
            continue;
        }
        let info = parse_entry(path, name, entry, data_start, data_len)?;
        tensors.insert(name.clone(), info);
    }
    check_overlaps(path, &tensors)?;
    Ok(SafetensorsFile {
        path: path.to_path_buf(),
        map: None,
        file: None,
        file_len,
        header_len,
        tensors,
        metadata,
    })
}

fn parse_entry(
    path: &Path,
    name: &str,
    entry: &serde_json::Value,
    data_start: u64,
    data_len: u64,
) -> Result<TensorInfo> {
    let bad = |m: String| Error::bad_tensor(path, name, m);
    let obj = entry
        .as_object()
        .ok_or_else(|| bad("header entry is not an object".into()))?;
    let dtype_name = obj
        .get("dtype")
        .and_then(|d| d.as_str())
        .ok_or_else(|| bad("missing dtype".into()))?;
    let dtype = DType::from_safetensors_name(dtype_name)
        .ok_or_else(|| bad(format!("unsupported dtype {dtype_name}")))?;
    let shape = obj
        .get("shape")
        .and_then(|s| s.as_array())
        .ok_or_else(|| bad("missing shape".into()))?
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| bad("shape must be a list of non-negative integers".into()))?;
    let offsets = obj
        .get("data_offsets")
        .and_then(|o| o.as_array())
        .filter(|o| o.len() == 2)
        .and_then(|o| Some((o[0].as_u64()?, o[1].as_u64()?)))
        .ok_or_else(|| bad("data_offsets must be two non-negative integers".into()))?;
    let (begin, end) = offsets;
    if begin > end {
        return Err(bad(format!("data_offsets [{begin}, {end}] run backwards")));
    }
    if end > data_len {
        return Err(bad(format!(
            "data_offsets [{begin}, {end}] run past the {data_len}-byte data region (file truncated?)"
        )));
    }
    let want = checked_numel(&shape)
        .and_then(|n| n.checked_mul(dtype.size()))
        .ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
    if want as u64 != end - begin {
        return Err(bad(format!(
            "shape {shape:?} of {dtype} needs {want} bytes but data_offsets [{begin}, {end}] hold {}",
            end - begin
        )));
    }
    Ok(TensorInfo {
        dtype,
        shape,
        start: (data_start + begin) as usize,
        end: (data_start + end) as usize,
    })
}

fn check_overlaps(path: &Path, tensors: &IndexMap<String, TensorInfo>) -> Result<()> {
    let mut spans: Vec<(&str, &TensorInfo)> = tensors
        .iter()
        .filter(|(_, t)| t.end > t.start)
        .map(|(n, t)| (n.as_str(), t))
        .collect();
    spans.sort_by_key(|(_, t)| (t.start, t.end));
    for pair in spans.windows(2) {
        let (a, ta) = pair[0];
        let (b, tb) = pair[1];
        if tb.start < ta.end {
            return Err(Error::bad_tensor(
                path,
                b,
                format!("data overlaps tensor '{a}' (corrupt or hostile header)"),
            ));
        }
    }
    Ok(())
}
