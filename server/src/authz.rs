//! Authorization of registry requests, once, before any handler runs (handlers never
//! check access themselves). With auth off, everything passes.

use std::sync::Arc;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest, ResponseError};
use berth_auth::limiter::LoginLimiter;
use berth_auth::{Claims, TokenService};
use sea_orm::DatabaseConnection;

use crate::error::ApiError;

/// Everything token auth needs at request time.
pub struct AuthState {
    pub db: DatabaseConnection,
    pub tokens: TokenService,
    /// Shared with the web UI's sign-in form.
    pub limiter: Arc<LoginLimiter>,
    pub external_url: Option<String>,
    /// Whether anyone may create an account.
    pub signup: bool,
}

/// One thing a request needs: `(type, name, action)`.
type Need = (&'static str, String, &'static str);

/// What a request to a registry route needs, from its method and path.
/// `None`: not a registry route (no check here).
pub fn needs(method: &str, path: &str) -> Option<Vec<Need>> {
    let rest = path.strip_prefix("/v2")?;
    if rest.is_empty() || rest == "/" {
        return Some(Vec::new());
    }
    if rest == "/_catalog" {
        return Some(vec![("registry", "catalog".into(), "*")]);
    }
    let rest = rest.strip_prefix('/')?;
    let markers = [
        "/blobs/uploads",
        "/blobs/",
        "/manifests/",
        "/tags/list",
        "/referrers/",
    ];
    // The marker found furthest along ends the name; on a tie the earlier-listed
    // (more specific) marker wins.
    let (_, name, marker) = markers
        .iter()
        .enumerate()
        .filter_map(|(order, m)| {
            rest.rfind(m)
                .map(|i| ((i, std::cmp::Reverse(order)), &rest[..i], *m))
        })
        .max_by_key(|(key, _, _)| *key)?;
    let action = match (method, marker) {
        (_, "/blobs/uploads") => "push",
        ("GET" | "HEAD", _) => "pull",
        ("DELETE", "/blobs/" | "/manifests/") => "delete",
        ("PUT", "/manifests/") => "push",
        _ => "pull",
    };
    Some(vec![("repository", name.to_owned(), action)])
}

/// The verified token of this request, when auth is on (see [`authorize`]).
pub fn claims(req: &HttpRequest) -> Option<Arc<Claims>> {
    req.extensions().get::<Arc<Claims>>().cloned()
}

pub async fn authorize(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let state = req
        .app_data::<actix_web::web::Data<crate::AppState>>()
        .and_then(|s| s.auth.clone());
    let (Some(auth), Some(needs)) = (state, needs(req.method().as_str(), req.path())) else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let challenge = |error: Option<&str>| {
        let realm = format!("{}/auth/token", external_url(&auth, req.request()));
        let mut value = format!(
            "Bearer realm=\"{realm}\",service=\"{}\"",
            auth.tokens.service
        );
        if let Some((kind, name, action)) = needs.first() {
            let actions = if *action == "pull" {
                "pull".to_string()
            } else {
                format!("pull,{action}")
            };
            value.push_str(&format!(",scope=\"{kind}:{name}:{actions}\""));
        }
        if let Some(e) = error {
            value.push_str(&format!(",error=\"{e}\""));
        }
        value
    };
    let bearer = req
        .headers()
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    let claims = match bearer.map(|t| auth.tokens.verify(t.trim())) {
        Some(Ok(c)) => c,
        Some(Err(_)) => {
            let e = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "invalid or expired token",
            )
            .with_header("WWW-Authenticate", challenge(Some("invalid_token")));
            return Ok(req.into_response(e.error_response()));
        }
        None => {
            let e = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "authentication required",
            )
            .with_header("WWW-Authenticate", challenge(None));
            return Ok(req.into_response(e.error_response()));
        }
    };
    for (kind, name, action) in &needs {
        if claims.allows(kind, name, action) {
            continue;
        }
        // The token server already looked at this resource and refused the action:
        // that is a denial; otherwise the client should ask for a wider token.
        let refused = claims
            .access
            .iter()
            .any(|a| a.kind == *kind && a.name == *name);
        let e = if refused {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "DENIED",
                format!("requested access to the resource is denied: {action} on {name}"),
            )
        } else {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "authentication required",
            )
            .with_header("WWW-Authenticate", challenge(Some("insufficient_scope")))
        };
        return Ok(req.into_response(e.error_response()));
    }
    req.extensions_mut().insert(Arc::new(claims));
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// The URL clients reach us at: configured, or from the request.
pub fn external_url(auth: &AuthState, req: &HttpRequest) -> String {
    match &auth.external_url {
        Some(url) => url.clone(),
        None => {
            let info = req.connection_info();
            format!("{}://{}", info.scheme(), info.host())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_the_right_action() {
        let one = |m: &str, p: &str| needs(m, p).unwrap().into_iter().next();
        assert_eq!(needs("GET", "/v2/").unwrap(), vec![]);
        assert_eq!(
            one("GET", "/v2/a/b/manifests/latest"),
            Some(("repository", "a/b".into(), "pull"))
        );
        assert_eq!(
            one("PUT", "/v2/a/b/manifests/latest"),
            Some(("repository", "a/b".into(), "push"))
        );
        assert_eq!(
            one("DELETE", "/v2/a/b/manifests/x"),
            Some(("repository", "a/b".into(), "delete"))
        );
        assert_eq!(
            one("POST", "/v2/a/blobs/uploads/"),
            Some(("repository", "a".into(), "push"))
        );
        assert_eq!(
            one("PATCH", "/v2/a/b/blobs/uploads/123"),
            Some(("repository", "a/b".into(), "push"))
        );
        assert_eq!(
            one("HEAD", "/v2/x/blobs/sha256:00"),
            Some(("repository", "x".into(), "pull"))
        );
        assert_eq!(
            one("GET", "/v2/x/y/tags/list"),
            Some(("repository", "x/y".into(), "pull"))
        );
        assert_eq!(
            one("GET", "/v2/_catalog"),
            Some(("registry", "catalog".into(), "*"))
        );
        // A repository whose name contains a marker word still resolves to the longest name.
        assert_eq!(
            one("GET", "/v2/a/manifests/b/manifests/t"),
            Some(("repository", "a/manifests/b".into(), "pull"))
        );
        assert!(needs("GET", "/auth/token").is_none());
    }
}
