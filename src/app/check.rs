//! `check`: what is wrong with an adapter before it ships, for CI pipelines. Every problem is
//! a [`Finding`] (none means clean); nothing is changed or written.
//!
//! What is checked, and where the knowledge comes from (one definition each, reused):
//! - values: NaN/Inf in any float tensor of the files (all of them, also those a reader would
//!   drop), and in every layer read;
//! - modules: `B = 0` or `A = 0` (the module changes nothing), and rank deficiency: fewer
//!   singular values of `B·A` above `tolerance · σ₁` than the stored rank, from the exact
//!   factored SVD (`linalg::factored_svd_keeping`, no dense matrix);
//! - keys: a tensor name repeated in a safetensors header (parsers keep one silently), two
//!   keys that are the same module part (kohya name aliases, PEFT wrapper prefixes), and keys
//!   the reader cannot place (the reader's own `UnknownKeys`);
//! - kohya `sshs_model_hash` / `sshs_legacy_hash` against the bytes (`adapter::kohya_hash`,
//!   the definition the kohya writer uses);
//! - PEFT `adapter_config.json` against the weights: ranks (`r`, `rank_pattern`),
//!   `target_modules`, pattern keys that match no module, `use_dora` against magnitudes;
//! - with a base model, every module's shape (`ops::bake_model::fit_problems` for safetensors
//!   models, `ops::gguf_bake::gguf_fit_problems` for GGUF bases and `config.json`).

use super::error::{AppError, Result, ResultExt};
use super::input::{InputRef, LoadOptions, Located};
use super::session::Session;
use crate::adapter::codec::{adapter_files, detect_format};
use crate::adapter::gguf::GgufBase;
use crate::adapter::kohya_hash::kohya_hashes;
use crate::adapter::peft_config::{PeftConfig, PeftType, Targets};
use crate::adapter::{kohya, peft, Adapter, Format, LoraLayer};
use crate::io::safetensors::repeated_header_keys;
use crate::io::SafetensorsFile;
use crate::linalg::{all_finite, factored_svd_keeping};
use crate::ops::model_layout::ModelLayout;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Default relative tolerance for rank deficiency: a direction whose singular value is below
/// `1e-4 · σ₁` carries under 1e-8 of the module's energy. f16 factors of a genuinely
/// rank-deficient product leave rounding noise near 1e-4 · σ₁ at worst, trained directions sit
/// far above it (the fixtures' smallest ratio is reported by `tests/check.rs`).
pub const DEFAULT_TOLERANCE: f64 = 1e-4;

pub struct CheckRequest {
    pub input: InputRef,
    /// Read the adapter as this format instead of detecting it.
    pub from: Option<Format>,
    /// A base model to check every module's shape against: a safetensors model (file,
    /// directory, pipeline, SD checkpoint), a GGUF model, or a `config.json`.
    pub base: Option<PathBuf>,
    /// Relative singular-value tolerance for rank deficiency ([`DEFAULT_TOLERANCE`]).
    pub tolerance: f64,
    /// Warnings fail the check too.
    pub strict: bool,
}

/// What kind of problem a finding is (the `kind` field of `check --json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// The adapter cannot be read at all (the reader's error is the message).
    Unreadable,
    /// A NaN or infinite value.
    NonFinite,
    /// A module whose `B` or `A` is all zeros: it changes nothing.
    ZeroModule,
    /// A module with fewer directions than its stored rank.
    RankDeficient,
    /// A key repeated in the header, or two keys for the same module part.
    DuplicateKey,
    /// Keys the reader cannot place on a module of a known model.
    UnplaceableKey,
    /// kohya `sshs_*` hashes that do not match the file's bytes.
    HashMismatch,
    /// PEFT `adapter_config.json` disagrees with the weights.
    ConfigMismatch,
    /// A module whose shape (or tensor) the base model does not have.
    BaseMismatch,
}

/// Whether a finding fails the check: errors always, warnings only with `strict`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The adapter is broken or will not load as meant.
    Error,
    /// Wasteful or unusual but loads and works: rank deficiency (zero directions are what
    /// sd-scripts' svd merge writes when the inputs' ranks sum below the output's), and hashes
    /// in LyCORIS's own `0x…` convention that do not match the bytes.
    Warning,
}

#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub severity: Severity,
    /// The canonical module path (or tensor key) the finding is about, if one.
    pub module: Option<String>,
    pub message: String,
}

