//! A retention policy: which tags of a repository (or of every repository of a
//! namespace) are deleted on schedule. Durations in milliseconds.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "retention_policies")]
pub struct Model {
    /// `acme/app`, or `acme/*` for a namespace.
    #[sea_orm(primary_key, auto_increment = false)]
    pub scope: String,
    pub keep_last: Option<i32>,
    pub keep_pattern: Option<String>,
    pub unpushed_for_ms: Option<i64>,
    pub unpulled_for_ms: Option<i64>,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
