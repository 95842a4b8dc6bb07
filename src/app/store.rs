//! Everything between an adapter on disk and the store: what to record about it (from its
//! headers and config, never a conversion), adding, saving an op's output with its lineage,
//! exporting, filtering the list, and the lineage tree `show` prints.

use super::error::{AppError, Result, ResultExt};
use super::input::{InputRef, LoadOptions, Provenance};
use super::output::OutputSpec;
use super::session::Session;
use crate::adapter::codec::{adapter_files, detect_format, read_adapter, ReadContext};
use crate::adapter::gguf::GgufBase;
use crate::adapter::summary::AdapterSummary;
use crate::adapter::{Adapter, Format, ReadOptions};
use crate::io::WriteReport;
use crate::quant::QuantType;
use crate::registry::manifest::{AdapterInfo, Lineage, LineageInput, ModelConfig};
use crate::registry::{files_digest, Digest, Entry, Reference, SourceFile, Store};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Describe the adapter at `path` from its headers and config: the reader runs in layout-only
/// mode (no base model needed, nothing converted) and keeps unknown keys as warnings.
pub fn describe_files(path: &Path, format: Format) -> Result<AdapterSummary> {
    let cx = ReadContext {
        opts: ReadOptions {
            skip_unknown: true,
            layout_only: true,
        },
        base: None,
    };
    let adapter = read_adapter(path, Some(format), &cx)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(AdapterSummary::of(&adapter, format))
}

/// What an operation did, for the lineage of its output.
#[derive(Clone, Debug)]
pub struct Recipe {
    /// `convert`, `resize`, `merge`, `quantize`, `extract`.
    pub operation: &'static str,
    /// One line, e.g. `merge(sum, weights 0.7/0.3)`.
    pub summary: String,
    pub parameters: Vec<(&'static str, serde_json::Value)>,
}

/// An output saved to the store.
#[derive(Clone, Debug, Serialize)]
pub struct Saved {
    pub reference: String,
    pub digest: String,
}

impl Session<'_> {
    /// Add the adapter written at `output` to the store as `reference`, recording `recipe` and
    /// its inputs as lineage.
    pub fn save(
        &self,
        output: &Path,
        format: Format,
        reference: &Reference,
        recipe: Recipe,
        inputs: &[Provenance],
    ) -> Result<Saved> {
        let lineage = Lineage {
            operation: recipe.operation.to_string(),
            summary: recipe.summary,
            parameters: recipe
                .parameters
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            inputs: inputs
                .iter()
                .map(lineage_input)
                .collect::<Result<Vec<_>>>()?,
        };
        let digest = self
            .add_described(output, format, reference, Some(lineage))
            .with_context(|| format!("saving {} as {reference}", output.display()))?;
        Ok(Saved {
            reference: reference.to_string(),
            digest: digest.to_string(),
        })
    }

    /// Store the adapter files at `path` (of `format`) under `reference` with `lineage`.
    pub(super) fn add_described(
        &self,
        path: &Path,
        format: Format,
        reference: &Reference,
        lineage: Option<Lineage>,
    ) -> Result<Digest> {
        let summary = describe_files(path, format)?;
        let files = source_files(path, format)?;
        let store = self.store()?;
        Ok(store.add(
            &files,
            reference,
            AdapterInfo::from_summary(summary, lineage),
        )?)
    }
}

/// The files of the adapter at `path`, under their own names.
pub(super) fn source_files(path: &Path, format: Format) -> Result<Vec<SourceFile>> {
    adapter_files(path, format)?
        .iter()
        .map(|p| SourceFile::named_as_is(p).map_err(AppError::from))
        .collect()
}

/// One input's lineage record: a stored manifest, or the sha256 of a path's files.
pub(super) fn lineage_input(source: &Provenance) -> Result<LineageInput> {
    Ok(match source {
        Provenance::Store { reference, digest } => LineageInput {
            kind: "manifest".into(),
            digest: digest.to_string(),
            source: reference.clone(),
        },
        Provenance::Path(p) => {
            // a path that is not an adapter (a model file) is hashed as the file itself
            let format = detect_format(p).unwrap_or(Format::Kohya);
            let files = source_files(p, format)
                .with_context(|| format!("hashing the input {} for lineage", p.display()))?;
            LineageInput {
                kind: "files".into(),
                digest: files_digest(&files)?.to_string(),
                source: p.display().to_string(),
            }
        }
        Provenance::Hub { pinned, files } => {
            let files: Vec<SourceFile> = files
                .iter()
                .map(|p| SourceFile::named_as_is(p).map_err(AppError::from))
                .collect::<Result<_>>()?;
            LineageInput {
                kind: "hub".into(),
                digest: files_digest(&files)?.to_string(),
                source: pinned.clone(),
            }
        }
        Provenance::Oci { pinned, digest } => LineageInput {
            kind: "manifest".into(),
            digest: digest.to_string(),
            source: pinned.clone(),
        },
    })
}

/// A `--save` argument: `name:tag`, or `name` for `name:latest`.
pub fn parse_save(text: &str) -> Result<Reference> {
    Ok(Reference::parse_with_default(text, Some("latest"))?)
}

impl Session<'_> {
    /// Write `adapter` as `spec` says and, when `save` names a reference, add the output to
    /// the store with `recipe` and `inputs` as its lineage.
    pub fn write_and_save(
        &self,
        adapter: &Adapter,
        spec: &OutputSpec<'_>,
        save: Option<&Reference>,
        recipe: impl FnOnce() -> Recipe,
        inputs: &[Provenance],
    ) -> Result<(WriteReport, Option<Saved>)> {
        let report = self.write(adapter, spec)?;
        let saved = match save {
            Some(r) => Some(self.save(spec.path, spec.format, r, recipe(), inputs)?),
            None => None,
        };
        Ok((report, saved))
    }
}

