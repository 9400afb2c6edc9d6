//! Connecting to the metadata database (SQLite or PostgreSQL) and migrating it.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::group_sync::GroupSync;

use futures::future::BoxFuture;
use sea_orm::sea_query::{BinOper, Expr, Func, IntoIden, Query};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, FromQueryResult, SqliteTransactionMode, StatementBuilder, TransactionOptions,
    TransactionTrait,
};
use sea_orm_migration::MigratorTrait;

use crate::migration::Migrator;

pub async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .sqlx_logging(false)
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(30))
        // A ping before every use is a round trip per query (to SQLite's worker thread
        // or to PostgreSQL); only connections idle long enough to have been dropped are
        // checked.
        .test_before_acquire_if_idle_for(Duration::from_secs(30))
        // WAL lets readers run beside the writer. NORMAL writes a commit to the WAL
        // without fsync; `SqliteWriter` then makes it durable with a shared fsync
        // before the write is acknowledged (group commit). The busy timeout queues
        // other processes' writers (admin commands) instead of failing them.
        .map_sqlx_sqlite_opts(|o| {
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(30))
                .foreign_keys(true)
                .create_if_missing(true)
        })
        .map_sqlx_sqlite_pool_opts(|o| {
            let o = o.after_release(|conn, _| Box::pin(settled(conn)));
            crate::test_faults::install(o)
        })
        .map_sqlx_postgres_pool_opts(|o| o.after_release(|conn, _| Box::pin(settled(conn))))
        .map_sqlx_postgres_before_acquire(|conn, meta| {
            Box::pin(async move {
                // An error here discards the connection and the pool takes another.
                if released_before_breakage(meta.idle_for) {
                    sea_orm::sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        });
    Database::connect(options).await
}

/// When a database connection was last found broken, in milliseconds since `EPOCH`
/// (0: never).
static BROKEN_AT: AtomicU64 = AtomicU64::new(0);
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn millis_since_epoch() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

/// Records that a PostgreSQL connection was found broken (a killed backend, a restarted
/// server, a cut network). Connections released before then may be broken too: each is
/// pinged on its next checkout, so one failed request is all a broken pool costs,
/// instead of one per pooled connection. (Healthy pools are not pinged: see
/// `test_before_acquire_if_idle_for` above.)
pub(crate) fn connection_broken() {
    BROKEN_AT.store(millis_since_epoch().max(1), Ordering::Relaxed);
}

fn released_before_breakage(idle_for: Duration) -> bool {
    let broken_at = BROKEN_AT.load(Ordering::Relaxed);
    let released_at = millis_since_epoch().saturating_sub(idle_for.as_millis() as u64);
    broken_at != 0 && released_at <= broken_at
}

/// Whether a connection going back to the pool is outside any transaction; if not, the
/// pool closes it (closing rolls back whatever is open).
///
/// sqlx counts a connection's transaction depth and lowers it only when a COMMIT or
/// ROLLBACK succeeds. When a COMMIT fails because the disk is full, SQLite has already
/// rolled the transaction back itself, so the ROLLBACK sent when sea-orm drops the
/// transaction fails too ("no transaction is active") and the depth stays at 1. Back
/// in the pool, such a connection starts its next transaction with `SAVEPOINT` instead
/// of `BEGIN IMMEDIATE`; if that one fails as well, its `ROLLBACK TO` leaves a real
/// transaction open, and from then on every "commit" on the connection only releases a
/// savepoint inside it: acknowledged, never written, and holding the write lock
/// against everyone else. A connection whose depth is not 0 once its own queued
/// rollback has run is in a state nothing can vouch for, so it is not reused.
async fn settled<C: sea_orm::sqlx::Connection>(conn: &mut C) -> Result<bool, sea_orm::sqlx::Error> {
    if !conn.is_in_transaction() {
        return Ok(true);
    }
    // A transaction dropped without commit queues its rollback; a round trip runs it.
    conn.ping().await?;
    let settled = !conn.is_in_transaction();
    if !settled {
        tracing::warn!(
            "a database connection was left inside a failed transaction (its COMMIT or ROLLBACK failed); closing it"
        );
    }
    Ok(settled)
}

/// Storage's own migrations (for [`migrate_exclusively`]).
pub async fn migrate_storage(txn: &DatabaseTransaction) -> Result<(), DbErr> {
    Migrator::up(txn, None).await
}

/// Runs `migrate` in one transaction that only one process at a time can hold, so when
/// several replicas start together one applies the migrations and the others wait,
/// then find nothing left to do. PostgreSQL: a transaction-scoped advisory lock
/// (DDL is transactional there, so a crash applies nothing). SQLite: an immediate
/// transaction is already exclusive.
pub async fn migrate_exclusively<F>(db: &DatabaseConnection, migrate: F) -> Result<(), DbErr>
where
    F: for<'t> FnOnce(&'t DatabaseTransaction) -> BoxFuture<'t, Result<(), DbErr>>,
{
    /// Any constant shared by every Berth process: "berth" in ASCII.
    const MIGRATION_LOCK: i64 = 0x0062_6572_7468;
    let txn = begin_whole(
        db,
        TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..TransactionOptions::default()
        },
    )
    .await?;
    if txn.get_database_backend() == DbBackend::Postgres {
        let lock = Query::select()
            .expr(Func::cust("pg_advisory_xact_lock").arg(MIGRATION_LOCK))
            .to_owned();
        txn.execute(&lock).await?;
    }
    migrate(&txn).await?;
    txn.commit().await
}

