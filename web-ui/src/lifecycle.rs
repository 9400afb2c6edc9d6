//! Storage usage and retention policies in the web UI: the JSON API (`/api/v1/usage`,
//! `/api/v1/namespaces/<ns>/usage`, `/api/v1/retention…`), the owner sections of the
//! repository and namespace pages, the "Preview and delete" page, and the admins'
//! registry usage page (`/usage`).
//!
//! Access follows the immutable tag rules' (see `tag_rules.rs`): a namespace's usage
//! and policies are its owners' (the user it is named after, the organization's
//! admins) and registry admins'; a private repository a visitor may not pull is a
//! 404, anyone else gets 401 before signing in and 403 after. The registry's usage is
//! the admins' only. JSON writes carry the session's CSRF token in `X-CSRF-Token`;
//! forms carry it as `csrf`.

use std::fmt::Write as _;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use berth_storage::explore::{Listing, Order};
use berth_storage::quotas::NamespaceUsage;
use berth_storage::repos::Viewer;
use berth_storage::retention::{RetentionPlan, RetentionPolicy};
use berth_storage::tag_rules::Scope;
use berth_storage::{Algorithm, Digest, StorageError};
use minijinja::context;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{ApiResult, PageResult, WebError};
use crate::pages::{render, see_other};
use crate::session::Visitor;
use crate::tag_rules::check_manager;
use crate::{mirrors, Web};

/// Longer than this is a typo (and would overflow milliseconds in places).
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);
/// Repositories per page in the namespace usage API.
const USAGE_PER_PAGE: u64 = 100;

// ---------------------------------------------------------------------------
// What the API and the pages show.

/// A retention policy as the API and the pages show it: durations as text
/// (`30days`, `12h`), which is also what a PUT accepts.
#[derive(Debug, Serialize)]
pub struct PolicyView {
    pub scope: String,
    pub keep_last: Option<u32>,
    pub keep_pattern: Option<String>,
    pub unpushed_for: Option<String>,
    pub unpulled_for: Option<String>,
}

impl From<&RetentionPolicy> for PolicyView {
    fn from(p: &RetentionPolicy) -> PolicyView {
        PolicyView {
            scope: p.scope.clone(),
            keep_last: p.keep_last,
            keep_pattern: p.keep_pattern.clone(),
            unpushed_for: p.unpushed_for.map(duration_text),
            unpulled_for: p.unpulled_for.map(duration_text),
        }
    }
}

/// `30days`, `12h`, `90m`, `45s`: the largest whole unit; else humantime's spelling.
/// Either way `humantime::parse_duration` reads it back.
pub fn duration_text(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 || secs == 0 {
        return humantime::format_duration(d).to_string();
    }
    for (unit, one, many) in [(86_400, "day", "days"), (3600, "h", "h"), (60, "m", "m")] {
        if secs.is_multiple_of(unit) {
            let n = secs / unit;
            return format!("{n}{}", if n == 1 { one } else { many });
        }
    }
    format!("{secs}s")
}

/// A namespace's usage against its quota, with what a bar needs.
#[derive(Debug, Serialize)]
pub struct UsageView {
    pub namespace: String,
    pub bytes: u64,
    pub quota: Option<u64>,
    /// Of the quota, one decimal (`"42.5"`); `None` without a quota.
    pub percent: Option<String>,
    pub over: bool,
}

impl From<NamespaceUsage> for UsageView {
    fn from(u: NamespaceUsage) -> UsageView {
        let percent = u.quota.map(|q| match q {
            0 if u.bytes == 0 => "0.0".to_owned(),
            0 => "100.0".to_owned(),
            q => format!("{:.1}", u.bytes as f64 * 100.0 / q as f64),
        });
        UsageView {
            over: u.quota.is_some_and(|q| u.bytes > q),
            namespace: u.namespace,
            bytes: u.bytes,
            quota: u.quota,
            percent,
        }
    }
}

/// A plan as the API and the preview page show it, with its fingerprint: a run
/// given the fingerprint goes ahead only if the plan is still the same.
#[derive(Debug, Serialize)]
pub struct PlanView {
    pub scope: String,
    #[serde(flatten)]
    pub plan: RetentionPlan,
    pub plan_id: String,
}

