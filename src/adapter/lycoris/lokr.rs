//! LoKr (`lokr_w1[_a/_b]`, `lokr_w2[_a/_b]`, `lokr_t2`, LyCORIS `algo=lokr`, PEFT
//! `LoKrConfig`): `ΔW = s·kron(W₁, W₂)`, `W₁` `a×c`, `W₂` `b×(d·kh·kw)` (a conv kernel stays
//! with `W₂`), out = `a·b`, in = `c·d`.
//!
//! With thin SVDs `W₁ = U·Σ·Vᵀ` and `W₂ = U'·T·V'ᵀ`, `kron(W₁, W₂) = Σᵢⱼ σᵢτⱼ·(uᵢ⊗u'ⱼ)(vᵢ⊗v'ⱼ)ᵀ`
//! is itself an SVD (the `uᵢ⊗u'ⱼ` are orthonormal), so the exact LoRA has rank
//! `rank(W₁)·rank(W₂)` and keeping the `k` largest products `σᵢτⱼ` is the optimal rank-`k`
//! truncation (Eckart–Young), from the two small SVDs alone. A factored `Wᵢ` (`_a·_b`, or the
//! Tucker `lokr_t2`) takes the factored SVD; a full one a dense SVD of its own (small) size.
//!
//! Memory: with no rank asked for, the exact rank is kept up to
//! [`unasked_rank_cap`](super::unasked_rank_cap) (factors at most half the dense ΔW, on modules
//! of ≥ 2²⁰ weights); beyond it the optimal truncation is taken and reported, so reading a
//! file never forms dense-sized factors unasked.
//!
//! Scale: `alpha / r` with `r` = `lokr_w2_b` rows, else `lokr_w1_b` rows. When both factors
//! are full, LyCORIS and ComfyUI use scale 1 (LyCORIS stores alpha = dim then), while PEFT
//! still applies `alpha / r`: [`Convention`](super::Convention) decides, and the origin says so.

use super::mat::{tucker_down, Mat};
use super::reduce::numerical_rank;
use super::{
    dims, lycoris_scale, mat, need, scale_for, Algorithm, Convention, Converted, Geometry,
    ModuleTensors, Options, Origin, Truncation,
};
use crate::error::{Error, Result};
use crate::linalg::{exact_svd_dense_f64, factored_svd, LowRankSvd};

const ALG: Algorithm = Algorithm::Lokr;

/// One Kronecker factor.
enum Factor {
    Full(Mat),
    /// `up · down`, rank = `up.cols`.
    Product(Mat, Mat),
}

impl Factor {
    fn rows(&self) -> usize {
        match self {
            Factor::Full(m) => m.rows,
            Factor::Product(u, _) => u.rows,
        }
    }
    fn cols(&self) -> usize {
        match self {
            Factor::Full(m) => m.cols,
            Factor::Product(_, d) => d.cols,
        }
    }
    fn describe(&self, name: &str) -> String {
        match self {
            Factor::Full(m) => format!("{name} {} full", dims(m)),
            Factor::Product(u, d) => format!("{name} {}·{}", dims(u), dims(d)),
        }
    }
    fn svd(&self, module: &str) -> Result<LowRankSvd> {
        match self {
            Factor::Full(m) => exact_svd_dense_f64(&m.data, m.rows, m.cols),
            Factor::Product(u, d) => factored_svd(&u.data, &d.data, u.rows, u.cols, d.cols),
        }
        .map_err(|e| Error::module(module, e.to_string()))
    }
}

fn product(module: &str, up: Mat, down: Mat, ku: &str, kd: &str) -> Result<Factor> {
    if up.cols != down.rows {
        return Err(Error::module(
            module,
            format!(
                "{ku} ({}×{}) and {kd} ({}×{}) do not multiply",
                up.rows, up.cols, down.rows, down.cols
            ),
        ));
    }
    Ok(Factor::Product(up, down))
}

