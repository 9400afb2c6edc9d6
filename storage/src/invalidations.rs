//! Deletions outside the request path reaching the metadata cache of another process.
//!
//! Garbage collection and retention delete manifests and tags, and may run in a
//! `berthd gc` or `berthd repo retention run` beside a SQLite server — the one process
//! that caches metadata (see `cache`). Each such deletion bumps a counter in its own
//! transaction; the caching process reads the counter every [`WATCH_EVERY`] and drops
//! its cache when it moved, so a deleted manifest is served from cache for at most
//! that long. (Blob lookups need none of this: a cached blob whose link could be
//! collected is confirmed in the database before it is served; see `blobs`.)

use std::sync::Arc;
use std::time::Duration;

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection, EntityTrait};

use crate::cache::MetaCache;
use crate::entity::invalidation;
use crate::error::Result;

const NAME: &str = "metadata";
pub(crate) const WATCH_EVERY: Duration = Duration::from_secs(1);

/// Records a deletion of manifests or tags (call inside its transaction).
pub(crate) async fn bump(db: &impl ConnectionTrait) -> Result<()> {
    let upsert = Query::insert()
        .into_table(invalidation::Entity)
        .columns([invalidation::Column::Name, invalidation::Column::Generation])
        .values_panic([NAME.into(), 1i64.into()])
        .on_conflict(
            OnConflict::column(invalidation::Column::Name)
                .value(
                    invalidation::Column::Generation,
                    Expr::col((invalidation::Entity, invalidation::Column::Generation)).add(1),
                )
                .to_owned(),
        )
        .to_owned();
    db.execute(&upsert).await?;
    Ok(())
}

async fn generation(db: &DatabaseConnection) -> Result<i64> {
    Ok(invalidation::Entity::find_by_id(NAME)
        .one(db)
        .await?
        .map_or(0, |row| row.generation))
}

/// Drops `cache` whenever the counter moves, for as long as the runtime lives.
pub(crate) fn watch(db: DatabaseConnection, cache: Arc<MetaCache>) {
    tokio::spawn(async move {
        let mut seen = generation(&db).await.ok();
        let mut ticker = tokio::time::interval(WATCH_EVERY);
        loop {
            ticker.tick().await;
            match generation(&db).await {
                Ok(now) if Some(now) != seen => {
                    cache.invalidate_all();
                    seen = Some(now);
                }
                Ok(_) => {}
                // Unknown: drop the cache rather than risk serving a deletion.
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the invalidation counter");
                    cache.invalidate_all();
                    seen = None;
                }
            }
        }
    });
}
