//! Events for one endpoint (a notification endpoint's run of them, or one for a
//! webhook, or a redelivery of it), and how their delivery went.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "event_deliveries")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// `notification:<name>` or `webhook:<id>`.
    pub endpoint: String,
    pub event_id: String,
    pub action: String,
    pub repository: String,
    /// What is sent: Distribution events joined by commas (wrapped in an envelope
    /// when sent), or a webhook's whole payload. `event_id`, `action` and
    /// `repository` are its first event's.
    pub body: String,
    /// How many events `body` holds.
    pub events: i32,
    /// A notification endpoint's run shared with others (`event_log`): then `body`
    /// is empty and the run's are the events.
    pub log_id: Option<i64>,
    /// See `events::Status`.
    pub status: i16,
    pub attempts: i32,
    pub next_at: i64,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub response_ms: Option<i32>,
    pub response_excerpt: Option<String>,
    pub callback_token: Option<String>,
    pub callback_state: Option<String>,
    pub callback_description: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
