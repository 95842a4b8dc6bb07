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
