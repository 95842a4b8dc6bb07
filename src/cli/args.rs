//! Argument groups several commands share (flattened into their `Args`), and the value
//! parsers that turn text into library types. Names and help of enum values come from the
//! library's [`Named`] lists.

use crate::adapter::Format;
use crate::named::Named;
use crate::quant::QuantType;
use crate::tensor::DType;
use clap::builder::{PossibleValue, TypedValueParser};
use clap::Args;
use std::path::PathBuf;

/// A value parser for a [`Named`] enum: its names and aliases, with their help in `--help`
/// and completions, and the library's message for an unknown value.
pub fn named<T: Named + Send + Sync + Clone>() -> NamedParser<T> {
    NamedParser(std::marker::PhantomData)
}

#[derive(Clone)]
pub struct NamedParser<T>(std::marker::PhantomData<T>);

impl<T: Named + Send + Sync + Clone> TypedValueParser for NamedParser<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        let text = value.to_string_lossy();
        T::parse_or_explain(&text).map_err(|message| {
            let arg = arg.map_or_else(|| "value".to_string(), |a| a.to_string());
            clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                format!("invalid value for {arg}: {message}\n"),
            )
            .with_cmd(cmd)
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(T::VARIANTS.iter().map(|v| {
            PossibleValue::new(v.name)
                .aliases(v.aliases.iter().copied())
                .help(v.help)
        })))
    }
}

/// A factor dtype: f32, f16 or bf16 (and their usual spellings).
pub fn float_dtype(s: &str) -> Result<DType, String> {
    match DType::parse_user(s) {
        Some(d @ (DType::F32 | DType::F16 | DType::BF16)) => Ok(d),
        _ => Err(format!(
            "unsupported dtype '{s}' (expected f32, f16 or bf16)"
        )),
    }
}

/// A storage type: a float dtype, or q8_0 (GGUF only).
pub fn storage_type(s: &str) -> Result<QuantType, String> {
    if s.eq_ignore_ascii_case("q8_0") {
        return Ok(QuantType::Q8_0);
    }
    float_dtype(s)
        .map(QuantType::from_float)
        .map_err(|_| format!("unsupported dtype '{s}' (expected f32, f16, bf16, or q8_0 for gguf)"))
}

/// How an adapter input is read.
#[derive(Args, Clone, Debug, Default)]
pub struct ReadArgs {
    /// Read the input as this format instead of detecting it.
    #[arg(long, value_parser = named::<Format>())]
    pub from: Option<Format>,
    /// Drop keys loratool cannot represent (LyCORIS, unmapped names) with a warning instead of
    /// failing.
    #[arg(long)]
    pub skip_unknown: bool,
}

/// The base model a GGUF adapter needs.
#[derive(Args, Clone, Debug, Default)]
pub struct BaseArg {
    /// The base model, for GGUF adapters in or out: its Hugging Face config.json (or the
    /// directory holding it) or its GGUF file (then every module's shape is checked against
    /// it). Required to write GGUF, and to read a llama-arch GGUF adapter (its q/k rows are
    /// RoPE-permuted).
    #[arg(long)]
    pub base: Option<PathBuf>,
}

/// Where an adapter output goes and in which format.
#[derive(Args, Clone, Debug)]
pub struct OutputArgs {
    /// Output path: a directory for peft; a .safetensors file for kohya; a directory or a
    /// .safetensors file for diffusers; a .gguf file for gguf.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Output format (default: the (first) input's).
    #[arg(long, value_parser = named::<Format>())]
    pub to: Option<Format>,
}

/// Saving an output to the store.
#[derive(Args, Clone, Debug, Default)]
pub struct SaveArgs {
    /// Also add the output to the adapter store as name:tag, with its lineage.
    #[arg(long, value_name = "NAME:TAG")]
    pub save: Option<String>,
}

impl SaveArgs {
    pub fn reference(&self) -> anyhow::Result<Option<crate::registry::Reference>> {
        Ok(self
            .save
            .as_deref()
            .map(crate::app::store::parse_save)
            .transpose()?)
    }
}

/// `--json`.
#[derive(Args, Clone, Copy, Debug, Default)]
pub struct JsonArg {
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `--table` (`-v`): the full per-module table instead of the summary and the few modules that
/// need attention.
#[derive(Args, Clone, Copy, Debug, Default)]
pub struct TableArg {
    /// Print the full per-module table (default: a summary and the modules that need
    /// attention).
    #[arg(long, short = 'v', visible_alias = "verbose")]
    pub table: bool,
}
