//! Connecting to the metadata database (SQLite or PostgreSQL) and migrating it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, OwnedMutexGuard};

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;

use crate::migration::Migrator;

pub async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .sqlx_logging(false)
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(30))
        // WAL lets readers run beside the writer; FULL makes each commit durable
        // before we answer 201; the busy timeout queues writers instead of failing them.
        .map_sqlx_sqlite_opts(|o| {
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(30))
                .foreign_keys(true)
                .create_if_missing(true)
        });
    let db = Database::connect(options).await?;
    Migrator::up(&db, None).await?;
    Ok(db)
}

/// `ORDER BY` text in byte order on every backend (PostgreSQL would otherwise use
/// the database's locale collation, and the spec wants lexical order).
pub fn byte_order(db: &impl ConnectionTrait, column: &str) -> String {
    match db.get_database_backend() {
        DbBackend::Postgres => format!("\"{column}\" COLLATE \"C\""),
        _ => format!("\"{column}\""),
    }
}

/// A write transaction. On SQLite, this process's writers take turns through a gate
/// before `BEGIN IMMEDIATE`: SQLite's own lock makes a waiting writer sleep in
/// growing steps, which collapses throughput under concurrent pushes.
pub struct WriteTxn {
    txn: DatabaseTransaction,
    _turn: Option<OwnedMutexGuard<()>>,
}

impl std::ops::Deref for WriteTxn {
    type Target = DatabaseTransaction;

    fn deref(&self) -> &DatabaseTransaction {
        &self.txn
    }
}

impl WriteTxn {
    pub async fn commit(self) -> Result<(), DbErr> {
        self.txn.commit().await
    }
}

/// The gate for SQLite databases (`None` for servers that handle concurrent writers).
pub fn write_gate(db: &DatabaseConnection) -> Option<Arc<Mutex<()>>> {
    (db.get_database_backend() == DbBackend::Sqlite).then(Arc::default)
}

pub async fn begin_write(
    db: &DatabaseConnection,
    gate: &Option<Arc<Mutex<()>>>,
) -> Result<WriteTxn, DbErr> {
    let turn = match gate {
        Some(gate) => Some(gate.clone().lock_owned().await),
        None => None,
    };
    // IMMEDIATE: a deferred SQLite transaction that reads, then writes, fails with
    // "database is locked" when another process (an admin command) is writing.
    let txn = db
        .begin_with_options(TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..TransactionOptions::default()
        })
        .await?;
    Ok(WriteTxn { txn, _turn: turn })
}
