//! Reading and writing adapters for commands: format detection, warnings, progress by bytes.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

use super::progress::bytes_bar;
use crate::adapter::detect::{detect_format, read_adapter_for_base};
use crate::adapter::gguf::GgufBase;
use crate::adapter::{diffusers, gguf, kohya, peft, Adapter, Format, ReadOptions};
use crate::io::WriteReport;
use crate::quant::QuantType;
use crate::registry::manifest::{Lineage, LineageInput};
use crate::registry::{adapter_files, files_digest, Digest, Materialised, Reference, Store};

/// Where an input adapter came from, for `--save` lineage.
#[derive(Clone, Debug)]
pub enum InputSource {
    /// A stored adapter, named by the reference the user gave.
    Store { reference: String, digest: Digest },
    /// A path outside the store.
    Path(PathBuf),
}

/// An input resolved to something the readers can open. A stored adapter is laid out in a
/// temp directory inside the store, removed when this is dropped (the readers memory-map the
/// files, and the mappings outlive the directory).
pub struct ResolvedInput {
    pub path: PathBuf,
    /// The stored adapter's format, when it came from the store.
    pub format: Option<Format>,
    pub source: InputSource,
    _materialised: Option<Materialised>,
}

/// Resolve an input argument: an existing path wins; otherwise a string with `:` or `@` is a
/// registry reference (`name:tag`, `name@sha256:<digest>`) looked up in the store.
pub fn resolve_input(path: &Path) -> Result<ResolvedInput> {
    let text = path.to_string_lossy();
    if let Some(remote) = crate::remote::RemoteRef::parse(&text) {
        return resolve_remote(&remote?);
    }
    if path.exists() || !(text.contains(':') || text.contains('@')) {
        return Ok(ResolvedInput {
            path: path.to_path_buf(),
            format: None,
            source: InputSource::Path(path.to_path_buf()),
            _materialised: None,
        });
    }
    let reference = Reference::parse(&text).with_context(|| {
        format!("{text} is not an existing file or directory, nor a registry reference")
    })?;
    resolve_reference(&reference)
}

/// Fetch an `hf://` input into the Hugging Face cache, or pull an `oci://` one into the store.
fn resolve_remote(remote: &crate::remote::RemoteRef) -> Result<ResolvedInput> {
    use crate::remote::resolve::{fetch_input, Fetched};
    let bars = super::remote_progress::Bars::default();
    let open = || Store::open(&Store::default_root()?);
    match fetch_input(remote, None, &open, &bars).with_context(|| format!("fetching {remote}"))? {
        Fetched::Local(local) => Ok(ResolvedInput {
            path: local.path.clone(),
            format: None,
            source: InputSource::Path(local.path),
            _materialised: None,
        }),
        Fetched::Stored { reference, .. } => resolve_reference(&reference),
    }
}

/// Lay out a stored adapter for reading.
pub fn resolve_reference(reference: &Reference) -> Result<ResolvedInput> {
    let store = super::registry::open_store()?;
    let resolved = store.resolve(reference)?;
    let m = store
        .materialise(&resolved)
        .with_context(|| format!("reading {reference} from the store"))?;
    Ok(ResolvedInput {
        path: m.read_path.clone(),
        format: m.format,
        source: InputSource::Store {
            reference: reference.to_string(),
            digest: resolved.digest,
        },
        _materialised: Some(m),
    })
}

/// Read an adapter (format detected unless `from`), printing the reader's warnings. `base`
/// is what a llama-arch GGUF adapter needs to undo its q/k permutation. `path` may be a
/// registry reference (see [`resolve_input`]).
pub fn read_input(
    path: &Path,
    from: Option<Format>,
    skip_unknown: bool,
    base: Option<&GgufBase>,
) -> Result<Adapter> {
    read_input_traced(path, from, skip_unknown, base).map(|(a, _)| a)
}

/// [`read_input`], also saying where the adapter came from.
pub fn read_input_traced(
    path: &Path,
    from: Option<Format>,
    skip_unknown: bool,
    base: Option<&GgufBase>,
) -> Result<(Adapter, InputSource)> {
    let input = resolve_input(path)?;
    read_resolved(&input, from, skip_unknown, base).map(|a| (a, input.source.clone()))
}

/// Read a resolved input.
pub fn read_resolved(
    input: &ResolvedInput,
    from: Option<Format>,
    skip_unknown: bool,
    base: Option<&GgufBase>,
) -> Result<Adapter> {
    let shown = match &input.source {
        InputSource::Store { reference, .. } => reference.clone(),
        InputSource::Path(p) => p.display().to_string(),
    };
    let adapter = read_adapter_for_base(
        &input.path,
        from.or(input.format),
        ReadOptions { skip_unknown },
        base,
    )
    .with_context(|| format!("reading {shown}"))?;
    super::print_warnings(&adapter.meta.warnings);
    Ok(adapter)
}

/// What `--save` records about the operation that wrote an output.
pub struct SaveOp<'a> {
    pub operation: &'a str,
    pub summary: String,
    pub parameters: Vec<(&'a str, serde_json::Value)>,
    pub inputs: &'a [InputSource],
}

/// `--save name:tag`: add the written `output` to the store with its lineage.
pub fn save_output(
    save: Option<&str>,
    output: &Path,
    to: Option<Format>,
    op: SaveOp<'_>,
) -> Result<()> {
    let Some(save) = save else {
        return Ok(());
    };
    let reference = Reference::parse_with_default(save, Some("latest"))?;
    let mut inputs = Vec::new();
    for source in op.inputs {
        inputs.push(match source {
            InputSource::Store { reference, digest } => LineageInput {
                kind: "manifest".into(),
                digest: digest.to_string(),
                source: reference.clone(),
            },
            InputSource::Path(p) => {
                let format = detect_format(p).ok().unwrap_or(Format::Kohya);
                let files = adapter_files(p, format)
                    .with_context(|| format!("hashing the input {} for lineage", p.display()))?;
                LineageInput {
                    kind: "files".into(),
                    digest: files_digest(&files)?.to_string(),
                    source: p.display().to_string(),
                }
            }
        });
    }
    let lineage = Lineage {
        operation: op.operation.to_string(),
        summary: op.summary,
        parameters: op
            .parameters
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        inputs,
    };
    let store = super::registry::open_store()?;
    let digest = store
        .add_path(output, &reference, to, Some(lineage))
        .with_context(|| format!("saving {} as {reference}", output.display()))?;
    eprintln!("saved {reference} {digest}");
    Ok(())
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
