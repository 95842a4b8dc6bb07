//! The registry's error type: every variant names the store file or the reference involved and,
//! where there is one, what the user can do about it.

use std::path::PathBuf;

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A reference (`namespace/name:tag`, `name@sha256:...`) that the grammar refuses.
    #[error("invalid reference '{reference}': {message}")]
    BadReference { reference: String, message: String },

    /// A well-formed reference the store does not hold.
    #[error("no adapter '{reference}' in the store {store}; `loratool list` shows what it holds")]
    NotFound { reference: String, store: PathBuf },

    /// A store file (index.json, a manifest, a config) that is not what loratool wrote.
    #[error("{path}: {message}; run `loratool verify` to check the store")]
    Corrupt { path: PathBuf, message: String },

    /// Reading the adapter being added failed (format detection, a bad header, ...).
    #[error(transparent)]
    Adapter(#[from] crate::error::Error),

    /// A request that cannot be carried out as asked.
    #[error("{0}")]
    Invalid(String),
}

impl RegistryError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RegistryError::Io {
            path: path.into(),
            source,
        }
    }
    pub fn corrupt(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        RegistryError::Corrupt {
            path: path.into(),
            message: message.into(),
        }
    }
    pub fn bad_ref(reference: &str, message: impl Into<String>) -> Self {
        RegistryError::BadReference {
            reference: reference.to_string(),
            message: message.into(),
        }
    }
}
