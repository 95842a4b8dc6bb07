//! The codec table: for every [`Format`], how a path is recognised as it, how it is read into
//! an [`Adapter`], how an adapter is written in it, and which files make up one. Detection,
//! reading, writing and the registry's file lists all go through this one table, so adding a
//! format is one entry here and they cannot disagree.

use super::dit::{self, WriteLayout};
use super::gguf::GgufBase;
use super::{diffusers, gguf, kohya, peft, Adapter, Format, ReadOptions};
use crate::error::{Error, Result};
use crate::io::{SafetensorsFile, WriteReport};
use crate::quant::QuantType;
use std::path::{Path, PathBuf};

/// What a reader gets besides the path.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadContext<'a> {
    pub opts: ReadOptions,
    /// The base model, for formats whose reading depends on it (llama-arch GGUF adapters).
    pub base: Option<&'a GgufBase>,
}

/// What a writer gets besides the adapter and the output path.
#[derive(Clone, Copy, Default)]
pub struct WriteContext<'a> {
    /// The base model, for formats that need it (GGUF names, head counts, tied embeddings).
    pub base: Option<&'a GgufBase>,
    /// Storage type of the factors where the format can store block-quantized data (GGUF);
    /// `None` keeps each factor's float type.
    pub quant: Option<QuantType>,
    /// Called with the number of bytes written as the output grows.
    /// (`Sync`: the safetensors writer produces tensors on several threads.)
    pub progress: Option<&'a (dyn Fn(u64) + Sync)>,
}

