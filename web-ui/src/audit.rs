//! The audit log, for registry admins only: the page at `/admin/audit` (a filter
//! form, newest first, older pages by id) and `GET /api/v1/audit`. Anonymous
//! visitors are asked to sign in (401), other users are refused (403), and on a
//! registry without accounts there is no log to show (404): nobody there is anyone.
//!
//! Also the one place the web UI records a refusal of an audited action.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use berth_storage::audit::{self, Action, AuditFilter, AuditRecord, Outcome};
use berth_storage::StorageError;
use minijinja::context;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{ApiResult, PageResult, WebError};
use crate::pages::render;
use crate::session::Visitor;
use crate::Web;

/// Registry admins only.
fn check_reader(visitor: &Visitor) -> Result<(), WebError> {
    if !visitor.accounts {
        return Err(WebError::AccountsOff);
    }
    match visitor.user() {
        None => Err(WebError::SignInRequired),
        Some(user) if user.admin => Ok(()),
        Some(_) => Err(WebError::Forbidden),
    }
}

/// The filters, as a query string gives them (a form's empty fields are no filter).
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct AuditQuery {
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    limit: Option<String>,
    #[serde(default)]
    before: Option<String>,
}

fn given(field: &Option<String>) -> Option<&str> {
    field.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl AuditQuery {
    fn filter(&self) -> Result<AuditFilter, WebError> {
        let bad = |what: &str, why: String| WebError::BadRequest(format!("{what}: {why}"));
        let now = chrono::Utc::now().timestamp_millis();
        let time = |what, field: &Option<String>| {
            given(field)
                .map(|t| audit::parse_time(t, now).map_err(|why| bad(what, why)))
                .transpose()
        };
        let number = |what, field: &Option<String>| {
            given(field)
                .map(|n| {
                    n.parse::<u64>()
                        .map_err(|_| bad(what, format!("{n:?} is not a positive number")))
                })
                .transpose()
        };
        let action = match given(&self.action) {
            None => None,
            Some(name) => Some(Action::parse(name).ok_or_else(|| {
                let known: Vec<&str> = Action::ALL.iter().map(|a| a.name()).collect();
                bad("action", format!("unknown; one of {}", known.join(", ")))
            })?),
        };
        Ok(AuditFilter {
            actor: given(&self.actor).map(str::to_owned),
            action,
            since: time("since", &self.since)?,
            until: time("until", &self.until)?,
            before: number("before", &self.before)?.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
            limit: number("limit", &self.limit)?,
        })
    }

    /// This query for the page after `entries` (older ones), if it may have any.
    fn next(&self, filter: &AuditFilter, entries: &[AuditRecord]) -> Option<String> {
        let last = entries
            .last()
            .filter(|_| entries.len() as u64 == filter.page_size())?;
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (key, value) in [
            ("actor", &self.actor),
            ("action", &self.action),
            ("since", &self.since),
            ("until", &self.until),
            ("limit", &self.limit),
        ] {
            if let Some(value) = given(value) {
                query.append_pair(key, value);
            }
        }
        query.append_pair("before", &last.id.to_string());
        Some(query.finish())
    }
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// `GET /api/v1/audit?actor=&action=&since=&until=&limit=&before=`: entries newest
/// first (`time` RFC 3339, `at` Unix milliseconds), and `next_before` to pass as
/// `before` for older ones (null on the last page).
pub async fn list(
    web: web::Data<Web>,
    visitor: Visitor,
    query: web::Query<AuditQuery>,
) -> ApiResult {
    check_reader(&visitor)?;
    let filter = query.filter()?;
    let entries = web.storage.audit_log(&filter).await?;
    let next_before = query
        .next(&filter, &entries)
        .and(entries.last().map(|e| e.id));
    let entries: Vec<_> = entries
        .into_iter()
        .map(|e| {
            let mut value = json!(e);
            value["time"] = json!(rfc3339(e.at));
            value
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "entries": entries,
        "next_before": next_before,
    })))
}

/// `/admin/audit`: the same, as a page with a filter form.
pub async fn page(
    web: web::Data<Web>,
    visitor: Visitor,
    req: HttpRequest,
    query: web::Query<AuditQuery>,
) -> PageResult {
    check_reader(&visitor)?;
    let filter = query.filter()?;
    let entries = web.storage.audit_log(&filter).await?;
    let next = query.next(&filter, &entries);
    let rows: Vec<_> = entries
        .iter()
        .map(|e| context! { time => rfc3339(e.at), ..minijinja::Value::from_serialize(e) })
        .collect();
    let actions: Vec<&str> = Action::ALL.iter().map(|a| a.name()).collect();
    render(
        &web,
        &visitor,
        &req,
        StatusCode::OK,
        "audit.html",
        context! {
            entries => rows,
            actions,
            filter => minijinja::Value::from_serialize(&*query),
            next,
        },
    )
}

/// Records that `visitor`, signed in, was refused `action` on `target`, when
/// `checked` says so: by access, or by an immutable tag rule (as the registry API's
/// refusals are).
pub(crate) async fn refused<T>(
    web: &Web,
    visitor: &Visitor,
    action: Action,
    target: &str,
    checked: &Result<T, WebError>,
) {
    // A signed-in user's refusal only: anyone can send anonymous ones, as fast as
    // they like, and each would be a row.
    if visitor.user().is_none() {
        return;
    }
    if let Err(why @ (WebError::Forbidden | WebError::Storage(StorageError::TagImmutable { .. }))) =
        checked
    {
        let entry = visitor.actor().entry(action, target);
        let entry = entry.outcome(Outcome::Denied).detail(why.to_string());
        web.storage.audit(entry).await;
    }
}
