//! Berth's storage: blobs kept once in an object store, registry metadata in SQL.
//!
//! [`Storage`] is the one entry point the server uses; its operations are split by
//! resource: [`repos`], [`blobs`], [`uploads`], [`manifests`], and for the web UI
//! [`explore`] and [`pulls`].

pub mod blobs;
pub mod cache;
pub(crate) mod completions;
pub mod db;
pub mod digest;
pub mod entity;
pub mod error;
pub mod expiry;
pub mod explore;
pub mod gc;
pub mod group_sync;
pub mod manifests;
pub mod migration;
pub mod objects;
pub mod platforms;
pub mod pulls;
pub mod repos;
pub mod space;
pub(crate) mod test_faults;
pub mod uploads;

use std::sync::Arc;

use berth_config::{Config, StorageConfig};
use futures::future::BoxFuture;
use sea_orm::{DatabaseConnection, DatabaseTransaction, DbErr};

pub use berth_oci::names;
pub use digest::{Algorithm, Digest};
pub use error::{Result, StorageError};
pub use objects::{ByteStream, Objects};

/// Registry storage: metadata database plus blob objects.
#[derive(Clone)]
pub struct Storage {
    db: DatabaseConnection,
    objects: Objects,
    cache: Arc<cache::MetaCache>,
    pulls: Arc<pulls::PullCounter>,
    repo_ids: Arc<repos::RepoIds>,
    sqlite_writer: Option<db::SqliteWriter>,
    completions: completions::Completions,
    space: space::Space,
    max_manifest_bytes: u64,
    private_by_default: bool,
    /// How long an upload may sit idle (and a row-less upload id stays valid).
    upload_expiry_ms: i64,
}

impl Storage {
    /// Opens (creating if needed) the database and blob store the config names, and
    /// brings the schema up to date.
    pub async fn open(config: &Config) -> Result<Storage> {
        let url = config.database_url();
        if config.database_url.is_none() {
            std::fs::create_dir_all(&config.data_dir)?;
        }
        let db = db::connect(&url).await?;
        db::migrate_exclusively(&db, |txn| Box::pin(db::migrate_storage(txn))).await?;
        let objects = match &config.storage {
            StorageConfig::Filesystem { .. } => {
                Objects::local(&config.blob_root().expect("filesystem storage has a root"))?
            }
            StorageConfig::S3 {
                bucket,
                endpoint,
                region,
                redirect,
            } => Objects::s3(bucket, endpoint.as_deref(), region, *redirect)?,
        };
        let sqlite_writer = db::SqliteWriter::for_url(&url);
        // Only a SQLite database has a single server process writing to it; replicas
        // sharing PostgreSQL would each miss the others' writes.
        let cache = match sqlite_writer {
            Some(_) => cache::MetaCache::default(),
            None => cache::MetaCache::disabled(),
        };
        let completions = completions::Completions::start(
            db.clone(),
            sqlite_writer.clone(),
            config.auth.private_by_default,
        );
        Ok(Storage {
            db,
            objects,
            completions,
            cache: Arc::new(cache),
            pulls: Arc::default(),
            repo_ids: Arc::default(),
            sqlite_writer,
            space: space::Space::for_config(config),
            max_manifest_bytes: config.limits.max_manifest_bytes,
            private_by_default: config.auth.private_by_default,
            upload_expiry_ms: config.upload_expiry_secs.saturating_mul(1000) as i64,
        })
    }

    /// Starts a write transaction (every write goes through one; see [`db::WriteTxn`]).
    pub(crate) async fn write(&self) -> Result<db::WriteTxn> {
        Ok(db::begin_write(&self.db, &self.sqlite_writer).await?)
    }

    /// Held while running one write statement without a transaction (see
    /// [`db::write_turn`]).
    pub(crate) async fn write_turn(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        db::write_turn(&self.sqlite_writer).await
    }

    pub fn max_manifest_bytes(&self) -> u64 {
        self.max_manifest_bytes
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Runs another component's schema migrations the way storage's own run: one
    /// process at a time (see [`db::migrate_exclusively`]).
    pub async fn migrate<F>(&self, migrate: F) -> Result<()>
    where
        F: for<'t> FnOnce(&'t DatabaseTransaction) -> BoxFuture<'t, std::result::Result<(), DbErr>>,
    {
        Ok(db::migrate_exclusively(&self.db, migrate).await?)
    }

    /// What `/readyz` reports: whether the database can commit, whether the object
    /// store answers, and the free space left.
    pub async fn check_ready(&self) -> Readiness {
        /// A probe stuck behind a held lock is an answer too: the database cannot commit.
        const PROBE_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);
        let database = match tokio::time::timeout(PROBE_LIMIT, self.probe_commit()).await {
            Ok(result) => result,
            Err(_) => Err(StorageError::Database(DbErr::Custom(format!(
                "a commit did not finish within {PROBE_LIMIT:?}"
            )))),
        };
        Readiness {
            database,
            objects: self.objects.check().await,
            space: self.free_space(),
        }
    }

    /// Commits a write that leaves nothing behind (a row inserted and deleted in one
    /// transaction): the pages still go to the WAL, so a full disk or a held write lock
    /// fails it, as they would a push.
    async fn probe_commit(&self) -> Result<()> {
        use sea_orm::{ActiveValue::Set, EntityTrait};
        let id = format!("readyz-probe-{}", uuid::Uuid::new_v4().simple());
        let txn = self.write().await?;
        entity::upload_tombstone::Entity::insert(entity::upload_tombstone::ActiveModel {
            id: Set(id.clone()),
            created_at: Set(0),
        })
        .exec(&*txn)
        .await?;
        entity::upload_tombstone::Entity::delete_by_id(id)
            .exec(&*txn)
            .await?;
        Ok(txn.commit().await?)
    }

    /// Free space on the fullest local file system Berth writes, against the reserve;
    /// `None` when it writes none (PostgreSQL and S3) or it cannot be measured.
    pub fn free_space(&self) -> Option<space::FreeSpace> {
        self.space.measure().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot measure free space");
            None
        })
    }

    /// Refuses new data (`BelowReserve`) while free space is below the reserve.
    pub(crate) fn ensure_room(&self) -> Result<()> {
        self.space.ensure_room()
    }
}

/// See [`Storage::check_ready`].
pub struct Readiness {
    pub database: Result<()>,
    pub objects: Result<()>,
    pub space: Option<space::FreeSpace>,
}
