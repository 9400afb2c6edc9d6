//! `GET /v2/<name>/tags/list` (end-8a/8b), paginated with `n` and `last`.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::error::ApiResult;
use crate::http::{Pagination, RepoName};
use crate::AppState;

pub async fn list(
    state: web::Data<AppState>,
    RepoName(name): RepoName,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let p = Pagination::from_request(&req)?;
    let page = state
        .storage
        .tags(&name, p.limit(), p.last.as_deref())
        .await?;
    Ok(p.respond(
        &format!("/v2/{name}/tags/list"),
        &page,
        json!({ "name": name, "tags": page.items }),
    ))
}
