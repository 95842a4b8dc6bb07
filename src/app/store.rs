//! The registry commands' logic above the store itself: what to record about an adapter
//! (from its headers and config, never a conversion), adding, exporting, filtering the list,
//! and the lineage tree `show` prints.

use super::error::{Result, ResultExt};
use super::input::{InputRef, LoadOptions, Provenance};
use super::output::{lineage_input, OutputSpec};
use super::session::Session;
use crate::adapter::codec::{detect_format, read_adapter, ReadContext};
use crate::adapter::gguf::GgufBase;
use crate::adapter::summary::AdapterSummary;
use crate::adapter::{Format, ReadOptions};
use crate::io::WriteReport;
use crate::quant::QuantType;
use crate::registry::manifest::{Lineage, ModelConfig};
use crate::registry::{Digest, Entry, Reference, Store};
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
