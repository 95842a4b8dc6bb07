//! `convert`: read an adapter in one format, write it in another.

use super::error::{AppError, Result};
use super::input::{InputRef, LoadOptions};
use super::output::OutputSpec;
use super::session::Session;
use super::store::{Recipe, Saved};
use crate::adapter::gguf::GgufBase;
use crate::adapter::Format;
use crate::quant::QuantType;
use crate::registry::Reference;
use serde::Serialize;
use std::path::PathBuf;

pub struct ConvertRequest<'a> {
    pub input: InputRef,
    /// Read as this format instead of detecting it.
    pub from: Option<Format>,
    pub to: Format,
    pub output: PathBuf,
    /// The base model (needed to write GGUF and to read llama-arch GGUF).
    pub base: Option<&'a GgufBase>,
    /// Storage type of the factors: a float type for every format, `q8_0` for GGUF.
    pub dtype: Option<QuantType>,
    pub skip_unknown: bool,
    pub save: Option<Reference>,
}

#[derive(Debug, Serialize)]
pub struct ConvertOutcome {
    pub input: String,
    pub from: Format,
    pub output: String,
    pub to: Format,
    pub modules: usize,
    pub tensors: usize,
    pub bytes: u64,
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved: Option<Saved>,
}

impl Session<'_> {
    pub fn convert(&self, req: &ConvertRequest<'_>) -> Result<ConvertOutcome> {
        let loaded = self.load(
            &req.input,
            &LoadOptions {
                from: req.from,
                skip_unknown: req.skip_unknown,
                base: req.base,
                layout_only: false,
            },
        )?;
        let mut adapter = loaded.adapter;
        // GGUF stores the type per tensor (q8_0 included); the other formats take a cast
        let quant = match (req.to, req.dtype) {
            (Format::Gguf, q) => q,
            (_, Some(q)) => {
                let float = q.float_dtype().ok_or_else(|| {
                    AppError::Usage(format!(
                        "--dtype {q} applies to --to gguf only (the {} format stores float factors)",
                        req.to
                    ))
                })?;
                adapter = adapter.cast(float)?;
                None
            }
            (_, None) => None,
        };
        let spec = OutputSpec {
            path: &req.output,
            format: req.to,
            base: req.base,
            quant,
        };
        let recipe = || {
            let dtype = req.dtype.map(|d| d.name());
            Recipe {
                operation: "convert",
                summary: match dtype {
                    Some(d) => format!("convert(to {}, dtype {d})", req.to),
                    None => format!("convert(to {})", req.to),
                },
                parameters: vec![("to", req.to.to_string().into()), ("dtype", dtype.into())],
            }
        };
        let (report, saved) = self.write_and_save(
            &adapter,
            &spec,
            req.save.as_ref(),
            recipe,
            std::slice::from_ref(&loaded.provenance),
        )?;
        Ok(ConvertOutcome {
            input: req.input.label(),
            from: loaded.format,
            output: req.output.display().to_string(),
            to: req.to,
            modules: adapter.layers.len(),
            tensors: report.tensors,
            bytes: report.bytes,
            warnings: adapter.meta.warnings.clone(),
            saved,
        })
    }
}
