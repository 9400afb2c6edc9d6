//! A repository's untagged images, previewed and deleted by its owners (Docker Hub's
//! "preview and delete"): the JSON API (`/api/v1/untagged?scope=<repo>`) and the
//! `/manage/untagged?repo=` page linked from the repository page's owner section.
//!
//! Access is the retention policies' (see `lifecycle.rs`): the repository's owners
//! and registry admins; a private repository a visitor may not pull is a 404. JSON
//! deletes carry the session's CSRF token in `X-CSRF-Token`, forms as `csrf`.
//!
//! Only an untagged manifest no index of the repository lists may be deleted here:
//! deleting one an index lists would break that index (delete the index first).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use berth_storage::manifests::Reference;
use berth_storage::tag_rules::Scope;
use berth_storage::untagged::{UntaggedManifest, MAX_LISTED};
use berth_storage::Digest;
use minijinja::context;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{ApiResult, PageResult, WebError};
use crate::pages::{render, see_other};
use crate::session::Visitor;
use crate::tag_rules::check_manager;
use crate::{mirrors, Web};

/// An untagged manifest as the API and the page show it.
#[derive(Debug, Serialize)]
pub struct UntaggedView {
    #[serde(flatten)]
    pub manifest: UntaggedManifest,
    /// `image`, `index` or `signature` (it has a subject: a signature, an SBOM).
    pub kind: &'static str,
    /// Whether it may be deleted here (no index lists it).
    pub deletable: bool,
}

impl From<UntaggedManifest> for UntaggedView {
    fn from(m: UntaggedManifest) -> UntaggedView {
        let kind = if m.subject.is_some() {
            "signature"
        } else if m.media_type.contains("index") || m.media_type.contains("manifest.list") {
            "index"
        } else {
            "image"
        };
        UntaggedView {
            kind,
            deletable: m.listed_by.is_none(),
            manifest: m,
        }
    }
}

/// The list and its totals.
#[derive(Debug, Serialize)]
pub struct UntaggedList {
    pub repository: String,
    pub manifests: Vec<UntaggedView>,
    /// How many may be deleted here.
    pub deletable: usize,
    /// The sum of the deletable ones' `freed_bytes`: what deleting them all frees at
    /// least (a blob only two of them share is freed too, and counted by neither).
    pub deletable_freed_bytes: u64,
    /// Whether the list stops at its limit (the newest are listed).
    pub truncated: bool,
}

async fn list_of(web: &Web, repo: &str) -> Result<UntaggedList, WebError> {
    let manifests: Vec<UntaggedView> = web
        .storage
        .untagged_manifests(repo)
        .await?
        .into_iter()
        .map(UntaggedView::from)
        .collect();
    let deletable = manifests.iter().filter(|m| m.deletable);
    Ok(UntaggedList {
        repository: repo.to_owned(),
        deletable: deletable.clone().count(),
        deletable_freed_bytes: deletable.map(|m| m.manifest.freed_bytes).sum(),
        truncated: manifests.len() as u64 >= MAX_LISTED,
        manifests,
    })
}

/// The repository's owners and admins only; a repository, not a namespace.
async fn check_owner(web: &Web, visitor: &Visitor, repo: &str) -> Result<(), WebError> {
    if repo.is_empty() {
        return Err(WebError::BadRequest(
            "repository is missing: ?scope=acme/app".into(),
        ));
    }
    check_manager(web, visitor, repo)
        .await
        .map_err(|e| match e {
            WebError::Storage(berth_storage::StorageError::TagRuleInvalid(why)) => {
                WebError::BadRequest(format!("invalid repository: {why}"))
            }
            other => other,
        })?;
    match Scope::parse(repo)? {
        Scope::Repository(_) => Ok(()),
        Scope::Namespace(_) => Err(WebError::BadRequest(format!(
            "untagged images are listed per repository, not for {repo}: use ?scope=<namespace>/<repository>"
        ))),
    }
}

fn parse_digest(text: &str) -> Result<Digest, WebError> {
    text.parse::<Digest>()
        .map_err(|e| WebError::BadRequest(format!("invalid digest {text:?}: {e}")))
}

/// Deletes one untagged manifest no index lists; refuses (409) a tagged one and one
/// an index lists, 404 for one the repository does not have.
async fn delete_one(
    web: &Web,
    visitor: &Visitor,
    req: &HttpRequest,
    repo: &str,
    digest: &Digest,
) -> Result<UntaggedManifest, WebError> {
    // A pull-through cache's repositories are its upstream's: never changed here.
    mirrors::refuse_mirror(web, repo)?;
    let text = digest.to_string();
    let listed = web.storage.untagged_manifests(repo).await?;
    let Some(found) = listed.into_iter().find(|m| m.digest == text) else {
        // Not untagged (or past the listed limit): tagged, or unknown.
        let reference = Reference::Digest(digest.clone());
        web.storage.manifest(repo, &reference).await?;
        return Err(WebError::Conflict(format!(
            "{text} is tagged in {repo} (or older than the {MAX_LISTED} newest untagged images): delete its tags first"
        )));
    };
    if let Some(index) = &found.listed_by {
        return Err(WebError::Conflict(format!(
            "{text} is listed by the index {index} in {repo}: deleting it would break that index; delete the index first"
        )));
    }
    // Decided again, atomically, by storage: a tag pushed since the listing keeps it.
    web.storage_for(req, visitor)
        .delete_untagged(repo, digest)
        .await?;
    Ok(found)
}

