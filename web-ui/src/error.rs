//! The web UI's one error type, turned into a page or into the spec's JSON error
//! format at the edge (by [`Page`] and [`Api`]).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use berth_auth::AuthError;
use berth_oci::OciError;
use berth_storage::StorageError;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// Also what a private repository is to those who may not pull it.
    #[error("{0} not found")]
    NotFound(String),
    /// A path no page or API answer is at.
    #[error("there is nothing at {0}")]
    NoSuchPath(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("sign in first")]
    SignInRequired,
    #[error("you may not do that here")]
    Forbidden,
    /// A change to a pull-through cache's repository: its content is the upstream's.
    #[error("{name} is a read-only mirror of {upstream}")]
    ReadOnlyMirror { name: String, upstream: String },
    #[error("the form expired or did not come from this site; reload the page and try again")]
    Csrf,
    /// A personal access token used for more than its scope allows.
    #[error("this token's scope ({scope}) does not permit {action}")]
    TokenScope {
        scope: &'static str,
        action: &'static str,
    },
    /// A write whose precondition no longer holds (e.g. a retention plan changed
    /// since it was previewed); nothing was changed.
    #[error("{0}")]
    Conflict(String),
    #[error("accounts are off on this registry")]
    AccountsOff,
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("template: {0}")]
    Template(#[from] minijinja::Error),
}

impl WebError {
    /// Status and a message safe to show (an error page's).
    pub(crate) fn shown(&self) -> (StatusCode, String) {
        let (status, _, message) = self.parts();
        (status, message)
    }

    /// Status, spec error code, and a message safe to show.
    fn parts(&self) -> (StatusCode, &'static str, String) {
        use StorageError as S;
        let shown = self.to_string();
        match self {
            WebError::NotFound(_) => (StatusCode::NOT_FOUND, "NAME_UNKNOWN", shown),
            WebError::NoSuchPath(_) => (StatusCode::NOT_FOUND, "UNSUPPORTED", shown),
            WebError::BadRequest(_) => (StatusCode::BAD_REQUEST, "UNSUPPORTED", shown),
            WebError::SignInRequired => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED", shown),
            WebError::Forbidden
            | WebError::Csrf
            | WebError::TokenScope { .. }
            | WebError::ReadOnlyMirror { .. } => (StatusCode::FORBIDDEN, "DENIED", shown),
            WebError::Conflict(_) => (StatusCode::CONFLICT, "DENIED", shown),
            WebError::AccountsOff => (StatusCode::NOT_FOUND, "UNSUPPORTED", shown),
            WebError::Storage(S::NameUnknown(_)) => (StatusCode::NOT_FOUND, "NAME_UNKNOWN", shown),
            WebError::Storage(S::ManifestUnknown(_)) => {
                (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", shown)
            }
            WebError::Storage(S::TagImmutable { .. }) => (StatusCode::FORBIDDEN, "DENIED", shown),
            WebError::Storage(S::ManifestInUse(_)) => (StatusCode::CONFLICT, "DENIED", shown),
            WebError::Storage(S::TagRuleInvalid(_)) => {
                (StatusCode::BAD_REQUEST, "UNSUPPORTED", shown)
            }
            WebError::Storage(S::TagRuleUnknown(_)) => {
                (StatusCode::NOT_FOUND, "UNSUPPORTED", shown)
            }
            WebError::Storage(S::Limit { .. }) => (StatusCode::CONFLICT, "DENIED", shown),
            WebError::Storage(S::Oci(OciError::NameInvalid(_))) => {
                (StatusCode::BAD_REQUEST, "NAME_INVALID", shown)
            }
            WebError::Storage(S::Oci(OciError::TagInvalid(_))) => {
                (StatusCode::BAD_REQUEST, "TAG_INVALID", shown)
            }
            WebError::Auth(AuthError::ScopeInvalid(_)) => {
                (StatusCode::BAD_REQUEST, "UNSUPPORTED", shown)
            }
            WebError::Auth(AuthError::RateLimited { .. }) => {
                (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", shown)
            }
            WebError::Auth(AuthError::Overloaded { .. }) => {
                (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", shown)
            }
            WebError::Auth(AuthError::BadCredentials) => {
                (StatusCode::UNAUTHORIZED, "UNAUTHORIZED", shown)
            }
            _ => {
                tracing::error!(error = %self, "web UI failure");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "UNKNOWN",
                    "internal error; see the server log".into(),
                )
            }
        }
    }
}

/// A page handler's error: an HTML error page.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Page(#[from] pub WebError);

/// A grammar error is storage's to report (it carries the same variants).
impl From<OciError> for WebError {
    fn from(e: OciError) -> WebError {
        WebError::Storage(StorageError::Oci(e))
    }
}

impl ResponseError for Page {
    fn status_code(&self) -> StatusCode {
        self.0.parts().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, _, message) = self.0.parts();
        let title = status.canonical_reason().unwrap_or("Error");
        let body = crate::templates::render(
            "error.html",
            minijinja::context! { title, message, accounts => false },
        )
        .unwrap_or_else(|_| message.clone());
        HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .body(body)
    }
}

/// An API handler's error: `{"errors": [{"code", "message"}]}`, as the registry's.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Api(#[from] pub WebError);

impl ResponseError for Api {
    fn status_code(&self) -> StatusCode {
        self.0.parts().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, code, message) = self.0.parts();
        HttpResponse::build(status).json(json!({
            "errors": [{ "code": code, "message": message, "detail": null }]
        }))
    }
}

/// `?` on any error the web UI meets, in page and API handlers alike.
macro_rules! edge_from {
    ($($source:ty),*) => {$(
        impl From<$source> for Page {
            fn from(e: $source) -> Page {
                Page(e.into())
            }
        }
        impl From<$source> for Api {
            fn from(e: $source) -> Api {
                Api(e.into())
            }
        }
    )*};
}

edge_from!(StorageError, OciError, AuthError, minijinja::Error);

pub type PageResult = Result<HttpResponse, Page>;
pub type ApiResult = Result<HttpResponse, Api>;
