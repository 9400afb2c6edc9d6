//! Webhooks, managed by a namespace's owners (and admins) for one repository
//! (`acme/app`) or every repository of the namespace (`acme/*`): the JSON API
//! (`/api/v1/webhooks`), the `/manage/webhooks?scope=` page, and the callback URL
//! receivers may post their verdict to (Docker Hub's webhook chains).
//!
//! A webhook receives Docker Hub's push payload for every tag pushed, signed with
//! its secret if it has one; its recent deliveries show status, response time and
//! the start of the response, and any of them can be sent again.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use berth_events::webhooks::WebhookRequest;
use berth_storage::events::queue::{Delivery, Status};
use berth_storage::events::webhooks::{webhook_scope, Webhook};
use minijinja::context;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{ApiResult, PageResult, WebError};
use crate::lifecycle::check_owner;
use crate::pages::{render, see_other};
use crate::session::Visitor;
use crate::tag_rules::check_manager_of_hidden;
use crate::Web;

/// Deliveries listed per webhook.
const LISTED_DELIVERIES: u64 = 50;

/// A delivery as the API and the page show it.
#[derive(Debug, Serialize)]
pub struct DeliveryView {
    pub id: i64,
    pub event_id: String,
    pub status: &'static str,
    pub attempts: i32,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
    pub response_status: Option<i32>,
    pub response_ms: Option<i32>,
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
    pub callback_state: Option<String>,
    pub callback_description: Option<String>,
    pub payload: serde_json::Value,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> DeliveryView {
        DeliveryView {
            id: d.id,
            event_id: d.event_id,
            status: Status::from_i16(d.status).as_str(),
            attempts: d.attempts,
            created_at: d.created_at,
            delivered_at: d.delivered_at,
            response_status: d.last_status,
            response_ms: d.response_ms,
            response_excerpt: d.response_excerpt,
            error: d.last_error,
            callback_state: d.callback_state,
            callback_description: d.callback_description,
            payload: serde_json::from_str(&d.body).unwrap_or_default(),
        }
    }
}

/// `scope` checked and managed by `visitor`: (namespace, repository).
async fn managed_scope(
    web: &Web,
    visitor: &Visitor,
    scope: &str,
) -> Result<(String, Option<String>), WebError> {
    if scope.is_empty() {
        return Err(WebError::BadRequest(
            "scope is missing: ?scope=acme/app or ?scope=acme/*".into(),
        ));
    }
    check_owner(web, visitor, scope, "webhook scope").await?;
    Ok(webhook_scope(scope)?)
}

/// A webhook by id, if `visitor` manages its scope: one they may not manage is a
/// 404 like a missing one (its scope may name a private repository), except that a
/// visitor not signed in is asked to.
async fn managed_webhook(web: &Web, visitor: &Visitor, id: i64) -> Result<Webhook, WebError> {
    let not_found = || WebError::NotFound(format!("webhook {id}"));
    let hook = web.storage.webhook(id).await?.ok_or_else(not_found)?;
    check_manager_of_hidden(web, visitor, &hook.scope(), not_found()).await?;
    Ok(hook)
}

/// Checks and adds a webhook.
async fn add(
    web: &Web,
    visitor: &Visitor,
    scope: &str,
    name: &str,
    url: &str,
    secret: Option<&str>,
) -> Result<Webhook, WebError> {
    let (namespace, repository) = managed_scope(web, visitor, scope).await?;
    let request = WebhookRequest {
        namespace,
        repository,
        name,
        url,
        secret,
        created_by: visitor
            .user()
            .map_or_else(|| "anonymous".to_owned(), |u| u.name.clone()),
    };
    let new = berth_events::webhooks::checked(request, web.allow_private_webhooks)
        .map_err(|e| WebError::BadRequest(e.to_string()))?;
    Ok(web.storage.by(visitor.actor()).add_webhook(new).await?)
}

async fn deliveries(web: &Web, id: i64, limit: u64) -> Result<Vec<DeliveryView>, WebError> {
    Ok(web
        .storage
        .webhook_deliveries(id, limit)
        .await?
        .into_iter()
        .map(DeliveryView::from)
        .collect())
}

// ---------------------------------------------------------------------------
// The JSON API.

#[derive(Deserialize)]
pub struct ScopeQuery {
    #[serde(default)]
    scope: String,
}

