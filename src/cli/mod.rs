//! The `loratool` command line: parses arguments into `app` requests, calls `app`, renders
//! outcomes as text or JSON, draws progress, and maps errors to exit codes (0 success,
//! 1 runtime error, 2 usage error) with the flag that fixes them. It holds no logic a
//! library user would need.
//!
//! One file per command group: `info`, `convert`, `resize` (with the rank arguments extract
//! shares), `check`, `merge`, `quantize`, `bake`, `extract`, `registry` (add, list, show, tag, rm, gc,
//! verify, export), `push`, `pull`, `docs` (completions, man pages); `args` holds shared argument groups and value parsers, `progress` the
//! terminal observer, `fmt` number formatting.

mod args;
mod bake;
mod check;
mod convert;
mod docs;
mod extract;
mod fmt;
mod info;
mod merge;
mod progress;
mod pull;
mod push;
mod quantize;
mod registry;
mod resize;

use crate::app::{AppError, Saved, Session};
use clap::{Parser, Subcommand};
use std::io::Write;

#[derive(Parser)]
#[command(
    name = "loratool",
    version,
    about = "Inspect, convert, resize, merge, bake, extract and quantize LoRA adapters (PEFT, diffusers, kohya, llama.cpp GGUF) exactly and fast",
    after_help = "Exit codes: 0 success, 1 error while running, 2 bad command line.\nOutput: reports on stdout, warnings and progress on stderr (progress bars only when stderr is a terminal); NO_COLOR is honoured; --json output is described in docs/json.md."
)]
struct Cli {
    /// Print nothing but errors and warnings (and --json output): no report, no progress bars.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether `--quiet` was given: commands skip their text report.
fn quiet() -> bool {
    QUIET.load(std::sync::atomic::Ordering::Relaxed)
}

#[derive(Subcommand)]
enum Command {
    /// Describe an adapter or a base model from its header (instant on multi-GB files).
    Info(info::InfoArgs),
    /// Find what is wrong with an adapter (NaN/Inf, zero or rank-deficient modules, duplicate
    /// or unplaceable keys, stale kohya hashes, PEFT config disagreements, and with --base
    /// shapes against the base model). Exit 0 clean, 1 problems found, 2 unusable input.
    Check(check::CheckArgs),
    /// Convert an adapter between the PEFT, diffusers, kohya and llama.cpp GGUF formats.
    Convert(convert::ConvertArgs),
    /// Lower an adapter's rank per module (fixed, or chosen from singular values).
    Resize(resize::ResizeArgs),
    /// Merge several adapters into one (exact weighted sum, sd-scripts svd, TIES, DARE, ...).
    Merge(merge::MergeArgs),
    /// Re-encode a GGUF model or adapter to one ggml type (bit-exact with ggml's quantizers).
    Quantize(quantize::QuantizeArgs),
    /// Add adapters into a base model's weights: a GGUF model (quantized bases stay quantized),
    /// a Hugging Face model directory, a diffusers pipeline or a single-file SD checkpoint.
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
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    Completions(docs::CompletionsArgs),
    /// Print the man page (roff), or write one page per command into a directory.
    Man(docs::ManArgs),
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
    QUIET.store(cli.quiet, std::sync::atomic::Ordering::Relaxed);
    let terminal = progress::Terminal::new(cli.quiet);
    let session = Session::new().with_observer(&terminal);
    let result = match cli.command {
        Command::Info(a) => info::run(&session, a),
        Command::Check(a) => {
            // 1 means "problems found", so an input that cannot be checked at all is a 2
            return match check::run(&session, a) {
                Ok(clean) => i32::from(!clean),
                Err(e) => {
                    report_error(&e);
                    2
                }
            };
        }
        Command::Convert(a) => convert::run(&session, a),
        Command::Resize(a) => resize::run(&session, a),
        Command::Merge(a) => merge::run(&session, a),
        Command::Quantize(a) => quantize::run(&session, a),
        Command::Bake(a) => bake::run(&session, a),
        Command::Extract(a) => extract::run(&session, a),
        Command::Add(a) => registry::add(&session, a),
        Command::List(a) => registry::list(&session, a),
        Command::Show(a) => registry::show(&session, a),
        Command::Tag(a) => registry::tag(&session, a),
        Command::Rm(a) => registry::rm(&session, a),
        Command::Gc(a) => registry::gc(&session, a),
        Command::Verify(a) => registry::verify(&session, a),
        Command::Export(a) => registry::export(&session, a),
        Command::Push(a) => push::run(&session, a),
        Command::Pull(a) => pull::run(&session, a),
        Command::Completions(a) => docs::completions(a),
        Command::Man(a) => docs::man(a),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            report_error(&e);
            1
        }
    }
}

/// Print an error, its causes, and the flag that fixes it when there is one.
fn report_error(e: &anyhow::Error) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "error: {}", shown(e.as_ref()));
    for cause in e.chain().skip(1) {
        let _ = writeln!(err, "  caused by: {}", shown(cause));
    }
    if let Some(hint) = e.chain().find_map(as_app).and_then(hint) {
        let _ = writeln!(err, "  hint: {hint}");
    }
}

/// An error as the command line names things: library option names become flags.
fn shown(e: &(dyn std::error::Error + 'static)) -> String {
    match as_app(e) {
        Some(AppError::Lib(crate::Error::BadOption { option, message })) => {
            format!("{}: {message}", flag(option))
        }
        _ => e.to_string(),
    }
}

/// The [`AppError`] an error in a chain is, if it is one (context sources are boxed).
fn as_app<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a AppError> {
    e.downcast_ref::<AppError>()
        .or_else(|| e.downcast_ref::<Box<AppError>>().map(|b| &**b))
}

fn flag(option: &str) -> String {
    format!("--{}", option.replace('_', "-"))
}

/// The command-line fix for an error a library caller would handle in code.
fn hint(e: &AppError) -> Option<String> {
    use crate::Error;
    match e.lib()? {
        Error::NeedsBase { .. } => Some(
            "pass --base <config.json|model.gguf> (the base model's config.json, its directory, or its GGUF)"
                .into(),
        ),
        Error::UnknownKeys { .. } => {
            Some("pass --skip-unknown to drop them with a warning".into())
        }
        _ => None,
    }
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `saved name:tag sha256:...` on stderr (stdout stays the command's own report).
fn print_saved(saved: Option<&Saved>) {
    if let Some(s) = saved {
        eprintln!("saved {} {}", s.reference, s.digest);
    }
}
