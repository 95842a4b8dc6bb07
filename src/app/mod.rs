//! The application layer: the whole path of each command, usable without the CLI.
//!
//! A [`Session`] holds what a run shares (where the store is, who hears warnings and progress)
//! and sets up threading the same way for every caller. Inputs are resolved in one place
//! ([`input`]: a path or a registry reference, to an adapter plus its provenance), outputs are
//! written and saved with lineage in one place ([`output`]), and each command is a request
//! struct and a function returning a serialisable outcome (`convert`, `resize`, `merge`,
//! `bake`, `extract`, `quantize`, `info`, `check`, `store`). The CLI parses arguments into requests and
//! renders outcomes; a library user calls the same functions.
//!
//! Layering: `app` uses `ops`, `registry` and `adapter`; nothing below uses `app`.

pub mod bake;
pub mod check;
pub mod convert;
mod error;
pub mod extract;
pub mod info;
pub mod input;
pub mod merge;
pub mod output;
pub mod quantize;
pub mod remote;
pub mod resize;
mod session;
pub mod spectrum;
pub mod store;

pub use error::{AppError, Result, ResultExt};
pub use input::{InputRef, LoadOptions, Loaded, Located, Provenance};
pub use output::OutputSpec;
pub use session::{Observer, Progress, Session, Silent, Unit};
pub use store::{Recipe, Saved};
