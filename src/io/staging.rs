//! Temp files and directories an output is built in, and the leftovers of killed writers.
//!
//! Every output is first written under a name starting with [`TEMP_PREFIX`] on the destination's
//! filesystem, then fsynced and renamed into place, so the destination is either absent (or its
//! previous version) or complete. A writer holds an advisory lock (`flock`) on its temp file or
//! directory for as long as it works on it. The kernel drops the locks of a killed process, so a
//! temp entry that can be locked belongs to nobody: [`clean_stale`] removes exactly those, and
//! every writer runs it on the directory it writes into, so the next run cleans up after a
//! killed one. Temp names end in random characters, never in `.safetensors`/`.gguf`/`.json`, and
//! start with a dot, so nothing that looks for outputs can mistake one for an output.

use crate::error::{Error, Result};
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The name prefix of every temp file and directory loratool creates beside an output.
pub const TEMP_PREFIX: &str = ".loratool-tmp-";

/// Whether a directory entry is one of loratool's temp files or directories.
pub fn is_temp_name(name: &OsStr) -> bool {
    name.to_str().is_some_and(|n| n.starts_with(TEMP_PREFIX))
}

/// The directory `path` is in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `.loratool-tmp-<destination name>.` (the name cut to keep the whole name short), so a
/// leftover says what it was for; random characters follow.
fn prefix_for(dest: &Path) -> String {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut cut = name.len().min(96);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{TEMP_PREFIX}{}.", &name[..cut])
}

/// Lock `file` (the temp entry at `path`) for this process and check that `path` still is that
/// entry. `Ok(false)`: a cleaner took or removed it first; make another.
fn lock_own(file: &File, path: &Path) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Ok(false),
        // a filesystem without flock: the entry stays unlocked, and clean_stale never removes
        // what it cannot lock, so it is never taken for a leftover
        Err(std::fs::TryLockError::Error(_)) => return Ok(true),
    }
    let ours = file.metadata().map_err(|e| Error::io(path, e))?;
    Ok(std::fs::symlink_metadata(path)
        .is_ok_and(|m| m.dev() == ours.dev() && m.ino() == ours.ino()))
}

const ATTEMPTS: usize = 16;

/// A temp file that becomes `dest` on [`TempFile::commit`]; removed if dropped before.
pub struct TempFile {
    file: tempfile::NamedTempFile,
    dest: PathBuf,
}

impl TempFile {
    /// A locked temp file beside `dest` (its directory created if needed), after removing the
    /// leftovers of killed writers there.
    pub fn beside(dest: &Path) -> Result<TempFile> {
        let dir = parent_dir(dest);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        clean_stale(&dir);
        TempFile::in_dir(&dir, dest)
    }

    /// A locked temp file in `dir` (which must be on `dest`'s filesystem) that becomes `dest`.
    /// `dir` is not cleaned: its owner decides when leftovers go (the registry's `gc`).
    pub fn in_dir(dir: &Path, dest: &Path) -> Result<TempFile> {
        let prefix = prefix_for(dest);
        for _ in 0..ATTEMPTS {
            // an output gets the usual mode (0666 less the umask), not a temp file's 0600
            let file = tempfile::Builder::new()
                .prefix(&prefix)
                .permissions(std::fs::Permissions::from_mode(0o666))
                .tempfile_in(dir)
                .map_err(|e| Error::io(dest, e))?;
            if lock_own(file.as_file(), file.path())? {
                return Ok(TempFile {
                    file,
                    dest: dest.to_path_buf(),
                });
            }
        }
        Err(Error::Invalid(format!(
            "{}: could not create a temp file (another process keeps removing them)",
            dir.display()
        )))
    }

    pub fn file(&self) -> &File {
        self.file.as_file()
    }
    pub fn file_mut(&mut self) -> &mut File {
        self.file.as_file_mut()
    }
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// fsync, rename over the destination, fsync the directory.
    pub fn commit(self) -> Result<()> {
        let dest = self.dest.clone();
        self.commit_as(&dest)
    }

    /// Rename over `dest` without an fsync, returning the open file (the caller fsyncs it, and
    /// the directory, before that directory is itself renamed into place).
    pub fn commit_unsynced(self, dest: &Path) -> Result<File> {
        self.file
            .persist(dest)
            .map_err(|e| Error::io(dest, e.error))
    }

