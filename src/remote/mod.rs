//! Remotes: the Hugging Face Hub (`hf://owner/name[@rev][/subfolder]`) and OCI registries
//! (`oci://host[:port]/repository[:tag|@digest]`). This module owns the protocols, the
//! huggingface_hub cache layout and the checks on everything a server sends; it does not read
//! adapters itself beyond what a push needs to convert or describe one, and it knows no CLI.
//!
//! Submodules: `http` (requests, retries, redirects, downloads), `hub` (Hub client, cache,
//! push), `oci` (distribution client, push, pull), `error`.
//!
//! # Why ureq, and no oci-client / reqwest
//! One blocking HTTP stack serves both protocols: `ureq` 3 (rustls with ring, no async runtime,
//! no C toolchain). It gives per-read stall timeouts and lets redirects be followed by hand, which
//! the Hub protocol needs (a file's metadata sits on the 302 itself) and which is how credentials
//! are kept from other origins. `oci-client` 0.18 is async-only (tokio), builds reqwest 0.13 with
//! aws-lc (a C build), reads manifests without a size cap and has no retry policy, so every
//! reliability rule here would have wrapped it anyway; the distribution calls loratool needs
//! (blob HEAD/GET, chunked upload, manifest PUT/GET, the token challenge) are few.

pub mod error;
pub mod http;
pub mod hub;
pub mod oci;
pub mod resolve;
pub mod source;

pub use error::{RemoteError, Result};

/// A parsed remote reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoteRef {
    Hub(hub::HubRef),
    Oci(oci::OciRef),
}

impl RemoteRef {
    /// `None` when `s` is not a remote reference at all (no `hf://` / `oci://` prefix);
    /// `Some(Err)` when it is one but malformed.
    pub fn parse(s: &str) -> Option<Result<RemoteRef>> {
        if s.starts_with("hf://") {
            Some(hub::HubRef::parse(s).map(RemoteRef::Hub))
        } else if s.starts_with("oci://") {
            Some(oci::OciRef::parse(s).map(RemoteRef::Oci))
        } else {
            None
        }
    }
}

impl std::fmt::Display for RemoteRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RemoteRef::Hub(h) => h.fmt(f),
            RemoteRef::Oci(o) => o.fmt(f),
        }
    }
}

/// Byte progress of transfers, for a caller that draws bars. Calls come from the thread that
/// runs the transfer.
pub trait Progress {
    /// A transfer of `total` bytes (when known) named `label` begins.
    fn start(&self, _label: &str, _total: Option<u64>) {}
    fn advance(&self, _bytes: u64) {}
    /// A resumed download restarted from zero: take back what was counted.
    fn advance_back(&self, _bytes: u64) {}
    fn finish(&self) {}
}

/// Progress that shows nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

/// An adapter made local by a fetch or pull: what to hand the readers, and where it came from.
#[derive(Clone, Debug)]
pub struct LocalAdapter {
    /// A file, or the directory of a multi-file (PEFT) adapter.
    pub path: std::path::PathBuf,
    /// The files that make up the adapter.
    pub files: Vec<std::path::PathBuf>,
    pub provenance: Provenance,
}

/// Where a fetched adapter came from, for lineage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provenance {
    /// The reference pinned to what was fetched: `hf://owner/name@<commit>/subfolder` or
    /// `oci://host/repo@sha256:...`.
    pub pinned: String,
    /// The reference as the user gave it.
    pub requested: String,
    /// The Hub commit or the OCI manifest digest.
    pub revision: String,
}
