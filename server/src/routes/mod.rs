//! The handlers: every endpoint of the distribution spec, one module per resource,
//! called by [`dispatch`] with the action the gate (`crate::authz`) parsed and
//! authorized; and actix-web routes for the rest (token endpoint, health, metrics).

mod base;
mod blobs;
mod catalog;
mod manifests;
mod proxied;
mod referrers;
mod tags;
mod token;
mod uploads;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use berth_oci::Action;

use crate::authz::Granted;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(crate::health::healthz))
        .route("/readyz", web::get().to(crate::health::readyz))
        .route("/metrics", web::get().to(crate::observe::metrics))
        .service(token_endpoint())
        .service(
            web::resource("/auth/signup")
                .route(web::post().to(token::signup))
                .default_service(web::to(method_not_allowed)),
        );
}

/// A proxy's mirror listener: the registry API (the gate) and the token endpoint its
/// challenges name, nothing else (no sign-up, no metrics).
pub fn configure_mirror(cfg: &mut web::ServiceConfig) {
    cfg.service(token_endpoint());
}

fn token_endpoint() -> actix_web::Resource {
    web::resource("/auth/token")
        .route(web::get().to(token::get))
        .route(web::post().to(token::post))
        .default_service(web::to(method_not_allowed))
}

async fn method_not_allowed() -> HttpResponse {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "UNSUPPORTED",
        "method not allowed on this endpoint",
    )
    .error_response()
}

pub async fn not_found() -> HttpResponse {
    ApiError::new(StatusCode::NOT_FOUND, "UNSUPPORTED", "no such endpoint").error_response()
}

/// A read in a proxy's namespace, answered through the proxy; `None` for every other
/// action (writes there were refused by the gate).
async fn proxied(
    state: &AppState,
    action: &Action,
    req: &HttpRequest,
) -> Option<crate::error::ApiResult<HttpResponse>> {
    use Action::*;
    let route = state.proxies.route(action.repository()?)?;
    Some(match action {
        GetManifest(name, reference) => {
            proxied::manifest(state, &route, name, reference, false).await
        }
        HeadManifest(name, reference) => {
            proxied::manifest(state, &route, name, reference, true).await
        }
        GetBlob(name, digest) => proxied::get_blob(state, &route, name, digest, req).await,
        HeadBlob(name, digest) => proxied::head_blob(&route, name, digest).await,
        ListTags(name) => proxied::list_tags(&route, name, req).await,
        ListReferrers(name, digest) => {
            proxied::list_referrers(state, &route, name, digest, req).await
        }
        _ => return None,
    })
}

/// Who makes a registry request, as the audit log records them.
fn audit_actor(req: &HttpRequest, user: Option<&str>) -> berth_storage::audit::Actor {
    use berth_storage::audit::Actor;
    let address = req.peer_addr().map(|a| a.ip());
    match user {
        Some(name) => Actor::user(name, address),
        None => Actor::anonymous(address),
    }
}

/// Records a pull's event. A pull is answered whatever happens to it: when the events
/// waiting to be written cannot be (the database refuses writes), reads still work.
pub(crate) async fn record_pull_event(state: &AppState, target: berth_storage::events::Target) {
    if let Err(e) = state.storage.record_pull_event(target).await {
        tracing::warn!(error = %e, "a pull's event could not be written");
    }
}

/// How the audit log names changes made through the registry API.
pub(crate) const VIA_API: &str = "registry API";

/// Records a registry delete refused by a rule in the audit log (one done is recorded
/// by storage, in its transaction).
pub(crate) async fn audit_refusal<T>(
    state: &AppState,
    actor: berth_storage::audit::Actor,
    action: berth_storage::audit::Action,
    target: String,
    result: &ApiResult<T>,
) {
    use berth_storage::audit::Outcome;
    match result {
        Err(e) if e.status == StatusCode::FORBIDDEN || e.status == StatusCode::CONFLICT => {}
        _ => return,
    }
    let entry = actor
        .entry(action, target.as_str())
        .outcome(Outcome::Denied)
        .detail(VIA_API);
    state.storage.audit(entry).await;
}

/// Whether `action` may write events: every change, and pulls when an endpoint wants
/// them (checked first: pulls are the hot path).
fn records_events(state: &AppState, action: &Action) -> bool {
    use Action::*;
    match action {
        PutManifest(..) | DeleteManifest(..) | DeleteBlob(..) | StartUpload(..)
        | CompleteUpload(..) => true,
        GetManifest(..) | GetBlob(..) => state.storage.wants_pull_events(),
        _ => false,
    }
}

/// Performs an authorized registry action: the one place registry requests meet
/// their handlers, matching on the parsed action (never on the path again).
pub async fn dispatch(
    state: &AppState,
    granted: Granted,
    req: &HttpRequest,
    body: Payload,
) -> HttpResponse {
    use Action::*;
    let _in_progress = matches!(
        granted.action,
        StartUpload(..) | AppendUpload(..) | CompleteUpload(..)
    )
    .then(crate::observe::InProgress::start);
    // A request whose changes (or pulls) events report acts through storage bound
    // to its origin.
    let for_request;
    let state = if records_events(state, &granted.action) {
        let origin = berth_events::origin::origin(&state.events, req, granted.actor.clone());
        for_request = AppState {
            storage: state.storage.for_request(origin),
            auth: state.auth.clone(),
            proxies: state.proxies.clone(),
            events: state.events.clone(),
        };
        &for_request
    } else {
        state
    };
    if let Some(result) = proxied(state, &granted.action, req).await {
        return result.unwrap_or_else(|e| e.error_response());
    }
    let result = match granted.action {
        Base => Ok(base::check()),
        Catalog => catalog::list(state, &granted.viewer, req).await,
        ListTags(name) => tags::list(state, &name, req).await,
        GetManifest(name, reference) => manifests::get(state, &name, &reference).await,
        HeadManifest(name, reference) => manifests::head(state, &name, &reference).await,
        PutManifest(name, reference) => manifests::put(state, &name, &reference, req, body).await,
        DeleteManifest(name, reference) => {
            let actor = audit_actor(req, granted.actor.as_deref());
            manifests::delete(state, &name, &reference, actor).await
        }
        GetBlob(name, digest) => blobs::get(state, &name, &digest, req).await,
        HeadBlob(name, digest) => blobs::head(state, &name, &digest).await,
        DeleteBlob(name, digest) => {
            let actor = audit_actor(req, granted.actor.as_deref());
            blobs::delete(state, &name, &digest, actor).await
        }
        StartUpload(name, start) => uploads::start(state, &name, start, body).await,
        UploadStatus(name, id) => uploads::status(state, &name, &id).await,
        AppendUpload(name, id) => uploads::append(state, &name, &id, req, body).await,
        CompleteUpload(name, id) => uploads::complete(state, &name, &id, req, body).await,
        CancelUpload(name, id) => uploads::cancel(state, &name, &id).await,
        ListReferrers(name, digest) => referrers::list(state, &name, &digest, req).await,
    };
    result.unwrap_or_else(|e| e.error_response())
}
