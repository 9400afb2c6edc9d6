//! Storage quotas per namespace (a user's or an organization's), and usage: the bytes
//! of the distinct blobs a namespace's (or a repository's) manifests reference — a
//! layer shared by ten repositories of one namespace counts once. Blobs uploaded but
//! not referenced yet count for nobody (garbage collection takes them).
//!
//! A push is checked where it would add bytes: at blob upload completion (the blob
//! itself) and at manifest PUT (the blobs it references that the namespace does not
//! reference yet). Checks read committed usage, so pushes racing each other may
//! overshoot by what they add at the same moment; nothing already stored is affected.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sea_orm::sea_query::OnConflict;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Func, Query, SelectStatement};
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait, QueryOrder, QuerySelect};

use crate::audit::Action;
use crate::digest::Digest;
use crate::entity::{blob, manifest, manifest_blob, quota, repository};
use crate::error::{Result, StorageError};
use crate::names::validate_name;
use crate::Storage;

/// How long quotas read from the database are reused (`berthd quota set` from another
/// process, or on another replica, applies within this).
const QUOTAS_TTL: Duration = Duration::from_secs(5);

/// A namespace's usage against its quota.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NamespaceUsage {
    pub namespace: String,
    pub bytes: u64,
    /// Its own quota, else the default; `None`: unlimited.
    pub quota: Option<u64>,
}

/// The registry as a whole.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RegistryUsage {
    /// Blobs stored (each once, whatever references it), and their bytes.
    pub blobs: u64,
    pub stored_bytes: u64,
    /// What the repositories would take without sharing: each repository's distinct
    /// referenced blobs, summed over repositories.
    pub logical_bytes: u64,
}

impl RegistryUsage {
    /// Logical bytes per stored byte (1.0 for an empty registry).
    pub fn dedup_ratio(&self) -> f64 {
        match self.stored_bytes {
            0 => 1.0,
            stored => self.logical_bytes as f64 / stored as f64,
        }
    }
}

/// Namespaces' own quotas, as read at some instant.
type Explicit = (Instant, Arc<HashMap<String, u64>>);

/// The quotas in force: explicit ones (cached briefly) and the default.
pub(crate) struct Quotas {
    default: Option<u64>,
    cached: Mutex<Option<Explicit>>,
    /// Proxies' namespaces: their `max_size` bounds them, not the default quota (which
    /// would silently stop their caching).
    unlimited: Vec<String>,
}

impl Quotas {
    pub fn new(default: Option<u64>, unlimited: Vec<String>) -> Quotas {
        Quotas {
            default,
            cached: Mutex::new(None),
            unlimited,
        }
    }

    fn forget(&self) {
        *self.cached.lock().expect("quota cache lock") = None;
    }
}

