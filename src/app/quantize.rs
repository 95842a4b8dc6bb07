//! `quantize`: re-encode a GGUF model or adapter to one ggml type.

use super::error::{Result, ResultExt};
use super::input::InputRef;
use super::session::{Session, Unit};
use super::store::{Recipe, Saved};
use crate::adapter::Format;
use crate::io::gguf::GgufFile;
use crate::ops::gguf_quantize::{quantize_gguf, QuantizeOptions, TensorQuant};
use crate::registry::Reference;
use serde::Serialize;
use std::path::PathBuf;

pub struct QuantizeRequest {
    pub input: InputRef,
    pub options: QuantizeOptions,
    pub output: PathBuf,
    /// Add the output (a GGUF adapter) to the store.
    pub save: Option<Reference>,
}

#[derive(Debug, Serialize)]
pub struct QuantizeOutcome {
    pub input: String,
    pub output: String,
    pub target: &'static str,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub tensors: Vec<TensorQuant>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved: Option<Saved>,
}

impl Session<'_> {
    pub fn quantize(&self, req: &QuantizeRequest) -> Result<QuantizeOutcome> {
        let located = self.locate(&req.input)?;
        let file =
            GgufFile::open(&located.path).with_context(|| format!("reading {}", located.label))?;
        let total: u64 = file.tensors.values().map(|t| t.byte_len).sum();
        let bar = self.observer().progress("quantizing", total, Unit::Bytes);
        let result = quantize_gguf(&file, &req.output, req.options, &|n| bar.advance(n));
        drop(bar);
        let tensors = result.with_context(|| format!("quantizing {}", located.label))?;
        let target = req.options.target;
        let saved = match &req.save {
            Some(r) => Some(self.save(
                &req.output,
                Format::Gguf,
                r,
                Recipe {
                    operation: "quantize",
                    summary: format!("quantize({})", target.name()),
                    parameters: vec![
                        ("type", target.name().into()),
                        ("allow_requantize", req.options.allow_requantize.into()),
                    ],
                },
                std::slice::from_ref(&located.provenance),
            )?),
            None => None,
        };
        Ok(QuantizeOutcome {
            input: located.label.clone(),
            output: req.output.display().to_string(),
            target: target.name(),
            bytes_before: std::fs::metadata(&located.path).map_or(0, |m| m.len()),
            bytes_after: std::fs::metadata(&req.output).map_or(0, |m| m.len()),
            tensors,
            saved,
        })
    }
}
