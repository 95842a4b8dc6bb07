//! Which inputs contribute to which module, checked before any arithmetic: one shape per module
//! across inputs, no tensors a merge cannot combine exactly (DoRA magnitudes, LoRA biases,
//! `modules_to_save`), and finite factor values. Owns loading a module's factors as f32 and the
//! shape bookkeeping of the merged layer; owns no merge arithmetic.

use super::MergeInput;
use crate::adapter::{LayerKind, LoraLayer};
use crate::error::{Error, Result};
use crate::linalg::{all_finite, sum_squares};
use crate::tensor::{decode_f32_rows, DType, Tensor};
use std::collections::BTreeMap;

/// The shape of a module's delta, which every input must agree on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub kind: LayerKind,
    /// `out_features` (rows of ΔW).
    pub out: usize,
    /// `in_features`; for a conv, input channels; for an embedding, `num_embeddings`.
    pub input: usize,
    /// `(kh, kw)` for a conv, `(1, 1)` otherwise.
    pub kernel: (usize, usize),
}

impl Geometry {
    pub fn of(layer: &LoraLayer) -> Geometry {
        Geometry {
            kind: layer.kind,
            out: layer.out_features(),
            input: layer.in_features(),
            kernel: layer.kernel(),
        }
    }

    /// Columns of the delta as a matrix: `in·kh·kw` (a conv's `down` reshaped to `r × in·kh·kw`).
    pub fn cols(&self) -> usize {
        self.input * self.kernel.0 * self.kernel.1
    }

    /// 3×3 (non-1×1) convolutions take `conv_rank` where a rank is chosen (sd-scripts' rule).
    pub fn is_spatial_conv(&self) -> bool {
        self.kind == LayerKind::Conv && self.kernel != (1, 1)
    }

    fn describe(&self) -> String {
        match self.kind {
            LayerKind::Conv => format!(
                "conv out {} in {} kernel {}x{}",
                self.out, self.input, self.kernel.0, self.kernel.1
            ),
            kind => format!("{kind} out {} in {}", self.out, self.input),
        }
    }

    /// `down` shape of a rank-`rank` layer of this geometry.
    pub fn down_shape(&self, rank: usize) -> Vec<usize> {
        match self.kind {
            LayerKind::Conv => vec![rank, self.input, self.kernel.0, self.kernel.1],
            _ => vec![rank, self.input],
        }
    }

    /// `up` shape of a rank-`rank` layer of this geometry.
    pub fn up_shape(&self, rank: usize) -> Vec<usize> {
        match self.kind {
            LayerKind::Conv => vec![self.out, rank, 1, 1],
            _ => vec![self.out, rank],
        }
    }

    /// A validated layer from row-major f32 factors (`up` `out × rank`, `down` `rank × cols`).
    pub fn layer(
        &self,
        path: &str,
        up: &[f32],
        down: &[f32],
        rank: usize,
        alpha: f64,
        dtype: DType,
    ) -> Result<LoraLayer> {
        if dtype == DType::F16 {
            let limit = f32::from(half::f16::MAX);
            // the largest magnitude as an integer max over the bit patterns (vectorises; NaN
            // sorts above every finite value), then the search only when something is beyond
            let largest = |v: &[f32]| v.iter().map(|x| x.to_bits() & 0x7fff_ffff).max();
            let beyond = largest(up).max(largest(down)).unwrap_or(0) > limit.to_bits();
            if let Some(x) = up
                .iter()
                .chain(down)
                .filter(|_| beyond)
                .find(|x| x.abs() > limit)
            {
                return Err(Error::module(
                    path,
                    format!(
                        "the merged factors hold {x}, beyond float16's range (the output takes \
                         the first input's dtype); lower the merge weights, or give a float32 \
                         adapter as the first input"
                    ),
                ));
            }
        }
        let down = Tensor::from_f32(self.down_shape(rank), down, dtype)?;
        let up = Tensor::from_f32(self.up_shape(rank), up, dtype)?;
        LoraLayer::new(path, down, up, alpha, self.kind)
    }
}

/// One module of the output: its shape and the inputs that have it (in input order).
pub(crate) struct ModulePlan<'a> {
    pub path: &'a str,
    pub geometry: Geometry,
    /// `(input index, layer)` for every input holding this module.
    pub sources: Vec<(usize, &'a LoraLayer)>,
}

