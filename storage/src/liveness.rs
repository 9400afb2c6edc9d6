//! What keeps a blob alive while garbage collection runs beside pushes and pulls (the
//! protocol is written out in the README's storage design section).
//!
//! The lock point is the blob's row in `blobs`. Every write that makes a blob needed —
//! a manifest referencing it, an upload or mount linking it, a HEAD/GET refreshing its
//! link's touch time — first takes a share lock on that row, in the transaction that
//! records the need. The collector locks the rows it wants to delete `FOR UPDATE SKIP
//! LOCKED`, then re-checks (in a new statement, so it sees every commit made before
//! its lock) that nothing references the blob and no link was touched within the
//! grace. So either the writer locked first (the collector skips the blob this pass,
//! and sees the writer's reference the next), or the collector did (the writer waits,
//! then finds the row gone and answers "unknown", never a success for a blob that is
//! about to disappear). On SQLite, writes take turns (`SqliteWriter`), so a writer's
//! transaction and the collector's never interleave at all; the locks compile to nothing.

use std::collections::{BTreeSet, HashSet};

use sea_orm::sea_query::{Expr, ExprTrait, LockBehavior, LockType, OnConflict, Query};
use sea_orm::{ConnectionTrait, FromQueryResult};

use crate::db::{query_as, returned_text};
use crate::entity::{blob, manifest, repository_blob};
use crate::error::Result;

/// Of `digests`, the blobs the collector may now delete: locked `FOR UPDATE`, skipping
/// rows a writer holds (it is about to reference the blob), so the collector never
/// waits for a push. The caller re-checks them in a new statement before deleting.
pub(crate) async fn lock_blobs_to_delete(
    db: &impl ConnectionTrait,
    digests: impl IntoIterator<Item = String>,
) -> Result<HashSet<String>> {
    let query = Query::select()
        .column(blob::Column::Digest)
        .from(blob::Entity)
        .and_where(Expr::col(blob::Column::Digest).is_in(digests))
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .to_owned();
    Ok(returned_text(db, &query, "digest").await?)
}

/// Of manifests `ids`, those the collector (or retention) may now delete, locked as
/// [`lock_blobs_to_delete`] locks blobs; writers that need a manifest (an index
/// listing it, a tag pointing at it) share-lock it.
pub(crate) async fn lock_manifests_to_delete(
    db: &impl ConnectionTrait,
    ids: impl IntoIterator<Item = i64>,
) -> Result<Vec<i64>> {
    #[derive(FromQueryResult)]
    struct Id {
        id: i64,
    }
    let query = Query::select()
        .column(manifest::Column::Id)
        .from(manifest::Entity)
        .and_where(Expr::col(manifest::Column::Id).is_in(ids))
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .to_owned();
    Ok(query_as::<Id>(db, &query)
        .await?
        .into_iter()
        .map(|row| row.id)
        .collect())
}

/// Of `digests`, the blobs that exist, share-locked until the transaction ends.
pub(crate) async fn lock_blobs(
    db: &impl ConnectionTrait,
    digests: impl IntoIterator<Item = String>,
) -> Result<HashSet<String>> {
    let query = Query::select()
        .column(blob::Column::Digest)
        .from(blob::Entity)
        .and_where(Expr::col(blob::Column::Digest).is_in(digests))
        .lock(LockType::Share)
        .to_owned();
    Ok(returned_text(db, &query, "digest").await?)
}

/// Of `digests`, the blobs linked to repository `repo_id`, share-locked until the
/// transaction ends.
pub(crate) async fn lock_linked_blobs(
    db: &impl ConnectionTrait,
    repo_id: i64,
    digests: impl IntoIterator<Item = String>,
) -> Result<BTreeSet<String>> {
    let query = Query::select()
        .column((blob::Entity, blob::Column::Digest))
        .from(blob::Entity)
        .inner_join(
            repository_blob::Entity,
            Expr::col((repository_blob::Entity, repository_blob::Column::Digest))
                .equals((blob::Entity, blob::Column::Digest)),
        )
        .and_where(
            Expr::col((
                repository_blob::Entity,
                repository_blob::Column::RepositoryId,
            ))
            .eq(repo_id),
        )
        .and_where(Expr::col((blob::Entity, blob::Column::Digest)).is_in(digests))
        .lock_with_tables(LockType::Share, [blob::Entity])
        .to_owned();
    Ok(returned_text(db, &query, "digest")
        .await?
        .into_iter()
        .collect())
}

/// Links each `(repository, digest)` (whose blob the caller has locked or just
/// inserted), touched `now`: a new link, or a refreshed one.
pub(crate) async fn link(
    db: &impl ConnectionTrait,
    links: impl IntoIterator<Item = (i64, String)>,
    now: i64,
) -> Result<()> {
    // PostgreSQL refuses to update one row twice in a statement: one row per link.
    let links: BTreeSet<(i64, String)> = links.into_iter().collect();
    if links.is_empty() {
        return Ok(());
    }
    let mut insert = Query::insert()
        .into_table(repository_blob::Entity)
        .columns([
            repository_blob::Column::RepositoryId,
            repository_blob::Column::Digest,
            repository_blob::Column::CreatedAt,
            repository_blob::Column::TouchedAt,
        ])
        .on_conflict(
            OnConflict::columns([
                repository_blob::Column::RepositoryId,
                repository_blob::Column::Digest,
            ])
            .update_column(repository_blob::Column::TouchedAt)
            .to_owned(),
        )
        .to_owned();
    for (repo_id, digest) in links {
        insert.values_panic([repo_id.into(), digest.into(), now.into(), now.into()]);
    }
    db.execute(&insert).await?;
    Ok(())
}

/// Refreshes the link of `digest` to `repo_id` (a HEAD or GET confirmed it); false when
/// the blob or the link is gone (collected meanwhile).
pub(crate) async fn touch(
    db: &impl ConnectionTrait,
    repo_id: i64,
    digest: &str,
    now: i64,
) -> Result<bool> {
    if lock_linked_blobs(db, repo_id, [digest.to_owned()])
        .await?
        .is_empty()
    {
        return Ok(false);
    }
    let update = Query::update()
        .table(repository_blob::Entity)
        .value(repository_blob::Column::TouchedAt, now)
        .and_where(Expr::col(repository_blob::Column::RepositoryId).eq(repo_id))
        .and_where(Expr::col(repository_blob::Column::Digest).eq(digest))
        .to_owned();
    Ok(db.execute(&update).await?.rows_affected() > 0)
}
