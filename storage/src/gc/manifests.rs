//! Untagged manifests, by the `delete_untagged_after` policy: no tag, listed by no
//! index of their repository, older than the policy's age, not pulled within the
//! grace, and not a referrer of a manifest that still exists. Their referrers
//! (signatures, SBOMs) that carry no tag of their own go with them. An index goes
//! first and its images in the next pass, so nothing an index lists is ever missing.

use std::collections::HashSet;

use sea_orm::sea_query::{
    Alias, Expr, ExprTrait, JoinType, LockBehavior, LockType, Query, SelectStatement,
};
use sea_orm::{ConnectionTrait, FromQueryResult};

use super::lease::Lease;
use super::GcReport;
use crate::db::query_as;
use crate::entity::{manifest, manifest_child, now_millis, tag};
use crate::error::Result;
use crate::liveness;
use crate::Storage;

const PAGE: u64 = 500;

#[derive(FromQueryResult)]
struct Row {
    id: i64,
}

/// Deletes (or, dry, counts) the untagged manifests the policy takes, except those in
/// `taken` (retention's, in a dry run).
pub(super) async fn collect(
    storage: &Storage,
    lease: &Lease,
    after_ms: i64,
    taken: &HashSet<i64>,
    report: &mut GcReport,
) -> Result<()> {
    let now = now_millis();
    let rule = Rule {
        created_before: now - after_ms,
        pulled_before: now - storage.gc.grace_ms,
    };
    let mut after = 0i64;
    loop {
        lease.renew(storage).await?;
        let mut page = Query::select();
        page.column((m(), manifest::Column::Id))
            .from_as(manifest::Entity, m())
            .and_where(Expr::col((m(), manifest::Column::Id)).gt(after))
            .order_by((m(), manifest::Column::Id), sea_orm::Order::Asc)
            .limit(PAGE);
        rule.apply(&mut page);
        let ids: Vec<i64> = query_as::<Row>(&storage.db, &page)
            .await?
            .into_iter()
            .map(|r| r.id)
            .collect();
        let Some(&last) = ids.last() else {
            return Ok(());
        };
        after = last;
        if report.dry_run {
            report.manifests += ids.iter().filter(|id| !taken.contains(id)).count() as u64;
            report.manifests += dry_referrers(storage, &ids, taken).await?;
            continue;
        }
        let page = super::retry_deadlocks(|| async {
            let mut page = GcReport::default();
            delete_page(storage, &rule, ids.clone(), &mut page).await?;
            Ok(page)
        })
        .await?;
        report.add_page(&page);
    }
}

/// The manifest being judged, in every query here.
fn m() -> Alias {
    Alias::new("m")
}

struct Rule {
    created_before: i64,
    pulled_before: i64,
}

impl Rule {
    /// Narrows a query over manifests `m` to those the policy deletes.
    fn apply(&self, query: &mut SelectStatement) {
        let tagged = Query::select()
            .expr(Expr::val(1))
            .from(tag::Entity)
            .and_where(
                Expr::col((tag::Entity, tag::Column::ManifestId))
                    .equals((m(), manifest::Column::Id)),
            )
            .to_owned();
        let parent = Alias::new("parent");
        let listed = Query::select()
            .expr(Expr::val(1))
            .from(manifest_child::Entity)
            .join_as(
                JoinType::InnerJoin,
                manifest::Entity,
                parent.clone(),
                Expr::col((parent.clone(), manifest::Column::Id))
                    .equals((manifest_child::Entity, manifest_child::Column::ManifestId)),
            )
            .and_where(
                Expr::col((manifest_child::Entity, manifest_child::Column::ChildDigest))
                    .equals((m(), manifest::Column::Digest)),
            )
            .and_where(
                Expr::col((parent, manifest::Column::RepositoryId))
                    .equals((m(), manifest::Column::RepositoryId)),
            )
            .to_owned();
        let subject = Alias::new("subject_manifest");
        let subject_exists = Query::select()
            .expr(Expr::val(1))
            .from_as(manifest::Entity, subject.clone())
            .and_where(
                Expr::col((subject.clone(), manifest::Column::RepositoryId))
                    .equals((m(), manifest::Column::RepositoryId)),
            )
            .and_where(
                Expr::col((subject, manifest::Column::Digest))
                    .equals((m(), manifest::Column::Subject)),
            )
            .to_owned();
        query
            .and_where(Expr::col((m(), manifest::Column::CreatedAt)).lt(self.created_before))
            .and_where(
                Expr::col((m(), manifest::Column::LastPulledAt))
                    .is_null()
                    .or(Expr::col((m(), manifest::Column::LastPulledAt)).lt(self.pulled_before)),
            )
            .and_where(Expr::exists(tagged).not())
            .and_where(Expr::exists(listed).not())
            .and_where(Expr::exists(subject_exists).not());
    }
}

