//! Garbage collection's bookkeeping: when each repository's link to a blob was last
//! touched (uploaded, mounted, confirmed by a HEAD or GET), when manifests and tags
//! were last pulled, which objects each blob is made of (so objects no row names can
//! be found), the lease that lets one replica at a time collect, namespaces' storage
//! quotas, retention policies, and the counter that tells a caching process about
//! deletions made by another.

use sea_orm::ConnectionTrait;
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Blobs read per statement while filling `blob_objects`.
const BACKFILL_PAGE: u64 = 500;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table("repository_blobs")
                .add_column(big_integer("touched_at").default(0))
                .to_owned(),
        )
        .await?;
        m.exec_stmt(
            Query::update()
                .table("repository_blobs")
                .value("touched_at", Expr::col("created_at"))
                .to_owned(),
        )
        .await?;
        // Last pulls, for the untagged-manifest policy and retention (written with the
        // pull counts, see `pulls`).
        for table in ["manifests", "tags"] {
            m.alter_table(
                Table::alter()
                    .table(table)
                    .add_column(big_integer_null("last_pulled_at"))
                    .to_owned(),
            )
            .await?;
        }
        m.create_table(
            Table::create()
                .table("blob_objects")
                .col(text("key").primary_key())
                .col(text("digest"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_blob_objects_digest")
                .table("blob_objects")
                .col("digest")
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("leases")
                .col(text("name").primary_key())
                .col(text("holder"))
                .col(big_integer("expires_at"))
                .to_owned(),
        )
        .await?;
        // Storage quotas of namespaces (users and organizations), in bytes.
        m.create_table(
            Table::create()
                .table("quotas")
                .col(text("namespace").primary_key())
                .col(big_integer("bytes"))
                .to_owned(),
        )
        .await?;
        // Retention policies of repositories (`acme/app`) and namespaces (`acme/*`).
        m.create_table(
            Table::create()
                .table("retention_policies")
                .col(text("scope").primary_key())
                .col(integer_null("keep_last"))
                .col(text_null("keep_pattern"))
                .col(big_integer_null("unpushed_for_ms"))
                .col(big_integer_null("unpulled_for_ms"))
                .col(big_integer("updated_at"))
                .to_owned(),
        )
        .await?;
        // A counter bumped by every deletion of manifests and tags outside the request
        // path (garbage collection, retention), which may run in another process: a
        // SQLite server, the one process caching metadata, watches it to drop its cache.
        m.create_table(
            Table::create()
                .table("invalidations")
                .col(text("name").primary_key())
                .col(big_integer("generation"))
                .to_owned(),
        )
        .await?;
        backfill_blob_objects(m).await
    }
}

/// Names every existing blob's objects (their keys are in the blob's JSON segment list).
async fn backfill_blob_objects(m: &SchemaManager<'_>) -> Result<(), DbErr> {
    #[derive(serde::Deserialize)]
    struct Segment {
        key: String,
    }
    let db = m.get_connection();
    let mut after = String::new();
    loop {
        let page = Query::select()
            .columns(["digest", "segments"])
            .from("blobs")
            .and_where(Expr::col("digest").gt(after.as_str()))
            .order_by("digest", Order::Asc)
            .limit(BACKFILL_PAGE)
            .to_owned();
        let rows = db.query_all(&page).await?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = last.try_get_by_index(0)?;
        let mut insert = Query::insert()
            .into_table("blob_objects")
            .columns(["key", "digest"])
            .on_conflict(OnConflict::column("key").do_nothing().to_owned())
            .to_owned();
        let mut any = false;
        for row in &rows {
            let digest: String = row.try_get_by_index(0)?;
            let segments: String = row.try_get_by_index(1)?;
            let segments: Vec<Segment> = serde_json::from_str(&segments)
                .map_err(|e| DbErr::Custom(format!("segments of {digest}: {e}")))?;
            for s in segments {
                insert.values_panic([s.key.into(), digest.as_str().into()]);
                any = true;
            }
        }
        if any {
            db.execute(&insert).await?;
        }
    }
}
