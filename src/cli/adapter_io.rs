//! Reading and writing adapters for commands: format detection, warnings, progress by bytes.

use anyhow::{bail, Context, Result};
use std::path::Path;

use super::progress::bytes_bar;
use crate::adapter::detect::read_adapter_for_base;
use crate::adapter::gguf::GgufBase;
use crate::adapter::{diffusers, gguf, kohya, peft, Adapter, Format, ReadOptions};
use crate::io::WriteReport;
use crate::quant::QuantType;

/// Read an adapter (format detected unless `from`), printing the reader's warnings. `base`
/// is what a llama-arch GGUF adapter needs to undo its q/k permutation.
pub fn read_input(
    path: &Path,
    from: Option<Format>,
    skip_unknown: bool,
    base: Option<&GgufBase>,
) -> Result<Adapter> {
    let adapter = read_adapter_for_base(path, from, ReadOptions { skip_unknown }, base)
        .with_context(|| format!("reading {}", path.display()))?;
    super::print_warnings(&adapter.meta.warnings);
    Ok(adapter)
}

/// The format to write: `to`, else the format the adapter was read from.
pub fn output_format(adapter: &Adapter, to: Option<Format>) -> Result<Format> {
    to.or(adapter.meta.source_format)
        .context("cannot tell the output format; pass --to")
}

/// Load `--base` when given.
pub fn load_base(base: Option<&Path>) -> Result<Option<GgufBase>> {
    base.map(|p| {
        GgufBase::load(p).with_context(|| format!("reading the base model {}", p.display()))
    })
    .transpose()
}

/// Where and how to write: GGUF needs the base model and may store block-quantized factors.
#[derive(Default, Clone, Copy)]
pub struct GgufTarget<'a> {
    pub base: Option<&'a GgufBase>,
    pub dtype: Option<QuantType>,
}

impl<'a> GgufTarget<'a> {
    /// The base only; factors keep their float type.
    pub fn with_base(base: Option<&'a GgufBase>) -> Self {
        GgufTarget { base, dtype: None }
    }
}

/// Write `adapter` in `to` format, with a progress bar by bytes (GGUF needs `target.base`).
pub fn write_output(
    adapter: &Adapter,
    to: Format,
    output: &Path,
    target: GgufTarget<'_>,
) -> Result<WriteReport> {
    if to == Format::Kohya && output.is_dir() {
        bail!(
            "{} is a directory; kohya output is one .safetensors file (e.g. -o {}/lora.safetensors)",
            output.display(),
            output.display()
        );
    }
    let total: u64 = adapter
        .layers
        .values()
        .map(|l| (l.param_count() * l.dtype().size()) as u64)
        .sum();
    let bar = bytes_bar(total, "writing");
    let progress = |n: u64| bar.inc(n);
    let report = match to {
        Format::Peft => peft::write(adapter, output, &progress),
        Format::Kohya => kohya::write(adapter, output, &progress),
        Format::Diffusers => diffusers::write(adapter, output, &progress),
        Format::Gguf => match target.base {
            Some(base) => gguf::write(adapter, base, output, target.dtype, &progress),
            None => bail!(
                "writing a llama.cpp GGUF adapter needs the base model's config.json or GGUF (names, head counts, tied embeddings): use `loratool convert <adapter> --to gguf --base <config.json|model.gguf> -o <out.gguf>`"
            ),
        },
    };
    bar.finish_and_clear();
    report.with_context(|| format!("writing {} as {to}", output.display()))
}
