//! The JSON API behind the pages (`/api/v1/…`), with the pages' access rules.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::error::ApiResult;
use crate::pages::{host, SearchParams};
use crate::session::Visitor;
use crate::view::{self, TagParams, Target, TAGS_PER_PAGE};
use crate::Web;

/// `GET /api/v1/search?q=&namespace=&os=&arch=&page=&per_page=`
pub async fn search(
    web: web::Data<Web>,
    visitor: Visitor,
    params: web::Query<SearchParams>,
) -> ApiResult {
    let listing = params.listing(20)?;
    let viewer = visitor.viewer(&web).await?;
    let found = web.storage.list_repositories(&viewer, &listing).await?;
    Ok(HttpResponse::Ok().json(json!({
        "total": found.total,
        "page": listing.page,
        "per_page": listing.per_page,
        "results": view::repo_items(&web, found.items),
    })))
}

/// `GET /api/v1/repositories/<name>`, `…/<name>/tags?page=&name=&sort=`,
/// `…/<name>/tags/<tag>`.
pub async fn repository(
    web: web::Data<Web>,
    visitor: Visitor,
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<TagParams>,
) -> ApiResult {
    let host = host(&web, &req);
    let body = match view::resolve(&web, &visitor, &path).await? {
        Target::Repository(repo) => json!(view::repo_page_view(&web, repo)),
        Target::Tags(repo) => {
            let listing = query.listing()?;
            let (tags, total) = view::tag_views(&web, &host, &repo.summary.name, &listing).await?;
            json!({
                "total": total,
                "page": listing.page,
                "per_page": TAGS_PER_PAGE,
                "tags": tags,
            })
        }
        Target::Tag(repo, tag) => {
            let described = view::Described::First;
            let detail = view::tag_detail(&web, &repo.summary.name, &tag, described).await?;
            let mut detail = json!(detail);
            detail["pull"] = json!(view::pull_command(&host, &repo.summary.name, &tag));
            detail
        }
    };
    Ok(HttpResponse::Ok().json(body))
}
