//! Blob uploads: start (end-4a/4b, with `mount` end-11 and `digest-algorithm`), chunk
//! `PATCH` (end-5), status `GET` (end-13), complete `PUT` (end-6), cancel `DELETE`.

use actix_web::dev::Payload;
use actix_web::{HttpRequest, HttpResponse};
use berth_oci::{Digest, RepoName, UploadId, UploadStart};
use berth_storage::uploads::UploadState;

use crate::error::{upload_range, ApiError, ApiResult};
use crate::http::{chunk_start, query_one};
use crate::AppState;

fn upload_response(
    mut res: actix_web::HttpResponseBuilder,
    name: &RepoName,
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

fn created(name: &RepoName, digest: &Digest) -> HttpResponse {
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

/// `start` was parsed (and a mount's source authorized) by the gate.
pub async fn start(
    state: &AppState,
    name: &RepoName,
    start: UploadStart,
    body: Payload,
) -> ApiResult<HttpResponse> {
    let algorithm = match start {
        UploadStart::Mount { digest, from } => {
            if state.storage.mount_blob(name, &from, &digest).await? {
                return Ok(created(name, &digest));
            }
            // Not in the source: a normal upload session, as the spec says.
            berth_oci::Algorithm::Sha256
        }
        UploadStart::Monolithic(digest) => {
            state.storage.put_blob(name, &digest, body).await?;
            return Ok(created(name, &digest));
        }
        UploadStart::Session(algorithm) => algorithm,
    };
    let upload = state.storage.start_upload(name, algorithm).await?;
    Ok(upload_response(HttpResponse::Accepted(), name, &upload))
}

pub async fn status(state: &AppState, name: &RepoName, id: &UploadId) -> ApiResult<HttpResponse> {
    let upload = state.storage.upload_state(name, id.as_str()).await?;
    Ok(upload_response(HttpResponse::NoContent(), name, &upload))
}

pub async fn append(
    state: &AppState,
    name: &RepoName,
    id: &UploadId,
    req: &HttpRequest,
    body: Payload,
) -> ApiResult<HttpResponse> {
    let start = chunk_start(req)?;
    let upload = state
        .storage
        .append_upload(name, id.as_str(), start, body)
        .await?;
    Ok(upload_response(HttpResponse::Accepted(), name, &upload))
}

pub async fn complete(
    state: &AppState,
    name: &RepoName,
    id: &UploadId,
    req: &HttpRequest,
    body: Payload,
) -> ApiResult<HttpResponse> {
    let digest = required_digest(req)?;
    let start = chunk_start(req)?;
    state
        .storage
        .complete_upload(name, id.as_str(), &digest, start, body)
        .await?;
    Ok(created(name, &digest))
}

pub async fn cancel(state: &AppState, name: &RepoName, id: &UploadId) -> ApiResult<HttpResponse> {
    state.storage.cancel_upload(name, id.as_str()).await?;
    Ok(HttpResponse::NoContent().finish())
}