/// Every module of any input, sorted by path, after checking that the inputs can be merged.
pub(crate) fn plan<'a>(inputs: &'a [MergeInput<'a>]) -> Result<Vec<ModulePlan<'a>>> {
    for input in inputs {
        refuse_unmergeable(input)?;
    }
    let mut modules: BTreeMap<&'a str, ModulePlan<'a>> = BTreeMap::new();
    for (index, input) in inputs.iter().enumerate() {
        for (path, layer) in &input.adapter.layers {
            let geometry = Geometry::of(layer);
            let entry = modules.entry(path.as_str()).or_insert_with(|| ModulePlan {
                path: path.as_str(),
                geometry,
                sources: Vec::new(),
            });
            if entry.geometry != geometry {
                let (first, _) = entry.sources[0];
                return Err(Error::module(
                    path,
                    format!(
                        "the inputs disagree on the module's shape: {} has {}, {} has {}; \
                         they were trained for different base models or layers and cannot be merged",
                        inputs[first].label,
                        entry.geometry.describe(),
                        input.label,
                        geometry.describe()
                    ),
                ));
            }
            entry.sources.push((index, layer));
        }
    }
    Ok(modules.into_values().collect())
}

/// DoRA magnitudes, LoRA biases and fully trained tensors have no exact weighted combination
/// (a DoRA magnitude renormalises the whole weight row, a bias and a full tensor are not
/// low-rank deltas), and PEFT's own merge silently drops or re-initialises them (PEFT issue
/// #3761). Refuse rather than write a result that does not mean what the user asked.
fn refuse_unmergeable(input: &MergeInput<'_>) -> Result<()> {
    if let Some(name) = input.adapter.full.keys().next() {
        return Err(Error::Invalid(format!(
            "{}: tensor '{name}' is a fully trained tensor (PEFT modules_to_save); merging has no \
             exact meaning for it. Convert the adapter without it first, or bake it into the base model.",
            input.label
        )));
    }
    for (path, layer) in &input.adapter.layers {
        let what = if layer.magnitude.is_some() {
            "a DoRA magnitude vector"
        } else if layer.bias.is_some() {
            "a LoRA bias (lora_B.bias)"
        } else {
            continue;
        };
        return Err(Error::module(
            path,
            format!(
                "{} has {what}; a weighted merge of it has no exact meaning, so loratool does \
                 not merge such adapters (bake them into the base model instead)",
                input.label
            ),
        ));
    }
    Ok(())
}

/// One input's factors on a module, decoded to f32.
pub(crate) struct Term {
    /// Index of the input (for labels and per-input random streams).
    pub input: usize,
    /// The merge weight `wᵢ`.
    pub weight: f64,
    /// The layer's own scale `αᵢ / rᵢ`.
    pub scale: f64,
    pub rank: usize,
    /// `out × rank`, row-major.
    pub up: Vec<f32>,
    /// `rank × cols`, row-major (a conv's `[r, in, kh, kw]` is already this layout).
    pub down: Vec<f32>,
}

impl Term {
    /// `wᵢ · αᵢ / rᵢ`: the coefficient of `Bᵢ·Aᵢ` in the weighted sum of deltas.
    pub fn coefficient(&self) -> f64 {
        self.weight * self.scale
    }
}

/// Decodes every source of `plan` to f32, checking that the values are finite.
pub(crate) fn load_terms(
    plan: &ModulePlan<'_>,
    inputs: &[MergeInput<'_>],
    weights: &[f64],
) -> Result<Vec<Term>> {
    plan.sources
        .iter()
        .map(|&(input, layer)| {
            let up = layer.up.to_f32();
            let down = layer.down.to_f32();
            for (name, values) in [("lora up (B)", &up), ("lora down (A)", &down)] {
                if all_finite(values) {
                    continue;
                }
                if let Some(i) = values.iter().position(|x| !x.is_finite()) {
                    return Err(Error::module(
                        plan.path,
                        format!(
                            "{}: {name} has the non-finite value {} at flat index {i}",
                            inputs[input].label, values[i]
                        ),
                    ));
                }
            }
            Ok(Term {
                input,
                weight: weights[input],
                scale: layer.scale(),
                rank: layer.rank(),
                up,
                down,
            })
        })
        .collect()
}

/// Decodes one factor of an input (`rows × cols` as stored, row-major) into `buf` with rows
/// `stride` apart, times `weight` (in f64, rounded once), refusing non-finite values with an
/// error naming the module, the input and the flat index; returns `Σ x²` of the factor before
/// weighting.
#[allow(clippy::too_many_arguments)]
pub(crate) fn decode_factor(
    plan: &ModulePlan<'_>,
    label: &str,
    name: &str,
    tensor: &Tensor,
    cols: usize,
    buf: &mut [f32],
    stride: usize,
    weight: f64,
) -> Result<f64> {
    decode_f32_rows(tensor.dtype(), tensor.bytes(), cols, buf, stride);
    let rows = tensor.numel() / cols.max(1);
    let mut squares = 0.0;
    for (i, row) in buf.chunks_mut(stride).take(rows).enumerate() {
        let row = &mut row[..cols];
        if !all_finite(row) {
            if let Some(j) = row.iter().position(|x| !x.is_finite()) {
                return Err(Error::module(
                    plan.path,
                    format!(
                        "{label}: {name} has the non-finite value {} at flat index {}",
                        row[j],
                        i * cols + j
                    ),
                ));
            }
        }
        squares += sum_squares(row);
        if weight != 1.0 {
            row.iter_mut()
                .for_each(|x| *x = (weight * f64::from(*x)) as f32);
        }
    }
    Ok(squares)
}

/// The dtype of the output factors: the first input's (its first layer's). f32 when that is
/// not a type loratool writes from floats (fp8), or when no input has a layer.
pub(crate) fn output_dtype(inputs: &[MergeInput<'_>]) -> DType {
    match inputs
        .iter()
        .find_map(|i| i.adapter.layers.values().next().map(|l| l.dtype()))
    {
        Some(d @ (DType::F16 | DType::BF16 | DType::F32 | DType::F64)) => d,
        _ => DType::F32,
    }
}
