//! The HTTP edge's error: every failure becomes the spec's JSON error body here, once.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use berth_oci::OciError;
use berth_proxy::{Missing, ProxyError};
use berth_storage::error::Backend;
use berth_storage::StorageError;
use serde_json::json;

/// A spec error: status, code from the spec's table, message, and optional headers.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> ApiError {
        self.headers.push((name, value));
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        for (name, value) in &self.headers {
            res.insert_header((*name, value.as_str()));
        }
        res.json(
            json!({ "errors": [{ "code": self.code, "message": self.message, "detail": null }] }),
        )
    }
}

/// `Range` header value for an upload holding `size` bytes (Distribution's convention:
/// `0-0` for an empty upload).
pub fn upload_range(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

impl From<OciError> for ApiError {
    fn from(e: OciError) -> ApiError {
        use OciError as O;
        let (status, code) = match &e {
            O::NameInvalid(_) => (StatusCode::BAD_REQUEST, "NAME_INVALID"),
            O::TagInvalid(_) => (StatusCode::BAD_REQUEST, "TAG_INVALID"),
            O::DigestInvalid(_) => (StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
            O::DigestUnsupported(_) => (StatusCode::BAD_REQUEST, "UNSUPPORTED"),
            O::ManifestInvalid(_) => (StatusCode::BAD_REQUEST, "MANIFEST_INVALID"),
            O::UploadUnknown(_) => (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN"),
            O::EndpointUnknown(_) => (StatusCode::NOT_FOUND, "UNSUPPORTED"),
            O::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> ApiError {
        ApiError::from(&e)
    }
}

impl From<&StorageError> for ApiError {
    fn from(e: &StorageError) -> ApiError {
        use StorageError as S;
        let message = e.to_string();
        let (status, code) = match e {
            S::Oci(e) => return ApiError::from(e.clone()),
            S::NameUnknown(_) => (StatusCode::NOT_FOUND, "NAME_UNKNOWN"),
            S::DigestInvalid(_) => (StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
            S::BlobUnknown(_) => (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"),
            S::UploadUnknown(_) => (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN"),
            S::RangeInvalid { size } => {
                return ApiError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "BLOB_UPLOAD_INVALID",
                    message,
                )
                .with_header("Range", upload_range(*size))
            }
            S::BodyIncomplete(_) => (StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID"),
            S::BlobTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID"),
            S::TooManyChunks { .. } => (StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID"),
            S::ManifestUnknown(_) => (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
            S::ManifestInvalid(_) => (StatusCode::BAD_REQUEST, "MANIFEST_INVALID"),
            S::ManifestTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "MANIFEST_INVALID"),
            S::ManifestBlobUnknown { .. } => (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN"),
            // Docker shows the message: "denied: tag v1 is immutable (rule "v*" on acme/*)…".
            S::TagImmutable { .. } => (StatusCode::FORBIDDEN, "DENIED"),
            S::QuotaExceeded { .. } => (StatusCode::FORBIDDEN, "DENIED"),
            S::ManifestInUse(_) => (StatusCode::CONFLICT, "DENIED"),
            // Rules are managed by `berthd repo immutable` and the web UI, not over /v2.
            S::TagRuleInvalid(_) => (StatusCode::BAD_REQUEST, "UNSUPPORTED"),
            S::TagRuleUnknown(_) => (StatusCode::NOT_FOUND, "UNSUPPORTED"),
            S::Limit { .. } => (StatusCode::CONFLICT, "DENIED"),
            // The spec has no code for it; clients show the message (docker: "unknown:
            // the registry is out of space …") and 507 tells machines what happened.
            S::BelowReserve { .. } => (StatusCode::INSUFFICIENT_STORAGE, "UNKNOWN"),
            S::NoSpace(backend) => {
                tracing::error!(error = %e, "out of space");
                crate::observe::METRICS.backend_error(match backend {
                    Backend::Database => "database",
                    Backend::Objects => "objects",
                });
                (StatusCode::INSUFFICIENT_STORAGE, "UNKNOWN")
            }
            S::Object(_) | S::Io(_) | S::Database(_) => {
                tracing::error!(error = %e, "storage failure");
                crate::observe::METRICS.backend_error(match e {
                    S::Database(_) => "database",
                    _ => "objects",
                });
                return ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "UNKNOWN",
                    "internal storage error; see the server log",
                );
            }
        };
        ApiError::new(status, code, message)
    }
}

/// An upstream's failure, named with the upstream and what it answered. Never a 500:
/// the registry works, its upstream does not.
impl From<ProxyError> for ApiError {
    fn from(e: ProxyError) -> ApiError {
        use ProxyError as P;
        let message = e.to_string();
        let (status, code) = match &e {
            P::Storage(e) => return ApiError::from(&**e),
            P::Setup(_) => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
            P::Busy { .. } => {
                return ApiError::new(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", message)
                    .with_header("Retry-After", "5".into())
            }
            P::Unreachable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
            P::Status {
                status: 429,
                retry_after,
                ..
            } => {
                let error =
                    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", message);
                return match retry_after {
                    Some(after) => error.with_header("Retry-After", after.clone()),
                    None => error,
                };
            }
            P::Status { status, .. } if *status >= 500 => {
                (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE")
            }
            // Refused credentials, or a status a registry should not answer.
            P::Status { .. } | P::BadAnswer { .. } => (StatusCode::BAD_GATEWAY, "UNAVAILABLE"),
            P::NotFound { what, .. } => match what {
                Missing::Manifest(_) => (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
                Missing::Blob(_) => (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"),
                Missing::Repository(_) => (StatusCode::NOT_FOUND, "NAME_UNKNOWN"),
            },
            P::DigestMismatch { .. } => (StatusCode::BAD_GATEWAY, "DIGEST_INVALID"),
        };
        ApiError::new(status, code, message)
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
