//! Re-encode the tensors of a GGUF model or LoRA adapter to one ggml type, with llama-quantize's
//! rules for which tensors stay as they are and what a row that does not fit the block becomes.
//!
//! Models: a tensor is quantized when it has at least 2 dimensions, its name ends in `weight`
//! and it is not a norm or one of the tensors llama-quantize keeps ([`KEPT_FRAGMENTS`]);
//! everything else is copied byte for byte in its own type (1-D tensors and norms stay F32).
//! Adapters (which llama-quantize cannot open): every 2-D `lora_a` / `lora_b`. The type is the
//! same for every tensor, as `llama-quantize --pure` does (no per-layer Q4_K_M mixtures). Rows
//! whose length is not a multiple of the type's block fall back as llama-quantize does (Q4_K →
//! Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, Q2_K/Q3_K → Q4_0, then F16 if that still does not fit).
//! Already-quantized tensors are re-quantized only when allowed, as llama-quantize's
//! `--allow-requantize`, since every re-quantization loses precision.
//!
//! Memory: one tensor's output bytes plus a bounded f32 window of its rows.

use crate::error::{Error, Result};
use crate::io::gguf::{write_gguf, GgufFile, GgufTensorInfo, GgufValue, PendingGgufTensor};
use crate::quant::{dequantize_into, quantize_into, QuantType};
use indexmap::IndexMap;
use std::borrow::Cow;
use std::path::Path;

/// f32 values decoded at a time per tensor (16 MiB).
const WINDOW_VALUES: usize = 4 << 20;

#[derive(Clone, Copy, Debug)]
pub struct QuantizeOptions {
    pub target: QuantType,
    /// Re-quantize tensors that are already block-quantized (precision loss compounds).
    pub allow_requantize: bool,
}

/// What happens to one tensor.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TensorQuant {
    pub name: String,
    pub from: &'static str,
    pub to: &'static str,
    /// Why the tensor is not at the requested type, if it is not.
    pub note: Option<String>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// `general.file_type` (llama_ftype) written for each requested type. K-quants are written
/// uniformly, which llama.cpp names the "S" variants of its mixtures.
pub fn llama_ftype(t: QuantType) -> u32 {
    match t {
        QuantType::F32 => 0,
        QuantType::F16 => 1,
        QuantType::Q4_0 => 2,
        QuantType::Q4_1 => 3,
        QuantType::Q8_0 => 7,
        QuantType::Q5_0 => 8,
        QuantType::Q5_1 => 9,
        QuantType::Q2_K => 10,
        QuantType::Q3_K => 11,
        QuantType::Q4_K => 14,
        QuantType::Q5_K => 16,
        QuantType::Q6_K => 18,
        QuantType::BF16 => 32,
    }
}

/// llama-quantize's replacement for a type whose block does not divide the row.
fn fallback(t: QuantType) -> QuantType {
    match t {
        QuantType::Q4_K => QuantType::Q5_0,
        QuantType::Q5_K => QuantType::Q5_1,
        QuantType::Q6_K => QuantType::Q8_0,
        QuantType::Q2_K | QuantType::Q3_K => QuantType::Q4_0,
        _ => QuantType::F16,
    }
}

/// Name fragments of tensors llama-quantize never quantizes (llama-quant.cpp,
/// `tensor_allows_quantization`): norms, MoE routers, vision/audio positional tensors, SSM and
/// short convolutions, RWKV mixing vectors.
const KEPT_FRAGMENTS: [&str; 20] = [
    "_norm.weight",
    "ffn_gate_inp.weight",
    "ffn_gate_tid2eid.weight",
    "altup",
    "laurel",
    "per_layer_model_proj",
    "ssm_conv1d",
    "shortconv.conv.weight",
    "indexer.k_proj.weight",
    "indexer.q_proj.weight",
    "attn_rel_b.weight",
    ".position_embd",
    "sam.pos_embd",
    "sam.neck.",
    "sam.net_",
    ".rel_pos",
    ".patch_embd",
    ".patch_merger",
    "a.rvq.codebook",
    "mm.a.code_embd",
];
const RWKV_KEPT: [&str; 15] = [
    "first",
    "w0",
    "w1",
    "w2",
    "v0",
    "v1",
    "v2",
    "a0",
    "a1",
    "a2",
    "g1",
    "g2",
    "decay_w1",
    "decay_w2",
    "lerp_fused",
];

