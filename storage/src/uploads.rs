//! Blob uploads: start, append chunks, report progress, complete or cancel.
//!
//! An upload's state lives in its database row (size, chunk objects, saved hash
//! state), so any replica can continue it. Each chunk becomes one object; the row's
//! size doubles as a version so two writers can never both extend the same offset.
//!
//! On local disk a PATCH is answered once its bytes are written, before they are
//! flushed: the flush runs while the next request on the upload arrives, and that
//! request waits for it (a completing PUT flushes before the blob becomes visible, so
//! a 201 still means durable). The row remembers how far the upload is durable, with
//! the hash state at that point, and the boot it was written in: after a reboot the
//! unflushed tail may be lost, so it is dropped and the client resumes from the
//! reported offset. (Within one boot, even after `kill -9`, the kernel still holds the
//! written bytes, and the next flush makes them durable.)

use bytes::Bytes;
use futures::Stream;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

use crate::digest::{Algorithm, Digest, Hasher};
use crate::entity::{now_millis, upload};
use crate::error::{Result, StorageError};
use crate::names::validate_name;
use crate::objects::{Durability, Segment};
use crate::Storage;

#[derive(Debug, Clone, PartialEq)]
pub struct UploadState {
    pub id: String,
    /// Bytes received so far.
    pub size: u64,
}

struct Loaded {
    row: upload::Model,
    segments: Vec<Segment>,
    hasher: Hasher,
}

impl Storage {
    pub async fn start_upload(&self, repo: &str, algorithm: Algorithm) -> Result<UploadState> {
        validate_name(repo)?;
        let id = uuid::Uuid::new_v4().to_string();
        let now = now_millis();
        let _turn = self.write_turn().await;
        upload::Entity::insert(upload::ActiveModel {
            id: Set(id.clone()),
            repository: Set(repo.to_owned()),
            algorithm: Set(algorithm.name().to_owned()),
            size: Set(0),
            hash_state: Set(Hasher::new(algorithm).save()),
            segments: Set("[]".to_owned()),
            created_at: Set(now),
            updated_at: Set(now),
            synced_size: Set(None),
            synced_hash_state: Set(None),
            written_boot: Set(None),
        })
        .exec(&self.db)
        .await?;
        Ok(UploadState { id, size: 0 })
    }

    pub async fn upload_state(&self, repo: &str, id: &str) -> Result<UploadState> {
        let loaded = self.load_upload(repo, id).await?;
        Ok(UploadState {
            id: id.to_owned(),
            size: loaded.row.size as u64,
        })
    }

