//! LyCORIS modules → canonical LoRA layers, exactly and without forming `ΔW`.
//!
//! Owns: recognising a module's LyCORIS tensors (kohya layout `<name>.hada_w1_a`, PEFT
//! `<path>.hada_w1_a`), deciding its algorithm, and turning it into one [`LoraLayer`] whose
//! `scale·up·down` equals the module's `ΔW` to float error:
//!
//! - LoCon (+ Tucker `lora_mid`): `down' = mid ×₁ down`, exact at rank `r` ([`locon`]);
//! - LoHa: `(A₁B₁) ⊙ (A₂B₂) = (A₁•A₂)·(B₁ᵀ•B₂ᵀ)ᵀ` (face-splitting product), rank `r₁·r₂`;
//!   Tucker `hada_t1/t2` are contracted first ([`loha`]);
//! - LoKr: `kron(W₁, W₂)` from the SVDs of `W₁` and `W₂` alone (singular values `σᵢτⱼ`,
//!   vectors `u⊗u'`, `v⊗v'`), rank `rank(W₁)·rank(W₂)`, optimally truncated ([`lokr`]);
//! - DoRA `dora_scale` on the output axis → the canonical (PEFT) magnitude ([`dora`]).
//!
//! Refused by name, with the reason: full `diff`, norm `w_norm`/`b_norm`, (IA)³, OFT/BOFT,
//! GLoRA (all need the base weight or are not low-rank), input-axis `dora_scale`.
//!
//! Scale: `s = alpha / r` as LyCORIS and ComfyUI apply it, `r` read from the tensors (LoCon
//! `lora_down` rows, LoHa `hada_w1_b` rows, LoKr `lokr_w2_b` rows else `lokr_w1_b` rows). A
//! LoKr with both factors full ignores alpha there (scale 1) but PEFT applies `alpha / r`: the
//! caller says which tool wrote the file ([`Convention`]). Every conversion reports what it did
//! in an [`Origin`] (algorithm, factor ranks, exact rank, any truncation and scale rule), which
//! readers record in `AdapterMeta::lycoris` for `info`.
//!
//! Does not own: file layouts or names (the kohya and PEFT readers call [`convert`] per module).

mod dora;
mod locon;
mod loha;
mod lokr;
pub(crate) mod mat;
mod reduce;

use super::{LayerKind, LoraLayer};
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};
use mat::Mat;
use std::collections::BTreeMap;
use std::fmt;

