//! The platforms a repository's tags offer (`repositories.platforms`, e.g.
//! ` linux/amd64 linux/arm64 `), which the search's OS/architecture filter reads
//! instead of joining tags, manifests and index children for every candidate.
//! Recomputed inside the write transaction of every change to the repository's tags.
//! Each image's own platform is read from its configuration when it is pushed.

use std::collections::BTreeSet;

use sea_orm::sea_query::{Alias, Expr, ExprTrait, JoinType, Query, UnionType};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter};

use crate::db::query_as;
use crate::digest::Digest;
use crate::entity::{manifest, manifest_child, repository, tag};
use crate::error::{Result, StorageError};
use crate::Storage;

#[derive(FromQueryResult)]
struct OsArch {
    os: String,
    architecture: String,
}

/// The platform an image configuration names.
#[derive(Debug, Default, PartialEq)]
pub struct Platform {
    pub os: Option<String>,
    pub architecture: Option<String>,
    pub variant: Option<String>,
}

/// Image configurations larger than this are not read for their platform.
const MAX_CONFIG_READ: u64 = 1024 * 1024;

impl Storage {
    /// The platform an image manifest's configuration names; nothing for other
    /// manifests, or when the config is missing (the reference check reports that),
    /// large, or says nothing.
    pub(crate) async fn image_platform(
        &self,
        repo: &str,
        config: Option<&(Digest, u64)>,
    ) -> Result<Platform> {
        let Some((digest, size)) = config else {
            return Ok(Platform::default());
        };
        if *size > MAX_CONFIG_READ {
            return Ok(Platform::default());
        }
        let config = match self.read_small_blob(repo, digest, MAX_CONFIG_READ).await {
            Ok(bytes) => bytes,
            Err(StorageError::BlobUnknown(_)) => return Ok(Platform::default()),
            Err(e) => return Err(e),
        };
        let value: serde_json::Value = serde_json::from_slice(&config).unwrap_or_default();
        let field = |name: &str| {
            value
                .get(name)
                .and_then(|v| v.as_str())
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        Ok(Platform {
            os: field("os"),
            architecture: field("architecture"),
            variant: field("variant"),
        })
    }
}

/// Rewrites `repo_id`'s platform list from its tags: tagged images, and the images of
/// tagged indexes.
pub(crate) async fn refresh(db: &impl ConnectionTrait, repo_id: i64) -> Result<()> {
    use manifest::Column as M;
    let (t, m, c, cm) = (
        Alias::new("t"),
        Alias::new("m"),
        Alias::new("c"),
        Alias::new("cm"),
    );
    let of_repo = Expr::col((t.clone(), tag::Column::RepositoryId)).eq(repo_id);
    let tagged_images = Query::select()
        .columns([(m.clone(), M::Os), (m.clone(), M::Architecture)])
        .from_as(tag::Entity, t.clone())
        .join_as(
            JoinType::InnerJoin,
            manifest::Entity,
            m.clone(),
            Expr::col((m.clone(), M::Id)).equals((t.clone(), tag::Column::ManifestId)),
        )
        .and_where(of_repo.clone())
        .and_where(Expr::col((m.clone(), M::Os)).is_not_null())
        .and_where(Expr::col((m.clone(), M::Architecture)).is_not_null())
        .to_owned();
    let index_images = Query::select()
        .columns([(cm.clone(), M::Os), (cm.clone(), M::Architecture)])
        .from_as(tag::Entity, t.clone())
        .join_as(
            JoinType::InnerJoin,
            manifest_child::Entity,
            c.clone(),
            Expr::col((c.clone(), manifest_child::Column::ManifestId))
                .equals((t.clone(), tag::Column::ManifestId)),
        )
        .join_as(
            JoinType::InnerJoin,
            manifest::Entity,
            cm.clone(),
            Expr::col((cm.clone(), M::RepositoryId))
                .equals((t.clone(), tag::Column::RepositoryId))
                .and(
                    Expr::col((cm.clone(), M::Digest))
                        .equals((c.clone(), manifest_child::Column::ChildDigest)),
                ),
        )
        .and_where(of_repo)
        .and_where(Expr::col((cm.clone(), M::Os)).is_not_null())
        .and_where(Expr::col((cm.clone(), M::Architecture)).is_not_null())
        .to_owned();
    let mut select = tagged_images;
    select.union(UnionType::Distinct, index_images);
    let rows: Vec<OsArch> = query_as(db, &select).await?;
    let set: BTreeSet<String> = rows
        .into_iter()
        .map(|p| format!("{}/{}", p.os, p.architecture))
        .collect();
    let text = format!(" {} ", set.into_iter().collect::<Vec<_>>().join(" "));
    repository::Entity::update_many()
        .col_expr(repository::Column::Platforms, Expr::value(text))
        .filter(repository::Column::Id.eq(repo_id))
        .exec(db)
        .await?;
    Ok(())
}

/// The `LIKE` pattern matching a platform list that offers `os` and/or `architecture`.
pub fn filter_pattern(os: Option<&str>, architecture: Option<&str>) -> String {
    let clean = |s: &str| s.replace(['%', '_', '\\', ' '], "");
    match (os, architecture) {
        (Some(o), Some(a)) => format!("% {}/{} %", clean(o), clean(a)),
        (Some(o), None) => format!("% {}/%", clean(o)),
        (None, Some(a)) => format!("%/{} %", clean(a)),
        (None, None) => "%".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::filter_pattern;

    #[test]
    fn patterns_match_whole_entries() {
        assert_eq!(
            filter_pattern(Some("linux"), Some("arm64")),
            "% linux/arm64 %"
        );
        assert_eq!(filter_pattern(None, Some("arm")), "%/arm %");
        assert_eq!(filter_pattern(Some("linux%"), None), "% linux/%");
    }
}
