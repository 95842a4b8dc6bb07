//! LoCon (`lora_down`/`lora_up`, LyCORIS `algo=locon`) with an optional Tucker core
//! `lora_mid` `[r, r, kh, kw]` between a 1×1 `lora_down` `[r, in, 1, 1]` and `lora_up`:
//! `ΔW[o,c,h,w] = s·Σᵢⱼ up[o,i]·mid[i,j,h,w]·down[j,c]`, so `down'[i, (c,h,w)] =
//! Σⱼ mid[i,j,h,w]·down[j,c]` gives a plain conv LoRA of the same rank, exactly.

use super::mat::{tucker_down, Mat};
use super::reduce::reduce;
use super::{
    dims, mat, need, scale_for, Algorithm, Converted, Geometry, ModuleTensors, Options, Origin,
};
use crate::adapter::LoraLayer;
use crate::error::{Error, Result};

const ALG: Algorithm = Algorithm::Locon;

pub(super) fn convert(module: &str, t: &ModuleTensors, opts: &Options) -> Result<Converted> {
    if let Some(k) = ["bias_indices", "bias_values", "bias_size"]
        .into_iter()
        .find(|k| t.contains_key(k))
    {
        return Err(Error::module(
            module,
            format!(
                "LoCon with a sparse residual ('{k}', LyCORIS extract_locon --use_sparse_bias): the residual is not low-rank and a LoRA cannot hold it"
            ),
        ));
    }
    let down_t = need(module, t, "lora_down", ALG)?;
    let up_t = need(module, t, "lora_up", ALG)?;
    let up = mat(module, up_t, "lora_up")?;
    let (ds, us) = (down_t.shape(), up_t.shape());
    let r = ds.first().copied().unwrap_or(0);
    if up.cols != r || r == 0 {
        return Err(Error::module(
            module,
            format!(
                "lora_up {us:?} and lora_down {ds:?} do not multiply (ranks {} and {r})",
                up.cols
            ),
        ));
    }
    let scale = scale_for(module, t, opts, r)?;
    let Some(mid) = t.get("lora_mid") else {
        // plain LoCon: the tensors are already a LoRA; keep their bytes and dtype
        let in_flat = down_t.numel() / r;
        let kernel = (ds.len() == 4).then(|| (ds[2], ds[3]));
        let geo = Geometry::resolve(module, up.rows, in_flat, kernel, opts.target.as_ref())?;
        let factors = format!("up {}·down {r}×{in_flat}", dims(&up));
        let exact_rank = r.min(up.rows).min(in_flat);
        let origin = |rank, truncation| Origin {
            algorithm: ALG,
            tucker: false,
            dora: false,
            factors: factors.clone(),
            exact_rank,
            rank,
            truncation,
            note: None,
        };
        if opts.max_rank.is_some_and(|k| k < r) || r > up.rows.min(in_flat) {
            let down = mat(module, down_t, "lora_down")?;
            let red = reduce(module, up, down, scale, opts.max_rank)?;
            let layer = geo.layer(module, &red.up, &red.down, red.alpha)?;
            let mut o = origin(red.down.rows, red.truncation);
            o.exact_rank = red.exact_rank;
            return Ok(Converted { layer, origin: o });
        }
        let (dshape, ushape) = geo.shapes(r);
        let reshape = |x: &crate::tensor::Tensor, s| {
            x.reshaped(s)
                .map_err(|e| Error::module(module, e.to_string()))
        };
        let layer = LoraLayer::new(
            module,
            reshape(down_t, dshape)?,
            reshape(up_t, ushape)?,
            scale * r as f64,
            geo.kind,
        )?;
        return Ok(Converted {
            layer,
            origin: origin(r, None),
        });
    };
    // Tucker: down is [r, in, 1, 1] (or [r, in]), mid [r_up, r, kh, kw]
    let ms = mid.shape();
    if ms.len() != 4 || ms[0] != r || ms[1] != r {
        return Err(Error::module(
            module,
            format!("lora_mid {ms:?} does not sit between lora_up {us:?} and lora_down {ds:?} (needs [{r}, {r}, kh, kw])"),
        ));
    }
    if down_t.numel() % r != 0 || ds.iter().skip(2).any(|&d| d != 1) {
        return Err(Error::module(
            module,
            format!("with lora_mid, lora_down must be [r, in, 1, 1]; got {ds:?}"),
        ));
    }
    let down = Mat::from_tensor(down_t, r, "lora_down")
        .map_err(|e| Error::module(module, e.to_string()))?;
    let down =
        tucker_down(mid, &down, "lora_mid").map_err(|e| Error::module(module, e.to_string()))?;
    let geo = Geometry::resolve(
        module,
        up.rows,
        down.cols,
        Some((ms[2], ms[3])),
        opts.target.as_ref(),
    )?;
    let factors = format!(
        "up {}·mid {r}×{r}×{}×{}·down {r}×{}",
        dims(&up),
        ms[2],
        ms[3],
        down.cols / (ms[2] * ms[3])
    );
    let red = reduce(module, up, down, scale, opts.max_rank)?;
    Ok(Converted {
        layer: geo.layer(module, &red.up, &red.down, red.alpha)?,
        origin: Origin {
            algorithm: ALG,
            tucker: true,
            dora: false,
            factors,
            exact_rank: red.exact_rank,
            rank: red.down.rows,
            truncation: red.truncation,
            note: None,
        },
    })
}
