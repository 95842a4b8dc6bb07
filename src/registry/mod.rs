//! The local adapter registry: a content-addressed store laid out as an OCI image layout, with
//! tags, lineage, garbage collection and verification. It stores files as they are and records
//! the metadata it is given; reading adapters is `adapter`'s job and choosing what to record is
//! the application layer's (`app::store`).
//!
//! Submodules: `names` (references and digests), `layout` (the directory, blobs, index file,
//! lock), `manifest` (the JSON documents), `gc`, `verify`. This file owns the operations that
//! combine them: add, resolve, tag, remove, materialise, export.
//!
//! # Crash safety
//! Every file in the store is created by write-to-temp, fsync, rename, fsync the directory, so
//! a path holds complete content or nothing. `add` writes all blobs first (layers, config,
//! manifest) and only then replaces `index.json`; killed at any point, the store holds the
//! old index (plus unreferenced but valid blobs, and temp files `gc` removes) or the new one.
//!
//! # Concurrency
//! One lock file, `<store>/lock` (`std::fs::File::lock`). Changes to `index.json` (add, tag,
//! rm) take it exclusively for their read-modify-write, so no update is lost. `gc` holds it
//! exclusively from reading the index until the last deletion, so it never runs while an
//! index is being changed. `add` writes its blobs *without* the lock (they can be large), so a
//! `gc` may run between an `add`'s blob writes and its index update and delete blobs nothing
//! references yet. Therefore `add`, once it holds the exclusive lock, checks that every blob
//! its manifest reaches is present (with its size) and writes again any that a `gc` removed,
//! before it updates the index. Because `gc` also holds that lock for its whole sweep, the check
//! is conclusive: after it, nothing can delete those blobs until the index references them.
//! `verify` takes the lock shared, so no `gc` deletes blobs while it checks them.

pub mod error;
pub mod gc;
pub mod layout;
pub mod manifest;
pub mod names;
pub mod verify;

pub use error::{RegistryError, Result};
pub use layout::Store;
pub use names::{Digest, Reference, Target};

use crate::adapter::Format;
use crate::named::Named;
use indexmap::IndexMap;
use layout::test_pause;
use manifest::*;
use std::path::{Path, PathBuf};

/// A tag in `index.json` and what it points to.
#[derive(Clone, Debug)]
pub struct Entry {
    /// `namespace/name:tag`
    pub reference: String,
    pub digest: Digest,
    /// The manifest and config, when they are present and parse (`verify` says why not).
    pub manifest: Option<Manifest>,
    pub config: Option<ModelConfig>,
}

impl Entry {
    /// Total bytes of the adapter's files.
    pub fn size(&self) -> u64 {
        self.manifest
            .as_ref()
            .map_or(0, |m| m.layers.iter().map(|l| l.size).sum())
    }
}

/// An adapter resolved from a reference.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub digest: Digest,
    pub manifest: Manifest,
    pub config: ModelConfig,
}

/// A stored adapter's files laid out in a temp directory (hard links to the blobs where the
/// filesystem allows, copies otherwise), ready for the format readers.
pub struct Materialised {
    pub dir: tempfile::TempDir,
    /// What to hand a reader: the single file, or the directory for multi-file adapters.
    pub read_path: PathBuf,
    pub format: Option<Format>,
}

/// A file to add, under the name it will have in the adapter.
pub struct SourceFile {
    pub title: String,
    pub path: PathBuf,
}

impl SourceFile {
    /// `path` under its own file name.
    pub fn named_as_is(path: &Path) -> Result<SourceFile> {
        let title = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| {
                RegistryError::Invalid(format!("{}: file name cannot be stored", path.display()))
            })?
            .to_string();
        Ok(SourceFile {
            title,
            path: path.to_path_buf(),
        })
    }
}

