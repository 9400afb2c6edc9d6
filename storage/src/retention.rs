//! Retention policies: which tags of a repository, or of every repository of a
//! namespace, are deleted on schedule (each garbage collection pass), with the
//! manifests only they kept (an index's images, untagged signatures and SBOMs
//! included). A repository's own policy takes precedence over its namespace's.
//!
//! A tag goes when every condition the policy sets lets it go: it is not among the
//! `keep_last` most recently pushed, it was not pushed for `unpushed_for`, it was not
//! pulled for `unpulled_for` (a tag never pulled counts from its push). A tag matching
//! `keep_pattern` or an immutable tag rule always stays. A preview computes exactly
//! what a run would delete, and the bytes that deleting it frees.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use sea_orm::sea_query::{Cond, Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter,
    QueryOrder, QuerySelect,
};
use serde::Serialize;

use crate::audit::Action;
use crate::entity::{blob, manifest, manifest_blob, manifest_child, now_millis, repository};
use crate::entity::{retention_policy as policy, tag};
use crate::error::{Result, StorageError};
use crate::liveness;
use crate::quotas::sum_as_bigint;
use crate::tag_rules::{protecting, validate_pattern, Scope};
use crate::Storage;

/// A retention policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionPolicy {
    /// `acme/app`, or `acme/*` for every repository of namespace `acme`.
    pub scope: String,
    pub keep_last: Option<u32>,
    /// A glob over tag names (as in immutable tag rules): matching tags always stay.
    pub keep_pattern: Option<String>,
    pub unpushed_for: Option<Duration>,
    pub unpulled_for: Option<Duration>,
}

/// A tag a policy deletes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DoomedTag {
    pub repository: String,
    pub tag: String,
    pub digest: String,
    /// Unix milliseconds.
    pub pushed_at: i64,
    pub last_pulled_at: Option<i64>,
}

/// What applying policies deletes (or, previewed, would delete).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RetentionPlan {
    pub tags: Vec<DoomedTag>,
    /// Manifests that go with them, as `repository@digest`.
    pub manifests: Vec<String>,
    /// Bytes of the blobs only those manifests reference (garbage collection frees
    /// them after its grace).
    pub freed_bytes: u64,
    /// The manifests' ids (for garbage collection's own count).
    #[serde(skip)]
    pub(crate) manifest_ids: Vec<i64>,
}

/// One repository's share of a plan.
struct RepoPlan {
    repo_id: i64,
    repo: String,
    tags: Vec<TagRow>,
    manifests: Vec<(i64, String)>,
}

#[derive(FromQueryResult, Clone)]
struct TagRow {
    name: String,
    manifest_id: i64,
    updated_at: i64,
    last_pulled_at: Option<i64>,
}

/// A tag and its rank (0: the most recently pushed).
type Ranked<'t> = (usize, &'t TagRow);

#[derive(FromQueryResult)]
struct ManifestRow {
    id: i64,
    digest: String,
    subject: Option<String>,
}

impl RetentionPolicy {
    /// The policy in one line, for the audit log.
    fn describe(&self) -> String {
        let text = |d: Duration| humantime::format_duration(d).to_string();
        let mut parts = Vec::new();
        if let Some(n) = self.keep_last {
            parts.push(format!("keep_last={n}"));
        }
        if let Some(p) = &self.keep_pattern {
            parts.push(format!("keep_pattern={p}"));
        }
        if let Some(d) = self.unpushed_for {
            parts.push(format!("unpushed_for={}", text(d)));
        }
        if let Some(d) = self.unpulled_for {
            parts.push(format!("unpulled_for={}", text(d)));
        }
        format!("set {}", parts.join(" "))
    }

    fn check(&self) -> Result<()> {
        Scope::parse(&self.scope)?;
        if let Some(p) = &self.keep_pattern {
            validate_pattern(p)?;
        }
        let invalid = |why: &str| Err(StorageError::TagRuleInvalid(why.to_owned()));
        if self.keep_last == Some(0) {
            return invalid("keep_last must be at least 1");
        }
        if self.keep_last.is_none() && self.unpushed_for.is_none() && self.unpulled_for.is_none() {
            return invalid(
                "a retention policy needs keep_last, unpushed_for or unpulled_for (keep_pattern alone deletes nothing)",
            );
        }
        Ok(())
    }

