//! Weighted merging of several adapters into one: `Σ wᵢ·ΔWᵢ` and its pruned/voted variants.
//!
//! Owns the merge arithmetic per module and the options that select it; does not own reading,
//! writing, format metadata (the CLI updates kohya's `ss_network_dim` etc.) or printing.
//!
//! Every input's effective delta on a module is `wᵢ·(αᵢ/rᵢ)·Bᵢ·Aᵢ` (conv: `A` as `r × in·kh·kw`;
//! embedding: the stored `[dim, r]·[r, num_embeddings]` orientation). A module missing from an
//! input takes zero from it. Methods:
//!
//! | method | result | rank | exact? |
//! |---|---|---|---|
//! | [`Sum`](MergeMethod::Sum) | SVD of the concatenated factors, never dense | numerical rank ≤ Σrᵢ, or `rank` | yes / optimal truncation |
//! | [`Cat`](MergeMethod::Cat) | `A = [wᵢsᵢAᵢ]`, `B = [Bᵢ]` (PEFT `cat`) | Σrᵢ | yes |
//! | [`Svd`](MergeMethod::Svd) | sd-scripts `svd_merge_lora`: truncate, clamp | `min(rank, in, out)` | truncated + clamped |
//! | [`Ties`](MergeMethod::Ties), [`DareLinear`](MergeMethod::DareLinear), [`DareTies`](MergeMethod::DareTies), [`MagnitudePrune`](MergeMethod::MagnitudePrune) | PEFT `merge_utils` on each dense ΔWᵢ, randomized SVD | `rank`, default largest input rank | by definition lossy |
//!
//! All merged layers have alpha = rank (scale 1), like PEFT's and sd-scripts' merged files.
//!
//! # `compat_peft`: how it differs from `sum`
//!
//! PEFT's `add_weighted_adapter` with `linear`, `ties`, `dare_linear`, `dare_ties` or
//! `magnitude_prune` does not combine deltas: it combines the A factors and the B factors
//! separately, with `√|wᵢsᵢ|` on each (the sign on A). The product then contains cross terms
//! `√(cᵢcⱼ)·Bⱼ·Aᵢ` between different inputs, so PEFT's `linear` is *not* `Σ wᵢsᵢBᵢAᵢ` unless
//! there is one input; its TIES/DARE prune and vote on factor entries, not on ΔW. With
//! `compat_peft = true` those methods reproduce PEFT exactly (ranks must be equal, as PEFT
//! requires; `Sum` stands for PEFT's `linear`) — bit for bit for the deterministic methods;
//! DARE cannot match torch's random generator and is equal in distribution only. `Cat` gives the
//! same product either way (compat only repeats PEFT's two f32 roundings of `A·w·s`, so the
//! factors match PEFT's bit for bit), and `Svd` becomes PEFT's `svd` (no channel cap, rank
//! defaults to the largest input rank, clamp only if asked). PEFT 0.21.2's `svd` combines
//! `Σ wᵢ·ΔWᵢ`, scale applied once; the double scaling `Σ wᵢsᵢ²BᵢAᵢ` described for later PEFT
//! sources is not what 0.21.2 writes (tests/merge.rs). Without `compat_peft`, `Sum` is the
//! mathematically exact weighted sum.
//!
//! Refused: DoRA magnitudes, LoRA biases and fully trained (`modules_to_save`) tensors, for
//! which a weighted merge has no exact meaning; a module whose shape differs between inputs.
//!
//! Modules run in parallel (rayon). Per worker, memory is one module's factors, plus for the
//! dense methods at most four module-sized f32 buffers whatever the number of inputs.

mod cat;
mod dense_methods;
mod peft_compat;
mod plan;
mod rng;
mod sum;
mod svd_kohya;
mod task_arithmetic;
#[cfg(test)]
mod test_support;

pub use dense_methods::REFACTOR_PARAMS;
pub use rng::DareMask;
pub use sum::SUM_RANK_RTOL;

use super::schedule::par_map_largest_first;
use crate::adapter::Adapter;
use crate::error::{Error, Result};
use crate::named::Named;
use crate::tensor::DType;
use plan::{load_terms, output_dtype, ModulePlan};
use task_arithmetic::{Recipe, Sparsify};

