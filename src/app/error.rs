//! The application layer's error: the library's and the store's errors, plus what only the
//! application layer can say (an input that is neither a path nor a reference, a request
//! that does not fit together), with context naming what was being done.

pub type Result<T, E = AppError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Lib(#[from] crate::error::Error),

    #[error(transparent)]
    Store(#[from] crate::registry::RegistryError),

    #[error(transparent)]
    Remote(#[from] crate::remote::RemoteError),

    /// An input argument that is neither an existing file or directory nor a reference the
    /// store could resolve.
    #[error("{input} is not an existing file or directory, nor a registry reference: {reason}")]
    NoSuchInput { input: String, reason: String },

    /// A request whose parts do not fit together (an option for another format or method).
    #[error("{0}")]
    Usage(String),

    /// What was being done when `source` happened (`reading style.safetensors`).
    #[error("{context}")]
    Context {
        context: String,
        #[source]
        source: Box<AppError>,
    },
}

impl AppError {
    /// The error under any context wrappers.
    pub fn root(&self) -> &AppError {
        match self {
            AppError::Context { source, .. } => source.root(),
            other => other,
        }
    }

    /// The library error at the root, if it is one (to match on `NeedsBase`, `UnknownKeys`, ...).
    pub fn lib(&self) -> Option<&crate::error::Error> {
        match self.root() {
            AppError::Lib(e) => Some(e),
            AppError::Store(crate::registry::RegistryError::Adapter(e)) => Some(e),
            _ => None,
        }
    }
}

/// `.context(...)` for results whose error converts into [`AppError`].
pub trait ResultExt<T> {
    fn context(self, context: impl Into<String>) -> Result<T>;
    fn with_context<F: FnOnce() -> String>(self, f: F) -> Result<T>;
}

impl<T, E: Into<AppError>> ResultExt<T> for std::result::Result<T, E> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|e| AppError::Context {
            context: context.into(),
            source: Box::new(e.into()),
        })
    }
    fn with_context<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|e| AppError::Context {
            context: f(),
            source: Box::new(e.into()),
        })
    }
}
