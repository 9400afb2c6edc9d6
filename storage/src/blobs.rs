//! Blobs as a repository sees them: only those linked to it by an upload or a mount.

use std::ops::Range;

use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter};

use crate::completions::{Completion, EndingUpload, NewBlob, Outcome};
use crate::db::query_as;
use crate::digest::Digest;
use crate::entity::{blob, now_millis, repository, repository_blob};
use crate::error::{Result, StorageError};
use crate::events::{Action, Target};
use crate::liveness;
use crate::objects::{ByteStream, Segment};
use crate::repos::ensure_repository;
use crate::Storage;

/// A blob as one repository sees it.
#[derive(Debug, Clone)]
pub struct BlobInfo {
    pub digest: Digest,
    pub size: u64,
    segments: Vec<Segment>,
    repo_id: i64,
    /// When the repository's link to it was last touched (see `liveness`).
    touched_at: i64,
}

#[derive(FromQueryResult)]
struct LinkedBlob {
    digest: String,
    size: i64,
    segments: String,
    repository_id: i64,
    touched_at: i64,
}

/// The blob `digest` with its link to repository `repo`, if linked.
async fn find_linked(
    db: &impl ConnectionTrait,
    repo: &str,
    digest: &Digest,
) -> Result<Option<BlobInfo>> {
    let query = Query::select()
        .columns([
            (blob::Entity, blob::Column::Digest),
            (blob::Entity, blob::Column::Size),
            (blob::Entity, blob::Column::Segments),
        ])
        .columns([
            (
                repository_blob::Entity,
                repository_blob::Column::RepositoryId,
            ),
            (repository_blob::Entity, repository_blob::Column::TouchedAt),
        ])
        .from(blob::Entity)
        .inner_join(
            repository_blob::Entity,
            Expr::col((repository_blob::Entity, repository_blob::Column::Digest))
                .equals((blob::Entity, blob::Column::Digest)),
        )
        .inner_join(
            repository::Entity,
            Expr::col((repository::Entity, repository::Column::Id)).equals((
                repository_blob::Entity,
                repository_blob::Column::RepositoryId,
            )),
        )
        .and_where(Expr::col((blob::Entity, blob::Column::Digest)).eq(digest.as_str()))
        .and_where(Expr::col((repository::Entity, repository::Column::Name)).eq(repo))
        .to_owned();
    let Some(row) = query_as::<LinkedBlob>(db, &query).await?.pop() else {
        return Ok(None);
    };
    Ok(Some(BlobInfo {
        digest: row.digest.parse()?,
        size: row.size as u64,
        segments: parse_segments(&row.digest, &row.segments)?,
        repo_id: row.repository_id,
        touched_at: row.touched_at,
    }))
}

impl Storage {
    /// The blob if `repo` may see it, else `BlobUnknown`. Confirms the repository's
    /// link to it for garbage collection, writing only when the last confirmation is
    /// older than a quarter of the grace period (so a link seen here stays for at
    /// least three quarters of it).
    pub async fn blob(&self, repo: &str, digest: &Digest) -> Result<BlobInfo> {
        self.confirm_cache(repo).await?;
        let info = match self.cache.blob(repo, digest.as_str()) {
            Some(hit) => hit,
            None => {
                let ticket = self.cache.ticket(repo);
                let info = find_linked(&self.db, repo, digest)
                    .await?
                    .ok_or_else(|| StorageError::BlobUnknown(digest.clone()))?;
                self.cache.put_blob(repo, ticket, info.clone());
                info
            }
        };
        let now = now_millis();
        if now - info.touched_at <= self.gc.touch_every_ms() {
            return Ok(info);
        }
        self.touch_blob(repo, info, now).await
    }

