//! `quantize`: re-encode a GGUF model or adapter as llama-quantize does (one ggml type, or a
//! preset's per-tensor mixture), optionally with an importance matrix.

use super::error::{Result, ResultExt};
use super::input::InputRef;
use super::session::{Session, Unit};
use super::store::{Recipe, Saved};
use crate::adapter::Format;
use crate::io::gguf::GgufFile;
use crate::io::imatrix::ImportanceMatrix;
use crate::ops::gguf_quantize::{quantize_gguf, Imatrix, QuantizeOptions, TensorQuant};
use crate::ops::quant_preset::QuantTarget;
use crate::registry::Reference;
use serde::Serialize;
use std::path::PathBuf;

pub struct QuantizeRequest {
    pub input: InputRef,
    /// One type for every quantizable tensor, or a llama-quantize preset.
    pub target: QuantTarget,
    /// Re-quantize tensors that are already block-quantized (precision loss compounds).
    pub allow_requantize: bool,
    /// An importance matrix from llama-imatrix (GGUF or legacy `.dat`).
    pub imatrix: Option<PathBuf>,
    pub output: PathBuf,
    /// Add the output (a GGUF adapter) to the store.
    pub save: Option<Reference>,
}

#[derive(Debug, Serialize)]
pub struct QuantizeOutcome {
    pub input: String,
    pub output: String,
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imatrix: Option<String>,
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
        let matrix = match &req.imatrix {
            Some(p) => Some(
                ImportanceMatrix::open(p)
                    .with_context(|| format!("reading importance matrix {}", p.display()))?,
            ),
            None => None,
        };
        // Recorded as `quantize.imatrix.file`, as llama-quantize records the path it was given.
        let imatrix_file = req.imatrix.as_ref().map(|p| p.display().to_string());
        let options = QuantizeOptions {
            target: req.target,
            allow_requantize: req.allow_requantize,
            imatrix: matrix
                .as_ref()
                .zip(imatrix_file.as_deref())
                .map(|(matrix, file)| Imatrix { matrix, file }),
        };
        let total: u64 = file.tensors.values().map(|t| t.byte_len).sum();
        let bar = self.observer().progress("quantizing", total, Unit::Bytes);
        let result = quantize_gguf(&file, &req.output, options, &|n| bar.advance(n));
        drop(bar);
        let tensors = result.with_context(|| format!("quantizing {}", located.label))?;
        let target = req.target.name();
        let saved = match &req.save {
            Some(r) => Some(self.save(
                &req.output,
                Format::Gguf,
                r,
                Recipe {
                    operation: "quantize",
                    summary: format!("quantize({target})"),
                    parameters: vec![
                        ("type", target.clone().into()),
                        ("allow_requantize", req.allow_requantize.into()),
                    ],
                },
                std::slice::from_ref(&located.provenance),
            )?),
            None => None,
        };
        Ok(QuantizeOutcome {
            input: located.label.clone(),
            output: req.output.display().to_string(),
            target,
            imatrix: imatrix_file,
            bytes_before: std::fs::metadata(&located.path).map_or(0, |m| m.len()),
            bytes_after: std::fs::metadata(&req.output).map_or(0, |m| m.len()),
            tensors,
            saved,
        })
    }
}
