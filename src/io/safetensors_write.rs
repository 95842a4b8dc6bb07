//! Writing safetensors files into a temp file that is renamed into place only when complete.
//!
//! Every tensor's offset is known from the layout before any byte is written, so tensors are
//! produced and written in parallel at their offsets (positioned writes), and bytes that already
//! sit in a file ([`PendingTensor::source`]) are copied by the kernel in runs of adjacent
//! tensors, never passing through memory. Nothing is hashed here: a caller that needs a digest
//! of the data (kohya's `sshs_model_hash`) computes it alongside, see [`stage_safetensors`].
//!
//! The byte layout is the reference serializer's (the `safetensors` crate, which the Python
//! package also uses): tensors ordered by dtype (descending `Dtype` rank) then name, header as
//! compact JSON with `__metadata__` first, padded with spaces to a multiple of 8. kohya's
//! `sshs_*` hashes are defined on that layout, so [`plan_layout`] is public for them.

use crate::error::{Error, Result};
use crate::io::atomic::TempOutput;
use crate::io::copy::{copy_range, start_writeback, write_at};
use crate::tensor::{checked_numel, DType, Tensor};
use indexmap::IndexMap;
use rayon::prelude::*;
use std::borrow::Cow;
use std::fs::File;
use std::path::{Path, PathBuf};

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
    /// Where exactly these bytes already are in a file: the writer copies them from there in
    /// the kernel and does not call `data`.
    pub source: Option<FileSpan<'a>>,
}

/// A tensor's bytes in an open file: `len` bytes (the tensor's size) from `offset`.
#[derive(Clone, Copy)]
pub struct FileSpan<'a> {
    pub file: &'a File,
    pub offset: u64,
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
            source: None,
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

