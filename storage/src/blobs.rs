//! Blobs as a repository sees them: only those linked to it by an upload or a mount.

use std::ops::Range;

use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

use crate::completions::{Completion, EndingUpload, NewBlob, Outcome};
use crate::digest::Digest;
use crate::entity::{blob, now_millis, repository, repository_blob};
use crate::error::{Result, StorageError};
use crate::objects::{ByteStream, Segment};
use crate::repos::ensure_repository;
use crate::Storage;

#[derive(Debug, Clone)]
pub struct BlobInfo {
    pub digest: Digest,
    pub size: u64,
    segments: Vec<Segment>,
}

/// Filters `blobs` rows to those linked to repository `repo`.
fn linked_to(repo: &str) -> Expr {
    Expr::exists(
        Query::select()
            .expr(Expr::val(1))
            .from(repository_blob::Entity)
            .inner_join(
                repository::Entity,
                Expr::col((repository::Entity, repository::Column::Id)).equals((
                    repository_blob::Entity,
                    repository_blob::Column::RepositoryId,
                )),
            )
            .and_where(
                Expr::col((repository_blob::Entity, repository_blob::Column::Digest))
                    .equals((blob::Entity, blob::Column::Digest)),
            )
            .and_where(Expr::col((repository::Entity, repository::Column::Name)).eq(repo))
            .to_owned(),
    )
}

impl Storage {
    /// The blob if `repo` may see it, else `BlobUnknown`.
    pub async fn blob(&self, repo: &str, digest: &Digest) -> Result<BlobInfo> {
        if let Some(hit) = self.cache.blob(repo, digest.as_str()) {
            return Ok(hit);
        }
        let ticket = self.cache.ticket(repo);
        let row = blob::Entity::find_by_id(digest.as_str())
            .filter(linked_to(repo))
            .one(&self.db)
            .await?
            .ok_or_else(|| StorageError::BlobUnknown(digest.clone()))?;
        let info = blob_info(row)?;
        self.cache.put_blob(repo, ticket, info.clone());
        Ok(info)
    }

    /// Where a client may fetch the blob directly (S3 with redirects on), if anywhere.
    pub async fn blob_redirect(&self, blob: &BlobInfo) -> Result<Option<String>> {
        self.objects.presigned_url(&blob.segments).await
    }

    /// Streams `range` of the blob (already resolved with [`Storage::blob`]).
    pub fn read_blob(&self, blob: &BlobInfo, range: Range<u64>) -> ByteStream {
        self.objects.read(&blob.segments, range)
    }

    /// On local disk, the open files holding `range` of the blob, for zero-copy
    /// sending; `None` on other backends (then [`Storage::read_blob`] streams it).
    pub async fn open_blob_files(
        &self,
        blob: &BlobInfo,
        range: Range<u64>,
    ) -> Result<Option<Vec<crate::objects::FilePiece>>> {
        self.objects.open_files(&blob.segments, range).await
    }

    /// The whole content of a small blob of `repo` (an image configuration), or
    /// `BlobUnknown`; refuses blobs larger than `limit` bytes (they are streamed instead).
    pub async fn read_small_blob(
        &self,
        repo: &str,
        digest: &Digest,
        limit: u64,
    ) -> Result<bytes::Bytes> {
        use futures::TryStreamExt;
        let blob = self.blob(repo, digest).await?;
        if blob.size > limit {
            return Err(StorageError::BlobTooLarge {
                size: blob.size,
                limit,
            });
        }
        let chunks: Vec<bytes::Bytes> = self.read_blob(&blob, 0..blob.size).try_collect().await?;
        Ok(chunks.concat().into())
    }

    /// Unlinks the blob from `repo`; the data stays while other repositories link it
    /// (garbage collection removes data nothing links).
    pub async fn delete_blob(&self, repo: &str, digest: &Digest) -> Result<()> {
        let unknown = || StorageError::BlobUnknown(digest.clone());
        let repo_id = self.known_repository_id(repo).await?.ok_or_else(unknown)?;
        let txn = self.write().await?;
        let deleted = repository_blob::Entity::delete_many()
            .filter(repository_blob::Column::RepositoryId.eq(repo_id))
            .filter(repository_blob::Column::Digest.eq(digest.as_str()))
            .exec(&*txn)
            .await?;
        txn.commit().await?;
        self.cache.invalidate(repo);
        if deleted.rows_affected == 0 {
            return Err(unknown());
        }
        Ok(())
    }

    /// Links a blob that `from` can see into `repo`. False when `from` cannot see it
    /// (then the client uploads instead): a blob is never found through a repository
    /// that does not have it.
    pub async fn mount_blob(&self, repo: &str, from: &str, digest: &Digest) -> Result<bool> {
        match self.blob(from, digest).await {
            Ok(_) => {}
            Err(StorageError::BlobUnknown(_)) => return Ok(false),
            Err(e) => return Err(e),
        }
        let txn = self.write().await?;
        let repo_id = ensure_repository(&*txn, repo, self.private_by_default).await?;
        link_blob(&*txn, repo_id, digest).await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Records a verified, durable blob and links it into `repo`. When the registry
    /// already had it, the caller's copy is redundant and is deleted.
    pub(crate) async fn store_blob(
        &self,
        repo: &str,
        digest: &Digest,
        segments: &[Segment],
        upload: Option<EndingUpload>,
    ) -> Result<()> {
        let blob = NewBlob {
            repo: repo.to_owned(),
            // Looked up outside the write: writes take turns, and every statement inside
            // one lengthens everyone's wait (repositories are never removed).
            repo_id: self.known_repository_id(repo).await?,
            digest: digest.to_string(),
            size: segments.iter().map(|s| s.size as i64).sum(),
            segments: serde_json::to_string(segments).expect("segments serialize"),
        };
        // Completing consumes the upload, in the same commit that makes the blob visible.
        let outcome = self
            .completions
            .write(Completion {
                upload,
                blob: Some(blob),
            })
            .await?;
        if outcome == Outcome::BlobExisted {
            // Someone stored these bytes first; one copy is enough.
            self.objects.delete_all(segments).await?;
        }
        Ok(())
    }
}

async fn link_blob(db: &impl ConnectionTrait, repo_id: i64, digest: &Digest) -> Result<()> {
    repository_blob::Entity::insert(repository_blob::ActiveModel {
        repository_id: Set(repo_id),
        digest: Set(digest.to_string()),
        created_at: Set(now_millis()),
    })
    .on_conflict_do_nothing()
    .exec(db)
    .await?;
    Ok(())
}

fn blob_info(row: blob::Model) -> Result<BlobInfo> {
    Ok(BlobInfo {
        digest: row.digest.parse()?,
        size: row.size as u64,
        segments: serde_json::from_str(&row.segments).map_err(|e| {
            StorageError::Io(std::io::Error::other(format!(
                "corrupt segments of {}: {e}",
                row.digest
            )))
        })?,
    })
}
