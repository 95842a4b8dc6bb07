//! File containers. `io` knows bytes, headers and files, never LoRA math.

pub mod atomic;
pub mod copy;
pub mod gguf;
pub mod imatrix;
pub mod model;
pub mod safetensors;
pub mod safetensors_write;
pub mod staging;

pub use model::TensorStore;
pub use safetensors::{SafetensorsFile, TensorInfo};
pub use safetensors_write::{
    stage_safetensors, write_safetensors, write_safetensors_unsynced, FileSpan, PendingTensor,
    StagedSafetensors, WriteReport,
};
