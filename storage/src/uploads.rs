//! Blob uploads: start, append chunks, report progress, complete or cancel.
//!
//! An upload's state lives in its database row (size, chunk objects, saved hash
//! state), so any replica can continue it. Each chunk becomes one object; the row's
//! size doubles as a version so two writers can never both extend the same offset.

use bytes::Bytes;
use futures::Stream;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

use crate::digest::{Algorithm, Digest, Hasher};
use crate::entity::{now_millis, upload};
use crate::error::{Result, StorageError};
use crate::names::validate_name;
use crate::objects::Segment;
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
        let txn = self.write().await?;
        upload::Entity::insert(upload::ActiveModel {
            id: Set(id.clone()),
            repository: Set(repo.to_owned()),
            algorithm: Set(algorithm.name().to_owned()),
            size: Set(0),
            hash_state: Set(Hasher::new(algorithm).save()),
            segments: Set("[]".to_owned()),
            created_at: Set(now),
            updated_at: Set(now),
        })
        .exec(&*txn)
        .await?;
        txn.commit_visible().await?;
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
        let (loaded, interrupted) = self.append_loaded(loaded, start, body).await?;
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
        let (loaded, interrupted) = self.append_loaded(loaded, start, body).await?;
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
        let written = self.objects.write(body, &mut hasher).await?;
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
        Ok(Loaded {
            row,
            segments,
            hasher,
        })
    }

    async fn append_loaded<S, E>(
        &self,
        loaded: Loaded,
        start: Option<u64>,
        body: S,
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
        let written = self.objects.write(body, &mut hasher).await?;
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
        let txn = self.write().await?;
        let updated = upload::Entity::update_many()
            .col_expr(upload::Column::Size, Expr::value(new_size as i64))
            .col_expr(upload::Column::HashState, Expr::value(hasher.save()))
            .col_expr(
                upload::Column::Segments,
                Expr::value(serde_json::to_string(&segments).expect("segments serialize")),
            )
            .col_expr(upload::Column::UpdatedAt, Expr::value(now_millis()))
            .filter(upload::Column::Id.eq(row.id.as_str()))
            .filter(upload::Column::Size.eq(row.size))
            .exec(&*txn)
            .await?;
        txn.commit_visible().await?;
        if updated.rows_affected == 0 {
            // Another request extended or finished the upload meanwhile: ours loses.
            self.objects.delete_all(&written.segments).await?;
            return Err(StorageError::RangeInvalid { size });
        }
        row.size = new_size as i64;
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
