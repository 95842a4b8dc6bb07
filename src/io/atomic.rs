//! Atomic file creation: write into a temp file beside the destination, fsync, rename.
//! An interrupted or failed write leaves no file at the destination (and the old one, if any,
//! untouched).

use crate::error::{Error, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// A file being written beside its destination: renamed into place (after an fsync) by
/// [`commit`](Self::commit), deleted if dropped first. Writers that fill a file out of order or
/// from several threads (positioned writes) use this directly; [`write_atomic`] wraps it for a
/// sequential writer.
pub struct TempOutput {
    dir: PathBuf,
    tmp: tempfile::NamedTempFile,
}

impl TempOutput {
    /// An empty temp file in the destination's directory (created if missing).
    pub fn create(path: &Path) -> Result<TempOutput> {
        let dir = parent_dir(path);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let tmp = tempfile::Builder::new()
            .prefix(".loratool-")
            .suffix(".tmp")
            .tempfile_in(&dir)
            .map_err(|e| Error::io(&dir, e))?;
        Ok(TempOutput { dir, tmp })
    }

    pub fn file(&self) -> &File {
        self.tmp.as_file()
    }

    /// fsync the data, rename over `path`, fsync the directory (best effort).
    pub fn commit(self, path: &Path) -> Result<()> {
        self.tmp
            .as_file()
            .sync_all()
            .map_err(|e| Error::io(path, e))?;
        self.tmp
            .persist(path)
            .map_err(|e| Error::io(path, e.error))?;
        sync_dir(&self.dir);
        Ok(())
    }

    /// Rename over `path` without an fsync, returning the open file: for files written into a
    /// staging directory that is itself renamed into place, so the caller fsyncs all of them
    /// together (in parallel, after the last one is written) before that rename instead of
    /// waiting for each in turn.
    pub fn commit_unsynced(self, path: &Path) -> Result<File> {
        self.tmp.persist(path).map_err(|e| Error::io(path, e.error))
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
    sync_dir(dir);
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

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Make the rename durable. Best effort: some filesystems refuse to fsync directories.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}
