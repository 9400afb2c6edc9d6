//! The proxy's one error type; the HTTP edge maps it to spec errors.

use std::sync::Arc;

use berth_storage::StorageError;

/// What a client is told about an upstream, and why.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    #[error("upstream {upstream} is unreachable: {reason}")]
    Unreachable { upstream: String, reason: String },
    /// The upstream answered with an error status.
    #[error("upstream {upstream} answered {status} for {what}")]
    Status {
        upstream: String,
        status: u16,
        what: String,
        /// The upstream's `Retry-After`, passed on with a 429.
        retry_after: Option<String>,
    },
    #[error("upstream {upstream} has no {what}")]
    NotFound { upstream: String, what: Missing },
    #[error("upstream {upstream} served content whose digest is {actual}, not {expected}")]
    DigestMismatch {
        upstream: String,
        expected: String,
        actual: String,
    },
    #[error("upstream {upstream} sent an unusable answer: {reason}")]
    BadAnswer { upstream: String, reason: String },
    /// Too many blob fetches at once (ours, not the upstream's limit).
    #[error("{running} blobs are being fetched from upstream {upstream} already; retry in a few seconds")]
    Busy { upstream: String, running: usize },
    /// A proxy that cannot be set up (at start-up).
    #[error("{0}")]
    Setup(String),
    /// Shared: every client following one fetch gets its outcome.
    #[error(transparent)]
    Storage(Arc<StorageError>),
}

impl From<StorageError> for ProxyError {
    fn from(e: StorageError) -> ProxyError {
        ProxyError::Storage(Arc::new(e))
    }
}

/// What an upstream did not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    Manifest(String),
    Blob(String),
    Repository(String),
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Missing::Manifest(r) => write!(f, "manifest {r}"),
            Missing::Blob(d) => write!(f, "blob {d}"),
            Missing::Repository(n) => write!(f, "repository {n}"),
        }
    }
}

impl ProxyError {
    /// The metrics label of an upstream failure (`None`: not the upstream's).
    pub fn kind(&self) -> Option<&'static str> {
        Some(match self {
            ProxyError::Unreachable { .. } => "unreachable",
            ProxyError::Status { status: 429, .. } => "rate_limited",
            ProxyError::Status {
                status: 401 | 403, ..
            } => "denied",
            ProxyError::Status { .. } => "server_error",
            ProxyError::NotFound { .. } => "not_found",
            ProxyError::DigestMismatch { .. } | ProxyError::BadAnswer { .. } => "bad_content",
            ProxyError::Storage(_) | ProxyError::Setup(_) | ProxyError::Busy { .. } => return None,
        })
    }

    /// Whether cached content may stand in for the upstream's answer: it is down,
    /// limiting or failing, not saying the content is gone.
    pub fn serves_stale(&self) -> bool {
        matches!(
            self.kind(),
            Some("unreachable" | "rate_limited" | "server_error" | "denied" | "bad_content")
        )
    }
}

pub type Result<T, E = ProxyError> = std::result::Result<T, E>;
