//! Rank reduction of an adapter without dense matrices.
//!
//! Each module's `up·down` is decomposed exactly from its factors (thin QR of both, SVD of the
//! `r × r` core: O((out+in)·r²)), truncated to the chosen rank, and written back as new factors.
//! The reference tool (sd-scripts `resize_lora.py`) forms the dense `out × in` matrix and runs a
//! full SVD on it; the singular values and the truncated product are the same up to float error.
//!
//! Scale: by default each layer keeps its effective scale, `new alpha = old alpha · k / r` (as
//! sd-scripts does). With `alpha`, the stored alpha is set and the factors absorb the change, so
//! ΔW stays the optimal rank-k approximation either way.

use super::schedule::par_map_largest_first;
use crate::adapter::{Adapter, LayerKind, LoraLayer};
use crate::error::{Error, Result};
use crate::linalg::{
    factored_svd_filled, retention, select_rank, select_rank_kohya, RankRule, SvSplit,
};
use crate::tensor::{decode_f32_rows, Tensor};

#[derive(Clone, Debug)]
pub struct ResizeOptions {
    /// Target rank (fixed methods) or the cap (dynamic methods).
    pub rank: usize,
    /// Rank (or cap) for 3x3 convolutions; defaults to `rank`, as in sd-scripts.
    pub conv_rank: Option<usize>,
    /// `Fixed`, or a dynamic rule on the singular values.
    pub rule: RankRule,
    /// Reproduce sd-scripts' rank choice (dynamic off-by-one, fixed ranks above the true rank
    /// kept as zero directions) so its files come out the same.
    pub kohya_compat: bool,
    /// Store this alpha on every layer instead of keeping each layer's scale.
    pub alpha: Option<f64>,
    /// Where the singular values go: all on `up` (sd-scripts) or √S on each factor.
    pub split: SvSplit,
}

/// What happened to one module.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModuleResize {
    pub path: String,
    pub old_rank: usize,
    pub new_rank: usize,
    /// √(Σ kept σ²) / √(Σ σ²): the fraction of ‖ΔW‖_F kept (sd-scripts' "fro retained").
    pub fro_retained: f64,
    /// Σ kept σ / Σ σ (sd-scripts' "sum(S) retained").
    pub sum_retained: f64,
    /// ‖ΔW − ΔW_k‖_F / ‖ΔW‖_F, exact by Eckart–Young.
    pub rel_error: f64,
    pub new_alpha: f64,
}

fn is_conv3(layer: &LoraLayer) -> bool {
    layer.kind == LayerKind::Conv && layer.kernel() != (1, 1)
}

/// Resize every layer of `adapter`. Modules run in parallel; each holds only its own factors.
pub fn resize(adapter: &Adapter, opts: &ResizeOptions) -> Result<(Adapter, Vec<ModuleResize>)> {
    resize_with_progress(adapter, opts, &|| {})
}

/// [`resize`], calling `module_done` once per finished module (from worker threads).
pub fn resize_with_progress(
    adapter: &Adapter,
    opts: &ResizeOptions,
    module_done: &(dyn Fn() + Sync),
) -> Result<(Adapter, Vec<ModuleResize>)> {
    if opts.rank == 0 || opts.conv_rank == Some(0) {
        let option = if opts.rank == 0 { "rank" } else { "conv_rank" };
        return Err(Error::bad_option(option, "must be at least 1"));
    }
    if let Some(a) = opts.alpha {
        if !a.is_finite() || a == 0.0 {
            return Err(Error::bad_option(
                "alpha",
                format!("{a} must be a finite non-zero number"),
            ));
        }
    }
    let layers: Vec<(&String, &LoraLayer)> = adapter.layers.iter().collect();
    let cost = |(_, l): &(&String, &LoraLayer)| l.param_count() * l.rank();
    let results: Vec<Result<(String, LoraLayer, ModuleResize)>> =
        par_map_largest_first(&layers, cost, |&(path, layer)| {
            let cap = if is_conv3(layer) {
                opts.conv_rank.unwrap_or(opts.rank)
            } else {
                opts.rank
            };
            let r = resize_layer(path, layer, cap, opts)
                .map(|(l, r)| (path.clone(), l, r))
                .map_err(|e| Error::module(path, e.to_string()));
            module_done();
            r
        });
    let mut out = adapter.clone();
    let mut reports = Vec::with_capacity(results.len());
    for r in results {
        let (path, layer, report) = r?;
        out.layers.insert(path, layer);
        reports.push(report);
    }
    Ok((out, reports))
}