pub(super) fn convert(module: &str, t: &ModuleTensors, opts: &Options) -> Result<Converted> {
    let w1 = match t.get("lokr_w1") {
        Some(w) => Factor::Full(mat(module, w, "lokr_w1")?),
        None => {
            let a = mat(module, need(module, t, "lokr_w1_a", ALG)?, "lokr_w1_a")?;
            let b = mat(module, need(module, t, "lokr_w1_b", ALG)?, "lokr_w1_b")?;
            product(module, a, b, "lokr_w1_a", "lokr_w1_b")?
        }
    };
    let (w2, kernel) = match (t.get("lokr_w2"), t.get("lokr_t2")) {
        (Some(w), _) => {
            let s = w.shape();
            (
                Factor::Full(mat(module, w, "lokr_w2")?),
                (s.len() == 4).then(|| (s[2], s[3])),
            )
        }
        (None, Some(core)) => {
            // Tucker: w2_a [r, b], w2_b [r, d], t2 [r, r, kh, kw]
            let a = mat(module, need(module, t, "lokr_w2_a", ALG)?, "lokr_w2_a")?;
            let b = mat(module, need(module, t, "lokr_w2_b", ALG)?, "lokr_w2_b")?;
            let cs = core.shape();
            if cs.len() != 4 || cs[0] != a.rows || cs[1] != b.rows {
                return Err(Error::module(
                    module,
                    format!(
                        "lokr_t2 {cs:?} does not fit lokr_w2_a ({}×{}) and lokr_w2_b ({}×{}) (Tucker needs [r, r, kh, kw], [r, b], [r, d])",
                        a.rows, a.cols, b.rows, b.cols
                    ),
                ));
            }
            let down = tucker_down(core, &b, "lokr_t2")
                .map_err(|e| Error::module(module, e.to_string()))?;
            (Factor::Product(a.transpose(), down), Some((cs[2], cs[3])))
        }
        (None, None) => {
            let a_t = need(module, t, "lokr_w2_a", ALG)?;
            let b_t = need(module, t, "lokr_w2_b", ALG)?;
            let bs = b_t.shape();
            let kernel = (bs.len() == 4).then(|| (bs[2], bs[3]));
            let f = product(
                module,
                mat(module, a_t, "lokr_w2_a")?,
                mat(module, b_t, "lokr_w2_b")?,
                "lokr_w2_a",
                "lokr_w2_b",
            )?;
            (f, kernel)
        }
    };
    let tucker = t.contains_key("lokr_t2");
    let scale_rank = match (&w1, &w2) {
        (_, Factor::Product(u, _)) => Some(u.cols),
        (Factor::Product(u, _), Factor::Full(_)) => Some(u.cols),
        (Factor::Full(_), Factor::Full(_)) => None,
    };
    let (scale, note) = match (scale_rank, opts.convention) {
        (Some(r), _) => (scale_for(module, t, opts, r)?, None),
        (None, Convention::Lycoris) => {
            let ignored = lycoris_scale(module, t, 1)?;
            (
                1.0,
                Some(format!(
                    "both Kronecker factors full: scale 1, alpha ({ignored}) ignored, as LyCORIS and ComfyUI apply it"
                )),
            )
        }
        (None, Convention::Peft { alpha, rank }) => (
            alpha / rank as f64,
            Some(format!(
                "both Kronecker factors full: PEFT's scale alpha/r = {alpha}/{rank} applied (LyCORIS and ComfyUI would use 1)"
            )),
        ),
    };
    // the header decides these: a crafted file can claim any size
    let (Some(out), Some(in_flat)) = (
        w1.rows().checked_mul(w2.rows()),
        w1.cols().checked_mul(w2.cols()),
    ) else {
        return Err(Error::module(
            module,
            "kron(w1, w2) is larger than memory can address",
        ));
    };
    let geo = Geometry::resolve(module, out, in_flat, kernel, opts.target.as_ref())?;
    let factors = format!("{} ⊗ {}", w1.describe("w1"), w2.describe("w2"));

    let s1 = w1.svd(module)?;
    let s2 = w2.svd(module)?;
    let r1 = numerical_rank(&s1.s, s1.m.max(s1.n));
    let r2 = numerical_rank(&s2.s, s2.m.max(s2.n));
    let exact = r1 * r2;
    // all products σᵢτⱼ, largest first
    let mut pairs: Vec<(f64, usize, usize)> = Vec::with_capacity(exact);
    for i in 0..r1 {
        for j in 0..r2 {
            pairs.push((s1.s[i] * s2.s[j], i, j));
        }
    }
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    // unasked, a LoKr is never turned into factors larger than half its dense ΔW
    let cap = opts
        .max_rank
        .or_else(|| super::unasked_rank_cap(out, in_flat));
    let keep = cap.map_or(exact, |k| k.min(exact)).max(1);
    let elements = keep.saturating_mul(out.saturating_add(in_flat));
    if elements > MAX_FACTOR_ELEMENTS {
        return Err(Error::module(
            module,
            format!(
                "its LoRA factors at rank {keep} would be {out}×{keep} and {keep}×{in_flat} \
                 ({elements} values), beyond any real model's module; ask for a lower rank"
            ),
        ));
    }
    let total: f64 = pairs.iter().map(|p| p.0 * p.0).sum();
    let dropped: f64 = pairs.iter().skip(keep).map(|p| p.0 * p.0).sum();
    let capped_unasked = opts.max_rank.is_none() && exact > keep;
    let note = match (note, capped_unasked) {
        (n, false) => n,
        (n, true) => Some(
            n.map_or(String::new(), |n| format!("{n}; "))
                + &format!(
                    "exact rank {exact} capped at {keep} (factors at most half the dense {out}×{in_flat} ΔW; ask for a rank to choose)"
                ),
        ),
    };
    let truncation = (exact > keep).then(|| Truncation {
        from: exact,
        to: keep,
        dropped_energy: if total > 0.0 { dropped / total } else { 0.0 },
    });
    let (up, down) = kron_factors(&s1, &s2, &pairs[..keep.min(pairs.len())], keep);
    Ok(Converted {
        layer: geo.layer(module, &up, &down, scale * keep as f64)?,
        origin: Origin {
            algorithm: ALG,
            tucker,
            dora: false,
            factors,
            exact_rank: exact,
            rank: keep,
            truncation,
            note,
        },
    })
}

