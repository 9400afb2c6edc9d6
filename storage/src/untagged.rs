//! A repository's untagged manifests, as an owner reviews them before deleting
//! (Docker Hub's "preview and delete"): what each references and what deleting it
//! would free.

use std::collections::HashMap;

use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
    QuerySelect,
};
use serde::Serialize;

use crate::audit::Action;
use crate::db::query_as;
use crate::digest::Digest;
use crate::entity::{blob, manifest, manifest_blob, manifest_child, tag};
use crate::error::{Result, StorageError};
use crate::quotas::sum_as_bigint;
use crate::Storage;

/// At most this many are listed (the newest).
pub const MAX_LISTED: u64 = 500;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UntaggedManifest {
    pub digest: String,
    pub media_type: String,
    /// Unix milliseconds.
    pub pushed_at: i64,
    pub last_pulled_at: Option<i64>,
    /// The manifest it refers to (a signature's or an SBOM's image).
    pub subject: Option<String>,
    /// An index of the repository listing it (deleting it would break that index).
    pub listed_by: Option<String>,
    /// Bytes of the distinct blobs it references.
    pub size: u64,
    /// Bytes of the blobs no other manifest references: what deleting it frees.
    pub freed_bytes: u64,
}

#[derive(FromQueryResult)]
struct Row {
    id: i64,
    digest: String,
    media_type: String,
    created_at: i64,
    last_pulled_at: Option<i64>,
    subject: Option<String>,
}

#[derive(FromQueryResult)]
struct Sum {
    manifest_id: i64,
    bytes: i64,
}

impl Storage {
    /// The untagged manifests of `repo`, newest first (at most [`MAX_LISTED`]).
    pub async fn untagged_manifests(&self, repo: &str) -> Result<Vec<UntaggedManifest>> {
        let repo_id = self.repository_id(repo).await?;
        let rows: Vec<Row> = manifest::Entity::find()
            .select_only()
            .columns([
                manifest::Column::Id,
                manifest::Column::Digest,
                manifest::Column::MediaType,
                manifest::Column::CreatedAt,
                manifest::Column::LastPulledAt,
                manifest::Column::Subject,
            ])
            .filter(manifest::Column::RepositoryId.eq(repo_id))
            .filter(
                manifest::Column::Id.not_in_subquery(
                    Query::select()
                        .column(tag::Column::ManifestId)
                        .from(tag::Entity)
                        .and_where(Expr::col(tag::Column::RepositoryId).eq(repo_id))
                        .to_owned(),
                ),
            )
            .order_by_desc(manifest::Column::CreatedAt)
            .order_by_desc(manifest::Column::Id)
            .limit(MAX_LISTED)
            .into_model()
            .all(&self.db)
            .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let size = self.blob_bytes(&ids, false).await?;
        let freed = self.blob_bytes(&ids, true).await?;
        let parent = Alias::new("parent");
        let listing = Query::select()
            .column((manifest_child::Entity, manifest_child::Column::ChildDigest))
            .column((parent.clone(), manifest::Column::Digest))
            .from(manifest_child::Entity)
            .join_as(
                sea_orm::JoinType::InnerJoin,
                manifest::Entity,
                parent.clone(),
                Expr::col((parent.clone(), manifest::Column::Id))
                    .equals((manifest_child::Entity, manifest_child::Column::ManifestId)),
            )
            .and_where(Expr::col((parent, manifest::Column::RepositoryId)).eq(repo_id))
            .and_where(
                Expr::col((manifest_child::Entity, manifest_child::Column::ChildDigest))
                    .is_in(rows.iter().map(|r| r.digest.clone())),
            )
            .to_owned();
        let mut listed_by: HashMap<String, String> = HashMap::new();
        for row in self.db.query_all(&listing).await? {
            let (child, index): (String, String) =
                (row.try_get_by_index(0)?, row.try_get_by_index(1)?);
            listed_by.entry(child).or_insert(index);
        }
        Ok(rows
            .into_iter()
            .map(|r| UntaggedManifest {
                listed_by: listed_by.get(&r.digest).cloned(),
                size: size.get(&r.id).copied().unwrap_or(0),
                freed_bytes: freed.get(&r.id).copied().unwrap_or(0),
                digest: r.digest,
                media_type: r.media_type,
                pushed_at: r.created_at,
                last_pulled_at: r.last_pulled_at,
                subject: r.subject,
            })
            .collect())
    }

