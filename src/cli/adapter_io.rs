//! Reading and writing adapters for commands: format detection, warnings, progress by bytes.

use anyhow::{bail, Context, Result};
use std::path::Path;

use super::progress::bytes_bar;
use crate::adapter::detect::read_adapter;
use crate::adapter::{diffusers, kohya, peft, Adapter, Format, ReadOptions};
use crate::io::WriteReport;

/// Read an adapter (format detected unless `from`), printing the reader's warnings.
pub fn read_input(path: &Path, from: Option<Format>, skip_unknown: bool) -> Result<Adapter> {
    let adapter = read_adapter(path, from, ReadOptions { skip_unknown })
        .with_context(|| format!("reading {}", path.display()))?;
    super::print_warnings(&adapter.meta.warnings);
    Ok(adapter)
}

/// The format to write: `to`, else the format the adapter was read from.
pub fn output_format(adapter: &Adapter, to: Option<Format>) -> Result<Format> {
    to.or(adapter.meta.source_format)
        .context("cannot tell the output format; pass --to")
}

/// Write `adapter` in `to` format, with a progress bar by bytes.
pub fn write_output(adapter: &Adapter, to: Format, output: &Path) -> Result<WriteReport> {
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
    };
    bar.finish_and_clear();
    report.with_context(|| format!("writing {} as {to}", output.display()))
}