#[derive(Debug, Serialize)]
pub struct CheckOutcome {
    pub path: String,
    pub format: Format,
    /// Modules read (0 when the adapter is unreadable).
    pub modules: usize,
    /// Whether a base model was checked against.
    pub base: Option<String>,
    pub tolerance: f64,
    pub errors: usize,
    pub warnings: usize,
    /// No errors (and, with `strict`, no warnings): `check` exits 0.
    pub clean: bool,
    pub findings: Vec<Finding>,
}

impl Finding {
    fn new(kind: FindingKind, module: Option<&str>, message: impl Into<String>) -> Finding {
        let severity = match kind {
            FindingKind::RankDeficient => Severity::Warning,
            _ => Severity::Error,
        };
        Finding {
            kind,
            severity,
            module: module.map(str::to_string),
            message: message.into(),
        }
    }
}

impl Session<'_> {
    /// Check an adapter (and, with a base, its fit to the base model).
    pub fn check(&self, req: &CheckRequest) -> Result<CheckOutcome> {
        if !(req.tolerance.is_finite() && (0.0..1.0).contains(&req.tolerance)) {
            return Err(crate::error::Error::bad_option(
                "tolerance",
                format!("{} must be in [0, 1)", req.tolerance),
            )
            .into());
        }
        let located = self.locate(&req.input)?;
        let path = located.path.clone();
        let format = match req.from.or(located.format) {
            Some(f) => f,
            None => detect_format(&path).with_context(|| format!("reading {}", located.label))?,
        };
        let base = req.base.as_deref().map(Base::open).transpose()?;
        let mut findings = Vec::new();

        let files: Vec<PathBuf> = adapter_files(&path, format)
            .with_context(|| format!("reading {}", located.label))?
            .into_iter()
            .filter(|f| f.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        for f in &files {
            file_findings(f, &mut findings);
        }
        if format == Format::Peft {
            peft_findings(&path, &mut findings);
        }

        let adapter = match self.read_strict(&located, format, &mut findings) {
            Ok(a) => Some(a),
            Err(e) => {
                findings.push(Finding::new(FindingKind::Unreadable, None, error_chain(&e)));
                None
            }
        };
        if let Some(a) = &adapter {
            if format == Format::Kohya {
                if let Some(f) = files.first() {
                    kohya_duplicates(f, a, &mut findings);
                }
            }
            findings.extend(module_findings(a, req.tolerance));
            if let Some(b) = &base {
                findings.extend(b.problems(a).into_iter().map(|p| {
                    let module = p.split([':', ' ']).next().map(str::to_string);
                    Finding {
                        kind: FindingKind::BaseMismatch,
                        severity: Severity::Error,
                        module: module.filter(|m| a.layers.contains_key(m)),
                        message: p,
                    }
                }));
            }
        }
        findings
            .sort_by(|a, b| (a.severity, a.kind, &a.module).cmp(&(b.severity, b.kind, &b.module)));
        let errors = findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count();
        let warnings = findings.len() - errors;
        Ok(CheckOutcome {
            path: located.label.clone(),
            format,
            modules: adapter.as_ref().map_or(0, |a| a.layers.len()),
            base: req.base.as_ref().map(|b| b.display().to_string()),
            tolerance: req.tolerance,
            errors,
            warnings,
            clean: errors == 0 && !(req.strict && warnings > 0),
            findings,
        })
    }

    /// Read refusing unknown keys; if the reader names some, record them and read again
    /// without them.
    fn read_strict(
        &self,
        located: &Located,
        format: Format,
        findings: &mut Vec<Finding>,
    ) -> Result<Adapter> {
        let opts = |skip_unknown| LoadOptions {
            from: Some(format),
            skip_unknown,
            base: None,
            layout_only: true,
        };
        match self.load_located(located, &opts(false)) {
            Ok(l) => Ok(l.adapter),
            Err(e) => match e.lib() {
                Some(crate::Error::UnknownKeys { what, keys, .. }) => {
                    for k in keys {
                        findings.push(Finding::new(
                            FindingKind::UnplaceableKey,
                            Some(k),
                            format!("{k}: {what} key; loratool (and the tools that load this format) cannot place it on a module"),
                        ));
                    }
                    Ok(self.load_located(located, &opts(true))?.adapter)
                }
                _ => Err(e),
            },
        }
    }
}

