//! Resolving what a user names as an input: a path, or a registry reference (`name:tag`,
//! `name@sha256:<digest>`). Every command that reads an adapter comes through here, so every
//! command accepts the same kinds of input and records the same provenance for lineage.

use super::error::{AppError, Result, ResultExt};
use super::session::Session;
use crate::adapter::codec::{detect_format, read_adapter, ReadContext};
use crate::adapter::gguf::GgufBase;
use crate::adapter::{Adapter, Format, ReadOptions};
use crate::registry::{Digest, Materialised, Reference};
use crate::remote::resolve::{fetch_input, Fetched};
use crate::remote::RemoteRef;
use std::path::{Path, PathBuf};

/// An input as the user named it.
#[derive(Clone, Debug, PartialEq)]
pub enum InputRef {
    Path(PathBuf),
    Store(Reference),
    /// `hf://owner/name[@rev][/subfolder]` or `oci://host/repository:tag`.
    Remote(RemoteRef),
}

impl InputRef {
    /// `hf://` and `oci://` are remote references; otherwise an existing file or directory
    /// wins; otherwise text with `:` or `@` is a registry reference; anything else is a path
    /// (which then fails to open, naming it).
    pub fn parse(text: &str) -> Result<InputRef> {
        if let Some(remote) = RemoteRef::parse(text) {
            return Ok(InputRef::Remote(remote?));
        }
        let path = Path::new(text);
        if path.exists() || !(text.contains(':') || text.contains('@')) {
            return Ok(InputRef::Path(path.to_path_buf()));
        }
        Reference::parse(text)
            .map(InputRef::Store)
            .map_err(|e| AppError::NoSuchInput {
                input: text.to_string(),
                reason: e.to_string(),
            })
    }

    /// [`InputRef::parse`] of a path argument.
    pub fn from_path(path: &Path) -> Result<InputRef> {
        InputRef::parse(&path.to_string_lossy())
    }

    /// How messages name it.
    pub fn label(&self) -> String {
        match self {
            InputRef::Path(p) => p.display().to_string(),
            InputRef::Store(r) => r.to_string(),
            InputRef::Remote(r) => r.to_string(),
        }
    }
}

/// Where an input came from, for `--save` lineage.
#[derive(Clone, Debug, PartialEq)]
pub enum Provenance {
    /// A stored adapter, named by the reference the user gave.
    Store { reference: String, digest: Digest },
    /// A path outside the store.
    Path(PathBuf),
    /// A Hub adapter fetched into the Hugging Face cache: the reference pinned to the commit,
    /// and its files there.
    Hub { pinned: String, files: Vec<PathBuf> },
    /// An OCI artifact pulled into the store: the reference pinned to the manifest digest.
    Oci { pinned: String, digest: Digest },
}

/// An input resolved to files the readers can open. A stored adapter is laid out in a temp
/// directory inside the store, removed when this is dropped.
pub struct Located {
    pub path: PathBuf,
    /// The stored adapter's format, when it came from the store.
    pub format: Option<Format>,
    pub provenance: Provenance,
    pub label: String,
    _materialised: Option<Materialised>,
}

impl Located {
    /// The temp directory a stored adapter was laid out in, for a caller that keeps using
    /// its files after this is gone.
    pub fn into_temp_dir(self) -> Option<tempfile::TempDir> {
        self._materialised.map(|m| m.dir)
    }
}

/// How to read an adapter input.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions<'a> {
    /// Read as this format instead of detecting it.
    pub from: Option<Format>,
    /// Drop keys loratool cannot represent, with a warning.
    pub skip_unknown: bool,
    /// The base model, for llama-arch GGUF adapters (their q/k rows are RoPE-permuted).
    pub base: Option<&'a GgufBase>,
    /// Read to describe only (see [`ReadOptions::layout_only`]).
    pub layout_only: bool,
}

/// An adapter read from an input.
#[derive(Debug)]
pub struct Loaded {
    pub adapter: Adapter,
    pub format: Format,
    pub provenance: Provenance,
    /// How messages name the input (its path or reference).
    pub label: String,
    /// The file or directory it was read from (a temp layout for stored adapters).
    pub path: PathBuf,
}

