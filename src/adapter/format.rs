//! The on-disk adapter formats loratool reads and writes. How each is detected, read and
//! written is the codec table (`codec.rs`); this file only names them.

/// An adapter format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    /// PEFT adapter directory (`adapter_config.json` + `adapter_model.safetensors`).
    Peft,
    /// diffusers pipeline LoRA (`pytorch_lora_weights.safetensors`, `unet.`/`text_encoder.` keys).
    Diffusers,
    /// kohya sd-scripts LoRA (`lora_unet_...`, `.lora_down.weight`, `.alpha`).
    Kohya,
    /// llama.cpp LoRA adapter (`.gguf`, `blk.N.attn_q.weight.lora_a`).
    Gguf,
    /// Flux / SD3 LoRA in the BFL / ComfyUI layout (`diffusion_model.double_blocks.0.img_attn.qkv`).
    Comfy,
    /// OneTrainer's Flux LoRA (`lora_transformer_<diffusers path>`), read only.
    OneTrainer,
    /// XLabs' Flux LoRA (`double_blocks.0.processor.qkv_lora1.down.weight`), read only.
    Xlabs,
    /// Standalone LyCORIS on a Flux / SD3 transformer (`lycoris_<module path>`), read only.
    Lycoris,
}

crate::named_enum!(Format, "format", [
    Peft => "peft", [], "PEFT adapter directory (transformers models; PEFT, vLLM, TGI)",
    Diffusers => "diffusers", [], "diffusers pytorch_lora_weights.safetensors (pipe.load_lora_weights)",
    Kohya => "kohya", [], "kohya sd-scripts .safetensors (A1111, ComfyUI, Forge)",
    Gguf => "gguf", [], "llama.cpp LoRA adapter .gguf (llama.cpp, Ollama)",
    Comfy => "comfy", ["bfl"], "Flux/SD3 LoRA on BFL/SAI module names, diffusion_model.* keys (ComfyUI)",
    OneTrainer => "onetrainer", [], "OneTrainer Flux LoRA, lora_transformer_* keys (read only)",
    Xlabs => "xlabs", [], "XLabs Flux LoRA, *.processor.qkv_lora1 keys (read only)",
    Lycoris => "lycoris", [], "standalone LyCORIS on Flux/SD3, lycoris_* keys (read only)",
]);
