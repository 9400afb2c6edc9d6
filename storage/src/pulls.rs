//! Pull counts: a manifest GET only bumps a counter in memory; a background task
//! writes the sums in one transaction now and then, so pulls never wait for a write.
//!
//! A pull is a GET of a tag or a digest, except the GET of an image by digest that an
//! index in the same repository lists: that is the second half of a multi-platform
//! pull (index, then the platform's image), counted once, as Docker Hub does.

use std::collections::HashMap;
use std::sync::Mutex;

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};

use crate::digest::Digest;
use crate::entity::{manifest, manifest_child, repository};
use crate::error::Result;
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
}

impl PullCounter {
    fn take(&self) -> HashMap<String, Pending> {
        std::mem::take(&mut *self.pending.lock().expect("pull counter lock"))
    }

    /// Puts counts back after a failed write, so none are lost.
    fn restore(&self, counts: HashMap<String, i64>) {
        let mut pending = self.pending.lock().expect("pull counter lock");
        for (repo, n) in counts {
            pending.entry(repo).or_default().direct += n;
        }
    }
}

impl Storage {
    /// Counts a manifest GET; `image_digest` when an image manifest was fetched by digest.
    pub fn record_pull(&self, repo: &str, image_digest: Option<&Digest>) {
        let mut pending = self.pulls.pending.lock().expect("pull counter lock");
        let entry = pending.entry(repo.to_owned()).or_default();
        match image_digest {
            Some(d) => *entry.by_image_digest.entry(d.to_string()).or_default() += 1,
            None => entry.direct += 1,
        }
    }

    /// Writes the pulls counted since the last flush; returns how many.
    pub async fn flush_pulls(&self) -> Result<i64> {
        let pending = self.pulls.take();
        if pending.is_empty() {
            return Ok(0);
        }
        let mut counts: HashMap<String, i64> = HashMap::new();
        for (repo, p) in pending {
            let mut n = p.direct;
            if !p.by_image_digest.is_empty() {
                let listed = self
                    .listed_in_an_index(&repo, p.by_image_digest.keys().cloned().collect())
                    .await;
                let listed = match listed {
                    Ok(l) => l,
                    Err(e) => {
                        self.pulls.restore(HashMap::from([(repo, n)]));
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
            if n > 0 {
                counts.insert(repo, n);
            }
        }
        let total = counts.values().sum();
        if let Err(e) = self.write_pull_counts(&counts).await {
            self.pulls.restore(counts);
            return Err(e);
        }
        Ok(total)
    }

    async fn write_pull_counts(&self, counts: &HashMap<String, i64>) -> Result<()> {
        let txn = self.write().await?;
        for (repo, n) in counts {
            repository::Entity::update_many()
                .col_expr(
                    repository::Column::PullCount,
                    Expr::col(repository::Column::PullCount).add(*n),
                )
                .filter(repository::Column::Name.eq(repo.as_str()))
                .exec(&*txn)
                .await?;
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
