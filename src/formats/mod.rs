//! Naming tables from `formats/` at the crate root, embedded at build time.
//! Adding an architecture is a data change plus a test.

pub mod dit;
pub mod gguf;
pub mod sd;
