//! GGUF containers (llama.cpp models and LoRA adapters), version 3, little-endian.
//!
//! Written here rather than with the `gguf-rs` crate: loratool needs a reader that validates
//! every count, offset and size against a memory-mapped file before use and a writer that
//! streams multi-GB tensors into an atomic temp file with llama.cpp's exact layout (metadata
//! types kept as given, contiguous padded offsets, the last tensor padded too); the crate's
//! reader loads metadata by trusting declared sizes and it offers no streaming writer.

mod read;
pub mod value;
mod write;

pub use read::{GgufFile, GgufTensorInfo};
pub use value::GgufValue;
pub use write::{write_gguf, PendingGgufTensor, MAX_WRITE_ALIGNMENT};

use crate::quant::QuantType;

pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;
pub const MAX_DIMS: usize = 4;
/// ggml stores names NUL-terminated in 64 bytes, so a name has at most 63.
pub const MAX_NAME_BYTES: usize = 64;

/// Whether `path` is a readable file that starts with the GGUF magic.
pub fn is_gguf(path: &std::path::Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == GGUF_MAGIC
}

/// `(block size, bytes per block, name)` of a ggml type id loratool can size.
pub fn ggml_type_layout(id: u32) -> Option<(usize, usize, &'static str)> {
    if let Some(q) = QuantType::from_ggml_type(id) {
        return Some((q.block_size(), q.type_size(), q.name()));
    }
    match id {
        24 => Some((1, 1, "i8")),
        25 => Some((1, 2, "i16")),
        26 => Some((1, 4, "i32")),
        27 => Some((1, 8, "i64")),
        28 => Some((1, 8, "f64")),
        _ => None,
    }
}