/// Locks, re-checks and deletes one page of manifests with their untagged referrers;
/// returns how many manifests went.
async fn delete_page(
    storage: &Storage,
    rule: &Rule,
    ids: Vec<i64>,
    report: &mut GcReport,
) -> Result<u64> {
    let txn = storage.write().await?;
    let locked = liveness::lock_manifests_to_delete(&*txn, ids.iter().copied()).await?;
    report.skipped += (ids.len() - locked.len()) as u64;
    if locked.is_empty() {
        return Ok(0);
    }
    let mut recheck = Query::select();
    recheck
        .column((m(), manifest::Column::Id))
        .from_as(manifest::Entity, m())
        .and_where(Expr::col((m(), manifest::Column::Id)).is_in(locked));
    rule.apply(&mut recheck);
    let mut doomed: HashSet<i64> = query_as::<Row>(&*txn, &recheck)
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect();
    if doomed.is_empty() {
        return Ok(0);
    }
    // Their referrers with no tag of their own go with them.
    let referrers = untagged_referrers(doomed.iter().copied())
        .lock_with_tables_behavior(LockType::Update, [m()], LockBehavior::SkipLocked)
        .to_owned();
    doomed.extend(
        query_as::<Row>(&*txn, &referrers)
            .await?
            .into_iter()
            .map(|r| r.id),
    );
    let delete = Query::delete()
        .from_table(manifest::Entity)
        .and_where(Expr::col(manifest::Column::Id).is_in(doomed.iter().copied()))
        .to_owned();
    let deleted = txn.execute(&delete).await?.rows_affected();
    crate::invalidations::bump(&*txn).await?;
    txn.commit().await?;
    storage.cache.invalidate_all();
    report.manifests += deleted;
    Ok(deleted)
}

/// Untagged manifests whose subject is one of `subjects` (in its repository).
fn untagged_referrers(subjects: impl IntoIterator<Item = i64>) -> SelectStatement {
    let subject = Alias::new("subject_manifest");
    let tagged = Query::select()
        .expr(Expr::val(1))
        .from(tag::Entity)
        .and_where(
            Expr::col((tag::Entity, tag::Column::ManifestId)).equals((m(), manifest::Column::Id)),
        )
        .to_owned();
    Query::select()
        .column((m(), manifest::Column::Id))
        .from_as(manifest::Entity, m())
        .join_as(
            JoinType::InnerJoin,
            manifest::Entity,
            subject.clone(),
            Expr::col((subject.clone(), manifest::Column::RepositoryId))
                .equals((m(), manifest::Column::RepositoryId))
                .and(
                    Expr::col((subject.clone(), manifest::Column::Digest))
                        .equals((m(), manifest::Column::Subject)),
                ),
        )
        .and_where(Expr::col((subject, manifest::Column::Id)).is_in(subjects))
        .and_where(Expr::exists(tagged).not())
        .to_owned()
}

/// How many referrers a dry run's page takes with it (outside `taken`).
async fn dry_referrers(storage: &Storage, ids: &[i64], taken: &HashSet<i64>) -> Result<u64> {
    let subjects = ids.iter().copied().filter(|id| !taken.contains(id));
    let rows = query_as::<Row>(&storage.db, &untagged_referrers(subjects)).await?;
    Ok(rows.iter().filter(|r| !taken.contains(&r.id)).count() as u64)
}
