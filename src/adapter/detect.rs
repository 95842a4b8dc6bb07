//! Which format a path holds, and which model family an adapter is for.

use super::{diffusers, gguf, kohya, peft, Adapter, Format, ReadOptions};
use crate::error::{Error, Result};
use crate::formats::sd;
use crate::io::SafetensorsFile;
use std::path::Path;

/// Decide the format of `path` from its layout and tensor names (header only).
pub fn detect_format(path: &Path) -> Result<Format> {
    if !path.exists() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
        ));
    }
    if path.is_dir() {
        if path.join(peft::WEIGHTS_FILE).is_file() || path.join("adapter_config.json").is_file() {
            return Ok(Format::Peft);
        }
        if path.join(diffusers::WEIGHTS_FILE).is_file() {
            return Ok(Format::Diffusers);
        }
        return Err(Error::malformed(
            path,
            format!(
                "not an adapter directory: no {} or {}",
                peft::WEIGHTS_FILE,
                diffusers::WEIGHTS_FILE
            ),
        ));
    }
    if crate::io::gguf::is_gguf(path) {
        return Ok(Format::Gguf);
    }
    let file = SafetensorsFile::open(path)?;
    format_of_keys(path, file.tensors().keys().map(|k| k.as_str()))
}

pub fn format_of_keys<'a>(path: &Path, keys: impl Iterator<Item = &'a str>) -> Result<Format> {
    let (mut kohya, mut diffusers, mut peft) = (0usize, 0usize, 0usize);
    for k in keys {
        if k.starts_with("lora_unet_") || k.starts_with("lora_te") {
            kohya += 1;
        } else if diffusers::COMPONENTS
            .iter()
            .any(|c| k.starts_with(c) && k[c.len()..].starts_with('.'))
            && k.contains(".lora_")
        {
            diffusers += 1;
        } else if k.contains(".lora_A") || k.contains(".lora_embedding_") {
            peft += 1;
        }
    }
    if kohya > 0 && kohya >= diffusers + peft {
        Ok(Format::Kohya)
    } else if diffusers > 0 && diffusers >= peft {
        Ok(Format::Diffusers)
    } else if peft > 0 {
        Ok(Format::Peft)
    } else {
        Err(Error::unsupported(
            path,
            "no LoRA tensors recognised (expected kohya lora_unet_/lora_te keys, PEFT lora_A/lora_B keys, or diffusers unet./text_encoder. keys)",
        ))
    }
}

/// Read an adapter in any supported format (`from` forces one).
pub fn read_adapter(path: &Path, from: Option<Format>, opts: ReadOptions) -> Result<Adapter> {
    read_adapter_for_base(path, from, opts, None)
}

/// [`read_adapter`], with the base model a llama-arch GGUF adapter needs to undo its q/k
/// permutation (ignored by the other formats).
pub fn read_adapter_for_base(
    path: &Path,
    from: Option<Format>,
    opts: ReadOptions,
    base: Option<&gguf::GgufBase>,
) -> Result<Adapter> {
    let format = match from {
        Some(f) => f,
        None => detect_format(path)?,
    };
    match format {
        Format::Peft => peft::read(path, opts),
        Format::Diffusers => diffusers::read(path, opts),
        Format::Kohya => kohya::read(path, opts),
        Format::Gguf => gguf::read(path, base, opts),
    }
}

/// A family name from module paths alone (used where no table or config says better).
pub fn guess_family<'a>(paths: impl Iterator<Item = &'a str> + Clone) -> Option<String> {
    let all = |f: &dyn Fn(&str) -> bool| paths.clone().all(f);
    if all(&|p| {
        p.starts_with("model.layers.") || p.starts_with("model.embed_tokens") || p == "lm_head"
    }) {
        return Some("llama-like decoder".to_string());
    }
    if all(&|p| p.starts_with("transformer.h.") || p.starts_with("transformer.wte")) {
        return Some("gpt2-like decoder".to_string());
    }
    None
}

/// The SD family whose table knows every layer of `adapter` at its shape, if any.
pub fn guess_sd_family(adapter: &Adapter) -> Option<&'static str> {
    sd::FAMILIES.iter().copied().find(|fam| {
        let Some(table) = sd::table(fam) else {
            return false;
        };
        adapter.layers.iter().all(|(path, layer)| {
            table.by_canonical(path).is_some_and(|row| {
                row.out == layer.out_features()
                    && row.in_ == layer.in_features()
                    && (row.kh, row.kw) == layer.kernel()
            })
        })
    })
}
