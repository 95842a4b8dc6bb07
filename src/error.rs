//! The library's error type. Every variant carries what a user needs to act: the file, the
//! tensor or module, and what was expected. The CLI adds nothing but exit codes and colour.

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

    /// A request that cannot be carried out as asked (wrong option, target format cannot hold it).
    #[error("{0}")]
    Invalid(String),
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
    pub fn module(module: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Module {
            module: module.into(),
            message: message.into(),
        }
    }
}