    /// Deletes the manifest `digest` of `repo` if it is untagged and no index of the
    /// repository lists it, decided in the deleting transaction on the locked row: a
    /// tag pushed onto it meanwhile keeps it (`ManifestInUse`), never goes with it.
    pub async fn delete_untagged(&self, repo: &str, digest: &Digest) -> Result<()> {
        let repo_id = self.repository_id(repo).await?;
        let events = self
            .events_for_change(
                crate::events::Action::Delete,
                repo,
                [crate::events::Target::named(
                    repo,
                    Some(digest.as_str()),
                    None,
                )],
            )
            .await?;
        let txn = self.write().await?;
        let id: Option<i64> = manifest::Entity::find()
            .select_only()
            .column(manifest::Column::Id)
            .filter(manifest::Column::RepositoryId.eq(repo_id))
            .filter(manifest::Column::Digest.eq(digest.as_str()))
            .lock_exclusive()
            .into_tuple()
            .one(&*txn)
            .await?;
        let id = id.ok_or_else(|| StorageError::ManifestUnknown(digest.to_string()))?;
        let tagged = tag::Entity::find()
            .filter(tag::Column::ManifestId.eq(id))
            .one(&*txn)
            .await?;
        if let Some(t) = tagged {
            return Err(StorageError::ManifestInUse(format!(
                "{digest} is tagged {} in {repo}: delete its tags first",
                t.name
            )));
        }
        let index: Option<String> = manifest::Entity::find()
            .select_only()
            .column(manifest::Column::Digest)
            .filter(manifest::Column::RepositoryId.eq(repo_id))
            .filter(
                manifest::Column::Id.in_subquery(
                    Query::select()
                        .column(manifest_child::Column::ManifestId)
                        .from(manifest_child::Entity)
                        .and_where(
                            Expr::col(manifest_child::Column::ChildDigest).eq(digest.as_str()),
                        )
                        .to_owned(),
                ),
            )
            .into_tuple()
            .one(&*txn)
            .await?;
        if let Some(index) = index {
            return Err(StorageError::ManifestInUse(format!(
                "{digest} is listed by the index {index} in {repo}: deleting it would break that index; delete the index first"
            )));
        }
        manifest::Entity::delete_by_id(id).exec(&*txn).await?;
        let target = format!("{repo}@{digest}");
        self.audited(
            &*txn,
            Action::ManifestDeleted,
            &target,
            Some("untagged".into()),
        )
        .await?;
        self.commit_with_events(txn, &events).await?;
        self.cache.invalidate(repo);
        self.settle_change().await;
        Ok(())
    }

    /// Per manifest of `ids`: the bytes of the blobs it references (`only_its`: that no
    /// other manifest references).
    async fn blob_bytes(&self, ids: &[i64], only_its: bool) -> Result<HashMap<i64, u64>> {
        let mine = Alias::new("mine");
        let mut query = Query::select();
        query
            .column((mine.clone(), manifest_blob::Column::ManifestId))
            .expr_as(
                sum_as_bigint(Expr::col((blob::Entity, blob::Column::Size))),
                Alias::new("bytes"),
            )
            .from_as(manifest_blob::Entity, mine.clone())
            .inner_join(
                blob::Entity,
                Expr::col((blob::Entity, blob::Column::Digest))
                    .equals((mine.clone(), manifest_blob::Column::Digest)),
            )
            .and_where(
                Expr::col((mine.clone(), manifest_blob::Column::ManifestId))
                    .is_in(ids.iter().copied()),
            )
            .group_by_col((mine.clone(), manifest_blob::Column::ManifestId));
        if only_its {
            let others = Query::select()
                .expr(Expr::val(1))
                .from(manifest_blob::Entity)
                .and_where(
                    Expr::col((manifest_blob::Entity, manifest_blob::Column::Digest))
                        .equals((mine.clone(), manifest_blob::Column::Digest)),
                )
                .and_where(
                    Expr::col((manifest_blob::Entity, manifest_blob::Column::ManifestId))
                        .ne(Expr::col((mine, manifest_blob::Column::ManifestId))),
                )
                .to_owned();
            query.and_where(Expr::exists(others).not());
        }
        Ok(query_as::<Sum>(&self.db, &query)
            .await?
            .into_iter()
            .map(|s| (s.manifest_id, s.bytes as u64))
            .collect())
    }
}
