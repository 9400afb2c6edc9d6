//! `GET /v2/_catalog`: repository names, paginated with `n` and `last`.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::error::ApiResult;
use crate::http::Pagination;
use crate::AppState;

pub async fn list(state: web::Data<AppState>, req: HttpRequest) -> ApiResult<HttpResponse> {
    let p = Pagination::from_request(&req)?;
    let page = state.storage.catalog(p.limit(), p.last.as_deref()).await?;
    Ok(p.respond("/v2/_catalog", &page, json!({ "repositories": page.items })))
}