/// The most values the two LoRA factors of one converted module may hold (1 GiB of f32): the
/// largest real modules (a 12288×3072 Flux projection at its full rank) need a twentieth of it.
const MAX_FACTOR_ELEMENTS: usize = 1 << 28;

/// LoRA factors of `Σ_{(σ,i,j) ∈ pairs} σ·(uᵢ⊗u'ⱼ)(vᵢ⊗v'ⱼ)ᵀ`, with `√σ` on each side; `rank`
/// columns (zero beyond `pairs`, e.g. for an all-zero module).
fn kron_factors(
    s1: &LowRankSvd,
    s2: &LowRankSvd,
    pairs: &[(f64, usize, usize)],
    rank: usize,
) -> (Mat, Mat) {
    let (a, b) = (s1.m, s2.m);
    let (c, d) = (s1.n, s2.n);
    let (k1, k2) = (s1.rank(), s2.rank());
    let out = a * b;
    let n = c * d;
    let mut up = vec![0.0f32; out * rank];
    let mut down = vec![0.0f32; rank * n];
    for (l, &(sigma, i, j)) in pairs.iter().enumerate() {
        let w = sigma.sqrt();
        for i1 in 0..a {
            let x = f64::from(s1.u[i1 * k1 + i]) * w;
            for i2 in 0..b {
                up[(i1 * b + i2) * rank + l] = (x * f64::from(s2.u[i2 * k2 + j])) as f32;
            }
        }
        let v1 = &s1.vt[i * c..(i + 1) * c];
        let v2 = &s2.vt[j * d..(j + 1) * d];
        let row = &mut down[l * n..(l + 1) * n];
        for (j1, &x) in v1.iter().enumerate() {
            let x = f64::from(x) * w;
            for (dst, &y) in row[j1 * d..(j1 + 1) * d].iter_mut().zip(v2) {
                *dst = (x * f64::from(y)) as f32;
            }
        }
    }
    (Mat::new(out, rank, up), Mat::new(rank, n, down))
}
