//! What every backend built on the `object_store` crate shares: reads, lookups,
//! batched deletes, listing, and a writer that buffers a small object for one put and
//! streams a large one as a multipart upload.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, GetResultPayload, ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload,
    WriteMultipart,
};
use tokio::io::AsyncReadExt;

use super::backend::{ByteStream, ObjectInfo, ObjectWriter};
use crate::error::{Result, StorageError};
use crate::group_sync::GroupSync;

/// Within an object, data goes out in parts of this size (S3's minimum), at most
/// `PARTS_IN_FLIGHT` at a time: a write holds a few parts in memory, never an object.
pub(super) const PART_SIZE: usize = 5 * 1024 * 1024;
const PARTS_IN_FLIGHT: usize = 2;
/// Read size for local files: large reads keep downloads at disk/loopback speed.
const LOCAL_READ_SIZE: usize = 512 * 1024;

pub(super) async fn read(
    store: &Arc<dyn ObjectStore>,
    key: &str,
    range: Range<u64>,
) -> Result<ByteStream> {
    let options = GetOptions {
        range: Some(GetRange::Bounded(range.clone())),
        ..GetOptions::default()
    };
    let result = store.get_opts(&Path::from(key), options).await?;
    // Stores cut a range running past the end short; the contract makes that an error.
    if result.range != range {
        return Err(StorageError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("object {key} holds bytes {:?}, not {range:?}", result.range),
        )));
    }
    Ok(match result.payload {
        // Local file: read it in large blocks (object_store reads 8 KiB at a time).
        GetResultPayload::File(file, _) => {
            let mut file = tokio::fs::File::from_std(file);
            let open = async move {
                use tokio::io::AsyncSeekExt;
                file.seek(std::io::SeekFrom::Start(range.start)).await?;
                Ok::<_, std::io::Error>(file.take(range.end - range.start))
            };
            stream::once(open)
                .map_ok(|reader| {
                    tokio_util::io::ReaderStream::with_capacity(reader, LOCAL_READ_SIZE)
                })
                .try_flatten()
                .map_err(StorageError::from)
                .boxed()
        }
        GetResultPayload::Stream(s) => s.map_err(StorageError::from).boxed(),
    })
}

