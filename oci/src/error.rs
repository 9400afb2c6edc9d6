//! The OCI crate's one error type; the HTTP edge maps each variant to a spec error.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OciError {
    #[error("invalid repository name: {0}")]
    NameInvalid(String),
    #[error("invalid tag: {0}")]
    TagInvalid(String),
    #[error("invalid digest: {0}")]
    DigestInvalid(String),
    #[error("unsupported digest algorithm: {0}")]
    DigestUnsupported(String),
    #[error("invalid manifest: {0}")]
    ManifestInvalid(String),
    #[error("blob upload unknown to registry: {0}")]
    UploadUnknown(String),
    /// A path under `/v2/` that is no endpoint of the distribution API.
    #[error("no such endpoint: {0}")]
    EndpointUnknown(String),
    #[error("method {method} not allowed on this endpoint")]
    MethodNotAllowed { method: String },
}
