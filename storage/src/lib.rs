//! Berth's storage: blobs kept once in an object store, registry metadata in SQL.
//!
//! [`Storage`] is the one entry point the server and the web UI use. Its operations,
//! one `impl Storage` block per resource, each in its own file:
//!
//! | resource | file | operations |
//! |---|---|---|
//! | the store | `lib.rs` | `open`, `check_ready`, `free_space`, `max_manifest_bytes` |
//! | repositories | `repos.rs` | `repository_id`, `repository_private`, `set_private`, `catalog` |
//! | blobs | `blobs.rs` | `blob`, `blob_redirect`, `read_blob`, `open_blob_files`, `read_small_blob`, `mount_blob`, `delete_blob` |
//! | uploads | `uploads.rs` | `start_upload`, `upload_state`, `append_upload`, `complete_upload`, `put_blob`, `cancel_upload` |
//! | upload expiry | `expiry.rs` | `expire_uploads` |
//! | manifests and tags | `manifests.rs` | `put_manifest`, `manifest`, `delete_manifest`, `tags`, `referrers` |
//! | proxies' caches | `mirrors.rs` | `cache_manifest`, `repository_with_blob`, `evict_least_pulled` (by garbage collection) |
//! | the web UI's views | `explore.rs` | `list_repositories`, `repository_detail`, `tag_rows`, `set_description` |
//! | immutable tags | `tag_rules.rs` | `add_immutable_rule`, `immutable_rules`, `immutable_rule`, `remove_immutable_rule` (checked by the manifest writes) |
//! | pull counts | `pulls.rs` | `record_pull`, `flush_pulls` |
//! | quotas and usage | `quotas.rs` | `set_quota`, `remove_quota`, `quotas`, `quota_of`, `namespace_usage`, `namespace_usages`, `repository_usage`, `registry_usage` |
//! | the audit log | `audit.rs` | `by`, `audit`, `audit_log`, `expire_audit_log` |
//! | retention policies | `retention.rs` | `set_retention`, `retention_policies`, `remove_retention`, `retention_preview`, `apply_retention` |
//! | garbage collection | `gc/` (the protocol beside pushes: `liveness.rs`) | `collect_garbage` |
//!
//! Below it: [`objects`] (blob data over an object store, behind the contract of
//! `objects/backend.rs`), the metadata schema (`entity/`, `migration/`), and the
//! database plumbing (`db.rs`), whose connection never leaves this crate.

pub mod audit;
pub(crate) mod blobs;
pub(crate) mod cache;
pub(crate) mod change_feed;
pub(crate) mod completions;
pub(crate) mod db;
pub mod digest;
pub(crate) mod entity;
pub mod error;
pub mod events;
pub(crate) mod expiry;
pub mod explore;
pub mod gc;
pub(crate) mod generations;
pub(crate) mod group_sync;
pub(crate) mod invalidations;
pub(crate) mod liveness;
pub(crate) mod manifest_refs;
pub mod manifests;
pub(crate) mod migration;
pub(crate) mod mirrors;
pub mod objects;
pub(crate) mod platforms;
pub mod pulls;
pub mod quotas;
pub mod repos;
pub mod retention;
pub(crate) mod space;
pub(crate) mod stars;
pub mod tag_rules;
pub(crate) mod test_faults;
pub mod untagged;
pub(crate) mod upload_row;
pub mod uploads;

/// Opening a database the way storage opens its own (SQLite pragmas, PostgreSQL pool
/// hooks) and migrating it one process at a time: for components that keep their own
/// tables beside storage's, on their own pool (accounts).
pub mod database {
    pub use crate::db::{begin_whole, connect, migrate_exclusively, migrate_storage};
}

use std::sync::Arc;

use berth_config::{Config, StorageConfig};
use sea_orm::{DatabaseConnection, DbErr};

pub use berth_oci::names;
pub use blobs::BlobInfo;
pub use digest::{Algorithm, Digest};
pub use error::{Result, StorageError};
pub use objects::{ByteStream, Objects};
pub use space::FreeSpace;

/// Registry storage: metadata database plus blob objects.
#[derive(Clone)]
pub struct Storage {
    db: DatabaseConnection,
    objects: Objects,
    cache: Arc<cache::MetaCache>,
    /// On a shared database (PostgreSQL), what keeps cached reads current: other
    /// replicas' changes as they commit, else a check per read; `None` on SQLite, where
    /// this process makes every change and drops its cache itself.
    replicas: Option<Replicas>,
    pulls: Arc<pulls::PullCounter>,
    repo_ids: Arc<repos::RepoIds>,
    sqlite_writer: Option<db::SqliteWriter>,
    completions: completions::Completions,
    space: space::Space,
    max_manifest_bytes: u64,
    /// Chunks one upload takes at most (see `uploads`).
    max_upload_chunks: usize,
    private_by_default: bool,
    /// How long an upload may sit idle (and a row-less upload id stays valid).
    upload_expiry_ms: i64,
    gc: gc::GcSettings,
    quotas: Arc<quotas::Quotas>,
    /// Which events are wanted, and events of requests that changed nothing (pulls,
    /// repeated pushes) waiting to be written.
    events: Arc<events::EventGate>,
    /// The request this storage acts for (see [`Storage::for_request`]): its changes'
    /// events name it. `None`: changes the registry makes itself record no events.
    origin: Option<Arc<events::Origin>>,
    /// Whom this storage's changes are recorded as in the audit log (see `audit`).
    actor: Arc<audit::Actor>,
}

