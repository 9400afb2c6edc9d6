//! The audit log: who did what, from where, when, and whether it worked, for the
//! actions a security team asks about (sign-ins, accounts, tokens, memberships,
//! visibility, deletions, retention and quotas). Admins read it (`berthd audit`, the
//! JSON API, the web page); nobody edits it; entries older than the configured
//! retention expire.
//!
//! A change is recorded in the transaction that makes it where one is at hand
//! ([`record`], which the accounts' transactions call too, and the `Storage` writes
//! made through [`Storage::by`]); otherwise, and for refusals, right after
//! ([`Storage::audit`]). Entries hold names and ids, never a password or a token's
//! secret; text a client chose (a user name tried at sign-in) is cut short and
//! stripped of control characters, so a flood of odd sign-ins cannot bloat the table
//! or forge lines in `berthd audit`'s output.

use std::net::IpAddr;
use std::time::Duration;

use sea_orm::entity::prelude::*;
use sea_orm::{ActiveValue::Set, QueryOrder, QuerySelect};
use serde::Serialize;

use crate::entity::audit_log as row;
use crate::entity::now_millis;
use crate::error::Result;
use crate::Storage;

/// What was done. The names are stable: filters, the JSON API and scripts use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    SignIn,
    SignInFailed,
    TokenCreated,
    TokenRevoked,
    UserCreated,
    UserRemoved,
    /// A password (or another property of the account) changed.
    UserChanged,
    OrgCreated,
    MemberAdded,
    MemberRemoved,
    MemberRoleChanged,
    VisibilityChanged,
    TagDeleted,
    ManifestDeleted,
    BlobDeleted,
    RetentionChanged,
    /// Retention policies applied: one entry per run, with what it deleted.
    RetentionRun,
    QuotaChanged,
    ImmutableTagRuleChanged,
    /// A webhook added or removed (a channel data leaves the registry by).
    WebhookChanged,
}

impl Action {
    pub const ALL: [Action; 20] = [
        Action::SignIn,
        Action::SignInFailed,
        Action::TokenCreated,
        Action::TokenRevoked,
        Action::UserCreated,
        Action::UserRemoved,
        Action::UserChanged,
        Action::OrgCreated,
        Action::MemberAdded,
        Action::MemberRemoved,
        Action::MemberRoleChanged,
        Action::VisibilityChanged,
        Action::TagDeleted,
        Action::ManifestDeleted,
        Action::BlobDeleted,
        Action::RetentionChanged,
        Action::RetentionRun,
        Action::QuotaChanged,
        Action::ImmutableTagRuleChanged,
        Action::WebhookChanged,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Action::SignIn => "sign_in",
            Action::SignInFailed => "sign_in_failed",
            Action::TokenCreated => "token_created",
            Action::TokenRevoked => "token_revoked",
            Action::UserCreated => "user_created",
            Action::UserRemoved => "user_removed",
            Action::UserChanged => "user_changed",
            Action::OrgCreated => "org_created",
            Action::MemberAdded => "member_added",
            Action::MemberRemoved => "member_removed",
            Action::MemberRoleChanged => "member_role_changed",
            Action::VisibilityChanged => "visibility_changed",
            Action::TagDeleted => "tag_deleted",
            Action::ManifestDeleted => "manifest_deleted",
            Action::BlobDeleted => "blob_deleted",
            Action::RetentionChanged => "retention_changed",
            Action::RetentionRun => "retention_run",
            Action::QuotaChanged => "quota_changed",
            Action::ImmutableTagRuleChanged => "immutable_tag_rule_changed",
            Action::WebhookChanged => "webhook_changed",
        }
    }

    /// The action named `name` (as [`Action::name`] spells it).
    pub fn parse(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Attempted and failed (a wrong password).
    Failure,
    /// Refused before it was tried (rate limited, not allowed).
    Denied,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
        }
    }
}

/// Who acts, and from which address (the client's, as the login rate limiter keys
/// it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actor {
    pub name: Option<String>,
    pub address: Option<String>,
}

impl Actor {
    /// A user (or a name someone tried) at a client address.
    pub fn user(name: &str, address: Option<IpAddr>) -> Actor {
        Actor {
            name: Some(name.to_owned()),
            address: address.map(|a| a.to_string()),
        }
    }

