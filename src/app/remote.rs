//! `push` and `pull`: what goes up (a stored adapter or a path, converted on the way when
//! asked, described for the model card), what comes down (into the Hugging Face cache and,
//! when asked, the store, with the pinned remote reference as lineage), and byte progress for
//! the observer. The protocols are `crate::remote`'s.

use super::error::{AppError, Result, ResultExt};
use super::input::{InputRef, LoadOptions};
use super::output::OutputSpec;
use super::session::{Bars, Session};
use super::store::{describe_files, source_files};
use crate::adapter::codec::detect_format;
use crate::adapter::Format;
use crate::registry::manifest::{AdapterInfo, Lineage, LineageInput};
use crate::registry::{files_digest, Digest, Reference, SourceFile};
use crate::remote::hub::{self, FetchOptions, HubConfig, PushOptions, PushReport};
use crate::remote::oci::{self, OciOptions, OciPullReport, OciPushReport};
use crate::remote::source::{file_stem, Prepared};
use crate::remote::{LocalAdapter, RemoteRef};
use serde::Serialize;
use std::path::{Path, PathBuf};

pub struct PushRequest {
    /// A stored adapter (`name:tag`, `name@sha256:...`) or a path.
    pub source: String,
    pub dest: RemoteRef,
    /// Hub only: convert to this format on the way.
    pub to: Option<Format>,
    /// Hub only: create the repository private.
    pub private: bool,
    /// Hub only: write a model card when the repository has none.
    pub card: bool,
    /// Hub only: the commit summary.
    pub message: Option<String>,
    /// OCI only: how to reach the registry.
    pub oci: OciOptions,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum PushOutcome {
    Hub(PushReport),
    Oci(OciPushReport),
}

pub struct PullRequest {
    pub source: RemoteRef,
    /// Add it to the store under this name (Hub: besides the cache; OCI: instead of the name
    /// taken from the repository).
    pub save: Option<Reference>,
    /// Hub: the file to take when the repository holds several.
    pub file: Option<String>,
    pub oci: OciOptions,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum PullOutcome {
    Hub(HubPull),
    Oci(OciPullReport),
}

#[derive(Debug, Serialize)]
pub struct HubPull {
    pub source: String,
    /// `hf://owner/name@<commit>[/subfolder]`
    pub pinned: String,
    pub commit: String,
    pub path: PathBuf,
    pub files: Vec<PathBuf>,
    pub saved_as: Option<String>,
    pub digest: Option<String>,
}

/// A store reference when `source` is not an existing path and parses as one.
fn as_store_ref(source: &str) -> Option<Reference> {
    if Path::new(source).exists() {
        return None;
    }
    Reference::parse(source).ok()
}

impl Session<'_> {
    pub fn push(&self, req: &PushRequest) -> Result<PushOutcome> {
        let bars = Bars::new(self.observer());
        match &req.dest {
            RemoteRef::Hub(h) => {
                let config = HubConfig::from_env()?;
                let prepared = self
                    .prepare_push(&req.source, req.to)
                    .with_context(|| format!("preparing {} for the push", req.source))?;
                let opts = PushOptions {
                    private: req.private,
                    card: req.card,
                    message: req.message.clone(),
                };
                let report = hub::push(&prepared, h, &config, &opts, &bars)
                    .with_context(|| format!("pushing {} to {h}", req.source))?;
                Ok(PushOutcome::Hub(report))
            }
            RemoteRef::Oci(o) => {
                if req.to.is_some() {
                    return Err(AppError::Usage(
                        "--to converts for Hub pushes; an OCI push sends the stored artifact unchanged (convert with `loratool convert ... --save` first)".into(),
                    ));
                }
                let report = match as_store_ref(&req.source) {
                    Some(r) => oci::push(&self.store()?, &r, o, &req.oci, &bars),
                    None => {
                        // a path goes up as the artifact `add` would make of it, through a
                        // temporary store so the user's store is untouched
                        let tmp = tempfile::Builder::new()
                            .prefix("loratool-push-")
                            .tempdir()
                            .map_err(|e| crate::Error::io(std::env::temp_dir(), e))?;
                        let staging = Session::new().with_store_root(tmp.path());
                        let reference = oci::default_save_name(o)?;
                        staging.add(Path::new(&req.source), &reference, None)?;
                        oci::push(&staging.store()?, &reference, o, &req.oci, &bars)
                    }
                }
                .with_context(|| format!("pushing {} to {o}", req.source))?;
                Ok(PushOutcome::Oci(report))
            }
        }
    }