    /// Refreshes a link's touch time; `BlobUnknown` if it was collected meanwhile. A
    /// touch that cannot be written (a full disk, a database refusing writes) does not
    /// fail the read: pulls keep working when pushes cannot, and a manifest referring
    /// to the blob could not be written either.
    async fn touch_blob(&self, repo: &str, mut info: BlobInfo, now: i64) -> Result<BlobInfo> {
        let touched = async {
            let txn = self.write().await?;
            let alive = liveness::touch(&*txn, info.repo_id, info.digest.as_str(), now).await?;
            txn.commit().await?;
            Ok::<_, StorageError>(alive)
        };
        let alive = match touched.await {
            Ok(alive) => alive,
            Err(e) => {
                tracing::warn!(error = %e, digest = %info.digest, "cannot record a blob read for garbage collection; serving it anyway");
                return Ok(info);
            }
        };
        if !alive {
            self.cache.invalidate(repo);
            return Err(StorageError::BlobUnknown(info.digest));
        }
        info.touched_at = now;
        let ticket = self.cache.ticket(repo);
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
    /// (garbage collection removes data nothing links). Recorded in the audit log as
    /// this storage's actor's in the same transaction; `via` says through what.
    pub async fn delete_blob(&self, repo: &str, digest: &Digest, via: &str) -> Result<()> {
        let unknown = || StorageError::BlobUnknown(digest.clone());
        let repo_id = self.known_repository_id(repo).await?.ok_or_else(unknown)?;
        let events = self
            .events_for_change(
                Action::Delete,
                repo,
                [Target::named(repo, Some(digest.as_str()), None)],
            )
            .await?;
        let txn = self.write().await?;
        let deleted = repository_blob::Entity::delete_many()
            .filter(repository_blob::Column::RepositoryId.eq(repo_id))
            .filter(repository_blob::Column::Digest.eq(digest.as_str()))
            .exec(&*txn)
            .await?;
        if deleted.rows_affected == 0 {
            self.cache.invalidate(repo);
            return Err(unknown());
        }
        let target = format!("{repo}@{digest}");
        self.audited(
            &*txn,
            crate::audit::Action::BlobDeleted,
            &target,
            Some(via.to_owned()),
        )
        .await?;
        self.commit_with_events(txn, &events).await?;
        self.cache.invalidate(repo);
        self.settle_change().await;
        Ok(())
    }

    /// Links a blob that `from` can see into `repo`. False when `from` cannot see it
    /// (then the client uploads instead): a blob is never found through a repository
    /// that does not have it.
    pub async fn mount_blob(&self, repo: &str, from: &str, digest: &Digest) -> Result<bool> {
        let source = match self.blob(from, digest).await {
            Ok(info) => info,
            Err(StorageError::BlobUnknown(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        let events = self
            .events_for_change(
                Action::Mount,
                repo,
                [Target {
                    from_repository: Some(from.to_owned()),
                    ..Target::blob(repo, digest.as_str(), source.size)
                }],
            )
            .await?;
        let txn = self.write().await?;
        // The source's link, locked: a blob collected since the lookup is not mounted.
        let alive = liveness::lock_linked_blobs(&*txn, source.repo_id, [digest.to_string()])
            .await?
            .contains(digest.as_str());
        if !alive {
            return Ok(false);
        }
        let repo_id = ensure_repository(&*txn, repo, self.private_by_default).await?;
        liveness::link(&*txn, [(repo_id, digest.to_string())], now_millis()).await?;
        self.commit_with_events(txn, &events).await?;
        self.cache.invalidate(repo);
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
        let size: i64 = segments.iter().map(|s| s.size as i64).sum();
        let events = self
            .events_for_change(
                Action::Push,
                repo,
                [Target::blob(repo, digest.as_str(), size as u64)],
            )
            .await?;
        let has_events = !events.is_empty();
        let blob = NewBlob {
            repo: repo.to_owned(),
            // Looked up outside the write: writes take turns, and every statement inside
            // one lengthens everyone's wait (repositories are never removed).
            repo_id: self.known_repository_id(repo).await?,
            digest: digest.to_string(),
            size,
            segments: serde_json::to_string(segments).expect("segments serialize"),
            keys: segments.iter().map(|s| s.key.clone()).collect(),
        };
        // Completing consumes the upload, in the same commit that makes the blob visible.
        let outcome = self
            .completions
            .write(Completion {
                upload,
                blob: Some(blob),
                events,
            })
            .await?;
        if has_events {
            self.events_written();
        }
        if outcome == Outcome::BlobExisted {
            // Someone stored these bytes first; one copy is enough.
            self.objects.delete_all(segments).await?;
        }
        Ok(())
    }
}

/// A blob row's object list.
pub(crate) fn parse_segments(digest: &str, segments: &str) -> Result<Vec<Segment>> {
    serde_json::from_str(segments).map_err(|e| {
        StorageError::Io(std::io::Error::other(format!(
            "corrupt segments of {digest}: {e}"
        )))
    })
}