// ---------------------------------------------------------------------------
// The JSON API.

#[derive(Deserialize)]
pub struct UntaggedQuery {
    #[serde(default)]
    scope: String,
    digest: Option<String>,
}

/// `GET /api/v1/untagged?scope=acme/app`: the repository's untagged manifests,
/// newest first (at most 500), each with `kind`, `size`, `freed_bytes`, `listed_by`
/// and `deletable`; the total `deletable_freed_bytes`; the CSRF token for deletes.
pub async fn list(
    web: web::Data<Web>,
    visitor: Visitor,
    query: web::Query<UntaggedQuery>,
) -> ApiResult {
    check_owner(&web, &visitor, &query.scope).await?;
    let list = list_of(&web, &query.scope).await?;
    let mut body = json!(list);
    body["csrf"] = json!(visitor.csrf());
    let mut res = HttpResponse::Ok();
    // The token for this visitor's writes; an anonymous one needs its cookie too.
    visitor.set_cookies(&mut res);
    Ok(res.json(body))
}

/// `DELETE /api/v1/untagged?scope=acme/app&digest=sha256:…`: 200 and the deleted
/// manifest; 409 if it is tagged or an index lists it; 404 if unknown.
pub async fn delete(
    web: web::Data<Web>,
    visitor: Visitor,
    req: HttpRequest,
    query: web::Query<UntaggedQuery>,
) -> ApiResult {
    visitor.check_api_write(&req, "delete")?;
    check_owner(&web, &visitor, &query.scope).await?;
    let digest = query
        .digest
        .as_deref()
        .ok_or_else(|| WebError::BadRequest("digest is missing: &digest=sha256:…".into()))?;
    let deleted = delete_one(&web, &visitor, &req, &query.scope, &parse_digest(digest)?).await?;
    Ok(HttpResponse::Ok().json(json!({ "deleted": UntaggedView::from(deleted) })))
}

// ---------------------------------------------------------------------------
// The page and its form.

#[derive(Deserialize)]
pub struct PageParams {
    #[serde(default)]
    repo: String,
    /// A digest just deleted, to say so.
    deleted: Option<String>,
}

/// `/manage/untagged?repo=`: the untagged images, each with a delete button.
pub async fn page(
    web: web::Data<Web>,
    visitor: Visitor,
    req: HttpRequest,
    params: web::Query<PageParams>,
) -> PageResult {
    check_owner(&web, &visitor, &params.repo).await?;
    let list = list_of(&web, &params.repo).await?;
    render(
        &web,
        &visitor,
        &req,
        StatusCode::OK,
        "untagged.html",
        context! { list, deleted => params.deleted },
    )
}

#[derive(Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    csrf: String,
    repo: String,
    digest: String,
}

/// The page's delete button: back to the page, which says what went.
pub async fn delete_form(
    web: web::Data<Web>,
    visitor: Visitor,
    req: HttpRequest,
    form: web::Form<DeleteForm>,
) -> PageResult {
    visitor.check_csrf(&form.csrf)?;
    check_owner(&web, &visitor, &form.repo).await?;
    let digest = parse_digest(&form.digest)?;
    delete_one(&web, &visitor, &req, &form.repo, &digest).await?;
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("repo", &form.repo)
        .append_pair("deleted", &digest.to_string())
        .finish();
    Ok(see_other(&format!("/manage/untagged?{query}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(subject: Option<&str>, listed_by: Option<&str>, media_type: &str) -> UntaggedView {
        UntaggedView::from(UntaggedManifest {
            digest: format!("sha256:{}", "a".repeat(64)),
            media_type: media_type.into(),
            pushed_at: 0,
            last_pulled_at: None,
            subject: subject.map(Into::into),
            listed_by: listed_by.map(Into::into),
            size: 2_500_000,
            freed_bytes: 1_500_000,
        })
    }

    #[test]
    fn kinds() {
        let oci = "application/vnd.oci.image.manifest.v1+json";
        assert_eq!(sample(None, None, oci).kind, "image");
        assert_eq!(
            sample(None, None, "application/vnd.oci.image.index.v1+json").kind,
            "index"
        );
        assert_eq!(
            sample(
                None,
                None,
                "application/vnd.docker.distribution.manifest.list.v2+json"
            )
            .kind,
            "index"
        );
        assert_eq!(sample(Some("sha256:b"), None, oci).kind, "signature");
        assert!(!sample(None, Some("sha256:c"), oci).deletable);
    }

    #[test]
    fn the_page_lists_sizes_and_a_delete_button() {
        let oci = "application/vnd.oci.image.manifest.v1+json";
        let manifests = vec![
            sample(None, None, oci),
            sample(None, Some("sha256:cccccccccccccccc"), oci),
        ];
        let list = UntaggedList {
            repository: "acme/app".into(),
            deletable: 1,
            deletable_freed_bytes: 1_500_000,
            truncated: false,
            manifests,
        };
        let html =
            crate::templates::render("untagged.html", context! { list, csrf => "tok" }).unwrap();
        assert!(html.contains("2.5 MB") && html.contains("1.5 MB"), "{html}");
        assert!(html.contains("sha256:aaaaaaaaaaaa"), "{html}");
        assert!(html.contains("listed by the index"), "{html}");
        assert_eq!(html.matches("/manage/untagged/delete").count(), 1, "{html}");
    }
}