/// Write `tensors` to `path` atomically. Tensors are produced and written in parallel (at most
/// one in flight per worker thread); `progress` is called with the byte count of each tensor
/// written, from the worker threads.
pub fn write_safetensors(
    path: &Path,
    tensors: &[PendingTensor<'_>],
    metadata: Option<&IndexMap<String, String>>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<WriteReport> {
    stage_safetensors(path, tensors, metadata, progress)?.finish(metadata)
}

/// The data region of a safetensors file, written into a temp file beside its destination with
/// room for the header; [`finish`](Self::finish) writes the header and renames the file into
/// place. Dropped unfinished, the temp file is deleted.
pub struct StagedSafetensors {
    path: PathBuf,
    out: TempOutput,
    specs: Vec<(String, DType, Vec<usize>)>,
    header_len: usize,
    data_len: u64,
}

/// Write the data region of `tensors` for a header carrying `metadata`. The final metadata
/// given to [`StagedSafetensors::finish`] may differ in its values but must serialise to a
/// header of the same length (e.g. a digest filled in over a placeholder of the same width),
/// which lets a caller hash the data while it is being written.
pub fn stage_safetensors(
    path: &Path,
    tensors: &[PendingTensor<'_>],
    metadata: Option<&IndexMap<String, String>>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<StagedSafetensors> {
    let specs: Vec<(&str, DType, &[usize])> = tensors
        .iter()
        .map(|t| (t.name.as_str(), t.dtype, t.shape.as_slice()))
        .collect();
    let layout = plan_layout(&specs, metadata)?;
    let header_len = layout.header.len();
    let out = TempOutput::create(path)?;
    let jobs = plan_jobs(tensors, &layout.order, header_len as u64)?;
    let file = out.file();
    jobs.par_iter()
        .with_max_len(1)
        .try_for_each(|job| run_job(job, tensors, file, path, progress))?;
    Ok(StagedSafetensors {
        path: path.to_path_buf(),
        out,
        specs: tensors
            .iter()
            .map(|t| (t.name.clone(), t.dtype, t.shape.clone()))
            .collect(),
        header_len,
        data_len: layout.data_len,
    })
}

/// [`write_safetensors`] without the final fsync: the file is renamed into place and returned
/// open, for a caller that writes several files into a staging directory and makes them
/// durable together ([`crate::io::atomic::sync_files`]) before renaming the directory.
pub fn write_safetensors_unsynced(
    path: &Path,
    tensors: &[PendingTensor<'_>],
    metadata: Option<&IndexMap<String, String>>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(WriteReport, File)> {
    let staged = stage_safetensors(path, tensors, metadata, progress)?;
    let report = staged.write_header(metadata)?;
    let file = staged.out.commit_unsynced(&staged.path)?;
    Ok((report, file))
}

impl StagedSafetensors {
    /// Write the header for `metadata` and move the file into place.
    pub fn finish(self, metadata: Option<&IndexMap<String, String>>) -> Result<WriteReport> {
        let report = self.write_header(metadata)?;
        self.out.commit(&self.path)?;
        Ok(report)
    }

    /// Write the header for `metadata` and give the file its full length.
    fn write_header(&self, metadata: Option<&IndexMap<String, String>>) -> Result<WriteReport> {
        let specs: Vec<(&str, DType, &[usize])> = self
            .specs
            .iter()
            .map(|(n, d, s)| (n.as_str(), *d, s.as_slice()))
            .collect();
        let layout = plan_layout(&specs, metadata)?;
        if layout.header.len() != self.header_len {
            return Err(Error::Invalid(format!(
                "internal error: the final header of {} is {} bytes, {} were reserved",
                self.path.display(),
                layout.header.len(),
                self.header_len
            )));
        }
        write_at(self.out.file(), &layout.header, 0).map_err(|e| Error::io(&self.path, e))?;
        // a file of only a header, or ending in empty tensors, still has its full length
        let total = self.header_len as u64 + self.data_len;
        self.out
            .file()
            .set_len(total)
            .map_err(|e| Error::io(&self.path, e))?;
        Ok(WriteReport {
            bytes: total,
            tensors: specs.len(),
        })
    }
}

/// One unit of parallel work: a run of tensors copied from one file in one kernel copy, or a
/// batch of adjacent tensors produced in memory and written with one positioned write.
enum Job {
    Copy {
        file_index: usize,
        src: u64,
        dst: u64,
        len: u64,
        tensors: Vec<usize>,
    },
    Write {
        dst: u64,
        tensors: Vec<usize>,
    },
}

/// Produced tensors smaller than this are batched with their neighbours into one write.
const SMALL_WRITE: u64 = 1 << 20;

fn plan_jobs(tensors: &[PendingTensor<'_>], order: &[usize], start: u64) -> Result<Vec<Job>> {
    let mut jobs: Vec<Job> = Vec::new();
    let mut dst = start;
    for &i in order {
        let t = &tensors[i];
        let len = t.byte_len().ok_or_else(|| {
            Error::Invalid(format!(
                "tensor '{}': shape {:?} overflows",
                t.name, t.shape
            ))
        })? as u64;
        match (&t.source, jobs.last_mut()) {
            (
                Some(span),
                Some(Job::Copy {
                    file_index,
                    src,
                    len: run,
                    tensors: ts,
                    ..
                }),
            ) if same_file(tensors[*file_index].source, span.file)
                && *src + *run == span.offset =>
            {
                *run += len;
                ts.push(i);
            }
            (Some(span), _) => jobs.push(Job::Copy {
                file_index: i,
                src: span.offset,
                dst,
                len,
                tensors: vec![i],
            }),
            (
                None,
                Some(Job::Write {
                    dst: at,
                    tensors: ts,
                }),
            ) if len < SMALL_WRITE
                && batch_len(tensors, ts) + len <= SMALL_WRITE
                && *at + batch_len(tensors, ts) == dst =>
            {
                ts.push(i);
            }
            (None, _) => jobs.push(Job::Write {
                dst,
                tensors: vec![i],
            }),
        }
        dst += len;
    }
    Ok(jobs)
}

/// Runs of untouched tensors are copied and handed to writeback this much at a time: the disk
/// starts on a run while the rest of it is copied, and the final fsync waits for less (one call
/// per run, up to hundreds of MB, measured 46 % of `cp`'s speed for a 1-shard bake; 16 MiB
/// pieces 56 %, 64 MiB 51 %; BENCHMARKS.md).
const COPY_CHUNK: u64 = 16 << 20;

fn same_file(span: Option<FileSpan<'_>>, file: &File) -> bool {
    span.is_some_and(|s| std::ptr::eq(s.file, file))
}

fn batch_len(tensors: &[PendingTensor<'_>], batch: &[usize]) -> u64 {
    batch
        .iter()
        .map(|&i| tensors[i].byte_len().unwrap_or(0) as u64)
        .sum()
}

fn run_job(
    job: &Job,
    tensors: &[PendingTensor<'_>],
    out: &File,
    path: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<()> {
    match job {
        Job::Copy {
            file_index,
            src,
            dst,
            len,
            tensors: run,
        } => {
            let Some(span) = tensors[*file_index].source else {
                return Err(Error::Invalid(
                    "internal error: a copy job without a source".into(),
                ));
            };
            let mut off = 0;
            while off < *len {
                let n = (*len - off).min(COPY_CHUNK);
                copy_range(span.file, *src + off, out, *dst + off, n)
                    .map_err(|e| Error::io(path, e))?;
                start_writeback(out, *dst + off, n);
                off += n;
            }
            for &i in run {
                done(&tensors[i], progress);
            }
        }
        Job::Write {
            dst,
            tensors: batch,
        } => {
            if let [single] = batch.as_slice() {
                let bytes = produce(&tensors[*single])?;
                write_at(out, &bytes, *dst).map_err(|e| Error::io(path, e))?;
                start_writeback(out, *dst, bytes.len() as u64);
                drop(bytes);
                done(&tensors[*single], progress);
                return Ok(());
            }
            let mut buf = Vec::with_capacity(batch_len(tensors, batch) as usize);
            for &i in batch {
                buf.extend_from_slice(&produce(&tensors[i])?);
            }
            write_at(out, &buf, *dst).map_err(|e| Error::io(path, e))?;
            start_writeback(out, *dst, buf.len() as u64);
            for &i in batch {
                done(&tensors[i], progress);
            }
        }
    }
    Ok(())
}

/// A tensor's bytes from its producer, checked against its shape.
fn produce<'t>(t: &'t PendingTensor<'_>) -> Result<Cow<'t, [u8]>> {
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
    Ok(bytes)
}

fn done(t: &PendingTensor<'_>, progress: &(dyn Fn(u64) + Sync)) {
    if let Some(hook) = &t.written {
        hook();
    }
    progress(t.byte_len().unwrap_or(0) as u64);
}
