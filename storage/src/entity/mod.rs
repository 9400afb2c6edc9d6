//! Database tables, one module each. Timestamps are Unix milliseconds (portable across
//! SQLite and PostgreSQL); JSON columns hold small lists as text.

pub mod audit_log;
pub mod blob;
pub mod blob_object;
pub mod event_delivery;
pub mod event_lease;
pub mod event_log;
pub mod event_outbox;
pub mod immutable_tag_rule;
pub mod invalidation;
pub mod lease;
pub mod manifest;
pub mod manifest_blob;
pub mod manifest_child;
pub mod quota;
pub mod repository;
pub mod repository_blob;
pub mod repository_star;
pub mod retention_policy;
pub mod tag;
pub mod upload;
pub mod upload_tombstone;
pub mod webhook;

pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