/// How the inputs are combined (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeMethod {
    /// Exact weighted sum of the deltas, at its numerical rank or optimally truncated.
    Sum,
    /// Concatenated factors (PEFT `cat`), exact, rank Σrᵢ.
    Cat,
    /// sd-scripts `svd_merge_lora`: truncated SVD with optional quantile clamp.
    Svd,
    /// TIES: magnitude prune, sign election, disjoint mean.
    Ties,
    /// DARE: random drop with `1/d` rescale, then weighted sum.
    DareLinear,
    /// DARE drop, then TIES sign election and disjoint mean.
    DareTies,
    /// Magnitude prune, then weighted sum.
    MagnitudePrune,
}

// names as on the command line and in PEFT (`sum` is PEFT's `linear` in compat mode)
crate::named_enum!(MergeMethod, "merge method", [
    Sum => "sum", [], "exact weighted sum of the deltas, re-factored to its true rank (or optimally to --rank)",
    Cat => "cat", [], "concatenated factors: rank Σrᵢ, exact (PEFT's cat)",
    Svd => "svd", [], "sd-scripts svd_merge_lora: truncated SVD to --rank, factors clamped at --clamp-quantile",
    Ties => "ties", [], "TIES on each module's dense delta, re-factored to --rank",
    DareLinear => "dare_linear", ["dare-linear"], "DARE (random drop, rescale) then linear sum, re-factored to --rank",
    DareTies => "dare_ties", ["dare-ties"], "DARE then TIES sign election, re-factored to --rank",
    MagnitudePrune => "magnitude_prune", ["magnitude-prune"], "magnitude pruning then linear sum, re-factored to --rank",
]);

impl MergeMethod {
    /// The PEFT `merge_utils` recipe of the pruning/voting methods.
    fn recipe(self, density: f64, sign: MajoritySign) -> Option<Recipe> {
        let (sparsify, elect) = match self {
            MergeMethod::Ties => (Sparsify::Magnitude, Some(sign)),
            MergeMethod::DareLinear => (Sparsify::Random, None),
            MergeMethod::DareTies => (Sparsify::Random, Some(sign)),
            MergeMethod::MagnitudePrune => (Sparsify::Magnitude, None),
            MergeMethod::Sum | MergeMethod::Cat | MergeMethod::Svd => return None,
        };
        Some(Recipe {
            sparsify,
            elect,
            density,
        })
    }

    fn uses_density(self) -> bool {
        self.recipe(1.0, MajoritySign::Total).is_some()
    }
}

/// TIES sign election: the sign of `Σᵢ Tᵢ` (`Total`) or of `Σᵢ sign(Tᵢ)` (`Frequency`), over the
/// pruned, unweighted tensors (PEFT's `majority_sign_method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MajoritySign {
    Total,
    Frequency,
}

crate::named_enum!(MajoritySign, "majority sign method", [
    Total => "total", [], "sign of the sum of the values (PEFT's and mergekit's default)",
    Frequency => "frequency", [], "sign held by more of the inputs",
]);

/// A reference tool whose results a merge can reproduce instead of the exact method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compat {
    Peft,
}

crate::named_enum!(Compat, "compatibility mode", [
    Peft => "peft", [], "PEFT add_weighted_adapter: factor-wise combination with its cross terms",
]);

#[derive(Clone, Debug)]
pub struct MergeOptions {
    pub method: MergeMethod,
    /// One weight per input (negative subtracts).
    pub weights: Vec<f64>,
    /// Target rank: required for `Svd`; truncates `Sum`; default for the dense methods is the
    /// largest input rank of each module. Not allowed for `Cat` and the factor-wise compat modes.
    pub rank: Option<usize>,
    /// Target rank of spatial (non-1×1) convolutions; default `rank`.
    pub conv_rank: Option<usize>,
    /// `Svd` only: clamp both factors at this signed quantile of their values (sd-scripts: 0.99).
    pub clamp_quantile: Option<f64>,
    /// Fraction of entries kept, `0 < d ≤ 1`; required by `Ties`, `DareLinear`, `DareTies`,
    /// `MagnitudePrune`, refused by the others.
    pub density: Option<f64>,
    pub majority_sign: MajoritySign,
    /// Seed of DARE's masks and of the randomized SVD sketches (same seed, same output).
    pub seed: u64,
    /// Reproduce PEFT `add_weighted_adapter` (see the module documentation).
    pub compat_peft: bool,
    /// Factor dtype of the merged layers; default the first input's (f32 if it is not a float).
    pub dtype: Option<DType>,
}