/// A base model to check shapes against.
enum Base {
    Model(Box<ModelLayout>),
    Gguf(GgufBase),
}

impl Base {
    fn open(path: &Path) -> Result<Base> {
        let is_config = path.is_file()
            && path.extension().is_some_and(|e| e == "json")
            && path.file_name().is_some_and(|n| n == "config.json");
        let res = if crate::io::gguf::is_gguf(path) || is_config {
            GgufBase::load(path).map(Base::Gguf)
        } else {
            ModelLayout::open(path).map(|l| Base::Model(Box::new(l)))
        };
        res.with_context(|| format!("reading the base model {}", path.display()))
    }

    fn problems(&self, adapter: &Adapter) -> Vec<String> {
        match self {
            Base::Model(layout) => crate::ops::bake_model::fit_problems(layout, adapter),
            Base::Gguf(base) => crate::ops::gguf_bake::gguf_fit_problems(base, adapter),
        }
    }
}

fn error_chain(e: &AppError) -> String {
    let mut msg = e.to_string();
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(c) = cur {
        msg.push_str(": ");
        msg.push_str(&c.to_string());
        cur = c.source();
    }
    msg
}

/// Checks on one safetensors file's raw content: repeated header keys, non-finite values in
/// any float tensor, and kohya's `sshs_*` hashes.
fn file_findings(path: &Path, findings: &mut Vec<Finding>) {
    let name = path.display();
    match repeated_header_keys(path) {
        Ok(keys) => findings.extend(keys.iter().map(|k| {
            Finding::new(
                FindingKind::DuplicateKey,
                Some(k),
                format!("{k} appears more than once in the header of {name}; readers keep only one of them"),
            )
        })),
        Err(e) => {
            findings.push(Finding::new(FindingKind::Unreadable, None, e.to_string()));
            return;
        }
    }
    let Ok(file) = SafetensorsFile::open(path) else {
        return; // the read below reports why
    };
    let floats: Vec<&String> = file
        .tensors()
        .iter()
        .filter(|(_, t)| t.dtype.is_float())
        .map(|(k, _)| k)
        .collect();
    let bad: Vec<Finding> = floats
        .par_iter()
        .filter_map(|k| {
            let t = file.tensor(k).ok()?;
            let v = t.to_f32();
            file.release(k);
            if all_finite(&v) {
                return None;
            }
            let nan = v.iter().filter(|x| x.is_nan()).count();
            let inf = v.iter().filter(|x| x.is_infinite()).count();
            Some(Finding::new(
                FindingKind::NonFinite,
                Some(k),
                format!(
                    "{k}: {nan} NaN and {inf} infinite values of {} (shape {:?})",
                    v.len(),
                    t.shape()
                ),
            ))
        })
        .collect();
    findings.extend(bad);
    kohya_hash_findings(&file, findings);
}

/// `sshs_model_hash` / `sshs_legacy_hash`, when present, recomputed from the tensors as
/// sd-scripts computes them.
fn kohya_hash_findings(file: &SafetensorsFile, findings: &mut Vec<Finding>) {
    let md = file.metadata();
    let (model, legacy) = (md.get("sshs_model_hash"), md.get("sshs_legacy_hash"));
    if model.is_none() && legacy.is_none() {
        return;
    }
    let mut tensors = Vec::new();
    for k in file.tensors().keys() {
        match file.tensor(k) {
            Ok(t) => tensors.push((k.clone(), t)),
            Err(_) => return, // the read reports it
        }
    }
    let refs: Vec<(String, &crate::tensor::Tensor)> =
        tensors.iter().map(|(k, t)| (k.clone(), t)).collect();
    let Ok(h) = kohya_hashes(&refs, md) else {
        return;
    };
    for (key, stored, want) in [
        ("sshs_model_hash", model, &h.model),
        ("sshs_legacy_hash", legacy, &h.legacy),
    ] {
        let Some(stored) = stored else {
            continue;
        };
        // LyCORIS writes its own hashes as `0x<hex>`; some of them are not of the saved bytes
        let lycoris = stored.starts_with("0x");
        let bare = stored.trim_start_matches("0x");
        if bare.eq_ignore_ascii_case(want) {
            continue;
        }
        let mut f = Finding::new(
            FindingKind::HashMismatch,
            Some(key),
            format!(
                "{key} is {stored} but the file's tensors hash to {want} (the tensors or ss_* metadata changed after the hash was written; UIs that index LoRAs by this hash will not find it){}",
                if lycoris { "; written in LyCORIS's 0x convention, which does not always hash the saved bytes" } else { "" }
            ),
        );
        if lycoris {
            f.severity = Severity::Warning;
        }
        findings.push(f);
    }
}

