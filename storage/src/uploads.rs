//! Blob uploads: start, append chunks, report progress, complete or cancel.
//!
//! An upload's state lives in its database row (size, chunk objects, saved hash
//! state), so any replica can continue it. Each chunk becomes one object; the row's
//! size doubles as a version so two writers can never both extend the same offset.
//! The row's transitions, and that rule, are `upload_row`'s; this module decides which
//! to make.
//!
//! On local disk a PATCH is answered once its bytes are written, before they are
//! flushed: the flush runs while the next request on the upload arrives, and that
//! request waits for it (a completing PUT flushes before the blob becomes visible, so
//! a 201 still means durable). The row remembers how far the upload is durable, with
//! the hash state at that point, and the boot it was written in: after a reboot the
//! unflushed tail may be lost, so it is dropped and the client resumes from the
//! reported offset. (Within one boot, even after `kill -9`, the kernel still holds the
//! written bytes, and the next flush makes them durable.)
//!
//! Starting an upload writes nothing: the id carries what a fresh upload is (a random
//! part, when it started, the digest algorithm), as Distribution's `_state` parameter
//! does, and the row appears with the first PATCH. A small blob pushed with POST + PUT
//! thus costs one write transaction, not two. Ending a row-less upload (complete,
//! cancel, discard) leaves a tombstone, so the id is unknown from then on; ids older
//! than the upload expiry are unknown anyway.

use bytes::Bytes;
use futures::Stream;

use crate::completions::Completion;
use crate::digest::{Algorithm, Digest, Hasher};
use crate::entity::{now_millis, upload};
use crate::error::{Result, StorageError};
use crate::names::validate_name;
use crate::objects::{Durability, Segment};
use crate::quotas::Adding;
use crate::upload_row::{self, EndingUpload};
use crate::Storage;

/// How far ahead of this replica's clock another replica's may run: an upload id it
/// made is dated by its clock.
const CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

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
    /// False for an upload nothing was appended to yet: it has no row.
    has_row: bool,
}

impl Storage {
    /// Starts an upload: nothing is written until its first chunk (see the module docs).
    pub async fn start_upload(&self, repo: &str, algorithm: Algorithm) -> Result<UploadState> {
        validate_name(repo)?;
        self.ensure_room()?;
        Ok(UploadState {
            id: upload_row::new_id(repo, algorithm, now_millis()),
            size: 0,
        })
    }

