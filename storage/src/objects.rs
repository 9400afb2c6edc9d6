//! The object layer: every byte of blob data goes through these few calls over an
//! `object_store` backend, so local disk and S3 share all the logic above it.
//!
//! Layout (the only place keys are made):
//! - `data/<upload-id>/<offset>`: one object per chunk an upload received. When the
//!   upload completes, the blob *is* its list of chunk objects (recorded in the
//!   database), so completing an upload never copies or moves data on any backend.

use std::ops::Range;
use std::path::Path as FsPath;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, GetResultPayload, ObjectStore, ObjectStoreExt, WriteMultipart,
};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use crate::digest::Hasher;
use crate::error::{Result, StorageError};

/// Parts of this size are written as they fill (S3 needs ≥ 5 MiB per part); a body
/// smaller than one part is written with a single put.
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts in flight per upload: with the part being filled, this bounds an upload's memory.
const PARTS_IN_FLIGHT: usize = 2;
/// Read size when serving local files: large reads keep downloads at disk/loopback speed.
const LOCAL_READ_SIZE: usize = 512 * 1024;

pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// One stored object holding a contiguous piece of a blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub key: String,
    pub size: u64,
}

/// What a write stored: how much, and whether the body ended early (the bytes
/// that did arrive are kept, so the client can resume after them).
#[derive(Debug)]
pub struct Written {
    pub segment: Option<Segment>,
    pub interrupted: Option<String>,
}

#[derive(Clone)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
}

impl Objects {
    pub fn new(store: Arc<dyn ObjectStore>) -> Objects {
        Objects { store }
    }

    /// Local disk: every completed write is fsynced (file and directory) before it returns.
    pub fn local(root: &FsPath) -> Result<Objects> {
        std::fs::create_dir_all(root)?;
        let store = LocalFileSystem::new_with_prefix(root)?
            .with_fsync(true)
            .with_automatic_cleanup(true);
        Ok(Objects::new(Arc::new(store)))
    }

    pub fn segment_key(upload_id: &str, offset: u64) -> String {
        format!("data/{upload_id}/{offset:020}")
    }

    /// Streams `body` into a new object at `key`, hashing it on the way; durable on return.
    /// A body error keeps what arrived before it (see [`Written`]).
    pub async fn write<S, E>(&self, key: &str, body: S, hasher: &mut Hasher) -> Result<Written>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let path = Path::from(key);
        let mut body = body;
        let mut first = BytesMut::new();
        let mut interrupted = None;
        // Small bodies (the common case for configs and small layers) take one put.
        while first.len() < PART_SIZE {
            match body.next().await {
                Some(Ok(chunk)) => {
                    hasher.update(&chunk);
                    first.extend_from_slice(&chunk);
                }
                Some(Err(e)) => {
                    interrupted = Some(e.to_string());
                    break;
                }
                None => break,
            }
        }
        let ended = interrupted.is_some() || first.len() < PART_SIZE;
        if ended {
            let size = first.len() as u64;
            if size == 0 {
                return Ok(Written {
                    segment: None,
                    interrupted,
                });
            }
            self.store.put(&path, first.freeze().into()).await?;
            return Ok(Written {
                segment: Some(Segment {
                    key: key.to_owned(),
                    size,
                }),
                interrupted,
            });
        }
        let upload = self.store.put_multipart(&path).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut size = first.len() as u64;
        writer.write(&first);
        drop(first);
        loop {
            match body.next().await {
                Some(Ok(chunk)) => {
                    hasher.update(&chunk);
                    size += chunk.len() as u64;
                    if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                        return Err(e.into());
                    }
                    writer.write(&chunk);
                }
                Some(Err(e)) => {
                    interrupted = Some(e.to_string());
                    break;
                }
                None => break,
            }
        }
        writer.finish().await?;
        Ok(Written {
            segment: Some(Segment {
                key: key.to_owned(),
                size,
            }),
            interrupted,
        })
    }

    /// Streams the bytes `range` of the blob made of `segments`.
    pub fn read(&self, segments: &[Segment], range: Range<u64>) -> ByteStream {
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
        let store = self.store.clone();
        stream::iter(pieces)
            .then(move |(key, r)| {
                let store = store.clone();
                async move { read_object(store, key, r).await }
            })
            .try_flatten()
            .boxed()
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
    async fn writes_small_and_multipart_objects_and_reads_ranges_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let objects = Objects::local(dir.path()).unwrap();
        let big: Vec<u8> = (0..PART_SIZE * 2 + 123).map(|i| (i % 251) as u8).collect();
        let chunks = big
            .chunks(100_000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let mut h = Hasher::new(Algorithm::Sha256);
        let w1 = objects
            .write("data/u/1", body(chunks), &mut h)
            .await
            .unwrap();
        let mut h2 = h.clone();
        let w2 = objects
            .write(
                "data/u/2",
                body(vec![Ok(Bytes::from_static(b"tail"))]),
                &mut h2,
            )
            .await
            .unwrap();
        let segs = vec![w1.segment.unwrap(), w2.segment.unwrap()];
        assert_eq!(segs[0].size, big.len() as u64);
        let mut all = big.clone();
        all.extend_from_slice(b"tail");
        assert_eq!(h2.finish(), Digest::of(Algorithm::Sha256, &all));
        let total = all.len() as u64;
        assert_eq!(collect(objects.read(&segs, 0..total)).await, all);
        let r = (total - 10)..total;
        assert_eq!(
            collect(objects.read(&segs, r.clone())).await,
            &all[r.start as usize..]
        );
        assert_eq!(collect(objects.read(&segs, 5..9)).await, &all[5..9]);
    }

    #[tokio::test]
    async fn an_interrupted_body_keeps_what_arrived() {
        let dir = tempfile::tempdir().unwrap();
        let objects = Objects::local(dir.path()).unwrap();
        let mut h = Hasher::new(Algorithm::Sha256);
        let w = objects
            .write(
                "data/x/0",
                body(vec![Ok(Bytes::from_static(b"abc")), Err("reset".into())]),
                &mut h,
            )
            .await
            .unwrap();
        assert_eq!(w.segment.as_ref().unwrap().size, 3);
        assert_eq!(w.interrupted.as_deref(), Some("reset"));
        assert_eq!(
            collect(objects.read(&[w.segment.unwrap()], 0..3)).await,
            b"abc"
        );
        let empty = objects
            .write("data/x/1", body(vec![]), &mut h)
            .await
            .unwrap();
        assert!(empty.segment.is_none());
    }
}