/// Whether llama-quantize would quantize this model tensor at all.
fn model_tensor_quantizable(name: &str, info: &GgufTensorInfo) -> bool {
    let rwkv = name
        .rsplit_once(".time_mix_")
        .and_then(|(_, rest)| rest.strip_suffix(".weight"))
        .is_some_and(|k| RWKV_KEPT.contains(&k));
    info.dims.len() >= 2
        && name.ends_with("weight")
        && !KEPT_FRAGMENTS.iter().any(|k| name.contains(k))
        && !rwkv
        && name != "position_embd.weight"
        && name != "token_types.weight"
}

/// The type each tensor gets (None: copied as is) and why it is not the requested one.
fn plan_tensor(
    name: &str,
    info: &GgufTensorInfo,
    adapter: bool,
    opts: QuantizeOptions,
) -> Result<(Option<QuantType>, Option<String>)> {
    let Some(from) = QuantType::from_ggml_type(info.ggml_type) else {
        return Ok((None, Some("type has no loratool codec; copied".into())));
    };
    let eligible = if adapter {
        info.dims.len() == 2 && (name.ends_with(".lora_a") || name.ends_with(".lora_b"))
    } else {
        model_tensor_quantizable(name, info)
    };
    if !eligible {
        return Ok((None, None));
    }
    let row = info.dims[0] as usize;
    let mut to = opts.target;
    let mut note = None;
    if !row.is_multiple_of(to.block_size()) {
        let first = fallback(to);
        to = if row.is_multiple_of(first.block_size()) {
            first
        } else {
            QuantType::F16
        };
        note = Some(format!(
            "rows of {row} do not fit {}'s {}-value blocks",
            opts.target,
            opts.target.block_size()
        ));
    }
    if to == from {
        return Ok((None, note));
    }
    if from.is_quantized() && !opts.allow_requantize {
        return Err(Error::Invalid(format!(
            "tensor '{name}' is already {from}; re-quantizing it to {to} compounds the rounding error. Quantize from the F16/F32 model, or pass --allow-requantize"
        )));
    }
    Ok((Some(to), note))
}

/// Decode `src` (rows of `row` values of type `from`) and encode it as `to`, a window of rows at
/// a time.
fn transcode(src: &[u8], from: QuantType, to: QuantType, row: usize) -> Result<Vec<u8>> {
    let (in_row, out_row) = (from.row_bytes(row)?, to.row_bytes(row)?);
    let rows = src.len() / in_row;
    let mut out = vec![0u8; rows * out_row];
    let per_window = (WINDOW_VALUES / row).max(1);
    let mut window = vec![0f32; per_window.min(rows) * row];
    for (src, dst) in src
        .chunks(in_row * per_window)
        .zip(out.chunks_mut(out_row * per_window))
    {
        let n = src.len() / in_row * row;
        dequantize_into(from, src, row, &mut window[..n])?;
        quantize_into(to, &window[..n], row, dst)?;
    }
    Ok(out)
}

