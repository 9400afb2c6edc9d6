//! The object layer: every byte of blob data goes through these few calls over an
//! [`ObjectBackend`] (local disk, S3, or memory for tests), so every backend shares all
//! the logic above it. What a backend must guarantee is written down in [`backend`].
//!
//! Layout (the only place keys are made):
//! - `data/<xx>/<uuid>`: one object per piece of an upload (at most the backend's
//!   largest object size), named by a fresh random UUID so concurrent writers never
//!   collide, and fanned out by its first two characters `xx` so no directory grows
//!   huge. When the upload completes, the blob *is* its list of pieces (recorded in the
//!   database), so completing an upload never copies or moves data on any backend.

mod backend;
mod local;
mod memory;
mod s3;
mod store_io;

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

pub use backend::{
    ByteStream, Durability, FileAccess, ObjectBackend, ObjectInfo, ObjectWriter, UrlSigner,
};
pub use local::LocalDisk;
pub use memory::Memory;
pub use s3::S3;

use crate::digest::{Hasher, StreamHasher};
use crate::error::{Result, StorageError};

/// Where blob data lives in every backend.
pub const DATA_PREFIX: &str = "data";
/// How long a pre-signed blob URL stays valid (Distribution uses 20 minutes).
const REDIRECT_TTL: std::time::Duration = std::time::Duration::from_secs(20 * 60);
/// Objects finishing (their flushes) while the next one is received, at most.
const COMPLETIONS_IN_FLIGHT: usize = 2;

/// One stored object holding a contiguous piece of a blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub key: String,
    pub size: u64,
}

/// What a write stored: the durable objects, in order, and whether the body ended
/// early (the bytes that did arrive are kept, so the client can resume after them).
#[derive(Debug, Default)]
pub struct Written {
    pub segments: Vec<Segment>,
    pub interrupted: Option<String>,
}

/// A piece of a blob on local disk: an open object file and the bytes of it to send.
pub type FilePiece = (std::fs::File, Range<u64>);

/// Blob data over one backend: bodies cut into objects, hashed on the way, read back
/// across objects.
#[derive(Clone)]
pub struct Objects {
    backend: Arc<dyn ObjectBackend>,
}

impl Objects {
    pub fn new(backend: impl ObjectBackend) -> Objects {
        Objects {
            backend: Arc::new(backend),
        }
    }

    /// A pre-signed URL a client can fetch the blob from directly: only with a backend
    /// that signs (S3 with redirects on) and for a blob stored as one object.
    pub async fn presigned_url(&self, segments: &[Segment]) -> Result<Option<String>> {
        let (Some(signer), [segment]) = (self.backend.signer(), segments) else {
            return Ok(None);
        };
        Ok(Some(signer.signed_get(&segment.key, REDIRECT_TTL).await?))
    }

    /// Whether the backend answers.
    pub async fn check(&self) -> Result<()> {
        self.backend.check().await
    }

    fn new_key() -> String {
        let id = uuid::Uuid::new_v4().simple().to_string();
        format!("{DATA_PREFIX}/{}/{id}", &id[..2])
    }

    /// Whether [`Durability::Deferred`] writes need a later [`Objects::flush`].
    pub fn defers_durability(&self) -> bool {
        self.backend.defers_durability()
    }

    /// Makes every deferred write completed before this call durable.
    pub async fn flush(&self) -> Result<()> {
        self.backend.flush().await
    }