/// `GET /api/v1/webhooks?scope=acme/app` (the webhooks a push there goes to: its
/// own and its namespace's) or `?scope=acme/*` (every webhook of the namespace).
pub async fn list(
    web: web::Data<Web>,
    visitor: Visitor,
    query: web::Query<ScopeQuery>,
) -> ApiResult {
    // Webhook URLs often hold secrets of their own: a token needs the owner's scope.
    visitor.check_token_scope("delete")?;
    let (namespace, repository) = managed_scope(&web, &visitor, &query.scope).await?;
    let hooks = web
        .storage
        .webhooks(&namespace, repository.as_deref())
        .await?;
    let mut res = HttpResponse::Ok();
    visitor.set_cookies(&mut res);
    Ok(res.json(json!({ "scope": query.scope, "webhooks": hooks, "csrf": visitor.csrf() })))
}

#[derive(Deserialize)]
struct NewHook {
    scope: String,
    name: String,
    url: String,
    secret: Option<String>,
}

/// `POST /api/v1/webhooks` with `{"scope", "name", "url", "secret"}` (secret
/// optional): 201 and the webhook.
pub async fn create(
    web: web::Data<Web>,
    visitor: Visitor,
    req: HttpRequest,
    body: web::Bytes,
) -> ApiResult {
    // A webhook sends what is pushed (and the repository's description) elsewhere:
    // an owner's decision, so a token needs the owner's scope.
    visitor.check_api_write(&req, "delete")?;
    let new: NewHook = serde_json::from_slice(&body).map_err(|e| {
        WebError::BadRequest(format!(
            "expected {{\"scope\": …, \"name\": …, \"url\": …, \"secret\": … (optional)}}: {e}"
        ))
    })?;
    let hook = add(
        &web,
        &visitor,
        &new.scope,
        &new.name,
        &new.url,
        new.secret.as_deref(),
    )
    .await?;
    Ok(HttpResponse::Created().json(hook))
}

/// `DELETE /api/v1/webhooks/<id>`: 204; its undelivered events are dropped.
pub async fn remove(
    web: web::Data<Web>,
    visitor: Visitor,
    req: HttpRequest,
    id: web::Path<i64>,
) -> ApiResult {
    visitor.check_api_write(&req, "delete")?;
    let hook = managed_webhook(&web, &visitor, *id).await?;
    web.storage
        .by(visitor.actor())
        .remove_webhook(hook.id)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /api/v1/webhooks/<id>/deliveries`: the newest deliveries, with status,
/// response time, the start of the response and the payload.
pub async fn list_deliveries(
    web: web::Data<Web>,
    visitor: Visitor,
    id: web::Path<i64>,
) -> ApiResult {
    visitor.check_token_scope("delete")?;
    let hook = managed_webhook(&web, &visitor, *id).await?;
    let deliveries = deliveries(&web, hook.id, LISTED_DELIVERIES).await?;
    Ok(HttpResponse::Ok().json(json!({ "webhook": hook, "deliveries": deliveries })))
}

/// `POST /api/v1/webhooks/<id>/deliveries/<delivery>/redeliver`: 202 and the new
/// delivery's id (the same event id and payload, sent again).
pub async fn redeliver(
    web: web::Data<Web>,
    visitor: Visitor,
    req: HttpRequest,
    path: web::Path<(i64, i64)>,
) -> ApiResult {
    visitor.check_api_write(&req, "delete")?;
    let (id, delivery) = path.into_inner();
    let hook = managed_webhook(&web, &visitor, id).await?;
    let new_id = web
        .storage
        .redeliver(hook.id, delivery)
        .await?
        .ok_or_else(|| WebError::NotFound(format!("delivery {delivery} of webhook {id}")))?;
    Ok(HttpResponse::Accepted().json(json!({ "delivery": new_id })))
}

#[derive(Deserialize)]
struct Verdict {
    state: String,
    #[serde(default)]
    description: String,
}

/// `POST /api/v1/webhooks/callback/<token>` with `{"state": "success" | "failure" |
/// "error", "description"}`: a receiver's verdict on a delivery, shown in its
/// history. The token in the payload's `callback_url` is the only credential.
pub async fn callback(
    web: web::Data<Web>,
    token: web::Path<String>,
    body: web::Bytes,
) -> ApiResult {
    let verdict: Verdict = serde_json::from_slice(&body).map_err(|e| {
        WebError::BadRequest(format!(
            "expected {{\"state\": \"success\" | \"failure\" | \"error\", \"description\": …}}: {e}"
        ))
    })?;
    if !["success", "failure", "error"].contains(&verdict.state.as_str()) {
        return Err(WebError::BadRequest(format!(
            "state {:?}: expected success, failure or error",
            verdict.state
        ))
        .into());
    }
    let token_ok = token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit());
    let description: String = verdict.description.chars().take(1000).collect();
    if !token_ok
        || !web
            .storage
            .webhook_callback(&token, &verdict.state, &description)
            .await?
    {
        return Err(WebError::NotFound("callback".into()).into());
    }
    Ok(HttpResponse::Ok().json(json!({ "state": verdict.state })))
}

// ---------------------------------------------------------------------------
// The page and its forms.

#[derive(Deserialize)]
pub struct PageParams {
    #[serde(default)]
    scope: String,
    /// What was just done, to say so: `added`, `removed` or `redelivered` (a code,
    /// so nobody can make the page say something else through a link).
    done: Option<String>,
}

fn done_text(done: Option<&str>) -> Option<&'static str> {
    match done? {
        "added" => Some("Added the webhook."),
        "removed" => Some("Removed the webhook."),
        "redelivered" => Some("Sent again; the new delivery is listed first."),
        _ => None,
    }
}