/// Filters of `list`.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    /// Only adapters whose base model contains this text.
    pub base: Option<String>,
    pub format: Option<Format>,
    /// Only references containing this text.
    pub name: Option<String>,
}

impl ListFilter {
    pub fn accepts(&self, e: &Entry) -> bool {
        let info = e.config.as_ref().map(|c| &c.loratool);
        self.name.as_deref().is_none_or(|n| e.reference.contains(n))
            && self
                .format
                .is_none_or(|f| info.is_some_and(|i| i.format == f.to_string()))
            && self.base.as_deref().is_none_or(|b| {
                info.and_then(|i| i.base_model.as_deref())
                    .is_some_and(|m| m.contains(b))
            })
    }
}

/// A stored adapter's lineage as a tree, following inputs that are themselves stored.
#[derive(Clone, Debug, Serialize)]
pub struct LineageNode {
    pub summary: String,
    pub inputs: Vec<LineageInputNode>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LineageInputNode {
    pub source: String,
    pub digest: String,
    /// `manifest` or `files`.
    pub kind: String,
    /// Tags in the store pointing at this input (manifest inputs).
    pub tags: Vec<String>,
    /// The input's own lineage, when it is stored.
    pub lineage: Option<LineageNode>,
}

/// What `export` wrote.
#[derive(Clone, Debug, Serialize)]
pub struct Exported {
    pub reference: String,
    /// The stored files copied out (no conversion).
    pub files: Vec<PathBuf>,
    /// With a conversion: the format and the writer's report.
    pub format: Option<Format>,
    pub tensors: Option<usize>,
    pub bytes: Option<u64>,
}

/// How `export` converts, when it does.
#[derive(Clone, Copy)]
pub struct ExportAs<'a> {
    pub format: Format,
    pub base: Option<&'a GgufBase>,
    pub quant: Option<QuantType>,
}

impl Session<'_> {
    /// Add the adapter at `path` (format detected unless `from`) under `reference`, byte for
    /// byte, recording its description and `add(path)` as lineage.
    pub fn add(&self, path: &Path, reference: &Reference, from: Option<Format>) -> Result<Digest> {
        let format = match from {
            Some(f) => f,
            None => detect_format(path).with_context(|| format!("reading {}", path.display()))?,
        };
        let lineage = Lineage {
            operation: "add".into(),
            summary: format!("add({})", path.display()),
            parameters: Default::default(),
            inputs: vec![lineage_input(&Provenance::Path(path.to_path_buf()))?],
        };
        self.add_described(path, format, reference, Some(lineage))
            .with_context(|| format!("adding {} as {reference}", path.display()))
    }

    /// Copy a stored adapter's files into `out` (a directory), or convert it (`as_`) and write
    /// it at `out` as `convert -o` would.
    pub fn export(
        &self,
        reference: &Reference,
        out: &Path,
        as_: Option<ExportAs<'_>>,
    ) -> Result<Exported> {
        let store = self.store()?;
        let Some(as_) = as_ else {
            let r = store.resolve(reference)?;
            let files = store
                .export_files(&r, out)
                .with_context(|| format!("exporting {reference} to {}", out.display()))?;
            return Ok(Exported {
                reference: reference.to_string(),
                files,
                format: None,
                tensors: None,
                bytes: None,
            });
        };
        let input = InputRef::Store(reference.clone());
        let loaded = self.load(
            &input,
            &LoadOptions {
                base: as_.base,
                ..Default::default()
            },
        )?;
        let report: WriteReport = self.write(
            &loaded.adapter,
            &OutputSpec {
                path: out,
                format: as_.format,
                base: as_.base,
                quant: if as_.format == Format::Gguf {
                    as_.quant
                } else {
                    None
                },
            },
        )?;
        Ok(Exported {
            reference: reference.to_string(),
            files: vec![out.to_path_buf()],
            format: Some(as_.format),
            tensors: Some(report.tensors),
            bytes: Some(report.bytes),
        })
    }
}

/// The lineage of a stored adapter (`config`), following stored inputs (depth-limited and
/// cycle-checked: configs are store files, hence untrusted).
pub fn lineage_tree(store: &Store, config: &ModelConfig) -> Option<LineageNode> {
    lineage_node(store, config, 0, &mut Vec::new())
}

fn lineage_node(
    store: &Store,
    config: &ModelConfig,
    depth: usize,
    seen: &mut Vec<String>,
) -> Option<LineageNode> {
    let l = config.loratool.lineage.as_ref()?;
    let inputs = l
        .inputs
        .iter()
        .map(|input| {
            let digest = Digest::parse(&input.digest);
            let is_manifest = input.kind == "manifest";
            let tags = match (&digest, is_manifest) {
                (Some(d), true) => store.tags_of(d).unwrap_or_default(),
                _ => Vec::new(),
            };
            let parent = if is_manifest && depth < 6 && !seen.contains(&input.digest) {
                digest.and_then(|d| store.load(&d).ok()).and_then(|p| {
                    seen.push(input.digest.clone());
                    let node = lineage_node(store, &p.config, depth + 1, seen);
                    seen.pop();
                    node
                })
            } else {
                None
            };
            LineageInputNode {
                source: input.source.clone(),
                digest: input.digest.clone(),
                kind: input.kind.clone(),
                tags,
                lineage: parent,
            }
        })
        .collect();
    Some(LineageNode {
        summary: l.summary.clone(),
        inputs,
    })
}
