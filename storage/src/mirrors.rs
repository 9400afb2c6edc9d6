//! What a pull-through proxy keeps: manifests fetched from an upstream registry, stored
//! as the upstream has them, and the eviction that holds a proxy's namespace to its
//! size limit.
//!
//! A cached manifest is stored without the references check a push gets: an upstream
//! image's layers, and an index's platform images, arrive only when a client asks for
//! them (and an upstream's content is verified by digest as it arrives instead).
//! Cached blobs go through [`Storage::put_blob`] like any other.

use sea_orm::sea_query::{Alias, Expr, ExprTrait, Func, JoinType, Order, Query};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};

use berth_oci::manifest::Manifest;

use crate::digest::{Algorithm, Digest};
use crate::entity::{manifest, manifest_blob, manifest_child, repository, repository_blob, tag};
use crate::error::{Result, StorageError};
use crate::manifest_refs::ManifestRefs;
use crate::manifests::Reference;
use crate::repos::{ensure_repository, name_under};
use crate::Storage;

/// How many eviction candidates one query lists.
const EVICTION_PAGE: u64 = 64;

impl Storage {
    /// Stores `body`, fetched from an upstream, in `repo` under its digest by
    /// `algorithm` (the one it was asked for by, or the upstream named: under
    /// another, it would never be found by its digest), and points `tag` at it.
    /// `public`: how the repository is listed.
    pub async fn cache_manifest(
        &self,
        repo: &str,
        tag: Option<&str>,
        content_type: Option<&str>,
        body: &[u8],
        algorithm: Algorithm,
        public: bool,
    ) -> Result<Digest> {
        if body.len() as u64 > self.max_manifest_bytes {
            return Err(StorageError::ManifestTooLarge {
                size: body.len() as u64,
                limit: self.max_manifest_bytes,
            });
        }
        let digest = Digest::of(algorithm, body);
        let parsed = ManifestRefs::of(&Manifest::parse_pushed(content_type, body)?)?;
        self.ensure_room()?;
        let platform = self
            .image_platform(repo, parsed.image_config.as_ref())
            .await?;
        let txn = self.write().await?;
        let repo_id = ensure_repository(&*txn, repo, !public).await?;
        // Listed as the proxy's access says, even when a blob fetched first made the
        // repository with the registry's default.
        repository::Entity::update_many()
            .col_expr(repository::Column::Private, Expr::value(!public))
            .filter(repository::Column::Id.eq(repo_id))
            .filter(repository::Column::Private.eq(public))
            .exec(&*txn)
            .await?;
        let manifest_id =
            crate::manifests::insert_manifest(&*txn, repo_id, &digest, &parsed, &platform, body)
                .await?;
        if let Some(t) = tag {
            crate::manifests::record_push(&*txn, repo_id, manifest_id, &[t.to_owned()]).await?;
        }
        txn.commit().await?;
        self.cache.invalidate(repo);
        if tag.is_some() {
            self.settle_change().await;
        }
        Ok(digest)
    }

    /// The size a manifest cached in `repo` gives the blob `digest` (its config, a
    /// layer, or an artifact's blob); `None` when no manifest there lists it.
    pub async fn listed_blob_size(&self, repo: &str, digest: &Digest) -> Result<Option<u64>> {
        let Some(repo_id) = crate::repos::find_repository(&self.db, repo).await? else {
            return Ok(None);
        };
        let listing = Query::select()
            .column(manifest_blob::Column::ManifestId)
            .from(manifest_blob::Entity)
            .and_where(manifest_blob::Column::Digest.eq(digest.as_str()))
            .to_owned();
        let content: Option<Vec<u8>> = manifest::Entity::find()
            .select_only()
            .column(manifest::Column::Content)
            .filter(manifest::Column::RepositoryId.eq(repo_id))
            .filter(manifest::Column::Id.in_subquery(listing))
            .into_tuple()
            .one(&self.db)
            .await?;
        let Some(content) = content else {
            return Ok(None);
        };
        let manifest: serde_json::Value = serde_json::from_slice(&content).unwrap_or_default();
        let descriptors = std::iter::once(&manifest["config"]).chain(
            ["layers", "blobs"]
                .iter()
                .filter_map(|key| manifest[*key].as_array())
                .flatten(),
        );
        Ok(descriptors
            .filter(|d| d["digest"].as_str() == Some(digest.as_str()))
            .find_map(|d| d["size"].as_u64()))
    }

