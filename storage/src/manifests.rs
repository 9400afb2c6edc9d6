//! Manifests, tags and referrers: storing and reading them (a pushed manifest is
//! parsed by `berth_oci::manifest`, its references read by `manifest_refs`).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use berth_oci::manifest::Manifest;
use sea_orm::sea_query::{Expr, Func, OnConflict, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter,
    QueryOrder, QuerySelect,
};
use serde::Serialize;

use crate::digest::{Algorithm, Digest};
use crate::entity::{manifest, manifest_blob, manifest_child, now_millis, repository, tag};
use crate::error::{Result, StorageError};
use crate::events::{Action, Target};
use crate::manifest_refs::ManifestRefs;
use crate::names::validate_tag;
use crate::repos::{ensure_repository, Page};
use crate::Storage;

pub use berth_oci::Reference;

#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub content: bytes::Bytes,
}

#[derive(Debug)]
pub struct PutManifest {
    pub digest: Digest,
    pub subject: Option<Digest>,
    pub tags: Vec<String>,
}

/// A descriptor in a referrers response.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Referrer {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<HashMap<String, String>>,
}

#[derive(FromQueryResult)]
struct ReferrerRow {
    id: i64,
    media_type: String,
    digest: String,
    size: i64,
    artifact_type: Option<String>,
    /// How long its annotations are, in characters (read only within
    /// [`REFERRER_ANNOTATION_CHARS`]).
    annotations_len: Option<i64>,
}

/// Referrers listed for one subject at most (the oldest): anyone may push manifests
/// naming any subject, and the list is one answer.
pub const MAX_REFERRERS: u64 = 10_000;
/// Annotations carried in one referrers list at most, counted in characters (as
/// `length()` counts on both databases; at most 4 bytes each): each referrer's may be
/// up to a manifest's size. Referrers past it are listed without theirs.
pub const REFERRER_ANNOTATION_CHARS: i64 = 4 * 1024 * 1024;