/// The LyCORIS network types, as named in LyCORIS (`algo=`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Locon,
    Loha,
    Lokr,
    Full,
    Norm,
    Ia3,
    Oft,
    Glora,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Locon => "LoCon",
            Algorithm::Loha => "LoHa",
            Algorithm::Lokr => "LoKr",
            Algorithm::Full => "full (diff)",
            Algorithm::Norm => "norm",
            Algorithm::Ia3 => "(IA)³",
            Algorithm::Oft => "OFT/BOFT",
            Algorithm::Glora => "GLoRA",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Every per-module tensor name LyCORIS (and PEFT's LoHa/LoKr) write, as `(suffix in the file,
/// local name, algorithm)`; `None` marks the keys every algorithm may carry.
const KEYS: &[(&str, &str, Option<Algorithm>)] = &[
    ("lora_down.weight", "lora_down", Some(Algorithm::Locon)),
    ("lora_up.weight", "lora_up", Some(Algorithm::Locon)),
    ("lora_mid.weight", "lora_mid", Some(Algorithm::Locon)),
    ("bias_indices", "bias_indices", Some(Algorithm::Locon)),
    ("bias_values", "bias_values", Some(Algorithm::Locon)),
    ("bias_size", "bias_size", Some(Algorithm::Locon)),
    ("hada_w1_a", "hada_w1_a", Some(Algorithm::Loha)),
    ("hada_w1_b", "hada_w1_b", Some(Algorithm::Loha)),
    ("hada_w2_a", "hada_w2_a", Some(Algorithm::Loha)),
    ("hada_w2_b", "hada_w2_b", Some(Algorithm::Loha)),
    ("hada_t1", "hada_t1", Some(Algorithm::Loha)),
    ("hada_t2", "hada_t2", Some(Algorithm::Loha)),
    ("lokr_w1", "lokr_w1", Some(Algorithm::Lokr)),
    ("lokr_w1_a", "lokr_w1_a", Some(Algorithm::Lokr)),
    ("lokr_w1_b", "lokr_w1_b", Some(Algorithm::Lokr)),
    ("lokr_w2", "lokr_w2", Some(Algorithm::Lokr)),
    ("lokr_w2_a", "lokr_w2_a", Some(Algorithm::Lokr)),
    ("lokr_w2_b", "lokr_w2_b", Some(Algorithm::Lokr)),
    ("lokr_t2", "lokr_t2", Some(Algorithm::Lokr)),
    ("diff", "diff", Some(Algorithm::Full)),
    ("diff_b", "diff_b", Some(Algorithm::Full)),
    ("w_norm", "w_norm", Some(Algorithm::Norm)),
    ("b_norm", "b_norm", Some(Algorithm::Norm)),
    ("on_input", "on_input", Some(Algorithm::Ia3)),
    ("oft_blocks", "oft_blocks", Some(Algorithm::Oft)),
    ("oft_diag", "oft_diag", Some(Algorithm::Oft)),
    ("rescale", "rescale", Some(Algorithm::Oft)),
    ("a1.weight", "a1", Some(Algorithm::Glora)),
    ("a2.weight", "a2", Some(Algorithm::Glora)),
    ("b1.weight", "b1", Some(Algorithm::Glora)),
    ("b2.weight", "b2", Some(Algorithm::Glora)),
    ("bm.weight", "bm", Some(Algorithm::Glora)),
    ("alpha", "alpha", None),
    ("dora_scale", "dora_scale", None),
];

/// Split a tensor key into `(module, local name)` when it ends in a LyCORIS per-module suffix
/// (`lora_unet_x.hada_w1_a` → `("lora_unet_x", "hada_w1_a")`,
/// `base_model.model.a.lokr_w1` → `("base_model.model.a", "lokr_w1")`).
pub fn split_key(key: &str) -> Option<(&str, &'static str)> {
    KEYS.iter().find_map(|&(suffix, local, _)| {
        let module = key.strip_suffix(suffix)?.strip_suffix('.')?;
        (!module.is_empty()).then_some((module, local))
    })
}

/// Whether a module holding these local names needs this module (anything but plain
/// `lora_down`/`lora_up`/`alpha`, which every LoRA reader already handles).
pub fn needs_conversion<'a>(locals: impl IntoIterator<Item = &'a str>) -> bool {
    locals
        .into_iter()
        .any(|l| !matches!(l, "lora_down" | "lora_up" | "alpha"))
}

/// Which tool wrote the file: it decides a LoKr's scale when both Kronecker factors are full.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Convention {
    /// LyCORIS / kohya layout: `alpha` from the module's tensor (missing or 0 → `r`, scale 1),
    /// `r` from the tensors; a LoKr with both factors full has scale 1 whatever its alpha
    /// (LyCORIS and ComfyUI).
    Lycoris,
    /// PEFT `LoHaConfig`/`LoKrConfig`: `alpha / rank` from the config (after `rank_pattern` /
    /// `alpha_pattern`), always applied.
    Peft { alpha: f64, rank: usize },
}

/// The base module's weight shape `[out, in, kh, kw]` when the caller knows it (a table row):
/// LyCORIS flattens conv kernels into `in·kh·kw` for most factors, so only this restores them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub kind: LayerKind,
    pub out: usize,
    pub in_: usize,
    pub kh: usize,
    pub kw: usize,
}

#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub convention: Convention,
    /// Truncate to at most this rank (Eckart–Young optimal); `None` keeps the exact rank.
    pub max_rank: Option<usize>,
    pub target: Option<Target>,
}

impl Options {
    pub fn lycoris() -> Options {
        Options {
            convention: Convention::Lycoris,
            max_rank: None,
            target: None,
        }
    }
}

/// Modules with at least this many weights (`out·in·kh·kw`) get a rank cap when no rank is
/// asked for (see [`unasked_rank_cap`]); below it exact factors are small in absolute terms.
pub const RANK_CAP_MIN_ELEMENTS: usize = 1 << 20;

