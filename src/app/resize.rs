//! `resize`: lower an adapter's rank per module, from its factors.

use super::error::{Result, ResultExt};
use super::input::{InputRef, LoadOptions};
use super::output::{output_format, OutputSpec};
use super::session::{Session, Unit};
use super::store::{Recipe, Saved};
use crate::adapter::gguf::GgufBase;
use crate::adapter::kohya::{note_resize, ResizeNote};
use crate::adapter::{Adapter, Format};
use crate::ops::resize::{resize_with_progress, ModuleResize, ResizeOptions};
use crate::registry::Reference;
use crate::tensor::DType;
use serde::Serialize;
use std::path::PathBuf;

pub struct ResizeRequest<'a> {
    pub input: InputRef,
    pub from: Option<Format>,
    pub skip_unknown: bool,
    /// The base model, for GGUF adapters in or out.
    pub base: Option<&'a GgufBase>,
    pub options: ResizeOptions,
    /// Factor dtype of the output (default: as read).
    pub dtype: Option<DType>,
    pub output: PathBuf,
    /// Output format (default: the input's).
    pub to: Option<Format>,
    pub save: Option<Reference>,
}

#[derive(Debug, Serialize)]
pub struct ResizeSummary {
    pub modules: usize,
    pub old_params: usize,
    pub new_params: usize,
    pub mean_fro_retained: f64,
    pub min_fro_retained: f64,
    pub max_rel_error: f64,
    pub output: String,
    pub format: Format,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct ResizeOutcome {
    pub modules: Vec<ModuleResize>,
    pub summary: ResizeSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved: Option<Saved>,
}

impl Session<'_> {
    pub fn resize(&self, req: &ResizeRequest<'_>) -> Result<ResizeOutcome> {
        let loaded = self.load(
            &req.input,
            &LoadOptions {
                from: req.from,
                skip_unknown: req.skip_unknown,
                base: req.base,
                layout_only: false,
            },
        )?;
        let adapter = &loaded.adapter;
        let to = output_format(adapter, req.to)?;
        let (resized, modules) = self.resize_adapter(adapter, req)?;
        let spec = OutputSpec {
            path: &req.output,
            format: to,
            base: req.base,
            quant: None,
        };
        let (report, saved) = self.write_and_save(
            &resized,
            &spec,
            req.save.as_ref(),
            || recipe(&req.options),
            std::slice::from_ref(&loaded.provenance),
        )?;
        let summary = summarise(&modules, adapter, &resized, &req.output, to, report.bytes);
        Ok(ResizeOutcome {
            modules,
            summary,
            saved,
        })
    }

    /// The resize itself, with module progress, the dtype cast and kohya's `ss_*` notes.
    fn resize_adapter(
        &self,
        adapter: &Adapter,
        req: &ResizeRequest<'_>,
    ) -> Result<(Adapter, Vec<ModuleResize>)> {
        let bar = self
            .observer()
            .progress("resizing", adapter.layers.len() as u64, Unit::Modules);
        let result = resize_with_progress(adapter, &req.options, &|| bar.advance(1));
        drop(bar);
        let (mut resized, modules) = result.context("resizing")?;
        if let Some(d) = req.dtype {
            resized = resized.cast(d).context("casting the factors")?;
        }
        let to = output_format(adapter, req.to)?;
        if to == Format::Kohya && resized.meta.source_format == Some(Format::Kohya) {
            let o = &req.options;
            let note = match o.rule.method() {
                None => ResizeNote::Fixed {
                    new_rank: o.rank,
                    new_conv_rank: o.conv_rank.unwrap_or(o.rank),
                },
                Some((m, param)) => ResizeNote::Dynamic {
                    method: crate::named::Named::name(m),
                    param,
                },
            };
            let old_dim = adapter.layers.values().map(|l| l.rank()).max().unwrap_or(0);
            note_resize(&mut resized, old_dim, note);
        }
        Ok((resized, modules))
    }
}

fn recipe(o: &ResizeOptions) -> Recipe {
    let method = o.rule.method();
    Recipe {
        operation: "resize",
        summary: match method {
            Some((m, p)) => format!("resize({m} {p}, max rank {})", o.rank),
            None => format!("resize(rank {})", o.rank),
        },
        parameters: vec![
            ("rank", o.rank.into()),
            ("conv_rank", o.conv_rank.into()),
            ("method", method.map(|(m, _)| m.to_string()).into()),
            ("param", method.map(|(_, p)| p).into()),
            ("alpha", o.alpha.into()),
        ],
    }
}

fn summarise(
    modules: &[ModuleResize],
    before: &Adapter,
    after: &Adapter,
    output: &std::path::Path,
    format: Format,
    bytes: u64,
) -> ResizeSummary {
    let fro: Vec<f64> = modules
        .iter()
        .map(|m| m.fro_retained)
        .filter(|x| x.is_finite())
        .collect();
    ResizeSummary {
        modules: modules.len(),
        old_params: before.param_count(),
        new_params: after.param_count(),
        mean_fro_retained: fro.iter().sum::<f64>() / (fro.len().max(1) as f64),
        min_fro_retained: fro.iter().copied().fold(f64::INFINITY, f64::min),
        max_rel_error: modules.iter().map(|m| m.rel_error).fold(0.0, f64::max),
        output: output.display().to_string(),
        format,
        bytes,
    }
}
