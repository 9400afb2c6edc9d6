//! An upload in progress: what it has received so far and the running hash of it.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "uploads")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub repository: String,
    pub algorithm: String,
    /// Bytes received so far; also the optimistic-concurrency version of the row.
    pub size: i64,
    pub hash_state: Vec<u8>,
    /// JSON list of `objects::Segment` received so far.
    pub segments: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// Set when bytes past this offset may not be on disk yet (see `uploads`); `None`
    /// when everything received is durable.
    pub synced_size: Option<i64>,
    pub synced_hash_state: Option<Vec<u8>>,
    /// The boot id of the machine that wrote the bytes past `synced_size`.
    pub written_boot: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