/// The largest rank a conversion keeps when no rank was asked for: the rank at which the
/// factors `(out + in)·r` hold half as many numbers as the dense `out × in` ΔW. A LoKr with
/// both Kronecker factors full has an exact rank up to `min(out, in)`, whose LoRA factors would
/// be larger than ΔW itself; above the cap it is truncated optimally (from the factors' SVDs)
/// and the truncation is reported. `None`: no cap (small modules).
pub fn unasked_rank_cap(out: usize, in_flat: usize) -> Option<usize> {
    let dense = out.saturating_mul(in_flat);
    (dense >= RANK_CAP_MIN_ELEMENTS).then(|| (dense / (2 * (out + in_flat))).max(1))
}

/// What was dropped by a truncation.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Truncation {
    /// The exact rank before truncation.
    pub from: usize,
    pub to: usize,
    /// `Σ dropped σ² / Σ σ²`: the relative squared Frobenius error of the kept LoRA.
    pub dropped_energy: f64,
}

/// How a canonical layer was obtained from a LyCORIS module (kept small: `info` lists it).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Origin {
    pub algorithm: Algorithm,
    pub tucker: bool,
    pub dora: bool,
    /// The factor structure, e.g. `w1 4×4 full (rank 4) ⊗ w2 80×8·8×80 (rank 8)`.
    pub factors: String,
    /// The exact LoRA rank of `ΔW` (before any truncation).
    pub exact_rank: usize,
    /// The rank of the layer produced.
    pub rank: usize,
    pub truncation: Option<Truncation>,
    /// The scale rule applied when it is not plain `alpha / r`.
    pub note: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Converted {
    pub layer: LoraLayer,
    pub origin: Origin,
}

/// One line of `info`: the modules converted from one algorithm variant.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub algorithm: Algorithm,
    pub tucker: bool,
    pub dora: bool,
    pub modules: usize,
    /// exact LoRA rank → module count
    pub exact_ranks: BTreeMap<usize, usize>,
    /// The factor structure of the first such module.
    pub example: String,
    /// Modules truncated below their exact rank, and the largest relative energy dropped.
    pub truncated: usize,
    pub max_dropped_energy: f64,
    pub notes: Vec<String>,
}

/// Group per-module origins by algorithm variant (for `info`).
pub fn summarize(origins: &BTreeMap<String, Origin>) -> Vec<Summary> {
    let mut groups: BTreeMap<(Algorithm, bool, bool), Summary> = BTreeMap::new();
    for o in origins.values() {
        let g = groups
            .entry((o.algorithm, o.tucker, o.dora))
            .or_insert_with(|| Summary {
                algorithm: o.algorithm,
                tucker: o.tucker,
                dora: o.dora,
                modules: 0,
                exact_ranks: BTreeMap::new(),
                example: o.factors.clone(),
                truncated: 0,
                max_dropped_energy: 0.0,
                notes: Vec::new(),
            });
        g.modules += 1;
        *g.exact_ranks.entry(o.exact_rank).or_default() += 1;
        if let Some(t) = o.truncation {
            g.truncated += 1;
            g.max_dropped_energy = g.max_dropped_energy.max(t.dropped_energy);
        }
        if let Some(n) = &o.note {
            if !g.notes.contains(n) {
                g.notes.push(n.clone());
            }
        }
    }
    groups.into_values().collect()
}

/// One reader warning per module a conversion truncated (what, from which rank, how much of
/// ΔW's energy was dropped), so a truncation is never silent.
pub fn truncation_warnings(origins: &BTreeMap<String, Origin>) -> Vec<String> {
    origins
        .iter()
        .filter_map(|(path, o)| {
            o.truncation.map(|t| {
                format!(
                    "{path}: {} exact rank {} truncated to {} ({:.3e} of ΔW's squared Frobenius norm dropped){}",
                    o.algorithm,
                    t.from,
                    t.to,
                    t.dropped_energy,
                    o.note.as_deref().map(|n| format!("; {n}")).unwrap_or_default()
                )
            })
        })
        .collect()
}

/// A module's tensors by local name (see [`split_key`]).
pub type ModuleTensors = BTreeMap<&'static str, Tensor>;

