//! Atomic file creation: write into a locked temp file beside the destination, fsync, rename
//! (see [`crate::io::staging`] for the temp names and how leftovers of killed writers are
//! removed). An interrupted or failed write leaves no file at the destination (and the old one,
//! if any, untouched).

use crate::error::{Error, Result};
use crate::io::staging::TempFile;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// A file being written beside its destination: renamed into place (after an fsync) by
/// [`commit`](Self::commit), deleted if dropped first. Writers that fill a file out of order or
/// from several threads (positioned writes) use this directly; [`write_atomic`] wraps it for a
/// sequential writer.
pub struct TempOutput {
    tmp: TempFile,
}

impl TempOutput {
    /// An empty locked temp file in the destination's directory (created if missing).
    pub fn create(path: &Path) -> Result<TempOutput> {
        Ok(TempOutput {
            tmp: TempFile::beside(path)?,
        })
    }

    pub fn file(&self) -> &File {
        self.tmp.file()
    }

    /// fsync the data, rename over `path`, fsync the directory (best effort).
    pub fn commit(self, path: &Path) -> Result<()> {
        self.tmp.commit_as(path)
    }

    /// Rename over `path` without an fsync, returning the open file: for files written into a
    /// staging directory that is itself renamed into place, so the caller fsyncs all of them
    /// together (in parallel, after the last one is written) before that rename instead of
    /// waiting for each in turn.
    pub fn commit_unsynced(self, path: &Path) -> Result<File> {
        self.tmp.commit_unsynced(path)
    }
}

/// fsync `files` (in parallel: the waits overlap) and then the directory `dir` that holds
/// them (best effort), before `dir` is renamed into place.
pub fn sync_files(files: &[(PathBuf, File)], dir: &Path) -> Result<()> {
    use rayon::prelude::*;
    files
        .par_iter()
        .with_max_len(1)
        .try_for_each(|(p, f)| f.sync_all().map_err(|e| Error::io(p, e)))?;
    crate::io::staging::sync_dir(dir);
    Ok(())
}

/// Write `path` through `fill`, atomically. `fill` gets a buffered writer on the temp file.
pub fn write_atomic<T>(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<&File>) -> Result<T>,
) -> Result<T> {
    let out = TempOutput::create(path)?;
    let value = {
        let mut w = BufWriter::with_capacity(1 << 20, out.file());
        let value = fill(&mut w)?;
        w.flush().map_err(|e| Error::io(path, e))?;
        value
    };
    out.commit(path)?;
    Ok(value)
}

/// Write a small file atomically from bytes.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |w| w.write_all(bytes).map_err(|e| Error::io(path, e)))
}