    /// [`TempFile::commit`] to another destination on the same filesystem (a content-addressed
    /// blob, whose name is known only once its bytes are).
    pub fn commit_as(self, dest: &Path) -> Result<()> {
        self.file
            .as_file()
            .sync_all()
            .map_err(|e| Error::io(dest, e))?;
        self.file
            .persist(dest)
            .map_err(|e| Error::io(dest, e.error))?;
        sync_dir(&parent_dir(dest));
        Ok(())
    }
}

/// A temp directory beside `dest` that becomes `dest` on [`TempDir::commit`]; removed with its
/// contents if dropped before.
pub struct TempDir {
    dir: Option<tempfile::TempDir>,
    /// Holds the lock for the directory's lifetime.
    _lock: File,
    dest: PathBuf,
}

impl TempDir {
    pub fn beside(dest: &Path) -> Result<TempDir> {
        let parent = parent_dir(dest);
        std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        clean_stale(&parent);
        let prefix = prefix_for(dest);
        for _ in 0..ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix(&prefix)
                .permissions(std::fs::Permissions::from_mode(0o777))
                .tempdir_in(&parent)
                .map_err(|e| Error::io(dest, e))?;
            let lock = match File::open(dir.path()) {
                Ok(f) => f,
                Err(_) => continue,
            };
            if lock_own(&lock, dir.path())? {
                return Ok(TempDir {
                    dir: Some(dir),
                    _lock: lock,
                    dest: dest.to_path_buf(),
                });
            }
        }
        Err(Error::Invalid(format!(
            "{}: could not create a temp directory (another process keeps removing them)",
            parent.display()
        )))
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new(""), |d| d.path())
    }

    /// Put the staged files at the destination. A destination that does not exist, or is an
    /// empty directory, is replaced by the staged directory in one rename. Into an existing
    /// directory each staged file is renamed over its namesake (each file is complete at every
    /// moment; other files of that directory stay).
    pub fn commit(mut self) -> Result<()> {
        let dest = self.dest.clone();
        let staged = self.path().to_path_buf();
        for entry in std::fs::read_dir(&staged).map_err(|e| Error::io(&staged, e))? {
            let entry = entry.map_err(|e| Error::io(&staged, e))?;
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                if let Ok(f) = File::open(entry.path()) {
                    f.sync_all().map_err(|e| Error::io(&dest, e))?;
                }
            }
        }
        sync_dir(&staged);
        let empty_dir = std::fs::read_dir(&dest).is_ok_and(|mut rd| rd.next().is_none());
        if !dest.exists() || empty_dir {
            // rename(2) replaces an empty directory atomically
            std::fs::rename(&staged, &dest).map_err(|e| Error::io(&dest, e))?;
            if let Some(d) = self.dir.take() {
                let _ = d.keep();
            }
        } else if dest.is_dir() {
            for entry in std::fs::read_dir(&staged).map_err(|e| Error::io(&staged, e))? {
                let entry = entry.map_err(|e| Error::io(&staged, e))?;
                let to = dest.join(entry.file_name());
                std::fs::rename(entry.path(), &to).map_err(|e| Error::io(&to, e))?;
            }
            sync_dir(&dest);
        } else {
            return Err(Error::Invalid(format!(
                "{} exists and is not a directory",
                dest.display()
            )));
        }
        sync_dir(&parent_dir(&dest));
        Ok(())
    }
}

/// Build the directory output `dest` through `fill`, which writes its files into the staging
/// directory it is given; see [`TempDir::commit`] for how they reach `dest`. On any error the
/// staging directory is removed and `dest` is as it was.
/// Errors name the destination, not the staging directory.
pub fn write_dir<T>(dest: &Path, fill: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let staging = TempDir::beside(dest)?;
    let value = fill(staging.path()).map_err(|e| relocate(e, staging.path(), dest))?;
    staging.commit()?;
    Ok(value)
}

