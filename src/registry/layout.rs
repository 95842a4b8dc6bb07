//! The store directory: where it is, the OCI layout files, blobs (content-addressed, written
//! crash-safely), `index.json` (read, and replaced atomically) and the store lock.
//!
//! Blobs are written into locked temp files in `tmp/` (same filesystem; see
//! [`crate::io::staging`]), hashed while streaming, fsynced, then renamed to
//! `blobs/sha256/<hex>` and the directory fsynced, so a blob path only ever holds complete
//! content. `index.json` is replaced the same way (temp file beside it, fsync, rename,
//! directory fsync) by [`crate::io::atomic::write_atomic`].

use super::error::{RegistryError, Result};
use super::manifest::{Index, MAX_INDEX_BYTES};
use super::names::Digest;
use sha2::Digest as _;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub const OCI_LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

/// An opened store directory.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

/// A held store lock; released on drop (closing the file releases it).
pub struct StoreLock {
    _file: File,
}

impl Store {
    /// The default store: `$LORATOOL_HOME`, else `$XDG_DATA_HOME/loratool`, else
    /// `~/.local/share/loratool`.
    pub fn default_root() -> Result<PathBuf> {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        if let Some(home) = env("LORATOOL_HOME") {
            return Ok(home);
        }
        // the XDG spec says relative values are invalid and must be ignored
        if let Some(xdg) = env("XDG_DATA_HOME").filter(|p| p.is_absolute()) {
            return Ok(xdg.join("loratool"));
        }
        match env("HOME") {
            Some(h) => Ok(h.join(".local/share/loratool")),
            None => Err(RegistryError::Invalid(
                "cannot find the store: set LORATOOL_HOME (or XDG_DATA_HOME or HOME)".into(),
            )),
        }
    }

    /// Open the store at `root`, creating an empty OCI layout there if it has none.
    pub fn open(root: &Path) -> Result<Store> {
        let store = Store {
            root: root.to_path_buf(),
        };
        for dir in [store.blobs_dir(), store.tmp_dir()] {
            std::fs::create_dir_all(&dir).map_err(|e| RegistryError::io(&dir, e))?;
        }
        let layout = root.join("oci-layout");
        if !layout.exists() || !store.index_path().exists() {
            // created under the lock: gc removes temp files in the store root as leftovers of
            // killed index writers, which is only sound if every root writer holds the lock
            let _lock = store.lock_exclusive()?;
            if !layout.exists() {
                crate::io::atomic::write_bytes_atomic(&layout, OCI_LAYOUT.as_bytes())
                    .map_err(|e| RegistryError::Invalid(e.to_string()))?;
            }
            if !store.index_path().exists() {
                store.write_index(&Index::default())?;
            }
        }
        let bytes = read_bounded(&layout, 4096)?;
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| RegistryError::corrupt(&layout, format!("not JSON: {e}")))?;
        if v["imageLayoutVersion"] != "1.0.0" {
            return Err(RegistryError::corrupt(
                &layout,
                "imageLayoutVersion is not 1.0.0; is this directory an OCI layout loratool can use?",
            ));
        }
        Ok(store)
    }

    /// Open the default store.
    pub fn open_default() -> Result<Store> {
        Store::open(&Store::default_root()?)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }
    /// Scratch space on the store's filesystem: blob temp files and materialised adapters.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }
    pub fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    fn lock_file(&self) -> Result<File> {
        let path = self.root.join("lock");
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| RegistryError::io(&path, e))
    }

    /// The exclusive store lock: held to change `index.json` and for the whole of `gc`.
    pub fn lock_exclusive(&self) -> Result<StoreLock> {
        let file = self.lock_file()?;
        file.lock()
            .map_err(|e| RegistryError::io(self.root.join("lock"), e))?;
        Ok(StoreLock { _file: file })
    }

    /// The shared store lock: `verify` holds it so that no `gc` deletes blobs under it.
    pub fn lock_shared(&self) -> Result<StoreLock> {
        let file = self.lock_file()?;
        file.lock_shared()
            .map_err(|e| RegistryError::io(self.root.join("lock"), e))?;
        Ok(StoreLock { _file: file })
    }

    /// Read `index.json` (one atomic snapshot: it is only ever replaced by rename).
    pub fn read_index(&self) -> Result<Index> {
        let path = self.index_path();
        let bytes = read_bounded(&path, MAX_INDEX_BYTES)?;
        Index::parse(&path, &bytes)
    }

    /// Replace `index.json` atomically. Callers hold the exclusive lock.
    pub fn write_index(&self, index: &Index) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(index)
            .map_err(|e| RegistryError::Invalid(format!("serialising index.json: {e}")))?;
        test_pause("before replacing index.json");
        crate::io::atomic::write_bytes_atomic(&self.index_path(), &bytes)
            .map_err(|e| RegistryError::Invalid(e.to_string()))
    }

    /// Read a blob of at most `limit` bytes (store documents: manifests, configs).
    pub fn read_blob(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
        read_bounded(&self.blob_path(digest), limit)
    }

    /// Store `bytes` as a blob (a no-op when the blob exists with that size).
    pub fn write_blob_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        self.write_blob_from(&mut &bytes[..], Path::new("<memory>"))
            .map(|(d, _)| d)
    }

    /// Store a file as a blob, hashing while copying.
    pub fn write_blob_file(&self, path: &Path) -> Result<(Digest, u64)> {
        let mut f = File::open(path).map_err(|e| RegistryError::io(path, e))?;
        // the size comes from the bytes copied, not from the blob file: a concurrent gc may
        // delete an already-present blob at any moment before this add holds the lock
        self.write_blob_from(&mut f, path)
    }

    fn write_blob_from(&self, src: &mut dyn Read, src_path: &Path) -> Result<(Digest, u64)> {
        let tmp_dir = self.tmp_dir();
        // a locked temp file: gc removes the ones of killed adds, never a live one
        let placeholder = self.blobs_dir().join("blob");
        let tmp = crate::io::staging::TempFile::in_dir(&tmp_dir, &placeholder)?;
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = match src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(RegistryError::io(src_path, e)),
            };
            hasher.update(&buf[..n]);
            (&mut tmp.file())
                .write_all(&buf[..n])
                .map_err(|e| RegistryError::io(self.root(), e))?;
            size += n as u64;
        }
        let digest = Digest::from_sha256(&hasher.finalize());
        let dest = self.blob_path(&digest);
        // content addressing: an existing blob of the right size already holds these bytes
        // (a corrupted one is `verify`'s to report; a wrong size is replaced here)
        if std::fs::metadata(&dest).is_ok_and(|m| m.len() == size) {
            return Ok((digest, size));
        }
        test_pause("before renaming a blob into place");
        tmp.commit_as(&dest)?;
        Ok((digest, size))
    }
}