fn resize_layer(
    path: &str,
    layer: &LoraLayer,
    cap: usize,
    opts: &ResizeOptions,
) -> Result<(LoraLayer, ModuleResize)> {
    let old_rank = layer.rank();
    let out_features = layer.out_features();
    let cols = layer.down.numel() / old_rank;
    let full_len = out_features.min(cols);
    let mut new_rank = 0;
    let (up, down) = (&layer.up, &layer.down);
    // the factors are decoded straight into the kernels' buffers; only the kept singular
    // vectors are formed: the rank is chosen from all the values first
    let fill_up =
        |buf: &mut [f32], stride| decode_f32_rows(up.dtype(), up.bytes(), old_rank, buf, stride);
    let fill_down =
        |buf: &mut [f32], stride| decode_f32_rows(down.dtype(), down.bytes(), cols, buf, stride);
    let (svd, s) = factored_svd_filled(out_features, old_rank, cols, fill_up, fill_down, |s| {
        new_rank = if opts.kohya_compat {
            select_rank_kohya(s, full_len, opts.rule, cap)?
        } else {
            // never above the true number of directions, never above the old rank
            select_rank(s, opts.rule, cap)?.min(old_rank).max(1)
        };
        Ok(new_rank)
    })?;
    let kept = new_rank.min(s.len());
    let stats = retention(&s, kept);
    let total: f64 = s.iter().map(|x| x * x).sum();
    let tail: f64 = s.iter().skip(kept).map(|x| x * x).sum();
    let rel_error = if total > 0.0 {
        (tail / total).sqrt()
    } else {
        0.0
    };
    let old_scale = layer.scale();
    let new_alpha = opts
        .alpha
        .unwrap_or(layer.alpha * new_rank as f64 / old_rank as f64);
    let new_scale = new_alpha / new_rank as f64;
    let (mut new_up, new_down) = svd.into_factors(new_rank, opts.split);
    // the factors carry ΔW/scale; a changed scale is absorbed so ΔW is unchanged
    let fold = old_scale / new_scale;
    if fold != 1.0 {
        let f = fold as f32;
        new_up.iter_mut().for_each(|x| *x *= f);
    }
    let dtype = layer.dtype();
    let (down_shape, up_shape) = match layer.kind {
        LayerKind::Conv => {
            let d = layer.down.shape();
            (
                vec![new_rank, d[1], d[2], d[3]],
                vec![out_features, new_rank, 1, 1],
            )
        }
        _ => (vec![new_rank, cols], vec![out_features, new_rank]),
    };
    let resized = LoraLayer {
        down: Tensor::from_f32(down_shape, &new_down, dtype)?,
        up: Tensor::from_f32(up_shape, &new_up, dtype)?,
        alpha: new_alpha,
        kind: layer.kind,
        magnitude: layer.magnitude.clone(),
        bias: layer.bias.clone(),
    };
    resized.validate(path)?;
    Ok((
        resized,
        ModuleResize {
            path: path.to_string(),
            old_rank,
            new_rank,
            fro_retained: stats.fro_retained,
            sum_retained: stats.sum_retained,
            rel_error,
            new_alpha,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::AdapterMeta;
    use crate::tensor::DType;
    use std::collections::BTreeMap;

    fn lcg(seed: u64, n: usize) -> Vec<f32> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn layer(out: usize, inp: usize, r: usize, alpha: f64, seed: u64) -> LoraLayer {
        let down = Tensor::from_f32(vec![r, inp], &lcg(seed, r * inp), DType::F32).unwrap();
        let up = Tensor::from_f32(vec![out, r], &lcg(seed + 1, out * r), DType::F32).unwrap();
        LoraLayer::new("m", down, up, alpha, LayerKind::Linear).unwrap()
    }

    use crate::testing::dense_delta;

    fn fro(a: &[f64]) -> f64 {
        a.iter().map(|x| x * x).sum::<f64>().sqrt()
    }

    fn adapter(layers: Vec<(&str, LoraLayer)>) -> Adapter {
        Adapter {
            layers: layers
                .into_iter()
                .map(|(p, l)| (p.to_string(), l))
                .collect::<BTreeMap<_, _>>(),
            full: BTreeMap::new(),
            meta: AdapterMeta::default(),
        }
    }

    fn opts(rank: usize) -> ResizeOptions {
        ResizeOptions {
            rank,
            conv_rank: None,
            rule: RankRule::Fixed,
            kohya_compat: false,
            alpha: None,
            split: SvSplit::Up,
        }
    }

    #[test]
    fn resize_keeps_effective_scale_and_is_exact_at_full_rank() {
        let a = adapter(vec![("m", layer(24, 40, 6, 3.0, 7))]);
        let (b, rep) = resize(&a, &opts(8)).unwrap();
        let (la, lb) = (&a.layers["m"], &b.layers["m"]);
        assert_eq!(lb.rank(), 6, "never above the old rank");
        assert_eq!(lb.scale(), la.scale());
        let (wa, wb) = (dense_delta(la), dense_delta(lb));
        let diff: Vec<f64> = wa.iter().zip(&wb).map(|(x, y)| x - y).collect();
        assert!(fro(&diff) / fro(&wa) < 1e-5);
        assert!(rep[0].rel_error < 1e-6);
    }

    #[test]
    fn truncation_error_matches_eckart_young() {
        let a = adapter(vec![("m", layer(30, 50, 8, 8.0, 11))]);
        let (b, rep) = resize(&a, &opts(3)).unwrap();
        let lb = &b.layers["m"];
        assert_eq!(lb.rank(), 3);
        assert!((lb.alpha - 3.0).abs() < 1e-12, "alpha 8·3/8");
        let (wa, wb) = (dense_delta(&a.layers["m"]), dense_delta(lb));
        let diff: Vec<f64> = wa.iter().zip(&wb).map(|(x, y)| x - y).collect();
        let measured = fro(&diff) / fro(&wa);
        assert!(
            (measured - rep[0].rel_error).abs() < 1e-4 * rep[0].rel_error.max(1e-3),
            "{measured} vs {}",
            rep[0].rel_error
        );
        let fro_kept = (1.0 - rep[0].rel_error.powi(2)).sqrt();
        assert!((fro_kept - rep[0].fro_retained).abs() < 1e-6);
    }

    #[test]
    fn explicit_alpha_is_absorbed_by_the_factors() {
        let a = adapter(vec![("m", layer(16, 20, 4, 2.0, 3))]);
        let mut o = opts(4);
        o.alpha = Some(1.0);
        o.split = SvSplit::Sqrt;
        let (b, _) = resize(&a, &o).unwrap();
        let lb = &b.layers["m"];
        assert_eq!(lb.alpha, 1.0);
        let (wa, wb) = (dense_delta(&a.layers["m"]), dense_delta(lb));
        let diff: Vec<f64> = wa.iter().zip(&wb).map(|(x, y)| x - y).collect();
        assert!(fro(&diff) / fro(&wa) < 1e-5);
    }

    #[test]
    fn conv_layers_use_conv_rank_and_keep_their_shape() {
        let down = Tensor::from_f32(vec![4, 3, 3, 3], &lcg(5, 4 * 27), DType::F16).unwrap();
        let up = Tensor::from_f32(vec![8, 4, 1, 1], &lcg(6, 32), DType::F16).unwrap();
        let conv = LoraLayer::new("c", down, up, 4.0, LayerKind::Conv).unwrap();
        let a = adapter(vec![("c", conv), ("m", layer(8, 12, 4, 4.0, 9))]);
        let mut o = opts(3);
        o.conv_rank = Some(2);
        let (b, _) = resize(&a, &o).unwrap();
        assert_eq!(b.layers["c"].down.shape(), &[2, 3, 3, 3]);
        assert_eq!(b.layers["c"].up.shape(), &[8, 2, 1, 1]);
        assert_eq!(b.layers["c"].dtype(), DType::F16);
        assert_eq!(b.layers["m"].rank(), 3);
    }

    #[test]
    fn dynamic_rules_pick_ranks_from_singular_values() {
        // up = diag-like: singular values of up·down are exactly 8, 4, 2, 1, 0.5
        let s = [8.0f32, 4.0, 2.0, 1.0, 0.5];
        let (m, n, r) = (6, 7, 5);
        let mut up = vec![0.0f32; m * r];
        let mut down = vec![0.0f32; r * n];
        for k in 0..r {
            up[k * r + k] = s[k];
            down[k * n + k] = 1.0;
        }
        let l = LoraLayer::new(
            "m",
            Tensor::from_f32(vec![r, n], &down, DType::F32).unwrap(),
            Tensor::from_f32(vec![m, r], &up, DType::F32).unwrap(),
            5.0,
            LayerKind::Linear,
        )
        .unwrap();
        let a = adapter(vec![("m", l)]);
        let mut o = opts(5);
        o.rule = RankRule::SvRatio(4.0);
        assert_eq!(
            resize(&a, &o).unwrap().1[0].new_rank,
            2,
            "σ > 8/4 keeps 8 and 4"
        );
        o.kohya_compat = true;
        assert_eq!(
            resize(&a, &o).unwrap().1[0].new_rank,
            3,
            "sd-scripts keeps one more"
        );
    }
}