    /// Streams `body` into new objects, hashing it on the way; the listed segments are
    /// durable as `durability` says. A body error keeps what arrived before it (see
    /// [`Written`]); any other failure (no space, an I/O or S3 error) deletes every
    /// object this call wrote, finished or not, before returning it.
    pub async fn write<S, E>(
        &self,
        mut body: S,
        hasher: &mut Hasher,
        durability: Durability,
    ) -> Result<Written>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut written = Written::default();
        let mut hashing = StreamHasher::new(hasher);
        // Earlier objects' completions (their flushes), running while the next arrives.
        let mut completing: std::collections::VecDeque<tokio::task::JoinHandle<Result<()>>> =
            Default::default();
        // The object being filled, until it is handed to `completing`.
        let mut filling: Option<Box<dyn ObjectWriter>> = None;
        let mut ended = false;
        // Sizes of the first and of later objects the body is cut into.
        let (mut limit, max_size) = self.backend.object_sizes(durability);
        let mut outcome = async {
            while !ended {
                let key = Objects::new_key();
                let object = filling.insert(self.backend.create(&key, durability));
                let mut size = 0u64;
                while size < limit {
                    match body.next().await {
                        Some(Ok(chunk)) => {
                            hashing.update(&chunk).await?;
                            size += chunk.len() as u64;
                            object.write(chunk).await?;
                        }
                        Some(Err(e)) => {
                            written.interrupted = Some(e.to_string());
                            ended = true;
                            break;
                        }
                        None => {
                            ended = true;
                            break;
                        }
                    }
                }
                let object = filling.take().expect("filled above");
                if size == 0 {
                    object.abort().await;
                    break;
                }
                // A bounded number of completions in flight bounds memory.
                if completing.len() >= COMPLETIONS_IN_FLIGHT {
                    join(completing.pop_front().expect("non-empty")).await?;
                }
                written.segments.push(Segment { key, size });
                completing.push_back(tokio::spawn(object.finish(!ended)));
                limit = (limit * 2).min(max_size);
            }
            hashing.finish().await
        }
        .await;
        // Every completion ends before anything is deleted: a delete must not race the
        // put it is meant to undo.
        for task in completing {
            let completed = join(task).await;
            if outcome.is_ok() {
                outcome = completed;
            }
        }
        match outcome {
            Ok(()) => Ok(written),
            Err(e) => {
                if let Some(object) = filling {
                    object.abort().await;
                }
                self.discard(&written.segments).await;
                Err(e)
            }
        }
    }

    /// Streams the bytes `range` of the blob made of `segments`.
    pub fn read(&self, segments: &[Segment], range: Range<u64>) -> ByteStream {
        let backend = self.backend.clone();
        stream::iter(pieces(segments, range))
            .then(move |(key, r)| {
                let backend = backend.clone();
                async move { backend.read(&key, r).await }
            })
            .try_flatten()
            .boxed()
    }

    /// With a backend of local files, the files holding the bytes `range` of the blob,
    /// opened (for zero-copy sending); `None` on other backends.
    pub async fn open_files(
        &self,
        segments: &[Segment],
        range: Range<u64>,
    ) -> Result<Option<Vec<FilePiece>>> {
        let Some(files) = self.backend.files() else {
            return Ok(None);
        };
        let mut opened = Vec::new();
        for (key, range) in pieces(segments, range) {
            opened.push((files.open(&key).await?, range));
        }
        Ok(Some(opened))
    }

    /// Deletes the objects of `segments` (batched where the backend can); objects
    /// already gone are not an error.
    pub async fn delete_all(&self, segments: &[Segment]) -> Result<()> {
        let keys = segments.iter().map(|s| s.key.clone()).collect();
        self.backend.delete(keys).await
    }

    /// Deletes objects by key, as [`Objects::list`] reports them.
    pub async fn delete_keys(&self, keys: Vec<String>) -> Result<()> {
        self.backend.delete(keys).await
    }

    /// Every blob data object in the store, with its size and write time, streamed
    /// page by page.
    pub fn list(&self) -> BoxStream<'static, Result<ObjectInfo>> {
        self.backend.list(DATA_PREFIX)
    }

    /// Deletes objects that a failed write leaves unreferenced. Best effort: the write's
    /// own error is what the caller reports; a deletion that fails too is logged.
    pub async fn discard(&self, segments: &[Segment]) {
        if let Err(e) = self.delete_all(segments).await {
            let keys: Vec<&str> = segments.iter().map(|s| s.key.as_str()).collect();
            tracing::warn!(?keys, error = %e, "cannot delete objects a failed write left behind");
        }
    }
}

/// The objects holding the bytes `range` of a blob made of `segments`, each with the
/// range of its own bytes.
fn pieces(segments: &[Segment], range: Range<u64>) -> Vec<(String, Range<u64>)> {
    let mut pieces = Vec::new();
    let mut start = 0u64;
    for seg in segments {
        let end = start + seg.size;
        let lo = range.start.max(start);
        let hi = range.end.min(end);
        if lo < hi {
            pieces.push((seg.key.clone(), (lo - start)..(hi - start)));
        }
        start = end;
    }
    pieces
}

async fn join(task: tokio::task::JoinHandle<Result<()>>) -> Result<()> {
    task.await
        .map_err(|e| StorageError::Io(std::io::Error::other(e)))?
}
