//! Remote references as inputs: the one call the input resolver (`app::input`) makes for
//! `hf://` and `oci://` arguments.

use super::error::Result;
use super::hub::{self, FetchOptions, HubConfig};
use super::oci::{self, OciOptions};
use super::{LocalAdapter, Progress, RemoteRef};
use crate::registry::{Digest, Reference, Store};

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
