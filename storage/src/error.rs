//! The storage crate's one error type. The HTTP edge maps each variant to a spec error code.

use crate::digest::Digest;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid repository name: {0}")]
    NameInvalid(String),
    #[error("repository name not known to registry: {0}")]
    NameUnknown(String),
    #[error("invalid tag: {0}")]
    TagInvalid(String),
    #[error("invalid digest: {0}")]
    DigestInvalid(String),
    #[error("unsupported digest algorithm: {0}")]
    DigestUnsupported(String),
    #[error("blob unknown to registry: {0}")]
    BlobUnknown(Digest),
    #[error("blob upload unknown to registry: {0}")]
    UploadUnknown(String),
    #[error("upload is at offset {size}; a chunk must start there")]
    RangeInvalid { size: u64 },
    #[error("manifest unknown to registry: {0}")]
    ManifestUnknown(String),
    #[error("invalid manifest: {0}")]
    ManifestInvalid(String),
    #[error("manifest is {size} bytes, more than the limit of {limit}")]
    ManifestTooLarge { size: u64, limit: u64 },
    #[error("manifest references {kind} unknown to this repository: {digest}")]
    ManifestBlobUnknown { kind: &'static str, digest: Digest },
    #[error("blob is {size} bytes, more than {limit} that may be read at once")]
    BlobTooLarge { size: u64, limit: u64 },
    #[error("request body ended early: {0}")]
    BodyIncomplete(String),
    #[error("object storage error: {0}")]
    Object(#[from] object_store::Error),
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("database error: {0}")]
    Database(#[from] sea_orm::DbErr),
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