/// `err` with a path under `from` shown under `to` instead.
fn relocate(err: Error, from: &Path, to: &Path) -> Error {
    let moved = |p: PathBuf| match p.strip_prefix(from) {
        Ok(rel) => to.join(rel),
        Err(_) => p,
    };
    match err {
        Error::Io { path, source } => Error::Io {
            path: moved(path),
            source,
        },
        Error::Malformed { path, message } => Error::Malformed {
            path: moved(path),
            message,
        },
        Error::BadTensor {
            path,
            tensor,
            message,
        } => Error::BadTensor {
            path: moved(path),
            tensor,
            message,
        },
        Error::Unsupported { path, message } => Error::Unsupported {
            path: moved(path),
            message,
        },
        other => other,
    }
}

/// Remove the temp files and directories in `dir` that no process holds (leftovers of killed
/// writers). Returns what was removed. Best effort: an entry that cannot be opened, locked or
/// removed is left alone, and symlinks are never followed.
pub fn clean_stale(dir: &Path) -> Vec<PathBuf> {
    stale_in(dir, true)
}

/// The leftovers [`clean_stale`] would remove, without removing them.
pub fn find_stale(dir: &Path) -> Vec<PathBuf> {
    stale_in(dir, false)
}

fn stale_in(dir: &Path, remove: bool) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in rd.flatten() {
        if !is_temp_name(&entry.file_name()) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !(meta.is_file() || meta.is_dir()) {
            continue;
        }
        let Ok(f) = File::open(&path) else {
            continue;
        };
        if f.try_lock().is_err() {
            continue; // held by a live writer (or locks unsupported: leave it)
        }
        if remove {
            let gone = if meta.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            if gone.is_err() {
                continue;
            }
        }
        found.push(path);
    }
    found
}

/// Make renames in `dir` durable. Best effort: some filesystems refuse to fsync directories.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unheld_temp_entries_are_stale() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.safetensors");
        let live = TempFile::beside(&dest).unwrap();
        let name = live
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(name.starts_with(".loratool-tmp-out.safetensors."), "{name}");
        let live_dir = TempDir::beside(&dir.path().join("model")).unwrap();
        // what killed writers leave: temp entries whose locks the kernel dropped
        let stale_file = dir
            .path()
            .join(format!("{TEMP_PREFIX}a.safetensors.Xy12Ab"));
        std::fs::write(&stale_file, b"partial").unwrap();
        let stale_dir = dir.path().join(format!("{TEMP_PREFIX}model.Qw34Er"));
        std::fs::create_dir(&stale_dir).unwrap();
        std::fs::write(stale_dir.join("model.safetensors"), b"half").unwrap();
        // not ours, even though it is unlocked
        let other = dir.path().join(".loratool-other");
        std::fs::write(&other, b"x").unwrap();
        let mut removed = clean_stale(dir.path());
        removed.sort();
        assert_eq!(removed, vec![stale_file.clone(), stale_dir.clone()]);
        assert!(
            live.path().exists() && live_dir.path().exists(),
            "live entries stay"
        );
        assert!(other.exists());
        drop((live, live_dir));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "drop removes"
        );
    }

    #[test]
    fn commit_renames_and_drop_removes() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a.bin");
        let t = TempFile::beside(&dest).unwrap();
        std::io::Write::write_all(&mut t.file(), b"hello").unwrap();
        t.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello");
        let t = TempFile::beside(&dir.path().join("b.bin")).unwrap();
        drop(t);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "only a.bin remains");
    }

    #[test]
    fn staged_directory_replaces_an_empty_one_or_merges_into_a_full_one() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        write_dir(&dest, |d| {
            std::fs::write(d.join("x"), b"1").map_err(|e| Error::io(d, e))
        })
        .unwrap();
        assert_eq!(std::fs::read(dest.join("x")).unwrap(), b"1");
        std::fs::write(dest.join("keep"), b"k").unwrap();
        write_dir(&dest, |d| {
            std::fs::write(d.join("x"), b"2").map_err(|e| Error::io(d, e))
        })
        .unwrap();
        assert_eq!(std::fs::read(dest.join("x")).unwrap(), b"2");
        assert_eq!(std::fs::read(dest.join("keep")).unwrap(), b"k");
        let failed: Result<()> = write_dir(&dir.path().join("new"), |d| {
            std::fs::write(d.join("x"), b"3").unwrap();
            Err(Error::Invalid("disk full".into()))
        });
        assert!(failed.is_err());
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            vec!["out".to_string()],
            "no staging directory, no `new`"
        );
    }
}