    pub fn pull(&self, req: &PullRequest) -> Result<PullOutcome> {
        let bars = Bars::new(self.observer());
        match &req.source {
            RemoteRef::Hub(h) => {
                let config = HubConfig::from_env()?;
                let opts = FetchOptions {
                    file: req.file.clone(),
                };
                let local =
                    hub::fetch(h, &config, &opts, &bars).with_context(|| format!("pulling {h}"))?;
                let saved = match &req.save {
                    Some(r) => Some((r.to_string(), self.save_fetched(&local, r)?.to_string())),
                    None => None,
                };
                Ok(PullOutcome::Hub(HubPull {
                    source: h.to_string(),
                    pinned: local.provenance.pinned.clone(),
                    commit: local.provenance.revision.clone(),
                    path: local.path.clone(),
                    files: local.files.clone(),
                    saved_as: saved.as_ref().map(|s| s.0.clone()),
                    digest: saved.map(|s| s.1),
                }))
            }
            RemoteRef::Oci(o) => {
                let name = match &req.save {
                    Some(r) => r.clone(),
                    None => oci::default_save_name(o)?,
                };
                let report = oci::pull(&self.store()?, o, &name, &req.oci, &bars)
                    .with_context(|| format!("pulling {o}"))?;
                Ok(PullOutcome::Oci(report))
            }
        }
    }

    /// Add a fetched Hub adapter to the store as `reference`: exactly the files the fetch
    /// chose, its lineage naming the pinned `hf://owner/name@<commit>` and the sha256 over them.
    pub fn save_fetched(&self, local: &LocalAdapter, reference: &Reference) -> Result<Digest> {
        let format = detect_format(&local.path)?;
        let summary = describe_files(&local.path, format)?;
        let files: Vec<SourceFile> = local
            .files
            .iter()
            .map(|p| SourceFile::named_as_is(p).map_err(AppError::from))
            .collect::<Result<_>>()?;
        let lineage = Lineage {
            operation: "pull".into(),
            summary: format!("pull({})", local.provenance.pinned),
            parameters: Default::default(),
            inputs: vec![LineageInput {
                kind: "hub".into(),
                digest: files_digest(&files)?.to_string(),
                source: local.provenance.pinned.clone(),
            }],
        };
        let info = AdapterInfo::from_summary(summary, Some(lineage));
        Ok(self.store()?.add(&files, reference, info)?)
    }

    /// The files a push sends: a stored adapter's or a path's, converted to `to` when given
    /// and different, described for the card. Files go up as they are unless converted, so
    /// reading only describes them (a llama GGUF adapter needs no base model for that).
    fn prepare_push(&self, source: &str, to: Option<Format>) -> Result<Prepared> {
        let input = match as_store_ref(source) {
            Some(r) => InputRef::Store(r),
            None => InputRef::Path(PathBuf::from(source)),
        };
        let located = self.locate(&input)?;
        let (stored_info, stored) = match &input {
            InputRef::Store(r) => {
                let resolved = self.store()?.resolve(r)?;
                (
                    Some(resolved.config.loratool),
                    Some((r.to_string(), resolved.digest)),
                )
            }
            _ => (None, None),
        };
        let format = match located.format {
            Some(f) => f,
            None => detect_format(&located.path)?,
        };
        let target = to.unwrap_or(format);
        let loaded = self.load_located(
            &located,
            &LoadOptions {
                from: Some(format),
                skip_unknown: true,
                base: None,
                layout_only: target == format,
            },
        )?;
        let license = ["modelspec.license", "ss_license", "license"]
            .iter()
            .find_map(|k| loaded.adapter.meta.source_metadata.get(*k).cloned())
            .filter(|l| !l.trim().is_empty());
        let mut keep = Vec::new();
        let files_path = if target != format {
            let dir = tempfile::Builder::new()
                .prefix("loratool-push-")
                .tempdir()
                .map_err(|e| crate::Error::io(std::env::temp_dir(), e))?;
            let out = match target {
                Format::Peft => dir.path().to_path_buf(),
                Format::Diffusers => dir.path().join("pytorch_lora_weights.safetensors"),
                Format::Kohya
                | Format::Comfy
                | Format::OneTrainer
                | Format::Xlabs
                | Format::Lycoris => dir.path().join(format!("{}.safetensors", file_stem(source))),
                Format::Gguf => return Err(AppError::Usage(
                    "pushing with --to gguf needs the base model's config; convert first with `loratool convert <adapter> --to gguf --base <config.json|model.gguf> -o x.gguf --save name:tag` and push that".into(),
                )),
            };
            self.write(
                &loaded.adapter,
                &OutputSpec {
                    path: &out,
                    format: target,
                    base: None,
                    quant: None,
                },
            )?;
            keep.push(dir);
            out
        } else {
            located.path.clone()
        };
        let mut info = AdapterInfo::from_summary(describe_files(&files_path, target)?, None);
        if let Some(s) = stored_info {
            info.lineage = s.lineage;
            info.created = s.created;
            if info.base_model.is_none() {
                info.base_model = s.base_model;
            }
        }
        let files = source_files(&files_path, target)?;
        keep.extend(located.into_temp_dir());
        Ok(Prepared {
            files,
            format: target,
            info,
            license,
            stored,
            source: source.to_string(),
            keep,
        })
    }
}