    /// Appends `body` to the upload. `start`, when the client sent a Content-Range,
    /// must equal the bytes received so far. If the body breaks off, what arrived is
    /// kept and `BodyIncomplete` is returned: the client resumes from the new size.
    pub async fn append_upload<S, E>(
        &self,
        repo: &str,
        id: &str,
        start: Option<u64>,
        body: S,
    ) -> Result<UploadState>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let loaded = self.load_upload(repo, id).await?;
        let (loaded, interrupted) = self
            .append_loaded(loaded, start, body, Chunk::Intermediate)
            .await?;
        match interrupted {
            Some(reason) => Err(StorageError::BodyIncomplete(reason)),
            None => Ok(UploadState {
                id: id.to_owned(),
                size: loaded.row.size as u64,
            }),
        }
    }

    /// Appends the optional last chunk, checks the digest of everything received and,
    /// if it matches, makes the blob visible in `repo`. On a mismatch the upload is
    /// discarded and no blob is created.
    pub async fn complete_upload<S, E>(
        &self,
        repo: &str,
        id: &str,
        digest: &Digest,
        start: Option<u64>,
        body: S,
    ) -> Result<()>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let loaded = self.load_upload(repo, id).await?;
        let (loaded, interrupted) = self.append_loaded(loaded, start, body, Chunk::Last).await?;
        if let Some(reason) = interrupted {
            return Err(StorageError::BodyIncomplete(reason));
        }
        let actual = if loaded.hasher.algorithm() == digest.algorithm() {
            loaded.hasher.clone().finish()
        } else {
            // The client announced another algorithm than the one it finished with: rehash.
            self.rehash(&loaded.segments, digest.algorithm()).await?
        };
        if &actual != digest {
            self.discard_upload(id, &loaded).await?;
            return Err(StorageError::DigestInvalid(format!(
                "upload content has digest {actual}, not {digest}; the upload was discarded"
            )));
        }
        self.store_blob(repo, digest, &loaded.segments, Some((id, loaded.row.size)))
            .await
    }

    /// A whole blob in one request (`POST ?digest=`): no upload row is needed.
    pub async fn put_blob<S, E>(&self, repo: &str, digest: &Digest, body: S) -> Result<()>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        validate_name(repo)?;
        let mut hasher = Hasher::new(digest.algorithm());
        let written = self
            .objects
            .write(body, &mut hasher, Durability::OnReturn)
            .await?;
        let segments = written.segments;
        let actual = hasher.finish();
        if written.interrupted.is_some() || &actual != digest {
            self.objects.delete_all(&segments).await?;
            return Err(match written.interrupted {
                Some(reason) => StorageError::BodyIncomplete(reason),
                None => StorageError::DigestInvalid(format!(
                    "content has digest {actual}, not {digest}"
                )),
            });
        }
        self.store_blob(repo, digest, &segments, None).await
    }

    pub async fn cancel_upload(&self, repo: &str, id: &str) -> Result<()> {
        let loaded = self.load_upload(repo, id).await?;
        self.discard_upload(id, &loaded).await
    }

    async fn discard_upload(&self, id: &str, loaded: &Loaded) -> Result<()> {
        let txn = self.write().await?;
        delete_upload_row(&*txn, id, loaded.row.size).await?;
        txn.commit().await?;
        self.objects.delete_all(&loaded.segments).await
    }

    async fn load_upload(&self, repo: &str, id: &str) -> Result<Loaded> {
        let unknown = || StorageError::UploadUnknown(id.to_owned());
        let row = upload::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .filter(|row| row.repository == repo)
            .ok_or_else(unknown)?;
        let algorithm = Algorithm::parse(&row.algorithm)?;
        let hasher = Hasher::restore(algorithm, &row.hash_state).ok_or_else(unknown)?;
        let segments = serde_json::from_str(&row.segments).map_err(|_| unknown())?;
        let loaded = Loaded {
            row,
            segments,
            hasher,
        };
        match loaded.row.written_boot.as_deref() {
            Some(boot) if boot != boot_id() => self.drop_unflushed(loaded).await,
            _ => Ok(loaded),
        }
    }

    /// After a reboot: back to the last offset known durable (the tail may be lost).
    async fn drop_unflushed(&self, loaded: Loaded) -> Result<Loaded> {
        let unknown = || StorageError::UploadUnknown(loaded.row.id.clone());
        let synced_size = loaded.row.synced_size.unwrap_or(0) as u64;
        let algorithm = loaded.hasher.algorithm();
        let hasher = match &loaded.row.synced_hash_state {
            Some(state) => Hasher::restore(algorithm, state).ok_or_else(unknown)?,
            None => Hasher::new(algorithm),
        };
        let mut kept = Vec::new();
        let mut dropped = Vec::new();
        let mut offset = 0;
        for segment in loaded.segments {
            if offset + segment.size <= synced_size {
                offset += segment.size;
                kept.push(segment);
            } else {
                dropped.push(segment);
            }
        }
        tracing::warn!(
            upload = %loaded.row.id,
            from = loaded.row.size,
            to = offset,
            "the machine restarted before this upload's last chunk was flushed; resuming from the last durable offset"
        );
        let mut row = loaded.row;
        let txn = self.write().await?;
        let updated = upload::Entity::update_many()
            .col_expr(upload::Column::Size, Expr::value(offset as i64))
            .col_expr(upload::Column::HashState, Expr::value(hasher.save()))
            .col_expr(upload::Column::Segments, Expr::value(segments_json(&kept)))
            .col_expr(upload::Column::SyncedSize, Expr::value(None::<i64>))
            .col_expr(
                upload::Column::SyncedHashState,
                Expr::value(None::<Vec<u8>>),
            )
            .col_expr(upload::Column::WrittenBoot, Expr::value(None::<String>))
            .filter(upload::Column::Id.eq(row.id.as_str()))
            .filter(upload::Column::Size.eq(row.size))
            .exec(&*txn)
            .await?;
        txn.commit().await?;
        if updated.rows_affected == 0 {
            return Err(StorageError::RangeInvalid { size: offset });
        }
        self.objects.delete_all(&dropped).await?;
        row.size = offset as i64;
        row.hash_state = hasher.save();
        row.synced_size = None;
        row.synced_hash_state = None;
        row.written_boot = None;
        Ok(Loaded {
            row,
            segments: kept,
            hasher,
        })
    }

    /// Writes `body` after what the upload holds, and waits for the flush of what the
    /// previous request left unflushed. An intermediate chunk is recorded in the row.
    /// The last chunk is recorded only if it broke off (to resume from); otherwise
    /// the caller completes or discards the upload with the row as loaded, and the
    /// returned segments include the new ones.
    async fn append_loaded<S, E>(
        &self,
        loaded: Loaded,
        start: Option<u64>,
        body: S,
        chunk: Chunk,
    ) -> Result<(Loaded, Option<String>)>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let Loaded {
            mut row,
            mut segments,
            mut hasher,
        } = loaded;
        let size = row.size as u64;
        if start.is_some_and(|s| s != size) {
            return Err(StorageError::RangeInvalid { size });
        }
        let durable_before = hasher.save();
        // What the previous request left unflushed is flushed while this body arrives.
        let previous_flush = row.written_boot.is_some().then(|| {
            let objects = self.objects.clone();
            tokio::spawn(async move { objects.flush().await })
        });
        let durability = match chunk {
            Chunk::Intermediate => Durability::Deferred,
            Chunk::Last => Durability::OnReturn,
        };
        let written = self.objects.write(body, &mut hasher, durability).await;
        if let Some(flush) = previous_flush {
            flush
                .await
                .map_err(|e| StorageError::Io(std::io::Error::other(e)))??;
        }
        let written = written?;
        if written.segments.is_empty() {
            return Ok((
                Loaded {
                    row,
                    segments,
                    hasher,
                },
                written.interrupted,
            ));
        }
        let new_size = size + written.segments.iter().map(|s| s.size).sum::<u64>();
        segments.extend(written.segments.iter().cloned());
        if chunk == Chunk::Last && written.interrupted.is_none() {
            return Ok((
                Loaded {
                    row,
                    segments,
                    hasher,
                },
                None,
            ));
        }
        // Everything up to `size` is durable now; past it only if this write was.
        let tail_unflushed = durability == Durability::Deferred && self.objects.defers_durability();
        let (synced_size, synced_hash_state, written_boot) = if tail_unflushed {
            (
                Some(size as i64),
                Some(durable_before),
                Some(boot_id().to_owned()),
            )
        } else {
            (None, None, None)
        };
        let turn = self.write_turn().await;
        let updated = upload::Entity::update_many()
            .col_expr(upload::Column::Size, Expr::value(new_size as i64))
            .col_expr(upload::Column::HashState, Expr::value(hasher.save()))
            .col_expr(
                upload::Column::Segments,
                Expr::value(segments_json(&segments)),
            )
            .col_expr(upload::Column::SyncedSize, Expr::value(synced_size))
            .col_expr(
                upload::Column::SyncedHashState,
                Expr::value(synced_hash_state.clone()),
            )
            .col_expr(
                upload::Column::WrittenBoot,
                Expr::value(written_boot.clone()),
            )
            .col_expr(upload::Column::UpdatedAt, Expr::value(now_millis()))
            .filter(upload::Column::Id.eq(row.id.as_str()))
            .filter(upload::Column::Size.eq(row.size))
            .exec(&self.db)
            .await?;
        drop(turn);
        if updated.rows_affected == 0 {
            // Another request extended or finished the upload meanwhile: ours loses.
            self.objects.delete_all(&written.segments).await?;
            return Err(StorageError::RangeInvalid { size });
        }
        row.size = new_size as i64;
        row.synced_size = synced_size;
        row.synced_hash_state = synced_hash_state;
        row.written_boot = written_boot;
        Ok((
            Loaded {
                row,
                segments,
                hasher,
            },
            written.interrupted,
        ))
    }

    async fn rehash(&self, segments: &[Segment], algorithm: Algorithm) -> Result<Digest> {
        use futures::TryStreamExt;
        let total = segments.iter().map(|s| s.size).sum();
        let mut hasher = Hasher::new(algorithm);
        let mut stream = self.objects.read(segments, 0..total);
        while let Some(chunk) = stream.try_next().await? {
            hasher.update(&chunk);
        }
        Ok(hasher.finish())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// A PATCH: the upload goes on.
    Intermediate,
    /// The body of the completing PUT.
    Last,
}

fn segments_json(segments: &[Segment]) -> String {
    serde_json::to_string(segments).expect("segments serialize")
}

/// This machine's boot (Linux's boot id): unflushed writes survive a process restart
/// within it, not a reboot. Elsewhere, each process counts as a new boot.
fn boot_id() -> &'static str {
    static BOOT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|id| id.trim().to_owned())
            .unwrap_or_else(|_| uuid::Uuid::new_v4().to_string())
    });
    &BOOT
}

/// Deletes the upload row if it still has `size` bytes; `UploadUnknown` if another
/// request completed, cancelled or extended it first.
pub(crate) async fn delete_upload_row(
    db: &impl ConnectionTrait,
    id: &str,
    size: i64,
) -> Result<()> {
    let deleted = upload::Entity::delete_many()
        .filter(upload::Column::Id.eq(id))
        .filter(upload::Column::Size.eq(size))
        .exec(db)
        .await?;
    if deleted.rows_affected == 0 {
        return Err(StorageError::UploadUnknown(id.to_owned()));
    }
    Ok(())
}
