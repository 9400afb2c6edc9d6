//! Objects as files on local disk.

use std::path::Path as FsPath;
use std::sync::Arc;

use async_trait::async_trait;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::ObjectStore;

use super::backend::{Durability, FileAccess, ObjectWriter};
use super::store_io::{self, GroupFlush, StoreWriter};
use crate::error::Result;
use crate::group_sync::GroupSync;

/// A body is stored as a series of objects, each fsynced while the next one is being
/// received, so durability overlaps the transfer instead of following it. Sizes
/// double from the first to the largest: a chunk of a few MiB waits only for a small
/// last fsync, a large upload is made of large objects (few fsyncs).
const FIRST_OBJECT_SIZE: u64 = 4 * 1024 * 1024;
const OBJECT_SIZE: u64 = 64 * 1024 * 1024;
/// A deferred write does not wait for flushes, so small first objects buy nothing:
/// a chunk of up to this size is one object.
const DEFERRED_FIRST_OBJECT_SIZE: u64 = 16 * 1024 * 1024;

/// The first and largest object sizes of a write on local disk.
pub(super) fn object_sizes(durability: Durability) -> (u64, u64) {
    match durability {
        Durability::OnReturn => (FIRST_OBJECT_SIZE, OBJECT_SIZE),
        Durability::Deferred => (DEFERRED_FIRST_OBJECT_SIZE, OBJECT_SIZE),
    }
}

/// Local disk. A large object is fsynced (file and directory) as it completes, while
/// the next one is received. A small one (a config, a small layer: two fsyncs would
/// cost more than writing it) is written without fsync and made durable by a `syncfs`
/// shared by every small write that completed before it started: one flush covers the
/// data, renames and directories of many pushes.
pub struct LocalDisk {
    /// Every completed write to it is durable (fsynced).
    durable: Arc<LocalFileSystem>,
    /// Writes made durable by `flush` instead.
    unsynced: Arc<dyn ObjectStore>,
    flush: Arc<GroupSync>,
}

impl LocalDisk {
    pub fn new(root: &FsPath) -> Result<LocalDisk> {
        std::fs::create_dir_all(root)?;
        let durable = LocalFileSystem::new_with_prefix(root)?
            .with_fsync(true)
            .with_automatic_cleanup(true);
        let unsynced = LocalFileSystem::new_with_prefix(root)?.with_automatic_cleanup(true);
        let root = root.to_owned();
        let flush = move || {
            let dir = std::fs::File::open(&root)?;
            rustix::fs::syncfs(&dir).map_err(std::io::Error::from)
        };
        Ok(LocalDisk {
            durable: Arc::new(durable),
            unsynced: Arc::new(unsynced),
            flush: Arc::new(GroupSync::new(flush)),
        })
    }

    fn store(&self) -> Arc<dyn ObjectStore> {
        self.durable.clone()
    }

    /// Objects' bytes are read, and listed, from the same store (it has no retries).
    fn reads(&self) -> Arc<dyn ObjectStore> {
        self.store()
    }

    fn lists(&self) -> Arc<dyn ObjectStore> {
        self.store()
    }
}

store_io::object_store_backend!(LocalDisk {
    fn object_sizes(&self, durability: Durability) -> (u64, u64) {
        object_sizes(durability)
    }

    fn create(&self, key: &str, durability: Durability) -> Box<dyn ObjectWriter> {
        let deferred = durability == Durability::Deferred;
        // Deferred: even large objects go through the store that does not fsync.
        let large = match deferred {
            true => self.unsynced.clone(),
            false => self.store(),
        };
        let group = GroupFlush {
            flush: self.flush.clone(),
            deferred,
        };
        Box::new(StoreWriter::new(
            key,
            large,
            self.unsynced.clone(),
            Some(group),
        ))
    }

    fn defers_durability(&self) -> bool {
        true
    }

    async fn flush(&self) -> Result<()> {
        Ok(self.flush.sync().await?)
    }

    fn files(&self) -> Option<&dyn FileAccess> {
        Some(self)
    }
});

#[async_trait]
impl FileAccess for LocalDisk {
    async fn open(&self, key: &str) -> Result<std::fs::File> {
        // Opened on the calling thread, not through tokio's blocking pool: a lookup in
        // the kernel's cached directories takes microseconds, the hop to another thread
        // and back took more, once per download (the server then reads the file on its
        // worker thread too).
        let path = self.durable.path_to_filesystem(&Path::from(key))?;
        Ok(std::fs::File::open(path)?)
    }
}
