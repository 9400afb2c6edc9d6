//! The token endpoint of Docker's token authentication: `GET /auth/token` (Basic or
//! anonymous) and `POST /auth/token` (OAuth2 password and refresh_token grants), plus
//! self sign-up.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use berth_auth::{pat, Access, AuthError, Scope, User, VerifiedToken};
use berth_oci::RepoName;
use berth_storage::audit::Actor;
use serde_json::json;

use crate::authz::AuthState;
use crate::error::{ApiError, ApiResult};
use crate::http::{header, query_all, query_one};
use crate::AppState;

fn auth_of(state: &AppState) -> ApiResult<&AuthState> {
    state.auth.current().map(|a| a.as_ref()).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "UNSUPPORTED",
            "authentication is disabled on this registry",
        )
    })
}

pub async fn get(state: web::Data<AppState>, req: HttpRequest) -> ApiResult<HttpResponse> {
    let auth = auth_of(&state)?;
    check_service(auth, query_one(&req, "service"))?;
    let basic = header(&req, "Authorization")
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, credentials)| credentials);
    let credentials = match basic {
        Some(b64) => Some(decode_basic(b64)?),
        None => None,
    };
    // Docker sends one `scope` parameter per scope; others put several in one,
    // separated by spaces (as OAuth2 does): both are read.
    let scopes: Vec<String> = query_all(&req, "scope")
        .iter()
        .flat_map(|s| s.split_whitespace().map(str::to_owned))
        .collect();
    let offline = query_one(&req, "offline_token").as_deref() == Some("true");
    let issued = issue(
        &state,
        &req,
        credentials.map(Credentials::Password),
        &scopes,
        offline,
    )
    .await?;
    let mut body = json!({
        "token": issued.token,
        "access_token": issued.token,
        "expires_in": issued.expires_in,
        "issued_at": issued.issued_at,
    });
    if let Some(secret) = issued.refresh_token {
        body["refresh_token"] = json!(secret);
    }
    Ok(token_response(body))
}

#[derive(serde::Deserialize)]
pub struct TokenForm {
    grant_type: String,
    service: Option<String>,
    scope: Option<String>,
    username: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
    /// `offline`: a refresh token is wanted (Docker's OAuth2 login sends it).
    access_type: Option<String>,
}

/// Who is asking for a token.
enum Credentials {
    /// A user name and a password or personal access token.
    Password((String, String)),
    /// An offline token from an earlier login.
    Refresh(String),
}

pub async fn post(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<TokenForm>,
) -> ApiResult<HttpResponse> {
    let auth = auth_of(&state)?;
    check_service(auth, form.service.clone())?;
    let credentials = match (
        form.grant_type.as_str(),
        &form.username,
        &form.password,
        &form.refresh_token,
    ) {
        ("password", Some(u), Some(p), _) => Credentials::Password((u.clone(), p.clone())),
        ("refresh_token", _, _, Some(t)) => Credentials::Refresh(t.clone()),
        ("password" | "refresh_token", ..) => {
            return Err(ApiError::bad_request(
                "UNAUTHORIZED",
                "username and password, or refresh_token, are required",
            ))
        }
        (other, ..) => {
            return Err(ApiError::bad_request(
                "UNSUPPORTED",
                format!("unsupported grant_type {other:?}"),
            ))
        }
    };
    let scopes: Vec<String> = form
        .scope
        .as_deref()
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let offline = form.access_type.as_deref() == Some("offline");
    let issued = issue(&state, &req, Some(credentials), &scopes, offline).await?;
    let mut body = json!({
        "access_token": issued.token,
        "expires_in": issued.expires_in,
        "issued_at": issued.issued_at,
        "scope": scopes.join(" "),
    });
    if let Some(secret) = issued.refresh_token {
        body["refresh_token"] = json!(secret);
    }
    Ok(token_response(body))
}

fn check_service(auth: &AuthState, service: Option<String>) -> ApiResult<()> {
    match service {
        Some(s) if s != auth.tokens.service => Err(ApiError::bad_request(
            "UNSUPPORTED",
            format!(
                "unknown service {s:?}; this registry is {:?}",
                auth.tokens.service
            ),
        )),
        _ => Ok(()),
    }
}

fn decode_basic(b64: &str) -> ApiResult<(String, String)> {
    let bad = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "malformed Basic credentials",
        )
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (user, password) = text.split_once(':').ok_or_else(bad)?;
    Ok((user.to_owned(), password.to_owned()))
}