    pub async fn upload_state(&self, repo: &str, id: &str) -> Result<UploadState> {
        let loaded = self.load_upload(repo, id, true).await?;
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
        self.ensure_room()?;
        let loaded = self.load_upload(repo, id, true).await?;
        // Each chunk is an object, and the upload's row lists them all (rewritten
        // with every chunk): a client sending a byte at a time is stopped here.
        let limit = self.max_upload_chunks;
        if loaded.segments.len() >= limit {
            return Err(StorageError::TooManyChunks { limit });
        }
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
        // Whether a row-less id has ended already shows in the completion's own commit
        // (its tombstone exists): no lookup for it before.
        self.ensure_room()?;
        let loaded = self.load_upload(repo, id, false).await?;
        // Segments past these are this request's own (its body, not in the row).
        let recorded = loaded.segments.len();
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
            self.discard_upload(&loaded).await?;
            return Err(StorageError::DigestInvalid(format!(
                "upload content has digest {actual}, not {digest}; the upload was discarded"
            )));
        }
        let size = loaded.segments.iter().map(|s| s.size).sum();
        if let Err(e) = self.check_quota(repo, Adding::Blob { digest, size }).await {
            self.discard_upload(&loaded).await?;
            return Err(e);
        }
        let stored = self
            .store_blob(repo, digest, &loaded.segments, Some(ending(&loaded)))
            .await;
        // Not completed (ended by another request first, or the commit failed): the
        // row, if any, still lists what it had; what this request added goes.
        if stored.as_ref().is_err_and(StorageError::rolled_back) {
            self.objects.discard(&loaded.segments[recorded..]).await;
        }
        stored
    }

    /// A whole blob in one request (`POST ?digest=`): no upload row is needed.
    pub async fn put_blob<S, E>(&self, repo: &str, digest: &Digest, body: S) -> Result<()>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        validate_name(repo)?;
        self.ensure_room()?;
        let mut hasher = Hasher::new(digest.algorithm());
        let written = self
            .write_objects(body, &mut hasher, Durability::OnReturn)
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
        let size = segments.iter().map(|s| s.size).sum();
        if let Err(e) = self.check_quota(repo, Adding::Blob { digest, size }).await {
            self.objects.delete_all(&segments).await?;
            return Err(e);
        }
        let stored = self.store_blob(repo, digest, &segments, None).await;
        if stored.as_ref().is_err_and(StorageError::rolled_back) {
            self.objects.discard(&segments).await;
        }
        stored
    }

    pub async fn cancel_upload(&self, repo: &str, id: &str) -> Result<()> {
        let loaded = self.load_upload(repo, id, true).await?;
        self.discard_upload(&loaded).await
    }

    async fn discard_upload(&self, loaded: &Loaded) -> Result<()> {
        let completion = Completion {
            upload: Some(ending(loaded)),
            blob: None,
            events: Vec::new(),
        };
        self.completions.write(completion).await?;
        self.objects.delete_all(&loaded.segments).await
    }

    /// The upload `id` of `repo`, or `UploadUnknown`. `check_ended`: make sure an id
    /// of the row-less kind was not completed or cancelled yet (a row, once there,
    /// goes when the upload ends).
    async fn load_upload(&self, repo: &str, id: &str, check_ended: bool) -> Result<Loaded> {
        let unknown = || StorageError::UploadUnknown(id.to_owned());
        let Some(row) = upload_row::find(&self.db, id).await? else {
            // Started, nothing appended yet (a row, once there, expires when idle).
            let now = now_millis();
            let (not_before, not_after) = (now - self.upload_expiry_ms, now + CLOCK_SKEW_MS);
            let row = upload_row::fresh(id, repo, not_before, not_after).ok_or_else(unknown)?;
            if check_ended && upload_row::ended(&self.db, id).await? {
                return Err(unknown());
            }
            let hasher = Hasher::new(Algorithm::parse(&row.algorithm)?);
            return Ok(Loaded {
                row,
                segments: Vec::new(),
                hasher,
                has_row: false,
            });
        };
        if row.repository != repo {
            return Err(unknown());
        }
        let algorithm = Algorithm::parse(&row.algorithm)?;
        let hasher = Hasher::restore(algorithm, &row.hash_state).ok_or_else(unknown)?;
        let segments = serde_json::from_str(&row.segments).map_err(|_| unknown())?;
        let loaded = Loaded {
            row,
            segments,
            hasher,
            has_row: true,
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
        let expected = loaded.row.size;
        let row = upload::Model {
            size: offset as i64,
            hash_state: hasher.save(),
            segments: segments_json(&kept),
            synced_size: None,
            synced_hash_state: None,
            written_boot: None,
            ..loaded.row
        };
        let txn = self.write().await?;
        let rewound = upload_row::rewind(&*txn, expected, &row).await?;
        txn.commit().await?;
        if !rewound {
            return Err(StorageError::RangeInvalid { size: offset });
        }
        self.objects.delete_all(&dropped).await?;
        Ok(Loaded {
            row,
            segments: kept,
            hasher,
            has_row: true,
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
            row,
            mut segments,
            mut hasher,
            has_row,
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
        let written = self.write_objects(body, &mut hasher, durability).await;
        let flushed = match previous_flush {
            Some(flush) => flush
                .await
                .map_err(|e| StorageError::Io(std::io::Error::other(e)))
                .and_then(|flushed| flushed),
            None => Ok(()),
        };
        // A failed write deleted its own objects; a failed flush leaves this one's.
        let written = written?;
        if let Err(e) = flushed {
            self.objects.discard(&written.segments).await;
            return Err(e);
        }
        let new_size = size + written.segments.iter().map(|s| s.size).sum::<u64>();
        segments.extend(written.segments.iter().cloned());
        // Nothing arrived, or a whole last chunk: nothing to record in the row.
        if written.segments.is_empty() || (chunk == Chunk::Last && written.interrupted.is_none()) {
            return Ok((
                Loaded {
                    row,
                    segments,
                    hasher,
                    has_row,
                },
                written.interrupted,
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
        let next = upload::Model {
            size: new_size as i64,
            hash_state: hasher.save(),
            segments: segments_json(&segments),
            updated_at: now_millis(),
            synced_size,
            synced_hash_state,
            written_boot,
            ..row
        };
        let turn = self.write_turn().await;
        let recorded = if has_row {
            upload_row::append(&self.db, size as i64, &next).await
        } else {
            // The first chunk: the row appears (unless another request made it first).
            upload_row::create(&self.db, &next).await
        }
        .map_err(StorageError::from);
        drop(turn);
        let recorded = match recorded {
            Ok(recorded) => recorded,
            Err(e) => {
                if e.rolled_back() {
                    self.objects.discard(&written.segments).await;
                }
                return Err(e);
            }
        };
        if !recorded {
            // Another request extended or finished the upload meanwhile: ours loses.
            self.objects.delete_all(&written.segments).await?;
            return Err(StorageError::RangeInvalid { size });
        }
        Ok((
            Loaded {
                row: next,
                segments,
                hasher,
                has_row: true,
            },
            written.interrupted,
        ))
    }

    /// [`Objects::write`], refused when it took so long that the orphan sweep might
    /// already take its first objects (see `gc::GcSettings::max_write_ms`).
    async fn write_objects<S, E>(
        &self,
        body: S,
        hasher: &mut Hasher,
        durability: Durability,
    ) -> Result<crate::objects::Written>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let started = std::time::Instant::now();
        let written = self.objects.write(body, hasher, durability).await?;
        let limit_ms = self.gc.max_write_ms();
        if started.elapsed().as_millis() > limit_ms as u128 {
            self.objects.discard(&written.segments).await;
            return Err(StorageError::BodyIncomplete(format!(
                "the request sent data for longer than {} s; it was discarded (send the blob in smaller chunks)",
                limit_ms / 1000
            )));
        }
        Ok(written)
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

/// How the loaded upload ends when completed or cancelled (see `upload_row`).
fn ending(loaded: &Loaded) -> EndingUpload {
    EndingUpload::finish(&loaded.row.id, loaded.row.size, loaded.has_row)
}