/// kohya keys that name the same module part under two names (`lora_te_…` and `lora_te1_…`).
fn kohya_duplicates(path: &Path, adapter: &Adapter, findings: &mut Vec<Finding>) {
    let Some(names) = adapter
        .meta
        .family
        .as_deref()
        .and_then(kohya::canonical_names)
    else {
        return;
    };
    let Ok(file) = SafetensorsFile::open(path) else {
        return;
    };
    let mut parts: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for key in file.tensors().keys() {
        if let Some((name, part)) = kohya::split_key(key) {
            if let Some(canonical) = names.get(name) {
                parts
                    .entry((canonical.clone(), part.to_string()))
                    .or_default()
                    .push(key.clone());
            }
        }
    }
    duplicate_findings(parts, findings);
}

fn duplicate_findings(parts: BTreeMap<(String, String), Vec<String>>, findings: &mut Vec<Finding>) {
    for ((module, part), keys) in parts {
        if keys.len() > 1 {
            findings.push(Finding::new(
                FindingKind::DuplicateKey,
                Some(&module),
                format!(
                    "{module}: {part} is stored {} times ({}); a reader keeps one and drops the rest",
                    keys.len(),
                    keys.join(", ")
                ),
            ));
        }
    }
}

/// PEFT: duplicate module parts, and `adapter_config.json` against the weights.
fn peft_findings(path: &Path, findings: &mut Vec<Finding>) {
    let Ok((config_path, weights)) = peft::locate(path) else {
        return; // the read reports it
    };
    let Ok(file) = SafetensorsFile::open(&weights) else {
        return;
    };
    let mut parts: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    // module → (rank of A, has magnitude)
    let mut modules: BTreeMap<String, (Option<usize>, bool)> = BTreeMap::new();
    for (key, info) in file.tensors() {
        let Some(k) = peft::parse_file_key(key) else {
            continue;
        };
        parts
            .entry((k.module.clone(), format!("{:?}", k.part)))
            .or_default()
            .push(key.clone());
        let e = modules.entry(k.module).or_default();
        match k.part {
            peft::Part::A | peft::Part::EmbA => e.0 = info.shape.first().copied(),
            peft::Part::Magnitude => e.1 = true,
            _ => {}
        }
    }
    duplicate_findings(parts, findings);
    if !config_path.is_file() {
        return; // the read reports it
    }
    let config = match PeftConfig::read(&config_path) {
        Ok(c) => c,
        Err(e) => {
            findings.push(Finding::new(
                FindingKind::ConfigMismatch,
                None,
                e.to_string(),
            ));
            return;
        }
    };
    if config.peft_type != PeftType::Lora || modules.is_empty() {
        return;
    }
    let cfg = config_path.display();
    let mismatch = |module: Option<&str>, msg: String| {
        Finding::new(FindingKind::ConfigMismatch, module, format!("{cfg}: {msg}"))
    };
    for (m, (rank, magnitude)) in &modules {
        if let Some(rank) = rank {
            let (want, key) = config.rank_for(m);
            if want != *rank {
                let source = key.map_or("\"r\"".to_string(), |k| format!("rank_pattern '{k}'"));
                findings.push(mismatch(
                    Some(m),
                    format!("{m}: the config gives rank {want} (from {source}), the weights have rank {rank}; PEFT refuses to load this (size mismatch)"),
                ));
            }
        }
        if config.use_dora != *magnitude {
            findings.push(mismatch(
                Some(m),
                if config.use_dora {
                    format!("{m}: use_dora is true but the weights have no lora_magnitude_vector for it")
                } else {
                    format!("{m}: the weights carry a DoRA magnitude but use_dora is false; PEFT ignores it")
                },
            ));
        }
        if let Some(t) = &config.target_modules {
            if t.matches(m) == Some(false) {
                findings.push(mismatch(
                    Some(m),
                    format!("{m} has weights but target_modules does not name it; PEFT creates no LoRA layer there and drops them on load"),
                ));
            }
        }
    }
    if let Some(Targets::List(names)) = &config.target_modules {
        for t in names {
            let hit = modules
                .keys()
                .any(|m| m == t || m.ends_with(&format!(".{t}")));
            if !hit {
                findings.push(mismatch(
                    None,
                    format!("target_modules names '{t}' but no module of the weights is one; PEFT would create freshly initialised LoRA layers there"),
                ));
            }
        }
    }
    let dead = |field: &str, key: &str, re: &regex::Regex| {
        (!modules.keys().any(|m| re.is_match(m))).then(|| {
            mismatch(
                None,
                format!("{field} key '{key}' matches no module of the weights (a typo? PEFT ignores it)"),
            )
        })
    };
    for (k, re, _) in &config.rank_pattern {
        findings.extend(dead("rank_pattern", k, re));
    }
    for (k, re, _) in &config.alpha_pattern {
        findings.extend(dead("alpha_pattern", k, re));
    }
}

