//! Fused ↔ split projections, exactly: Flux `qkv` / `linear1` (q, k, v, mlp), MMDiT `qkv`,
//! XLabs `qkv_lora*` on one side; diffusers' separate `to_q`, `to_k`, `to_v`, `proj_mlp` on the
//! other. Sizes come from the tensors (each part's `up` rows), checked against the caller's
//! table, never from hard-coded widths.
//!
//! - Split: `B·A` restricted to rows `R_j` is `B[R_j]·A`: every part shares `A` and keeps the
//!   fused module's scale. When `B` is block-diagonal (rank `J·r'`, part `j` using only columns
//!   `j·r'..(j+1)·r'`, as sd-scripts saves `split_qkv` and its own fused conversions), each part
//!   takes only its block: rank `r'`, same scale.
//! - Fuse: `[s₁B₁A₁; …; s_JB_JA_J] = blockdiag(B₁…B_J)·[s₁A₁; …; s_JA_J]` (rank `Σrⱼ`, alpha =
//!   rank, scale 1; when every part has the same scale `s`, `A` is stacked unscaled and the
//!   alpha is `s·Σrⱼ`); when every part has the same `A` and scale, `[B₁; …; B_J]·A` (rank `r`,
//!   alpha kept). A missing part is zero rows of `B` when the caller allows it.
//! - Swap halves: Flux/SD3 `adaLN_modulation` rows are (shift, scale), diffusers'
//!   `norm_out` is (scale, shift): exchange the two row halves of `B`.
//!
//! DoRA magnitudes (per output row) and `lora_B` biases are cut and stacked with the rows.

use super::{LayerKind, LoraLayer};
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};
use std::ops::Range;

fn err(module: &str, msg: String) -> Error {
    Error::module(module, msg)
}

/// `up` as `out × r` f32 rows.
fn up_rows(l: &LoraLayer) -> (usize, usize, Vec<f32>) {
    (l.out_features(), l.rank(), l.up.to_f32())
}

/// Rows `r` of a per-output-row tensor (magnitude, bias), keeping its layout.
fn cut_rows(t: &Tensor, out: usize, r: &Range<usize>, kind: LayerKind) -> Result<Tensor> {
    let v = t.to_f32();
    let part = &v[r.clone()];
    let shape = if kind == LayerKind::Conv && t.shape().len() == 4 {
        vec![1, r.len(), 1, 1]
    } else {
        vec![r.len()]
    };
    debug_assert_eq!(v.len(), out);
    Tensor::from_f32(shape, part, t.dtype())
}

fn up_tensor(
    l: &LoraLayer,
    rows: usize,
    rank: usize,
    data: &[f32],
    dtype: DType,
) -> Result<Tensor> {
    let shape = match l.kind {
        LayerKind::Conv => vec![rows, rank, 1, 1],
        _ => vec![rows, rank],
    };
    Tensor::from_f32(shape, data, dtype)
}