    /// Somebody not signed in, at a client address.
    pub fn anonymous(address: Option<IpAddr>) -> Actor {
        Actor {
            name: None,
            address: address.map(|a| a.to_string()),
        }
    }

    /// Whoever runs `berthd`'s admin commands on the server's host.
    pub fn local_admin() -> Actor {
        Actor {
            name: Some("berthd (local admin)".into()),
            address: None,
        }
    }

    /// The server itself (`what`: the task, e.g. garbage collection).
    pub fn server(what: &str) -> Actor {
        Actor {
            name: Some(format!("berthd ({what})")),
            address: None,
        }
    }

    /// A successful `action` on `target` by this actor.
    pub fn entry<'t>(&self, action: Action, target: impl Into<Option<&'t str>>) -> AuditEntry {
        AuditEntry {
            actor: self.name.clone(),
            address: self.address.clone(),
            action,
            target: target.into().map(str::to_owned),
            outcome: Outcome::Success,
            detail: None,
        }
    }
}

/// One entry to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub actor: Option<String>,
    pub address: Option<String>,
    pub action: Action,
    pub target: Option<String>,
    pub outcome: Outcome,
    pub detail: Option<String>,
}

impl AuditEntry {
    pub fn detail(mut self, detail: impl Into<String>) -> AuditEntry {
        self.detail = Some(detail.into());
        self
    }

    pub fn outcome(mut self, outcome: Outcome) -> AuditEntry {
        self.outcome = outcome;
        self
    }
}

/// The longest actor, address or target kept, in characters (user and repository
/// names are far shorter; a longer one was made up by a client).
const MAX_NAME_CHARS: usize = 256;
const MAX_DETAIL_CHARS: usize = 1024;

/// `text` cut to `max` characters, control characters replaced (a newline or escape
/// sequence in a name tried at sign-in must not reach a terminal or a log line).
fn bounded(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// Records `entry` on `db`: a connection, or the transaction of the change it describes
/// (so that both commit or neither does).
pub async fn record(db: &impl ConnectionTrait, entry: &AuditEntry) -> Result<(), DbErr> {
    let name = |s: &Option<String>| s.as_deref().map(|s| bounded(s, MAX_NAME_CHARS));
    row::Entity::insert(row::ActiveModel {
        at: Set(now_millis()),
        actor: Set(name(&entry.actor)),
        address: Set(name(&entry.address)),
        action: Set(entry.action.name().to_owned()),
        target: Set(name(&entry.target)),
        outcome: Set(entry.outcome.name().to_owned()),
        detail: Set(entry
            .detail
            .as_deref()
            .map(|s| bounded(s, MAX_DETAIL_CHARS))),
        ..Default::default()
    })
    .exec(db)
    .await?;
    Ok(())
}

/// An entry as read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    pub id: i64,
    /// Unix milliseconds.
    pub at: i64,
    pub actor: Option<String>,
    pub address: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub outcome: String,
    pub detail: Option<String>,
}

impl From<row::Model> for AuditRecord {
    fn from(m: row::Model) -> AuditRecord {
        AuditRecord {
            id: m.id,
            at: m.at,
            actor: m.actor,
            address: m.address,
            action: m.action,
            target: m.target,
            outcome: m.outcome,
            detail: m.detail,
        }
    }
}

/// Entries shown per page unless fewer are asked for.
pub const DEFAULT_PAGE: u64 = 50;
/// The most entries one read returns, whatever is asked.
pub const MAX_PAGE: u64 = 1000;

/// Which entries to read: every condition given must hold. Newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<Action>,
    /// Unix milliseconds, inclusive.
    pub since: Option<i64>,
    /// Unix milliseconds, exclusive.
    pub until: Option<i64>,
    /// Entries older than this id (the previous page's last).
    pub before: Option<i64>,
    /// At most this many ([`DEFAULT_PAGE`] if `None`, never more than [`MAX_PAGE`]).
    pub limit: Option<u64>,
}

impl AuditFilter {
    pub fn page_size(&self) -> u64 {
        self.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE)
    }
}