/// Non-finite values, zero modules and rank deficiency, per layer (in parallel).
fn module_findings(adapter: &Adapter, tolerance: f64) -> Vec<Finding> {
    let layers: Vec<(&String, &LoraLayer)> = adapter.layers.iter().collect();
    let mut out: Vec<Finding> = layers
        .par_iter()
        .flat_map_iter(|(path, layer)| layer_findings(path, layer, tolerance))
        .collect();
    for (name, t) in &adapter.full {
        if !all_finite(&t.to_f32()) {
            out.push(Finding::new(
                FindingKind::NonFinite,
                Some(name),
                format!("{name} (modules_to_save) has NaN or infinite values"),
            ));
        }
    }
    out
}

fn layer_findings(path: &str, layer: &LoraLayer, tolerance: f64) -> Vec<Finding> {
    let up = layer.up.to_f32();
    let down = layer.down.to_f32();
    let extras = [("magnitude", &layer.magnitude), ("bias", &layer.bias)];
    let mut out = Vec::new();
    let mut finite = true;
    for (what, v) in [("B (up)", &up), ("A (down)", &down)] {
        if !all_finite(v) {
            finite = false;
            out.push(Finding::new(
                FindingKind::NonFinite,
                Some(path),
                format!("{path}: {what} has NaN or infinite values"),
            ));
        }
    }
    for (what, t) in extras {
        if let Some(t) = t {
            if !all_finite(&t.to_f32()) {
                out.push(Finding::new(
                    FindingKind::NonFinite,
                    Some(path),
                    format!("{path}: the {what} has NaN or infinite values"),
                ));
            }
        }
    }
    if !finite {
        return out;
    }
    // a DoRA module with B = 0 still rescales the weight through its magnitude
    let dora = layer.magnitude.is_some();
    for (what, v) in [
        ("B (lora_up / lora_B)", &up),
        ("A (lora_down / lora_A)", &down),
    ] {
        if !dora && v.iter().all(|&x| x == 0.0) {
            out.push(Finding::new(
                FindingKind::ZeroModule,
                Some(path),
                format!("{path}: {what} is all zeros, so the module changes nothing (untrained, or saved right after initialisation)"),
            ));
            return out;
        }
    }
    let rank = layer.rank();
    let m = layer.out_features();
    let n = down.len() / rank.max(1);
    let Ok((_, s)) = factored_svd_keeping(&up, &down, m, rank, n, |_| Ok(0)) else {
        return out;
    };
    let top = s.first().copied().unwrap_or(0.0);
    if top == 0.0 {
        if !dora {
            out.push(Finding::new(
                FindingKind::ZeroModule,
                Some(path),
                format!("{path}: B·A is zero, so the module changes nothing"),
            ));
        }
        return out;
    }
    let kept = s.iter().filter(|&&x| x > tolerance * top).count();
    if kept < rank {
        let energy_lost: f64 =
            s[kept..].iter().map(|x| x * x).sum::<f64>() / s.iter().map(|x| x * x).sum::<f64>();
        out.push(Finding::new(
            FindingKind::RankDeficient,
            Some(path),
            format!(
                "{path}: stored rank {rank}, but only {kept} direction(s) have a singular value above {tolerance:e}·σ₁ (the rest hold {energy_lost:.1e} of ‖ΔW‖²); `loratool resize --rank {kept}` keeps it exactly"
            ),
        ));
    }
    out
}