pub(super) async fn head(store: &Arc<dyn ObjectStore>, key: &str) -> Result<Option<ObjectInfo>> {
    match store.head(&Path::from(key)).await {
        Ok(meta) => Ok(Some(info(meta))),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Deletes through the store's bulk delete (S3: DeleteObjects of up to 1,000 keys;
/// local disk: several files at a time); a key already gone counts as deleted.
pub(super) async fn delete(store: &Arc<dyn ObjectStore>, keys: Vec<String>) -> Result<()> {
    let paths = stream::iter(keys.into_iter().map(|k| Ok(Path::from(k)))).boxed();
    let mut results = store.delete_stream(paths);
    while let Some(result) = results.next().await {
        match result {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

pub(super) fn list(
    store: &Arc<dyn ObjectStore>,
    prefix: &str,
) -> BoxStream<'static, Result<ObjectInfo>> {
    let prefix = (!prefix.is_empty()).then(|| Path::from(prefix));
    store
        .list(prefix.as_ref())
        .map_ok(info)
        .map_err(StorageError::from)
        .boxed()
}

/// Whether the store answers: a lookup of a key that never exists.
pub(super) async fn check(store: &Arc<dyn ObjectStore>) -> Result<()> {
    head(store, "readyz-probe").await.map(drop)
}

/// Implements [`super::ObjectBackend`] for a backend whose objects live in the
/// `object_store` its `store()` method returns (`reads()` for reading their bytes,
/// `lists()` for listing them): the reads, lookups, deletes, listing and health check
/// they all share,
/// followed by the backend's own methods.
macro_rules! object_store_backend {
    ($backend:ty { $($own:tt)* }) => {
        #[async_trait::async_trait]
        impl super::ObjectBackend for $backend {
            async fn read(
                &self,
                key: &str,
                range: std::ops::Range<u64>,
            ) -> crate::error::Result<super::ByteStream> {
                super::store_io::read(&self.reads(), key, range).await
            }

            async fn head(&self, key: &str) -> crate::error::Result<Option<super::ObjectInfo>> {
                super::store_io::head(&self.store(), key).await
            }

            async fn delete(&self, keys: Vec<String>) -> crate::error::Result<()> {
                super::store_io::delete(&self.store(), keys).await
            }

            fn list(
                &self,
                prefix: &str,
            ) -> futures::stream::BoxStream<'static, crate::error::Result<super::ObjectInfo>> {
                super::store_io::list(&self.lists(), prefix)
            }

            async fn check(&self) -> crate::error::Result<()> {
                super::store_io::check(&self.store()).await
            }

            $($own)*
        }
    };
}
pub(super) use object_store_backend;

fn info(meta: ObjectMeta) -> ObjectInfo {
    ObjectInfo {
        key: meta.location.to_string(),
        size: meta.size,
        modified: meta.last_modified,
    }
}

/// Local disk's group flush: objects written without their own fsync are made durable
/// by it, before `finish` returns (`deferred: false`) or by the backend's next flush.
#[derive(Clone)]
pub(super) struct GroupFlush {
    pub flush: Arc<GroupSync>,
    pub deferred: bool,
}

/// One object being written: buffered until it outgrows a part, then streamed as a
/// multipart upload (so an object never sits whole in memory).
pub(super) struct StoreWriter {
    path: Path,
    size: u64,
    buffer: BytesMut,
    multipart: Option<WriteMultipart>,
    /// Where an object larger than a part goes, as a multipart upload.
    large: Arc<dyn ObjectStore>,
    /// Where an object of at most a part goes, in one put.
    small: Arc<dyn ObjectStore>,
    group: Option<GroupFlush>,
}

impl StoreWriter {
    pub fn new(
        key: &str,
        large: Arc<dyn ObjectStore>,
        small: Arc<dyn ObjectStore>,
        group: Option<GroupFlush>,
    ) -> StoreWriter {
        StoreWriter {
            path: Path::from(key),
            size: 0,
            buffer: BytesMut::new(),
            multipart: None,
            large,
            small,
            group,
        }
    }
}

#[async_trait]
impl ObjectWriter for StoreWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.size += chunk.len() as u64;
        let Some(writer) = self.multipart.as_mut() else {
            self.buffer.extend_from_slice(&chunk);
            if self.buffer.len() >= PART_SIZE {
                let upload = self.large.put_multipart(&self.path).await?;
                let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
                writer.write(&std::mem::take(&mut self.buffer));
                self.multipart = Some(writer);
            }
            return Ok(());
        };
        writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
        writer.write(&chunk);
        Ok(())
    }

    async fn finish(self: Box<Self>, more_follows: bool) -> Result<()> {
        match self.multipart {
            Some(writer) => {
                writer.finish().await?;
            }
            None => {
                let payload = PutPayload::from(self.buffer.freeze());
                self.small.put(&self.path, payload).await?;
                if let Some(group) = self.group.as_ref().filter(|g| !g.deferred) {
                    group.flush.sync().await?;
                }
            }
        }
        // A deferred object that is large or followed by more is flushed in the
        // background now; errors surface at the awaited flush that follows.
        let flush_now = more_follows || self.size >= PART_SIZE as u64;
        if let Some(group) = self.group.filter(|g| g.deferred && flush_now) {
            tokio::spawn(async move { group.flush.sync().await });
        }
        Ok(())
    }

    async fn abort(self: Box<Self>) {
        if let Some(writer) = self.multipart {
            if let Err(e) = writer.abort().await {
                tracing::warn!(key = %self.path, error = %e, "cannot abort an unfinished object");
            }
        }
    }
}