/// The algorithm of a module, or an error naming it when its keys mix algorithms or hold only
/// `alpha`/`dora_scale`.
pub fn classify(module: &str, tensors: &ModuleTensors) -> Result<Algorithm> {
    let mut found: BTreeMap<Algorithm, Vec<&str>> = BTreeMap::new();
    for local in tensors.keys() {
        if let Some(alg) = KEYS.iter().find(|k| k.1 == *local).and_then(|k| k.2) {
            found.entry(alg).or_default().push(local);
        }
    }
    match found.len() {
        1 => Ok(*found.keys().next().unwrap_or(&Algorithm::Locon)),
        0 => Err(Error::module(
            module,
            format!(
                "only {} and no weight factors: nothing to convert",
                tensors.keys().copied().collect::<Vec<_>>().join(", ")
            ),
        )),
        _ => Err(Error::module(
            module,
            format!(
                "mixes LyCORIS algorithms in one module: {}; a module is one of LoCon, LoHa, LoKr, … (the file is damaged or was merged by key)",
                found
                    .iter()
                    .map(|(a, keys)| format!("{a} ({})", keys.join(", ")))
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
        )),
    }
}

/// Convert one LyCORIS module to a canonical LoRA layer (see the module docs).
pub fn convert(module: &str, tensors: &ModuleTensors, opts: &Options) -> Result<Converted> {
    let algorithm = classify(module, tensors)?;
    let mut converted = match algorithm {
        Algorithm::Locon => locon::convert(module, tensors, opts)?,
        Algorithm::Loha => loha::convert(module, tensors, opts)?,
        Algorithm::Lokr => lokr::convert(module, tensors, opts)?,
        refused => return Err(Error::module(module, refusal(refused))),
    };
    if let Some(scale) = tensors.get("dora_scale") {
        converted.layer.magnitude = Some(dora::magnitude(module, scale, &converted.layer)?);
        converted.origin.dora = true;
    }
    converted
        .layer
        .validate(module)
        .map_err(|e| Error::module(module, e.to_string()))?;
    Ok(converted)
}

/// Whether [`convert`] turns modules of this algorithm into LoRA.
pub fn convertible(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::Locon | Algorithm::Loha | Algorithm::Lokr)
}

/// Why an algorithm has no canonical LoRA form.
pub fn refusal(alg: Algorithm) -> String {
    let why = match alg {
        Algorithm::Full => "stores the dense ΔW itself (`diff`), not low-rank factors; a LoRA of it would be an SVD approximation (bake it into the base model instead)",
        Algorithm::Norm => "trains a normalisation layer's weight and bias (`w_norm`, `b_norm`), which a LoRA cannot express",
        Algorithm::Ia3 => "rescales the base weight (ΔW = diag(w)·W₀ or W₀·diag(w)); converting it needs the base model's weights",
        Algorithm::Oft => "rotates the base weight (W' = R·W₀, R orthogonal), which is not a low-rank update without the base model's weights",
        Algorithm::Glora => "ΔW = s·(W₀·a1·a2 + b1·b2) involves the base weight W₀; converting it needs the base model",
        _ => "is not supported",
    };
    format!("LyCORIS {alg} module: {why}; loratool reads LoCon, LoHa, LoKr and DoRA")
}

// ------------------------------------------------------------------------------------------
// shared helpers for the algorithm files
// ------------------------------------------------------------------------------------------

/// A required tensor, or an error naming the module and the missing key.
fn need<'a>(
    module: &str,
    tensors: &'a ModuleTensors,
    key: &str,
    alg: Algorithm,
) -> Result<&'a Tensor> {
    tensors.get(key).ok_or_else(|| {
        Error::module(
            module,
            format!(
                "{alg} module without '{key}' (has {})",
                tensors.keys().copied().collect::<Vec<_>>().join(", ")
            ),
        )
    })
}

/// A factor as a matrix with its first dimension as rows; float tensors only.
fn mat(module: &str, t: &Tensor, key: &str) -> Result<Mat> {
    if !t.dtype().is_float() {
        return Err(Error::module(
            module,
            format!("'{key}' is {}, not a floating-point tensor", t.dtype()),
        ));
    }
    if t.shape().len() < 2 {
        return Err(Error::module(
            module,
            format!(
                "'{key}' has shape {:?}; factors are at least 2-D",
                t.shape()
            ),
        ));
    }
    Mat::rows_of(t, key).map_err(|e| Error::module(module, e.to_string()))
}