impl PlanView {
    fn new(scope: &str, plan: RetentionPlan) -> PlanView {
        PlanView {
            scope: scope.to_owned(),
            plan_id: fingerprint(&plan),
            plan,
        }
    }
}

/// 16 hex digits naming what a plan deletes (tags with their digests and push times,
/// and manifests); the bytes freed are not part of it (they move with other pushes).
fn fingerprint(plan: &RetentionPlan) -> String {
    let mut text = String::new();
    for t in &plan.tags {
        let _ = writeln!(
            text,
            "tag\t{}\t{}\t{}\t{}",
            t.repository, t.tag, t.digest, t.pushed_at
        );
    }
    for m in &plan.manifests {
        let _ = writeln!(text, "manifest\t{m}");
    }
    Digest::of(Algorithm::Sha256, text.as_bytes()).hex()[..16].to_owned()
}

/// The owner section's storage and retention part on a repository page.
#[derive(Debug, Serialize)]
pub struct RepositoryLifecycle {
    pub bytes: u64,
    pub namespace: Option<UsageView>,
    /// The repository's own policy.
    pub policy: Option<PolicyView>,
    /// Its namespace's (`acme/*`), which applies when it has none of its own.
    pub inherited: Option<PolicyView>,
    /// The scope whose policy applies, for "Preview and delete".
    pub applies: Option<String>,
}

pub async fn repository_lifecycle(web: &Web, name: &str) -> Result<RepositoryLifecycle, WebError> {
    let namespace = name.split_once('/').map(|(ns, _)| ns);
    let usage = match namespace {
        Some(ns) => Some(web.storage.namespace_usage(ns).await?.into()),
        None => None,
    };
    let policy = own_policy(web, name).await?;
    let inherited = match namespace {
        Some(ns) => own_policy(web, &format!("{ns}/*")).await?,
        None => None,
    };
    let applies = policy
        .as_ref()
        .or(inherited.as_ref())
        .map(|p| p.scope.clone());
    Ok(RepositoryLifecycle {
        bytes: web.storage.repository_usage(name).await?,
        namespace: usage,
        policy,
        inherited,
        applies,
    })
}

/// An owner section's figures, or `None` (logged) when they cannot be read: the rest
/// of the page, and of Manage, stays usable; the section says it is unavailable.
pub fn shown<T: Serialize>(figures: Result<T, WebError>) -> Option<T> {
    figures
        .inspect_err(|e| tracing::error!(error = %e, "usage and retention not shown"))
        .ok()
}

/// The owner section of a namespace page: usage, the given repositories' usage,
/// the namespace's policy and the repositories' own ones (which take precedence).
#[derive(Debug, Serialize)]
pub struct NamespaceLifecycle {
    pub usage: UsageView,
    pub repositories: Vec<RepositoryUsage>,
    pub policy: Option<PolicyView>,
    pub overrides: Vec<PolicyView>,
    pub scope: String,
}

#[derive(Debug, Serialize)]
pub struct RepositoryUsage {
    pub name: String,
    pub private: bool,
    pub bytes: u64,
}

pub async fn namespace_lifecycle(
    web: &Web,
    namespace: &str,
    repositories: impl IntoIterator<Item = (String, bool)>,
) -> Result<NamespaceLifecycle, WebError> {
    let scope = format!("{namespace}/*");
    let mut usages = Vec::new();
    for (name, private) in repositories {
        let bytes = web.storage.repository_usage(&name).await?;
        usages.push(RepositoryUsage {
            name,
            private,
            bytes,
        });
    }
    Ok(NamespaceLifecycle {
        usage: web.storage.namespace_usage(namespace).await?.into(),
        repositories: usages,
        policy: own_policy(web, &scope).await?,
        overrides: repository_policies(web, namespace).await?,
        scope,
    })
}

async fn own_policy(web: &Web, scope: &str) -> Result<Option<PolicyView>, WebError> {
    Ok(web
        .storage
        .retention_policies(Some(scope))
        .await?
        .first()
        .map(PolicyView::from))
}

