//! llama.cpp importance matrices (`llama-imatrix` output), read into the per-column weights
//! `llama-quantize --imatrix` hands to the quantizers.
//!
//! Two formats (llama.cpp `common/imatrix-loader.cpp`, `tools/imatrix/imatrix.cpp`):
//! - GGUF (current default): per matrix `<name>.in_sum2` (F32, `[ne0, n_mat]`, sums of squared
//!   activations) and `<name>.counts` (F32, `[1, n_mat]`, tokens seen per expert matrix), plus
//!   `imatrix.datasets`, `imatrix.chunk_count`, `imatrix.chunk_size`. Weight = sum / count
//!   (count rounded to an integer as `lround` does), 1 where an expert saw no token.
//! - legacy `.dat` (`--output-format dat`): i32 entry count, then per entry an i32 name length,
//!   the name, i32 `ncall`, i32 value count and the f32 values (already `mean * ncall`); then,
//!   optionally, i32 chunk count and an i32-length-prefixed dataset name. Weight = value / ncall.
//!
//! Every length is checked against the bytes left before anything is allocated for it.

use crate::error::{Error, Result};
use crate::io::gguf::{GgufFile, GgufValue};
use std::collections::BTreeMap;
use std::path::Path;

/// ggml type id of F32.
const GGML_F32: u32 = 0;

/// The weights of every matrix of an importance-matrix file, normalised as llama-quantize does.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImportanceMatrix {
    /// Tensor name (`blk.0.attn_q.weight`) → weights: `ne0` values per expert matrix.
    pub entries: BTreeMap<String, Vec<f32>>,
    /// Calibration data sets named in the file (GGUF: all; legacy: the one it records).
    pub datasets: Vec<String>,
    /// Chunks of calibration text the matrix was computed on (0 if not recorded).
    pub chunk_count: u32,
    /// Read from the legacy `.dat` format.
    pub legacy: bool,
}

impl ImportanceMatrix {
    /// Reads a GGUF or legacy importance matrix (told apart by the GGUF magic).
    pub fn open(path: &Path) -> Result<ImportanceMatrix> {
        let m = if crate::io::gguf::is_gguf(path) {
            read_gguf(path)?
        } else {
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            read_legacy(path, &bytes)?
        };
        if m.entries.is_empty() {
            return Err(Error::malformed(
                path,
                "the importance matrix has no entries",
            ));
        }
        for (name, w) in &m.entries {
            if let Some(v) = w.iter().find(|v| !v.is_finite()) {
                return Err(Error::bad_tensor(
                    path,
                    name,
                    format!("importance value {v} is not finite; recompute the matrix"),
                ));
            }
        }
        Ok(m)
    }
}

fn read_gguf(path: &Path) -> Result<ImportanceMatrix> {
    let file = GgufFile::open(path)?;
    let mut pairs: BTreeMap<&str, (Option<&str>, Option<&str>)> = BTreeMap::new();
    for name in file.tensors.keys() {
        if let Some(base) = name.strip_suffix(".in_sum2") {
            pairs.entry(base).or_default().0 = Some(name);
        } else if let Some(base) = name.strip_suffix(".counts") {
            pairs.entry(base).or_default().1 = Some(name);
        }
    }
    let f32s = |tensor: &str| -> Result<Vec<f32>> {
        let info = &file.tensors[tensor];
        if info.ggml_type != GGML_F32 {
            return Err(Error::bad_tensor(
                path,
                tensor,
                "importance sums and counts must be F32",
            ));
        }
        Ok(file
            .tensor_bytes(tensor)?
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    };
    let mut entries = BTreeMap::new();
    for (base, pair) in pairs {
        let (Some(sums_name), Some(counts_name)) = pair else {
            return Err(Error::bad_tensor(
                path,
                base,
                "has only one of .in_sum2 and .counts",
            ));
        };
        let sums = f32s(sums_name)?;
        let counts = f32s(counts_name)?;
        if counts.is_empty() || sums.len() % counts.len() != 0 {
            return Err(Error::bad_tensor(
                path,
                base,
                format!(
                    "{} sums do not split into {} expert matrices",
                    sums.len(),
                    counts.len()
                ),
            ));
        }
        let ne0 = sums.len() / counts.len();
        let mut w = vec![0f32; sums.len()];
        for (j, &c) in counts.iter().enumerate() {
            // counts are stored as floats and read back with lround
            let count = c.round() as i64 as f32;
            for i in 0..ne0 {
                w[j * ne0 + i] = if count > 0.0 {
                    sums[j * ne0 + i] / count
                } else {
                    1.0
                };
            }
        }
        entries.insert(base.to_string(), w);
    }
    let datasets = match file.kv.get("imatrix.datasets") {
        Some(GgufValue::Array { items, .. }) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    let chunk_count = file
        .kv
        .get("imatrix.chunk_count")
        .and_then(GgufValue::as_u64)
        .and_then(|v| u32::try_from(v).ok())
        .unwrap_or(0);
    Ok(ImportanceMatrix {
        entries,
        datasets,
        chunk_count,
        legacy: false,
    })
}

/// A bounds-checked little-endian reader over the legacy format.
struct Legacy<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Legacy<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        match self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()) {
            Some(end) => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(Error::malformed(
                self.path,
                format!(
                    "{what} at byte {} needs {n} bytes but the file ends at {} (truncated, or not \
                     an importance matrix)",
                    self.pos,
                    self.bytes.len()
                ),
            )),
        }
    }
    fn i32(&mut self, what: &str) -> Result<i32> {
        let b = self.take(4, what)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// A non-negative count whose `unit`-byte items fit in the rest of the file.
    fn count(&mut self, what: &str, unit: usize) -> Result<usize> {
        let n = self.i32(what)?;
        let left = self.bytes.len() - self.pos;
        match usize::try_from(n) {
            Ok(n) if n.checked_mul(unit).is_some_and(|b| b <= left) => Ok(n),
            _ => Err(Error::malformed(
                self.path,
                format!("{what} {n} does not fit in the {left} bytes left"),
            )),
        }
    }
}

