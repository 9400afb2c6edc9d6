//! Probes for load balancers and Kubernetes: `/healthz` says the process answers,
//! `/readyz` that the database can commit, the object store answers, and how much
//! room is left.
//!
//! Not ready (503) when the database cannot commit or the object store does not
//! answer: such a replica would fail or could not acknowledge writes. Below the
//! free-space reserve it stays ready (200, `"storage": "below reserve"`): it still
//! serves pulls, deletes and cancels, refuses pushes with a clear 507, and taking it
//! out would not help, since replicas share their storage.

use actix_web::{web, HttpResponse};
use berth_storage::StorageError;
use serde_json::json;

use crate::AppState;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let ready = state.storage.check_ready().await;
    let mut body = json!({ "status": "ok" });
    if let Some(space) = ready.space {
        body["free_bytes"] = space.free.into();
        body["min_free_bytes"] = space.reserve.into();
        if space.below_reserve() {
            body["storage"] = "below reserve".into();
        }
    }
    // The reasons go to the log; the probe answer names only the failing part.
    let failing = match (&ready.database, &ready.objects) {
        (Err(e), _) => {
            tracing::warn!(error = %e, "not ready: the database cannot commit");
            body["database"] = match e {
                StorageError::NoSpace(_) => "out of space",
                _ => "cannot commit",
            }
            .into();
            Some("database")
        }
        (Ok(()), Err(e)) => {
            tracing::warn!(error = %e, "not ready: object storage does not answer");
            Some("object storage")
        }
        (Ok(()), Ok(())) => None,
    };
    match failing {
        None => HttpResponse::Ok().json(body),
        Some(part) => {
            body["status"] = "unavailable".into();
            body["failing"] = part.into();
            HttpResponse::ServiceUnavailable().json(body)
        }
    }
}