/// Quantize `file` into `out`. Returns what happened to every tensor.
pub fn quantize_gguf(
    file: &GgufFile,
    out: &Path,
    opts: QuantizeOptions,
    progress: &dyn Fn(u64),
) -> Result<Vec<TensorQuant>> {
    let adapter = file.kv.get("general.type").and_then(GgufValue::as_str) == Some("adapter");
    let mut plans = Vec::with_capacity(file.tensors.len());
    for (name, info) in &file.tensors {
        let (to, note) = plan_tensor(name, info, adapter, opts).map_err(|e| match e {
            Error::Invalid(m) => Error::malformed(file.path(), m),
            other => other,
        })?;
        plans.push((name, info, to, note));
    }
    let mut kv: IndexMap<String, GgufValue> = file.kv.clone();
    if !adapter {
        kv.insert(
            "general.file_type".into(),
            GgufValue::U32(llama_ftype(opts.target)),
        );
    }
    kv.insert("general.quantization_version".into(), GgufValue::U32(2));
    let mut report = Vec::with_capacity(plans.len());
    let mut pending = Vec::with_capacity(plans.len());
    for (name, info, to, note) in &plans {
        let from_name = crate::io::gguf::ggml_type_layout(info.ggml_type).map_or("?", |l| l.2);
        let (ggml_type, bytes_out) = match to {
            Some(t) => {
                let rows: u64 = info.dims[1..].iter().product();
                (
                    t.ggml_type(),
                    rows * t.row_bytes(info.dims[0] as usize)? as u64,
                )
            }
            None => (info.ggml_type, info.byte_len),
        };
        report.push(TensorQuant {
            name: (*name).clone(),
            from: from_name,
            to: to.map_or(from_name, |t| t.name()),
            note: note.clone(),
            bytes_in: info.byte_len,
            bytes_out,
        });
        let to = *to;
        let from = QuantType::from_ggml_type(info.ggml_type);
        let row = info.dims[0] as usize;
        pending.push(PendingGgufTensor {
            name: (*name).clone(),
            dims: info.dims.clone(),
            ggml_type,
            data: Box::new(move || {
                let src = file.tensor_bytes(name)?;
                Ok(match (to, from) {
                    (Some(to), Some(from)) => Cow::Owned(transcode(src, from, to, row)?),
                    _ => Cow::Borrowed(src),
                })
            }),
            // the input's pages go once written: RSS stays near one tensor
            written: Some(Box::new(move || file.release(name))),
        });
    }
    write_gguf(out, &kv, &pending, progress)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(dims: &[u64], ty: QuantType) -> GgufTensorInfo {
        GgufTensorInfo {
            dims: dims.to_vec(),
            ggml_type: ty.ggml_type(),
            offset: 0,
            byte_len: 0,
        }
    }

    fn opts(t: QuantType) -> QuantizeOptions {
        QuantizeOptions {
            target: t,
            allow_requantize: false,
        }
    }

    #[test]
    fn which_tensors_and_which_type() {
        let f32m = |d: &[u64]| info(d, QuantType::F32);
        let q4k = opts(QuantType::Q4_K);
        let plan = |n: &str, i: &GgufTensorInfo, a: bool| plan_tensor(n, i, a, q4k).unwrap().0;
        assert_eq!(
            plan("blk.0.attn_q.weight", &f32m(&[256, 8]), false),
            Some(QuantType::Q4_K)
        );
        assert_eq!(plan("blk.0.attn_norm.weight", &f32m(&[256]), false), None);
        assert_eq!(plan("output_norm.weight", &f32m(&[256, 1]), false), None);
        assert_eq!(
            plan("blk.0.ffn_gate_inp.weight", &f32m(&[256, 8]), false),
            None
        );
        assert_eq!(plan("blk.0.attn_q.bias", &f32m(&[256, 8]), false), None);
        // 352 = 11·32: not a multiple of 256, Q5_0 fits
        assert_eq!(
            plan("blk.0.ffn_down.weight", &f32m(&[352, 8]), false),
            Some(QuantType::Q5_0)
        );
        // rank-4 lora_b: nothing with blocks fits
        assert_eq!(
            plan("blk.0.attn_q.weight.lora_b", &f32m(&[4, 128]), true),
            Some(QuantType::F16)
        );
        assert_eq!(
            plan("blk.0.attn_q.weight.lora_a", &f32m(&[256, 4]), true),
            Some(QuantType::Q4_K)
        );
        // already quantized: refused unless allowed
        let q8 = info(&[256, 8], QuantType::Q8_0);
        assert!(plan_tensor("blk.0.attn_q.weight", &q8, false, q4k).is_err());
        let allow = QuantizeOptions {
            allow_requantize: true,
            ..q4k
        };
        assert_eq!(
            plan_tensor("blk.0.attn_q.weight", &q8, false, allow)
                .unwrap()
                .0,
            Some(QuantType::Q4_K)
        );
        // same type: copied
        assert_eq!(
            plan_tensor("blk.0.attn_q.weight", &q8, false, opts(QuantType::Q8_0))
                .unwrap()
                .0,
            None
        );
    }

    #[test]
    fn transcode_in_windows_equals_whole_tensor() {
        let row = 64;
        let rows = (WINDOW_VALUES / row) * 2 + 3;
        let data: Vec<f32> = (0..rows * row)
            .map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0)
            .collect();
        let src = crate::quant::quantize(QuantType::F32, &data, row).unwrap();
        let whole = crate::quant::quantize(QuantType::Q4_0, &data, row).unwrap();
        assert_eq!(
            transcode(&src, QuantType::F32, QuantType::Q4_0, row).unwrap(),
            whole
        );
    }
}
