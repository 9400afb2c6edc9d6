//! Berth's storage: blobs kept once in an object store, registry metadata in SQL.
//!
//! [`Storage`] is the one entry point the server uses; its operations are split by
//! resource: [`repos`], [`blobs`], [`uploads`], [`manifests`].

pub mod blobs;
pub mod cache;
pub mod db;
pub mod digest;
pub mod entity;
pub mod error;
pub mod gc;
pub mod group_sync;
pub mod manifests;
pub mod migration;
pub mod names;
pub mod objects;
pub mod repos;
pub mod uploads;

use std::sync::Arc;

use berth_config::Config;
use sea_orm::DatabaseConnection;

pub use digest::{Algorithm, Digest};
pub use error::{Result, StorageError};
pub use objects::{ByteStream, Objects};

/// Registry storage: metadata database plus blob objects.
#[derive(Clone)]
pub struct Storage {
    db: DatabaseConnection,
    objects: Objects,
    cache: Arc<cache::MetaCache>,
    sqlite_writer: Option<db::SqliteWriter>,
    max_manifest_bytes: u64,
    private_by_default: bool,
}

impl Storage {
    /// Opens (creating if needed) the database and blob store the config names, and
    /// brings the schema up to date.
    pub async fn open(config: &Config) -> Result<Storage> {
        std::fs::create_dir_all(&config.data_dir)?;
        let db = db::connect(&config.database_url()).await?;
        let objects = Objects::local(&config.blob_root())?;
        let sqlite_writer = db::SqliteWriter::for_url(&config.database_url());
        Ok(Storage {
            db,
            objects,
            cache: Arc::default(),
            sqlite_writer,
            max_manifest_bytes: config.limits.max_manifest_bytes,
            private_by_default: config.auth.private_by_default,
        })
    }

    /// Starts a write transaction (every write goes through one; see [`db::WriteTxn`]).
    pub(crate) async fn write(&self) -> Result<db::WriteTxn> {
        Ok(db::begin_write(&self.db, &self.sqlite_writer).await?)
    }

    pub fn max_manifest_bytes(&self) -> u64 {
        self.max_manifest_bytes
    }

    /// Whether a repository created by its first push is private.
    pub fn private_by_default(&self) -> bool {
        self.private_by_default
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }
}
