//! `loratool convert`: arguments and rendering; the work is `app::convert`.

use super::args::{named, storage_type, BaseArg, JsonArg, ReadArgs, SaveArgs};
use super::fmt::human_bytes;
use crate::adapter::Format;
use crate::app::convert::ConvertRequest;
use crate::app::input::load_base;
use crate::app::{InputRef, Session};
use crate::quant::QuantType;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct ConvertArgs {
    /// Input adapter: PEFT directory, diffusers or kohya .safetensors file, llama.cpp .gguf, or
    /// a registry reference (name:tag).
    pub input: PathBuf,
    /// Output format: peft (transformers models), diffusers (SD pipelines' load_lora_weights),
    /// kohya (sd-scripts, ComfyUI, A1111), gguf (llama.cpp, Ollama; needs --base).
    #[arg(long, value_parser = named::<Format>())]
    pub to: Format,
    /// Output path: a directory for peft; a .safetensors file for kohya; a directory or a
    /// .safetensors file for diffusers; a .gguf file for gguf.
    #[arg(short, long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub base: BaseArg,
    /// Store the factors in this dtype: f32, f16, bf16, or q8_0 for gguf (rows whose length is
    /// not a multiple of 32 fall back to f16, as llama.cpp's converter does). Default: as read.
    #[arg(long, value_parser = storage_type)]
    pub dtype: Option<QuantType>,
    #[command(flatten)]
    pub read: ReadArgs,
    #[command(flatten)]
    pub json: JsonArg,
    #[command(flatten)]
    pub save: SaveArgs,
}

pub fn run(session: &Session<'_>, args: ConvertArgs) -> Result<()> {
    let base = load_base(args.base.base.as_deref())?;
    let outcome = session.convert(&ConvertRequest {
        input: InputRef::from_path(&args.input)?,
        from: args.read.from,
        to: args.to,
        output: args.output,
        base: base.as_ref(),
        dtype: args.dtype,
        skip_unknown: args.read.skip_unknown,
        save: args.save.reference()?,
    })?;
    super::print_saved(outcome.saved.as_ref());
    if args.json.json {
        return super::print_json(&outcome);
    }
    if super::quiet() {
        return Ok(());
    }
    println!(
        "converted {} modules {} → {}: {} ({} tensors, {})",
        outcome.modules,
        outcome.from,
        outcome.to,
        outcome.output,
        outcome.tensors,
        human_bytes(outcome.bytes)
    );
    Ok(())
}