/// Whose usage: a namespace's repositories, or one repository.
#[derive(Clone, Copy)]
enum Scope<'a> {
    Namespace(&'a str),
    Repository(&'a str),
}

/// What a push adds.
pub(crate) enum Adding<'a> {
    Blob { digest: &'a Digest, size: u64 },
    Blobs(&'a [Digest]),
}

impl Storage {
    /// Sets `namespace`'s quota.
    pub async fn set_quota(&self, namespace: &str, bytes: u64) -> Result<()> {
        validate_namespace(namespace)?;
        let txn = self.write().await?;
        quota::Entity::insert(quota::ActiveModel {
            namespace: Set(namespace.to_owned()),
            bytes: Set(i64::try_from(bytes).unwrap_or(i64::MAX)),
        })
        .on_conflict(
            OnConflict::column(quota::Column::Namespace)
                .update_column(quota::Column::Bytes)
                .to_owned(),
        )
        .exec(&*txn)
        .await?;
        let detail = format!("{bytes} bytes");
        self.audited(&*txn, Action::QuotaChanged, namespace, Some(detail))
            .await?;
        txn.commit().await?;
        self.quotas.forget();
        Ok(())
    }

    /// Removes `namespace`'s own quota (the default applies again); false if it had none.
    pub async fn remove_quota(&self, namespace: &str) -> Result<bool> {
        let txn = self.write().await?;
        let removed = quota::Entity::delete_by_id(namespace).exec(&*txn).await?;
        if removed.rows_affected > 0 {
            let detail = Some("removed (the default applies)".into());
            self.audited(&*txn, Action::QuotaChanged, namespace, detail)
                .await?;
        }
        txn.commit().await?;
        self.quotas.forget();
        Ok(removed.rows_affected > 0)
    }

    /// The namespaces with a quota of their own.
    pub async fn quotas(&self) -> Result<Vec<(String, u64)>> {
        Ok(quota::Entity::find()
            .order_by_asc(quota::Column::Namespace)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|q| (q.namespace, q.bytes as u64))
            .collect())
    }

    /// The quota that applies to `namespace`.
    pub async fn quota_of(&self, namespace: &str) -> Result<Option<u64>> {
        let explicit = {
            let cached = self.quotas.cached.lock().expect("quota cache lock");
            match &*cached {
                Some((at, map)) if at.elapsed() < QUOTAS_TTL => Some(map.clone()),
                _ => None,
            }
        };
        let explicit = match explicit {
            Some(map) => map,
            None => {
                let map: Arc<HashMap<String, u64>> =
                    Arc::new(self.quotas().await?.into_iter().collect());
                *self.quotas.cached.lock().expect("quota cache lock") =
                    Some((Instant::now(), map.clone()));
                map
            }
        };
        let default = match self.quotas.unlimited.iter().any(|n| n == namespace) {
            true => None,
            false => self.quotas.default,
        };
        Ok(explicit.get(namespace).copied().or(default))
    }

    pub async fn namespace_usage(&self, namespace: &str) -> Result<NamespaceUsage> {
        validate_namespace(namespace)?;
        Ok(NamespaceUsage {
            namespace: namespace.to_owned(),
            bytes: sum_sizes(&self.db, referenced_in(Scope::Namespace(namespace))).await?,
            quota: self.quota_of(namespace).await?,
        })
    }

    /// Every namespace that has repositories, with its usage.
    pub async fn namespace_usages(&self) -> Result<Vec<NamespaceUsage>> {
        let names: Vec<String> = repository::Entity::find()
            .select_only()
            .column(repository::Column::Name)
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut namespaces: Vec<&str> = names
            .iter()
            .filter_map(|n| n.split_once('/').map(|(ns, _)| ns))
            .collect();
        namespaces.sort_unstable();
        namespaces.dedup();
        let mut usages = Vec::with_capacity(namespaces.len());
        for ns in namespaces {
            usages.push(self.namespace_usage(ns).await?);
        }
        Ok(usages)
    }

    pub async fn repository_usage(&self, repo: &str) -> Result<u64> {
        sum_sizes(&self.db, referenced_in(Scope::Repository(repo))).await
    }

    pub async fn registry_usage(&self) -> Result<RegistryUsage> {
        let stored = Query::select()
            .expr(count_as_bigint(
                Func::count(Expr::col(blob::Column::Digest)).into(),
            ))
            .expr(sum_as_bigint(Expr::col(blob::Column::Size)))
            .from(blob::Entity)
            .to_owned();
        let row = self
            .db
            .query_one(&stored)
            .await?
            .expect("an aggregate has a row");
        let (blobs, stored_bytes): (i64, i64) =
            (row.try_get_by_index(0)?, row.try_get_by_index(1)?);
        // Each repository's distinct referenced blobs, summed.
        let per_repository = manifest_references()
            .distinct()
            .column((manifest::Entity, manifest::Column::RepositoryId))
            .to_owned();
        let links = Alias::new("links");
        let logical = Query::select()
            .expr(sum_as_bigint(Expr::col((blob::Entity, blob::Column::Size))))
            .from_subquery(per_repository, links.clone())
            .inner_join(
                blob::Entity,
                Expr::col((blob::Entity, blob::Column::Digest))
                    .equals((links, manifest_blob::Column::Digest)),
            )
            .to_owned();
        let row = self
            .db
            .query_one(&logical)
            .await?
            .expect("an aggregate has a row");
        let logical_bytes: i64 = row.try_get_by_index(0)?;
        Ok(RegistryUsage {
            blobs: blobs as u64,
            stored_bytes: stored_bytes as u64,
            logical_bytes: logical_bytes as u64,
        })
    }

    /// Refuses (`QuotaExceeded`) what would take `repo`'s namespace over its quota.
    pub(crate) async fn check_quota(&self, repo: &str, adding: Adding<'_>) -> Result<()> {
        let Some(namespace) = repo.split_once('/').map(|(ns, _)| ns) else {
            return Ok(());
        };
        let Some(quota) = self.quota_of(namespace).await? else {
            return Ok(());
        };
        let scope = Scope::Namespace(namespace);
        let added = match adding {
            Adding::Blob { digest, size } => {
                let already = Query::select()
                    .expr(Expr::val(1))
                    .from_subquery(referenced_in(scope), Alias::new("r"))
                    .and_where(
                        Expr::col((Alias::new("r"), manifest_blob::Column::Digest))
                            .eq(digest.as_str()),
                    )
                    .to_owned();
                match self.db.query_one(&already).await? {
                    Some(_) => 0,
                    None => size,
                }
            }
            Adding::Blobs(digests) => {
                let mut new = Query::select();
                new.expr(sum_as_bigint(Expr::col(blob::Column::Size)))
                    .from(blob::Entity)
                    .and_where(
                        Expr::col(blob::Column::Digest)
                            .is_in(digests.iter().map(|d| d.to_string())),
                    )
                    .and_where(
                        Expr::col(blob::Column::Digest).not_in_subquery(referenced_in(scope)),
                    );
                let row = self
                    .db
                    .query_one(&new)
                    .await?
                    .expect("an aggregate has a row");
                row.try_get_by_index::<i64>(0)? as u64
            }
        };
        if added == 0 {
            return Ok(());
        }
        let usage = sum_sizes(&self.db, referenced_in(scope)).await?;
        if usage.saturating_add(added) > quota {
            return Err(StorageError::QuotaExceeded {
                namespace: namespace.to_owned(),
                usage,
                quota,
                adding: added,
            });
        }
        Ok(())
    }
}

/// The digests of blobs referenced by manifests in `scope` (with repetitions).
fn referenced_in(scope: Scope<'_>) -> SelectStatement {
    let mut query = manifest_references();
    query.inner_join(
        repository::Entity,
        Expr::col((repository::Entity, repository::Column::Id))
            .equals((manifest::Entity, manifest::Column::RepositoryId)),
    );
    let name = Expr::col((repository::Entity, repository::Column::Name));
    match scope {
        Scope::Repository(repo) => query.and_where(name.eq(repo)),
        Scope::Namespace(ns) => query.and_where(crate::repos::name_under(name, ns)),
    };
    query
}

/// The digests manifests reference, joined with the manifests (to narrow and group by).
fn manifest_references() -> SelectStatement {
    Query::select()
        .column((manifest_blob::Entity, manifest_blob::Column::Digest))
        .from(manifest_blob::Entity)
        .inner_join(
            manifest::Entity,
            Expr::col((manifest::Entity, manifest::Column::Id))
                .equals((manifest_blob::Entity, manifest_blob::Column::ManifestId)),
        )
        .to_owned()
}

/// The bytes of the distinct blobs whose digests `digests` selects.
async fn sum_sizes(db: &impl ConnectionTrait, digests: SelectStatement) -> Result<u64> {
    let query = Query::select()
        .expr(sum_as_bigint(Expr::col(blob::Column::Size)))
        .from(blob::Entity)
        .and_where(Expr::col(blob::Column::Digest).in_subquery(digests))
        .to_owned();
    let row = db.query_one(&query).await?.expect("an aggregate has a row");
    Ok(row.try_get_by_index::<i64>(0)? as u64)
}

/// `SUM(x)` as a BIGINT, 0 over no rows (PostgreSQL sums BIGINTs as NUMERIC).
pub(crate) fn sum_as_bigint(x: Expr) -> Expr {
    Func::cast_as(
        Func::coalesce([Func::sum(x).into(), Expr::val(0)]),
        Alias::new("BIGINT"),
    )
    .into()
}

fn count_as_bigint(x: Expr) -> Expr {
    Func::cast_as(x, Alias::new("BIGINT")).into()
}

/// A namespace is a repository name's first component.
fn validate_namespace(namespace: &str) -> Result<()> {
    if namespace.contains('/') {
        return Err(StorageError::Oci(berth_oci::OciError::NameInvalid(format!(
            "{namespace:?} is not a namespace (a namespace is the part of a repository name before the first /)"
        ))));
    }
    validate_name(namespace).map_err(StorageError::from)
}
