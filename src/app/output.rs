//! Writing an adapter in a format (saving it to the store is `store`'s).

use super::error::{AppError, Result, ResultExt};
use super::session::{Session, Unit};
use crate::adapter::codec::{write_adapter, WriteContext};
use crate::adapter::gguf::GgufBase;
use crate::adapter::{Adapter, Format};
use crate::io::WriteReport;
use crate::quant::QuantType;
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
}
