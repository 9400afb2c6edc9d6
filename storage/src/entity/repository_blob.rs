//! A blob made visible to one repository (by an upload into it or a mount).
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "repository_blobs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub repository_id: i64,
    #[sea_orm(primary_key, auto_increment = false)]
    pub digest: String,
    pub created_at: i64,
    /// Last upload, mount, or HEAD/GET confirming it (refreshed at most every quarter of
    /// the GC grace period): garbage collection spares links touched within the grace.
    pub touched_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
