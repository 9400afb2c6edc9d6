//! The registry's gate: every `/v2/…` request is parsed once into a typed
//! [`Action`] (`berth_oci::request`), authorized on that value, and handed to the
//! handlers as that same value. Nothing else routes or authorizes registry requests:
//! they never reach actix-web's router, and no handler makes an access decision.

use std::sync::{Arc, OnceLock};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpRequest, ResponseError};
use berth_auth::{Accounts, Claims, TokenService};
use berth_oci::request::{registry_request, Resource};
use berth_oci::{Action, Need, OciError};
use berth_storage::repos::Viewer;

use crate::error::ApiError;
use crate::AppState;

/// Everything token auth needs at request time.
pub struct AuthState {
    /// Users, tokens and access decisions; its login checks (rate limits, remembered
    /// passwords) are shared with the web UI's sign-in form.
    pub accounts: Accounts,
    pub tokens: TokenService,
    pub external_url: Option<String>,
    /// Whether anyone may create an account.
    pub signup: bool,
}

/// Whether token authentication is on. It only ever turns on: at start-up, or while
/// the server runs, when the first user is added to an open registry.
#[derive(Default)]
pub struct Auth(OnceLock<Arc<AuthState>>);

impl Auth {
    pub fn on(state: Arc<AuthState>) -> Auth {
        let auth = Auth::default();
        auth.turn_on(state);
        auth
    }

    /// `None`: the registry is open (anyone may push and pull).
    pub fn current(&self) -> Option<&Arc<AuthState>> {
        self.0.get()
    }

    pub fn turn_on(&self, state: Arc<AuthState>) {
        let _ = self.0.set(state);
    }
}

/// App data of a proxy's mirror listener: its prefix, put before every name.
pub struct MirrorOf(pub String);

/// The route pattern of a registry request, for metrics (set by the gate).
#[derive(Clone, Copy)]
pub struct RouteLabel(pub &'static str);

/// What passed the gate: the action to perform and, for the catalog, whose listing
/// it is (the one access decision that shapes a response rather than allowing it).
pub struct Granted {
    pub action: Action,
    pub viewer: Viewer,
    /// Who the token names (`None` on an open registry, or anonymous): the actor of
    /// the request's events.
    pub actor: Option<String>,
}

/// Middleware: registry requests are parsed, authorized and dispatched here; every
/// other request (web UI, token endpoint, health) goes on to actix-web's routes.
pub async fn registry(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(parsed) = registry_request(req.method().as_str(), req.path(), req.query_string())
    else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let state = req
        .app_data::<web::Data<AppState>>()
        .cloned()
        .expect("the app holds its state");
    // On a proxy's mirror listener every name is the proxy's: mapped here, once, so
    // the gate and the handlers see the same name.
    let parsed = match req.app_data::<MirrorOf>() {
        Some(mirror) => parsed.and_then(|action| action.under_prefix(&mirror.0)),
        None => parsed,
    };
    let route = parsed.as_ref().map_or("/v2 (no endpoint)", Action::route);
    req.extensions_mut().insert(RouteLabel(route));
    let (http, payload) = req.into_parts();
    let res = match gate(&state, &http, parsed).await {
        Ok(granted) => crate::routes::dispatch(&state, granted, &http, payload).await,
        Err(e) => e.error_response(),
    };
    Ok(ServiceResponse::new(http, res))
}

/// Authenticates and authorizes one parsed request. With auth on, a request without
/// a valid token is challenged before anything about its path is answered.
async fn gate(
    state: &AppState,
    req: &HttpRequest,
    parsed: Result<Action, OciError>,
) -> Result<Granted, ApiError> {
    let Some(auth) = state.auth.current() else {
        let action = parsed?;
        refuse_proxy_writes(state, &action)?;
        return Ok(Granted {
            action,
            viewer: Viewer::Everything,
            actor: None,
        });
    };
    let needs: &[Resource] = match &parsed {
        Ok(action) => &action.requires(),
        Err(_) => &[],
    };
    let challenge = |error: Option<&str>| challenge(auth, req, needs, error);
    let claims = match bearer(req).map(|t| auth.tokens.verify(t)) {
        Some(Ok(claims)) => claims,
        Some(Err(_)) => {
            return Err(unauthorized(
                "invalid or expired token",
                challenge(Some("invalid_token")),
            ))
        }
        None => return Err(unauthorized("authentication required", challenge(None))),
    };
    for need in needs {
        let (kind, name, action) = scope_of(need);
        if claims.allows(kind, name, action) {
            continue;
        }
        // The token server looked at this resource and granted something else (for a
        // repository the caller may not pull, private or missing alike: nothing): a
        // denial. Otherwise the client should ask for a wider token.
        let refused = claims
            .access
            .iter()
            .any(|a| a.kind == kind && a.name == name);
        return Err(if refused {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "DENIED",
                format!("requested access to the resource is denied: {action} on {name}"),
            )
        } else {
            unauthorized(
                "authentication required",
                challenge(Some("insufficient_scope")),
            )
        });
    }
    let action = parsed?;
    refuse_proxy_writes(state, &action)?;
    let viewer = match action {
        Action::Catalog => viewer(auth, &claims).await?,
        _ => Viewer::Everything,
    };
    let actor = Some(claims.sub.clone()).filter(|s| !s.is_empty());
    Ok(Granted {
        action,
        viewer,
        actor,
    })
}