/// `alpha / r` under the LyCORIS rule: the module's `alpha` tensor (missing or 0 → `r`).
fn lycoris_scale(module: &str, tensors: &ModuleTensors, rank: usize) -> Result<f64> {
    let Some(t) = tensors.get("alpha") else {
        return Ok(1.0);
    };
    let alpha = t.scalar_value().ok_or_else(|| {
        Error::module(
            module,
            format!(
                "alpha must be a single number (shape [] or [1]), got shape {:?}",
                t.shape()
            ),
        )
    })?;
    if !alpha.is_finite() {
        return Err(Error::module(module, format!("alpha is {alpha}")));
    }
    Ok(if alpha == 0.0 {
        1.0
    } else {
        alpha / rank as f64
    })
}

/// The scale of a module whose rank (for `alpha / r`) is `rank`.
fn scale_for(module: &str, tensors: &ModuleTensors, opts: &Options, rank: usize) -> Result<f64> {
    match opts.convention {
        Convention::Lycoris => lycoris_scale(module, tensors, rank),
        Convention::Peft { alpha, rank: cfg } => {
            if cfg != rank {
                return Err(Error::module(
                    module,
                    format!(
                        "the PEFT config gives rank {cfg} but the factors have rank {rank}; PEFT would refuse to load this adapter (size mismatch)"
                    ),
                ));
            }
            Ok(alpha / cfg as f64)
        }
    }
}

/// The base module's shape as far as it is known: from the caller's [`Target`] (checked
/// against the factors), else from a kernel the factors reveal, else a linear layer over the
/// flattened `in·kh·kw`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    kind: LayerKind,
    out: usize,
    in_: usize,
    kh: usize,
    kw: usize,
}

impl Geometry {
    fn resolve(
        module: &str,
        out: usize,
        in_flat: usize,
        kernel: Option<(usize, usize)>,
        target: Option<&Target>,
    ) -> Result<Geometry> {
        if let Some(t) = target {
            let want = t.in_ * t.kh * t.kw;
            let kernel_ok = kernel
                .is_none_or(|k| k == (t.kh, t.kw) || t.kind == LayerKind::Linear && k == (1, 1));
            if t.out != out || want != in_flat || !kernel_ok {
                return Err(Error::module(
                    module,
                    format!(
                        "the factors give ΔW {out}×{in_flat}{}, but the base module is {} [{}, {}, {}, {}]: the LyCORIS module is for a different model",
                        kernel.map(|(h, w)| format!(" with a {h}×{w} kernel")).unwrap_or_default(),
                        t.kind, t.out, t.in_, t.kh, t.kw
                    ),
                ));
            }
            return Ok(Geometry {
                kind: t.kind,
                out: t.out,
                in_: t.in_,
                kh: t.kh,
                kw: t.kw,
            });
        }
        match kernel {
            Some((kh, kw)) if kh * kw > 0 && in_flat.is_multiple_of(kh * kw) => Ok(Geometry {
                kind: LayerKind::Conv,
                out,
                in_: in_flat / (kh * kw),
                kh,
                kw,
            }),
            Some(k) => Err(Error::module(
                module,
                format!("a {k:?} kernel does not divide the {in_flat} input columns"),
            )),
            None => Ok(Geometry {
                kind: LayerKind::Linear,
                out,
                in_: in_flat,
                kh: 1,
                kw: 1,
            }),
        }
    }

    fn in_flat(&self) -> usize {
        self.in_ * self.kh * self.kw
    }

    /// `(down shape, up shape)` for rank `r`.
    fn shapes(&self, r: usize) -> (Vec<usize>, Vec<usize>) {
        match self.kind {
            LayerKind::Conv => (vec![r, self.in_, self.kh, self.kw], vec![self.out, r, 1, 1]),
            _ => (vec![r, self.in_flat()], vec![self.out, r]),
        }
    }

    /// A canonical layer from computed `up` (`out × R`) and `down` (`R × in·kh·kw`), F32.
    fn layer(&self, module: &str, up: &Mat, down: &Mat, alpha: f64) -> Result<LoraLayer> {
        let (ds, us) = self.shapes(down.rows);
        let down = Tensor::from_f32(ds, &down.data, DType::F32)
            .map_err(|e| Error::module(module, e.to_string()))?;
        let up = Tensor::from_f32(us, &up.data, DType::F32)
            .map_err(|e| Error::module(module, e.to_string()))?;
        LoraLayer::new(module, down, up, alpha, self.kind)
    }
}

/// The shape of a factor, for [`Origin::factors`].
fn dims(m: &Mat) -> String {
    format!("{}×{}", m.rows, m.cols)
}

#[cfg(test)]
mod test_util;
#[cfg(test)]
mod tests;