    /// Whether any repository is named `namespace/…`.
    pub async fn has_repositories_under(&self, namespace: &str) -> Result<bool> {
        let found = repository::Entity::find()
            .select_only()
            .column(repository::Column::Id)
            .filter(name_under(repository_name(), namespace))
            .into_tuple::<i64>()
            .one(&self.db)
            .await?;
        Ok(found.is_some())
    }

    /// Lists every repository under `namespace/` as `public` says (a proxy's access
    /// rule, which may have changed since they were cached).
    pub async fn list_namespace_as(&self, namespace: &str, public: bool) -> Result<()> {
        let txn = self.write().await?;
        let changed = repository::Entity::update_many()
            .col_expr(repository::Column::Private, Expr::value(!public))
            .filter(name_under(repository_name(), namespace))
            .filter(repository::Column::Private.eq(public))
            .exec(&*txn)
            .await?;
        txn.commit().await?;
        if changed.rows_affected > 0 {
            self.cache.invalidate_all();
        }
        Ok(())
    }

    /// A repository under `namespace/` that holds `digest`, if any: a proxy links a
    /// layer its images share instead of fetching it again.
    pub async fn repository_with_blob(
        &self,
        namespace: &str,
        digest: &Digest,
    ) -> Result<Option<String>> {
        let (r, l) = (Alias::new("r"), Alias::new("l"));
        let query = Query::select()
            .column((r.clone(), repository::Column::Name))
            .from_as(repository_blob::Entity, l.clone())
            .join_as(
                JoinType::InnerJoin,
                repository::Entity,
                r.clone(),
                Expr::col((r.clone(), repository::Column::Id))
                    .equals((l.clone(), repository_blob::Column::RepositoryId)),
            )
            .and_where(Expr::col((l, repository_blob::Column::Digest)).eq(digest.as_str()))
            .and_where(name_under(
                Expr::col((r, repository::Column::Name)),
                namespace,
            ))
            .limit(1)
            .to_owned();
        match self.db.query_one(&query).await? {
            Some(row) => Ok(Some(row.try_get_by_index(0)?)),
            None => Ok(None),
        }
    }

    /// Deletes the least recently pulled images (tagged or not; an index with its
    /// platform images) of the repositories under `namespace/` until what their
    /// manifests reference is at most `max_bytes`. Their blobs go with the garbage
    /// collection of unreferenced blobs. Returns how many manifests were deleted.
    pub async fn evict_least_pulled(&self, namespace: &str, max_bytes: u64) -> Result<u64> {
        let mut evicted = 0;
        let mut skipped: Vec<i64> = Vec::new();
        while self.namespace_usage(namespace).await?.bytes > max_bytes {
            let candidates = self.eviction_candidates(namespace, &skipped).await?;
            if candidates.is_empty() {
                break;
            }
            for (id, repo, digest) in candidates {
                if self.namespace_usage(namespace).await?.bytes <= max_bytes {
                    self.announce_eviction(evicted).await?;
                    return Ok(evicted);
                }
                match self.evict_image(id, &repo, &digest).await {
                    Ok(n) => evicted += n,
                    Err(e) => {
                        tracing::warn!(error = %e, repo, digest, "evicting a cached image failed");
                        skipped.push(id);
                    }
                }
            }
        }
        self.announce_eviction(evicted).await?;
        Ok(evicted)
    }

    /// Tells other processes' caches (a SQLite server's, when `berthd gc` evicted)
    /// that manifests went.
    async fn announce_eviction(&self, count: u64) -> Result<()> {
        if count > 0 {
            let txn = self.write().await?;
            crate::invalidations::bump(&*txn).await?;
            txn.commit().await?;
        }
        Ok(())
    }