/// The policies of the namespace's repositories (each wins over the namespace's).
async fn repository_policies(web: &Web, namespace: &str) -> Result<Vec<PolicyView>, WebError> {
    let prefix = format!("{namespace}/");
    Ok(web
        .storage
        .retention_policies(None)
        .await?
        .iter()
        .filter(|p| p.scope.starts_with(&prefix) && !p.scope.ends_with("/*"))
        .map(PolicyView::from)
        .collect())
}

// ---------------------------------------------------------------------------
// Access and input.

/// A scope's owners only (see the module comment); a scope that cannot be one is a
/// 400 saying why, under `what` ("retention policy", "usage").
pub(crate) async fn check_owner(
    web: &Web,
    visitor: &Visitor,
    scope: &str,
    what: &str,
) -> Result<(), WebError> {
    check_manager(web, visitor, scope)
        .await
        .map_err(|e| reworded(e, what))
}

/// Storage reports a bad scope or policy as an immutable tag rule's problem (they
/// share the grammar): said here as what it is.
fn reworded(e: WebError, what: &str) -> WebError {
    match e {
        WebError::Storage(StorageError::TagRuleInvalid(why)) => {
            WebError::BadRequest(format!("invalid {what}: {why}"))
        }
        other => other,
    }
}

/// Registry admins only (everyone on a registry without accounts).
fn check_admin(visitor: &Visitor) -> Result<(), WebError> {
    if !visitor.accounts || visitor.user().is_some_and(|u| u.admin) {
        return Ok(());
    }
    Err(match visitor.user() {
        None => WebError::SignInRequired,
        Some(_) => WebError::Forbidden,
    })
}

/// A scope given by `?scope=`, required.
fn required(scope: &Option<String>) -> Result<&str, WebError> {
    scope.as_deref().filter(|s| !s.is_empty()).ok_or_else(|| {
        WebError::BadRequest("scope is missing: ?scope=acme/app or ?scope=acme/*".into())
    })
}

/// The namespace a scope is about (`acme` for `acme/app` and `acme/*`).
fn namespace_of(scope: &str) -> Option<&str> {
    scope.split_once('/').map(|(ns, _)| ns)
}

/// `30days`, `12h`, `1h 30m`; empty or absent: no such condition.
fn parse_duration(field: &str, text: Option<&str>) -> Result<Option<Duration>, WebError> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let bad =
        |why: String| WebError::BadRequest(format!("invalid retention policy: {field} {why}"));
    if text.len() > 64 {
        return Err(bad(format!(
            "is {} bytes long; expected a duration such as 30days or 12h",
            text.len()
        )));
    }
    let d = humantime::parse_duration(text).map_err(|e| {
        bad(format!(
            "{text:?}: {e} (expected a duration such as 30days or 12h)"
        ))
    })?;
    if d.is_zero() {
        return Err(bad(
            "must be longer than 0 (leave it out for no such condition)".into(),
        ));
    }
    if d > MAX_DURATION {
        return Err(bad(format!("{text:?} is longer than 100 years")));
    }
    Ok(Some(d))
}

/// The fields of a policy, from JSON or a form (text for durations).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyInput {
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    keep_last: Option<u32>,
    #[serde(default)]
    keep_pattern: Option<String>,
    #[serde(default)]
    unpushed_for: Option<String>,
    #[serde(default)]
    unpulled_for: Option<String>,
}

impl PolicyInput {
    /// The policy for `scope`, checked by storage when set.
    fn policy(&self, scope: &str) -> Result<RetentionPolicy, WebError> {
        Ok(RetentionPolicy {
            scope: scope.to_owned(),
            keep_last: self.keep_last,
            keep_pattern: self.keep_pattern.clone(),
            unpushed_for: parse_duration("unpushed_for", self.unpushed_for.as_deref())?,
            unpulled_for: parse_duration("unpulled_for", self.unpulled_for.as_deref())?,
        })
    }
}

async fn set_policy(
    web: &Web,
    visitor: &Visitor,
    policy: &RetentionPolicy,
) -> Result<(), WebError> {
    // A pull-through cache's repositories are its upstream's: never changed here.
    mirrors::refuse_mirror(web, &policy.scope)?;
    web.storage
        .by(visitor.actor())
        .set_retention(policy)
        .await
        .map_err(|e| reworded(e.into(), "retention policy"))
}