/// Scopes one token request may name (docker asks for one to three).
const MAX_SCOPES: usize = 64;

/// The proxy a repository scope's name is under, if any.
fn proxy_of<'a>(state: &'a AppState, scope: &Scope) -> Option<&'a berth_proxy::Proxy> {
    if scope.kind != "repository" {
        return None;
    }
    state.proxies.route(&scope.name).map(|r| &**r.proxy)
}

/// A proxy's repositories are pulled by whom its `access` names, and never pushed
/// to or deleted from (their content is the upstream's).
async fn proxy_grant(
    auth: &AuthState,
    proxy: &berth_proxy::Proxy,
    user: Option<&User>,
    scope: &Scope,
) -> ApiResult<Option<Access>> {
    let allowed = auth
        .accounts
        .may_pull_through(&proxy.config.access, user)
        .await
        .map_err(login_error)?;
    let pull = allowed && scope.actions.iter().any(|a| a == "pull");
    Ok(pull.then(|| Access {
        kind: scope.kind.clone(),
        name: scope.name.clone(),
        actions: vec!["pull".into()],
    }))
}

/// A signed token, and the refresh token a login gets.
struct Issued {
    token: String,
    expires_in: i64,
    issued_at: String,
    refresh_token: Option<String>,
}

/// What a user signed in with, when it can make a login (a refresh token is a login
/// made earlier).
enum SignedIn {
    Password,
    AccessToken(VerifiedToken),
}

/// Authenticates (if credentials were given), grants the intersection of what was
/// asked and what is allowed, and signs a token. A request with a user's password or
/// access token, `offline` (a refresh token wanted) and for no scope is a login, as
/// `docker login` sends it (GET with `offline_token`, or OAuth2's POST with
/// `access_type`): it is recorded as a sign-in, and a password gets a login token the
/// client keeps in its place. Ordinary token requests never make one, whatever a
/// client asks.
async fn issue(
    state: &AppState,
    req: &HttpRequest,
    credentials: Option<Credentials>,
    scopes: &[String],
    offline: bool,
) -> ApiResult<Issued> {
    let auth = auth_of(state)?;
    // Each scope costs database lookups: a token request names a bounded number.
    if scopes.len() > MAX_SCOPES {
        return Err(ApiError::bad_request(
            "UNSUPPORTED",
            format!("at most {MAX_SCOPES} scopes per token request"),
        ));
    }
    // A personal access token may stand in for the password; its scope caps the grant.
    let peer = client_address(req);
    let (user, cap, signed_in) = match credentials {
        None => (None, None, None),
        Some(Credentials::Refresh(secret)) => {
            let token = auth
                .accounts
                .check_token(None, &secret, peer)
                .await
                .map_err(login_error)?;
            (Some(token.user), Some(token.scope), None)
        }
        Some(Credentials::Password((name, password))) if password.starts_with(pat::PREFIX) => {
            let token = auth
                .accounts
                .check_token(Some(&name), &password, peer)
                .await
                .map_err(login_error)?;
            let (user, scope) = (token.user.clone(), token.scope);
            (Some(user), Some(scope), Some(SignedIn::AccessToken(token)))
        }
        Some(Credentials::Password((name, password))) => {
            let user = auth
                .accounts
                .check_password(&name, password, peer)
                .await
                .map_err(login_error)?;
            (Some(user), None, Some(SignedIn::Password))
        }
    };
    let mut granted = Vec::new();
    for s in scopes {
        let scope =
            Scope::parse(s).map_err(|e| ApiError::bad_request("UNSUPPORTED", e.to_string()))?;
        // Names are held to the registry's own grammar (the one its requests are parsed
        // with): a name no request can address is granted nothing.
        if scope.kind == "repository" && RepoName::parse(&scope.name).is_err() {
            continue;
        }
        let granted_here = match proxy_of(state, &scope) {
            Some(proxy) => proxy_grant(auth, proxy, user.as_ref(), &scope).await?,
            None => {
                // A repository that does not exist is private: only those who may see
                // its namespace learn that it is missing, everyone else is answered
                // exactly as for a private repository they may not pull.
                let private = match scope.kind.as_str() {
                    "repository" => state
                        .storage
                        .repository_private(&scope.name)
                        .await?
                        .unwrap_or(true),
                    _ => false,
                };
                auth.accounts
                    .grant(user.as_ref(), &scope, private)
                    .await
                    .map_err(login_error)?
            }
        };
        let mut access = granted_here.unwrap_or_else(|| Access {
            kind: scope.kind.clone(),
            name: scope.name.clone(),
            actions: Vec::new(),
        });
        // A token's scope caps what it does to repositories; the catalog (`registry:
        // catalog:*`) only lists what the user may pull, which any token may.
        if let Some(cap) = cap.filter(|_| access.kind == "repository") {
            access.actions.retain(|a| cap.permits(a));
        }
        // A repository looked at and refused keeps its entry, without actions (as
        // Docker Hub's tokens do): the registry then answers "denied" rather than
        // asking for another token, the same for private and missing repositories.
        if !access.actions.is_empty() || access.kind == "repository" {
            granted.push(access);
        }
    }
    let subject = user.as_ref().map_or("", |u| u.name.as_str());
    let token = auth.tokens.issue(subject, granted).map_err(login_error)?;
    let login = offline && scopes.is_empty();
    let mut refresh_token = None;
    match (&user, signed_in) {
        (Some(user), Some(how)) if login => {
            let accounts = auth.accounts.by(Actor::user(&user.name, peer));
            match how {
                // A revocable login token (listed with `berthd token list`), valid 90
                // days, ended by a password change; making it records the sign-in.
                SignedIn::Password => {
                    let (_, secret) = accounts
                        .create_login_token(&user.name)
                        .await
                        .map_err(login_error)?;
                    refresh_token = Some(secret);
                }
                SignedIn::AccessToken(token) => accounts.signed_in_with_token(&token).await,
            }
        }
        _ => {}
    }
    Ok(Issued {
        token: token.token,
        expires_in: token.expires_in,
        issued_at: token.issued_at.to_rfc3339(),
        refresh_token,
    })
}

