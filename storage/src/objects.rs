//! The object layer: every byte of blob data goes through these few calls over an
//! `object_store` backend, so local disk and S3 share all the logic above it. (One
//! exception, for speed: on local disk a download opens the object files, which the
//! server hands to the kernel to send — see [`Objects::open_files`].)
//!
//! Layout (the only place keys are made):
//! - `data/<xx>/<uuid>`: one object per piece of an upload (at most [`SEGMENT_SIZE`]
//!   bytes), named by a fresh random UUID so concurrent writers never collide, and
//!   fanned out by its first two characters `xx` so no directory grows huge. When the
//!   upload completes, the blob *is* its list of pieces (recorded in the database),
//!   so completing an upload never copies or moves data on any backend.

use std::ops::Range;
use std::path::Path as FsPath;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::signer::{Method, Signer};
use object_store::{
    GetOptions, GetRange, GetResultPayload, ObjectStore, ObjectStoreExt, WriteMultipart,
};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use crate::digest::{Hasher, StreamHasher};
use crate::error::{Result, StorageError};
use crate::group_sync::GroupSync;

/// On local disk a body is stored as a series of objects, each fsynced while the next
/// one is being received, so durability overlaps the transfer instead of following
/// it. Sizes double from the first to the largest: a chunk of a few MiB waits only for
/// a small last fsync, a large upload is made of large objects (few fsyncs).
const FIRST_SEGMENT_SIZE: u64 = 4 * 1024 * 1024;
const SEGMENT_SIZE: u64 = 64 * 1024 * 1024;
/// A deferred write does not wait for flushes, so small first objects buy nothing:
/// a chunk of up to this size is one object.
const DEFERRED_FIRST_SEGMENT_SIZE: u64 = 16 * 1024 * 1024;
/// On S3 a multipart upload already overlaps storing with receiving, so a body is one
/// object (which a redirect can point at), capped well below the 10,000 parts of
/// [`PART_SIZE`] that S3 allows an object.
const S3_SEGMENT_SIZE: u64 = 32 * 1024 * 1024 * 1024;
/// How long a pre-signed blob URL stays valid (Distribution uses 20 minutes).
const REDIRECT_TTL: std::time::Duration = std::time::Duration::from_secs(20 * 60);
/// Within a segment, data goes out in parts of this size (S3's minimum), at most
/// `PARTS_IN_FLIGHT` at a time: an upload holds a few parts in memory, never a segment.
const PART_SIZE: usize = 5 * 1024 * 1024;
const PARTS_IN_FLIGHT: usize = 2;
const COMPLETIONS_IN_FLIGHT: usize = 2;
/// Read size when serving local files: large reads keep downloads at disk/loopback speed.
const LOCAL_READ_SIZE: usize = 512 * 1024;

pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// When the objects of a write reach stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Before `write` returns (each object flushed while the next one arrives).
    OnReturn,
    /// By the next [`Objects::flush`]: for a chunk a client may resend, so the flush
    /// runs while the next chunk arrives instead of delaying this one's answer.
    /// Flushes start in the background as objects complete, so little is left for it.
    /// Backends whose writes are durable by themselves (S3) ignore the difference.
    Deferred,
}

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

#[derive(Clone)]
pub struct Objects {
    /// Every completed write to it is durable.
    store: Arc<dyn ObjectStore>,
    /// Local disk only: small objects are written without their own fsyncs and made
    /// durable by a group flush (see [`Objects::local`]).
    small: Option<SmallWrites>,
    /// S3 with redirects on: makes pre-signed GET URLs.
    signer: Option<Arc<dyn Signer>>,
    /// Local disk: knows each object's file, which downloads send without copying.
    files: Option<Arc<LocalFileSystem>>,
}

/// A piece of a blob on local disk: an open object file and the bytes of it to send.
pub type FilePiece = (std::fs::File, Range<u64>);

#[derive(Clone)]
struct SmallWrites {
    store: Arc<dyn ObjectStore>,
    flush: Arc<GroupSync>,
}

