//! Verification: re-hash every blob, and check that every tag's manifest, config and layers
//! are present and well formed. Read-only; holds the shared store lock so no `gc` deletes
//! blobs while it runs.

use super::error::{RegistryError, Result};
use super::layout::Store;
use super::manifest::ANNOTATION_REF_NAME;
use super::names::Digest;
use sha2::Digest as _;

#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Blobs re-hashed.
    pub checked: usize,
    /// Blobs whose content does not hash to their name: (name, actual digest).
    pub corrupt: Vec<(Digest, Digest)>,
    /// Blobs a tag needs that are not in the store: (digest, what needs it).
    pub missing: Vec<(Digest, String)>,
    /// Other problems: unreadable manifests, stray files, bad index entries.
    pub problems: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.corrupt.is_empty() && self.missing.is_empty() && self.problems.is_empty()
    }
}

impl Store {
    pub fn verify(&self) -> Result<VerifyReport> {
        let _lock = self.lock_shared()?;
        let mut report = VerifyReport::default();
        let blobs = self.blobs_dir();
        let rd = std::fs::read_dir(&blobs).map_err(|e| RegistryError::io(&blobs, e))?;
        let mut names: Vec<_> = rd.filter_map(|e| e.ok()).collect();
        names.sort_by_key(|e| e.file_name());
        for e in names {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(digest) = Digest::parse(&format!("sha256:{name}")) else {
                report.problems.push(format!(
                    "{}: not a blob name (stray file)",
                    e.path().display()
                ));
                continue;
            };
            let mut f =
                std::fs::File::open(e.path()).map_err(|err| RegistryError::io(e.path(), err))?;
            let mut h = sha2::Sha256::new();
            std::io::copy(&mut f, &mut h).map_err(|err| RegistryError::io(e.path(), err))?;
            let actual = Digest::from_sha256(&h.finalize());
            report.checked += 1;
            if actual != digest {
                report.corrupt.push((digest, actual));
            }
        }
        let corrupt = |d: &Digest, r: &VerifyReport| r.corrupt.iter().any(|(c, _)| c == d);
        let index = match self.read_index() {
            Ok(i) => i,
            Err(e) => {
                report.problems.push(e.to_string());
                return Ok(report);
            }
        };
        for d in &index.manifests {
            let tag = d
                .annotation(ANNOTATION_REF_NAME)
                .unwrap_or("(untagged)")
                .to_string();
            let Some(digest) = Digest::parse(&d.digest) else {
                report
                    .problems
                    .push(format!("index.json: {tag} has a malformed digest"));
                continue;
            };
            if !self.blob_path(&digest).is_file() {
                report.missing.push((digest, format!("manifest of {tag}")));
                continue;
            }
            if corrupt(&digest, &report) {
                continue;
            }
            let manifest = match self.manifest(&digest) {
                Ok(m) => m,
                Err(e) => {
                    report.problems.push(format!("{tag}: {e}"));
                    continue;
                }
            };
            if let Some(c) = Digest::parse(&manifest.config.digest) {
                if !self.blob_path(&c).is_file() {
                    report.missing.push((c, format!("config of {tag}")));
                } else if !corrupt(&c, &report) {
                    if let Err(e) = self.config(&c) {
                        report.problems.push(format!("{tag}: {e}"));
                    }
                }
            }
            for (title, l, size) in manifest.files() {
                match std::fs::metadata(self.blob_path(&l)) {
                    Err(_) => report.missing.push((l, format!("{title} of {tag}"))),
                    Ok(m) if m.len() != size => report.problems.push(format!(
                        "{tag}: {title} ({l}) is {} bytes, the manifest says {size}",
                        m.len()
                    )),
                    Ok(_) => {}
                }
            }
        }
        report.missing.sort();
        report.missing.dedup();
        Ok(report)
    }
}
