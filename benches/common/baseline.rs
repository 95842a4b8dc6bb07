//! The `loratool` binary of an earlier commit, for side-by-side runs against the current one
//! (shared by the benchmarks through `#[path]`).
//!
//! `LORATOOL_BENCH_BASELINE=PATH` names a binary; otherwise the commit `LORATOOL_BENCH_BASELINE_REV`
//! (default [`DEFAULT_REV`], the main commit the performance work of issue 15 started from) is
//! exported from this repository's git history with `git archive` and built once in release mode
//! into `target/bench-baseline/` with the locked dependencies (no network: the registry cache of
//! the current build has them). `LORATOOL_BENCH_BASELINE=none` skips the baseline.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// main before issue 15's performance work.
pub const DEFAULT_REV: &str = "7206e25";

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The baseline binary and the commit it was built from, or `None` when disabled.
pub fn baseline_binary() -> Res<Option<(PathBuf, String)>> {
    match std::env::var("LORATOOL_BENCH_BASELINE") {
        Ok(v) if v == "none" => return Ok(None),
        Ok(v) if !v.is_empty() => return Ok(Some((PathBuf::from(&v), v))),
        _ => {}
    }
    let rev = std::env::var("LORATOOL_BENCH_BASELINE_REV").unwrap_or_else(|_| DEFAULT_REV.into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cache = root.join("target").join("bench-baseline");
    let src = cache.join(format!("src-{rev}"));
    let bin = cache.join("target").join("release").join("loratool");
    let stamp = cache.join(format!("built-{rev}"));
    if stamp.exists() && bin.exists() {
        return Ok(Some((bin, rev)));
    }
    eprintln!(
        "building the baseline loratool at {rev} into {} (once)",
        cache.display()
    );
    if src.exists() {
        std::fs::remove_dir_all(&src)?;
    }
    std::fs::create_dir_all(&src)?;
    let archive = Command::new("git")
        .args([
            "-C",
            &root.to_string_lossy(),
            "archive",
            "--format=tar",
            &rev,
        ])
        .output()?;
    if !archive.status.success() {
        return Err(format!(
            "git archive {rev} failed: {}",
            String::from_utf8_lossy(&archive.stderr)
        )
        .into());
    }
    let tar = src.join("src.tar");
    std::fs::write(&tar, &archive.stdout)?;
    let status = Command::new("tar")
        .args(["-xf", &tar.to_string_lossy(), "-C", &src.to_string_lossy()])
        .status()?;
    if !status.success() {
        return Err("tar -x of the baseline sources failed".into());
    }
    std::fs::remove_file(&tar)?;
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "--locked",
            "--offline",
            "--bin",
            "loratool",
        ])
        .arg("--manifest-path")
        .arg(src.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(cache.join("target"))
        .status()?;
    if !status.success() {
        return Err(format!("building the baseline at {rev} failed").into());
    }
    std::fs::write(&stamp, rev.as_bytes())?;
    Ok(Some((bin, rev)))
}
