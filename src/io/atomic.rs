//! Atomic file creation: write into a locked temp file beside the destination, fsync, rename
//! (see [`crate::io::staging`] for the temp names and how leftovers of killed writers are
//! removed). An interrupted or failed write leaves no file at the destination (and the old one,
//! if any, untouched).

use crate::error::{Error, Result};
use crate::io::staging::TempFile;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// Write `path` through `fill`, atomically. `fill` gets a buffered writer on the temp file.
pub fn write_atomic<T>(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<&File>) -> Result<T>,
) -> Result<T> {
    let tmp = TempFile::beside(path)?;
    let value = {
        let mut w = BufWriter::with_capacity(1 << 20, tmp.file());
        let value = fill(&mut w)?;
        w.flush().map_err(|e| Error::io(path, e))?;
        value
    };
    tmp.commit()?;
    Ok(value)
}

/// Write a small file atomically from bytes.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |w| w.write_all(bytes).map_err(|e| Error::io(path, e)))
}
