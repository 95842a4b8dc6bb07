//! Weighted merging of several adapters (being written).
