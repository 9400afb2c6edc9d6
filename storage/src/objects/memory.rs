//! Objects in memory, for fast tests of everything above the object store.

use std::sync::Arc;

use object_store::memory::InMemory;
use object_store::ObjectStore;

use super::backend::{Durability, ObjectWriter};
use super::local;
use super::store_io::{self, StoreWriter};

/// Objects in memory, gone with the process (so "durable" means nothing here). Bodies
/// are cut into objects as on local disk, so multi-object blobs are exercised too.
#[derive(Default)]
pub struct Memory {
    store: Arc<InMemory>,
}

impl Memory {
    pub fn new() -> Memory {
        Memory::default()
    }

    fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// Objects' bytes are read, and listed, from the same store (it has no retries).
    fn reads(&self) -> Arc<dyn ObjectStore> {
        self.store()
    }

    fn lists(&self) -> Arc<dyn ObjectStore> {
        self.store()
    }
}

store_io::object_store_backend!(Memory {
    fn object_sizes(&self, durability: Durability) -> (u64, u64) {
        local::object_sizes(durability)
    }

    fn create(&self, key: &str, _: Durability) -> Box<dyn ObjectWriter> {
        Box::new(StoreWriter::new(key, self.store(), self.store(), None))
    }

});