/// A webhook and its recent deliveries, for the page.
#[derive(Serialize)]
struct HookView {
    #[serde(flatten)]
    hook: Webhook,
    scope: String,
    deliveries: Vec<DeliveryView>,
}

/// `/manage/webhooks?scope=`: the scope's webhooks with their recent deliveries, and
/// a form to add one.
pub async fn page(
    web: web::Data<Web>,
    visitor: Visitor,
    req: HttpRequest,
    params: web::Query<PageParams>,
) -> PageResult {
    let (namespace, repository) = managed_scope(&web, &visitor, &params.scope).await?;
    let mut hooks = Vec::new();
    for hook in web
        .storage
        .webhooks(&namespace, repository.as_deref())
        .await?
    {
        hooks.push(HookView {
            scope: hook.scope(),
            deliveries: deliveries(&web, hook.id, 10).await?,
            hook,
        });
    }
    render(
        &web,
        &visitor,
        &req,
        StatusCode::OK,
        "webhooks.html",
        context! {
            scope => params.scope,
            namespace,
            repository,
            hooks,
            done => done_text(params.done.as_deref()),
        },
    )
}

fn back_to(scope: &str, done: &str) -> HttpResponse {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("scope", scope)
        .append_pair("done", done)
        .finish();
    see_other(&format!("/manage/webhooks?{query}"))
}

#[derive(Deserialize)]
pub struct AddForm {
    #[serde(default)]
    csrf: String,
    scope: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    secret: String,
}

pub async fn add_form(
    web: web::Data<Web>,
    visitor: Visitor,
    form: web::Form<AddForm>,
) -> PageResult {
    visitor.check_csrf(&form.csrf)?;
    add(
        &web,
        &visitor,
        &form.scope,
        &form.name,
        &form.url,
        Some(&form.secret),
    )
    .await?;
    Ok(back_to(&form.scope, "added"))
}

#[derive(Deserialize)]
pub struct HookForm {
    #[serde(default)]
    csrf: String,
    /// The page to return to.
    scope: String,
    id: i64,
    delivery: Option<i64>,
}

pub async fn remove_form(
    web: web::Data<Web>,
    visitor: Visitor,
    form: web::Form<HookForm>,
) -> PageResult {
    visitor.check_csrf(&form.csrf)?;
    let hook = managed_webhook(&web, &visitor, form.id).await?;
    web.storage
        .by(visitor.actor())
        .remove_webhook(hook.id)
        .await?;
    Ok(back_to(&form.scope, "removed"))
}

pub async fn redeliver_form(
    web: web::Data<Web>,
    visitor: Visitor,
    form: web::Form<HookForm>,
) -> PageResult {
    visitor.check_csrf(&form.csrf)?;
    let hook = managed_webhook(&web, &visitor, form.id).await?;
    let delivery = form
        .delivery
        .ok_or_else(|| WebError::BadRequest("delivery is missing".into()))?;
    web.storage
        .redeliver(hook.id, delivery)
        .await?
        .ok_or_else(|| WebError::NotFound(format!("delivery {delivery} of webhook {}", hook.id)))?;
    Ok(back_to(&form.scope, "redelivered"))
}