/// A text column compared and ordered in byte order on every backend (PostgreSQL
/// would otherwise use the database's locale collation, and the spec wants lexical
/// order).
pub(crate) fn byte_order(db: &impl ConnectionTrait, column: impl IntoIden) -> Expr {
    use sea_orm::sea_query::ExprTrait;
    match db.get_database_backend() {
        DbBackend::Postgres => {
            Expr::col(column).binary(BinOper::Custom("COLLATE"), Expr::custom_keyword("\"C\""))
        }
        _ => Expr::col(column),
    }
}

/// How this process writes to a SQLite database: one writer at a time through an
/// in-process gate before `BEGIN IMMEDIATE` (SQLite's own lock makes a waiting writer
/// sleep in growing steps, which collapses throughput under concurrent pushes), and
/// commits made durable by a WAL fsync shared among all writers that committed
/// before it started (group commit).
#[derive(Clone)]
pub struct SqliteWriter {
    gate: Arc<Mutex<()>>,
    wal: Arc<GroupSync>,
}

impl SqliteWriter {
    /// For a SQLite database file (`None` for PostgreSQL, whose commits are durable
    /// and grouped by the server itself, and for in-memory SQLite).
    pub fn for_url(url: &str) -> Option<SqliteWriter> {
        let mut wal = sqlite_file(url)?.into_os_string();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        // Opened by path each time: SQLite may recreate the WAL file. A missing WAL was
        // checkpointed into the database file, which SQLite syncs before removing it.
        let flush = move || match std::fs::File::open(&wal) {
            Ok(file) => file.sync_data(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        Some(SqliteWriter {
            gate: Arc::default(),
            wal: Arc::new(GroupSync::new(flush)),
        })
    }
}

/// The file of a SQLite database URL (`None` for PostgreSQL and in-memory SQLite).
pub(crate) fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

/// A write transaction; see [`SqliteWriter`].
pub struct WriteTxn {
    txn: DatabaseTransaction,
    turn: Option<OwnedMutexGuard<()>>,
    wal: Option<Arc<GroupSync>>,
}

impl std::ops::Deref for WriteTxn {
    type Target = DatabaseTransaction;

    fn deref(&self) -> &DatabaseTransaction {
        &self.txn
    }
}

impl WriteTxn {
    /// Commits; returns once the commit is on stable storage.
    pub async fn commit(self) -> Result<(), DbErr> {
        self.txn.commit().await?;
        drop(self.turn); // the next writer can go while we wait for the fsync
        match self.wal {
            Some(wal) => wal
                .sync()
                .await
                .map_err(|e| DbErr::Custom(format!("WAL sync: {e}"))),
            None => Ok(()),
        }
    }
}

/// The turn to run one write statement on its own (autocommit, one round trip to the
/// database instead of three): SQLite's in-process writer gate (see [`SqliteWriter`]),
/// nothing on PostgreSQL. Its commit is visible at once and not waited for on stable
/// storage: for state a client recreates by itself (a new upload, upload progress),
/// where a power cut costs a retry, never acknowledged data.
pub async fn write_turn(sqlite: &Option<SqliteWriter>) -> Option<OwnedMutexGuard<()>> {
    match sqlite {
        Some(w) => Some(w.gate.clone().lock_owned().await),
        None => None,
    }
}

pub async fn begin_write(
    db: &DatabaseConnection,
    sqlite: &Option<SqliteWriter>,
) -> Result<WriteTxn, DbErr> {
    let turn = match sqlite {
        Some(w) => Some(w.gate.clone().lock_owned().await),
        None => None,
    };
    // IMMEDIATE: a deferred SQLite transaction that reads, then writes, fails with
    // "database is locked" when another process (an admin command) is writing.
    let txn = begin_whole(
        db,
        TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..TransactionOptions::default()
        },
    )
    .await?;
    Ok(WriteTxn {
        txn,
        turn,
        wal: sqlite.as_ref().map(|w| w.wal.clone()),
    })
}

/// Begins a transaction in a task of its own, so that no caller dropped while `BEGIN`
/// is in flight (a readiness probe timed out, a client hung up) can leave a pooled
/// connection inside a transaction sqlx does not count (sqlx 0.9.0,
/// transact-rs/sqlx#4393: the drop queues no ROLLBACK before the reply raises the
/// depth). On that connection the next statement run outside a transaction, an
/// upload's row written by a chunk, would be answered as done and never committed.
/// Here the task always finishes `BEGIN`; a transaction nobody takes is dropped at
/// depth 1, which queues its ROLLBACK.
pub async fn begin_whole(
    db: &DatabaseConnection,
    options: TransactionOptions,
) -> Result<DatabaseTransaction, DbErr> {
    let db = db.clone();
    tokio::spawn(async move { db.begin_with_options(options).await })
        .await
        .map_err(|e| DbErr::Custom(format!("beginning a transaction: {e}")))?
}

/// Runs a query and reads its rows as `M` (for statements built with sea-query whose
/// rows are not an entity's).
pub(crate) async fn query_as<M: FromQueryResult>(
    db: &impl ConnectionTrait,
    stmt: &impl StatementBuilder,
) -> Result<Vec<M>, DbErr> {
    db.query_all(stmt)
        .await?
        .iter()
        .map(|row| M::from_query_result(row, ""))
        .collect()
}

/// Runs a statement with `RETURNING column` and collects the text values returned.
pub(crate) async fn returned_text(
    db: &impl ConnectionTrait,
    stmt: &impl StatementBuilder,
    column: &str,
) -> Result<HashSet<String>, DbErr> {
    db.query_all(stmt)
        .await?
        .iter()
        .map(|row| row.try_get::<String>("", column))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sqlite_files_get_a_writer() {
        assert!(SqliteWriter::for_url("sqlite://./berth-data/berth.db?mode=rwc").is_some());
        assert!(SqliteWriter::for_url("sqlite::memory:").is_none());
        assert!(SqliteWriter::for_url("postgres://u@h/db").is_none());
        assert_eq!(
            sqlite_file("sqlite:///var/lib/berth/berth.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/berth/berth.db"))
        );
    }
}
