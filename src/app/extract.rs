//! `extract`: a LoRA from the difference between a fine-tuned model and its base.

use super::error::{AppError, Result, ResultExt};
use super::output::OutputSpec;
use super::session::{Session, Unit};
use super::store::{Recipe, Saved};
use crate::adapter::Format;
use crate::ops::extract::{extract, ExtractOptions, ExtractReport};
use crate::ops::model_layout::{LayoutKind, ModelLayout};
use crate::registry::Reference;
use serde::Serialize;
use std::path::PathBuf;

pub struct ExtractRequest {
    pub base: PathBuf,
    pub tuned: PathBuf,
    pub options: ExtractOptions,
    pub output: PathBuf,
    /// Default: peft for a Hugging Face model, diffusers for a pipeline, kohya for a
    /// single-file SD checkpoint.
    pub to: Option<Format>,
    pub save: Option<Reference>,
}

#[derive(Debug, Serialize)]
pub struct ExtractOutcome {
    #[serde(flatten)]
    pub report: ExtractReport,
    #[serde(skip)]
    pub format: Format,
    #[serde(skip)]
    pub bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved: Option<Saved>,
}

/// The output format that suits a base model's layout.
pub fn default_format(base: &ModelLayout) -> Format {
    match base.kind {
        LayoutKind::Pipeline if base.family.is_some() => Format::Diffusers,
        LayoutKind::Checkpoint(_) => Format::Kohya,
        _ => Format::Peft,
    }
}

impl Session<'_> {
    pub fn extract(&self, req: &ExtractRequest) -> Result<ExtractOutcome> {
        let o = &req.options;
        if !(o.min_diff.is_finite() && o.min_diff >= 0.0) {
            return Err(AppError::Usage(
                "--min-diff must be a non-negative number".into(),
            ));
        }
        let base = ModelLayout::open(&req.base)
            .with_context(|| format!("reading the base model {}", req.base.display()))?;
        let tuned = ModelLayout::open(&req.tuned)
            .with_context(|| format!("reading the fine-tuned model {}", req.tuned.display()))?;
        let to = req.to.unwrap_or_else(|| default_format(&base));
        let bar = self
            .observer()
            .progress("extracting", tuned.primary_bytes(), Unit::Bytes);
        let result = extract(&base, &tuned, o, &|n| bar.advance(n));
        drop(bar);
        let (adapter, report) = result.context("extracting")?;
        if !report.changed_not_lora.is_empty() {
            self.observer().warn(&format!(
                "{} changed tensors cannot be carried by a LoRA and were left out: {}",
                report.changed_not_lora.len(),
                report.changed_not_lora.join(", ")
            ));
        }
        let spec = OutputSpec {
            path: &req.output,
            format: to,
            base: None,
            quant: None,
        };
        // models are not store inputs: the lineage names them in its parameters
        let (written, saved) =
            self.write_and_save(&adapter, &spec, req.save.as_ref(), || recipe(req), &[])?;
        Ok(ExtractOutcome {
            report,
            format: to,
            bytes: written.bytes,
            saved,
        })
    }
}

fn recipe(req: &ExtractRequest) -> Recipe {
    let o = &req.options;
    Recipe {
        operation: "extract",
        summary: format!(
            "extract(rank {}{}, from {} − {})",
            o.rank,
            if o.exact { ", exact" } else { "" },
            req.tuned.display(),
            req.base.display()
        ),
        parameters: vec![
            ("base", req.base.display().to_string().into()),
            ("tuned", req.tuned.display().to_string().into()),
            ("rank", o.rank.into()),
            ("param", o.rule.method().map(|(_, p)| p).into()),
            ("exact", o.exact.into()),
            ("min_diff", o.min_diff.into()),
            ("seed", o.seed.into()),
        ],
    }
}