/// The sha256 over an input's files (for lineage of inputs from outside the store): of the
/// file itself, or of `title NUL digest NL` lines over a directory's files.
pub fn files_digest(files: &[SourceFile]) -> Result<Digest> {
    use sha2::Digest as _;
    let hash_file = |p: &Path| -> Result<Digest> {
        let mut f = std::fs::File::open(p).map_err(|e| RegistryError::io(p, e))?;
        let mut h = sha2::Sha256::new();
        std::io::copy(&mut f, &mut h).map_err(|e| RegistryError::io(p, e))?;
        Ok(Digest::from_sha256(&h.finalize()))
    };
    if let [one] = files {
        return hash_file(&one.path);
    }
    let mut h = sha2::Sha256::new();
    for f in files {
        h.update(f.title.as_bytes());
        h.update([0]);
        h.update(hash_file(&f.path)?.as_str().as_bytes());
        h.update(b"\n");
    }
    Ok(Digest::from_sha256(&h.finalize()))
}

impl Store {
    /// Store `files` as one adapter under `reference` (which must name a tag), with metadata
    /// `info`. The files are kept byte for byte. Returns the manifest digest.
    pub fn add(
        &self,
        files: &[SourceFile],
        reference: &Reference,
        info: AdapterInfo,
    ) -> Result<Digest> {
        let ref_name = reference.ref_name().ok_or_else(|| {
            RegistryError::bad_ref(
                &reference.to_string(),
                "adding needs a tag (name:tag), not a digest",
            )
        })?;
        if let Some(bad) = files.iter().find(|f| !is_plain_file_name(&f.title)) {
            return Err(RegistryError::Invalid(format!(
                "{}: file name cannot be stored",
                bad.path.display()
            )));
        }
        if files.is_empty() {
            return Err(RegistryError::Invalid("no files to add".into()));
        }
        self.add_files(files, &reference.name, &ref_name, info)
    }

    fn add_files(
        &self,
        files: &[SourceFile],
        name: &str,
        ref_name: &str,
        info: AdapterInfo,
    ) -> Result<Digest> {
        let mut layers = Vec::new();
        let mut digests = Vec::new();
        for f in files {
            test_pause("before writing a layer blob");
            let (digest, size) = self.write_blob_file(&f.path)?;
            let media_type = if f.title.ends_with(".json") {
                MEDIA_TYPE_WEIGHT_CONFIG_RAW
            } else {
                MEDIA_TYPE_WEIGHT_RAW
            };
            let mut annotations = IndexMap::new();
            annotations.insert(ANNOTATION_TITLE.to_string(), f.title.clone());
            layers.push(Descriptor {
                media_type: media_type.into(),
                digest: digest.to_string(),
                size,
                artifact_type: None,
                annotations,
            });
            digests.push(digest);
        }
        let created = info.created.clone();
        let config = ModelConfig::new(name, info, &digests);
        let config_bytes = serde_json::to_vec_pretty(&config)
            .map_err(|e| RegistryError::Invalid(format!("serialising the config: {e}")))?;
        test_pause("before writing the config blob");
        let config_digest = self.write_blob_bytes(&config_bytes)?;
        let mut annotations = IndexMap::new();
        annotations.insert(ANNOTATION_CREATED.to_string(), created);
        let manifest = Manifest {
            schema_version: 2,
            media_type: MEDIA_TYPE_MANIFEST.into(),
            artifact_type: Some(ARTIFACT_TYPE_MODEL.into()),
            config: Descriptor {
                media_type: MEDIA_TYPE_MODEL_CONFIG.into(),
                digest: config_digest.to_string(),
                size: config_bytes.len() as u64,
                artifact_type: None,
                annotations: IndexMap::new(),
            },
            layers,
            annotations,
        };
        let manifest_bytes = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| RegistryError::Invalid(format!("serialising the manifest: {e}")))?;
        test_pause("before writing the manifest blob");
        let manifest_digest = self.write_blob_bytes(&manifest_bytes)?;

