//! Completions — an upload ending, a blob becoming visible in a repository — written
//! in batches (group commit).
//!
//! Each completion is a few inserts and deletes. Written one by one, each would be a
//! write transaction of up to six statements, every one a round trip to the database
//! (on SQLite, a hand-off to its worker thread), with writers taking turns. Instead
//! completions are queued, and one task writes everything queued meanwhile in one
//! transaction, with one multi-row statement per table: under load many pushes share
//! the round trips, the commit and its fsync. The task, not the request, runs the
//! transaction, so a client hanging up cannot abort the others' commit.

use std::collections::{HashMap, HashSet};

use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr};
use tokio::sync::{mpsc, oneshot};

use crate::db::{begin_write, Sql, SqliteWriter};
use crate::entity::now_millis;
use crate::error::{Result, StorageError};
use crate::repos::ensure_repository;

/// At most this many completions share a transaction (well below both databases'
/// limits on bound values per statement).
const MAX_BATCH: usize = 256;

/// One completion: an upload that ends, a blob to store, or both.
pub(crate) struct Completion {
    pub upload: Option<EndingUpload>,
    pub blob: Option<NewBlob>,
}

/// An upload being completed, cancelled or discarded.
pub(crate) struct EndingUpload {
    pub id: String,
    /// Bytes it held when loaded (its row's version).
    pub size: i64,
    pub has_row: bool,
    /// Ids of the row-less kind get a tombstone (see `uploads`); the start time
    /// is when it may be swept.
    pub tombstone_since: Option<i64>,
}

/// A blob whose bytes are durable, to be recorded and linked to `repo`.
pub(crate) struct NewBlob {
    pub repo: String,
    /// The repository's id when it exists already.
    pub repo_id: Option<i64>,
    pub digest: String,
    pub size: i64,
    /// The object list, as JSON.
    pub segments: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Done,
    /// The blob was stored already: this completion's objects are redundant.
    BlobExisted,
}

type Reply = oneshot::Sender<Result<Outcome>>;

/// The queue of completions and the task writing them.
#[derive(Clone)]
pub(crate) struct Completions {
    queue: mpsc::UnboundedSender<(Completion, Reply)>,
}