/// The client's address, for rate limits.
fn client_address(req: &HttpRequest) -> Option<std::net::IpAddr> {
    req.peer_addr().map(|a| a.ip())
}

/// The one mapping of auth errors to HTTP answers (token endpoint and sign-up).
fn login_error(e: AuthError) -> ApiError {
    match e {
        AuthError::RateLimited { retry_after_secs } => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TOOMANYREQUESTS",
            e.to_string(),
        )
        .with_header("Retry-After", retry_after_secs.to_string()),
        AuthError::Overloaded { retry_after_secs } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            e.to_string(),
        )
        .with_header("Retry-After", retry_after_secs.to_string()),
        AuthError::BadCredentials => {
            ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", e.to_string())
        }
        // Sign-up refusals: the reason is the client's to fix. (Users and
        // organizations are public, and a name only repositories hold is "not
        // available"; probing is bounded by the sign-up limit, counted first.)
        AuthError::UsernameInvalid(_)
        | AuthError::PasswordTooShort
        | AuthError::UserExists(_)
        | AuthError::NameTaken { .. }
        | AuthError::NameReserved(_)
        | AuthError::NameInUse(_) => ApiError::bad_request("DENIED", e.to_string()),
        other => {
            tracing::error!(error = %other, "token endpoint failure");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN",
                "internal error; see the server log",
            )
        }
    }
}

#[derive(serde::Deserialize)]
pub struct SignupForm {
    username: String,
    password: String,
}

/// A token endpoint's answer: never stored by a cache on the way (RFC 6749 5.1).
fn token_response(body: serde_json::Value) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(body)
}

/// `POST /auth/signup` (form: username, password): self sign-up, when `auth.signup` is on.
pub async fn signup(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<SignupForm>,
) -> ApiResult<HttpResponse> {
    let auth = auth_of(&state)?;
    if !auth.signup {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "DENIED",
            "sign-up is disabled on this registry",
        ));
    }
    // Attempts count against the client address like failed logins: no account farming.
    let SignupForm { username, password } = form.into_inner();
    // Repositories stored under a name no account holds are not given away (a held
    // name is the accounts' to refuse, with their own reason).
    let unheld = auth
        .accounts
        .namespace_kind(&username)
        .await
        .map_err(login_error)?
        .is_none();
    let held_by_repositories = unheld
        && state
            .storage
            .namespace_in_use(&username)
            .await
            .map_err(ApiError::from)?;
    let user = auth
        .accounts
        .sign_up(
            &username,
            password,
            client_address(&req),
            held_by_repositories,
        )
        .await
        .map_err(login_error)?;
    Ok(HttpResponse::Created().json(json!({ "username": user.name })))
}
