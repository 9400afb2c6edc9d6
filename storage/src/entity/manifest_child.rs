//! A manifest that an index references: an untagged manifest no index references is garbage.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "manifest_children")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub manifest_id: i64,
    #[sea_orm(primary_key, auto_increment = false)]
    pub child_digest: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
