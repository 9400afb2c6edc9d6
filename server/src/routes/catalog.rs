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
    let user = berth_auth::users::get(&auth.db, &claims.sub)
        .await
        .map_err(internal)?;
    let Some(user) = user else {
        return Ok(Viewer::Public);
    };
    let namespaces = berth_auth::access::private_namespaces(&auth.db, &user)
        .await
        .map_err(internal)?;
    Ok(namespaces.map_or(Viewer::Everything, Viewer::PublicAndNamespaces))
}

fn internal(e: berth_auth::AuthError) -> crate::error::ApiError {
    tracing::error!(error = %e, "looking up the catalog viewer");
    crate::error::ApiError::new(
        actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
        "UNKNOWN",
        "internal error; see the server log",
    )
}
