//! How an adapter's energy spreads over rank, per block group: for each group, the fraction of
//! the Frobenius norm of its deltas kept at every rank, `√(Σ_modules Σ_{i<k} σᵢ² / Σ_modules
//! Σ σᵢ²)` with `σ` the singular values of each module's `scale·B·A`, exact from the factors
//! (`linalg::factored_svd_keeping`, no dense matrix). Also the rank `resize --method sv_fro
//! --param X` picks for each module, by the same rule resize applies, so a plot can mark it.

use super::schedule::par_map_largest_first;
use crate::adapter::{Adapter, LoraLayer};
use crate::error::{Error, Result};
use crate::linalg::{factored_svd_keeping, select_rank, RankRule};
use serde::Serialize;
use std::collections::BTreeMap;

/// The ranks the text table shows.
pub const TABLE_RANKS: [usize; 6] = [1, 2, 4, 8, 16, 32];

/// Index runs longer than this are bucketed into [`BUCKETS`] ranges (`model.layers.0-7`), so
/// a 32-layer model or the 38 Flux single blocks make a readable number of groups.
const MAX_RUN: usize = 6;
const BUCKETS: usize = 4;

#[derive(Clone, Debug, Serialize)]
pub struct Spectrum {
    /// The ranks of `groups[].kept`.
    pub ranks: Vec<usize>,
    /// The `sv_fro` threshold of `groups[].sv_fro_*`.
    pub sv_fro: f64,
    pub groups: Vec<GroupSpectrum>,
}

#[derive(Clone, Debug, Serialize)]
pub struct GroupSpectrum {
    pub group: String,
    pub modules: usize,
    pub max_rank: usize,
    /// Fraction of the group's Frobenius norm kept at each rank of [`Spectrum::ranks`].
    pub kept: Vec<f64>,
    /// The same at every rank `0..=max_rank` (`energy[k]`).
    pub energy: Vec<f64>,
    /// Largest and mean rank `resize --method sv_fro --param X` picks for the group's modules.
    pub sv_fro_max: usize,
    pub sv_fro_mean: f64,
}

/// The block group of a module path: the path up to its first index (`unet.down_blocks.1`,
/// `model.layers.3`), the UNet mid block as one, text encoders as one each, and paths with no
/// index by their first two segments.
fn raw_group(path: &str) -> (String, Option<usize>) {
    let segs: Vec<&str> = path.split('.').collect();
    if path.starts_with("unet.mid_block") {
        return ("unet.mid_block".into(), None);
    }
    if segs[0].starts_with("text_encoder") {
        return (segs[0].to_string(), None);
    }
    match segs.iter().position(|s| s.parse::<usize>().is_ok()) {
        Some(i) if i > 0 => (segs[..i].join("."), segs[i].parse().ok()),
        _ => (segs[..segs.len().min(2)].join("."), None),
    }
}

/// Group names for every path, with long index runs bucketed into at most [`MAX_RUN`] ranges.
pub fn block_groups<'a>(paths: impl Iterator<Item = &'a str>) -> BTreeMap<String, String> {
    let raw: Vec<(&str, String, Option<usize>)> = paths
        .map(|p| {
            let (g, i) = raw_group(p);
            (p, g, i)
        })
        .collect();
    let mut max_index: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, g, i) in &raw {
        if let Some(i) = i {
            let e = max_index.entry(g.as_str()).or_insert(0);
            *e = (*e).max(*i);
        }
    }
    raw.iter()
        .map(|(p, g, i)| {
            let name = match (i, max_index.get(g.as_str())) {
                (Some(i), Some(&max)) if max + 1 > MAX_RUN => {
                    let size = (max + 1).div_ceil(BUCKETS);
                    let lo = i / size * size;
                    format!("{g}.{lo}-{}", (lo + size - 1).min(max))
                }
                (Some(i), _) => format!("{g}.{i}"),
                (None, _) => g.clone(),
            };
            (p.to_string(), name)
        })
        .collect()
}

/// Singular values of one layer's `ΔW = scale·B·A`.
pub fn layer_singular_values(layer: &LoraLayer) -> Result<Vec<f64>> {
    let rank = layer.rank();
    let up = layer.up.to_f32();
    let down = layer.down.to_f32();
    let n = down.len() / rank.max(1);
    let (_, s) = factored_svd_keeping(&up, &down, layer.out_features(), rank, n, |_| Ok(0))?;
    let scale = layer.scale().abs();
    Ok(s.into_iter().map(|x| x * scale).collect())
}

