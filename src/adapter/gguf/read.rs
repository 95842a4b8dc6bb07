//! llama.cpp GGUF LoRA → canonical adapter: names back through `formats/gguf_names.tsv`, the
//! q/k RoPE permutation undone on `lora_b` (which needs the base's head counts), the token
//! embedding's `lora_a` transposed back, every module given the file's alpha.

use super::base::GgufBase;
use super::rope::permute_rows;
use crate::adapter::{
    report_unknown, Adapter, AdapterMeta, Format, LayerKind, LoraLayer, ReadOptions,
};
use crate::error::{Error, Result};
use crate::formats::gguf::{arch_for_gguf, known_archs, to_hf, ArchInfo, Transform};
use crate::io::gguf::{GgufFile, GgufTensorInfo, GgufValue};
use crate::quant::{dequantize, QuantType};
use crate::tensor::{DType, Tensor};
use std::collections::BTreeMap;
use std::path::Path;

/// A tensor's values as f32 with its row-major 2-D shape, and the float dtype to keep.
fn load(
    file: &GgufFile,
    name: &str,
    info: &GgufTensorInfo,
) -> Result<(Vec<f32>, [usize; 2], DType)> {
    let bad = |m: String| Error::bad_tensor(file.path(), name, m);
    let ty = QuantType::from_ggml_type(info.ggml_type).ok_or_else(|| {
        bad(format!(
            "ggml type {} is not one loratool can read",
            info.ggml_type
        ))
    })?;
    if info.dims.len() != 2 {
        return Err(bad(format!("expected 2 dimensions, got {:?}", info.dims)));
    }
    let (cols, rows) = (info.dims[0] as usize, info.dims[1] as usize);
    let values = dequantize(ty, file.tensor_bytes(name)?, cols).map_err(|e| bad(e.to_string()))?;
    let dtype = ty.float_dtype().unwrap_or(DType::F32);
    Ok((values, [rows, cols], dtype))
}

fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; v.len()];
    for i in 0..rows {
        for j in 0..cols {
            t[j * rows + i] = v[i * cols + j];
        }
    }
    t
}

/// What the header of a LoRA GGUF says: its architecture's table and its alpha.
struct Header {
    arch: &'static ArchInfo,
    arch_name: String,
    alpha: f64,
}

/// Check that `file` is a LoRA adapter for an architecture loratool has a table for (and, with
/// a base, the base's architecture); read its alpha.
fn header(file: &GgufFile, base: Option<&GgufBase>) -> Result<Header> {
    let path = file.path();
    let kv_str = |k: &str| file.kv.get(k).and_then(GgufValue::as_str);
    if kv_str("general.type") != Some("adapter") {
        return Err(Error::unsupported(
            path,
            format!(
                "general.type is {:?}, not \"adapter\": this GGUF is a model, not a LoRA adapter",
                kv_str("general.type").unwrap_or("missing")
            ),
        ));
    }
    if kv_str("adapter.type") != Some("lora") {
        return Err(Error::unsupported(
            path,
            format!(
                "adapter.type is {:?}; loratool reads LoRA adapters",
                kv_str("adapter.type").unwrap_or("missing")
            ),
        ));
    }
    let arch_name = file
        .architecture()
        .ok_or_else(|| Error::malformed(path, "no general.architecture"))?;
    let arch = arch_for_gguf(arch_name).ok_or_else(|| {
        Error::unsupported(
            path,
            format!(
                "no GGUF name table for architecture '{arch_name}' (known: {})",
                known_archs().join(", ")
            ),
        )
    })?;
    if let Some(b) = base {
        if b.arch.arch != arch.arch {
            return Err(Error::Invalid(format!(
                "{}: the adapter is for architecture {}, the base {} is {}",
                path.display(),
                arch.arch,
                b.source,
                b.arch.arch
            )));
        }
    }
    let alpha = match file.kv.get("adapter.lora.alpha") {
        None => 0.0,
        Some(v) => v.as_f64().filter(|a| a.is_finite()).ok_or_else(|| {
            Error::malformed(path, format!("adapter.lora.alpha is not a number ({v})"))
        })?,
    };
    Ok(Header {
        arch,
        arch_name: arch_name.to_string(),
        alpha,
    })
}

/// The file's tensors as `(base tensor, lora_a, lora_b)` pairs; norms are skipped with a
/// warning (llama.cpp ignores them), anything else is unknown.
struct Pairs<'f> {
    pairs: BTreeMap<String, (Option<&'f str>, Option<&'f str>)>,
    unknown: Vec<String>,
    warnings: Vec<String>,
}

