//! Probes for load balancers and Kubernetes: `/healthz` says the process answers,
//! `/readyz` that it can reach the database and the object store.

use actix_web::{web, HttpResponse};
use berth_storage::StorageError;
use serde_json::json;

use crate::AppState;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.storage.check_ready().await {
        Ok(()) => HttpResponse::Ok().json(json!({ "status": "ok" })),
        Err(e) => {
            // The reason goes to the log; the probe answer names only the failing part.
            tracing::warn!(error = %e, "not ready");
            let failing = match e {
                StorageError::Database(_) => "database",
                _ => "object storage",
            };
            HttpResponse::ServiceUnavailable()
                .json(json!({ "status": "unavailable", "failing": failing }))
        }
    }
}