impl Session<'_> {
    /// Resolve `input` to files on disk.
    pub fn locate(&self, input: &InputRef) -> Result<Located> {
        match input {
            InputRef::Path(p) => Ok(Located {
                path: p.clone(),
                format: None,
                provenance: Provenance::Path(p.clone()),
                label: p.display().to_string(),
                _materialised: None,
            }),
            InputRef::Store(reference) => self.locate_stored(reference, None),
            InputRef::Remote(remote) => self.locate_remote(remote),
        }
    }

    /// Lay out a stored adapter; `remote` names where it was pulled from.
    fn locate_stored(&self, reference: &Reference, remote: Option<String>) -> Result<Located> {
        let store = self.store()?;
        let resolved = store.resolve(reference)?;
        let m = store
            .materialise(&resolved)
            .with_context(|| format!("reading {reference} from the store"))?;
        let provenance = match &remote {
            Some(pinned) => Provenance::Oci {
                pinned: pinned.clone(),
                digest: resolved.digest,
            },
            None => Provenance::Store {
                reference: reference.to_string(),
                digest: resolved.digest,
            },
        };
        Ok(Located {
            path: m.read_path.clone(),
            format: m.format,
            provenance,
            label: remote.unwrap_or_else(|| reference.to_string()),
            _materialised: Some(m),
        })
    }

    /// Fetch a Hub adapter into the Hugging Face cache, or pull an OCI artifact into the store
    /// (under the name its repository gives), and locate it there.
    fn locate_remote(&self, remote: &RemoteRef) -> Result<Located> {
        let bars = super::session::Bars::new(self.observer());
        let open = || {
            self.store().map_err(|e| match e {
                AppError::Store(s) => s,
                other => crate::registry::RegistryError::Invalid(other.to_string()),
            })
        };
        match fetch_input(remote, None, &open, &bars)
            .with_context(|| format!("fetching {remote}"))?
        {
            Fetched::Local(local) => Ok(Located {
                path: local.path.clone(),
                format: None,
                provenance: Provenance::Hub {
                    pinned: local.provenance.pinned.clone(),
                    files: local.files.clone(),
                },
                label: remote.to_string(),
                _materialised: None,
            }),
            Fetched::Stored {
                reference, pinned, ..
            } => self.locate_stored(&reference, Some(pinned)),
        }
    }

    /// Resolve and read `input`; the reader's warnings go to the observer (and stay in
    /// `adapter.meta.warnings`).
    pub fn load(&self, input: &InputRef, opts: &LoadOptions<'_>) -> Result<Loaded> {
        let located = self.locate(input)?;
        let loaded = self.load_located(&located, opts)?;
        self.warn_all(&loaded.adapter.meta.warnings);
        Ok(loaded)
    }

    /// Read an input that is already located.
    pub fn load_located(&self, located: &Located, opts: &LoadOptions<'_>) -> Result<Loaded> {
        let path = &located.path;
        let format = match opts.from.or(located.format) {
            Some(f) => f,
            None => detect_format(path).with_context(|| format!("reading {}", located.label))?,
        };
        let cx = ReadContext {
            opts: ReadOptions {
                skip_unknown: opts.skip_unknown,
                layout_only: opts.layout_only,
            },
            base: opts.base,
        };
        let adapter = read_adapter(path, Some(format), &cx)
            .with_context(|| format!("reading {}", located.label))?;
        Ok(Loaded {
            adapter,
            format,
            provenance: located.provenance.clone(),
            label: located.label.clone(),
            path: path.clone(),
        })
    }

    /// Read every input with the same options.
    pub fn load_all(&self, inputs: &[InputRef], opts: &LoadOptions<'_>) -> Result<Vec<Loaded>> {
        inputs.iter().map(|i| self.load(i, opts)).collect()
    }
}

/// Load `--base` when given: a `config.json` (or its directory) or a GGUF model.
pub fn load_base(base: Option<&Path>) -> Result<Option<GgufBase>> {
    base.map(|p| {
        GgufBase::load(p).with_context(|| format!("reading the base model {}", p.display()))
    })
    .transpose()
}