/// The policy of exactly `scope`, or 404.
async fn existing_policy(web: &Web, scope: &str) -> Result<PolicyView, WebError> {
    match own_policy(web, scope).await? {
        Some(p) => Ok(p),
        None => Err(no_policy(web, scope).await?),
    }
}

/// "no retention policy on acme/app", saying which policy applies instead, if any.
async fn no_policy(web: &Web, scope: &str) -> Result<WebError, WebError> {
    if let Ok(Scope::Repository(_)) = Scope::parse(scope) {
        if let Some(ns) = namespace_of(scope) {
            let ns_scope = format!("{ns}/*");
            if own_policy(web, &ns_scope).await?.is_some() {
                return Ok(WebError::NotFound(format!(
                    "a retention policy of its own on {scope} (it follows the policy of {ns_scope}: use scope={ns_scope})"
                )));
            }
        }
    }
    Ok(WebError::NotFound(format!("a retention policy on {scope}")))
}

// ---------------------------------------------------------------------------
// The JSON API.

#[derive(Deserialize)]
pub struct ScopeQuery {
    scope: Option<String>,
    page: Option<u64>,
}

/// `GET /api/v1/usage` (admins: the registry and every namespace),
/// `?scope=acme/*` (a namespace, as `/api/v1/namespaces/acme/usage`) or
/// `?scope=acme/app` (a repository, and its namespace against the quota).
pub async fn usage(
    web: web::Data<Web>,
    visitor: Visitor,
    query: web::Query<ScopeQuery>,
) -> ApiResult {
    let Some(scope) = query.scope.as_deref() else {
        check_admin(&visitor)?;
        let registry = web.storage.registry_usage().await?;
        let namespaces = web.storage.namespace_usages().await?;
        return Ok(HttpResponse::Ok().json(json!({
            "blobs": registry.blobs,
            "stored_bytes": registry.stored_bytes,
            "logical_bytes": registry.logical_bytes,
            "dedup_ratio": registry.dedup_ratio(),
            "namespaces": namespaces,
        })));
    };
    check_owner(&web, &visitor, scope, "usage request").await?;
    match Scope::parse(scope)? {
        Scope::Namespace(ns) => namespace_usage_answer(&web, ns, query.page).await,
        Scope::Repository(name) => {
            if web.storage.repository_private(name).await?.is_none() {
                return Err(WebError::NotFound(format!("repository {name}")).into());
            }
            let namespace = match namespace_of(name) {
                Some(ns) => Some(web.storage.namespace_usage(ns).await?),
                None => None,
            };
            Ok(HttpResponse::Ok().json(json!({
                "repository": name,
                "bytes": web.storage.repository_usage(name).await?,
                "namespace": namespace,
            })))
        }
    }
}

#[derive(Deserialize)]
pub struct PageQuery {
    page: Option<u64>,
}

/// `GET /api/v1/namespaces/<ns>/usage?page=`: used bytes, quota, and the usage of
/// each of its repositories (100 a page, by name).
pub async fn namespace_usage(
    web: web::Data<Web>,
    visitor: Visitor,
    ns: web::Path<String>,
    query: web::Query<PageQuery>,
) -> ApiResult {
    let scope = format!("{ns}/*");
    check_owner(&web, &visitor, &scope, "namespace").await?;
    namespace_usage_answer(&web, &ns, query.page).await
}

async fn namespace_usage_answer(web: &Web, ns: &str, page: Option<u64>) -> ApiResult {
    let listing = Listing {
        namespace: Some(ns.to_owned()),
        order: Order::Name,
        page: page.unwrap_or(1).max(1),
        per_page: USAGE_PER_PAGE,
        ..Listing::default()
    };
    // Owners and admins may see every repository of the namespace.
    let found = web
        .storage
        .list_repositories(&Viewer::Everything, &listing)
        .await?;
    let usage = web.storage.namespace_usage(ns).await?;
    let mut repositories = Vec::new();
    for r in found.items {
        repositories.push(json!({
            "name": r.name,
            "private": r.private,
            "bytes": web.storage.repository_usage(&r.name).await?,
        }));
    }
    Ok(HttpResponse::Ok().json(json!({
        "namespace": usage.namespace,
        "bytes": usage.bytes,
        "quota": usage.quota,
        "total": found.total,
        "page": listing.page,
        "per_page": USAGE_PER_PAGE,
        "repositories": repositories,
    })))
}

