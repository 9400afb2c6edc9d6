//! `berthd audit`: the audit log, newest first, filtered by actor, action and time.
//! Whoever may run `berthd` on the host reads it (as they may read the database).

use berth_storage::audit::{self, Action, AuditFilter};
use clap::Args;
use serde_json::json;

use crate::{millis_to_rfc3339, ConfigArgs};

#[derive(Args)]
pub(crate) struct AuditArgs {
    /// Only this actor's entries (a user name, or `berthd (local admin)`).
    #[arg(long)]
    actor: Option<String>,
    /// Only this action (sign_in, sign_in_failed, token_created, token_revoked,
    /// user_created, user_removed, user_changed, org_created, member_added,
    /// member_removed, member_role_changed, visibility_changed, tag_deleted,
    /// manifest_deleted, blob_deleted, retention_changed, retention_run,
    /// quota_changed, immutable_tag_rule_changed, webhook_changed).
    #[arg(long)]
    action: Option<String>,
    /// Entries at or after this time: RFC 3339 (2024-05-01T12:00:00Z) or a duration
    /// ago (24h, 7days).
    #[arg(long)]
    since: Option<String>,
    /// Entries before this time (as --since).
    #[arg(long)]
    until: Option<String>,
    /// At most this many entries (up to 1000).
    #[arg(long, default_value_t = audit::DEFAULT_PAGE)]
    limit: u64,
    /// Entries older than the one with this id (the next page).
    #[arg(long)]
    before: Option<i64>,
    /// One JSON array instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    config: ConfigArgs,
}

pub(crate) async fn audit_command(args: AuditArgs) -> anyhow::Result<()> {
    let now = chrono::Utc::now().timestamp_millis();
    let time = |t: &Option<String>| {
        t.as_deref()
            .map(|t| audit::parse_time(t, now).map_err(anyhow::Error::msg))
            .transpose()
    };
    let action = match args.action.as_deref() {
        None => None,
        Some(name) => {
            Some(Action::parse(name).ok_or_else(|| anyhow::anyhow!("unknown action {name:?}"))?)
        }
    };
    let filter = AuditFilter {
        actor: args.actor.clone(),
        action,
        since: time(&args.since)?,
        until: time(&args.until)?,
        before: args.before,
        limit: Some(args.limit),
    };
    let storage = berth_server::open_storage(&args.config.resolve()?).await?;
    let entries = storage.audit_log(&filter).await?;
    if args.json {
        let entries: Vec<_> = entries
            .iter()
            .map(|e| {
                let mut value = json!(e);
                value["time"] = json!(millis_to_rfc3339(e.at));
                value
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    let text = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
    println!("ID\tTIME\tACTOR\tADDRESS\tACTION\tTARGET\tOUTCOME\tDETAIL");
    for e in &entries {
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            e.id,
            millis_to_rfc3339(e.at),
            text(&e.actor),
            text(&e.address),
            e.action,
            text(&e.target),
            e.outcome,
            e.detail.as_deref().unwrap_or(""),
        );
    }
    if entries.len() as u64 == filter.page_size() {
        if let Some(last) = entries.last() {
            eprintln!("(more with --before {})", last.id);
        }
    }
    Ok(())
}
