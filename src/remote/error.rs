//! The remote layer's error type. Every variant names the server, repository or file involved
//! and, where there is one, what the user can do. No variant ever holds a token, a password or
//! a URL query string (presigned URLs carry signatures there): see [`shown_url`].

use std::path::PathBuf;

pub type Result<T, E = RemoteError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// `hf://...` or `oci://...` that the grammar refuses.
    #[error("invalid remote reference '{reference}': {message}")]
    BadReference { reference: String, message: String },

    /// 401: no credentials, or credentials the server does not accept.
    #[error("{server}: 401 unauthorized{detail}: {fix}")]
    Unauthorized {
        server: String,
        detail: String,
        fix: String,
    },

    /// 403: the credentials are valid but lack the right (write access, a gated repo).
    #[error("{server}: 403 forbidden{detail}: {fix}")]
    Forbidden {
        server: String,
        detail: String,
        fix: String,
    },

    /// The repository does not exist (or is private and the credentials cannot see it).
    #[error("{server}: repository '{repo}' not found{hint}")]
    RepoNotFound {
        server: String,
        repo: String,
        hint: String,
    },

    /// The repository exists but has no such branch, tag or commit.
    #[error("{server}: repository '{repo}' has no revision '{revision}'")]
    RevisionNotFound {
        server: String,
        repo: String,
        revision: String,
    },

    /// The revision exists but holds no such file.
    #[error("{server}: '{path}' not found in {repo}@{revision}")]
    EntryNotFound {
        server: String,
        repo: String,
        revision: String,
        path: String,
    },

    /// The server does not speak the protocol (an HTML page, a 404 without the Hub's error
    /// headers, a registry without `/v2/`).
    #[error("{server}: {message}")]
    WrongServer { server: String, message: String },

    /// A reply that is not what the protocol allows: bad JSON, too large, a field out of range.
    #[error("{url}: bad reply: {message}")]
    BadReply { url: String, message: String },

    /// Any other HTTP status, with the server's own error code and message when it sent them.
    #[error("{url}: HTTP {status}{detail}")]
    Status {
        url: String,
        status: u16,
        detail: String,
    },

    /// The connection failed, stalled or dropped, after the retries.
    #[error("{url}: {message}")]
    Network { url: String, message: String },

    /// Downloaded bytes that are not what the server announced (size, sha256, digest).
    #[error("{url}: {message}; nothing was stored")]
    Integrity { url: String, message: String },

    /// Several adapters match; the user has to pick one.
    #[error("{what} holds several adapters; pick one:\n{}", .candidates.iter().map(|c| format!("  {c}")).collect::<Vec<_>>().join("\n"))]
    Ambiguous {
        what: String,
        candidates: Vec<String>,
    },

    /// Nothing that looks like an adapter.
    #[error("{what}: {message}")]
    NoAdapter { what: String, message: String },

    /// `HF_HUB_OFFLINE=1` and the cache cannot answer.
    #[error("HF_HUB_OFFLINE is set and {message}")]
    Offline { message: String },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),

    #[error(transparent)]
    Adapter(#[from] crate::error::Error),

    /// A request that cannot be carried out as asked.
    #[error("{0}")]
    Invalid(String),
}

impl RemoteError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RemoteError::Io {
            path: path.into(),
            source,
        }
    }
    pub fn bad_ref(reference: &str, message: impl Into<String>) -> Self {
        RemoteError::BadReference {
            reference: reference.to_string(),
            message: message.into(),
        }
    }
    pub fn bad_reply(url: &str, message: impl Into<String>) -> Self {
        RemoteError::BadReply {
            url: shown_url(url),
            message: message.into(),
        }
    }
    pub fn integrity(url: &str, message: impl Into<String>) -> Self {
        RemoteError::Integrity {
            url: shown_url(url),
            message: message.into(),
        }
    }
}

/// A URL as shown to users: without its query string (presigned URLs carry signatures there)
/// and without userinfo.
pub fn shown_url(url: &str) -> String {
    let no_query = url.split(['?', '#']).next().unwrap_or(url);
    match no_query.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit('@').next().unwrap_or(authority);
            format!("{scheme}://{host}{path}")
        }
        None => no_query.to_string(),
    }
}