/// `GET /api/v1/retention?scope=acme/app`: the repository's own policy and the one
/// it inherits from its namespace (`inherited`), and which applies; `?scope=acme/*`:
/// the namespace's policy and its repositories' own ones (`repositories`).
pub async fn get_policy(
    web: web::Data<Web>,
    visitor: Visitor,
    query: web::Query<ScopeQuery>,
) -> ApiResult {
    let scope = required(&query.scope)?;
    check_owner(&web, &visitor, scope, "retention policy").await?;
    let policy = own_policy(&web, scope).await?;
    let mut body = json!({ "scope": scope, "csrf": visitor.csrf(), "policy": policy });
    match Scope::parse(scope)? {
        Scope::Namespace(ns) => {
            body["repositories"] = json!(repository_policies(&web, ns).await?);
        }
        Scope::Repository(name) => {
            let inherited = match namespace_of(name) {
                Some(ns) => own_policy(&web, &format!("{ns}/*")).await?,
                None => None,
            };
            let applies = policy
                .as_ref()
                .or(inherited.as_ref())
                .map(|p| p.scope.clone());
            body["inherited"] = json!(inherited);
            body["applies"] = json!(applies);
        }
    }
    let mut res = HttpResponse::Ok();
    // The token for this visitor's writes; an anonymous one needs its cookie too.
    visitor.set_cookies(&mut res);
    Ok(res.json(body))
}

/// `PUT /api/v1/retention?scope=` with `{"keep_last", "keep_pattern",
/// "unpushed_for", "unpulled_for"}` (each optional; durations as text): sets, or
/// replaces, the scope's policy; 200 and the policy.
pub async fn put_policy(
    web: web::Data<Web>,
    visitor: Visitor,
    req: HttpRequest,
    query: web::Query<ScopeQuery>,
    body: web::Bytes,
) -> ApiResult {
    // Retention decides what is deleted: a token sets, removes or runs it only if it
    // may delete.
    visitor.check_api_write(&req, "delete")?;
    let input: PolicyInput = serde_json::from_slice(&body).map_err(|e| {
        WebError::BadRequest(format!(
            "expected {{\"keep_last\": 10, \"keep_pattern\": \"v*\", \"unpushed_for\": \"30days\", \"unpulled_for\": \"90days\"}} (each optional): {e}"
        ))
    })?;
    let scope = match (query.scope.as_deref(), input.scope.as_deref()) {
        (Some(q), Some(b)) if q != b => {
            return Err(WebError::BadRequest(format!(
                "the scope in the body ({b}) is not the one in the URL ({q})"
            ))
            .into())
        }
        (Some(s), _) | (None, Some(s)) => s.to_owned(),
        (None, None) => required(&None)?.to_owned(),
    };
    check_owner(&web, &visitor, &scope, "retention policy").await?;
    set_policy(&web, &visitor, &input.policy(&scope)?).await?;
    Ok(HttpResponse::Ok().json(existing_policy(&web, &scope).await?))
}