/// A proxy's repositories hold its upstream's content: nobody pushes or deletes
/// there, whatever a token says.
fn refuse_proxy_writes(state: &AppState, action: &Action) -> Result<(), ApiError> {
    for need in action.requires() {
        let Resource::Repository(name, need) = need else {
            continue;
        };
        if need == Need::Pull {
            continue;
        }
        if let Some(route) = state.proxies.route(name) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "DENIED",
                format!(
                    "{name} is a read-only mirror of {}: {} is refused",
                    route.proxy.config.upstream,
                    need.as_str()
                ),
            ));
        }
    }
    Ok(())
}

/// A resource as token scopes and access entries name it: (type, name, action).
fn scope_of<'a>(need: &Resource<'a>) -> (&'static str, &'a str, &'static str) {
    match need {
        Resource::Repository(name, need) => ("repository", name.as_str(), need.as_str()),
        Resource::Catalog => ("registry", "catalog", "*"),
    }
}

/// `WWW-Authenticate: Bearer realm=…,service=…,scope="…"`, the scopes separated by
/// spaces (a mount asks for the source repository too).
fn challenge(
    auth: &AuthState,
    req: &HttpRequest,
    needs: &[Resource],
    error: Option<&str>,
) -> String {
    let realm = format!("{}/auth/token", external_url(auth, req));
    let mut value = format!(
        "Bearer realm=\"{realm}\",service=\"{}\"",
        auth.tokens.service
    );
    let scopes: Vec<String> = needs
        .iter()
        .map(|need| {
            let (kind, name, action) = scope_of(need);
            match need {
                Resource::Repository(_, Need::Pull) | Resource::Catalog => {
                    format!("{kind}:{name}:{action}")
                }
                Resource::Repository(..) => format!("{kind}:{name}:pull,{action}"),
            }
        })
        .collect();
    if !scopes.is_empty() {
        value.push_str(&format!(",scope=\"{}\"", scopes.join(" ")));
    }
    if let Some(e) = error {
        value.push_str(&format!(",error=\"{e}\""));
    }
    value
}

fn unauthorized(message: &str, challenge: String) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
        .with_header("WWW-Authenticate", challenge)
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get("Authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Whose catalog this is: everything for admins; otherwise what the token's subject
/// may pull (public repositories, their own and their organizations' namespaces).
async fn viewer(auth: &AuthState, claims: &Claims) -> Result<Viewer, ApiError> {
    if claims.sub.is_empty() {
        return Ok(Viewer::Public);
    }
    let Some(user) = auth.accounts.user(&claims.sub).await.map_err(internal)? else {
        return Ok(Viewer::Public);
    };
    let namespaces = auth
        .accounts
        .private_namespaces(&user)
        .await
        .map_err(internal)?;
    Ok(namespaces.map_or(Viewer::Everything, Viewer::PublicAndNamespaces))
}

fn internal(e: berth_auth::AuthError) -> ApiError {
    tracing::error!(error = %e, "looking up the caller's access");
    crate::observe::METRICS.backend_error("database");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "UNKNOWN",
        "internal error; see the server log",
    )
}

/// The URL clients reach us at: configured, or the request's own `Host`. Forwarded
/// hosts (`X-Forwarded-Host`, `Forwarded`) are the client's say-so and never used: a
/// challenge's realm is where docker sends credentials. Behind a proxy, configure
/// `auth.external_url`. A `Host` that is not a plain authority is not echoed.
pub fn external_url(auth: &AuthState, req: &HttpRequest) -> String {
    berth_events::origin::base_url(auth.external_url.as_deref(), req)
}