impl Default for MergeOptions {
    fn default() -> Self {
        MergeOptions {
            method: MergeMethod::Sum,
            weights: Vec::new(),
            rank: None,
            conv_rank: None,
            clamp_quantile: None,
            density: None,
            majority_sign: MajoritySign::Total,
            seed: 0,
            compat_peft: false,
            dtype: None,
        }
    }
}

/// One input adapter and the label errors use for it (its file name).
#[derive(Clone, Debug)]
pub struct MergeInput<'a> {
    pub label: String,
    pub adapter: &'a Adapter,
}

/// What happened to one module.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ModuleMerge {
    pub path: String,
    /// Rank of the merged layer.
    pub rank: usize,
    /// How many inputs hold this module.
    pub inputs: usize,
    /// `√(kept energy / ‖ΔW‖_F²)` of the merged delta for methods that re-factor by SVD (`Sum`,
    /// `Svd` before its clamp, dense methods); `None` where no SVD is involved (`Cat`,
    /// factor-wise compat modes).
    pub retained_fro: Option<f64>,
}

/// New factors of one module (row-major `up` `out × rank`, `down` `rank × cols`).
pub(crate) struct Factors {
    pub up: Vec<f32>,
    pub down: Vec<f32>,
    pub rank: usize,
    pub alpha: f64,
    pub retained_fro: Option<f64>,
}

