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

use sea_orm::sea_query::{OnConflict, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr};
use tokio::sync::{mpsc, oneshot};

use crate::db::{begin_write, returned_text, SqliteWriter};
use crate::entity::{blob, blob_object, now_millis};
use crate::error::{Result, StorageError};
use crate::liveness;
use crate::repos::ensure_repository;
use crate::upload_row;
pub(crate) use crate::upload_row::EndingUpload;

/// At most this many completions share a transaction (well below both databases'
/// limits on bound values per statement).
const MAX_BATCH: usize = 256;

/// One completion: an upload that ends, a blob to store, or both; and the events
/// that report it.
pub(crate) struct Completion {
    pub upload: Option<EndingUpload>,
    pub blob: Option<NewBlob>,
    pub events: Vec<crate::events::Event>,
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
    /// The objects' keys (for `blob_objects`).
    pub keys: Vec<String>,
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
    let now = now_millis();

    // Uploads end, unless another request extended or ended them first.
    let endings: Vec<(usize, &EndingUpload)> = batch
        .iter()
        .enumerate()
        .filter_map(|(i, c)| Some((i, c.upload.as_ref()?)))
        .collect();
    if !endings.is_empty() {
        let uploads: Vec<&EndingUpload> = endings.iter().map(|(_, u)| *u).collect();
        let ended = upload_row::end(&*txn, &uploads).await?;
        for ((i, upload), ended) in endings.into_iter().zip(ended) {
            if !ended {
                outcomes[i] = Err(StorageError::UploadUnknown(upload.id.clone()));
            }
        }
    }

    // Blobs, and their links to the repositories (created on their first push).
    let blobs: Vec<_> = batch
        .iter()
        .enumerate()
        .filter(|(i, _)| outcomes[*i].is_ok())
        .filter_map(|(i, c)| Some((i, c.blob.as_ref()?)))
        .collect();
    if blobs.is_empty() {
        record_events(&*txn, batch, &outcomes).await?;
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
    // Each blob is either inserted by this batch (its first completion's objects become
    // it) or already stored and then share-locked, so a collector cannot take it before
    // this commit links it (see `liveness`). One the collector deleted between the two
    // statements is inserted on the next round.
    let mut unsettled: Vec<&(usize, &NewBlob)> = blobs.iter().collect();
    let mut inserted: HashSet<String> = HashSet::new();
    while !unsettled.is_empty() {
        let mut round = insert_blobs(&*txn, &unsettled, now).await?;
        let stored_before: Vec<String> = unsettled
            .iter()
            .filter(|(_, b)| !round.contains(&b.digest))
            .map(|(_, b)| b.digest.clone())
            .collect();
        let existing = match stored_before.is_empty() {
            true => HashSet::new(),
            false => liveness::lock_blobs(&*txn, stored_before).await?,
        };
        unsettled.retain(|(_, b)| !round.contains(&b.digest) && !existing.contains(&b.digest));
        inserted.extend(round.drain());
    }
    let mut objects = Query::insert()
        .into_table(blob_object::Entity)
        .columns([blob_object::Column::Key, blob_object::Column::Digest])
        .to_owned();
    let mut any_objects = false;
    for (i, b) in &blobs {
        // The first of several pushes of the same bytes stores them.
        if inserted.remove(&b.digest) {
            for key in &b.keys {
                objects.values_panic([key.as_str().into(), b.digest.as_str().into()]);
                any_objects = true;
            }
        } else {
            outcomes[*i] = Ok(Outcome::BlobExisted);
        }
    }
    if any_objects {
        txn.execute(&objects).await?;
    }
    let links = blobs
        .iter()
        .map(|(_, b)| (repo_ids[b.repo.as_str()], b.digest.clone()));
    liveness::link(&*txn, links, now).await?;
    record_events(&*txn, batch, &outcomes).await?;
    txn.commit().await?;
    Ok(outcomes)
}

/// The events of the completions that succeed, in the batch's order.
async fn record_events(
    db: &impl ConnectionTrait,
    batch: &[Completion],
    outcomes: &[Result<Outcome>],
) -> Result<()> {
    let events: Vec<crate::events::Event> = batch
        .iter()
        .zip(outcomes)
        .filter(|(_, outcome)| outcome.is_ok())
        .flat_map(|(c, _)| c.events.iter().cloned())
        .collect();
    crate::events::record(db, &events).await
}

/// Inserts the blobs not stored yet; returns the digests inserted.
async fn insert_blobs(
    db: &impl ConnectionTrait,
    blobs: &[&(usize, &NewBlob)],
    now: i64,
) -> Result<HashSet<String>> {
    let mut insert = Query::insert()
        .into_table(blob::Entity)
        .columns([
            blob::Column::Digest,
            blob::Column::Size,
            blob::Column::Segments,
            blob::Column::CreatedAt,
        ])
        .on_conflict(OnConflict::new().do_nothing().to_owned())
        .returning_col(blob::Column::Digest)
        .to_owned();
    for (_, b) in blobs {
        insert.values_panic([
            b.digest.as_str().into(),
            b.size.into(),
            b.segments.as_str().into(),
            now.into(),
        ]);
    }
    Ok(returned_text(db, &insert, "digest").await?)
}
