//! What garbage collection would remove, found by queries over the reference tables.
//! (The collector that deletes it comes with online GC; these queries are its input.)

use sea_orm::sea_query::{Alias, Expr, ExprTrait, JoinType, Query};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};

use crate::entity::{blob, manifest, manifest_blob, manifest_child, repository, tag};
use crate::error::Result;
use crate::Storage;

/// An untagged manifest nothing needs: no tag, no index in its repository lists it,
/// and it is not a referrer of a manifest that still exists.
#[derive(Debug, Clone, PartialEq)]
pub struct OrphanManifest {
    pub repository: String,
    pub digest: String,
}

impl Storage {
    /// Blobs no manifest references, stored before `before_millis` (younger blobs may
    /// belong to a push whose manifest has not arrived yet).
    pub async fn unreferenced_blobs(&self, before_millis: i64) -> Result<Vec<String>> {
        let referenced = Query::select()
            .expr(Expr::val(1))
            .from(manifest_blob::Entity)
            .and_where(
                Expr::col((manifest_blob::Entity, manifest_blob::Column::Digest))
                    .equals((blob::Entity, blob::Column::Digest)),
            )
            .to_owned();
        Ok(blob::Entity::find()
            .select_only()
            .column(blob::Column::Digest)
            .filter(blob::Column::CreatedAt.lt(before_millis))
            .filter(Expr::exists(referenced).not())
            .into_tuple()
            .all(&self.db)
            .await?)
    }

    pub async fn orphan_manifests(&self) -> Result<Vec<OrphanManifest>> {
        let m = Alias::new("m");
        let parent = Alias::new("parent");
        let subject = Alias::new("subject_manifest");
        let tagged = Query::select()
            .expr(Expr::val(1))
            .from(tag::Entity)
            .and_where(
                Expr::col((tag::Entity, tag::Column::ManifestId))
                    .equals((m.clone(), manifest::Column::Id)),
            )
            .to_owned();
        let in_index = Query::select()
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
                    .equals((m.clone(), manifest::Column::Digest)),
            )
            .and_where(
                Expr::col((parent.clone(), manifest::Column::RepositoryId))
                    .equals((m.clone(), manifest::Column::RepositoryId)),
            )
            .to_owned();
        let subject_exists = Query::select()
            .expr(Expr::val(1))
            .from_as(manifest::Entity, subject.clone())
            .and_where(
                Expr::col((subject.clone(), manifest::Column::RepositoryId))
                    .equals((m.clone(), manifest::Column::RepositoryId)),
            )
            .and_where(
                Expr::col((subject.clone(), manifest::Column::Digest))
                    .equals((m.clone(), manifest::Column::Subject)),
            )
            .to_owned();
        let query = Query::select()
            .column((repository::Entity, repository::Column::Name))
            .column((m.clone(), manifest::Column::Digest))
            .from_as(manifest::Entity, m.clone())
            .inner_join(
                repository::Entity,
                Expr::col((repository::Entity, repository::Column::Id))
                    .equals((m.clone(), manifest::Column::RepositoryId)),
            )
            .and_where(Expr::exists(tagged).not())
            .and_where(Expr::exists(in_index).not())
            .and_where(Expr::exists(subject_exists).not())
            .to_owned();
        let rows = self.db.query_all(&query).await?;
        rows.iter()
            .map(|row| {
                Ok(OrphanManifest {
                    repository: row.try_get_by_index(0)?,
                    digest: row.try_get_by_index(1)?,
                })
            })
            .collect()
    }
}