impl Completions {
    pub fn start(
        db: DatabaseConnection,
        sqlite: Option<SqliteWriter>,
        private_by_default: bool,
    ) -> Completions {
        let (queue, mut pending) = mpsc::unbounded_channel::<(Completion, Reply)>();
        tokio::spawn(async move {
            let mut batch = Vec::new();
            while pending.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let (completions, replies): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
                match write_batch(&db, &sqlite, private_by_default, &completions).await {
                    Ok(outcomes) => {
                        for (reply, outcome) in replies.into_iter().zip(outcomes) {
                            let _ = reply.send(outcome);
                        }
                    }
                    Err(e) => {
                        for reply in replies {
                            let _ = reply.send(Err(e.for_waiter()));
                        }
                    }
                }
            }
        });
        Completions { queue }
    }

    /// Writes `completion` with whatever else is queued; returns once it is durable.
    /// `UploadUnknown` if another request ended or extended the upload first.
    pub async fn write(&self, completion: Completion) -> Result<Outcome> {
        let (reply, outcome) = oneshot::channel();
        let stopped = || StorageError::Database(DbErr::Custom("storage is shutting down".into()));
        self.queue
            .send((completion, reply))
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

/// One transaction for the whole batch: what fails for one completion alone (its
/// upload ended by someone else) is that completion's outcome; a database error fails
/// them all.
async fn write_batch(
    db: &DatabaseConnection,
    sqlite: &Option<SqliteWriter>,
    private_by_default: bool,
    batch: &[Completion],
) -> Result<Vec<Result<Outcome>>> {
    let mut outcomes: Vec<Result<Outcome>> = batch.iter().map(|_| Ok(Outcome::Done)).collect();
    let txn = begin_write(db, sqlite).await?;
    let backend = txn.get_database_backend();
    let now = now_millis();
    // The completions (index, upload) whose upload matches `filter`, still going.
    let ending = |outcomes: &[Result<Outcome>], filter: fn(&EndingUpload) -> bool| {
        batch
            .iter()
            .enumerate()
            .filter(|(i, _)| outcomes[*i].is_ok())
            .filter_map(|(i, c)| Some((i, c.upload.as_ref().filter(|u| filter(u))?)))
            .collect::<Vec<_>>()
    };

    // Upload rows go, unless another request extended or ended them first.
    let with_rows = ending(&outcomes, |u| u.has_row);
    if !with_rows.is_empty() {
        let mut sql = Sql::default();
        sql.push("DELETE FROM uploads WHERE ");
        for (n, (_, u)) in with_rows.iter().enumerate() {
            sql.push(if n == 0 { "(id = " } else { " OR (id = " })
                .bind(u.id.as_str())
                .push(" AND size = ")
                .bind(u.size)
                .push(")");
        }
        sql.push(" RETURNING id");
        let deleted = returned(&*txn, &sql, "id").await?;
        fail_unreturned(&mut outcomes, with_rows, deleted);
    }

    // Row-less ids get their tombstone; one that has it already was ended before.
    let tombstones = ending(&outcomes, |u| u.tombstone_since.is_some());
    if !tombstones.is_empty() {
        let mut sql = Sql::default();
        sql.push("INSERT INTO upload_tombstones (id, created_at) VALUES ")
            .rows(
                tombstones
                    .iter()
                    .map(|(_, u)| vec![u.id.as_str().into(), u.tombstone_since.into()]),
            )
            .push(" ON CONFLICT DO NOTHING RETURNING id");
        let inserted = returned(&*txn, &sql, "id").await?;
        fail_unreturned(&mut outcomes, tombstones, inserted);
    }

    // Blobs, and their links to the repositories (created on their first push).
    let blobs: Vec<_> = batch
        .iter()
        .enumerate()
        .filter(|(i, _)| outcomes[*i].is_ok())
        .filter_map(|(i, c)| Some((i, c.blob.as_ref()?)))
        .collect();
    if blobs.is_empty() {
        txn.commit().await?;
        return Ok(outcomes);
    }
    let mut repo_ids = HashMap::new();
    for (_, b) in &blobs {
        if !repo_ids.contains_key(b.repo.as_str()) {
            let id = match b.repo_id {
                Some(id) => id,
                None => ensure_repository(&*txn, &b.repo, private_by_default).await?,
            };
            repo_ids.insert(b.repo.as_str(), id);
        }
    }
    let mut sql = Sql::default();
    sql.push("INSERT INTO blobs (digest, size, segments, created_at) VALUES ")
        .rows(blobs.iter().map(|(_, b)| {
            let (digest, segments) = (b.digest.as_str(), b.segments.as_str());
            vec![digest.into(), b.size.into(), segments.into(), now.into()]
        }))
        .push(" ON CONFLICT DO NOTHING RETURNING digest");
    let mut inserted = returned(&*txn, &sql, "digest").await?;
    for (i, b) in &blobs {
        // The first of several pushes of the same bytes stores them.
        if !inserted.remove(&b.digest) {
            outcomes[*i] = Ok(Outcome::BlobExisted);
        }
    }
    let mut links = Sql::default();
    links
        .push("INSERT INTO repository_blobs (repository_id, digest, created_at) VALUES ")
        .rows(blobs.iter().map(|(_, b)| {
            let repo_id = repo_ids[b.repo.as_str()];
            vec![repo_id.into(), b.digest.as_str().into(), now.into()]
        }))
        .push(" ON CONFLICT DO NOTHING");
    txn.execute_raw(links.build(backend)).await?;
    txn.commit().await?;
    Ok(outcomes)
}

/// The completions whose upload id a statement did not return lost a race: another
/// request ended or extended that upload first (of two in one batch, the first wins).
fn fail_unreturned(
    outcomes: &mut [Result<Outcome>],
    uploads: Vec<(usize, &EndingUpload)>,
    mut returned: HashSet<String>,
) {
    for (i, upload) in uploads {
        if !returned.remove(&upload.id) {
            outcomes[i] = Err(StorageError::UploadUnknown(upload.id.clone()));
        }
    }
}

/// Runs `sql` and collects the text column `column` of the rows it returns.
async fn returned(
    db: &impl ConnectionTrait,
    sql: &Sql,
    column: &str,
) -> Result<HashSet<String>, DbErr> {
    let rows = db
        .query_all_raw(sql.build(db.get_database_backend()))
        .await?;
    rows.iter()
        .map(|row| row.try_get::<String>("", column))
        .collect()
}
