//! `GET /v2/_catalog`: repository names, paginated with `n` and `last`.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use berth_storage::repos::Viewer;

use crate::error::ApiResult;
use crate::http::Pagination;
use crate::AppState;

pub async fn list(state: web::Data<AppState>, req: HttpRequest) -> ApiResult<HttpResponse> {
    let p = Pagination::from_request(&req)?;
    let viewer = viewer(&state, &req).await?;
    let page = state
        .storage
        .catalog(p.limit(), p.last.as_deref(), &viewer)
        .await?;
    Ok(p.respond("/v2/_catalog", &page, json!({ "repositories": page.items })))
}

/// Whose listing this is: everything without auth or for admins; otherwise what the
/// token's subject may pull.
async fn viewer(state: &AppState, req: &HttpRequest) -> ApiResult<Viewer> {
    let (Some(auth), Some(claims)) = (&state.auth, crate::authz::claims(req)) else {
        return Ok(Viewer::Everything);
    };
    if claims.sub.is_empty() {
        return Ok(Viewer::Public);
    }
    match berth_auth::users::get(&auth.db, &claims.sub).await {
        Ok(Some(user)) if user.admin => Ok(Viewer::Everything),
        Ok(_) => Ok(Viewer::PublicAndNamespace(claims.sub.clone())),
        Err(e) => {
            tracing::error!(error = %e, "looking up the catalog viewer");
            Err(crate::error::ApiError::new(
                actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN",
                "internal error; see the server log",
            ))
        }
    }
}
