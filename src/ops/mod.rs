//! Operations on canonical adapters: `Adapter -> Adapter`, pure (no files, no printing).
//! They work per module on the factors and never form a dense `out × in` matrix for a LoRA
//! unless a method is defined on the dense delta (TIES, DARE, magnitude pruning).

pub mod merge;
pub mod resize;
