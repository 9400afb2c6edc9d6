//! The upload row and its state transitions: the one place that writes the `uploads`
//! and `upload_tombstones` tables. `uploads` (start, chunks, completion, cancel),
//! `completions` (which ends uploads in batches, in the commit that stores their blob)
//! and `expiry` call these functions; none of them writes the tables itself.
//!
//! # States
//!
//! - **fresh**: started, nothing received yet. There is no row: the id itself says
//!   when the upload started, its digest algorithm and its repository (see [`new_id`]),
//!   so starting an upload writes nothing. A fresh id is unknown once older than the
//!   upload expiry.
//! - **open** at size *n*: the row exists and records the *n* bytes received so far
//!   (their objects, the saved hash state, how far they are durable).
//! - **ended**: completed, cancelled (or discarded after a digest mismatch) or expired.
//!   The row is gone; an id of the fresh kind keeps a tombstone until it would have
//!   expired anyway, so an ended upload can neither start over nor end twice.
//!
//! # The rule: an upload's size is its version
//!
//! Every transition names the size its writer read (0 and "no row" for a fresh upload)
//! and applies only if the upload is still in that state: one conditional statement,
//! decided by the database, so any number of requests on any number of replicas may
//! race on one upload. Of the writers that read the same state, exactly one moves it
//! on; the others apply nothing and are told so (`false`), and answer as losers of the
//! race (their client asks for the upload's state and resumes from there). Every
//! transition that matters changes the size or ends the upload, so a matching size
//! means nothing happened since the read.
//!
//! | transition | from | to | applies if |
//! |---|---|---|---|
//! | [`create`] (the first chunk) | fresh | open(*k*) | no row and no tombstone |
//! | [`append`] (a chunk) | open(*n*) | open(*n* + *k*) | size = *n* |
//! | [`rewind`] (after a reboot) | open(*n*) | open(*m* < *n*) | size = *n* |
//! | [`end`] ([`EndingUpload::finish`]: complete, cancel) | fresh or open(*n*) | ended | no tombstone, or size = *n* |
//! | [`end`] ([`EndingUpload::expire`]) | open(*n*), idle | ended | size = *n* and not updated since the cutoff |
//!
//! [`rewind`] is the one transition that lowers the size (the unflushed tail of a
//! chunk written before the machine restarted is dropped, see `uploads`). Every reader
//! of such a row rewinds it before anything else, conditionally like any transition,
//! so no request holds a read from before it; expiry, which reads rows without loading
//! them, also requires the row to be idle, which an append after a rewind ends.

use std::collections::HashSet;

