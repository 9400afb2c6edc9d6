//! A blob (config or layer) that a manifest references: blobs no manifest references are garbage.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "manifest_blobs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub manifest_id: i64,
    #[sea_orm(primary_key, auto_increment = false)]
    pub digest: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
