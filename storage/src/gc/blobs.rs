//! Unreferenced blobs: no manifest references them, and no repository's link to them
//! was touched (upload, mount, HEAD/GET) within the grace period.

use sea_orm::sea_query::{Expr, ExprTrait, IntoIden, Query, SelectStatement};
use sea_orm::{ConnectionTrait, FromQueryResult};

use super::lease::Lease;
use super::GcReport;
use crate::blobs::parse_segments;
use crate::db::query_as;
use crate::entity::{blob, blob_object, manifest_blob, now_millis, repository_blob};
use crate::error::Result;
use crate::liveness;
use crate::Storage;

/// Blobs decided and deleted per transaction: short enough that pushes waiting for
/// their turn to write (on SQLite) wait a few milliseconds, long enough that a
/// hundred thousand blobs take a few hundred transactions.
const PAGE: u64 = 500;

#[derive(FromQueryResult)]
struct Doomed {
    digest: String,
    size: i64,
    segments: String,
}

pub(super) async fn collect(storage: &Storage, lease: &Lease, report: &mut GcReport) -> Result<()> {
    let cutoff = now_millis() - storage.gc.grace_ms;
    let mut after = String::new();
    loop {
        lease.renew(storage).await?;
        let page = candidates(&after, cutoff);
        let candidates: Vec<Doomed> = query_as(&storage.db, &page).await?;
        let Some(last) = candidates.last() else {
            return Ok(());
        };
        after = last.digest.clone();
        if report.dry_run {
            report.blobs += candidates.len() as u64;
            report.blob_bytes += candidates.iter().map(|c| c.size as u64).sum::<u64>();
            continue;
        }
        let digests: Vec<String> = candidates.into_iter().map(|c| c.digest).collect();
        let page = super::retry_deadlocks(|| async {
            let mut page = GcReport::default();
            delete_page(storage, digests.clone(), cutoff, &mut page).await?;
            Ok(page)
        })
        .await?;
        report.add_page(&page);
    }
}

/// Garbage blobs after `after` in digest order, one page.
fn candidates(after: &str, cutoff: i64) -> SelectStatement {
    let mut query = Query::select();
    query
        .columns([
            blob::Column::Digest,
            blob::Column::Size,
            blob::Column::Segments,
        ])
        .from(blob::Entity)
        .and_where(Expr::col((blob::Entity, blob::Column::Digest)).gt(after))
        .order_by((blob::Entity, blob::Column::Digest), sea_orm::Order::Asc)
        .limit(PAGE);
    garbage(&mut query, cutoff);
    query
}

/// Narrows a query over `blobs` to garbage: created before `cutoff`, referenced by no
/// manifest, and no link touched since `cutoff`.
fn garbage(query: &mut SelectStatement, cutoff: i64) {
    let referenced = Query::select()
        .expr(Expr::val(1))
        .from(manifest_blob::Entity)
        .and_where(
            Expr::col((manifest_blob::Entity, manifest_blob::Column::Digest))
                .equals((blob::Entity, blob::Column::Digest)),
        )
        .to_owned();
    let fresh_link = Query::select()
        .expr(Expr::val(1))
        .from(repository_blob::Entity)
        .and_where(
            Expr::col((repository_blob::Entity, repository_blob::Column::Digest))
                .equals((blob::Entity, blob::Column::Digest)),
        )
        .and_where(
            Expr::col((repository_blob::Entity, repository_blob::Column::TouchedAt)).gte(cutoff),
        )
        .to_owned();
    query
        .and_where(Expr::col((blob::Entity, blob::Column::CreatedAt)).lt(cutoff))
        .and_where(Expr::exists(referenced).not())
        .and_where(Expr::exists(fresh_link).not());
}

/// Locks what it can of `digests`, re-checks them, and deletes the garbage among them
/// (rows, then after the commit their objects).
async fn delete_page(
    storage: &Storage,
    digests: Vec<String>,
    cutoff: i64,
    report: &mut GcReport,
) -> Result<()> {
    let txn = storage.write().await?;
    let locked = liveness::lock_blobs_to_delete(&*txn, digests.iter().cloned()).await?;
    report.skipped += (digests.len() - locked.len()) as u64;
    if locked.is_empty() {
        return Ok(());
    }
    // A new statement: it sees every reference committed before the locks were taken.
    let mut recheck = Query::select();
    recheck
        .columns([
            blob::Column::Digest,
            blob::Column::Size,
            blob::Column::Segments,
        ])
        .from(blob::Entity)
        .and_where(Expr::col((blob::Entity, blob::Column::Digest)).is_in(locked));
    garbage(&mut recheck, cutoff);
    let doomed: Vec<Doomed> = query_as(&*txn, &recheck).await?;
    crate::test_faults::gc_pause("blobs-decided").await;
    if doomed.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = doomed.iter().map(|d| d.digest.clone()).collect();
    for (table, column) in [
        (
            repository_blob::Entity.into_iden(),
            repository_blob::Column::Digest.into_iden(),
        ),
        (
            blob_object::Entity.into_iden(),
            blob_object::Column::Digest.into_iden(),
        ),
        (blob::Entity.into_iden(), blob::Column::Digest.into_iden()),
    ] {
        let delete = Query::delete()
            .from_table(table)
            .and_where(Expr::col(column).is_in(names.iter().cloned()))
            .to_owned();
        txn.execute(&delete).await?;
    }
    txn.commit().await?;
    storage.cache.invalidate_all();
    crate::test_faults::gc_pause("blobs-committed").await;
    let mut keys = Vec::new();
    for d in &doomed {
        keys.extend(
            parse_segments(&d.digest, &d.segments)?
                .into_iter()
                .map(|s| s.key),
        );
    }
    // A failure here leaves objects no row names: the orphan sweep takes them later.
    storage.objects.delete_keys(keys).await?;
    report.blobs += doomed.len() as u64;
    report.blob_bytes += doomed.iter().map(|d| d.size as u64).sum::<u64>();
    Ok(())
}