/// The spectrum of every block group of `adapter`, with the ranks `sv_fro` picks.
pub fn spectrum(adapter: &Adapter, sv_fro: f64) -> Result<Spectrum> {
    let rule = RankRule::SvFro(sv_fro);
    if !(sv_fro.is_finite() && sv_fro > 0.0 && sv_fro <= 1.0) {
        return Err(Error::bad_option(
            "sv_fro",
            format!("{sv_fro} must be a fraction in (0, 1]"),
        ));
    }
    let groups = block_groups(adapter.layers.keys().map(String::as_str));
    let layers: Vec<(&String, &LoraLayer)> = adapter.layers.iter().collect();
    let cost = |(_, l): &(&String, &LoraLayer)| l.param_count() * l.rank();
    let per_module: Vec<Result<(Vec<f64>, usize)>> =
        par_map_largest_first(&layers, cost, |&(path, layer)| {
            let s = layer_singular_values(layer).map_err(|e| Error::module(path, e.to_string()))?;
            // exactly resize's choice with --rank at the module's own rank
            let picked = select_rank(&s, rule, layer.rank())?
                .min(layer.rank())
                .max(1);
            Ok((s, picked))
        });
    struct Acc {
        modules: usize,
        max_rank: usize,
        /// Σ σᵢ² over modules, per index i.
        energy_at: Vec<f64>,
        picked: Vec<usize>,
    }
    let mut acc: BTreeMap<String, Acc> = BTreeMap::new();
    for ((path, layer), r) in layers.iter().zip(per_module) {
        let (s, picked) = r?;
        let a = acc.entry(groups[path.as_str()].clone()).or_insert(Acc {
            modules: 0,
            max_rank: 0,
            energy_at: Vec::new(),
            picked: Vec::new(),
        });
        a.modules += 1;
        a.max_rank = a.max_rank.max(layer.rank());
        if a.energy_at.len() < s.len() {
            a.energy_at.resize(s.len(), 0.0);
        }
        for (e, x) in a.energy_at.iter_mut().zip(&s) {
            *e += x * x;
        }
        a.picked.push(picked);
    }
    let groups = acc
        .into_iter()
        .map(|(group, a)| {
            let total: f64 = a.energy_at.iter().sum();
            let mut energy = Vec::with_capacity(a.max_rank + 1);
            let mut run = 0.0;
            energy.push(0.0);
            for k in 1..=a.max_rank {
                run += a.energy_at.get(k - 1).copied().unwrap_or(0.0);
                energy.push(if total > 0.0 {
                    (run / total).sqrt().min(1.0)
                } else {
                    1.0
                });
            }
            let kept = TABLE_RANKS
                .iter()
                .map(|&k| energy[k.min(a.max_rank)])
                .collect();
            GroupSpectrum {
                group,
                modules: a.modules,
                max_rank: a.max_rank,
                kept,
                energy,
                sv_fro_max: a.picked.iter().copied().max().unwrap_or(0),
                sv_fro_mean: a.picked.iter().sum::<usize>() as f64 / a.picked.len().max(1) as f64,
            }
        })
        .collect();
    Ok(Spectrum {
        ranks: TABLE_RANKS.to_vec(),
        sv_fro,
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::block_groups;

    #[test]
    fn groups_follow_blocks_and_bucket_long_runs() {
        let mut paths: Vec<String> = vec![
            "unet.down_blocks.1.attentions.0.proj_in".into(),
            "unet.mid_block.attentions.0.proj_in".into(),
            "unet.mid_block.resnets.1.conv1".into(),
            "text_encoder.text_model.encoder.layers.3.mlp.fc1".into(),
            "unet.conv_in".into(),
        ];
        paths.extend((0..32).map(|i| format!("model.layers.{i}.self_attn.q_proj")));
        let g = block_groups(paths.iter().map(String::as_str));
        assert_eq!(
            g["unet.down_blocks.1.attentions.0.proj_in"],
            "unet.down_blocks.1"
        );
        assert_eq!(g["unet.mid_block.resnets.1.conv1"], "unet.mid_block");
        assert_eq!(
            g["text_encoder.text_model.encoder.layers.3.mlp.fc1"],
            "text_encoder"
        );
        assert_eq!(g["unet.conv_in"], "unet.conv_in");
        assert_eq!(g["model.layers.0.self_attn.q_proj"], "model.layers.0-7");
        assert_eq!(g["model.layers.31.self_attn.q_proj"], "model.layers.24-31");
    }
}
