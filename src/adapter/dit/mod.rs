//! Flux.1 and SD3 / SD3.5 adapters in the key layouts people ship, read into and written from
//! the canonical adapter (diffusers module paths: `transformer.<path>`, `text_encoder.…`,
//! T5 `text_encoder_2.…` (Flux) / `text_encoder_3.…` (SD3)).
//!
//! Owns: which tensor names each layout uses and how a module of that layout maps onto table
//! rows (`formats/{flux1,sd3_medium,sd35_large,sd35_medium}.tsv`, read through
//! `formats::dit`): whole, a row slice of a fused projection (Flux `qkv`, `linear1`, MMDiT
//! `qkv`), or with its two row halves swapped (`final_layer.adaLN_modulation.1` vs `norm_out`).
//! The math of splitting / fusing / swapping is `adapter::fused`; LyCORIS modules are
//! converted by `adapter::lycoris`.
//!
//! Layouts ([`Layout`]): kohya sd-scripts (`lora_unet_double_blocks_0_img_attn_qkv`,
//! `lora_unet_joint_blocks_0_x_block_attn_qkv`, `lora_te1_`/`lora_te2_`/`lora_te3_`),
//! BFL / ComfyUI (`diffusion_model.<BFL path>` or the bare BFL path, `text_encoders.clip_l.
//! transformer.…`, with `lora_A/B` or `lora_down/up`), OneTrainer (`lora_transformer_<diffusers
//! path>`, `lora_te1_` CLIP-L, `lora_te2_` T5), XLabs (`double_blocks.0.processor.qkv_lora1`),
//! standalone LyCORIS (`lycoris_<diffusers path>` as SimpleTuner writes, or `lycoris_<BFL
//! path>`), and diffusers paths (`transformer.<path>`) carrying LyCORIS keys.

mod names;
mod read;
mod write;

pub use names::Layout;
pub use read::{looks_like_dit, read};
pub use write::{guess_family, write, WriteLayout};
