//! loratool: read, inspect, convert and transform LoRA adapters exactly.
//!
//! Layers, each using only those below it: `cli` (the command line) → `app` (each command's
//! whole path: inputs, outputs, lineage) → `ops` (merge, resize, bake, extract, quantize) and
//! `registry` (the adapter store) → `adapter` (the canonical [`adapter::Adapter`], the format
//! codecs) → `io` (containers), `quant` (ggml codecs), `linalg` (low-rank kernels), `formats`
//! (naming tables as data) → `tensor`, `error`, `named`. See ARCHITECTURE.md.

pub mod adapter;
pub mod app;
pub mod cli;
pub mod error;
pub mod formats;
pub mod io;
pub mod linalg;
pub mod named;
pub mod ops;
pub mod quant;
pub mod registry;
pub mod remote;
pub mod tensor;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;

pub use error::{Error, Result};