impl Storage {
    /// Stores a manifest after checking it parses and that everything it references is
    /// in the repository, then points `reference` (if a tag) and `extra_tags` at it.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &Reference,
        content_type: Option<&str>,
        body: &[u8],
        extra_tags: &[String],
    ) -> Result<PutManifest> {
        if body.len() as u64 > self.max_manifest_bytes {
            return Err(StorageError::ManifestTooLarge {
                size: body.len() as u64,
                limit: self.max_manifest_bytes,
            });
        }
        let mut tags: Vec<String> = Vec::new();
        let digest = match reference {
            Reference::Digest(expected) => {
                let actual = Digest::of(expected.algorithm(), body);
                if &actual != expected {
                    return Err(StorageError::DigestInvalid(format!(
                        "manifest has digest {actual}, not {expected}"
                    )));
                }
                actual
            }
            Reference::Tag(t) => {
                tags.push(t.clone());
                Digest::of(Algorithm::Sha256, body)
            }
        };
        for t in extra_tags {
            validate_tag(t)?;
            if !tags.contains(t) {
                tags.push(t.clone());
            }
        }
        let parsed = ManifestRefs::of(&Manifest::parse_pushed(content_type, body)?)?;
        let targets = || manifest_targets(repo, &digest, &parsed, body, &tags);
        if self.already_stored(repo, &digest, &tags).await?
            && (!tags.is_empty() || self.repushed_untagged(repo, &digest).await?)
        {
            // Re-pushing what is already there (CI does it all the time) writes nothing
            // (its event is buffered); a tag found there may have been pushed elsewhere a
            // moment ago and still be settling, so this answer waits as that one does.
            let events = self.events_for(Action::Push, repo, targets()).await?;
            self.buffer_events(events).await?;
            if !tags.is_empty() {
                self.settle_change().await;
            }
            return Ok(PutManifest {
                digest,
                subject: parsed.subject,
                tags,
            });
        }
        self.ensure_room()?;
        self.check_quota(repo, crate::quotas::Adding::Blobs(&parsed.blobs))
            .await?;
        let platform = self
            .image_platform(repo, parsed.image_config.as_ref())
            .await?;
        let events = self
            .events_for_change(Action::Push, repo, targets())
            .await?;
        let txn = self.write().await?;
        let repo_id = ensure_repository(&*txn, repo, self.private_by_default).await?;
        check_references(&*txn, repo_id, &parsed).await?;
        crate::tag_rules::check_tags_mutable(&*txn, repo, repo_id, &tags, Some(digest.as_str()))
            .await?;
        let manifest_id =
            insert_manifest(&*txn, repo_id, &digest, &parsed, &platform, body).await?;
        record_push(&*txn, repo_id, manifest_id, &tags).await?;
        self.commit_with_events(txn, &events).await?;
        self.cache.invalidate(repo);
        if !tags.is_empty() {
            self.settle_change().await;
        }
        Ok(PutManifest {
            digest,
            subject: parsed.subject,
            tags,
        })
    }

    /// A manifest pushed again by digest alone is pushed now, as far as the untagged
    /// policy goes (the push's 201 must not be followed by its collection): its push
    /// time is renewed, under the row's lock. False when it is gone (collected
    /// meanwhile): then it is stored again. Writes nothing without the policy.
    async fn repushed_untagged(&self, repo: &str, digest: &Digest) -> Result<bool> {
        if !self.gc.deletes_untagged() {
            return Ok(true);
        }
        let repo_id = self.repository_id(repo).await?;
        let txn = self.write().await?;
        let renewed = manifest::Entity::update_many()
            .col_expr(manifest::Column::CreatedAt, Expr::value(now_millis()))
            .filter(manifest::Column::RepositoryId.eq(repo_id))
            .filter(manifest::Column::Digest.eq(digest.as_str()))
            .exec(&*txn)
            .await?;
        txn.commit().await?;
        self.cache.invalidate(repo);
        Ok(renewed.rows_affected > 0)
    }

    /// Is the manifest `digest` in `repo`, with every one of `tags` already on it?
    async fn already_stored(&self, repo: &str, digest: &Digest, tags: &[String]) -> Result<bool> {
        let mut references = vec![Reference::Digest(digest.clone())];
        references.extend(tags.iter().cloned().map(Reference::Tag));
        for reference in &references {
            match self.manifest(repo, reference).await {
                Ok(m) if &m.digest == digest => {}
                Ok(_) | Err(StorageError::NameUnknown(_) | StorageError::ManifestUnknown(_)) => {
                    return Ok(false)
                }
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    pub async fn manifest(&self, repo: &str, reference: &Reference) -> Result<Arc<StoredManifest>> {
        let key = reference_text(reference);
        self.confirm_cache(repo).await?;
        if let Some(hit) = self.cache.manifest(repo, &key) {
            return Ok(hit);
        }
        let ticket = self.cache.ticket(repo);
        let repo_id = self.repository_id(repo).await?;
        let row = find_manifest(&self.db, repo_id, reference)
            .await?
            .ok_or_else(|| StorageError::ManifestUnknown(key.clone()))?;
        let manifest = Arc::new(StoredManifest {
            digest: row.digest.parse()?,
            media_type: row.media_type,
            content: row.content.into(),
        });
        self.cache
            .put_manifest(repo, ticket, &key, manifest.clone());
        Ok(manifest)
    }

    /// By digest: removes the manifest and every tag on it. By tag: removes the tag only.
    /// Deletes a tag, or a manifest by digest (with its tags), recording it in the
    /// audit log as this storage's actor's (see [`Storage::by`]) in the same
    /// transaction; `via` says through what (the registry API, the web UI).
    pub async fn delete_manifest(
        &self,
        repo: &str,
        reference: &Reference,
        via: &str,
    ) -> Result<()> {
        self.remove_manifest(repo, reference, Some(via)).await
    }

    /// [`Storage::delete_manifest`], audited only with `audit_via` (the registry's own
    /// removals, such as a proxy cache's evictions, are not someone's action).
    pub(crate) async fn remove_manifest(
        &self,
        repo: &str,
        reference: &Reference,
        audit_via: Option<&str>,
    ) -> Result<()> {
        let repo_id = self.repository_id(repo).await?;
        let target = match reference {
            Reference::Tag(t) => Target::named(repo, None, Some(t)),
            Reference::Digest(d) => Target::named(repo, Some(d.as_str()), None),
        };
        let events = self
            .events_for_change(Action::Delete, repo, [target])
            .await?;
        let txn = self.write().await?;
        // The repository's row first, as a push takes it (its push time) before the
        // tags, and a pull count before the manifests: taken only at the end (its
        // platforms), a delete and a pull count of the same image deadlock on
        // PostgreSQL.
        let _: Option<i64> = repository::Entity::find_by_id(repo_id)
            .select_only()
            .column(repository::Column::Id)
            .lock_exclusive()
            .into_tuple()
            .one(&*txn)
            .await?;
        crate::tag_rules::check_deletable(&*txn, repo, repo_id, reference).await?;
        let deleted = match reference {
            Reference::Tag(t) => {
                tag::Entity::delete_many()
                    .filter(tag::Column::RepositoryId.eq(repo_id))
                    .filter(tag::Column::Name.eq(t.as_str()))
                    .exec(&*txn)
                    .await?
            }
            Reference::Digest(d) => {
                manifest::Entity::delete_many()
                    .filter(manifest::Column::RepositoryId.eq(repo_id))
                    .filter(manifest::Column::Digest.eq(d.as_str()))
                    .exec(&*txn)
                    .await?
            }
        };
        if deleted.rows_affected == 0 {
            self.cache.invalidate(repo);
            return Err(StorageError::ManifestUnknown(reference_text(reference)));
        }
        // Only once something went: a delete of what is not there costs no refresh.
        crate::platforms::refresh(&*txn, repo_id).await?;
        if let Some(via) = audit_via {
            let (action, target) = deletion_audited_as(repo, reference);
            self.audited(&*txn, action, &target, Some(via.to_owned()))
                .await?;
        }
        self.commit_with_events(txn, &events).await?;
        self.cache.invalidate(repo);
        self.settle_change().await;
        Ok(())
    }

    /// Tags of `repo` in byte order after `last`, at most `n`. The whole sorted list is
    /// cached per repository, so paging through it is a slice, not a query.
    pub async fn tags(&self, repo: &str, n: u64, last: Option<&str>) -> Result<Page> {
        self.confirm_cache(repo).await?;
        let all = match self.cache.tags(repo) {
            Some(hit) => hit,
            None => {
                let ticket = self.cache.ticket(repo);
                let repo_id = self.repository_id(repo).await?;
                let mut names: Vec<String> = tag::Entity::find()
                    .select_only()
                    .column(tag::Column::Name)
                    .filter(tag::Column::RepositoryId.eq(repo_id))
                    .into_tuple()
                    .all(&self.db)
                    .await?;
                names.sort_unstable();
                let names = Arc::new(names);
                self.cache.put_tags(repo, ticket, names.clone());
                names
            }
        };
        let start = last.map_or(0, |l| all.partition_point(|t| t.as_str() <= l));
        let end = all
            .len()
            .min(start.saturating_add(usize::try_from(n).unwrap_or(usize::MAX)));
        Ok(Page {
            items: all[start..end].to_vec(),
            more: end < all.len(),
        })
    }

    /// Manifests in `repo` whose subject is `digest`, optionally of one artifact type:
    /// the oldest [`MAX_REFERRERS`], with their annotations as far as
    /// [`REFERRER_ANNOTATION_CHARS`] reach.
    pub async fn referrers(
        &self,
        repo: &str,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        let Some(repo_id) = crate::repos::find_repository(&self.db, repo).await? else {
            return Ok(Vec::new());
        };
        let mut q = manifest::Entity::find()
            .select_only()
            .columns([
                manifest::Column::Id,
                manifest::Column::MediaType,
                manifest::Column::Digest,
                manifest::Column::Size,
                manifest::Column::ArtifactType,
            ])
            .column_as(
                // BIGINT: PostgreSQL's length() is an INT4.
                Expr::expr(Func::cast_as(
                    Func::cust("length").arg(Expr::col(manifest::Column::Annotations)),
                    sea_orm::sea_query::Alias::new("BIGINT"),
                )),
                "annotations_len",
            )
            .filter(manifest::Column::RepositoryId.eq(repo_id))
            .filter(manifest::Column::Subject.eq(digest.as_str()));
        if let Some(t) = artifact_type {
            q = q.filter(manifest::Column::ArtifactType.eq(t));
        }
        let rows: Vec<ReferrerRow> = q
            .order_by_asc(manifest::Column::Id)
            .limit(MAX_REFERRERS)
            .into_model()
            .all(&self.db)
            .await?;
        // The annotations of those that fit, read in one query.
        let mut budget = REFERRER_ANNOTATION_CHARS;
        let carried: Vec<i64> = rows
            .iter()
            .filter(|row| {
                let len = row.annotations_len.unwrap_or(0);
                let fits = len > 0 && len <= budget;
                if fits {
                    budget -= len;
                }
                fits
            })
            .map(|row| row.id)
            .collect();
        let mut annotations: HashMap<i64, String> = match carried.is_empty() {
            true => HashMap::new(),
            false => manifest::Entity::find()
                .select_only()
                .columns([manifest::Column::Id, manifest::Column::Annotations])
                .filter(manifest::Column::Id.is_in(carried))
                .into_tuple::<(i64, Option<String>)>()
                .all(&self.db)
                .await?
                .into_iter()
                .filter_map(|(id, a)| a.map(|a| (id, a)))
                .collect(),
        };
        Ok(rows
            .into_iter()
            .map(|row| Referrer {
                media_type: row.media_type,
                digest: row.digest,
                size: row.size as u64,
                artifact_type: row.artifact_type,
                annotations: annotations
                    .remove(&row.id)
                    .and_then(|a| serde_json::from_str(&a).ok()),
            })
            .collect())
    }
}

/// A manifest push's event targets: one per tag, or one without a tag.
fn manifest_targets(
    repo: &str,
    digest: &Digest,
    parsed: &ManifestRefs,
    body: &[u8],
    tags: &[String],
) -> Vec<Target> {
    let target = |tag: Option<&str>| {
        let size = body.len() as u64;
        Target::manifest(repo, digest.as_str(), &parsed.media_type, size, tag)
    };
    match tags.is_empty() {
        true => vec![target(None)],
        false => tags.iter().map(|t| target(Some(t))).collect(),
    }
}

/// How the audit log names deleting `reference` in `repo`: its action and target
/// (`repo:tag`, `repo@digest`), whether it was done or refused.
pub fn deletion_audited_as(repo: &str, reference: &Reference) -> (crate::audit::Action, String) {
    match reference {
        Reference::Tag(t) => (crate::audit::Action::TagDeleted, format!("{repo}:{t}")),
        Reference::Digest(d) => (crate::audit::Action::ManifestDeleted, format!("{repo}@{d}")),
    }
}

fn reference_text(reference: &Reference) -> String {
    match reference {
        Reference::Tag(t) => t.clone(),
        Reference::Digest(d) => d.to_string(),
    }
}

async fn find_manifest(
    db: &impl ConnectionTrait,
    repo_id: i64,
    reference: &Reference,
) -> Result<Option<manifest::Model>> {
    let q = manifest::Entity::find().filter(manifest::Column::RepositoryId.eq(repo_id));
    let q = match reference {
        Reference::Digest(d) => q.filter(manifest::Column::Digest.eq(d.as_str())),
        Reference::Tag(t) => q.filter(
            manifest::Column::Id.in_subquery(
                Query::select()
                    .column(tag::Column::ManifestId)
                    .from(tag::Entity)
                    .and_where(tag::Column::RepositoryId.eq(repo_id))
                    .and_where(tag::Column::Name.eq(t.as_str()))
                    .to_owned(),
            ),
        ),
    };
    Ok(q.one(db).await?)
}

pub(crate) async fn insert_manifest(
    db: &impl ConnectionTrait,
    repo_id: i64,
    digest: &Digest,
    parsed: &ManifestRefs,
    platform: &crate::platforms::Platform,
    body: &[u8],
) -> Result<i64> {
    // The row, inserted or already there, is share-locked until this push commits: the
    // untagged-manifest collector, which locks before it deletes, either waits for the
    // push (and then sees its tags) or deleted the row first (then it is inserted again).
    const ATTEMPTS: usize = 3;
    let mut found = None;
    for _ in 0..ATTEMPTS {
        manifest::Entity::insert(manifest::ActiveModel {
            repository_id: Set(repo_id),
            digest: Set(digest.to_string()),
            media_type: Set(parsed.media_type.clone()),
            artifact_type: Set(parsed.artifact_type.clone()),
            subject: Set(parsed.subject.as_ref().map(Digest::to_string)),
            annotations: Set(parsed
                .annotations
                .as_ref()
                .map(|a| serde_json::to_string(a).expect("annotations serialize"))),
            content: Set(body.to_vec()),
            size: Set(body.len() as i64),
            created_at: Set(now_millis()),
            os: Set(platform.os.clone()),
            architecture: Set(platform.architecture.clone()),
            variant: Set(platform.variant.clone()),
            image_size: Set(parsed.image_size),
            ..Default::default()
        })
        .on_conflict_do_nothing_on([manifest::Column::RepositoryId, manifest::Column::Digest])
        .exec(db)
        .await?;
        found = manifest::Entity::find()
            .select_only()
            .column(manifest::Column::Id)
            .filter(manifest::Column::RepositoryId.eq(repo_id))
            .filter(manifest::Column::Digest.eq(digest.as_str()))
            .lock_shared()
            .into_tuple()
            .one(db)
            .await?;
        if found.is_some() {
            break;
        }
    }
    let id: i64 = found.ok_or_else(|| StorageError::ManifestUnknown(digest.to_string()))?;
    if !parsed.blobs.is_empty() {
        manifest_blob::Entity::insert_many(parsed.blobs.iter().map(|d| {
            manifest_blob::ActiveModel {
                manifest_id: Set(id),
                digest: Set(d.to_string()),
            }
        }))
        .on_conflict_do_nothing()
        .exec(db)
        .await?;
    }
    if !parsed.children.is_empty() {
        manifest_child::Entity::insert_many(parsed.children.iter().map(|d| {
            manifest_child::ActiveModel {
                manifest_id: Set(id),
                child_digest: Set(d.to_string()),
            }
        }))
        .on_conflict_do_nothing()
        .exec(db)
        .await?;
    }
    Ok(id)
}

/// Records a push of `manifest_id` into `repo_id`: the push time, `tags` pointed at it,
/// and (when tags moved) the repository's platforms.
pub(crate) async fn record_push(
    db: &impl ConnectionTrait,
    repo_id: i64,
    manifest_id: i64,
    tags: &[String],
) -> Result<()> {
    let now = now_millis();
    repository::Entity::update_many()
        .col_expr(repository::Column::PushedAt, Expr::value(now))
        .filter(repository::Column::Id.eq(repo_id))
        .exec(db)
        .await?;
    for t in tags {
        tag::Entity::insert(tag::ActiveModel {
            repository_id: Set(repo_id),
            name: Set(t.clone()),
            manifest_id: Set(manifest_id),
            updated_at: Set(now),
            ..Default::default()
        })
        .on_conflict(
            OnConflict::columns([tag::Column::RepositoryId, tag::Column::Name])
                .update_columns([tag::Column::ManifestId, tag::Column::UpdatedAt])
                .to_owned(),
        )
        .exec(db)
        .await?;
    }
    if !tags.is_empty() {
        crate::platforms::refresh(db, repo_id).await?;
    }
    Ok(())
}

/// Every blob must be linked to the repository and every child manifest stored in it.
async fn check_references(
    db: &impl ConnectionTrait,
    repo_id: i64,
    parsed: &ManifestRefs,
) -> Result<()> {
    let wanted = |ds: &[Digest]| ds.iter().map(|d| d.to_string()).collect::<BTreeSet<_>>();
    let blobs = wanted(&parsed.blobs);
    if !blobs.is_empty() {
        // Locked until the manifest's references are committed (see `liveness`).
        let have = crate::liveness::lock_linked_blobs(db, repo_id, blobs.iter().cloned()).await?;
        if let Some(missing) = blobs.difference(&have).next() {
            return Err(StorageError::ManifestBlobUnknown {
                kind: "blob",
                digest: missing.parse()?,
            });
        }
    }
    let children = wanted(&parsed.children);
    if !children.is_empty() {
        let have: BTreeSet<String> = manifest::Entity::find()
            .select_only()
            .column(manifest::Column::Digest)
            .filter(manifest::Column::RepositoryId.eq(repo_id))
            .filter(manifest::Column::Digest.is_in(children.iter().cloned()))
            // Locked like blobs, against the untagged-manifest collector.
            .lock_shared()
            .into_tuple::<String>()
            .all(db)
            .await?
            .into_iter()
            .collect();
        if let Some(missing) = children.difference(&have).next() {
            return Err(StorageError::ManifestBlobUnknown {
                kind: "manifest",
                digest: missing.parse()?,
            });
        }
    }
    Ok(())
}
