//! Pull counts and last-pull times: a manifest GET only bumps a counter in memory; a
//! background task writes the sums, and when each pulled manifest and tag was last
//! pulled (for garbage collection and retention), in one transaction now and then, so
//! pulls never wait for a write.
//!
//! A pull is a GET of a tag or a digest, except the GET of an image by digest that an
//! index in the same repository lists: that is the second half of a multi-platform
//! pull (index, then the platform's image), counted once, as Docker Hub does.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use berth_oci::media_types::is_index;
use berth_oci::Reference;

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};

use crate::entity::{manifest, manifest_child, now_millis, repository, tag};
use crate::error::Result;
use crate::manifests::StoredManifest;
use crate::Storage;

/// Pulls not yet written: per repository, by tag (or index digest) and by image digest.
#[derive(Default)]
pub struct PullCounter {
    pending: Mutex<HashMap<String, Pending>>,
}

#[derive(Default)]
struct Pending {
    direct: i64,
    /// Image manifests fetched by digest, which may be an index's platform image.
    by_image_digest: HashMap<String, i64>,
    /// Every manifest fetched (by digest), and every tag pulled.
    manifests: HashSet<String>,
    tags: HashSet<String>,
}

/// What a failed write puts back.
type Unwritten = HashMap<String, (i64, Pulled)>;

/// Manifests and tags pulled in one repository.
#[derive(Default)]
struct Pulled {
    manifests: HashSet<String>,
    tags: HashSet<String>,
}

impl PullCounter {
    fn take(&self) -> HashMap<String, Pending> {
        std::mem::take(&mut *self.pending.lock().expect("pull counter lock"))
    }

    /// Puts counts and pulls back after a failed write, so none are lost.
    fn restore(&self, unwritten: Unwritten) {
        let mut pending = self.pending.lock().expect("pull counter lock");
        for (repo, (n, pulled)) in unwritten {
            let entry = pending.entry(repo).or_default();
            entry.direct += n;
            entry.manifests.extend(pulled.manifests);
            entry.tags.extend(pulled.tags);
        }
    }
}

impl Storage {
    /// Counts a manifest GET of `reference` that answered `manifest`.
    pub fn record_pull(&self, repo: &str, reference: &Reference, manifest: &StoredManifest) {
        let mut pending = self.pulls.pending.lock().expect("pull counter lock");
        let entry = pending.entry(repo.to_owned()).or_default();
        match reference {
            Reference::Digest(d) if !is_index(&manifest.media_type) => {
                *entry.by_image_digest.entry(d.to_string()).or_default() += 1
            }
            _ => entry.direct += 1,
        }
        entry.manifests.insert(manifest.digest.to_string());
        if let Reference::Tag(t) = reference {
            entry.tags.insert(t.clone());
        }
    }

    /// Writes the pulls counted since the last flush; returns how many.
    pub async fn flush_pulls(&self) -> Result<i64> {
        self.flush_buffered_events().await?;
        let pending = self.pulls.take();
        if pending.is_empty() {
            return Ok(0);
        }
        let mut counts: Unwritten = HashMap::new();
        for (repo, p) in pending {
            let mut n = p.direct;
            let pulled = Pulled {
                manifests: p.manifests,
                tags: p.tags,
            };
            if !p.by_image_digest.is_empty() {
                let listed = self
                    .listed_in_an_index(&repo, p.by_image_digest.keys().cloned().collect())
                    .await;
                let listed = match listed {
                    Ok(l) => l,
                    Err(e) => {
                        self.pulls.restore(HashMap::from([(repo, (n, pulled))]));
                        return Err(e);
                    }
                };
                n += p
                    .by_image_digest
                    .iter()
                    .filter(|(d, _)| !listed.contains(*d))
                    .map(|(_, c)| c)
                    .sum::<i64>();
            }
            counts.insert(repo, (n, pulled));
        }
        let total = counts.values().map(|(n, _)| n).sum();
        if let Err(e) = self.write_pull_counts(&counts).await {
            self.pulls.restore(counts);
            return Err(e);
        }
        Ok(total)
    }

    async fn write_pull_counts(&self, counts: &Unwritten) -> Result<()> {
        let now = now_millis();
        let txn = self.write().await?;
        for (repo, (n, pulled)) in counts {
            let Some(repo_id) = self.known_repository_id(repo).await? else {
                continue;
            };
            if *n > 0 {
                repository::Entity::update_many()
                    .col_expr(
                        repository::Column::PullCount,
                        Expr::col(repository::Column::PullCount).add(*n),
                    )
                    .filter(repository::Column::Id.eq(repo_id))
                    .exec(&*txn)
                    .await?;
            }
            if !pulled.manifests.is_empty() {
                manifest::Entity::update_many()
                    .col_expr(manifest::Column::LastPulledAt, Expr::value(now))
                    .filter(manifest::Column::RepositoryId.eq(repo_id))
                    .filter(manifest::Column::Digest.is_in(pulled.manifests.iter().cloned()))
                    .exec(&*txn)
                    .await?;
            }
            if !pulled.tags.is_empty() {
                tag::Entity::update_many()
                    .col_expr(tag::Column::LastPulledAt, Expr::value(now))
                    .filter(tag::Column::RepositoryId.eq(repo_id))
                    .filter(tag::Column::Name.is_in(pulled.tags.iter().cloned()))
                    .exec(&*txn)
                    .await?;
            }
        }
        txn.commit().await?;
        Ok(())
    }

    /// Which of `digests` an index in `repo` lists.
    async fn listed_in_an_index(&self, repo: &str, digests: Vec<String>) -> Result<Vec<String>> {
        let Some(repo_id) = self.known_repository_id(repo).await? else {
            return Ok(Vec::new());
        };
        Ok(manifest_child::Entity::find()
            .select_only()
            .column(manifest_child::Column::ChildDigest)
            .distinct()
            .filter(manifest_child::Column::ChildDigest.is_in(digests))
            .filter(
                manifest_child::Column::ManifestId.in_subquery(
                    sea_orm::sea_query::Query::select()
                        .column(manifest::Column::Id)
                        .from(manifest::Entity)
                        .and_where(manifest::Column::RepositoryId.eq(repo_id))
                        .to_owned(),
                ),
            )
            .into_tuple()
            .all(&self.db)
            .await?)
    }
}
