//! `docker search HOST/TERM`. The Docker daemon searches a registry through the v1
//! API: it pings `/v1/_ping` (over HTTPS, then HTTP for an insecure registry), then asks
//! `/v1/search?q=TERM&n=LIMIT` and prints the results. Berth answers with its own
//! search, as an anonymous visitor sees it (Docker Hub's search, too, lists only what
//! anyone may pull): the daemon sends no session, and a token it may send is not asked
//! for here.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::error::{ApiResult, WebError};
use crate::pages::SearchParams;
use crate::session::Visitor;
use crate::Web;

/// The daemon's default `--limit` (its largest, 100, is the search's own bound).
const DEFAULT_LIMIT: u64 = 25;

/// `GET /v1/_ping`: any answer tells the daemon the endpoint is there; the header says
/// Berth is a standalone registry (no separate index service).
pub async fn ping() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("X-Docker-Registry-Standalone", "true"))
        .json(json!({}))
}

/// `GET /v1/search?q=&n=&page=`, in Docker Hub's v1 result format. The parameters are
/// read as text, so a malformed one gets this API's JSON error rather than the
/// framework's.
pub async fn search(
    web: web::Data<Web>,
    visitor: Visitor,
    query: web::Query<Vec<(String, String)>>,
) -> ApiResult {
    let param = |name: &str| {
        query
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    let text = param("q").unwrap_or_default().to_owned();
    // The Explore search's parameters, bounded by it.
    let listing = SearchParams {
        q: text.clone(),
        namespace: None,
        os: None,
        arch: None,
        page: number(param("page"), "page")?,
        per_page: number(param("n"), "n")?,
        sort: None,
    }
    .listing(DEFAULT_LIMIT)?;
    let viewer = visitor.anonymous().viewer(&web).await?;
    let found = web.storage.list_repositories(&viewer, &listing).await?;
    let results: Vec<_> = found
        .items
        .iter()
        .map(|repo| {
            json!({
                "name": repo.name,
                "description": repo.description,
                "star_count": repo.star_count,
                "is_official": false,
                "is_automated": false,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "query": text,
        "num_results": found.total,
        "num_pages": found.total.div_ceil(listing.per_page),
        "page": listing.page,
        "page_size": listing.per_page,
        "results": results,
    })))
}

/// A parameter that must be a whole number when given.
fn number(value: Option<&str>, name: &str) -> Result<Option<u64>, WebError> {
    value
        .map(|v| {
            v.parse().map_err(|_| {
                WebError::BadRequest(format!("{name} must be a whole number, not {v:?}"))
            })
        })
        .transpose()
}