use sea_orm::sea_query::{Condition, Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

use crate::db::returned_text;
use crate::digest::{Algorithm, Digest, Hasher};
use crate::entity::{upload, upload_tombstone};

/// A fresh upload's id: `<32 random hex>.<started, Unix ms>.<algorithm>.<repository
/// mark>`; the mark (16 hex of the name's SHA-256) keeps the id to its repository.
pub(crate) fn new_id(repo: &str, algorithm: Algorithm, now: i64) -> String {
    format!(
        "{}.{now}.{}.{}",
        uuid::Uuid::new_v4().simple(),
        algorithm.name(),
        repository_mark(repo)
    )
}

fn repository_mark(repo: &str) -> String {
    Digest::of(Algorithm::Sha256, repo.as_bytes()).hex()[..16].to_owned()
}

/// What an id of the fresh kind says: when it started, its algorithm, and the mark of
/// its repository.
fn parse_id(id: &str) -> Option<(i64, Algorithm, &str)> {
    let mut parts = id.split('.');
    let (random, started, algorithm, mark) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    if parts.next().is_some() || !hex(random, 32) || !hex(mark, 16) {
        return None;
    }
    Some((
        started.parse().ok()?,
        Algorithm::parse(algorithm).ok()?,
        mark,
    ))
}

/// The fresh upload `id` of `repo` as its id describes it (size 0, no row), if it is of
/// the fresh kind, belongs to `repo` and started between `not_before` and `not_after`.
/// (Ids are not signed: a client can write one. The start time bounds what it gains:
/// one dated in the future would never expire, nor would the tombstone ending it.)
/// Whether it ended already is [`ended`]'s to say.
pub(crate) fn fresh(
    id: &str,
    repo: &str,
    not_before: i64,
    not_after: i64,
) -> Option<upload::Model> {
    let (started, algorithm, mark) = parse_id(id)?;
    if !(not_before..=not_after).contains(&started) || mark != repository_mark(repo) {
        return None;
    }
    Some(upload::Model {
        id: id.to_owned(),
        repository: repo.to_owned(),
        algorithm: algorithm.name().to_owned(),
        size: 0,
        hash_state: Hasher::new(algorithm).save(),
        segments: "[]".to_owned(),
        created_at: started,
        updated_at: started,
        synced_size: None,
        synced_hash_state: None,
        written_boot: None,
    })
}

/// The row of upload `id`, if it is open.
pub(crate) async fn find(
    db: &impl ConnectionTrait,
    id: &str,
) -> Result<Option<upload::Model>, DbErr> {
    upload::Entity::find_by_id(id).one(db).await
}

/// Whether the upload `id`, of the fresh kind, has ended (its tombstone exists).
pub(crate) async fn ended(db: &impl ConnectionTrait, id: &str) -> Result<bool, DbErr> {
    Ok(upload_tombstone::Entity::find_by_id(id)
        .one(db)
        .await?
        .is_some())
}

/// fresh → open: records the first chunk, `row` being the upload with it (its size,
/// hash state, objects, `updated_at`). False if the row exists already (another first
/// chunk won) or the upload ended.
pub(crate) async fn create(db: &impl ConnectionTrait, row: &upload::Model) -> Result<bool, DbErr> {
    use upload::Column as C;
    let not_ended = Expr::exists(
        Query::select()
            .expr(Expr::val(1))
            .from(upload_tombstone::Entity)
            .and_where(upload_tombstone::Column::Id.eq(row.id.as_str()))
            .to_owned(),
    )
    .not();
    let values = Query::select()
        .exprs([
            Expr::val(row.id.as_str()),
            Expr::val(row.repository.as_str()),
            Expr::val(row.algorithm.as_str()),
            Expr::val(row.size),
            Expr::val(row.hash_state.clone()),
            Expr::val(row.segments.as_str()),
            Expr::val(row.created_at),
            Expr::val(row.updated_at),
            Expr::val(row.synced_size),
            Expr::val(row.synced_hash_state.clone()),
            Expr::val(row.written_boot.clone()),
        ])
        .and_where(not_ended)
        .to_owned();
    let insert = Query::insert()
        .into_table(upload::Entity)
        .columns([
            C::Id,
            C::Repository,
            C::Algorithm,
            C::Size,
            C::HashState,
            C::Segments,
            C::CreatedAt,
            C::UpdatedAt,
            C::SyncedSize,
            C::SyncedHashState,
            C::WrittenBoot,
        ])
        .select_from(values)
        .map_err(|e| DbErr::Custom(e.to_string()))?
        .on_conflict(OnConflict::new().do_nothing().to_owned())
        .to_owned();
    Ok(db.execute(&insert).await?.rows_affected() == 1)
}

/// open(`expected`) → open(`row.size`): records a chunk, `row` being the upload with
/// it. False if the upload is no longer at `expected` bytes (another chunk, or its end,
/// came first).
pub(crate) async fn append(
    db: &impl ConnectionTrait,
    expected: i64,
    row: &upload::Model,
) -> Result<bool, DbErr> {
    update(db, expected, row, true).await
}

/// open(`expected`) → open(`row.size`), smaller: back to what is known durable after a
/// reboot. Leaves `updated_at` (the upload did not progress). False if the upload is
/// no longer at `expected` bytes.
pub(crate) async fn rewind(
    db: &impl ConnectionTrait,
    expected: i64,
    row: &upload::Model,
) -> Result<bool, DbErr> {
    update(db, expected, row, false).await
}

async fn update(
    db: &impl ConnectionTrait,
    expected: i64,
    row: &upload::Model,
    touch: bool,
) -> Result<bool, DbErr> {
    use upload::Column as C;
    let mut update = upload::Entity::update_many()
        .col_expr(C::Size, Expr::value(row.size))
        .col_expr(C::HashState, Expr::value(row.hash_state.clone()))
        .col_expr(C::Segments, Expr::value(row.segments.as_str()))
        .col_expr(C::SyncedSize, Expr::value(row.synced_size))
        .col_expr(
            C::SyncedHashState,
            Expr::value(row.synced_hash_state.clone()),
        )
        .col_expr(C::WrittenBoot, Expr::value(row.written_boot.clone()));
    if touch {
        update = update.col_expr(C::UpdatedAt, Expr::value(row.updated_at));
    }
    let updated = update
        .filter(C::Id.eq(row.id.as_str()))
        .filter(C::Size.eq(expected))
        .exec(db)
        .await?;
    Ok(updated.rows_affected > 0)
}

/// An upload to end with [`end`].
#[derive(Debug, Clone)]
pub(crate) struct EndingUpload {
    pub id: String,
    /// The size its ender read (the version the end is conditional on).
    pub size: i64,
    /// False for a fresh upload, whose end is conditional on its tombstone instead.
    pub has_row: bool,
    /// Ids of the fresh kind get a tombstone; this is when it may be swept.
    pub tombstone_since: Option<i64>,
    /// Expiry: only if the row was last updated before this time.
    pub idle_before: Option<i64>,
}

impl EndingUpload {
    /// Completing or cancelling the upload `id` as its ender loaded it: at `size`
    /// bytes, with a row or fresh.
    pub fn finish(id: &str, size: i64, has_row: bool) -> EndingUpload {
        EndingUpload {
            id: id.to_owned(),
            size,
            has_row,
            tombstone_since: parse_id(id).map(|(started, ..)| started),
            idle_before: None,
        }
    }

    /// Expiring `row` (read by [`idle`]) if it is still as read and idle since before
    /// `cutoff`. No tombstone: an id that old is unknown anyway.
    pub fn expire(row: &upload::Model, cutoff: i64) -> EndingUpload {
        EndingUpload {
            id: row.id.clone(),
            size: row.size,
            has_row: true,
            tombstone_since: None,
            idle_before: Some(cutoff),
        }
    }
}

/// Ends `uploads` (open or fresh → ended), with one statement per table for all of
/// them, in the caller's transaction; says which ended. One that did not was ended
/// or extended by another request first; of two endings of one upload in one call,
/// the first wins.
pub(crate) async fn end(
    db: &impl ConnectionTrait,
    uploads: &[&EndingUpload],
) -> Result<Vec<bool>, DbErr> {
    let mut ended = vec![true; uploads.len()];
    // Rows go if still at the size read (and, for expiry, still idle).
    let with_rows: Vec<usize> = (0..uploads.len()).filter(|&i| uploads[i].has_row).collect();
    if !with_rows.is_empty() {
        let mut unchanged = Condition::any();
        for &i in &with_rows {
            let u = uploads[i];
            let mut this = Condition::all()
                .add(upload::Column::Id.eq(u.id.as_str()))
                .add(upload::Column::Size.eq(u.size));
            if let Some(cutoff) = u.idle_before {
                this = this.add(upload::Column::UpdatedAt.lt(cutoff));
            }
            unchanged = unchanged.add(this);
        }
        let delete = Query::delete()
            .from_table(upload::Entity)
            .cond_where(unchanged)
            .returning_col(upload::Column::Id)
            .to_owned();
        let deleted = returned_text(db, &delete, "id").await?;
        settle(&mut ended, uploads, with_rows, deleted);
    }
    // Fresh-kind ids get their tombstone; one that has it already ended before.
    let tombstoned: Vec<usize> = (0..uploads.len())
        .filter(|&i| ended[i] && uploads[i].tombstone_since.is_some())
        .collect();
    if !tombstoned.is_empty() {
        let mut insert = Query::insert()
            .into_table(upload_tombstone::Entity)
            .columns([
                upload_tombstone::Column::Id,
                upload_tombstone::Column::CreatedAt,
            ])
            .on_conflict(OnConflict::new().do_nothing().to_owned())
            .returning_col(upload_tombstone::Column::Id)
            .to_owned();
        for &i in &tombstoned {
            let u = uploads[i];
            insert.values_panic([u.id.as_str().into(), u.tombstone_since.into()]);
        }
        let inserted = returned_text(db, &insert, "id").await?;
        settle(&mut ended, uploads, tombstoned, inserted);
    }
    Ok(ended)
}

/// Marks as not ended the uploads among `tried` whose id the statement did not return
/// (each returned id counts once: for the first of its uploads).
fn settle(
    ended: &mut [bool],
    uploads: &[&EndingUpload],
    tried: Vec<usize>,
    mut returned: HashSet<String>,
) {
    for i in tried {
        if !returned.remove(&uploads[i].id) {
            ended[i] = false;
        }
    }
}

/// Up to `limit` open uploads not updated since before `cutoff`, longest idle first
/// (for [`EndingUpload::expire`]).
pub(crate) async fn idle(
    db: &impl ConnectionTrait,
    cutoff: i64,
    limit: u64,
) -> Result<Vec<upload::Model>, DbErr> {
    upload::Entity::find()
        .filter(upload::Column::UpdatedAt.lt(cutoff))
        .order_by_asc(upload::Column::UpdatedAt)
        .limit(limit)
        .all(db)
        .await
}

/// Whether any tombstone is of an id started before `cutoff`.
pub(crate) async fn tombstones_before(
    db: &impl ConnectionTrait,
    cutoff: i64,
) -> Result<bool, DbErr> {
    Ok(upload_tombstone::Entity::find()
        .filter(upload_tombstone::Column::CreatedAt.lt(cutoff))
        .one(db)
        .await?
        .is_some())
}

/// Deletes the tombstones of ids started before `cutoff`: such ids are unknown anyway.
pub(crate) async fn forget_tombstones_before(
    db: &impl ConnectionTrait,
    cutoff: i64,
) -> Result<(), DbErr> {
    upload_tombstone::Entity::delete_many()
        .filter(upload_tombstone::Column::CreatedAt.lt(cutoff))
        .exec(db)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The transitions as a state machine, on a real database: SQLite in a temporary
    //! directory, and PostgreSQL when `BERTH_TEST_POSTGRES_URL` is set (always in CI).

    use std::sync::Arc;

    use sea_orm::DatabaseConnection;

    use super::*;

    const REPO: &str = "ns/app";

    /// A migrated database per backend (the directory lives as long as the connection).
    async fn databases() -> Vec<(DatabaseConnection, Option<tempfile::TempDir>)> {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("berth.db").display()
        );
        let mut urls = vec![(sqlite, Some(dir))];
        if let Some(admin) = berth_tests::postgres_admin_url() {
            urls.push((berth_tests::fresh_postgres_database(&admin).await, None));
        }
        let mut dbs = Vec::new();
        for (url, dir) in urls {
            let db = crate::db::connect(&url).await.unwrap();
            crate::db::migrate_exclusively(&db, |txn| Box::pin(crate::db::migrate_storage(txn)))
                .await
                .unwrap();
            dbs.push((db, dir));
        }
        dbs
    }

    /// A fresh upload (started at `started`), as `uploads` loads it.
    fn started(started: i64) -> upload::Model {
        let id = new_id(REPO, Algorithm::Sha256, started);
        fresh(&id, REPO, started, started).unwrap()
    }

    /// `row` after a chunk of `bytes` bytes received at `now`.
    fn chunk(row: &upload::Model, bytes: i64, now: i64) -> upload::Model {
        upload::Model {
            size: row.size + bytes,
            hash_state: format!("h{}", row.size + bytes).into_bytes(),
            segments: format!("[{}]", row.size + bytes),
            updated_at: now,
            ..row.clone()
        }
    }

    /// The upload opened with a first chunk of 3 bytes at `now`.
    async fn opened(db: &DatabaseConnection, now: i64) -> upload::Model {
        let row = chunk(&started(now), 3, now);
        assert!(create(db, &row).await.unwrap());
        row
    }

    async fn end_one(db: &DatabaseConnection, ending: EndingUpload) -> bool {
        end(db, &[&ending]).await.unwrap()[0]
    }

    fn now() -> i64 {
        crate::entity::now_millis()
    }

    #[test]
    fn fresh_ids_belong_to_their_repository_until_they_expire() {
        let id = new_id(REPO, Algorithm::Sha512, 1234);
        assert_eq!(
            parse_id(&id).map(|(s, a, _)| (s, a)),
            Some((1234, Algorithm::Sha512))
        );
        let row = fresh(&id, REPO, 1000, 2000).unwrap();
        assert_eq!(
            (row.size, row.created_at, row.algorithm.as_str()),
            (0, 1234, "sha512")
        );
        assert_eq!(row.hash_state, Hasher::new(Algorithm::Sha512).save());
        assert!(fresh(&id, "ns/other", 1000, 2000).is_none());
        assert!(fresh(&id, REPO, 1235, 2000).is_none(), "expired");
        assert!(fresh(&id, REPO, 1000, 1233).is_none(), "from the future");
        assert!(fresh(&id, REPO, 1234, 1234).is_some());
        assert_eq!(parse_id("3f2a0c6e-0000-4000-8000-000000000000"), None);
        assert_eq!(parse_id("zz.1.sha256"), None);
        assert_eq!(parse_id(&format!("{id}.x")), None);
    }

    #[tokio::test]
    async fn appends_apply_only_at_the_size_read() {
        for (db, _dir) in databases().await {
            let row = opened(&db, now()).await;
            assert_eq!(find(&db, &row.id).await.unwrap(), Some(row.clone()));
            let second = chunk(&row, 4, now());
            assert!(append(&db, 3, &second).await.unwrap());
            // A writer that read 3 bytes, too late.
            assert!(!append(&db, 3, &chunk(&row, 9, now())).await.unwrap());
            // Nor can the upload be created again.
            assert!(!create(
                &db,
                &upload::Model {
                    size: 1,
                    ..row.clone()
                }
            )
            .await
            .unwrap());
            assert_eq!(find(&db, &row.id).await.unwrap(), Some(second.clone()));
            assert!(append(&db, 7, &chunk(&second, 1, now())).await.unwrap());
        }
    }

    #[tokio::test]
    async fn of_concurrent_appends_at_one_size_exactly_one_wins() {
        for (db, _dir) in databases().await {
            let db = Arc::new(db);
            let row = opened(&db, now()).await;
            let tries: Vec<_> = (1..=8)
                .map(|k| {
                    let (db, next) = (db.clone(), chunk(&row, k, now()));
                    tokio::spawn(async move { (append(&*db, 3, &next).await.unwrap(), next) })
                })
                .collect();
            let mut winners = Vec::new();
            for t in tries {
                let (won, next) = t.await.unwrap();
                if won {
                    winners.push(next);
                }
            }
            assert_eq!(winners.len(), 1, "exactly one append wins");
            assert_eq!(find(&*db, &row.id).await.unwrap().as_ref(), winners.first());
        }
    }

    #[tokio::test]
    async fn of_concurrent_first_chunks_exactly_one_wins() {
        for (db, _dir) in databases().await {
            let db = Arc::new(db);
            let fresh = started(now());
            let tries: Vec<_> = (1..=8)
                .map(|k| {
                    let (db, next) = (db.clone(), chunk(&fresh, k, now()));
                    tokio::spawn(async move { create(&*db, &next).await.unwrap() })
                })
                .collect();
            let mut won = 0;
            for t in tries {
                won += t.await.unwrap() as usize;
            }
            assert_eq!(won, 1);
        }
    }

    #[tokio::test]
    async fn an_ended_upload_takes_no_more_transitions() {
        for (db, _dir) in databases().await {
            let row = opened(&db, now()).await;
            // A completion that read a stale size does not end it.
            assert!(!end_one(&db, EndingUpload::finish(&row.id, 0, true)).await);
            assert!(end_one(&db, EndingUpload::finish(&row.id, 3, true)).await);
            assert_eq!(find(&db, &row.id).await.unwrap(), None);
            assert!(ended(&db, &row.id).await.unwrap());
            // Append, first chunk, cancel, complete, rewind: all too late.
            assert!(!append(&db, 3, &chunk(&row, 1, now())).await.unwrap());
            assert!(!create(&db, &chunk(&row, 1, now())).await.unwrap());
            assert!(!rewind(&db, 3, &row).await.unwrap());
            assert!(!end_one(&db, EndingUpload::finish(&row.id, 3, true)).await);
            assert!(!end_one(&db, EndingUpload::finish(&row.id, 0, false)).await);
            assert_eq!(find(&db, &row.id).await.unwrap(), None);
        }
    }

    #[tokio::test]
    async fn complete_after_cancel_fails() {
        for (db, _dir) in databases().await {
            // Fresh: the tombstone decides.
            let fresh = started(now());
            assert!(!ended(&db, &fresh.id).await.unwrap());
            assert!(end_one(&db, EndingUpload::finish(&fresh.id, 0, false)).await);
            assert!(!end_one(&db, EndingUpload::finish(&fresh.id, 0, false)).await);
            assert!(!create(&db, &chunk(&fresh, 5, now())).await.unwrap());
            assert_eq!(find(&db, &fresh.id).await.unwrap(), None);
            // Open: the row decides.
            let row = opened(&db, now()).await;
            assert!(end_one(&db, EndingUpload::finish(&row.id, 3, true)).await);
            assert!(!end_one(&db, EndingUpload::finish(&row.id, 3, true)).await);
        }
    }

    #[tokio::test]
    async fn one_batch_ends_an_upload_once() {
        for (db, _dir) in databases().await {
            let row = opened(&db, now()).await;
            let fresh = started(now());
            let other = opened(&db, now()).await;
            let (a, b) = (
                EndingUpload::finish(&row.id, 3, true),
                EndingUpload::finish(&fresh.id, 0, false),
            );
            let stale = EndingUpload::finish(&other.id, 2, true);
            assert_eq!(
                end(&db, &[&a, &b, &a, &b, &stale]).await.unwrap(),
                [true, true, false, false, false]
            );
            assert!(find(&db, &other.id).await.unwrap().is_some());
        }
    }

    #[tokio::test]
    async fn an_end_and_an_append_at_one_size_do_not_both_apply() {
        for (db, _dir) in databases().await {
            let db = Arc::new(db);
            for _ in 0..10 {
                let row = opened(&db, now()).await;
                let next = chunk(&row, 1, now());
                let appended = {
                    let db = db.clone();
                    tokio::spawn(async move { append(&*db, 3, &next).await.unwrap() })
                };
                let ending = EndingUpload::finish(&row.id, 3, true);
                let ended_it = end_one(&db, ending).await;
                let appended = appended.await.unwrap();
                assert!(appended != ended_it, "exactly one of them applies");
                assert_eq!(find(&*db, &row.id).await.unwrap().is_some(), appended);
            }
        }
    }

    #[tokio::test]
    async fn expiry_takes_only_idle_rows() {
        for (db, _dir) in databases().await {
            let t = now();
            let cutoff = t - 60_000;
            let old = opened(&db, t - 130_000).await;
            let busy = opened(&db, t).await;
            let appended = opened(&db, t - 120_000).await;
            let rewound = opened(&db, t - 110_000).await;
            let found: Vec<String> = idle(&db, cutoff, 100)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect();
            assert_eq!(
                found,
                [old.id.as_str(), &appended.id, &rewound.id],
                "rows idle since before the cutoff, longest idle first"
            );
            assert_eq!(idle(&db, cutoff, 1).await.unwrap().len(), 1);
            // A busy row is not expired even if asked to.
            assert!(!end_one(&db, EndingUpload::expire(&busy, cutoff)).await);
            // One extended after the sweep read it is not expired.
            assert!(append(&db, 3, &chunk(&appended, 1, t)).await.unwrap());
            assert!(!end_one(&db, EndingUpload::expire(&appended, cutoff)).await);
            // Nor one rewound and extended back to the size read.
            let back = upload::Model {
                size: 1,
                ..rewound.clone()
            };
            assert!(rewind(&db, 3, &back).await.unwrap());
            assert!(append(&db, 1, &chunk(&back, 2, t)).await.unwrap());
            assert_eq!(find(&db, &rewound.id).await.unwrap().unwrap().size, 3);
            assert!(!end_one(&db, EndingUpload::expire(&rewound, cutoff)).await);
            // The idle one goes, once.
            assert!(end_one(&db, EndingUpload::expire(&old, cutoff)).await);
            assert!(!end_one(&db, EndingUpload::expire(&old, cutoff)).await);
            assert_eq!(find(&db, &old.id).await.unwrap(), None);
            for row in [&busy, &appended, &rewound] {
                assert!(find(&db, &row.id).await.unwrap().is_some());
            }
        }
    }

    #[tokio::test]
    async fn rewinding_is_conditional_and_leaves_the_idle_time() {
        for (db, _dir) in databases().await {
            let row = opened(&db, 1000).await;
            let back = upload::Model {
                size: 1,
                updated_at: now(),
                ..row.clone()
            };
            assert!(!rewind(&db, 2, &back).await.unwrap());
            assert!(rewind(&db, 3, &back).await.unwrap());
            let found = find(&db, &row.id).await.unwrap().unwrap();
            assert_eq!((found.size, found.updated_at), (1, 1000));
        }
    }

    #[tokio::test]
    async fn tombstones_are_forgotten_when_their_ids_expire() {
        for (db, _dir) in databases().await {
            let old = started(1000);
            let young = started(now());
            for u in [&old, &young] {
                assert!(end_one(&db, EndingUpload::finish(&u.id, 0, false)).await);
            }
            assert!(tombstones_before(&db, 2000).await.unwrap());
            forget_tombstones_before(&db, 2000).await.unwrap();
            assert!(!tombstones_before(&db, 2000).await.unwrap());
            assert!(!ended(&db, &old.id).await.unwrap());
            assert!(ended(&db, &young.id).await.unwrap());
        }
    }
}