/// A point in time given as RFC 3339 (`2024-05-01T12:00:00Z`) or as a duration
/// before `now_ms` (`24h`, `7days`), in Unix milliseconds.
pub fn parse_time(text: &str, now_ms: i64) -> std::result::Result<i64, String> {
    let text = text.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    match humantime::parse_duration(text) {
        Ok(ago) => Ok(now_ms.saturating_sub(i64::try_from(ago.as_millis()).unwrap_or(i64::MAX))),
        Err(_) => Err(format!(
            "{text:?} is neither an RFC 3339 time (2024-05-01T12:00:00Z) nor a duration ago (24h, 7days)"
        )),
    }
}

impl Storage {
    /// This storage with its changes recorded as `actor`'s (see `audit`): cheap, for
    /// one request or command.
    pub fn by(&self, actor: Actor) -> Storage {
        Storage {
            actor: std::sync::Arc::new(actor),
            ..self.clone()
        }
    }

    /// Records `entry` in a transaction of its own, for an action that had none at hand
    /// (or was refused). A failure is logged, not returned: the action it describes
    /// already happened (or was already refused).
    pub async fn audit(&self, entry: AuditEntry) {
        let written = async {
            let txn = self.write().await?;
            record(&*txn, &entry).await?;
            Ok::<_, crate::StorageError>(txn.commit().await?)
        }
        .await;
        if let Err(e) = written {
            tracing::error!(error = %e, action = entry.action.name(), "cannot write an audit log entry");
        }
    }

    /// Records `action` on `target` by this storage's actor (see [`Storage::by`]) in
    /// `txn`, the transaction of the change.
    pub(crate) async fn audited(
        &self,
        txn: &impl ConnectionTrait,
        action: Action,
        target: &str,
        detail: Option<String>,
    ) -> Result<()> {
        let mut entry = self.actor.entry(action, target);
        entry.detail = detail;
        Ok(record(txn, &entry).await?)
    }

    /// The entries `filter` selects, newest first.
    pub async fn audit_log(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        let mut q = row::Entity::find();
        if let Some(actor) = &filter.actor {
            q = q.filter(row::Column::Actor.eq(actor.as_str()));
        }
        if let Some(action) = filter.action {
            q = q.filter(row::Column::Action.eq(action.name()));
        }
        if let Some(since) = filter.since {
            q = q.filter(row::Column::At.gte(since));
        }
        if let Some(until) = filter.until {
            q = q.filter(row::Column::At.lt(until));
        }
        if let Some(before) = filter.before {
            q = q.filter(row::Column::Id.lt(before));
        }
        Ok(q.order_by_desc(row::Column::Id)
            .limit(filter.page_size())
            .all(&self.db)
            .await?
            .into_iter()
            .map(AuditRecord::from)
            .collect())
    }

    /// Deletes the entries older than `max_age`; returns how many.
    pub async fn expire_audit_log(&self, max_age: Duration) -> Result<u64> {
        let cutoff =
            now_millis().saturating_sub(i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX));
        let txn = self.write().await?;
        let deleted = row::Entity::delete_many()
            .filter(row::Column::At.lt(cutoff))
            .exec(&*txn)
            .await?;
        txn.commit().await?;
        Ok(deleted.rows_affected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_names_read_back() {
        for a in Action::ALL {
            assert_eq!(Action::parse(a.name()), Some(a));
        }
        assert_eq!(Action::parse("sign_in' OR 1=1"), None);
    }

    #[test]
    fn client_chosen_text_is_bounded_and_printable() {
        assert_eq!(bounded("alice", MAX_NAME_CHARS), "alice");
        assert_eq!(bounded("a\nb\u{1b}[31m", 10), "a\u{fffd}b\u{fffd}[31m");
        let long = "x".repeat(10_000);
        assert_eq!(bounded(&long, 256).chars().count(), 257);
    }

    #[test]
    fn times_are_rfc3339_or_a_duration_ago() {
        let now = 1_700_000_000_000;
        assert_eq!(parse_time("24h", now).unwrap(), now - 86_400_000);
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z", now).unwrap(),
            1_700_000_000_000
        );
        assert!(parse_time("yesterday", now).is_err());
    }
}