impl Storage {
    /// Opens (creating if needed) the database and blob store the config names, and
    /// brings the schema up to date.
    pub async fn open(config: &Config) -> Result<Storage> {
        let url = config.database_url();
        if config.database_url.is_none() || !config.proxies.is_empty() {
            std::fs::create_dir_all(&config.data_dir)?;
        }
        let db = db::connect(&url).await?;
        db::migrate_exclusively(&db, |txn| Box::pin(db::migrate_storage(txn))).await?;
        let objects = match &config.storage {
            StorageConfig::Filesystem { .. } => {
                let root = config.blob_root().expect("filesystem storage has a root");
                Objects::new(objects::LocalDisk::new(&root)?)
            }
            StorageConfig::S3 {
                bucket,
                endpoint,
                region,
                redirect,
            } => Objects::new(objects::S3::from_env(
                bucket,
                endpoint.as_deref(),
                region,
                *redirect,
            )?),
        };
        let sqlite_writer = db::SqliteWriter::for_url(&url);
        let cache = Arc::new(cache::MetaCache::default());
        // A SQLite server makes every change itself (other processes' deletions reach it
        // through `invalidations`); replicas sharing PostgreSQL confirm each cached read.
        let replicas = match sqlite_writer {
            Some(_) => {
                invalidations::watch(db.clone(), cache.clone());
                None
            }
            None => Some(Replicas {
                feed: change_feed::ChangeFeed::start(
                    db.get_postgres_connection_pool().clone(),
                    cache.clone(),
                ),
                generations: Arc::new(generations::Generations::start(db.clone())),
            }),
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
            cache,
            replicas,
            pulls: Arc::default(),
            repo_ids: Arc::default(),
            sqlite_writer,
            space: space::Space::for_config(config),
            max_manifest_bytes: config.limits.max_manifest_bytes,
            max_upload_chunks: config.limits.max_upload_chunks as usize,
            private_by_default: config.auth.private_by_default,
            upload_expiry_ms: config.upload_expiry_secs.saturating_mul(1000) as i64,
            gc: gc::GcSettings::for_config(config),
            quotas: Arc::new(quotas::Quotas::new(
                config.default_quota,
                config.proxies.iter().map(|p| p.prefix.clone()).collect(),
            )),
            events: Arc::new(events::EventGate::new(&config.notifications)),
            origin: None,
            actor: Arc::default(),
        })
    }

    /// Makes `repo`'s cached metadata current (see `change_feed`): call before
    /// reading the cache.
    pub(crate) async fn confirm_cache(&self, repo: &str) -> Result<()> {
        let Some(replicas) = &self.replicas else {
            return Ok(());
        };
        if replicas.feed.trusted() {
            return Ok(());
        }
        if let Some(generation) = replicas.generations.current(repo).await? {
            self.cache.confirm(repo, generation);
        }
        Ok(())
    }

    /// Waits, after committing a change other replicas may have cached, until every
    /// replica serves it (see `change_feed`); call before acknowledging it.
    pub(crate) async fn settle_change(&self) {
        if self.replicas.is_some() {
            tokio::time::sleep(change_feed::SETTLE).await;
        }
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

    /// What `/readyz` reports: whether the database can commit, whether the object
    /// store answers, and the free space left.
    pub async fn check_ready(&self) -> Readiness {
        /// A probe stuck behind a held lock, or a server out of reach, is an answer too
        /// (the object store's client alone would retry for minutes).
        const PROBE_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);
        let (database, objects) = tokio::join!(
            tokio::time::timeout(PROBE_LIMIT, self.probe_commit()),
            tokio::time::timeout(PROBE_LIMIT, self.objects.check()),
        );
        let database = database.unwrap_or_else(|_| {
            Err(StorageError::Database(DbErr::Custom(format!(
                "a commit did not finish within {PROBE_LIMIT:?}"
            ))))
        });
        let objects = objects.unwrap_or_else(|_| {
            Err(StorageError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the object store did not answer within {PROBE_LIMIT:?}"),
            )))
        });
        Readiness {
            database,
            objects,
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

    /// Whether a blob stored takes its size of the local disk [`Storage::free_space`]
    /// measures (blobs on the file system, not S3).
    pub fn blobs_on_local_disk(&self) -> bool {
        self.space.local_blobs()
    }

    /// Refuses new data (`BelowReserve`) while free space is below the reserve.
    pub(crate) fn ensure_room(&self) -> Result<()> {
        self.space.ensure_room()
    }
}

/// What replicas sharing a database keep their caches current with.
#[derive(Clone)]
struct Replicas {
    feed: Arc<change_feed::ChangeFeed>,
    generations: Arc<generations::Generations>,
}

/// See [`Storage::check_ready`].
pub struct Readiness {
    pub database: Result<()>,
    pub objects: Result<()>,
    pub space: Option<space::FreeSpace>,
}
