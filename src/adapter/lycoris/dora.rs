//! LyCORIS `dora_scale` → the canonical DoRA magnitude (PEFT's `lora_magnitude_vector`).
//!
//! LyCORIS applies `W' = dora_scale ⊙ (W₀+ΔW) / ‖W₀+ΔW‖` with the norm along the axis its
//! shape shows: `[out, 1, …]` per output row (`wd_on_output`, the default since LyCORIS 3.2.0
//! and PEFT's DoRA), `[1, in, …]` per input column (earlier versions). Only the first has a
//! canonical form; the norm's `+ε` (f32 epsilon) is below float error.

use super::super::{LayerKind, LoraLayer};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

pub(super) fn magnitude(module: &str, scale: &Tensor, layer: &LoraLayer) -> Result<Tensor> {
    let (out, in_) = (layer.out_features(), layer.in_features());
    let s = scale.shape();
    if !scale.dtype().is_float() {
        return Err(Error::module(
            module,
            format!("dora_scale is {}, not floating point", scale.dtype()),
        ));
    }
    let trailing_ones = |from: usize| s.iter().skip(from).all(|&d| d == 1);
    let output_axis = s.first() == Some(&out) && trailing_ones(1);
    let input_axis = s.len() >= 2 && s[0] == 1 && s[1] == in_ && trailing_ones(2);
    if output_axis {
        let shape = match layer.kind {
            LayerKind::Conv => vec![1, out, 1, 1],
            _ => vec![out],
        };
        return scale
            .reshaped(shape)
            .map_err(|e| Error::module(module, e.to_string()));
    }
    if input_axis {
        return Err(Error::module(
            module,
            format!(
                "dora_scale {s:?} normalises each input column (LyCORIS before 3.2.0, or wd_on_output=False); canonical DoRA (PEFT, LyCORIS ≥ 3.2.0) normalises output rows, and one cannot be rewritten as the other without the base weights"
            ),
        ));
    }
    Err(Error::module(
        module,
        format!(
            "dora_scale {s:?} fits neither the {out} output rows nor the {in_} input columns of the layer"
        ),
    ))
}
