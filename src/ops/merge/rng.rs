//! Reproducible random streams for merges: DARE's keep-masks and the sketches of the randomized
//! SVD, each derived from the user's seed and the module path (and, for masks, the input
//! index) by SHA-256.
//!
//! Why: modules run in parallel, so a single shared generator would make the output depend on
//! thread scheduling. A stream per (seed, module, input) gives the same bits on every run and
//! thread count, and adding or removing other modules does not change a module's masks.
//!
//! DARE in PEFT draws its masks from torch's RNG (`torch.bernoulli`); no other implementation
//! can reproduce those bits, so loratool's DARE masks are statistically equivalent, not equal.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

/// 2^53: uniform draws use the top 53 bits of a `u64`.
const UNIT: f64 = (1u64 << 53) as f64;

/// A 32-byte key from a domain tag, the seed, an optional input index and the module path.
fn key(domain: &str, seed: u64, input: Option<u64>, module: &str) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(domain.as_bytes());
    hash.update([0u8]);
    hash.update(seed.to_le_bytes());
    if let Some(i) = input {
        hash.update(i.to_le_bytes());
    }
    hash.update(module.as_bytes());
    hash.finalize().into()
}

/// DARE's Bernoulli keep-mask for one input on one module: element `j` of the flattened tensor
/// is kept with probability `density`, independently, in index order.
pub struct DareMask {
    rng: ChaCha8Rng,
    /// Keep iff the 53-bit uniform draw is below this (`density · 2^53`).
    threshold: u64,
}

impl DareMask {
    /// The mask stream of `input` on `module` for `seed`. `density` outside `(0, 1]` is
    /// clamped (callers validate it).
    pub fn new(seed: u64, module: &str, input: usize, density: f64) -> DareMask {
        let rng =
            ChaCha8Rng::from_seed(key("loratool/merge/dare", seed, Some(input as u64), module));
        let threshold = (density.clamp(0.0, 1.0) * UNIT) as u64;
        DareMask { rng, threshold }
    }

    /// Whether the next element is kept.
    pub fn keep(&mut self) -> bool {
        (self.rng.next_u64() >> 11) < self.threshold
    }
}

/// The seed of the randomized SVD that re-factors `module` (dense merge methods).
pub(crate) fn rsvd_seed(seed: u64, module: &str) -> u64 {
    let k = key("loratool/merge/rsvd", seed, None, module);
    u64::from_le_bytes([k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(seed: u64, module: &str, input: usize, density: f64, n: usize) -> Vec<bool> {
        let mut m = DareMask::new(seed, module, input, density);
        (0..n).map(|_| m.keep()).collect()
    }

    #[test]
    fn mask_is_reproducible_for_a_seed_module_and_input() {
        assert_eq!(draws(7, "a.q", 0, 0.3, 500), draws(7, "a.q", 0, 0.3, 500));
    }

    #[test]
    fn mask_streams_differ_by_seed_module_and_input() {
        let base = draws(7, "a.q", 0, 0.5, 256);
        assert_ne!(base, draws(8, "a.q", 0, 0.5, 256));
        assert_ne!(base, draws(7, "a.k", 0, 0.5, 256));
        assert_ne!(base, draws(7, "a.q", 1, 0.5, 256));
    }

    #[test]
    fn mask_keeps_a_density_fraction() {
        for density in [0.1, 0.5, 0.9] {
            let n = 200_000;
            let kept = draws(3, "m", 0, density, n).iter().filter(|&&k| k).count();
            let frac = kept as f64 / n as f64;
            // 5 standard deviations of a binomial proportion.
            let sd = (density * (1.0 - density) / n as f64).sqrt();
            assert!(
                (frac - density).abs() < 5.0 * sd,
                "density {density}: kept {frac}"
            );
        }
    }

    #[test]
    fn density_one_keeps_everything() {
        assert!(draws(1, "m", 2, 1.0, 10_000).iter().all(|&k| k));
    }

    #[test]
    fn rsvd_seed_depends_on_seed_and_module() {
        assert_eq!(rsvd_seed(1, "m"), rsvd_seed(1, "m"));
        assert_ne!(rsvd_seed(1, "m"), rsvd_seed(2, "m"));
        assert_ne!(rsvd_seed(1, "m"), rsvd_seed(1, "n"));
    }
}
