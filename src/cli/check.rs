//! `loratool check`: arguments and rendering; the work is `app::check`. Exit 0 when clean,
//! 1 when something is found, 2 when the command line or an input cannot be used at all.

use super::args::{named, JsonArg};
use crate::adapter::Format;
use crate::app::check::{CheckOutcome, CheckRequest, DEFAULT_TOLERANCE};
use crate::app::{InputRef, Session};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct CheckArgs {
    /// Adapter to check (PEFT directory, diffusers or kohya .safetensors, GGUF, or name:tag).
    pub input: PathBuf,
    /// Also check every module's shape against this base model: a safetensors model (file,
    /// sharded index, model directory, diffusers pipeline, SD checkpoint), a GGUF model, or a
    /// Hugging Face config.json (names only).
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// Read the adapter as this format instead of detecting it.
    #[arg(long, value_parser = named::<Format>())]
    pub from: Option<Format>,
    /// A module is rank deficient when fewer of its singular values than its rank exceed
    /// this fraction of the largest.
    #[arg(long, default_value_t = DEFAULT_TOLERANCE)]
    pub tolerance: f64,
    /// Fail on warnings too (rank-deficient modules, LyCORIS-style hashes that do not match).
    #[arg(long)]
    pub strict: bool,
    #[command(flatten)]
    pub json: JsonArg,
}

/// Run the check; `Ok(true)` when clean.
pub fn run(session: &Session<'_>, args: CheckArgs) -> Result<bool> {
    let outcome = session.check(&CheckRequest {
        input: InputRef::from_path(&args.input)?,
        from: args.from,
        base: args.base,
        tolerance: args.tolerance,
        strict: args.strict,
    })?;
    if args.json.json {
        super::print_json(&outcome)?;
    } else if !super::quiet() {
        print_text(&outcome);
    }
    Ok(outcome.clean)
}

fn print_text(o: &CheckOutcome) {
    let against = o
        .base
        .as_deref()
        .map(|b| format!(" against {b}"))
        .unwrap_or_default();
    let verdict = if o.clean { "ok" } else { "FAILED" };
    println!(
        "{}: {verdict}: {} error(s), {} warning(s) in {} {} modules{against}",
        o.path, o.errors, o.warnings, o.modules, o.format
    );
    for f in &o.findings {
        let name = |v: serde_json::Result<serde_json::Value>| {
            v.ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        };
        let kind = name(serde_json::to_value(f.kind));
        let severity = name(serde_json::to_value(f.severity));
        println!("  {severity:<7} {kind:<15} {}", f.message);
    }
}
