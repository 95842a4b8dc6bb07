//! The canonical adapter every reader produces and every writer consumes.
//!
//! Module paths are the base model's own module names in Hugging Face terms, without
//! wrappers (`model.layers.0.self_attn.q_proj`, `unet.down_blocks.0...to_q`,
//! `text_encoder.text_model.encoder.layers.0.self_attn.q_proj`). A layer's scale is always
//! `alpha / rank`: readers fold rsLoRA and per-module patterns into each layer's alpha, so
//! nothing downstream knows which format an adapter came from.

pub mod codec;
pub mod diffusers;
pub mod dit;
pub mod family;
mod format;
pub mod fused;
pub mod gguf;
pub mod kohya;
pub mod kohya_hash;
pub mod lycoris;
pub mod peft;
pub mod peft_config;
pub mod summary;

pub use crate::formats::LayerKind;
pub use format::Format;

use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};
use indexmap::IndexMap;
use std::collections::BTreeMap;

/// One low-rank update `ΔW = (alpha / r) · up · down`.
///
/// Shapes: Linear `down [r, in]`, `up [out, r]`; Conv `down [r, in, kh, kw]`,
/// `up [out, r, 1, 1]`; Embedding `down [r, num_embeddings]`, `up [embedding_dim, r]`
/// (PEFT's `lora_embedding_A/B`; the delta on the `[num_embeddings, dim]` table is transposed).
#[derive(Clone, Debug)]
pub struct LoraLayer {
    pub down: Tensor,
    pub up: Tensor,
    pub alpha: f64,
    pub kind: LayerKind,
    /// DoRA magnitude, carried through as stored by PEFT (`[out]`, conv `[1, out, 1, 1]`).
    pub magnitude: Option<Tensor>,
    /// `lora_B` bias (`[out]`), added to the base bias on merge.
    pub bias: Option<Tensor>,
}

impl LoraLayer {
    /// A layer after checking that the factor shapes fit together.
    pub fn new(
        module: &str,
        down: Tensor,
        up: Tensor,
        alpha: f64,
        kind: LayerKind,
    ) -> Result<LoraLayer> {
        let layer = LoraLayer {
            down,
            up,
            alpha,
            kind,
            magnitude: None,
            bias: None,
        };
        layer.validate(module)?;
        Ok(layer)
    }

    pub fn validate(&self, module: &str) -> Result<()> {
        let err = |m: String| Err(Error::module(module, m));
        let (d, u) = (self.down.shape(), self.up.shape());
        match self.kind {
            LayerKind::Linear | LayerKind::Embedding => {
                if d.len() != 2 || u.len() != 2 {
                    return err(format!(
                        "{} factors must be 2-D, got down {d:?} and up {u:?}",
                        self.kind
                    ));
                }
            }
            LayerKind::Conv => {
                if d.len() != 4 || u.len() != 4 || u[2] != 1 || u[3] != 1 {
                    return err(format!(
                        "conv factors must be down [r, in, kh, kw] and up [out, r, 1, 1], got down {d:?} and up {u:?}"
                    ));
                }
            }
        }
        if d[0] == 0 || d[0] != u[1] {
            return err(format!(
                "rank mismatch: down {d:?} has rank {}, up {u:?} has rank {}",
                d[0], u[1]
            ));
        }
        if !self.alpha.is_finite() {
            return err(format!("alpha {} is not a finite number", self.alpha));
        }
        if !self.down.dtype().is_float() || !self.up.dtype().is_float() {
            return err(format!(
                "factors must be floating point, got {} and {}",
                self.down.dtype(),
                self.up.dtype()
            ));
        }
        if let Some(b) = &self.bias {
            if b.numel() != u[0] {
                return err(format!(
                    "bias {:?} does not match out features {}",
                    b.shape(),
                    u[0]
                ));
            }
        }
        if let Some(m) = &self.magnitude {
            if m.numel() != u[0] {
                return err(format!(
                    "DoRA magnitude {:?} does not match out features {}",
                    m.shape(),
                    u[0]
                ));
            }
        }
        Ok(())
    }