impl Store {
    /// Whether a blob file is present with `size` bytes (its content is `verify`'s to check).
    pub fn has_blob(&self, digest: &Digest, size: u64) -> bool {
        std::fs::metadata(self.blob_path(digest)).is_ok_and(|m| m.is_file() && m.len() == size)
    }

    /// A locked temp file in [`Store::tmp_dir`] for a blob whose digest is known only once its
    /// bytes are (a download): `gc` removes it if its writer is killed, never while it lives.
    pub fn blob_temp(&self) -> Result<crate::io::staging::TempFile> {
        let placeholder = self.blobs_dir().join("blob");
        Ok(crate::io::staging::TempFile::in_dir(
            &self.tmp_dir(),
            &placeholder,
        )?)
    }

    /// Move a temp file from [`Store::blob_temp`] whose content the caller has verified to be
    /// `digest` into place: fsync, rename, fsync the directory.
    pub fn install_blob(&self, tmp: crate::io::staging::TempFile, digest: &Digest) -> Result<()> {
        Ok(tmp.commit_as(&self.blob_path(digest))?)
    }
}

/// Read a file, refusing more than `limit` bytes (store files are hostile input: no allocation
/// sized by what they claim).
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let f = File::open(path).map_err(|e| RegistryError::io(path, e))?;
    let mut bytes = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| RegistryError::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(RegistryError::corrupt(
            path,
            format!("larger than {limit} bytes, which no loratool store document is"),
        ));
    }
    Ok(bytes)
}

/// Test-only hook (cargo feature `test-support`, which only the test and bench builds turn
/// on): with `LORATOOL_TEST_SLOW_ADD_MS=<ms>` set, writers sleep that long at each step of
/// adding an adapter (and `gc` before each blob it deletes), so the crash tests can SIGKILL
/// `add` or `gc` between any two steps.
#[cfg(feature = "test-support")]
pub fn test_pause(_step: &str) {
    if let Some(ms) = std::env::var("LORATOOL_TEST_SLOW_ADD_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms.min(10_000)));
    }
}

#[cfg(not(feature = "test-support"))]
#[inline(always)]
pub fn test_pause(_step: &str) {}
