//! Garbage collection: delete blobs no manifest in `index.json` reaches, and stale temp files.
//! Runs entirely under the exclusive store lock; see the crate-level registry doc for why a
//! concurrent `add` never loses a blob to it.

use super::error::{RegistryError, Result};
use super::layout::Store;
use super::names::Digest;
use crate::io::staging;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// Materialised adapters (which readers use without a lock) older than this are leftovers of
/// killed processes.
const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);

#[derive(Debug, Default)]
pub struct GcReport {
    /// Unreachable blobs deleted (or, dry run, that would be), with their sizes.
    pub removed: Vec<(Digest, u64)>,
    /// Blobs kept.
    pub kept: usize,
    /// Stale temp files and directories removed (or that would be).
    pub temp: Vec<PathBuf>,
}

impl GcReport {
    pub fn bytes(&self) -> u64 {
        self.removed.iter().map(|(_, s)| s).sum()
    }
}

impl Store {
    /// Mark every blob reachable from `index.json`, then delete the rest.
    pub fn gc(&self, dry_run: bool) -> Result<GcReport> {
        let _lock = self.lock_exclusive()?;
        let index = self.read_index()?;
        let index_path = self.index_path();
        let mut reachable: BTreeSet<Digest> = BTreeSet::new();
        for d in &index.manifests {
            let digest = d.checked_digest(&index_path)?;
            // a manifest that cannot be read keeps what it names unknown: refuse to guess, so
            // a damaged store loses nothing more to gc
            let manifest = self.manifest(&digest).map_err(|e| {
                RegistryError::Invalid(format!(
                    "gc stopped: manifest {digest} cannot be read ({e}); run `loratool verify`, and `loratool rm` the tags that point at it"
                ))
            })?;
            reachable.insert(manifest.config.checked_digest(&index_path)?);
            for l in &manifest.layers {
                reachable.insert(l.checked_digest(&index_path)?);
            }
            reachable.insert(digest);
        }
        let mut report = GcReport::default();
        let blobs = self.blobs_dir();
        let rd = std::fs::read_dir(&blobs).map_err(|e| RegistryError::io(&blobs, e))?;
        for e in rd {
            let e = e.map_err(|e| RegistryError::io(&blobs, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            // files that are not blobs are verify's to report; gc deletes only what it knows
            let Some(digest) = Digest::parse(&format!("sha256:{name}")) else {
                continue;
            };
            if reachable.contains(&digest) {
                report.kept += 1;
                continue;
            }
            let size = e.metadata().map_or(0, |m| m.len());
            super::layout::test_pause("before deleting a blob");
            if !dry_run {
                std::fs::remove_file(e.path()).map_err(|err| RegistryError::io(e.path(), err))?;
            }
            report.removed.push((digest, size));
        }
        // temp files of index writers (store root) and of blob writers (tmp/): those no live
        // process holds are leftovers of killed ones (see crate::io::staging)
        for dir in [self.root().to_path_buf(), self.tmp_dir()] {
            report.temp.extend(if dry_run {
                staging::find_stale(&dir)
            } else {
                staging::clean_stale(&dir)
            });
        }
        // materialised adapters hold no lock: old ones are leftovers of killed readers
        let now = SystemTime::now();
        if let Ok(rd) = std::fs::read_dir(self.tmp_dir()) {
            for e in rd.flatten() {
                if staging::is_temp_name(&e.file_name()) {
                    continue;
                }
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| now.duration_since(t).ok())
                    .is_some_and(|age| age > STALE_TEMP_AGE);
                if old {
                    if !dry_run {
                        let p = e.path();
                        let _ = if p.is_dir() {
                            std::fs::remove_dir_all(&p)
                        } else {
                            std::fs::remove_file(&p)
                        };
                    }
                    report.temp.push(e.path());
                }
            }
        }
        Ok(report)
    }
}
