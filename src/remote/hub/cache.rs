//! The huggingface_hub cache layout, shared with transformers, PEFT and diffusers:
//! `<cache>/models--owner--name/{blobs/<etag>, snapshots/<commit>/<path> -> ../../blobs/<etag>,
//! refs/<revision>}`, locks at `<cache>/.locks/models--owner--name/<etag>.lock`.
//!
//! A blob path only ever holds verified, complete content: downloads go to
//! `blobs/<etag>.incomplete` under the blob's lock and are renamed after the check. A download
//! that fails in-process removes its `.incomplete`; one killed leaves it, and the next fetch of
//! that blob resumes from it (and still checks the whole file).

use super::super::error::{RemoteError, Result};
use super::{is_commit, safe_repo_path};
use std::fs::File;
use std::path::{Path, PathBuf};

pub struct HubCache {
    root: PathBuf,
}

impl HubCache {
    pub fn new(root: &Path) -> HubCache {
        HubCache {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `models--owner--name`
    pub fn repo_folder(repo: &str) -> String {
        format!("models--{}", repo.replace('/', "--"))
    }

    pub fn repo_dir(&self, repo: &str) -> PathBuf {
        self.root.join(Self::repo_folder(repo))
    }

    /// A blob path; `etag` must have been checked by [`valid_etag`].
    pub fn blob_path(&self, repo: &str, etag: &str) -> PathBuf {
        self.repo_dir(repo).join("blobs").join(etag)
    }

    pub fn snapshot_dir(&self, repo: &str, commit: &str) -> PathBuf {
        self.repo_dir(repo).join("snapshots").join(commit)
    }

    /// The commit a cached ref names, if it is cached and well formed.
    pub fn read_ref(&self, repo: &str, revision: &str) -> Option<String> {
        if is_commit(revision) {
            return Some(revision.to_string());
        }
        if !safe_repo_path(revision) {
            return None;
        }
        let p = self.repo_dir(repo).join("refs").join(revision);
        let text = crate::registry::layout::read_bounded(&p, 128).ok()?;
        let s = String::from_utf8(text).ok()?;
        let s = s.trim();
        is_commit(s).then(|| s.to_string())
    }

    /// Record that `revision` points at `commit` (no ref for a revision that is a commit).
    pub fn write_ref(&self, repo: &str, revision: &str, commit: &str) -> Result<()> {
        if is_commit(revision) || !safe_repo_path(revision) {
            return Ok(());
        }
        let p = self.repo_dir(repo).join("refs").join(revision);
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).map_err(|e| RemoteError::io(dir, e))?;
        }
        crate::io::atomic::write_bytes_atomic(&p, commit.as_bytes())
            .map_err(|e| RemoteError::Invalid(e.to_string()))
    }

    /// Hold the lock of one blob (huggingface_hub's WeakFileLock path; released on drop).
    pub fn lock_blob(&self, repo: &str, etag: &str) -> Result<File> {
        let dir = self.root.join(".locks").join(Self::repo_folder(repo));
        std::fs::create_dir_all(&dir).map_err(|e| RemoteError::io(&dir, e))?;
        let path = dir.join(format!("{etag}.lock"));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| RemoteError::io(&path, e))?;
        f.lock().map_err(|e| RemoteError::io(&path, e))?;
        Ok(f)
    }

    /// Point `snapshots/<commit>/<path>` at `blobs/<etag>` with a relative symlink (made under a
    /// temp name and renamed, so the path is never half there). Returns the snapshot path.
    pub fn link(&self, repo: &str, commit: &str, path: &str, etag: &str) -> Result<PathBuf> {
        let dest = self.snapshot_dir(repo, commit).join(path);
        let parent = dest
            .parent()
            .ok_or_else(|| RemoteError::Invalid(format!("bad snapshot path {path}")))?;
        std::fs::create_dir_all(parent).map_err(|e| RemoteError::io(parent, e))?;
        // snapshots/<commit>/<a>/<b>/file -> ../../../../blobs/<etag>
        let depth = path.split('/').count() + 1;
        let target = PathBuf::from(format!("{}blobs/{etag}", "../".repeat(depth)));
        if std::fs::read_link(&dest).is_ok_and(|t| t == target) {
            return Ok(dest);
        }
        let tmp = parent.join(format!(
            ".{}.{}.tmp",
            dest.file_name().and_then(|n| n.to_str()).unwrap_or("f"),
            std::process::id()
        ));
        let _ = std::fs::remove_file(&tmp);
        symlink(&target, &tmp).map_err(|e| RemoteError::io(&tmp, e))?;
        std::fs::rename(&tmp, &dest).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            RemoteError::io(&dest, e)
        })?;
        Ok(dest)
    }

    /// Every file of a cached snapshot (paths relative to it, `/`-separated), skipping links
    /// whose blob is missing.
    pub fn snapshot_files(&self, repo: &str, commit: &str) -> Vec<String> {
        let root = self.snapshot_dir(repo, commit);
        let mut out = Vec::new();
        let mut stack = vec![(root.clone(), String::new())];
        while let Some((dir, prefix)) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let Some(name) = e.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                if name.starts_with('.') {
                    continue;
                }
                let rel = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}/{name}")
                };
                let p = e.path();
                if p.is_dir() {
                    stack.push((p, rel));
                } else if p.is_file() {
                    out.push(rel);
                }
            }
        }
        out.sort();
        out
    }
}

/// An ETag usable as a blob file name: a git SHA-1 (40 hex) or a sha256 (64 hex).
pub fn valid_etag(etag: &str) -> bool {
    (etag.len() == 40 || etag.len() == 64)
        && etag
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// `W/"abc"` -> `abc`
pub fn normalize_etag(raw: &str) -> String {
    raw.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_string()
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    // huggingface_hub copies where symlinks are unavailable; loratool supports unix here
    let _ = (target, link);
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "the Hugging Face cache needs symlinks",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_relative_and_resolve_to_the_blob() {
        let dir = tempfile::tempdir().unwrap();
        let cache = HubCache::new(dir.path());
        let etag = "a".repeat(64);
        let blob = cache.blob_path("o/n", &etag);
        std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
        std::fs::write(&blob, b"x").unwrap();
        let commit = "b".repeat(40);
        let p = cache.link("o/n", &commit, "sub/dir/f.bin", &etag).unwrap();
        assert_eq!(
            std::fs::read_link(&p).unwrap(),
            PathBuf::from(format!("../../../../blobs/{etag}"))
        );
        assert_eq!(std::fs::read(&p).unwrap(), b"x");
        assert_eq!(cache.snapshot_files("o/n", &commit), vec!["sub/dir/f.bin"]);
    }

    #[test]
    fn etags_are_checked_before_use_as_names() {
        assert!(valid_etag(&"0".repeat(40)));
        assert!(!valid_etag("../../x"));
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
    }
}
