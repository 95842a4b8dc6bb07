//! The `loratool` command line: argument parsing, exit codes, progress and output.
//! Exit codes: 0 success, 1 runtime error, 2 usage error.

mod adapter_io;
mod bake;
mod convert;
mod extract;
mod fmt;
mod info;
mod info_gguf;
mod merge;
mod progress;
mod pull;
mod push;
mod quantize;
mod registry;
mod remote_progress;
mod resize;

use clap::{Parser, Subcommand};
use std::io::Write;

#[derive(Parser)]
#[command(
    name = "loratool",
    version,
    about = "Inspect, convert and transform LoRA adapters (PEFT, diffusers, kohya) exactly and fast",
    after_help = "Exit codes: 0 success, 1 error while running, 2 bad command line."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Describe an adapter or a base model from its header (instant on multi-GB files).
    Info(info::InfoArgs),
    /// Convert an adapter between PEFT, diffusers and kohya formats.
    Convert(convert::ConvertArgs),
    /// Lower an adapter's rank per module (fixed, or chosen from singular values).
    Resize(resize::ResizeArgs),
    /// Merge several adapters into one (exact weighted sum, sd-scripts svd, TIES, DARE, ...).
    Merge(merge::MergeArgs),
    /// Re-encode a GGUF model or adapter to one ggml type (bit-exact with ggml's quantizers).
    Quantize(quantize::QuantizeArgs),
    /// Add adapters into a GGUF base model's weights (quantized bases stay quantized).
    Bake(bake::BakeArgs),
    /// Extract a LoRA from the difference between a fine-tuned model and its base.
    Extract(extract::ExtractArgs),
    /// Store an adapter in the local registry under namespace/name:tag.
    Add(registry::AddArgs),
    /// List the stored adapters.
    List(registry::ListArgs),
    /// Show a stored adapter: metadata, files, lineage.
    Show(registry::ShowArgs),
    /// Give a stored adapter another name:tag.
    Tag(registry::TagArgs),
    /// Remove a tag (the blobs stay until gc).
    Rm(registry::RmArgs),
    /// Delete blobs no tag reaches.
    Gc(registry::GcArgs),
    /// Re-hash every blob and check every tag; exits 1 on any damage.
    Verify(registry::VerifyArgs),
    /// Copy a stored adapter's files out, or convert it.
    Export(registry::ExportArgs),
    /// Upload an adapter to the Hugging Face Hub (hf://) or an OCI registry (oci://).
    Push(push::PushArgs),
    /// Download an adapter from the Hugging Face Hub (hf://) or an OCI registry (oci://).
    Pull(pull::PullArgs),
}

/// Parse the command line, run the command, and return the process exit code.
pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    // loratool parallelises over modules, rows and tensors with rayon; faer's own threads inside
    // each small per-module kernel would only oversubscribe the same cores
    faer::set_global_parallelism(faer::Par::Seq);
    let result = match cli.command {
        Command::Info(a) => info::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Resize(a) => resize::run(a),
        Command::Merge(a) => merge::run(a),
        Command::Quantize(a) => quantize::run(a),
        Command::Bake(a) => bake::run(a),
        Command::Extract(a) => extract::run(a),
        Command::Add(a) => registry::add(a),
        Command::List(a) => registry::list(a),
        Command::Show(a) => registry::show(a),
        Command::Tag(a) => registry::tag(a),
        Command::Rm(a) => registry::rm(a),
        Command::Gc(a) => registry::gc(a),
        Command::Verify(a) => registry::verify(a),
        Command::Export(a) => registry::export(a),
        Command::Push(a) => push::run(a),
        Command::Pull(a) => pull::run(a),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "error: {e}");
            for cause in e.chain().skip(1) {
                let _ = writeln!(err, "  caused by: {cause}");
            }
            1
        }
    }
}

/// Print warnings a reader collected.
fn print_warnings(warnings: &[String]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}