    pub fn rank(&self) -> usize {
        self.down.shape()[0]
    }
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank() as f64
    }
    pub fn out_features(&self) -> usize {
        self.up.shape()[0]
    }
    /// Input features; for conv, input channels.
    pub fn in_features(&self) -> usize {
        self.down.shape()[1]
    }
    /// `(kh, kw)` for conv, `(1, 1)` otherwise.
    pub fn kernel(&self) -> (usize, usize) {
        match self.kind {
            LayerKind::Conv => (self.down.shape()[2], self.down.shape()[3]),
            _ => (1, 1),
        }
    }
    pub fn param_count(&self) -> usize {
        self.down.numel()
            + self.up.numel()
            + self.magnitude.as_ref().map_or(0, |m| m.numel())
            + self.bias.as_ref().map_or(0, |b| b.numel())
    }
    /// The dtype of the factors (down's, which readers require to equal up's in practice).
    pub fn dtype(&self) -> DType {
        self.down.dtype()
    }

    /// The same layer with every tensor cast to `dtype` (bit-identical when it already is).
    pub fn cast(&self, dtype: DType) -> Result<LoraLayer> {
        Ok(LoraLayer {
            down: self.down.cast(dtype)?,
            up: self.up.cast(dtype)?,
            alpha: self.alpha,
            kind: self.kind,
            magnitude: self.magnitude.as_ref().map(|m| m.cast(dtype)).transpose()?,
            bias: self.bias.as_ref().map(|b| b.cast(dtype)).transpose()?,
        })
    }
}

#[derive(Clone, Debug, Default)]
pub struct AdapterMeta {
    /// Model family when known: `sd15`, `sdxl`, or a transformers `model_type` guess.
    pub family: Option<String>,
    pub base_model: Option<String>,
    pub source_format: Option<Format>,
    /// PEFT `fan_in_fan_out`: the base stores these weights as `(in, out)` (GPT-2 Conv1D).
    pub fan_in_fan_out: bool,
    pub task_type: Option<String>,
    /// The source file's own metadata (kohya `ss_*`, `modelspec.*`), passed to writers that
    /// can keep it.
    pub source_metadata: IndexMap<String, String>,
    /// Things a reader skipped or changed, for the CLI to print.
    pub warnings: Vec<String>,
    /// Layers converted from LyCORIS modules: canonical path → how (algorithm, factor ranks,
    /// exact rank, truncation, scale rule).
    pub lycoris: BTreeMap<String, lycoris::Origin>,
}

#[derive(Clone, Debug, Default)]
pub struct Adapter {
    pub layers: BTreeMap<String, LoraLayer>,
    /// Fully trained tensors (PEFT `modules_to_save`), keyed by canonical tensor name
    /// (`score.weight`).
    pub full: BTreeMap<String, Tensor>,
    pub meta: AdapterMeta,
}

impl Adapter {
    pub fn param_count(&self) -> usize {
        self.layers.values().map(|l| l.param_count()).sum::<usize>()
            + self.full.values().map(|t| t.numel()).sum::<usize>()
    }

    /// Every layer cast to `dtype`.
    pub fn cast(&self, dtype: DType) -> Result<Adapter> {
        let mut out = self.clone();
        for (path, layer) in out.layers.iter_mut() {
            *layer = layer
                .cast(dtype)
                .map_err(|e| Error::module(path, e.to_string()))?;
        }
        for t in out.full.values_mut() {
            *t = t.cast(dtype)?;
        }
        Ok(out)
    }
}

/// What readers may do with content they cannot represent, and what the reading is for.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadOptions {
    /// Warn about unknown keys instead of failing.
    pub skip_unknown: bool,
    /// The adapter is read to be described, not computed with: a reader may then skip work
    /// that changes values but not shapes, ranks, alphas or dtypes, and that needs more than
    /// the file (a llama-arch GGUF adapter's q/k rows stay RoPE-permuted, so no base model is
    /// needed). Such an adapter must not be written or used in an op.
    pub layout_only: bool,
}

/// Fail, or warn, about keys a reader cannot represent; never drop them silently.
pub(crate) fn report_unknown(
    path: &std::path::Path,
    unknown: &[String],
    what: &str,
    opts: ReadOptions,
    warnings: &mut Vec<String>,
) -> Result<()> {
    if unknown.is_empty() {
        return Ok(());
    }
    let err = Error::UnknownKeys {
        path: path.to_path_buf(),
        what: what.to_string(),
        keys: unknown.to_vec(),
    };
    if opts.skip_unknown {
        warnings.push(format!("skipped {err}"));
        Ok(())
    } else {
        Err(err)
    }
}
