//! Blob uploads: start (end-4a/4b, with `mount` end-11 and `digest-algorithm`), chunk
//! `PATCH` (end-5), status `GET` (end-13), complete `PUT` (end-6), cancel `DELETE`.

use actix_web::{web, HttpRequest, HttpResponse};
use berth_storage::uploads::UploadState;
use berth_storage::{Algorithm, Digest};

use crate::error::{upload_range, ApiError, ApiResult};
use crate::http::{chunk_start, query_one, RepoName};
use crate::AppState;

fn upload_response(
    mut res: actix_web::HttpResponseBuilder,
    name: &str,
    upload: &UploadState,
) -> HttpResponse {
    res.insert_header((
        "Location",
        format!("/v2/{name}/blobs/uploads/{}", upload.id),
    ))
    .insert_header(("Range", upload_range(upload.size)))
    .insert_header(("Docker-Upload-UUID", upload.id.as_str()))
    .finish()
}

fn created(name: &str, digest: &Digest) -> HttpResponse {
    HttpResponse::Created()
        .insert_header(("Location", format!("/v2/{name}/blobs/{digest}")))
        .insert_header(("Docker-Content-Digest", digest.as_str()))
        .finish()
}

fn required_digest(req: &HttpRequest) -> ApiResult<Digest> {
    let d = query_one(req, "digest").ok_or_else(|| {
        ApiError::bad_request("DIGEST_INVALID", "the digest query parameter is required")
    })?;
    Ok(d.parse()?)
}

pub async fn start(
    state: web::Data<AppState>,
    RepoName(name): RepoName,
    req: HttpRequest,
    body: web::Payload,
) -> ApiResult<HttpResponse> {
    if let Some(mount) = query_one(&req, "mount") {
        let digest: Digest = mount.parse()?;
        // Without `from` we do not search other repositories: that would reveal blobs
        // of repositories the client may not see. Fall back to a plain upload.
        if let Some(from) = query_one(&req, "from") {
            // With auth on, the token must also allow pulling from the source.
            let may_pull =
                crate::authz::claims(&req).is_none_or(|c| c.allows("repository", &from, "pull"));
            if may_pull
                && berth_storage::names::validate_name(&from).is_ok()
                && state.storage.mount_blob(&name, &from, &digest).await?
            {
                return Ok(created(&name, &digest));
            }
        }
    } else if let Some(d) = query_one(&req, "digest") {
        let digest: Digest = d.parse()?;
        state.storage.put_blob(&name, &digest, body).await?;
        return Ok(created(&name, &digest));
    }
    let algorithm = match query_one(&req, "digest-algorithm") {
        Some(a) => Algorithm::parse(&a)?,
        None => Algorithm::Sha256,
    };
    let upload = state.storage.start_upload(&name, algorithm).await?;
    Ok(upload_response(HttpResponse::Accepted(), &name, &upload))
}

pub async fn status(
    state: web::Data<AppState>,
    RepoName(name): RepoName,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let upload = state.storage.upload_state(&name, &path.1).await?;
    Ok(upload_response(HttpResponse::NoContent(), &name, &upload))
}

pub async fn append(
    state: web::Data<AppState>,
    RepoName(name): RepoName,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    body: web::Payload,
) -> ApiResult<HttpResponse> {
    let start = chunk_start(&req)?;
    let upload = state
        .storage
        .append_upload(&name, &path.1, start, body)
        .await?;
    Ok(upload_response(HttpResponse::Accepted(), &name, &upload))
}

pub async fn complete(
    state: web::Data<AppState>,
    RepoName(name): RepoName,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    body: web::Payload,
) -> ApiResult<HttpResponse> {
    let digest = required_digest(&req)?;
    let start = chunk_start(&req)?;
    state
        .storage
        .complete_upload(&name, &path.1, &digest, start, body)
        .await?;
    Ok(created(&name, &digest))
}

pub async fn cancel(
    state: web::Data<AppState>,
    RepoName(name): RepoName,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    state.storage.cancel_upload(&name, &path.1).await?;
    Ok(HttpResponse::NoContent().finish())
}
