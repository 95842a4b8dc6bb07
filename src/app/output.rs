//! Writing an adapter in a format, and saving what was written to the store with the lineage
//! of the operation that made it.

use super::error::{AppError, Result, ResultExt};
use super::input::Provenance;
use super::session::{Session, Unit};
use super::store::describe_files;
use crate::adapter::codec::{adapter_files, detect_format, write_adapter, WriteContext};
use crate::adapter::gguf::GgufBase;
use crate::adapter::{Adapter, Format};
use crate::io::WriteReport;
use crate::quant::QuantType;
use crate::registry::manifest::{AdapterInfo, Lineage, LineageInput};
use crate::registry::{files_digest, Digest, Reference, SourceFile};
use serde::Serialize;
use std::path::Path;

/// Where and how to write an adapter.
#[derive(Clone, Copy)]
pub struct OutputSpec<'a> {
    pub path: &'a Path,
    pub format: Format,
    /// The base model, for GGUF output.
    pub base: Option<&'a GgufBase>,
    /// Block-quantized storage of the factors (GGUF only).
    pub quant: Option<QuantType>,
}

/// The format to write: `to`, else the format the adapter was read from.
pub fn output_format(adapter: &Adapter, to: Option<Format>) -> Result<Format> {
    to.or(adapter.meta.source_format).ok_or_else(|| {
        AppError::Usage("cannot tell the output format; pass the format to write (--to)".into())
    })
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
    /// Write `adapter` as `spec` says, with byte progress.
    pub fn write(&self, adapter: &Adapter, spec: &OutputSpec<'_>) -> Result<WriteReport> {
        let total: u64 = adapter
            .layers
            .values()
            .map(|l| (l.param_count() * l.dtype().size()) as u64)
            .sum();
        let bar = self.observer().progress("writing", total, Unit::Bytes);
        let progress = |n: u64| bar.advance(n);
        let cx = WriteContext {
            base: spec.base,
            quant: spec.quant,
            progress: Some(&progress),
        };
        write_adapter(adapter, spec.format, spec.path, &cx)
            .with_context(|| format!("writing {} as {}", spec.path.display(), spec.format))
    }

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
