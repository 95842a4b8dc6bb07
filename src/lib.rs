//! loratool: read, inspect, convert and transform LoRA adapters exactly.
//!
//! Layout: `tensor` (dtypes and views), `io` (containers, atomic writes), `adapter` (the
//! canonical [`adapter::Adapter`] and its format readers/writers), `formats` (naming tables
//! as data), `cli` (the command-line front end).

pub mod adapter;
pub mod cli;
pub mod error;
pub mod formats;
pub mod io;
pub mod linalg;
pub mod ops;
pub mod quant;
pub mod registry;
pub mod remote;
pub mod tensor;

pub use error::{Error, Result};
