//! The contract every object store holding Berth's blobs keeps. `tests/object_contract.rs`
//! checks it, one suite run on every implementation ([`super::LocalDisk`],
//! [`super::S3`], [`super::Memory`]).
//!
//! - **Keys** are `/`-separated relative paths made only by [`super::Objects`]; a key is
//!   written once and never overwritten.
//! - **Atomic visibility**: an object being written is invisible (not readable, not
//!   listed) until [`ObjectWriter::finish`] returns `Ok`; then it is whole. An aborted
//!   or failed write leaves nothing under its key.
//! - **Durability**: when `finish` returns for a [`Durability::OnReturn`] write, the
//!   object survives a crash of the process and of the machine (local disk: file and
//!   directory fsynced, or covered by a completed group `syncfs`; S3: the PUT or
//!   CompleteMultipartUpload was acknowledged). A [`Durability::Deferred`] write is
//!   durable once a later [`ObjectBackend::flush`] returns; backends without such
//!   deferral ([`ObjectBackend::defers_durability`] is false) treat both alike.
//! - **Ranged reads** return exactly the bytes asked for; a range past the end is an
//!   error, never a short read.
//! - **Deletes** are idempotent (a missing key is not an error) and batched where the
//!   backend can (S3: DeleteObjects, 1,000 keys a request).
//! - **Listing** by key prefix streams every finished object with its size and the
//!   time it was written, page by page (never the whole listing in memory).
//! - **Capabilities** a backend may offer are asked for explicitly:
//!   [`ObjectBackend::files`] (zero-copy sending of local files) and
//!   [`ObjectBackend::signer`] (pre-signed URLs for redirects).

use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;

use crate::error::Result;

pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// When the objects of a write reach stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Before the write returns (each object flushed while the next one arrives).
    OnReturn,
    /// By the next flush: for a chunk a client may resend, so the flush runs while the
    /// next chunk arrives instead of delaying this one's answer. Flushes start in the
    /// background as objects complete, so little is left for it.
    Deferred,
}

/// A finished object, as listing and lookups report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// When the object was written (the store's own clock).
    pub modified: DateTime<Utc>,
}

/// An object store able to hold Berth's blobs; see the module documentation for what
/// each method promises.
#[async_trait]
pub trait ObjectBackend: Send + Sync + 'static {
    /// How a body is cut into objects: the size of the first object and the largest
    /// (sizes double from one to the other).
    fn object_sizes(&self, durability: Durability) -> (u64, u64);

    /// Starts a new object at `key`, invisible until finished.
    fn create(&self, key: &str, durability: Durability) -> Box<dyn ObjectWriter>;

    /// The bytes `range` of the object at `key`.
    async fn read(&self, key: &str, range: Range<u64>) -> Result<ByteStream>;

    /// The object at `key`, if there is one.
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>>;

    /// Deletes the objects at `keys`; missing ones are not an error.
    async fn delete(&self, keys: Vec<String>) -> Result<()>;

    /// Every finished object whose key starts with the path segments of `prefix`.
    fn list(&self, prefix: &str) -> BoxStream<'static, Result<ObjectInfo>>;

    /// Whether [`Durability::Deferred`] writes wait for [`ObjectBackend::flush`].
    fn defers_durability(&self) -> bool {
        false
    }

    /// Makes every deferred write finished before this call durable.
    async fn flush(&self) -> Result<()> {
        Ok(())
    }

    /// Whether the store answers.
    async fn check(&self) -> Result<()>;

    /// Capability: objects are local files the server can send without copying.
    fn files(&self) -> Option<&dyn FileAccess> {
        None
    }

    /// Capability: pre-signed URLs a client can fetch objects from directly.
    fn signer(&self) -> Option<&dyn UrlSigner> {
        None
    }
}

/// One object being written.
#[async_trait]
pub trait ObjectWriter: Send {
    async fn write(&mut self, chunk: Bytes) -> Result<()>;

    /// Makes the object visible, durable as its [`Durability`] says. `more_follows`
    /// tells a deferring backend that the write goes on, so flushing this object in
    /// the background now leaves less for the flush that will be waited for.
    async fn finish(self: Box<Self>, more_follows: bool) -> Result<()>;

    /// Gives up: nothing stays under the key, nor staged anywhere.
    async fn abort(self: Box<Self>);
}

/// See [`ObjectBackend::files`].
#[async_trait]
pub trait FileAccess: Send + Sync {
    /// The open file holding the object at `key`.
    async fn open(&self, key: &str) -> Result<std::fs::File>;
}

/// See [`ObjectBackend::signer`].
#[async_trait]
pub trait UrlSigner: Send + Sync {
    /// A URL that GETs the object at `key` without credentials, valid for `ttl`.
    async fn signed_get(&self, key: &str, ttl: Duration) -> Result<String>;
}
