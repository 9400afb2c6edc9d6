//! `GET /v2/_catalog`: repository names, paginated with `n` and `last`, as the gate's
//! viewer may see them.

use actix_web::{HttpRequest, HttpResponse};
use berth_storage::repos::Viewer;
use serde_json::json;

use crate::error::ApiResult;
use crate::http::Pagination;
use crate::AppState;

pub async fn list(state: &AppState, viewer: &Viewer, req: &HttpRequest) -> ApiResult<HttpResponse> {
    let p = Pagination::from_request(req)?;
    let page = state
        .storage
        .catalog(p.limit(), p.last.as_deref(), viewer)
        .await?;
    Ok(p.respond("/v2/_catalog", &page, json!({ "repositories": page.items })))
}
