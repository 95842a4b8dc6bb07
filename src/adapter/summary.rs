//! What an adapter holds, in a few numbers: format, family, modules by kind, ranks with their
//! alphas and scales, dtypes, parameters, target names. `info` prints it for a path and the
//! registry records it when an adapter is added (`list`, `show`), so both describe an adapter
//! the same way.

use super::{Adapter, Format};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdapterSummary {
    pub format: Format,
    pub family: Option<String>,
    pub base_model: Option<String>,
    pub modules: usize,
    /// Layer kind (`linear`, `conv`, `embedding`) → module count.
    pub layer_kinds: BTreeMap<String, usize>,
    /// Ascending by rank.
    pub ranks: Vec<RankGroup>,
    pub dtypes: Vec<DtypeCount>,
    pub params: u64,
    /// Target name (the module path's last segment, or last two when it ends in an index:
    /// `to_out.0`) → module count.
    pub targets: BTreeMap<String, usize>,
    /// Modules carrying a DoRA magnitude.
    pub dora: usize,
    /// Fully trained tensors (PEFT `modules_to_save`).
    pub full_tensors: Vec<String>,
    /// Layers converted from LyCORIS modules, grouped by algorithm.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lycoris: Vec<super::lycoris::Summary>,
}

/// The modules of one rank, by alpha.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RankGroup {
    pub rank: usize,
    pub modules: usize,
    pub alphas: Vec<AlphaCount>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlphaCount {
    pub alpha: f64,
    pub scale: f64,
    pub modules: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DtypeCount {
    pub dtype: String,
    pub tensors: usize,
    pub params: u64,
}

/// A module path's target name: its last segment, or its last two when the last is an index
/// (`...attn1.to_out.0` → `to_out.0`, `...ff.net.2` → `net.2`).
pub fn target_name(path: &str) -> String {
    let mut segs = path.rsplit('.');
    let last = segs.next().unwrap_or(path);
    match (last.parse::<usize>(), segs.next()) {
        (Ok(_), Some(prev)) => format!("{prev}.{last}"),
        _ => last.to_string(),
    }
}

/// Count `(dtype, elements)` pairs into per-dtype tensor and element totals.
pub fn dtype_counts<'a>(items: impl Iterator<Item = (String, usize)> + 'a) -> Vec<DtypeCount> {
    let mut m: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for (dtype, n) in items {
        let e = m.entry(dtype).or_insert((0, 0));
        e.0 += 1;
        e.1 += n as u64;
    }
    m.into_iter()
        .map(|(dtype, (tensors, params))| DtypeCount {
            dtype,
            tensors,
            params,
        })
        .collect()
}

impl AdapterSummary {
    /// Describe `adapter` (read in `format`).
    pub fn of(adapter: &Adapter, format: Format) -> AdapterSummary {
        let mut ranks: BTreeMap<usize, BTreeMap<u64, usize>> = BTreeMap::new();
        let mut layer_kinds = BTreeMap::new();
        let mut targets = BTreeMap::new();
        let mut tensors = Vec::new();
        for (p, l) in &adapter.layers {
            *ranks
                .entry(l.rank())
                .or_default()
                .entry(l.alpha.to_bits())
                .or_default() += 1;
            *layer_kinds.entry(l.kind.to_string()).or_insert(0) += 1;
            *targets.entry(target_name(p)).or_insert(0) += 1;
            let parts = [
                Some(&l.down),
                Some(&l.up),
                l.magnitude.as_ref(),
                l.bias.as_ref(),
            ];
            tensors.extend(parts.into_iter().flatten());
        }
        tensors.extend(adapter.full.values());
        let family = adapter
            .meta
            .family
            .clone()
            .or_else(|| super::family::guess_sd_family(adapter).map(str::to_string));
        AdapterSummary {
            format,
            family,
            base_model: adapter.meta.base_model.clone(),
            modules: adapter.layers.len(),
            layer_kinds,
            ranks: ranks
                .into_iter()
                .map(|(rank, alphas)| RankGroup {
                    rank,
                    modules: alphas.values().sum(),
                    alphas: alphas
                        .into_iter()
                        .map(|(bits, modules)| {
                            let alpha = f64::from_bits(bits);
                            AlphaCount {
                                alpha,
                                scale: alpha / rank as f64,
                                modules,
                            }
                        })
                        .collect(),
                })
                .collect(),
            dtypes: dtype_counts(tensors.iter().map(|t| (t.dtype().to_string(), t.numel()))),
            params: adapter.param_count() as u64,
            targets,
            dora: adapter
                .layers
                .values()
                .filter(|l| l.magnitude.is_some())
                .count(),
            full_tensors: adapter.full.keys().cloned().collect(),
            lycoris: super::lycoris::summarize(&adapter.meta.lycoris),
        }
    }

    /// Every distinct alpha, ascending.
    pub fn alphas(&self) -> Vec<f64> {
        let mut a: Vec<f64> = self
            .ranks
            .iter()
            .flat_map(|g| g.alphas.iter().map(|a| a.alpha))
            .collect();
        a.sort_by(f64::total_cmp);
        a.dedup_by(|x, y| x.to_bits() == y.to_bits());
        a
    }
}

#[cfg(test)]
mod tests {
    use super::target_name;

    #[test]
    fn target_names_keep_a_trailing_index_with_its_parent() {
        assert_eq!(target_name("unet.a.attn1.to_out.0"), "to_out.0");
        assert_eq!(target_name("model.layers.0.self_attn.q_proj"), "q_proj");
        assert_eq!(target_name("lm_head"), "lm_head");
    }
}
