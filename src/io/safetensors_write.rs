//! Writing safetensors files: streamed one tensor at a time into a temp file that is renamed
//! into place only when complete.
//!
//! The byte layout is the reference serializer's (the `safetensors` crate, which the Python
//! package also uses): tensors ordered by dtype (descending `Dtype` rank) then name, header as
//! compact JSON with `__metadata__` first, padded with spaces to a multiple of 8. kohya's
//! `sshs_*` hashes are defined on that layout, so [`plan_layout`] is public for them.

use crate::error::{Error, Result};
use crate::io::atomic::write_atomic;
use crate::tensor::{checked_numel, DType, Tensor};
use indexmap::IndexMap;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::io::Write;
use std::path::Path;

/// Source of one tensor's bytes, asked for once while writing.
pub type Producer<'a> = Box<dyn Fn() -> Result<Cow<'a, [u8]>> + Send + Sync + 'a>;

pub struct PendingTensor<'a> {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Producer<'a>,
    /// Called once the bytes are written: lets a source mapped from disk drop its pages, so the
    /// bytes can be lent from the map instead of copied.
    pub written: Option<Written<'a>>,
}

/// See [`PendingTensor::written`].
pub type Written<'a> = Box<dyn Fn() + Send + Sync + 'a>;

impl<'a> PendingTensor<'a> {
    /// A tensor that is already in memory (or mapped).
    pub fn from_tensor(name: impl Into<String>, tensor: &'a Tensor) -> PendingTensor<'a> {
        PendingTensor {
            name: name.into(),
            dtype: tensor.dtype(),
            shape: tensor.shape().to_vec(),
            data: Box::new(move || Ok(Cow::Borrowed(tensor.bytes()))),
            written: None,
        }
    }

    pub fn byte_len(&self) -> Option<usize> {
        checked_numel(&self.shape).and_then(|n| n.checked_mul(self.dtype.size()))
    }
}

/// Where each tensor goes, and the header bytes (including the 8-byte length prefix).
pub struct Layout {
    pub header: Vec<u8>,
    /// Indices into the input slice, in data order.
    pub order: Vec<usize>,
    pub data_len: u64,
}

#[derive(Debug, Clone)]
pub struct WriteReport {
    pub bytes: u64,
    pub tensors: usize,
    /// sha256 of the data region (what kohya calls the model hash).
    pub data_sha256: String,
}

/// Compute the reference layout for these tensors and metadata.
pub fn plan_layout(
    tensors: &[(&str, DType, &[usize])],
    metadata: Option<&IndexMap<String, String>>,
) -> Result<Layout> {
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by(|&a, &b| {
        let (na, da, _) = tensors[a];
        let (nb, db, _) = tensors[b];
        db.safetensors_order()
            .cmp(&da.safetensors_order())
            .then_with(|| na.as_bytes().cmp(nb.as_bytes()))
    });
    for pair in order.windows(2) {
        if tensors[pair[0]].0 == tensors[pair[1]].0 {
            return Err(Error::Invalid(format!(
                "tensor name '{}' appears twice in one output file",
                tensors[pair[0]].0
            )));
        }
    }
    let mut json = String::from("{");
    let mut first = true;
    if let Some(md) = metadata {
        json.push_str("\"__metadata__\":{");
        for (i, (k, v)) in md.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            json.push_str(&json_string(k));
            json.push(':');
            json.push_str(&json_string(v));
        }
        json.push('}');
        first = false;
    }
    let mut offset: u64 = 0;
    for &i in &order {
        let (name, dtype, shape) = tensors[i];
        let len = checked_numel(shape)
            .and_then(|n| n.checked_mul(dtype.size()))
            .ok_or_else(|| Error::Invalid(format!("tensor '{name}': shape {shape:?} overflows")))?
            as u64;
        if !first {
            json.push(',');
        }
        first = false;
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        json.push_str(&format!(
            "{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
            json_string(name),
            dtype.safetensors_name(),
            dims.join(","),
            offset,
            offset + len
        ));
        offset += len;
    }
    json.push('}');
    let pad = (8 - json.len() % 8) % 8;
    json.extend(std::iter::repeat_n(' ', pad));
    let mut header = Vec::with_capacity(8 + json.len());
    header.extend_from_slice(&(json.len() as u64).to_le_bytes());
    header.extend_from_slice(json.as_bytes());
    Ok(Layout {
        header,
        order,
        data_len: offset,
    })
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

/// Write `tensors` to `path` atomically, streaming each tensor's bytes as produced.
/// `progress` is called with the byte count of each tensor written.
pub fn write_safetensors(
    path: &Path,
    tensors: &[PendingTensor<'_>],
    metadata: Option<&IndexMap<String, String>>,
    progress: &dyn Fn(u64),
) -> Result<WriteReport> {
    let specs: Vec<(&str, DType, &[usize])> = tensors
        .iter()
        .map(|t| (t.name.as_str(), t.dtype, t.shape.as_slice()))
        .collect();
    let layout = plan_layout(&specs, metadata)?;
    write_atomic(path, |w| {
        w.write_all(&layout.header)
            .map_err(|e| Error::io(path, e))?;
        let mut hasher = Sha256::new();
        for &i in &layout.order {
            let t = &tensors[i];
            let bytes = (t.data)()?;
            let want = t.byte_len().unwrap_or(usize::MAX);
            if bytes.len() != want {
                return Err(Error::Invalid(format!(
                    "tensor '{}' produced {} bytes, its shape {:?} of {} needs {}",
                    t.name,
                    bytes.len(),
                    t.shape,
                    t.dtype,
                    want
                )));
            }
            hasher.update(&bytes);
            w.write_all(&bytes).map_err(|e| Error::io(path, e))?;
            let bytes_len = bytes.len() as u64;
            drop(bytes);
            if let Some(done) = &t.written {
                done();
            }
            progress(bytes_len);
        }
        Ok(WriteReport {
            bytes: layout.header.len() as u64 + layout.data_len,
            tensors: tensors.len(),
            data_sha256: hex::encode(hasher.finalize()),
        })
    })
}
