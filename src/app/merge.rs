//! `merge`: combine several adapters into one, module by module.

use super::error::{AppError, Result, ResultExt};
use super::input::{InputRef, LoadOptions, Loaded};
use super::output::{output_format, OutputSpec};
use super::session::{Session, Unit};
use super::store::{Recipe, Saved};
use crate::adapter::gguf::GgufBase;
use crate::adapter::kohya::note_merge;
use crate::adapter::{Adapter, Format};
use crate::ops::input_weights;
use crate::ops::merge::{merge_with_progress, MergeInput, MergeMethod, MergeOptions, ModuleMerge};
use crate::registry::Reference;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub struct MergeRequest<'a> {
    pub inputs: Vec<InputRef>,
    pub skip_unknown: bool,
    /// The base model, for GGUF adapters in or out.
    pub base: Option<&'a GgufBase>,
    /// Method, rank, clamp, density, ...; `weights` may be empty (1 each).
    pub options: MergeOptions,
    pub output: PathBuf,
    /// Output format (default: the first input's).
    pub to: Option<Format>,
    pub save: Option<Reference>,
}

#[derive(Debug, Serialize)]
pub struct MergeOutcome {
    pub method: MergeMethod,
    pub compat: Option<&'static str>,
    pub weights: Vec<f64>,
    pub inputs: Vec<String>,
    pub output: String,
    pub format: Format,
    pub modules: Vec<ModuleMerge>,
    pub params: usize,
    pub bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved: Option<Saved>,
}

/// `--clamp-quantile`'s value: a quantile in (0, 1], or `none`. The default depends on the
/// mode: sd-scripts clamps at 0.99, PEFT does not clamp.
pub fn clamp_quantile(
    text: Option<&str>,
    method: MergeMethod,
    compat_peft: bool,
) -> Result<Option<f64>> {
    if method != MergeMethod::Svd {
        if text.is_some() {
            return Err(AppError::Usage(
                "--clamp-quantile applies to --method svd only".into(),
            ));
        }
        return Ok(None);
    }
    let text = text.unwrap_or(if compat_peft { "none" } else { "0.99" });
    if text == "none" {
        return Ok(None);
    }
    text.parse::<f64>()
        .ok()
        .filter(|q| *q > 0.0 && *q <= 1.0)
        .map(Some)
        .ok_or_else(|| {
            AppError::Usage(format!(
                "--clamp-quantile {text}: expected a number in (0, 1] or none"
            ))
        })
}

impl Session<'_> {
    pub fn merge(&self, req: &MergeRequest<'_>) -> Result<MergeOutcome> {
        let mut options = req.options.clone();
        options.weights = input_weights(&options.weights, req.inputs.len())?;
        let loaded = self.load_all(
            &req.inputs,
            &LoadOptions {
                skip_unknown: req.skip_unknown,
                base: req.base,
                ..Default::default()
            },
        )?;
        let first = loaded
            .first()
            .ok_or_else(|| AppError::Usage("merge needs at least one input".into()))?;
        let to = output_format(&first.adapter, req.to)?;
        let (mut merged, modules) = self.merge_adapters(&loaded, &options)?;
        if to == Format::Kohya {
            note_merge(&mut merged, &file_stem(&req.output), &titles(&loaded));
        }
        let spec = OutputSpec {
            path: &req.output,
            format: to,
            base: req.base,
            quant: None,
        };
        let provenance: Vec<_> = loaded.iter().map(|l| l.provenance.clone()).collect();
        let (report, saved) = self.write_and_save(
            &merged,
            &spec,
            req.save.as_ref(),
            || recipe(&options),
            &provenance,
        )?;
        Ok(MergeOutcome {
            method: options.method,
            compat: options.compat_peft.then_some("peft"),
            weights: options.weights.clone(),
            inputs: req.inputs.iter().map(InputRef::label).collect(),
            output: req.output.display().to_string(),
            format: to,
            modules,
            params: merged.param_count(),
            bytes: report.bytes,
            saved,
        })
    }

    fn merge_adapters(
        &self,
        loaded: &[Loaded],
        options: &MergeOptions,
    ) -> Result<(Adapter, Vec<ModuleMerge>)> {
        let inputs: Vec<MergeInput> = loaded
            .iter()
            .map(|l| MergeInput {
                label: l.label.clone(),
                adapter: &l.adapter,
            })
            .collect();
        let modules_total = loaded
            .iter()
            .flat_map(|l| l.adapter.layers.keys())
            .collect::<BTreeSet<_>>()
            .len();
        let bar = self
            .observer()
            .progress("merging", modules_total as u64, Unit::Modules);
        let result = merge_with_progress(&inputs, options, &|| bar.advance(1));
        drop(bar);
        result.context("merging")
    }
}

fn file_stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The names sd-scripts lists inputs under in `modelspec.merged_from`: each input's title,
/// else its file name without extension.
fn titles(loaded: &[Loaded]) -> Vec<String> {
    loaded
        .iter()
        .map(|l| {
            l.adapter
                .meta
                .source_metadata
                .get("modelspec.title")
                .cloned()
                .unwrap_or_else(|| {
                    let stem = file_stem(Path::new(&l.label));
                    if stem.is_empty() {
                        l.label.clone()
                    } else {
                        stem
                    }
                })
        })
        .collect()
}

/// `sum, PEFT compat` or `sum`.
pub fn method_label(o: &MergeOptions) -> String {
    format!(
        "{}{}",
        o.method,
        if o.compat_peft { ", PEFT compat" } else { "" }
    )
}

fn recipe(o: &MergeOptions) -> Recipe {
    let weights: Vec<String> = o.weights.iter().map(|w| w.to_string()).collect();
    Recipe {
        operation: "merge",
        summary: format!("merge({}, weights {})", method_label(o), weights.join("/")),
        parameters: vec![
            ("method", o.method.to_string().into()),
            ("weights", o.weights.clone().into()),
            ("rank", o.rank.into()),
            ("conv_rank", o.conv_rank.into()),
            ("clamp_quantile", o.clamp_quantile.into()),
            ("density", o.density.into()),
            ("seed", o.seed.into()),
            ("compat_peft", o.compat_peft.into()),
        ],
    }
}