/// One format's entry.
pub struct Codec {
    pub format: Format,
    /// Whether a directory holds an adapter of this format (by its file names).
    pub claims_dir: fn(&Path) -> bool,
    /// Whether one tensor name of a `.safetensors` file is this format's (detection counts
    /// them; `None` for formats that are not safetensors files).
    pub claims_key: Option<fn(&str) -> bool>,
    pub read: fn(&Path, &ReadContext<'_>) -> Result<Adapter>,
    pub write: fn(&Adapter, &Path, &WriteContext<'_>) -> Result<WriteReport>,
    /// Files of this format that sit beside a single adapter file and belong to it.
    pub companions: &'static [&'static str],
}

/// Every format loratool knows, in detection priority order (ties in key counts go to the
/// earlier entry).
pub static CODECS: [Codec; 8] = [
    Codec {
        format: Format::Kohya,
        claims_dir: |_| false,
        claims_key: Some(|k| k.starts_with("lora_unet_") || k.starts_with("lora_te")),
        read: |p, cx| {
            if is_dit_file(p)? {
                dit::read(p, cx.opts)
            } else {
                kohya::read(p, cx.opts)
            }
        },
        write: |a, p, cx| {
            single_file(p, "kohya")?;
            if is_dit_adapter(a) {
                dit::write(a, WriteLayout::Kohya, p, &progress_of(cx))
            } else {
                kohya::write(a, p, &progress_of(cx))
            }
        },
        companions: &[],
    },
    Codec {
        format: Format::Comfy,
        claims_dir: |_| false,
        claims_key: Some(|k| {
            [
                "diffusion_model.",
                "text_encoders.",
                "double_blocks.",
                "single_blocks.",
                "joint_blocks.",
                "final_layer.",
            ]
            .iter()
            .any(|p| k.starts_with(p))
                && !k.contains(".processor.")
        }),
        read: |p, cx| dit::read(p, cx.opts),
        write: |a, p, cx| {
            single_file(p, "comfy")?;
            dit::write(a, WriteLayout::Comfy, p, &progress_of(cx))
        },
        companions: &[],
    },
    Codec {
        format: Format::OneTrainer,
        claims_dir: |_| false,
        claims_key: Some(|k| k.starts_with("lora_transformer_")),
        read: |p, cx| dit::read(p, cx.opts),
        write: |_, _, _| Err(read_only(Format::OneTrainer)),
        companions: &[],
    },
    Codec {
        format: Format::Xlabs,
        claims_dir: |_| false,
        claims_key: Some(|k| k.contains(".processor.") && k.contains("_lora")),
        read: |p, cx| dit::read(p, cx.opts),
        write: |_, _, _| Err(read_only(Format::Xlabs)),
        companions: &[],
    },
    Codec {
        format: Format::Lycoris,
        claims_dir: |_| false,
        // also LyCORIS modules on diffusers paths (ai-toolkit's `transformer.<path>.lokr_w1`)
        claims_key: Some(|k| {
            k.starts_with("lycoris_")
                || k.starts_with("transformer.")
                    && super::lycoris::split_key(k)
                        .is_some_and(|(_, l)| super::lycoris::needs_conversion([l]))
        }),
        read: |p, cx| dit::read(p, cx.opts),
        write: |_, _, _| Err(read_only(Format::Lycoris)),
        companions: &[],
    },
    Codec {
        format: Format::Diffusers,
        claims_dir: |d| d.join(diffusers::WEIGHTS_FILE).is_file(),
        claims_key: Some(|k| diffusers::split_component(k).is_some() && k.contains(".lora_")),
        read: |p, cx| diffusers::read(p, cx.opts),
        write: |a, p, cx| diffusers::write(a, p, &progress_of(cx)),
        companions: &[],
    },
    Codec {
        format: Format::Peft,
        claims_dir: |d| d.join(peft::WEIGHTS_FILE).is_file() || d.join(peft::CONFIG_FILE).is_file(),
        claims_key: Some(|k| k.contains(".lora_A") || k.contains(".lora_embedding_")),
        read: |p, cx| peft::read(p, cx.opts),
        write: |a, p, cx| peft::write(a, p, &progress_of(cx)),
        companions: &[peft::CONFIG_FILE],
    },
    Codec {
        format: Format::Gguf,
        claims_dir: |_| false,
        claims_key: None,
        read: |p, cx| gguf::read(p, cx.base, cx.opts),
        write: |a, p, cx| {
            match cx.base {
            Some(base) => gguf::write(a, base, p, cx.quant, &progress_of(cx)),
            None => Err(Error::needs_base(
                p,
                "a llama.cpp GGUF adapter is named after the base model's tensors (architecture, head counts, tied embeddings)",
            )),
        }
        },
        companions: &[],
    },
];

/// kohya / ComfyUI outputs are one file.
fn single_file(p: &Path, what: &str) -> Result<()> {
    if p.is_dir() {
        return Err(Error::Invalid(format!(
            "{} is a directory; {what} output is one .safetensors file (e.g. {}/lora.safetensors)",
            p.display(),
            p.display()
        )));
    }
    Ok(())
}

fn read_only(f: Format) -> Error {
    Error::Invalid(format!(
        "loratool reads the {f} layout but does not write it; write kohya or comfy (ComfyUI, Forge, sd-scripts) or diffusers (diffusers, ai-toolkit) instead"
    ))
}

/// A kohya-named file whose modules are Flux / SD3 ones (read through `adapter::dit`).
fn is_dit_file(p: &Path) -> Result<bool> {
    let file = SafetensorsFile::open(p)?;
    Ok(dit::looks_like_dit(
        file.tensors().keys().map(|k| k.as_str()),
    ))
}

/// An adapter for Flux / SD3 rather than SD 1.x / SDXL (a CLIP-L-only adapter stays SD unless
/// it says otherwise).
fn is_dit_adapter(a: &Adapter) -> bool {
    let own = a
        .meta
        .family
        .as_deref()
        .is_some_and(|f| crate::formats::dit::FAMILIES.contains(&f));
    dit::guess_family(a).is_some() && (own || kohya::family_for(a).is_err())
}

fn progress_of<'a>(cx: &'a WriteContext<'_>) -> impl Fn(u64) + 'a {
    move |n| {
        if let Some(p) = cx.progress {
            p(n)
        }
    }
}

/// The table entry of `format`.
pub fn codec(format: Format) -> &'static Codec {
    CODECS
        .iter()
        .find(|c| c.format == format)
        .unwrap_or(&CODECS[0])
}

/// Decide the format of `path` from its layout and tensor names (headers only).
pub fn detect_format(path: &Path) -> Result<Format> {
    if !path.exists() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
        ));
    }
    if path.is_dir() {
        return CODECS
            .iter()
            .find(|c| (c.claims_dir)(path))
            .map(|c| c.format)
            .ok_or_else(|| {
                Error::malformed(
                    path,
                    format!(
                        "not an adapter directory: no {} or {}",
                        peft::WEIGHTS_FILE,
                        diffusers::WEIGHTS_FILE
                    ),
                )
            });
    }
    if crate::io::gguf::is_gguf(path) {
        return Ok(Format::Gguf);
    }
    let file = SafetensorsFile::open(path)?;
    format_of_keys(path, file.tensors().keys().map(|k| k.as_str()))
}

