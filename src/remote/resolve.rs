//! Remote references as inputs: the one call an input resolver makes for `hf://` and `oci://`
//! arguments, and saving a Hub download into the store with its provenance as lineage.

use super::error::Result;
use super::hub::{self, FetchOptions, HubConfig};
use super::oci::{self, OciOptions};
use super::{LocalAdapter, Progress, RemoteRef};
use crate::registry::manifest::{Lineage, LineageInput};
use crate::registry::{describe, files_digest, Digest, Reference, SourceFile, Store};
use indexmap::IndexMap;

/// A remote input made local.
#[derive(Debug)]
pub enum Fetched {
    /// A Hub adapter in the huggingface_hub cache.
    Local(LocalAdapter),
    /// An OCI artifact pulled into the store.
    Stored {
        reference: Reference,
        digest: Digest,
        /// `oci://host/repo@sha256:...`
        pinned: String,
    },
}

/// Fetch `r` for reading: Hub adapters into the HF cache (configured from the environment),
/// OCI artifacts into `store` under their default name.
pub fn fetch_input(
    r: &RemoteRef,
    file: Option<&str>,
    store: &dyn Fn() -> crate::registry::Result<Store>,
    progress: &dyn Progress,
) -> Result<Fetched> {
    match r {
        RemoteRef::Hub(h) => {
            let config = HubConfig::from_env()?;
            let opts = FetchOptions {
                file: file.map(str::to_string),
            };
            Ok(Fetched::Local(hub::fetch(h, &config, &opts, progress)?))
        }
        RemoteRef::Oci(o) => {
            let store = store()?;
            let name = oci::default_save_name(o)?;
            let report = oci::pull(&store, o, &name, &OciOptions::default(), progress)?;
            let digest = Digest::parse(&report.digest).ok_or_else(|| {
                super::RemoteError::Invalid(format!("bad digest {}", report.digest))
            })?;
            Ok(Fetched::Stored {
                reference: name,
                pinned: o.pinned(&digest),
                digest,
            })
        }
    }
}

/// Add a fetched Hub adapter to the store as `reference`, its lineage naming the pinned
/// `hf://owner/name@<commit>` it came from and the sha256 over its files.
pub fn save_fetched(store: &Store, local: &LocalAdapter, reference: &Reference) -> Result<Digest> {
    let format = crate::adapter::detect::detect_format(&local.path)?;
    let adapter = crate::adapter::detect::read_adapter(
        &local.path,
        Some(format),
        crate::adapter::ReadOptions { skip_unknown: true },
    )?;
    let mut info = describe(&adapter, format);
    drop(adapter);
    // exactly the files the fetch chose (a snapshot folder may hold a README and more)
    let files: Vec<SourceFile> = local
        .files
        .iter()
        .filter_map(|p| {
            Some(SourceFile {
                title: p.file_name()?.to_str()?.to_string(),
                path: p.clone(),
            })
        })
        .collect();
    let ref_name = reference.ref_name().ok_or_else(|| {
        super::RemoteError::Invalid(format!("--save {reference}: saving needs a tag (name:tag)"))
    })?;
    let lineage = Lineage {
        operation: "pull".into(),
        summary: format!("pull({})", local.provenance.pinned),
        parameters: IndexMap::new(),
        inputs: vec![LineageInput {
            kind: "hub".into(),
            digest: files_digest(&files)?.to_string(),
            source: local.provenance.pinned.clone(),
        }],
    };
    info.lineage = Some(lineage);
    Ok(store.add_files(&files, &reference.name, &ref_name, info)?)
}
