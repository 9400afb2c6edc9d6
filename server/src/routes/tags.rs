//! `GET /v2/<name>/tags/list` (end-8a/8b), paginated with `n` and `last`.

use actix_web::{HttpRequest, HttpResponse};
use berth_oci::RepoName;
use serde_json::json;

use crate::error::ApiResult;
use crate::http::Pagination;
use crate::AppState;

pub async fn list(state: &AppState, name: &RepoName, req: &HttpRequest) -> ApiResult<HttpResponse> {
    let p = Pagination::from_request(req)?;
    let page = state
        .storage
        .tags(name, p.limit(), p.last.as_deref())
        .await?;
    Ok(p.respond(
        &format!("/v2/{name}/tags/list"),
        &page,
        json!({ "name": name.as_str(), "tags": page.items }),
    ))
}