/// The format most of `keys` belong to (each key counted for the first codec claiming it).
pub fn format_of_keys<'a>(path: &Path, keys: impl Iterator<Item = &'a str>) -> Result<Format> {
    let mut counts = [0usize; CODECS.len()];
    for k in keys {
        if let Some(i) = CODECS
            .iter()
            .position(|c| c.claims_key.is_some_and(|claims| claims(k)))
        {
            counts[i] += 1;
        }
    }
    let best = (0..CODECS.len())
        .filter(|&i| counts[i] > 0)
        .max_by_key(|&i| (counts[i], std::cmp::Reverse(i)));
    match best {
        Some(i) => Ok(CODECS[i].format),
        None => Err(Error::unsupported(
            path,
            "no LoRA tensors recognised (expected kohya lora_unet_/lora_te keys, PEFT lora_A/lora_B keys, or diffusers unet./text_encoder. keys)",
        )),
    }
}

/// Read an adapter in `format` (detected when `None`).
pub fn read_adapter(path: &Path, format: Option<Format>, cx: &ReadContext<'_>) -> Result<Adapter> {
    let format = match format {
        Some(f) => f,
        None => detect_format(path)?,
    };
    (codec(format).read)(path, cx)
}

/// Write `adapter` in `format` at `out`.
pub fn write_adapter(
    adapter: &Adapter,
    format: Format,
    out: &Path,
    cx: &WriteContext<'_>,
) -> Result<WriteReport> {
    (codec(format).write)(adapter, out, cx)
}

/// The files that make up the adapter at `path`: the file itself (plus its format's companion
/// files beside it, such as a PEFT `adapter_config.json`), or the regular, non-hidden files at
/// the top of a directory (sub-directories such as training checkpoints are not part of it).
pub fn adapter_files(path: &Path, format: Format) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    if path.is_dir() {
        let rd = std::fs::read_dir(path).map_err(|e| Error::io(path, e))?;
        for e in rd {
            let e = e.map_err(|e| Error::io(path, e))?;
            let hidden = e.file_name().to_string_lossy().starts_with('.');
            if !hidden && e.path().is_file() {
                files.push(e.path());
            }
        }
        files.sort();
    } else {
        files.push(path.to_path_buf());
        for name in codec(format).companions {
            let beside = path.with_file_name(name);
            if beside.is_file() && beside != path {
                files.push(beside);
            }
        }
    }
    if files.is_empty() {
        return Err(Error::malformed(path, "no files in this adapter"));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_has_exactly_one_codec() {
        use crate::named::Named;
        for v in Format::VARIANTS {
            assert_eq!(
                CODECS.iter().filter(|c| c.format == v.value).count(),
                1,
                "{}",
                v.name
            );
        }
    }

    #[test]
    fn keys_go_to_the_format_most_of_them_name() {
        let p = Path::new("x.safetensors");
        let kohya = ["lora_unet_a.lora_down.weight", "lora_te_b.alpha"];
        assert_eq!(
            format_of_keys(p, kohya.into_iter()).ok(),
            Some(Format::Kohya)
        );
        let diffusers = ["unet.a.lora_A.weight", "text_encoder.b.lora_B.weight"];
        assert_eq!(
            format_of_keys(p, diffusers.into_iter()).ok(),
            Some(Format::Diffusers)
        );
        let peft = ["base_model.model.x.lora_A.weight", "m.lora_embedding_A"];
        assert_eq!(format_of_keys(p, peft.into_iter()).ok(), Some(Format::Peft));
        let cases: [(&[&str], Format); 5] = [
            (
                &[
                    "diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight",
                    "text_encoders.clip_l.transformer.text_model.encoder.layers.0.mlp.fc1.alpha",
                ],
                Format::Comfy,
            ),
            (
                &[
                    "lora_transformer_x_embedder.lora_down.weight",
                    "lora_transformer_x_embedder.alpha",
                    "lora_te1_text_model_encoder_layers_0_mlp_fc1.alpha",
                ],
                Format::OneTrainer,
            ),
            (
                &["double_blocks.0.processor.qkv_lora1.down.weight"],
                Format::Xlabs,
            ),
            (&["lycoris_context_embedder.lokr_w1"], Format::Lycoris),
            (&["transformer.x_embedder.lokr_w1"], Format::Lycoris),
        ];
        for (keys, want) in cases {
            assert_eq!(
                format_of_keys(p, keys.iter().copied()).ok(),
                Some(want),
                "{keys:?}"
            );
        }
        assert!(format_of_keys(p, ["m.lora_down.weight"].into_iter()).is_err());
    }
}