impl Objects {
    /// An S3 bucket (credentials from the `AWS_*` environment variables). Every
    /// completed write is durable by itself; a body becomes one object.
    pub fn s3(
        bucket: &str,
        endpoint: Option<&str>,
        region: &str,
        redirect: bool,
    ) -> Result<Objects> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_region(region);
        if let Some(endpoint) = endpoint {
            // A self-hosted S3 server: path-style URLs, plain HTTP allowed.
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false)
                .with_allow_http(true);
        }
        let store = Arc::new(builder.build()?);
        Ok(Objects {
            signer: redirect.then(|| store.clone() as Arc<dyn Signer>),
            store,
            small: None,
            files: None,
        })
    }

    /// Local disk. A large object is fsynced (file and directory) as it completes,
    /// while the next one is received. A small one (a config, a small layer: two
    /// fsyncs would cost more than writing it) is written without fsync and made
    /// durable by a `syncfs` shared by every small write that completed before it
    /// started: one flush covers the data, renames and directories of many pushes.
    pub fn local(root: &FsPath) -> Result<Objects> {
        std::fs::create_dir_all(root)?;
        let durable = Arc::new(
            LocalFileSystem::new_with_prefix(root)?
                .with_fsync(true)
                .with_automatic_cleanup(true),
        );
        let unsynced = LocalFileSystem::new_with_prefix(root)?.with_automatic_cleanup(true);
        let root = root.to_owned();
        let flush = move || {
            let dir = std::fs::File::open(&root)?;
            rustix::fs::syncfs(&dir).map_err(std::io::Error::from)
        };
        Ok(Objects {
            store: durable.clone(),
            small: Some(SmallWrites {
                store: Arc::new(unsynced),
                flush: Arc::new(GroupSync::new(flush)),
            }),
            signer: None,
            files: Some(durable),
        })
    }

    /// A pre-signed URL a client can fetch the blob from directly: only with redirects
    /// on and for a blob stored as one object.
    pub async fn presigned_url(&self, segments: &[Segment]) -> Result<Option<String>> {
        let (Some(signer), [segment]) = (&self.signer, segments) else {
            return Ok(None);
        };
        let path = Path::from(segment.key.as_str());
        let url = signer.signed_url(Method::GET, &path, REDIRECT_TTL).await?;
        Ok(Some(url.to_string()))
    }

    /// Whether the backend answers: a lookup of a key that never exists.
    pub async fn check(&self) -> Result<()> {
        match self.store.head(&Path::from("readyz-probe")).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn new_key() -> String {
        let id = uuid::Uuid::new_v4().simple().to_string();
        format!("data/{}/{id}", &id[..2])
    }

    /// Whether [`Durability::Deferred`] writes need a later [`Objects::flush`].
    pub fn defers_durability(&self) -> bool {
        self.small.is_some()
    }

    /// Makes every deferred write completed before this call durable.
    pub async fn flush(&self) -> Result<()> {
        match &self.small {
            Some(small) => Ok(small.flush.sync().await?),
            None => Ok(()),
        }
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
        // Earlier segments' completions (their fsyncs), running while the next arrives.
        let mut completing: std::collections::VecDeque<tokio::task::JoinHandle<Result<()>>> =
            Default::default();
        // The segment being filled, until it is handed to `completing`.
        let mut filling: Option<SegmentWriter> = None;
        let mut ended = false;
        // Sizes of the first and of later objects the body is split into.
        let (mut limit, max_size) = match (&self.small, durability) {
            (None, _) => (S3_SEGMENT_SIZE, S3_SEGMENT_SIZE),
            (Some(_), Durability::OnReturn) => (FIRST_SEGMENT_SIZE, SEGMENT_SIZE),
            (Some(_), Durability::Deferred) => (DEFERRED_FIRST_SEGMENT_SIZE, SEGMENT_SIZE),
        };
        let mut outcome = async {
            while !ended {
                let segment = filling.insert(SegmentWriter::new(self, durability));
                while segment.size < limit {
                    match body.next().await {
                        Some(Ok(chunk)) => {
                            hashing.update(&chunk).await?;
                            segment.write(chunk).await?;
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
                let segment = filling.take().expect("filled above");
                if segment.size == 0 {
                    break;
                }
                // A bounded number of completions in flight bounds memory.
                if completing.len() >= COMPLETIONS_IN_FLIGHT {
                    join(completing.pop_front().expect("non-empty")).await?;
                }
                written.segments.push(Segment {
                    key: segment.key.clone(),
                    size: segment.size,
                });
                // A full object is usually followed by more: flushing it in the
                // background leaves less for the flush that must be waited for.
                completing.push_back(tokio::spawn(segment.complete(!ended)));
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
                if let Some(segment) = filling {
                    segment.abort().await;
                }
                self.discard(&written.segments).await;
                Err(e)
            }
        }
    }

    /// Streams the bytes `range` of the blob made of `segments`.
    pub fn read(&self, segments: &[Segment], range: Range<u64>) -> ByteStream {
        let store = self.store.clone();
        stream::iter(pieces(segments, range))
            .then(move |(key, r)| {
                let store = store.clone();
                async move { read_object(store, key, r).await }
            })
            .try_flatten()
            .boxed()
    }

    /// On local disk, the files holding the bytes `range` of the blob, opened (for
    /// zero-copy sending); `None` on other backends.
    pub async fn open_files(
        &self,
        segments: &[Segment],
        range: Range<u64>,
    ) -> Result<Option<Vec<FilePiece>>> {
        let Some(files) = &self.files else {
            return Ok(None);
        };
        let mut opened = Vec::new();
        for (key, range) in pieces(segments, range) {
            let path = files.path_to_filesystem(&Path::from(key.as_str()))?;
            let file = tokio::fs::File::open(path).await?.into_std().await;
            opened.push((file, range));
        }
        Ok(Some(opened))
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn delete_all(&self, segments: &[Segment]) -> Result<()> {
        for seg in segments {
            self.delete(&seg.key).await?;
        }
        Ok(())
    }

    /// Deletes objects that a failed write leaves unreferenced. Best effort: the write's
    /// own error is what the caller reports; a deletion that fails too is logged.
    pub async fn discard(&self, segments: &[Segment]) {
        for seg in segments {
            if let Err(e) = self.delete(&seg.key).await {
                tracing::warn!(key = %seg.key, error = %e, "cannot delete an object a failed write left behind");
            }
        }
    }
}

/// One object being written: buffered until it outgrows a part, then streamed as a
/// multipart upload (so a segment never sits whole in memory).
struct SegmentWriter {
    store: Arc<dyn ObjectStore>,
    small: Option<SmallWrites>,
    deferred: bool,
    key: String,
    size: u64,
    buffer: BytesMut,
    multipart: Option<WriteMultipart>,
}

impl SegmentWriter {
    fn new(objects: &Objects, durability: Durability) -> SegmentWriter {
        let deferred = durability == Durability::Deferred && objects.small.is_some();
        SegmentWriter {
            // Deferred: even large objects go through the store that does not fsync.
            store: match (&objects.small, deferred) {
                (Some(small), true) => small.store.clone(),
                _ => objects.store.clone(),
            },
            small: objects.small.clone(),
            deferred,
            key: Objects::new_key(),
            size: 0,
            buffer: BytesMut::new(),
            multipart: None,
        }
    }

    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.size += chunk.len() as u64;
        if self.multipart.is_none() {
            self.buffer.extend_from_slice(&chunk);
            if self.buffer.len() < PART_SIZE {
                return Ok(());
            }
            let upload = self
                .store
                .put_multipart(&Path::from(self.key.as_str()))
                .await?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            writer.write(&std::mem::take(&mut self.buffer));
            self.multipart = Some(writer);
            return Ok(());
        }
        let writer = self.multipart.as_mut().expect("multipart started");
        writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
        writer.write(&chunk);
        Ok(())
    }

    /// Gives up on an object that will not be completed: a multipart upload in progress
    /// is aborted, so neither its parts (S3) nor its staging file (local disk) remain.
    async fn abort(self) {
        if let Some(writer) = self.multipart {
            if let Err(e) = writer.abort().await {
                tracing::warn!(key = %self.key, error = %e, "cannot abort an unfinished object");
            }
        }
    }

    /// Completes the object (a single put when it stayed small) and makes it durable,
    /// or, when deferred, may start a background flush that will: when more objects
    /// follow, or when it is large (the last of a big chunk: its flush then runs while
    /// the answer travels and the next chunk arrives, instead of only once it arrived).
    async fn complete(self, more_follows: bool) -> Result<()> {
        match self.multipart {
            Some(writer) => {
                writer.finish().await?;
            }
            None => {
                let path = Path::from(self.key.as_str());
                let payload = self.buffer.freeze().into();
                match &self.small {
                    Some(small) => {
                        small.store.put(&path, payload).await?;
                        if !self.deferred {
                            small.flush.sync().await?;
                        }
                    }
                    None => {
                        self.store.put(&path, payload).await?;
                    }
                }
            }
        }
        let flush_now = more_follows || self.size >= PART_SIZE as u64;
        if let (true, true, Some(small)) = (self.deferred, flush_now, self.small) {
            // Errors surface at the awaited flush that follows.
            tokio::spawn(async move { small.flush.sync().await });
        }
        Ok(())
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

async fn read_object(
    store: Arc<dyn ObjectStore>,
    key: String,
    range: Range<u64>,
) -> Result<ByteStream> {
    let options = GetOptions {
        range: Some(GetRange::Bounded(range.clone())),
        ..GetOptions::default()
    };
    let result = store.get_opts(&Path::from(key.as_str()), options).await?;
    Ok(match result.payload {
        // Local file: read it ourselves in large blocks (object_store reads 8 KiB at a time).
        GetResultPayload::File(file, _) => {
            let mut file = tokio::fs::File::from_std(file);
            file_stream(async move {
                use tokio::io::AsyncSeekExt;
                file.seek(std::io::SeekFrom::Start(range.start)).await?;
                Ok(file.take(range.end - range.start))
            })
        }
        GetResultPayload::Stream(s) => s.map_err(StorageError::from).boxed(),
    })
}

fn file_stream<F, R>(open: F) -> ByteStream
where
    F: std::future::Future<Output = std::io::Result<R>> + Send + 'static,
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    stream::once(open)
        .map_ok(|reader| tokio_util::io::ReaderStream::with_capacity(reader, LOCAL_READ_SIZE))
        .try_flatten()
        .map_err(StorageError::from)
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::{Algorithm, Digest};

    fn body(
        chunks: Vec<Result<Bytes, String>>,
    ) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
        stream::iter(chunks)
    }

    async fn collect(s: ByteStream) -> Vec<u8> {
        s.try_fold(Vec::new(), |mut acc, b| async move {
            acc.extend_from_slice(&b);
            Ok(acc)
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn large_bodies_become_several_objects_and_read_back_across_them() {
        let dir = tempfile::tempdir().unwrap();
        let objects = Objects::local(dir.path()).unwrap();
        let big: Vec<u8> = (0..SEGMENT_SIZE * 2 + 123)
            .map(|i| (i % 251) as u8)
            .collect();
        let chunks = big
            .chunks(65_536)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let mut h = Hasher::new(Algorithm::Sha256);
        let w1 = objects
            .write(body(chunks), &mut h, Durability::OnReturn)
            .await
            .unwrap();
        let sizes: Vec<u64> = w1.segments.iter().map(|s| s.size).collect();
        let mib = 1024 * 1024;
        // Doubling from 4 MiB up to the 64 MiB cap, then the rest.
        assert_eq!(
            sizes,
            [
                4 * mib,
                8 * mib,
                16 * mib,
                32 * mib,
                64 * mib,
                4 * mib + 123
            ]
        );
        assert_eq!(
            w1.segments.iter().map(|s| s.size).sum::<u64>(),
            big.len() as u64
        );
        let w2 = objects
            .write(
                body(vec![Ok(Bytes::from_static(b"tail"))]),
                &mut h,
                Durability::Deferred,
            )
            .await
            .unwrap();
        objects.flush().await.unwrap();
        let segs: Vec<Segment> = w1.segments.into_iter().chain(w2.segments).collect();
        let mut all = big.clone();
        all.extend_from_slice(b"tail");
        assert_eq!(h.finish(), Digest::of(Algorithm::Sha256, &all));
        let total = all.len() as u64;
        assert_eq!(collect(objects.read(&segs, 0..total)).await, all);
        let r = (SEGMENT_SIZE - 10)..(SEGMENT_SIZE * 2 + 5);
        assert_eq!(
            collect(objects.read(&segs, r.clone())).await,
            &all[r.start as usize..r.end as usize]
        );
        assert_eq!(
            collect(objects.read(&segs, (total - 2)..total)).await,
            b"il"
        );
        objects.delete_all(&segs).await.unwrap();
        assert!(
            !dir.path().join("data").exists(),
            "deleting every object leaves no files"
        );
    }

    #[tokio::test]
    async fn an_interrupted_body_keeps_what_arrived() {
        let dir = tempfile::tempdir().unwrap();
        let objects = Objects::local(dir.path()).unwrap();
        let mut h = Hasher::new(Algorithm::Sha256);
        let w = objects
            .write(
                body(vec![Ok(Bytes::from_static(b"abc")), Err("reset".into())]),
                &mut h,
                Durability::OnReturn,
            )
            .await
            .unwrap();
        assert_eq!(w.segments.len(), 1);
        assert_eq!(w.segments[0].size, 3);
        assert_eq!(w.interrupted.as_deref(), Some("reset"));
        assert_eq!(collect(objects.read(&w.segments, 0..3)).await, b"abc");
        let empty = objects
            .write(body(vec![]), &mut h, Durability::Deferred)
            .await
            .unwrap();
        assert!(empty.segments.is_empty());
    }
}
