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
}

crate::named_enum!(Format, "format", [
    Peft => "peft", [], "PEFT adapter directory (transformers models; PEFT, vLLM, TGI)",
    Diffusers => "diffusers", [], "diffusers pytorch_lora_weights.safetensors (pipe.load_lora_weights)",
    Kohya => "kohya", [], "kohya sd-scripts .safetensors (A1111, ComfyUI, Forge)",
    Gguf => "gguf", [], "llama.cpp LoRA adapter .gguf (llama.cpp, Ollama)",
]);