        test_pause("before taking the lock");
        let _lock = self.lock_exclusive()?;
        // a gc may have run since the blobs were written; see the module doc
        for (f, d) in files.iter().zip(&digests) {
            if !self.blob_present(d, None) {
                let (again, _) = self.write_blob_file(&f.path)?;
                if &again != d {
                    return Err(RegistryError::Invalid(format!(
                        "{} changed while it was being added; add it again",
                        f.path.display()
                    )));
                }
            }
        }
        if !self.blob_present(&config_digest, Some(config_bytes.len() as u64)) {
            self.write_blob_bytes(&config_bytes)?;
        }
        if !self.blob_present(&manifest_digest, Some(manifest_bytes.len() as u64)) {
            self.write_blob_bytes(&manifest_bytes)?;
        }
        let mut index = self.read_index()?;
        set_tag(
            &mut index,
            ref_name,
            &manifest_digest,
            manifest_bytes.len() as u64,
        );
        self.write_index(&index)?;
        Ok(manifest_digest)
    }

    fn blob_present(&self, digest: &Digest, size: Option<u64>) -> bool {
        std::fs::metadata(self.blob_path(digest))
            .is_ok_and(|m| m.is_file() && size.is_none_or(|s| m.len() == s))
    }

    /// Read and validate a manifest blob.
    pub fn manifest(&self, digest: &Digest) -> Result<Manifest> {
        let bytes = self.read_blob(digest, MAX_MANIFEST_BYTES)?;
        if &Digest::of(&bytes) != digest {
            return Err(RegistryError::corrupt(
                self.blob_path(digest),
                "content does not match its digest",
            ));
        }
        Manifest::parse(&self.blob_path(digest), &bytes)
    }

    /// Read and validate a config blob.
    pub fn config(&self, digest: &Digest) -> Result<ModelConfig> {
        let bytes = self.read_blob(digest, MAX_MANIFEST_BYTES)?;
        if &Digest::of(&bytes) != digest {
            return Err(RegistryError::corrupt(
                self.blob_path(digest),
                "content does not match its digest",
            ));
        }
        ModelConfig::parse(&self.blob_path(digest), &bytes)
    }

    /// Every tag in `index.json`, in index order.
    pub fn entries(&self) -> Result<Vec<Entry>> {
        let index = self.read_index()?;
        let path = self.index_path();
        let mut out = Vec::new();
        for d in &index.manifests {
            let Some(reference) = d.annotation(ANNOTATION_REF_NAME) else {
                continue;
            };
            let digest = d.checked_digest(&path)?;
            let manifest = self.manifest(&digest).ok();
            let config = manifest
                .as_ref()
                .and_then(|m| Digest::parse(&m.config.digest))
                .and_then(|c| self.config(&c).ok());
            out.push(Entry {
                reference: reference.to_string(),
                digest,
                manifest,
                config,
            });
        }
        Ok(out)
    }

    /// The tags pointing at a manifest.
    pub fn tags_of(&self, digest: &Digest) -> Result<Vec<String>> {
        let index = self.read_index()?;
        Ok(index
            .manifests
            .iter()
            .filter(|d| d.digest == digest.as_str())
            .filter_map(|d| d.annotation(ANNOTATION_REF_NAME).map(str::to_string))
            .collect())
    }

    /// The manifest digest a reference names. `name@digest` must be a manifest the index
    /// holds under that name.
    pub fn resolve_digest(&self, reference: &Reference) -> Result<Digest> {
        let index = self.read_index()?;
        let path = self.index_path();
        let not_found = || RegistryError::NotFound {
            reference: reference.to_string(),
            store: self.root().to_path_buf(),
        };
        match &reference.target {
            Target::Tag(_) => {
                let want = reference.ref_name().unwrap_or_default();
                let d = index
                    .manifests
                    .iter()
                    .rev()
                    .find(|d| d.annotation(ANNOTATION_REF_NAME) == Some(want.as_str()))
                    .ok_or_else(not_found)?;
                d.checked_digest(&path)
            }
            Target::Digest(digest) => {
                let name_matches = |d: &Descriptor| {
                    d.annotation(ANNOTATION_REF_NAME)
                        .and_then(|r| r.rsplit_once(':'))
                        .is_some_and(|(n, _)| n == reference.name)
                };
                index
                    .manifests
                    .iter()
                    .find(|d| d.digest == digest.as_str() && name_matches(d))
                    .ok_or_else(not_found)?;
                Ok(digest.clone())
            }
        }
    }

    /// Resolve a reference to its manifest and config.
    pub fn resolve(&self, reference: &Reference) -> Result<Resolved> {
        let digest = self.resolve_digest(reference)?;
        self.load(&digest)
    }

    /// The manifest and config of a stored manifest digest.
    pub fn load(&self, digest: &Digest) -> Result<Resolved> {
        let manifest = self.manifest(digest)?;
        let config = self.config(&manifest.config.checked_digest(&self.blob_path(digest))?)?;
        Ok(Resolved {
            digest: digest.clone(),
            manifest,
            config,
        })
    }

    /// Point tag `new` at what `src` names.
    pub fn tag(&self, src: &Reference, new: &Reference) -> Result<Digest> {
        let ref_name = new.ref_name().ok_or_else(|| {
            RegistryError::bad_ref(&new.to_string(), "the new reference needs a tag (name:tag)")
        })?;
        let _lock = self.lock_exclusive()?;
        let digest = self.resolve_digest(src)?;
        let size = std::fs::metadata(self.blob_path(&digest))
            .map_err(|e| RegistryError::io(self.blob_path(&digest), e))?
            .len();
        let mut index = self.read_index()?;
        set_tag(&mut index, &ref_name, &digest, size);
        self.write_index(&index)?;
        Ok(digest)
    }

    /// Remove a tag (or, for `name@digest`, every tag of `name` on that manifest). Blobs stay
    /// until `gc`. Returns the removed tags.
    pub fn remove(&self, reference: &Reference) -> Result<Vec<String>> {
        let _lock = self.lock_exclusive()?;
        let mut index = self.read_index()?;
        let mut removed = Vec::new();
        index.manifests.retain(|d| {
            let Some(r) = d.annotation(ANNOTATION_REF_NAME) else {
                return true;
            };
            let hit = match &reference.target {
                Target::Tag(_) => Some(r.to_string()) == reference.ref_name(),
                Target::Digest(dg) => {
                    d.digest == dg.as_str()
                        && r.rsplit_once(':').is_some_and(|(n, _)| n == reference.name)
                }
            };
            if hit {
                removed.push(r.to_string());
            }
            !hit
        });
        if removed.is_empty() {
            return Err(RegistryError::NotFound {
                reference: reference.to_string(),
                store: self.root().to_path_buf(),
            });
        }
        self.write_index(&index)?;
        Ok(removed)
    }

    /// Lay a stored adapter's files out in a temp directory inside the store.
    pub fn materialise(&self, resolved: &Resolved) -> Result<Materialised> {
        let tmp_root = self.tmp_dir();
        let dir = tempfile::Builder::new()
            .prefix("adapter-")
            .tempdir_in(&tmp_root)
            .map_err(|e| RegistryError::io(&tmp_root, e))?;
        let files = resolved.manifest.files();
        for (title, digest, _) in &files {
            let blob = self.blob_path(digest);
            let dest = dir.path().join(title);
            if std::fs::hard_link(&blob, &dest).is_err() {
                std::fs::copy(&blob, &dest).map_err(|e| RegistryError::io(&blob, e))?;
            }
        }
        let read_path = match files.as_slice() {
            [(title, _, _)] => dir.path().join(title),
            _ => dir.path().to_path_buf(),
        };
        Ok(Materialised {
            read_path,
            format: Format::parse_name(&resolved.config.loratool.format),
            dir,
        })
    }

    /// Copy a stored adapter's files into `out_dir` (created if needed), checking each
    /// blob's digest while copying. Returns the written paths. The files are staged beside
    /// `out_dir` and moved in together (see [`crate::io::staging::write_dir`]).
    pub fn export_files(&self, resolved: &Resolved, out_dir: &Path) -> Result<Vec<PathBuf>> {
        use sha2::Digest as _;
        let mut written = Vec::new();
        crate::io::staging::write_dir(out_dir, |staging| {
            for (title, digest, _) in resolved.manifest.files() {
                let blob = self.blob_path(&digest);
                let dest = staging.join(&title);
                let actual = crate::io::atomic::write_atomic(&dest, |w| {
                    let mut f =
                        std::fs::File::open(&blob).map_err(|e| crate::Error::io(&blob, e))?;
                    let mut h = sha2::Sha256::new();
                    let mut buf = vec![0u8; 1 << 20];
                    loop {
                        let n = std::io::Read::read(&mut f, &mut buf)
                            .map_err(|e| crate::Error::io(&blob, e))?;
                        if n == 0 {
                            break;
                        }
                        h.update(&buf[..n]);
                        std::io::Write::write_all(w, &buf[..n])
                            .map_err(|e| crate::Error::io(&dest, e))?;
                    }
                    let actual = Digest::from_sha256(&h.finalize());
                    if actual != digest {
                        return Err(crate::Error::malformed(
                        &blob,
                        format!("blob content hashes to {actual}, not {digest}: the store is corrupt; run `loratool verify`"),
                    ));
                    }
                    Ok(actual)
                })?;
                debug_assert_eq!(actual, digest);
                written.push(out_dir.join(&title));
            }
            Ok(())
        })?;
        Ok(written)
    }
}

