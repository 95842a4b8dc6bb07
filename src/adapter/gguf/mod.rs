//! llama.cpp LoRA adapters in GGUF (`convert_lora_to_gguf.py`'s layout), both ways.
//!
//! Tensors are `<base tensor>.lora_a` (`[r, in]` row-major) and `.lora_b` (`[out, r]`);
//! metadata `general.architecture` (the base's), `general.type = adapter`,
//! `adapter.type = lora`, `adapter.lora.alpha` (FLOAT32, one per file: llama.cpp scales every
//! module by `alpha / r`). llama-arch q/k `lora_b` rows are RoPE-permuted like the base weights.

pub mod base;
mod read;
pub mod rope;
mod write;

pub use base::GgufBase;
pub use read::read;
pub use write::write;