/// `DELETE /api/v1/retention?scope=`: 204; 404 if the scope had no policy.
pub async fn delete_policy(
    web: web::Data<Web>,
    visitor: Visitor,
    req: HttpRequest,
    query: web::Query<ScopeQuery>,
) -> ApiResult {
    // Retention decides what is deleted: a token sets, removes or runs it only if it
    // may delete.
    visitor.check_api_write(&req, "delete")?;
    let scope = required(&query.scope)?;
    check_owner(&web, &visitor, scope, "retention policy").await?;
    if !web
        .storage
        .by(visitor.actor())
        .remove_retention(scope)
        .await?
    {
        return Err(no_policy(&web, scope).await?.into());
    }
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /api/v1/retention/preview?scope=`: what the scope's policy would delete now.
pub async fn preview(
    web: web::Data<Web>,
    visitor: Visitor,
    query: web::Query<ScopeQuery>,
) -> ApiResult {
    let scope = required(&query.scope)?;
    check_owner(&web, &visitor, scope, "retention policy").await?;
    existing_policy(&web, scope).await?;
    let plan = web.storage.retention_preview(Some(scope)).await?;
    Ok(HttpResponse::Ok().json(PlanView::new(scope, plan)))
}

#[derive(Deserialize)]
pub struct RunQuery {
    scope: Option<String>,
    /// A preview's `plan_id`: run only if the plan is still that one.
    plan: Option<String>,
}

/// `POST /api/v1/retention/run?scope=[&plan=]`: applies the scope's policy now; 200
/// and what it deleted. With `plan` (a preview's `plan_id`), 409 and nothing deleted
/// when the plan is no longer that one.
pub async fn run(
    web: web::Data<Web>,
    visitor: Visitor,
    req: HttpRequest,
    query: web::Query<RunQuery>,
) -> ApiResult {
    // Retention decides what is deleted: a token sets, removes or runs it only if it
    // may delete.
    visitor.check_api_write(&req, "delete")?;
    let scope = required(&query.scope)?;
    check_owner(&web, &visitor, scope, "retention policy").await?;
    mirrors::refuse_mirror(&web, scope)?;
    existing_policy(&web, scope).await?;
    if let Some(expected) = query.plan.as_deref() {
        let now = web.storage.retention_preview(Some(scope)).await?;
        if fingerprint(&now) != expected {
            return Err(changed().into());
        }
    }
    let done = web
        .storage
        .by(visitor.actor())
        .apply_retention(Some(scope))
        .await?;
    Ok(HttpResponse::Ok().json(PlanView::new(scope, done)))
}

fn changed() -> WebError {
    WebError::Conflict(
        "the plan changed since it was previewed (a push, a pull or another change); preview it again"
            .into(),
    )
}

// ---------------------------------------------------------------------------
// Pages and forms.

/// Where a scope's policy is shown: its repository's page or its namespace's.
fn page_of(scope: &str) -> String {
    match scope.strip_suffix("/*") {
        Some(ns) => format!("/u/{ns}#retention"),
        None => format!("/r/{scope}#retention"),
    }
}

/// The policy form's fields (all text: empty means "no such condition").
#[derive(Deserialize)]
pub struct PolicyForm {
    #[serde(default)]
    csrf: String,
    scope: String,
    #[serde(default)]
    keep_last: String,
    #[serde(default)]
    keep_pattern: String,
    #[serde(default)]
    unpushed_for: String,
    #[serde(default)]
    unpulled_for: String,
}

pub async fn set_form(
    web: web::Data<Web>,
    visitor: Visitor,
    form: web::Form<PolicyForm>,
) -> PageResult {
    visitor.check_csrf(&form.csrf)?;
    check_owner(&web, &visitor, &form.scope, "retention policy").await?;
    let keep_last = match form.keep_last.trim() {
        "" => None,
        n => Some(n.parse::<u32>().map_err(|_| {
            WebError::BadRequest(format!(
                "invalid retention policy: keep the last {n:?} tags: expected a whole number of tags"
            ))
        })?),
    };
    let text = |t: &str| Some(t.trim().to_owned()).filter(|t| !t.is_empty());
    let input = PolicyInput {
        scope: None,
        keep_last,
        keep_pattern: text(&form.keep_pattern),
        unpushed_for: text(&form.unpushed_for),
        unpulled_for: text(&form.unpulled_for),
    };
    set_policy(&web, &visitor, &input.policy(&form.scope)?).await?;
    Ok(see_other(&page_of(&form.scope)))
}

#[derive(Deserialize)]
pub struct ScopeForm {
    #[serde(default)]
    csrf: String,
    scope: String,
}

pub async fn remove_form(
    web: web::Data<Web>,
    visitor: Visitor,
    form: web::Form<ScopeForm>,
) -> PageResult {
    visitor.check_csrf(&form.csrf)?;
    check_owner(&web, &visitor, &form.scope, "retention policy").await?;
    if !web
        .storage
        .by(visitor.actor())
        .remove_retention(&form.scope)
        .await?
    {
        return Err(no_policy(&web, &form.scope).await?.into());
    }
    Ok(see_other(&page_of(&form.scope)))
}

#[derive(Deserialize)]
pub struct PreviewParams {
    #[serde(default)]
    scope: String,
}

/// "Preview and delete": what the scope's policy would delete now, and a button
/// that deletes exactly that.
pub async fn preview_page(
    web: web::Data<Web>,
    visitor: Visitor,
    req: HttpRequest,
    params: web::Query<PreviewParams>,
) -> PageResult {
    check_owner(&web, &visitor, &params.scope, "retention policy").await?;
    let policy = existing_policy(&web, &params.scope).await?;
    let plan = web.storage.retention_preview(Some(&params.scope)).await?;
    preview_response(&web, &visitor, &req, StatusCode::OK, policy, plan, None)
}

async fn preview_response_for(
    web: &Web,
    visitor: &Visitor,
    req: &HttpRequest,
    status: StatusCode,
    scope: &str,
    message: Option<&str>,
) -> PageResult {
    let policy = existing_policy(web, scope).await?;
    let plan = web.storage.retention_preview(Some(scope)).await?;
    preview_response(web, visitor, req, status, policy, plan, message)
}

fn preview_response(
    web: &Web,
    visitor: &Visitor,
    req: &HttpRequest,
    status: StatusCode,
    policy: PolicyView,
    plan: RetentionPlan,
    message: Option<&str>,
) -> PageResult {
    let view = PlanView::new(&policy.scope, plan);
    render(
        web,
        visitor,
        req,
        status,
        "retention_preview.html",
        context! {
            back => page_of(&policy.scope),
            namespace_wide => policy.scope.ends_with("/*"),
            policy, plan => view, message,
        },
    )
}

#[derive(Deserialize)]
pub struct RunForm {
    #[serde(default)]
    csrf: String,
    scope: String,
    #[serde(default)]
    plan: String,
}

/// The preview page's confirm button: deletes what was previewed, or, if the plan
/// changed meanwhile, shows the new one (409) and deletes nothing.
pub async fn run_form(
    web: web::Data<Web>,
    visitor: Visitor,
    req: HttpRequest,
    form: web::Form<RunForm>,
) -> PageResult {
    visitor.check_csrf(&form.csrf)?;
    check_owner(&web, &visitor, &form.scope, "retention policy").await?;
    mirrors::refuse_mirror(&web, &form.scope)?;
    let policy = existing_policy(&web, &form.scope).await?;
    let now = web.storage.retention_preview(Some(&form.scope)).await?;
    if fingerprint(&now) != form.plan {
        return preview_response_for(
            &web,
            &visitor,
            &req,
            StatusCode::CONFLICT,
            &form.scope,
            Some(&changed().to_string()),
        )
        .await;
    }
    let done = web
        .storage
        .by(visitor.actor())
        .apply_retention(Some(&form.scope))
        .await?;
    render(
        &web,
        &visitor,
        &req,
        StatusCode::OK,
        "retention_preview.html",
        context! {
            back => page_of(&form.scope),
            namespace_wide => form.scope.ends_with("/*"),
            policy, done => PlanView::new(&form.scope, done),
        },
    )
}

/// `/usage`: the registry's usage (admins): blobs, stored and logical bytes,
/// deduplication, and every namespace against its quota.
pub async fn usage_page(web: web::Data<Web>, visitor: Visitor, req: HttpRequest) -> PageResult {
    check_admin(&visitor)?;
    let registry = web.storage.registry_usage().await?;
    let namespaces: Vec<UsageView> = web
        .storage
        .namespace_usages()
        .await?
        .into_iter()
        .map(UsageView::from)
        .collect();
    render(
        &web,
        &visitor,
        &req,
        StatusCode::OK,
        "usage.html",
        context! {
            registry => context! {
                blobs => registry.blobs,
                stored_bytes => registry.stored_bytes,
                logical_bytes => registry.logical_bytes,
                dedup_ratio => format!("{:.2}", registry.dedup_ratio()),
            },
            namespaces,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_back_as_written() {
        for (text, secs) in [
            ("30days", 30 * 86_400),
            ("1day", 86_400),
            ("12h", 12 * 3600),
            ("90m", 90 * 60),
            ("45s", 45),
        ] {
            let d = Duration::from_secs(secs);
            assert_eq!(duration_text(d), text);
            assert_eq!(humantime::parse_duration(text).unwrap(), d);
        }
        let odd = Duration::from_millis(1500);
        assert_eq!(humantime::parse_duration(&duration_text(odd)).unwrap(), odd);
    }

    #[test]
    fn durations_are_checked() {
        assert_eq!(parse_duration("x", None).unwrap(), None);
        assert_eq!(parse_duration("x", Some(" ")).unwrap(), None);
        assert_eq!(
            parse_duration("x", Some("1h 30m")).unwrap(),
            Some(Duration::from_secs(5400))
        );
        for bad in ["30 parsecs", "0s", "200years", "-1h", &"9".repeat(100)] {
            let e = parse_duration("unpushed_for", Some(bad))
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("invalid retention policy: unpushed_for"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn usage_percentages() {
        let usage = |bytes, quota| {
            UsageView::from(NamespaceUsage {
                namespace: "acme".into(),
                bytes,
                quota,
            })
        };
        assert_eq!(usage(425, Some(1000)).percent.as_deref(), Some("42.5"));
        assert!(!usage(425, Some(1000)).over);
        assert!(usage(1001, Some(1000)).over);
        assert_eq!(usage(5, None).percent, None);
        assert_eq!(usage(0, Some(0)).percent.as_deref(), Some("0.0"));
    }

    #[test]
    fn policies_are_shown_on_their_page() {
        assert_eq!(page_of("acme/app"), "/r/acme/app#retention");
        assert_eq!(page_of("acme/team/app"), "/r/acme/team/app#retention");
        assert_eq!(page_of("acme/*"), "/u/acme#retention");
    }

    fn sample_plan() -> RetentionPlan {
        let mut plan = RetentionPlan::default();
        plan.tags.push(berth_storage::retention::DoomedTag {
            repository: "acme/app".into(),
            tag: "old-1".into(),
            digest: format!("sha256:{}", "a".repeat(64)),
            pushed_at: 0,
            last_pulled_at: None,
        });
        plan.manifests
            .push(format!("acme/app@sha256:{}", "a".repeat(64)));
        plan.freed_bytes = 2_500_000;
        plan
    }

    #[test]
    fn the_preview_page_lists_the_plan_and_then_what_went() {
        let policy = PolicyView::from(&RetentionPolicy {
            scope: "acme/*".into(),
            keep_last: Some(3),
            keep_pattern: Some("v*".into()),
            unpushed_for: Some(Duration::from_secs(30 * 86_400)),
            unpulled_for: None,
        });
        let html = crate::templates::render(
            "retention_preview.html",
            context! { policy, plan => PlanView::new("acme/*", sample_plan()), namespace_wide => true, back => "/u/acme#retention" },
        )
        .unwrap();
        assert!(html.contains("old-1") && html.contains("2.5 MB"), "{html}");
        assert!(
            html.contains("not among the 3 most recently pushed and not pushed for 30days"),
            "{html}"
        );
        assert!(html.contains("name=\"plan\" value=\""), "{html}");
        let policy = PolicyView::from(&RetentionPolicy {
            scope: "acme/app".into(),
            keep_last: Some(1),
            keep_pattern: None,
            unpushed_for: None,
            unpulled_for: None,
        });
        let html = crate::templates::render(
            "retention_preview.html",
            context! { policy, done => PlanView::new("acme/app", sample_plan()), back => "/r/acme/app#retention" },
        )
        .unwrap();
        assert!(
            html.contains("Deleted 1 tag and 1 manifest") && html.contains("old-1"),
            "{html}"
        );
        assert!(!html.contains("/manage/retention/run"), "{html}");
    }

    #[test]
    fn plans_are_named_by_what_they_delete() {
        let plan = sample_plan();
        let mut other = sample_plan();
        other.freed_bytes = 1;
        assert_eq!(fingerprint(&plan), fingerprint(&other));
        other.tags[0].pushed_at = 1;
        assert_ne!(fingerprint(&plan), fingerprint(&other));
        assert_eq!(fingerprint(&plan).len(), 16);
    }
}