impl Store {
    /// Tag a manifest whose blobs the caller has put in the store (a pull), with extra
    /// annotations on the index entry (where it came from). Under the lock, every blob the
    /// manifest reaches must still be present: a `gc` between the blob writes and this call
    /// would have removed them (see the module doc), and then the caller has to fetch again.
    pub fn tag_manifest(
        &self,
        ref_name: &str,
        digest: &Digest,
        manifest: &Manifest,
        size: u64,
        annotations: IndexMap<String, String>,
    ) -> Result<()> {
        let _lock = self.lock_exclusive()?;
        let config = manifest.config.checked_digest(&self.blob_path(digest))?;
        let mut needed = vec![(digest.clone(), size), (config, manifest.config.size)];
        needed.extend(manifest.files().into_iter().map(|(_, d, s)| (d, s)));
        if let Some((d, _)) = needed.iter().find(|(d, s)| !self.has_blob(d, *s)) {
            return Err(RegistryError::Invalid(format!(
                "blob {d} vanished from the store before {ref_name} was tagged (a concurrent gc?); run the command again"
            )));
        }
        let mut index = self.read_index()?;
        set_tag(&mut index, ref_name, digest, size);
        if let Some(entry) = index.manifests.last_mut() {
            entry.annotations.extend(annotations);
        }
        self.write_index(&index)?;
        Ok(())
    }
}

/// Point `ref_name` at `digest` in `index`, replacing any previous entry for that tag.
fn set_tag(index: &mut Index, ref_name: &str, digest: &Digest, size: u64) {
    index
        .manifests
        .retain(|d| d.annotation(ANNOTATION_REF_NAME) != Some(ref_name));
    let mut annotations = IndexMap::new();
    annotations.insert(ANNOTATION_REF_NAME.to_string(), ref_name.to_string());
    index.manifests.push(Descriptor {
        media_type: MEDIA_TYPE_MANIFEST.into(),
        digest: digest.to_string(),
        size,
        artifact_type: Some(ARTIFACT_TYPE_MODEL.into()),
        annotations,
    });
}

/// Now as RFC 3339 UTC (`2026-11-23T10:45:47Z`), without a date crate.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
