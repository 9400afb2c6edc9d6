//! A run of fanned-out events (up to an envelope's worth) that notification endpoints'
//! deliveries share: stored once however many endpoints take it, removed when the last
//! delivery naming it is.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "event_log")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The events in Distribution's JSON form, joined by commas.
    pub body: String,
    pub events: i32,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