    /// Top-level manifests (no index in their repository lists them) under
    /// `namespace/`, least recently pulled (or, never pulled, stored) first.
    async fn eviction_candidates(
        &self,
        namespace: &str,
        skipped: &[i64],
    ) -> Result<Vec<(i64, String, String)>> {
        let (m, r, p, c) = (
            Alias::new("m"),
            Alias::new("r"),
            Alias::new("p"),
            Alias::new("c"),
        );
        let name = Expr::col((r.clone(), repository::Column::Name));
        let listed_by_an_index = Query::select()
            .expr(Expr::val(1))
            .from_as(manifest_child::Entity, c.clone())
            .join_as(
                JoinType::InnerJoin,
                manifest::Entity,
                p.clone(),
                Expr::col((p.clone(), manifest::Column::Id))
                    .equals((c.clone(), manifest_child::Column::ManifestId)),
            )
            .and_where(
                Expr::col((p, manifest::Column::RepositoryId))
                    .equals((m.clone(), manifest::Column::RepositoryId)),
            )
            .and_where(
                Expr::col((c, manifest_child::Column::ChildDigest))
                    .equals((m.clone(), manifest::Column::Digest)),
            )
            .to_owned();
        let query = Query::select()
            .column((m.clone(), manifest::Column::Id))
            .column((r.clone(), repository::Column::Name))
            .column((m.clone(), manifest::Column::Digest))
            .from_as(manifest::Entity, m.clone())
            .join_as(
                JoinType::InnerJoin,
                repository::Entity,
                r.clone(),
                Expr::col((r, repository::Column::Id))
                    .equals((m.clone(), manifest::Column::RepositoryId)),
            )
            .and_where(name_under(name, namespace))
            .and_where(
                Expr::col((m.clone(), manifest::Column::Id)).is_not_in(skipped.iter().copied()),
            )
            .and_where(Expr::exists(listed_by_an_index).not())
            .order_by_expr(
                Func::coalesce([
                    Expr::col((m.clone(), manifest::Column::LastPulledAt)),
                    Expr::col((m.clone(), manifest::Column::CreatedAt)),
                ])
                .into(),
                Order::Asc,
            )
            .order_by((m, manifest::Column::Id), Order::Asc)
            .limit(EVICTION_PAGE)
            .to_owned();
        let mut candidates = Vec::new();
        for row in self.db.query_all(&query).await? {
            candidates.push((
                row.try_get_by_index(0)?,
                row.try_get_by_index(1)?,
                row.try_get_by_index(2)?,
            ));
        }
        Ok(candidates)
    }

    /// Deletes one image by digest (with its tags), and an index's platform images no
    /// other manifest of the repository lists and no tag names.
    async fn evict_image(&self, id: i64, repo: &str, digest: &str) -> Result<u64> {
        let repo_id = self.repository_id(repo).await?;
        let children: Vec<String> = manifest_child::Entity::find()
            .select_only()
            .column(manifest_child::Column::ChildDigest)
            .filter(manifest_child::Column::ManifestId.eq(id))
            .into_tuple()
            .all(&self.db)
            .await?;
        let digest: Digest = digest.parse()?;
        self.remove_manifest(repo, &Reference::Digest(digest), None)
            .await?;
        let mut evicted = 1;
        for child in children {
            let manifests_of_repo = Query::select()
                .column(manifest::Column::Id)
                .from(manifest::Entity)
                .and_where(manifest::Column::RepositoryId.eq(repo_id))
                .to_owned();
            let still_listed = manifest_child::Entity::find()
                .filter(manifest_child::Column::ChildDigest.eq(child.as_str()))
                .filter(manifest_child::Column::ManifestId.in_subquery(manifests_of_repo))
                .one(&self.db)
                .await?
                .is_some();
            let child_row = Query::select()
                .column(manifest::Column::Id)
                .from(manifest::Entity)
                .and_where(manifest::Column::RepositoryId.eq(repo_id))
                .and_where(manifest::Column::Digest.eq(child.as_str()))
                .to_owned();
            let tagged = tag::Entity::find()
                .filter(tag::Column::RepositoryId.eq(repo_id))
                .filter(tag::Column::ManifestId.in_subquery(child_row))
                .one(&self.db)
                .await?
                .is_some();
            // Still an image of its own: evicted in its turn.
            if still_listed || tagged {
                continue;
            }
            match self
                .remove_manifest(repo, &Reference::Digest(child.parse()?), None)
                .await
            {
                Ok(()) => evicted += 1,
                // Never fetched: only the index knew of it.
                Err(StorageError::ManifestUnknown(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(evicted)
    }
}

/// `repositories.name`, unaliased.
fn repository_name() -> Expr {
    Expr::col((repository::Entity, repository::Column::Name))
}
