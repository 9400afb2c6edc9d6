//! A repository (`alice/app`), created by its first push.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "repositories")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique)]
    pub name: String,
    pub created_at: i64,
    /// Pulled by its owner and admins only.
    pub private: bool,
    /// One line shown in listings and searched.
    pub description: String,
    /// Markdown, rendered (sanitized) on the repository's page.
    pub readme: String,
    /// Manifest GETs, counted in batches (see `pulls`).
    pub pull_count: i64,
    /// The last manifest push.
    pub pushed_at: i64,
    /// The `os/architecture` of every tagged image, space-separated with a space at
    /// each end (` linux/amd64 linux/arm64 `), for the search filter.
    pub platforms: String,
    /// Bumped by triggers on every change a pull may have cached (see `generations`).
    pub generation: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
