//! Naming tables from `formats/` at the crate root, embedded at build time.
//! Adding an architecture is a data change plus a test.

pub mod dit;
pub mod gguf;
pub mod sd;

/// What kind of base-model module a LoRA layer targets, as the tables name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LayerKind {
    Linear,
    Conv,
    Embedding,
}

crate::named_enum!(LayerKind, "layer kind", [
    Linear => "linear", [], "a linear projection (or a 1x1 convolution stored as one)",
    Conv => "conv", [], "a convolution",
    Embedding => "embedding", [], "a token embedding table",
]);
