//! Low-rank kernels on `faer`: the exact SVD of a factored product `B·A` (and of a weighted sum
//! of such products), randomized SVD of a dense matrix, rank-selection rules and the quantile
//! clamp used by kohya's merge/extract tools.
//!
//! Owns: numbers only. Matrices cross the boundary as row-major `&[f32]` slices with explicit
//! dimensions, so callers never need faer types; faer is used inside. Does not own: files,
//! tensor dtypes, alpha/scale bookkeeping or naming (that is `adapter` and `ops`).
//!
//! Precision: big matrices (`m×r`, `n×r` factors, dense `m×n` deltas) are handled in f32; the
//! small `r×r` cores, singular values and all accumulations are f64.
//!
//! Conventions: `m` is the row count (out_features), `n` the column count (in_features). A conv
//! LoRA is handled by the caller as `down` reshaped to `r × (in·kh·kw)` and `up` to `out × r`.

mod factored;
mod gram_svd;
mod kernels;
mod layout;
mod low_rank;
mod product;
mod quantile;
mod randomized;
mod rank_rules;
mod sym_eig;

pub use factored::{
    factored_svd, factored_svd_filled, factored_svd_keeping, weighted_sum_svd,
    weighted_sum_svd_filled, weighted_sum_svd_keeping, FillFactor, FilledTerm, WeightedTerm,
};
pub use kernels::add_low_rank;
pub use layout::{all_finite, sum_squares};
pub use low_rank::{LowRankSvd, SvSplit};
pub use product::dense_product_svd;
pub use quantile::{clamp_factors, quantile_linear, quantile_linear_in_place};
pub use randomized::{exact_svd_dense, exact_svd_dense_f64, randomized_svd, RsvdParams};
pub use rank_rules::{
    retention, select_rank, select_rank_kohya, RankMethod, RankRule, Retention, KOHYA_MIN_SV,
};

#[cfg(test)]
mod test_util;
