//! LoHa (`hada_w1_a/b`, `hada_w2_a/b`, LyCORIS `algo=loha`, PEFT `LoHaConfig`):
//! `ΔW = s·(W₁ ⊙ W₂)`, `Wᵢ = aᵢ·bᵢ`. With the face-splitting products
//! `(a₁•a₂)[o, p·r₂+q] = a₁[o,p]·a₂[o,q]` and `(b₁∘b₂)[p·r₂+q, j] = b₁[p,j]·b₂[q,j]`,
//! `W₁ ⊙ W₂ = (a₁•a₂)·(b₁∘b₂)`: a LoRA of rank `r₁·r₂`, exact, at `O((out+in)·r₁r₂)` cost.
//!
//! Tucker (conv k > 1, `hada_t1/t2` `[r, r, kh, kw]`, then `hada_w*_a` is `[r, out]` and
//! `hada_w*_b` `[r, in]`): `Wᵢ[o,c,h,w] = Σₚ,q tᵢ[p,q,h,w]·aᵢ[p,o]·bᵢ[q,c]` is first brought to
//! the plain form `aᵢᵀ · (tᵢ ×₂ bᵢ)`.
//!
//! `s = alpha / r` with `r = hada_w1_b` rows.

use super::mat::{face_split_cols, face_split_rows, tucker_down, Mat};
use super::reduce::reduce;
use super::{
    dims, mat, need, scale_for, Algorithm, Converted, Geometry, ModuleTensors, Options, Origin,
};
use crate::error::{Error, Result};

const ALG: Algorithm = Algorithm::Loha;

/// `(up out×r, down r×in', kernel if the tensors show one)`.
type Half = (Mat, Mat, Option<(usize, usize)>);

/// One Hadamard factor as `(up out×r, down r×in', kernel if the tensors show one)`.
fn half(module: &str, t: &ModuleTensors, i: u8) -> Result<Half> {
    let (ka, kb, kt) = match i {
        1 => ("hada_w1_a", "hada_w1_b", "hada_t1"),
        _ => ("hada_w2_a", "hada_w2_b", "hada_t2"),
    };
    let a_t = need(module, t, ka, ALG)?;
    let b_t = need(module, t, kb, ALG)?;
    let a = mat(module, a_t, ka)?;
    let b = mat(module, b_t, kb)?;
    if let Some(core) = t.get(kt) {
        let cs = core.shape();
        if cs.len() != 4 || cs[0] != a.rows || cs[1] != b.rows {
            return Err(Error::module(
                module,
                format!(
                    "{kt} {cs:?} does not fit {ka} {:?} and {kb} {:?} (Tucker needs [r, r, kh, kw] with {ka} [r, out], {kb} [r, in])",
                    a_t.shape(),
                    b_t.shape()
                ),
            ));
        }
        let down = tucker_down(core, &b, kt).map_err(|e| Error::module(module, e.to_string()))?;
        return Ok((a.transpose(), down, Some((cs[2], cs[3]))));
    }
    if a.cols != b.rows {
        return Err(Error::module(
            module,
            format!(
                "{ka} {:?} and {kb} {:?} do not multiply",
                a_t.shape(),
                b_t.shape()
            ),
        ));
    }
    let bs = b_t.shape();
    let kernel = (bs.len() == 4).then(|| (bs[2], bs[3]));
    Ok((a, b, kernel))
}

pub(super) fn convert(module: &str, t: &ModuleTensors, opts: &Options) -> Result<Converted> {
    let tucker = t.contains_key("hada_t1") || t.contains_key("hada_t2");
    if tucker && !(t.contains_key("hada_t1") && t.contains_key("hada_t2")) {
        return Err(Error::module(
            module,
            "LoHa with only one of hada_t1 / hada_t2: a Tucker LoHa has both",
        ));
    }
    let (a1, b1, k1) = half(module, t, 1)?;
    let (a2, b2, k2) = half(module, t, 2)?;
    if a1.rows != a2.rows || b1.cols != b2.cols || k1 != k2 {
        return Err(Error::module(
            module,
            format!(
                "the two Hadamard factors have different shapes: W1 {}×{} and W2 {}×{}",
                a1.rows, b1.cols, a2.rows, b2.cols
            ),
        ));
    }
    let r = if tucker {
        need(module, t, "hada_w1_b", ALG)?.shape()[0]
    } else {
        b1.rows
    };
    let scale = scale_for(module, t, opts, r)?;
    let geo = Geometry::resolve(module, a1.rows, b1.cols, k1, opts.target.as_ref())?;
    let factors = format!(
        "({}·{}) ⊙ ({}·{})",
        dims(&a1),
        dims(&b1),
        dims(&a2),
        dims(&b2)
    );
    let up = face_split_rows(&a1, &a2);
    let down = face_split_cols(&b1, &b2);
    let red = reduce(module, up, down, scale, opts.max_rank)?;
    Ok(Converted {
        layer: geo.layer(module, &red.up, &red.down, red.alpha)?,
        origin: Origin {
            algorithm: ALG,
            tucker,
            dora: false,
            factors,
            exact_rank: red.exact_rank,
            rank: red.down.rows,
            truncation: red.truncation,
            note: None,
        },
    })
}
