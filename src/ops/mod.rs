//! Operations on canonical adapters: `Adapter -> Adapter`, pure (no files, no printing).
//! They work per module on the factors and never form a dense `out × in` matrix for a LoRA
//! unless a method is defined on the dense delta (TIES, DARE, magnitude pruning).
//! The `gguf_*` operations stream a GGUF file through (one tensor in memory at a time) and
//! write the result themselves.

pub mod bake_model;
pub mod extract;
pub mod gguf_bake;
pub mod gguf_quantize;
pub mod merge;
pub mod model_layout;
pub mod quant_preset;
pub mod resize;
mod schedule;
pub mod spectrum;

/// One adapter of a bake and its weight (llama.cpp's `--lora-scaled` scale), with the label
/// errors name it by.
pub struct BakeInput<'a> {
    pub label: String,
    pub adapter: &'a crate::adapter::Adapter,
    pub weight: f64,
}

/// One weight per input: `given` in input order, or 1 each when none are given. Every weight
/// must be a finite number.
pub fn input_weights(given: &[f64], inputs: usize) -> crate::error::Result<Vec<f64>> {
    use crate::error::Error;
    if given.is_empty() {
        return Ok(vec![1.0; inputs]);
    }
    if given.len() != inputs {
        return Err(Error::bad_option(
            "weights",
            format!(
                "{} values for {inputs} inputs; give one weight per input, in input order",
                given.len()
            ),
        ));
    }
    if let Some(w) = given.iter().find(|w| !w.is_finite()) {
        return Err(Error::bad_option(
            "weights",
            format!("{w} is not a finite number"),
        ));
    }
    Ok(given.to_vec())
}