/// Merge `inputs` by `opts`. The output has the union of the inputs' modules, the factor dtype
/// of the first input and the first input's metadata (format, family, source metadata; its
/// read warnings are cleared); it records nothing about the merge itself.
pub fn merge(
    inputs: &[MergeInput<'_>],
    opts: &MergeOptions,
) -> Result<(Adapter, Vec<ModuleMerge>)> {
    merge_with_progress(inputs, opts, &|| {})
}

/// [`merge`], calling `module_done` once per finished module (from worker threads).
pub fn merge_with_progress(
    inputs: &[MergeInput<'_>],
    opts: &MergeOptions,
    module_done: &(dyn Fn() + Sync),
) -> Result<(Adapter, Vec<ModuleMerge>)> {
    let recipe = validate(inputs, opts)?;
    let plans = plan::plan(inputs)?;
    let dtype = opts.dtype.unwrap_or_else(|| output_dtype(inputs));
    // PEFT's svd default rank: the largest rank of any input (its config `r`).
    let largest_rank = plans
        .iter()
        .flat_map(|p| p.sources.iter().map(|(_, l)| l.rank()))
        .max()
        .unwrap_or(1);

    // cost of a module: its size times the summed rank (what the factored kernels scale with)
    let cost = |p: &ModulePlan<'_>| {
        let rank: usize = p.sources.iter().map(|(_, l)| l.rank()).sum();
        (p.geometry.out + p.geometry.cols()) * rank * rank
    };
    let results: Vec<Result<(String, crate::adapter::LoraLayer, ModuleMerge)>> =
        par_map_largest_first(&plans, cost, |plan| {
            let merged = merge_module(plan, inputs, opts, recipe.as_ref(), largest_rank)
                .and_then(|f| {
                    let layer = plan
                        .geometry
                        .layer(plan.path, &f.up, &f.down, f.rank, f.alpha, dtype)?;
                    let report = ModuleMerge {
                        path: plan.path.to_string(),
                        rank: f.rank,
                        inputs: plan.sources.len(),
                        retained_fro: f.retained_fro,
                    };
                    Ok((plan.path.to_string(), layer, report))
                })
                .map_err(|e| in_module(plan.path, e));
            module_done();
            merged
        });

    let first = inputs.first().map(|i| i.adapter);
    let mut out = Adapter {
        layers: Default::default(),
        full: Default::default(),
        meta: first.map(|a| a.meta.clone()).unwrap_or_default(),
    };
    out.meta.warnings.clear();
    let mut reports = Vec::with_capacity(results.len());
    for r in results {
        let (path, layer, report) = r?;
        out.layers.insert(path, layer);
        reports.push(report);
    }
    Ok((out, reports))
}

/// Errors from kernels name no module; add it unless the error already does.
fn in_module(path: &str, e: Error) -> Error {
    match e {
        Error::Module { .. } => e,
        other => Error::module(path, other.to_string()),
    }
}

fn merge_module(
    plan: &ModulePlan<'_>,
    inputs: &[MergeInput<'_>],
    opts: &MergeOptions,
    recipe: Option<&Recipe>,
    largest_rank: usize,
) -> Result<Factors> {
    let geometry = &plan.geometry;
    let (rows, cols) = (geometry.out, geometry.cols());
    let requested = if geometry.is_spatial_conv() {
        opts.conv_rank.or(opts.rank)
    } else {
        opts.rank
    };
    // the factored methods decode the factors straight into their kernels' buffers
    match (opts.method, opts.compat_peft) {
        (MergeMethod::Svd, compat) => {
            let rank = match (requested, compat) {
                (Some(r), _) => r,
                (None, true) => largest_rank,
                (None, false) => {
                    return Err(Error::bad_option(
                        "rank",
                        "the svd merge needs a target rank",
                    ))
                }
            };
            return svd_kohya::merge_svd(
                plan,
                inputs,
                &opts.weights,
                rank,
                opts.clamp_quantile,
                !compat,
            );
        }
        (MergeMethod::Sum, false) => {
            return sum::merge_sum(plan, inputs, &opts.weights, requested);
        }
        _ => {}
    }
    let terms = load_terms(plan, inputs, &opts.weights)?;
    match (opts.method, recipe) {
        (MergeMethod::Cat, _) => Ok(cat::merge_cat(&terms, rows, cols, opts.compat_peft)),
        (MergeMethod::Sum, _) => {
            let linear = Recipe {
                sparsify: Sparsify::None,
                elect: None,
                density: 1.0,
            };
            peft_compat::merge_factorwise(plan, inputs, &terms, &linear, opts.seed)
        }
        (_, Some(recipe)) if opts.compat_peft => {
            peft_compat::merge_factorwise(plan, inputs, &terms, recipe, opts.seed)
        }
        (_, Some(recipe)) => {
            let largest = terms.iter().map(|t| t.rank).max().unwrap_or(1);
            let rank = requested.unwrap_or(largest);
            dense_methods::merge_dense(plan, &terms, recipe, rank, opts.seed)
        }
        (_, None) => Err(Error::Invalid(format!(
            "merge method {} needs a density",
            opts.method.name()
        ))),
    }
}

/// Checks the options against the inputs; returns the pruning recipe of the method, if any.
fn validate(inputs: &[MergeInput<'_>], opts: &MergeOptions) -> Result<Option<Recipe>> {
    let method = opts.method.name();
    if inputs.is_empty() {
        return Err(Error::Invalid(
            "merge needs at least one input adapter".into(),
        ));
    }
    if opts.weights.len() != inputs.len() {
        return Err(Error::Invalid(format!(
            "{} weights for {} inputs: give one weight per input",
            opts.weights.len(),
            inputs.len()
        )));
    }
    if let Some((i, w)) = opts
        .weights
        .iter()
        .enumerate()
        .find(|(_, w)| !w.is_finite())
    {
        return Err(Error::Invalid(format!(
            "the weight of {} is {w}; weights must be finite numbers",
            inputs[i].label
        )));
    }
    if opts.rank == Some(0) || opts.conv_rank == Some(0) {
        let option = if opts.rank == Some(0) {
            "rank"
        } else {
            "conv_rank"
        };
        return Err(Error::bad_option(option, "must be at least 1"));
    }
    if opts.method == MergeMethod::Svd && !opts.compat_peft && opts.rank.is_none() {
        return Err(Error::bad_option(
            "rank",
            "the svd merge needs a target rank",
        ));
    }
    let factorwise = opts.compat_peft && opts.method != MergeMethod::Svd;
    if (opts.method == MergeMethod::Cat || factorwise)
        && (opts.rank.is_some() || opts.conv_rank.is_some())
    {
        let why = if opts.method == MergeMethod::Cat {
            "cat keeps the summed rank Σrᵢ; use sum with a rank to truncate"
        } else {
            "PEFT's factor-wise merge keeps the inputs' rank"
        };
        return Err(Error::bad_option(
            "rank",
            format!("does not apply to {method}: {why}"),
        ));
    }
    if let Some(q) = opts.clamp_quantile {
        if opts.method != MergeMethod::Svd {
            return Err(Error::Invalid(format!(
                "a clamp quantile applies only to the svd merge, not to {method}"
            )));
        }
        if !(q > 0.0 && q <= 1.0) {
            return Err(Error::Invalid(format!(
                "clamp quantile {q} must be in (0, 1] (sd-scripts uses 0.99)"
            )));
        }
    }
    if !opts.method.uses_density() {
        if opts.density.is_some() {
            return Err(Error::bad_option(
                "density",
                format!(
                    "applies to ties, dare_linear, dare_ties and magnitude_prune, not to {method}"
                ),
            ));
        }
        return Ok(None);
    }
    let density = match opts.density {
        Some(d) if d > 0.0 && d <= 1.0 => d,
        Some(d) => {
            return Err(Error::bad_option(
                "density",
                format!("{d} must be in (0, 1] (the fraction of entries kept)"),
            ))
        }
        None => {
            return Err(Error::bad_option(
                "density",
                format!("{method} needs it (the fraction of entries kept, e.g. 0.5)"),
            ))
        }
    };
    Ok(opts.method.recipe(density, opts.majority_sign))
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use crate::adapter::{Format, LayerKind};
    use crate::tensor::{DType, Tensor};

    #[test]
    fn weights_must_match_inputs_and_be_finite() {
        let (a, b) = two_adapters();
        let inputs = [input("a", &a), input("b", &b)];
        let err = merge(&inputs, &options(MergeMethod::Sum, &[1.0])).expect_err("count");
        assert!(err.to_string().contains("1 weights for 2 inputs"), "{err}");
        let err = merge(&inputs, &options(MergeMethod::Sum, &[1.0, f64::NAN])).expect_err("nan");
        assert!(err.to_string().contains("b"), "{err}");
        assert!(merge(&[], &options(MergeMethod::Sum, &[])).is_err());
    }

    #[test]
    fn different_shapes_name_the_module_and_both_inputs() {
        let a = adapter(vec![("m", linear_layer(8, 6, 2, 2.0, 1))]);
        let b = adapter(vec![("m", linear_layer(8, 7, 2, 2.0, 2))]);
        let inputs = [
            input("first.safetensors", &a),
            input("second.safetensors", &b),
        ];
        let err = merge(&inputs, &options(MergeMethod::Sum, &[1.0, 1.0]))
            .expect_err("shapes differ")
            .to_string();
        for needle in [
            "'m'",
            "first.safetensors",
            "second.safetensors",
            "in 6",
            "in 7",
        ] {
            assert!(err.contains(needle), "{needle} missing in: {err}");
        }
        // Same shape but a different kind is also a mismatch.
        let c = adapter(vec![(
            "m",
            layer_from(
                &gaussian(16, 3),
                &gaussian(12, 4),
                8,
                2,
                6,
                2.0,
                LayerKind::Embedding,
            ),
        )]);
        let inputs = [input("first", &a), input("third", &c)];
        let err = merge(&inputs, &options(MergeMethod::Sum, &[1.0, 1.0])).expect_err("kind");
        assert!(err.to_string().contains("embedding"), "{err}");
    }

    #[test]
    fn dora_bias_and_full_tensors_are_refused_by_name() {
        let (a, b) = two_adapters();
        let mut dora = a.clone();
        if let Some(l) = dora.layers.get_mut("q") {
            l.magnitude = Some(Tensor::from_f32(vec![16], &[1.0; 16], DType::F32).expect("ok"));
        }
        let inputs = [input("x", &b), input("dora.safetensors", &dora)];
        let err = merge(&inputs, &options(MergeMethod::Sum, &[1.0, 1.0])).expect_err("dora");
        let text = err.to_string();
        assert!(
            text.contains("DoRA") && text.contains("'q'") && text.contains("dora.safetensors"),
            "{text}"
        );

        let mut biased = a.clone();
        if let Some(l) = biased.layers.get_mut("k") {
            l.bias = Some(Tensor::from_f32(vec![16], &[1.0; 16], DType::F32).expect("ok"));
        }
        let err = merge(
            &[input("biased", &biased)],
            &options(MergeMethod::Sum, &[1.0]),
        )
        .expect_err("bias");
        assert!(err.to_string().contains("bias"), "{err}");

        let mut full = a.clone();
        full.full.insert(
            "score.weight".into(),
            Tensor::from_f32(vec![2], &[1.0, 2.0], DType::F32).expect("ok"),
        );
        let err = merge(&[input("full", &full)], &options(MergeMethod::Cat, &[1.0]))
            .expect_err("modules_to_save");
        assert!(err.to_string().contains("score.weight"), "{err}");
    }

    #[test]
    fn non_finite_factors_are_an_error_naming_module_and_input() {
        let a = adapter(vec![(
            "m",
            layer_from(
                &[1.0, f32::NAN],
                &[1.0, 2.0],
                2,
                1,
                2,
                1.0,
                LayerKind::Linear,
            ),
        )]);
        let err = merge(
            &[input("bad.safetensors", &a)],
            &options(MergeMethod::Sum, &[1.0]),
        )
        .expect_err("nan")
        .to_string();
        assert!(
            err.contains("'m'") && err.contains("bad.safetensors"),
            "{err}"
        );
    }

    #[test]
    fn options_that_do_not_apply_are_refused() {
        let (a, b) = two_adapters();
        let inputs = [input("a", &a), input("b", &b)];
        let cases = [
            MergeOptions {
                density: Some(0.5),
                ..options(MergeMethod::Sum, &[1.0, 1.0])
            },
            MergeOptions {
                clamp_quantile: Some(0.99),
                ..options(MergeMethod::Sum, &[1.0, 1.0])
            },
            MergeOptions {
                rank: Some(4),
                ..options(MergeMethod::Cat, &[1.0, 1.0])
            },
            MergeOptions {
                rank: Some(0),
                ..options(MergeMethod::Sum, &[1.0, 1.0])
            },
            MergeOptions {
                rank: Some(4),
                clamp_quantile: Some(1.5),
                ..options(MergeMethod::Svd, &[1.0, 1.0])
            },
            MergeOptions {
                rank: Some(4),
                compat_peft: true,
                ..options(MergeMethod::Sum, &[1.0, 1.0])
            },
        ];
        for opts in cases {
            assert!(merge(&inputs, &opts).is_err(), "{opts:?}");
        }
    }

    #[test]
    fn output_keeps_first_input_dtype_and_metadata() {
        let (a, b) = two_adapters();
        let mut first = a.cast(DType::F16).expect("castable");
        first.meta.source_format = Some(Format::Kohya);
        first.meta.family = Some("sd15".into());
        first.meta.warnings.push("read warning".into());
        let inputs = [input("a", &first), input("b", &b)];
        let (merged, report) = merge(&inputs, &options(MergeMethod::Sum, &[1.0, 1.0])).expect("ok");
        assert!(merged.layers.values().all(|l| l.dtype() == DType::F16));
        assert_eq!(merged.meta.source_format, Some(Format::Kohya));
        assert_eq!(merged.meta.family.as_deref(), Some("sd15"));
        assert!(merged.meta.warnings.is_empty());
        let paths: Vec<&str> = report.iter().map(|m| m.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["conv", "k", "q", "v"],
            "sorted union of modules"
        );
    }

    #[test]
    fn float16_overflow_is_an_error_not_infinity() {
        let a = adapter(vec![("m", linear_layer(4, 4, 1, 1.0, 5))])
            .cast(DType::F16)
            .expect("ok");
        let err = merge(&[input("a", &a)], &options(MergeMethod::Sum, &[1e9]))
            .expect_err("too large for f16");
        assert!(err.to_string().contains("float16"), "{err}");
    }

    #[test]
    fn progress_is_called_once_per_module() {
        let (a, b) = two_adapters();
        let inputs = [input("a", &a), input("b", &b)];
        let count = std::sync::atomic::AtomicUsize::new(0);
        merge_with_progress(&inputs, &options(MergeMethod::Cat, &[1.0, 1.0]), &|| {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })
        .expect("ok");
        assert_eq!(count.into_inner(), 4);
    }
}
