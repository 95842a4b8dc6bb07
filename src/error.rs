//! The library's error type. Every variant carries what a user needs to act: the file, the
//! tensor or module, and what was expected. Conditions a caller acts on have variants of their
//! own (`NeedsBase`, `UnknownKeys`, `BaseMismatch`, `BadOption`), so a library caller can match
//! on them and the CLI can add the flag that fixes them.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A file whose structure is wrong: a bad header, offsets outside the file, a bad config.
    #[error("{path}: {message}")]
    Malformed { path: PathBuf, message: String },

    /// One tensor of a file is wrong (shape, dtype, size).
    #[error("{path}: tensor '{tensor}': {message}")]
    BadTensor {
        path: PathBuf,
        tensor: String,
        message: String,
    },

    /// The content is well formed but loratool cannot represent it (LyCORIS keys, unknown names).
    #[error("{path}: {message}")]
    Unsupported { path: PathBuf, message: String },

    /// Something about a module of the canonical adapter is inconsistent.
    #[error("module '{module}': {message}")]
    Module { module: String, message: String },

    /// Reading or writing this needs the base model (its config.json or GGUF), which was not
    /// given: llama-arch GGUF adapters store q/k RoPE-permuted, GGUF names need the
    /// architecture and head counts.
    #[error("{path}: {why}; this needs the base model (its config.json or GGUF)")]
    NeedsBase { path: PathBuf, why: String },

    /// Keys a reader cannot represent (LyCORIS, names no table maps, non-LoRA tensors). Never
    /// dropped silently: reading with `skip_unknown` turns this into a warning.
    #[error("{path}: {} {what} key(s) loratool cannot represent: {}", keys.len(), list_some(keys, 12))]
    UnknownKeys {
        path: PathBuf,
        what: String,
        keys: Vec<String>,
    },

    /// Adapter modules that do not fit the base model (missing tensors, other shapes). Checked
    /// before anything is written.
    #[error("{} adapter module(s) do not fit the base model {base} (wrong base model?); nothing was written: {}", problems.len(), list_some(problems, 10))]
    BaseMismatch { base: String, problems: Vec<String> },

    /// An option value out of its range or not applicable (`option` as the library names the
    /// field: `rank`, `density`, ...).
    #[error("{option}: {message}")]
    BadOption {
        option: &'static str,
        message: String,
    },

    /// A request that cannot be carried out as asked (target format cannot hold it, ...).
    #[error("{0}")]
    Invalid(String),
}

/// The first `max` items joined with `; ` or `, `, and how many more there are.
fn list_some(items: &[String], max: usize) -> String {
    let sep = if items.iter().any(|s| s.contains(' ')) {
        "; "
    } else {
        ", "
    };
    let shown: Vec<&str> = items.iter().take(max).map(String::as_str).collect();
    let mut text = shown.join(sep);
    if items.len() > max {
        text.push_str(&format!(" (and {} more)", items.len() - max));
    }
    text
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub fn malformed(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Malformed {
            path: path.into(),
            message: message.into(),
        }
    }
    pub fn bad_tensor(
        path: impl Into<PathBuf>,
        tensor: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::BadTensor {
            path: path.into(),
            tensor: tensor.into(),
            message: message.into(),
        }
    }
    pub fn unsupported(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Unsupported {
            path: path.into(),
            message: message.into(),
        }
    }
    pub fn needs_base(path: impl Into<PathBuf>, why: impl Into<String>) -> Self {
        Error::NeedsBase {
            path: path.into(),
            why: why.into(),
        }
    }
    pub fn bad_option(option: &'static str, message: impl Into<String>) -> Self {
        Error::BadOption {
            option,
            message: message.into(),
        }
    }
    pub fn module(module: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Module {
            module: module.into(),
            message: message.into(),
        }
    }
}
