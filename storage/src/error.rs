//! The storage crate's one error type. The HTTP edge maps each variant to a spec error code.
//!
//! Backend errors are sorted once, where they enter this type (the `From` impls below):
//! a full disk, whichever backend reports it, becomes [`StorageError::NoSpace`], so
//! nothing above has to recognise it in an error message.

use sea_orm::sqlx;

use crate::digest::Digest;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A name, tag, reference or digest that breaks the OCI grammars.
    #[error(transparent)]
    Oci(#[from] berth_oci::OciError),
    #[error("repository name not known to registry: {0}")]
    NameUnknown(String),
    /// Content that does not match the digest it was given.
    #[error("invalid digest: {0}")]
    DigestInvalid(String),
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
    /// An upload has as many chunks as one may: each is an object of its own, listed
    /// in the upload's row and read back one by one.
    #[error("an upload takes at most {limit} chunks: send larger ones, or finish it")]
    TooManyChunks { limit: usize },
    /// An existing tag an immutable rule protects (`rule`: its pattern and scope).
    #[error("tag {tag} is immutable (rule {rule}): it can be neither overwritten nor deleted")]
    TagImmutable { tag: String, rule: String },
    /// A manifest a tag or an index still needs (not deleted).
    #[error("{0}")]
    ManifestInUse(String),
    /// A push that would take a namespace over its storage quota (nothing was stored).
    #[error(
        "namespace {namespace} is over its storage quota: {} used of {}, and this push adds {}",
        human_size(*usage),
        human_size(*quota),
        human_size(*adding)
    )]
    QuotaExceeded {
        namespace: String,
        usage: u64,
        quota: u64,
        adding: u64,
    },
    /// An immutable tag rule with a bad scope or pattern.
    #[error("invalid immutable tag rule: {0}")]
    TagRuleInvalid(String),
    #[error("no immutable tag rule {0}")]
    TagRuleUnknown(i64),
    /// A namespace (or a user) has as many of something owners add (webhooks,
    /// retention policies, immutable tag rules) as it may.
    #[error("{holder} has {limit} {what} already, the most allowed")]
    Limit {
        holder: String,
        what: &'static str,
        limit: u64,
    },
    /// Refused up front: free space is below the reserve kept for metadata commits.
    #[error(
        "the registry is out of space: {} MiB free, below the {} MiB kept in reserve; pushes are refused until space is freed",
        free / MIB,
        reserve / MIB
    )]
    BelowReserve { free: u64, reserve: u64 },
    /// A backend ran out of space in the middle of a write (which was undone).
    #[error("the registry is out of space: the {0} is full; the push was not stored")]
    NoSpace(Backend),
    #[error("object storage error: {0}")]
    Object(object_store::Error),
    #[error("storage I/O error: {0}")]
    Io(std::io::Error),
    #[error("database error: {0}")]
    Database(sea_orm::DbErr),
}

const MIB: u64 = 1024 * 1024;

fn human_size(bytes: u64) -> String {
    berth_oci::size::human_size(bytes, berth_oci::size::SizeFormat::OneDecimal)
}

/// Which backend failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Database,
    Objects,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Database => "database",
            Backend::Objects => "blob storage",
        })
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

impl StorageError {
    /// PostgreSQL rolled the transaction back to break a deadlock (40P01): none of it
    /// happened, and running it again is safe.
    pub fn is_deadlock(&self) -> bool {
        match self {
            StorageError::Database(e) => matches!(
                sqlx_error(e),
                Some(sqlx::Error::Database(d)) if d.code().as_deref() == Some("40P01")
            ),
            _ => false,
        }
    }
}

impl From<sea_orm::DbErr> for StorageError {
    fn from(e: sea_orm::DbErr) -> StorageError {
        if connection_lost(&e) {
            crate::db::connection_broken();
        }
        let full = match sqlx_error(&e) {
            // SQLITE_FULL; PostgreSQL's disk_full (class 53: insufficient resources).
            Some(sqlx::Error::Database(d)) => matches!(d.code().as_deref(), Some("13" | "53100")),
            Some(sqlx::Error::Io(io)) => is_no_space(io),
            _ => false,
        };
        match full {
            true => StorageError::NoSpace(Backend::Database),
            false => StorageError::Database(e),
        }
    }
}

impl From<std::io::Error> for StorageError {
    fn from(e: std::io::Error) -> StorageError {
        match is_no_space(&e) {
            true => StorageError::NoSpace(Backend::Objects),
            false => StorageError::Io(e),
        }
    }
}