/// Split a LoRA on a fused module into the parts at `ranges` (which must tile its rows).
pub fn split(
    module: &str,
    layer: &LoraLayer,
    parts: &[(String, Range<usize>)],
) -> Result<Vec<(String, LoraLayer)>> {
    let (out, r, up) = up_rows(layer);
    let mut next = 0;
    for (name, range) in parts {
        if range.start != next || range.end <= range.start {
            return Err(err(
                module,
                format!("split part '{name}' rows {range:?} do not continue at row {next}: the parts must tile the fused rows in order"),
            ));
        }
        next = range.end;
    }
    if next != out {
        return Err(err(
            module,
            format!(
                "the fused LoRA has {out} output rows but its parts ({}) cover {next}: this LoRA is for a model of another width",
                parts.iter().map(|p| p.0.as_str()).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    let j = parts.len();
    let block = (j > 1 && r % j == 0).then_some(r / j).filter(|&b| {
        parts.iter().enumerate().all(|(p, (_, rows))| {
            rows.clone()
                .all(|i| (0..r).filter(|c| c / b != p).all(|c| up[i * r + c] == 0.0))
        })
    });
    let dtype = layer.dtype();
    let mut res = Vec::with_capacity(j);
    for (p, (name, rows)) in parts.iter().enumerate() {
        let (down, rank, cols) = match block {
            Some(b) => {
                let a = layer.down.to_f32();
                let per = a.len() / r;
                let mut shape = layer.down.shape().to_vec();
                shape[0] = b;
                let down = Tensor::from_f32(shape, &a[p * b * per..(p + 1) * b * per], dtype)?;
                (down, b, p * b..(p + 1) * b)
            }
            None => (layer.down.clone(), r, 0..r),
        };
        let mut data = Vec::with_capacity(rows.len() * rank);
        for i in rows.clone() {
            data.extend_from_slice(&up[i * r + cols.start..i * r + cols.end]);
        }
        let mut part = LoraLayer::new(
            name,
            down,
            up_tensor(layer, rows.len(), rank, &data, dtype)?,
            layer.alpha * rank as f64 / r as f64,
            layer.kind,
        )?;
        part.magnitude = layer
            .magnitude
            .as_ref()
            .map(|m| cut_rows(m, out, rows, layer.kind))
            .transpose()?;
        part.bias = layer
            .bias
            .as_ref()
            .map(|b| cut_rows(b, out, rows, layer.kind))
            .transpose()?;
        res.push((name.clone(), part));
    }
    Ok(res)
}

/// sd-scripts' Flux `split_qkv` files store the per-projection LoRAs fused block-diagonally
/// with the rank of all parts (`J·r`) but the alpha of one part, and were trained at scale
/// `alpha / r`: the layer with the scale it was trained at (alpha × `parts`). Refuses a layer
/// whose `up` is not block-diagonal over `parts` row ranges.
pub fn sd_scripts_split_qkv(
    module: &str,
    layer: &LoraLayer,
    parts: &[(String, Range<usize>)],
) -> Result<LoraLayer> {
    let split_parts = split(module, layer, parts)?;
    if split_parts
        .iter()
        .any(|(_, p)| p.rank() * parts.len() != layer.rank())
    {
        return Err(err(
            module,
            "not a split_qkv layer: lora_up is not block-diagonal over the q/k/v rows".into(),
        ));
    }
    let mut l = layer.clone();
    l.alpha *= parts.len() as f64;
    Ok(l)
}

/// Exchange the two row halves of the layer's output (and of its magnitude / bias).
pub fn swap_halves(module: &str, layer: &LoraLayer) -> Result<LoraLayer> {
    let (out, r, up) = up_rows(layer);
    if out % 2 != 0 {
        return Err(err(
            module,
            format!("{out} output rows cannot be swapped in halves"),
        ));
    }
    let h = out / 2;
    let swap = |v: &[f32], w: usize| -> Vec<f32> { [&v[h * w..], &v[..h * w]].concat() };
    let mut l = layer.clone();
    l.up = up_tensor(layer, out, r, &swap(&up, r), layer.dtype())?;
    let swap_t =
        |t: &Tensor| Tensor::from_f32(t.shape().to_vec(), &swap(&t.to_f32(), 1), t.dtype());
    l.magnitude = layer.magnitude.as_ref().map(swap_t).transpose()?;
    l.bias = layer.bias.as_ref().map(swap_t).transpose()?;
    Ok(l)
}

/// One part of a fused module: its name, its output rows (from the table) and its layer if the
/// adapter has one.
pub struct FusePart<'a> {
    pub name: &'a str,
    pub rows: usize,
    pub layer: Option<&'a LoraLayer>,
}

/// Fuse per-projection LoRAs into one on the fused module (parts in row order). Missing parts
/// are zero rows when `allow_missing`, else an error naming them.
pub fn fuse(module: &str, parts: &[FusePart<'_>], allow_missing: bool) -> Result<LoraLayer> {
    let present: Vec<&LoraLayer> = parts.iter().filter_map(|p| p.layer).collect();
    let missing: Vec<&str> = parts
        .iter()
        .filter(|p| p.layer.is_none())
        .map(|p| p.name)
        .collect();
    let Some(first) = present.first() else {
        return Err(err(module, "no part of the fused module has a LoRA".into()));
    };
    if !missing.is_empty() && !allow_missing {
        return Err(err(
            module,
            format!(
                "fusing needs every part, and {} {} missing (present: {}); a missing part would become zero rows",
                missing.join(", "),
                if missing.len() == 1 { "is" } else { "are" },
                parts.iter().filter(|p| p.layer.is_some()).map(|p| p.name).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    for p in parts {
        if let Some(l) = p.layer {
            if l.out_features() != p.rows {
                return Err(err(
                    module,
                    format!(
                        "part '{}' has {} output rows, the table says {}",
                        p.name,
                        l.out_features(),
                        p.rows
                    ),
                ));
            }
            let (a, b) = (first.down.shape(), l.down.shape());
            if l.kind != first.kind || a[1..] != b[1..] {
                return Err(err(
                    module,
                    format!(
                        "part '{}' has down {:?} ({}) but '{}' has {:?} ({}): the parts of one fused module share their input",
                        p.name, b, l.kind, parts.iter().find(|q| q.layer.is_some()).map_or("", |q| q.name), a, first.kind
                    ),
                ));
            }
        }
    }
    let dora = present.iter().filter(|l| l.magnitude.is_some()).count();
    if dora != 0 && (dora != present.len() || !missing.is_empty()) {
        return Err(err(
            module,
            "only some parts carry a DoRA magnitude; a fused DoRA needs every part's".into(),
        ));
    }
    let total: usize = parts.iter().map(|p| p.rows).sum();
    let per = first.down.numel() / first.rank();
    let a0 = first.down.to_f32();
    let shared = present
        .iter()
        .all(|l| l.rank() == first.rank() && l.scale() == first.scale() && l.down.to_f32() == a0);
    let (down, up, rank, alpha) = if shared {
        let r = first.rank();
        let mut up = Vec::with_capacity(total * r);
        for p in parts {
            match p.layer {
                Some(l) => up.extend(l.up.to_f32()),
                None => up.extend(std::iter::repeat_n(0.0, p.rows * r)),
            }
        }
        (a0, up, r, first.alpha)
    } else {
        let rank: usize = present.iter().map(|l| l.rank()).sum();
        // parts at one scale keep it (A unscaled, bit-exact copies); else each A takes its
        // part's scale and the fused layer has scale 1
        let common = first.scale();
        let equal = present.iter().all(|l| l.scale() == common);
        let mut down = Vec::with_capacity(rank * per);
        let mut up = vec![0.0f32; total * rank];
        let (mut row, mut col) = (0, 0);
        for p in parts {
            if let Some(l) = p.layer {
                if equal {
                    down.extend(l.down.to_f32());
                } else {
                    let s = l.scale();
                    down.extend(l.down.to_f32().iter().map(|&x| (f64::from(x) * s) as f32));
                }
                let (_, r, b) = up_rows(l);
                for i in 0..p.rows {
                    up[(row + i) * rank + col..(row + i) * rank + col + r]
                        .copy_from_slice(&b[i * r..(i + 1) * r]);
                }
                col += r;
            }
            row += p.rows;
        }
        let alpha = if equal {
            common * rank as f64
        } else {
            rank as f64
        };
        (down, up, rank, alpha)
    };
    let mut dshape = first.down.shape().to_vec();
    dshape[0] = rank;
    let mut fused = LoraLayer::new(
        module,
        Tensor::from_f32(dshape, &down, DType::F32)?,
        up_tensor(first, total, rank, &up, DType::F32)?,
        alpha,
        first.kind,
    )?;
    let stack = |get: &dyn Fn(&LoraLayer) -> Option<&Tensor>| -> Result<Option<Tensor>> {
        if present.iter().all(|l| get(l).is_none()) {
            return Ok(None);
        }
        let mut v = Vec::with_capacity(total);
        for p in parts {
            match p.layer.and_then(get) {
                Some(t) => v.extend(t.to_f32()),
                None => v.extend(std::iter::repeat_n(0.0, p.rows)),
            }
        }
        let shape = match first.kind {
            LayerKind::Conv => vec![1, total, 1, 1],
            _ => vec![total],
        };
        Ok(Some(Tensor::from_f32(shape, &v, DType::F32)?))
    };
    fused.magnitude = stack(&|l| l.magnitude.as_ref())?;
    fused.bias = stack(&|l| l.bias.as_ref())?;
    fused.validate(module)?;
    Ok(fused)
}

#[cfg(test)]
mod tests;