fn read_legacy(path: &Path, bytes: &[u8]) -> Result<ImportanceMatrix> {
    let mut r = Legacy {
        path,
        bytes,
        pos: 0,
    };
    // each entry takes at least 16 bytes (length, name byte, ncall, count, one value)
    let n_entries = r.count("entry count", 16)?;
    if n_entries == 0 {
        return Err(Error::malformed(
            path,
            "the importance matrix has no entries",
        ));
    }
    let mut entries = BTreeMap::new();
    for i in 0..n_entries {
        let len = r.count("name length", 1)?;
        let raw = r.take(len, "entry name")?;
        // C reads the name as a NUL-terminated string
        let raw = raw.split(|&b| b == 0).next().unwrap_or(raw);
        let name = String::from_utf8(raw.to_vec()).map_err(|_| {
            Error::malformed(
                path,
                format!("entry {} has a name that is not UTF-8", i + 1),
            )
        })?;
        let ncall = r.i32("call count")?;
        let nval = r.count("value count", 4)?;
        if nval == 0 {
            return Err(Error::bad_tensor(path, &name, "has no values"));
        }
        let values = r.take(nval * 4, "values")?;
        let w = values
            .chunks_exact(4)
            .map(|b| {
                let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                if ncall > 0 {
                    v / ncall as f32
                } else {
                    v
                }
            })
            .collect();
        entries.insert(name, w);
    }
    let mut chunk_count = 0;
    let mut datasets = Vec::new();
    if r.pos < bytes.len() {
        if let Ok(n) = r.i32("chunk count") {
            chunk_count = u32::try_from(n).unwrap_or(0);
            if let Ok(len) = r.count("dataset name length", 1) {
                if len > 0 {
                    let raw = r.take(len, "dataset name")?;
                    let raw = raw.split(|&b| b == 0).next().unwrap_or(raw);
                    datasets.push(String::from_utf8_lossy(raw).into_owned());
                }
            }
        }
    }
    Ok(ImportanceMatrix {
        entries,
        datasets,
        chunk_count,
        legacy: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy_file(entries: &[(&str, i32, &[f32])], tail: Option<(i32, &str)>) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(entries.len() as i32).to_le_bytes());
        for (name, ncall, vals) in entries {
            b.extend_from_slice(&(name.len() as i32).to_le_bytes());
            b.extend_from_slice(name.as_bytes());
            b.extend_from_slice(&ncall.to_le_bytes());
            b.extend_from_slice(&(vals.len() as i32).to_le_bytes());
            for v in *vals {
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
        if let Some((chunks, ds)) = tail {
            b.extend_from_slice(&chunks.to_le_bytes());
            b.extend_from_slice(&(ds.len() as i32).to_le_bytes());
            b.extend_from_slice(ds.as_bytes());
        }
        b
    }

    #[test]
    fn legacy_values_are_divided_by_ncall() {
        let p = Path::new("m.dat");
        let b = legacy_file(
            &[("blk.0.attn_q.weight", 4, &[2.0, 6.0]), ("x", 0, &[3.0])],
            Some((7, "calib.txt")),
        );
        let m = read_legacy(p, &b).unwrap();
        assert_eq!(m.entries["blk.0.attn_q.weight"], vec![0.5, 1.5]);
        assert_eq!(m.entries["x"], vec![3.0]);
        assert_eq!(m.chunk_count, 7);
        assert_eq!(m.datasets, vec!["calib.txt".to_string()]);
        // the tail is optional
        let b = legacy_file(&[("x", 2, &[3.0])], None);
        assert_eq!(read_legacy(p, &b).unwrap().chunk_count, 0);
    }

    #[test]
    fn legacy_lengths_beyond_the_file_are_refused_before_allocating() {
        let p = Path::new("m.dat");
        let mut b = legacy_file(&[("x", 2, &[3.0])], None);
        // value count 2^30 with 4 bytes of values left
        let at = 4 + 4 + 1 + 4;
        b[at..at + 4].copy_from_slice(&(1i32 << 30).to_le_bytes());
        let err = read_legacy(p, &b).unwrap_err().to_string();
        assert!(err.contains("value count"), "{err}");
        let err = read_legacy(p, &(-1i32).to_le_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("entry count"), "{err}");
        assert!(read_legacy(p, &[1, 0]).is_err());
    }
}