fn pair_tensors(file: &GgufFile) -> Pairs<'_> {
    let mut out = Pairs {
        pairs: BTreeMap::new(),
        unknown: Vec::new(),
        warnings: Vec::new(),
    };
    for name in file.tensors.keys() {
        if let Some(t) = name.strip_suffix(".lora_a") {
            out.pairs.entry(t.to_string()).or_default().0 = Some(name);
        } else if let Some(t) = name.strip_suffix(".lora_b") {
            out.pairs.entry(t.to_string()).or_default().1 = Some(name);
        } else if name.ends_with("_norm.weight") {
            out.warnings.push(format!(
                "skipped norm tensor {name} (llama.cpp ignores norms in adapters)"
            ));
        } else {
            out.unknown.push(name.clone());
        }
    }
    out
}

/// One canonical layer from a `lora_a` / `lora_b` pair of `transform`'s kind: the token
/// embedding's `lora_a` transposed back, llama q/k `lora_b` rows un-permuted (unless reading
/// the layout only), the file's alpha (0 means scale 1, as llama.cpp).
fn layer_of_pair(
    file: &GgufFile,
    header: &Header,
    module: &str,
    transform: Transform,
    (a, b): (&str, &str),
    base: Option<&GgufBase>,
    opts: ReadOptions,
) -> Result<LoraLayer> {
    let path = file.path();
    let (av, [ar, ac], adt) = load(file, a, &file.tensors[a])?;
    let (bv, [br, bc], bdt) = load(file, b, &file.tensors[b])?;
    let embed = transform == Transform::Embed;
    // GGUF lora_a is [r, in] row-major ([vocab, r] for the embedding); lora_b is [out, r]
    let (down, rank, cols) = if embed {
        (transpose(&av, ar, ac), ac, ar)
    } else {
        (av, ar, ac)
    };
    if bc != rank {
        return Err(Error::bad_tensor(
            path,
            b,
            format!("rank {bc} does not match lora_a's {rank} (is lora_a transposed?)"),
        ));
    }
    let rope = matches!(transform, Transform::RopeQ | Transform::RopeK) && header.arch.rope_permute;
    // the stored order has the same shape: enough to describe the adapter
    let heads = if rope && !opts.layout_only {
        let base = base.ok_or_else(|| {
            Error::needs_base(
                path,
                format!(
                    "{} q/k LoRA tensors are stored RoPE-permuted, and undoing that needs the base model's head counts",
                    header.arch_name
                ),
            )
        })?;
        Some(if transform == Transform::RopeQ {
            base.n_head
        } else {
            base.n_kv_head
        })
    } else {
        None
    };
    let up = match heads {
        Some(h) => permute_rows(&bv, rank, h, true)
            .map_err(|e| Error::bad_tensor(path, b, e.to_string()))?,
        None => bv,
    };
    let dtype = if adt == bdt { adt } else { DType::F32 };
    let kind = if embed {
        LayerKind::Embedding
    } else {
        LayerKind::Linear
    };
    let alpha = if header.alpha == 0.0 {
        rank as f64
    } else {
        header.alpha
    };
    LoraLayer::new(
        module,
        Tensor::from_f32(vec![rank, cols], &down, dtype)?,
        Tensor::from_f32(vec![br, rank], &up, dtype)?,
        alpha,
        kind,
    )
}

/// Read a GGUF LoRA. `base` is needed for llama-arch files with q/k modules (their head
/// counts undo the permutation) unless `opts.layout_only`; it is checked to be the same
/// architecture.
pub fn read(path: &Path, base: Option<&GgufBase>, opts: ReadOptions) -> Result<Adapter> {
    let file = GgufFile::open(path)?;
    let header = header(&file, base)?;
    let Pairs {
        pairs,
        mut unknown,
        mut warnings,
    } = pair_tensors(&file);
    let mut layers = BTreeMap::new();
    for (tensor, (a, b)) in &pairs {
        let (Some(a), Some(b)) = (*a, *b) else {
            return Err(Error::bad_tensor(
                path,
                tensor,
                "has only one of lora_a / lora_b",
            ));
        };
        let Some((module, transform)) = to_hf(&header.arch.arch, tensor) else {
            unknown.push(format!("{tensor}.lora_a/.lora_b"));
            continue;
        };
        let layer = layer_of_pair(&file, &header, &module, transform, (a, b), base, opts)?;
        layers.insert(module, layer);
    }
    report_unknown(path, &unknown, "GGUF tensor", opts, &mut warnings)?;
    if layers.is_empty() {
        return Err(Error::unsupported(
            path,
            "no LoRA tensor pairs (.lora_a / .lora_b) in this GGUF",
        ));
    }
    let kv_str = |k: &str| file.kv.get(k).and_then(GgufValue::as_str);
    let mut source_metadata = indexmap::IndexMap::new();
    for k in ["general.name", "general.base_model.0.name"] {
        if let Some(v) = kv_str(k) {
            source_metadata.insert(k.to_string(), v.to_string());
        }
    }
    Ok(Adapter {
        layers,
        full: Default::default(),
        meta: AdapterMeta {
            family: Some(header.arch.arch.clone()),
            base_model: kv_str("general.base_model.0.name").map(str::to_string),
            source_format: Some(Format::Gguf),
            source_metadata,
            warnings,
            ..Default::default()
        },
    })
}