impl From<object_store::Error> for StorageError {
    fn from(e: object_store::Error) -> StorageError {
        // The local file system wraps the io::Error a few levels down.
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = source {
            if err.downcast_ref().is_some_and(is_no_space) {
                return StorageError::NoSpace(Backend::Objects);
            }
            source = err.source();
        }
        StorageError::Object(e)
    }
}

/// Whether `e` says the connection itself is gone: an I/O or protocol failure, or the
/// server ending the session (SQLSTATE class 08, connection exception; 57P01–57P03,
/// shutdown or terminated by an administrator).
fn connection_lost(e: &sea_orm::DbErr) -> bool {
    match sqlx_error(e) {
        Some(sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_)) => true,
        Some(sqlx::Error::Database(d)) => d
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}

fn sqlx_error(e: &sea_orm::DbErr) -> Option<&sqlx::Error> {
    use sea_orm::{DbErr, RuntimeErr};
    match e {
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => Some(e),
        _ => None,
    }
}

/// ENOSPC or EDQUOT, also when wrapped in another `io::Error` (`io::Error::other`).
fn is_no_space(e: &std::io::Error) -> bool {
    let code = e.raw_os_error();
    code == Some(rustix::io::Errno::NOSPC.raw_os_error())
        || code == Some(rustix::io::Errno::DQUOT.raw_os_error())
        || e.get_ref()
            .and_then(|inner| inner.downcast_ref::<std::io::Error>())
            .is_some_and(is_no_space)
}

impl StorageError {
    /// Whether the database answered this error itself, so the write it ended was
    /// rolled back and did not happen. `false` when the connection broke (a commit
    /// may have happened before): then nothing it might refer to may be deleted.
    pub fn rolled_back(&self) -> bool {
        use sea_orm::DbErr;
        let StorageError::Database(e) = self else {
            return true;
        };
        match sqlx_error(e) {
            // The server's own answer, or no connection was ever had.
            Some(
                sqlx::Error::Database(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed,
            ) => true,
            Some(_) => false,
            None => !matches!(e, DbErr::Conn(_)),
        }
    }

    /// The same failure again, for each of several waiters on one write (a batch of
    /// completions): the kind is kept, the backend's error becomes its message.
    pub(crate) fn for_waiter(&self) -> StorageError {
        match self {
            StorageError::NoSpace(backend) => StorageError::NoSpace(*backend),
            StorageError::BelowReserve { free, reserve } => StorageError::BelowReserve {
                free: *free,
                reserve: *reserve,
            },
            // An unknown outcome stays unknown (see `rolled_back`).
            other if !other.rolled_back() => StorageError::Database(sea_orm::DbErr::Conn(
                sea_orm::RuntimeErr::Internal(other.to_string()),
            )),
            other => StorageError::Database(sea_orm::DbErr::Custom(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_recognised_whichever_backend_reports_it() {
        let enospc = || std::io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error());
        assert!(matches!(
            StorageError::from(enospc()),
            StorageError::NoSpace(Backend::Objects)
        ));
        let wrapped = object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(std::io::Error::other(enospc())),
        };
        assert!(matches!(
            StorageError::from(wrapped),
            StorageError::NoSpace(Backend::Objects)
        ));
        let db_io = sea_orm::DbErr::Exec(sea_orm::RuntimeErr::SqlxError(std::sync::Arc::new(
            sqlx::Error::Io(enospc()),
        )));
        assert!(matches!(
            StorageError::from(db_io),
            StorageError::NoSpace(Backend::Database)
        ));
        let other = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert!(matches!(StorageError::from(other), StorageError::Io(_)));
    }

    fn broken_connection() -> sea_orm::DbErr {
        sea_orm::DbErr::Exec(sea_orm::RuntimeErr::SqlxError(std::sync::Arc::new(
            sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into()),
        )))
    }

    #[test]
    fn a_broken_connection_leaves_the_outcome_unknown() {
        assert!(!StorageError::from(broken_connection()).rolled_back());
        let custom = StorageError::Database(sea_orm::DbErr::Custom("x".into()));
        assert!(custom.rolled_back());
        assert!(!StorageError::from(broken_connection())
            .for_waiter()
            .rolled_back());
        let full = StorageError::NoSpace(Backend::Database).for_waiter();
        assert!(matches!(full, StorageError::NoSpace(Backend::Database)));
    }
}