    /// Whether the tag at position `rank` (0: most recently pushed) goes at `now`.
    fn deletes(&self, rank: usize, t: &TagRow, now: i64, keep: &dyn Fn(&str) -> bool) -> bool {
        let older = |d: Option<Duration>, at: i64| {
            d.is_none_or(|d| at < now.saturating_sub(d.as_millis() as i64))
        };
        !keep(&t.name)
            && self.keep_last.is_none_or(|n| rank >= n as usize)
            && older(self.unpushed_for, t.updated_at)
            && older(self.unpulled_for, t.last_pulled_at.unwrap_or(t.updated_at))
    }
}

fn millis(d: Option<Duration>) -> Option<i64> {
    d.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl From<policy::Model> for RetentionPolicy {
    fn from(m: policy::Model) -> RetentionPolicy {
        let duration =
            |ms: Option<i64>| ms.map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
        RetentionPolicy {
            scope: m.scope,
            keep_last: m.keep_last.map(|n| u32::try_from(n).unwrap_or(0)),
            keep_pattern: m.keep_pattern,
            unpushed_for: duration(m.unpushed_for_ms),
            unpulled_for: duration(m.unpulled_for_ms),
        }
    }
}

impl Storage {
    /// Sets the policy of its scope (replacing any).
    pub async fn set_retention(&self, p: &RetentionPolicy) -> Result<()> {
        p.check()?;
        let txn = self.write().await?;
        let exists = policy::Entity::find_by_id(p.scope.clone())
            .one(&*txn)
            .await?
            .is_some();
        if !exists {
            crate::tag_rules::refuse_beyond_limit(
                &*txn,
                policy::Entity,
                policy::Column::Scope,
                Scope::parse(&p.scope)?,
                "retention policies",
            )
            .await?;
        }
        policy::Entity::insert(policy::ActiveModel {
            scope: Set(p.scope.clone()),
            keep_last: Set(p.keep_last.map(|n| i32::try_from(n).unwrap_or(i32::MAX))),
            keep_pattern: Set(p.keep_pattern.clone()),
            unpushed_for_ms: Set(millis(p.unpushed_for)),
            unpulled_for_ms: Set(millis(p.unpulled_for)),
            updated_at: Set(now_millis()),
        })
        .on_conflict(
            OnConflict::column(policy::Column::Scope)
                .update_columns([
                    policy::Column::KeepLast,
                    policy::Column::KeepPattern,
                    policy::Column::UnpushedForMs,
                    policy::Column::UnpulledForMs,
                    policy::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec(&*txn)
        .await?;
        self.audited(
            &*txn,
            Action::RetentionChanged,
            &p.scope,
            Some(p.describe()),
        )
        .await?;
        Ok(txn.commit().await?)
    }

    /// Policies, all or one scope's.
    pub async fn retention_policies(&self, scope: Option<&str>) -> Result<Vec<RetentionPolicy>> {
        let mut q = policy::Entity::find();
        if let Some(scope) = scope {
            q = q.filter(policy::Column::Scope.eq(scope));
        }
        Ok(q.order_by_asc(policy::Column::Scope)
            .all(&self.db)
            .await?
            .into_iter()
            .map(RetentionPolicy::from)
            .collect())
    }

    /// Removes a scope's policy; false if it had none.
    pub async fn remove_retention(&self, scope: &str) -> Result<bool> {
        let txn = self.write().await?;
        let removed = policy::Entity::delete_by_id(scope).exec(&*txn).await?;
        if removed.rows_affected > 0 {
            self.audited(
                &*txn,
                Action::RetentionChanged,
                scope,
                Some("removed".into()),
            )
            .await?;
        }
        txn.commit().await?;
        Ok(removed.rows_affected > 0)
    }

    /// What the policies (all, or one scope's) would delete now.
    pub async fn retention_preview(&self, scope: Option<&str>) -> Result<RetentionPlan> {
        let plans = self.retention_plans(scope).await?;
        self.summarize(&plans).await
    }

    /// Applies the policies (all, or one scope's); returns what they deleted.
    pub async fn apply_retention(&self, scope: Option<&str>) -> Result<RetentionPlan> {
        let plans = self.retention_plans(scope).await?;
        let summary = self.summarize(&plans).await?;
        for plan in &plans {
            self.apply_repo_plan(plan).await?;
        }
        // One entry per run (a run may delete thousands of tags), with its counts.
        if !summary.tags.is_empty() || !summary.manifests.is_empty() {
            let entry = self
                .actor
                .entry(Action::RetentionRun, scope.unwrap_or("every policy"))
                .detail(format!(
                    "deleted {} tags and {} manifests",
                    summary.tags.len(),
                    summary.manifests.len()
                ));
            self.audit(entry).await;
        }
        // A run asked for through the API is answered once every replica serves it.
        if !plans.is_empty() {
            self.settle_change().await;
        }
        Ok(summary)
    }

    async fn retention_plans(&self, scope: Option<&str>) -> Result<Vec<RepoPlan>> {
        let policies = self.retention_policies(scope).await?;
        if policies.is_empty() {
            return Ok(Vec::new());
        }
        // A repository's own policy wins over its namespace's.
        let all = self.retention_policies(None).await?;
        let own: HashSet<&str> = all
            .iter()
            .filter(|p| !p.scope.ends_with("/*"))
            .map(|p| p.scope.as_str())
            .collect();
        let repos: Vec<(i64, String)> = repository::Entity::find()
            .select_only()
            .columns([repository::Column::Id, repository::Column::Name])
            .order_by_asc(repository::Column::Name)
            .into_tuple()
            .all(&self.db)
            .await?;
        let now = now_millis();
        let mut plans = Vec::new();
        for p in &policies {
            let covered: Vec<&(i64, String)> = match Scope::parse(&p.scope)? {
                Scope::Repository(name) => repos.iter().filter(|(_, n)| n == name).collect(),
                Scope::Namespace(ns) => repos
                    .iter()
                    .filter(|(_, n)| {
                        n.split_once('/').is_some_and(|(x, _)| x == ns) && !own.contains(n.as_str())
                    })
                    .collect(),
            };
            for (repo_id, repo) in covered {
                if let Some(plan) = self.repo_plan(p, *repo_id, repo, now).await? {
                    plans.push(plan);
                }
            }
        }
        Ok(plans)
    }

    async fn repo_plan(
        &self,
        p: &RetentionPolicy,
        repo_id: i64,
        repo: &str,
        now: i64,
    ) -> Result<Option<RepoPlan>> {
        let mut tags: Vec<TagRow> = tag::Entity::find()
            .select_only()
            .columns([
                tag::Column::Name,
                tag::Column::ManifestId,
                tag::Column::UpdatedAt,
                tag::Column::LastPulledAt,
            ])
            .filter(tag::Column::RepositoryId.eq(repo_id))
            .into_model()
            .all(&self.db)
            .await?;
        // Most recently pushed first; ties in name order, so plans are stable.
        tags.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then(a.name.cmp(&b.name)));
        let rules = self.immutable_rules(Some(repo)).await?;
        let immutable = protecting(&rules);
        let pattern = p.keep_pattern.as_ref().map(|pat| {
            let rule = crate::tag_rules::ImmutableRule {
                id: 0,
                scope: p.scope.clone(),
                pattern: pat.clone(),
                created_at: 0,
            };
            move |t: &str| rule.matches(t)
        });
        let keep = |t: &str| immutable(t).is_some() || pattern.as_ref().is_some_and(|m| m(t));
        let (doomed, kept): (Vec<Ranked>, Vec<Ranked>) = tags
            .iter()
            .enumerate()
            .partition(|(rank, t)| p.deletes(*rank, t, now, &keep));
        if doomed.is_empty() {
            return Ok(None);
        }
        let manifests: Vec<ManifestRow> = manifest::Entity::find()
            .select_only()
            .columns([
                manifest::Column::Id,
                manifest::Column::Digest,
                manifest::Column::Subject,
            ])
            .filter(manifest::Column::RepositoryId.eq(repo_id))
            .into_model()
            .all(&self.db)
            .await?;
        let children: Vec<(i64, String)> = manifest_child::Entity::find()
            .select_only()
            .columns([
                manifest_child::Column::ManifestId,
                manifest_child::Column::ChildDigest,
            ])
            .filter(manifest_child::Column::ManifestId.in_subquery(manifest_ids_of(repo_id)))
            .into_tuple()
            .all(&self.db)
            .await?;
        let doomed_manifests = doomed_manifests(&manifests, &children, &tags, &doomed, &kept);
        Ok(Some(RepoPlan {
            repo_id,
            repo: repo.to_owned(),
            tags: doomed.into_iter().map(|(_, t)| t.clone()).collect(),
            manifests: doomed_manifests,
        }))
    }

    async fn summarize(&self, plans: &[RepoPlan]) -> Result<RetentionPlan> {
        let mut summary = RetentionPlan::default();
        let mut ids = Vec::new();
        for plan in plans {
            let tag_digests = self
                .digests_of(plan.tags.iter().map(|t| t.manifest_id))
                .await?;
            for t in &plan.tags {
                summary.tags.push(DoomedTag {
                    repository: plan.repo.clone(),
                    tag: t.name.clone(),
                    digest: tag_digests.get(&t.manifest_id).cloned().unwrap_or_default(),
                    pushed_at: t.updated_at,
                    last_pulled_at: t.last_pulled_at,
                });
            }
            for (id, digest) in &plan.manifests {
                summary.manifests.push(format!("{}@{digest}", plan.repo));
                ids.push(*id);
            }
        }
        summary.freed_bytes = self.bytes_only_referenced_by(&ids).await?;
        summary.manifest_ids = ids;
        Ok(summary)
    }

    async fn digests_of(&self, ids: impl Iterator<Item = i64>) -> Result<HashMap<i64, String>> {
        let ids: HashSet<i64> = ids.collect();
        Ok(manifest::Entity::find()
            .select_only()
            .columns([manifest::Column::Id, manifest::Column::Digest])
            .filter(manifest::Column::Id.is_in(ids))
            .into_tuple()
            .all(&self.db)
            .await?
            .into_iter()
            .collect())
    }

    /// Bytes of the blobs that manifests `ids` reference and no other manifest does.
    async fn bytes_only_referenced_by(&self, ids: &[i64]) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let theirs = Query::select()
            .column(manifest_blob::Column::Digest)
            .from(manifest_blob::Entity)
            .and_where(Expr::col(manifest_blob::Column::ManifestId).is_in(ids.iter().copied()))
            .to_owned();
        let others = Query::select()
            .column(manifest_blob::Column::Digest)
            .from(manifest_blob::Entity)
            .and_where(Expr::col(manifest_blob::Column::ManifestId).is_not_in(ids.iter().copied()))
            .to_owned();
        let query = Query::select()
            .expr(sum_as_bigint(Expr::col(blob::Column::Size)))
            .from(blob::Entity)
            .and_where(Expr::col(blob::Column::Digest).in_subquery(theirs))
            .and_where(Expr::col(blob::Column::Digest).not_in_subquery(others))
            .to_owned();
        let row = self
            .db
            .query_one(&query)
            .await?
            .expect("an aggregate has a row");
        Ok(row.try_get_by_index::<i64>(0)? as u64)
    }

    /// Deletes one repository's doomed tags (each only if unchanged since planned) and
    /// then the planned manifests nothing tags or lists any more.
    async fn apply_repo_plan(&self, plan: &RepoPlan) -> Result<()> {
        let txn = self.write().await?;
        let mut unchanged = Cond::any();
        for t in &plan.tags {
            unchanged = unchanged.add(
                Cond::all()
                    .add(tag::Column::Name.eq(t.name.as_str()))
                    .add(tag::Column::ManifestId.eq(t.manifest_id))
                    .add(tag::Column::UpdatedAt.eq(t.updated_at)),
            );
        }
        tag::Entity::delete_many()
            .filter(tag::Column::RepositoryId.eq(plan.repo_id))
            .filter(unchanged)
            .exec(&*txn)
            .await?;
        if !plan.manifests.is_empty() {
            let planned: Vec<i64> = plan.manifests.iter().map(|(id, _)| *id).collect();
            // Locked, then re-checked (as garbage collection does): a manifest a push
            // tagged or listed meanwhile stays.
            let locked = liveness::lock_manifests_to_delete(&*txn, planned.iter().copied()).await?;
            let tagged = Query::select()
                .column(tag::Column::ManifestId)
                .from(tag::Entity)
                .to_owned();
            let listed_by_survivor = Query::select()
                .column((manifest::Entity, manifest::Column::Id))
                .from(manifest::Entity)
                .inner_join(
                    manifest_child::Entity,
                    Expr::col((manifest_child::Entity, manifest_child::Column::ChildDigest))
                        .equals((manifest::Entity, manifest::Column::Digest)),
                )
                .and_where(
                    Expr::col((manifest::Entity, manifest::Column::RepositoryId)).eq(plan.repo_id),
                )
                .and_where(
                    Expr::col((manifest_child::Entity, manifest_child::Column::ManifestId))
                        .is_not_in(planned.iter().copied()),
                )
                .to_owned();
            manifest::Entity::delete_many()
                .filter(manifest::Column::Id.is_in(locked))
                .filter(manifest::Column::Id.not_in_subquery(tagged))
                .filter(manifest::Column::Id.not_in_subquery(listed_by_survivor))
                .exec(&*txn)
                .await?;
        }
        crate::platforms::refresh(&*txn, plan.repo_id).await?;
        crate::invalidations::bump(&*txn).await?;
        txn.commit().await?;
        self.cache.invalidate(&plan.repo);
        Ok(())
    }
}

fn manifest_ids_of(repo_id: i64) -> sea_orm::sea_query::SelectStatement {
    Query::select()
        .column(manifest::Column::Id)
        .from(manifest::Entity)
        .and_where(Expr::col(manifest::Column::RepositoryId).eq(repo_id))
        .to_owned()
}

/// The manifests that go with the doomed tags: those every tag of which goes, and,
/// from them, the images an index lists and the referrers that carry no tag, unless a
/// surviving tag keeps them (directly, through an index, or as a referrer).
fn doomed_manifests(
    manifests: &[ManifestRow],
    children: &[(i64, String)],
    tags: &[TagRow],
    doomed: &[Ranked],
    kept: &[Ranked],
) -> Vec<(i64, String)> {
    let by_digest: HashMap<&str, i64> = manifests
        .iter()
        .map(|m| (m.digest.as_str(), m.id))
        .collect();
    let digest_of: HashMap<i64, &str> = manifests
        .iter()
        .map(|m| (m.id, m.digest.as_str()))
        .collect();
    let tagged: HashSet<i64> = tags.iter().map(|t| t.manifest_id).collect();
    let mut listed: HashMap<i64, Vec<i64>> = HashMap::new();
    for (parent, child) in children {
        if let Some(&c) = by_digest.get(child.as_str()) {
            listed.entry(*parent).or_default().push(c);
        }
    }
    let mut referrers: HashMap<&str, Vec<i64>> = HashMap::new();
    for m in manifests {
        if let Some(s) = &m.subject {
            referrers.entry(s.as_str()).or_default().push(m.id);
        }
    }
    // What surviving tags keep, transitively.
    let mut keep: HashSet<i64> = HashSet::new();
    let mut stack: Vec<i64> = kept.iter().map(|(_, t)| t.manifest_id).collect();
    while let Some(id) = stack.pop() {
        if keep.insert(id) {
            stack.extend(listed.get(&id).into_iter().flatten());
            if let Some(d) = digest_of.get(&id) {
                stack.extend(referrers.get(d).into_iter().flatten());
            }
        }
    }
    let mut doomed_ids: HashSet<i64> = HashSet::new();
    let mut stack: Vec<i64> = doomed.iter().map(|(_, t)| t.manifest_id).collect();
    while let Some(id) = stack.pop() {
        if keep.contains(&id) || !doomed_ids.insert(id) {
            continue;
        }
        let untagged = |m: &i64| !tagged.contains(m);
        stack.extend(
            listed
                .get(&id)
                .into_iter()
                .flatten()
                .filter(|m| untagged(m)),
        );
        if let Some(d) = digest_of.get(&id) {
            stack.extend(
                referrers
                    .get(d)
                    .into_iter()
                    .flatten()
                    .filter(|m| untagged(m)),
            );
        }
    }
    let mut out: Vec<(i64, String)> = doomed_ids
        .into_iter()
        .filter_map(|id| Some((id, digest_of.get(&id)?.to_string())))
        .collect();
    out.sort();
    out
}
