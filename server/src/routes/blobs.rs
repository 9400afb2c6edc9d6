//! Blobs: `GET`/`HEAD` (end-2, with `Range`), `DELETE` (end-10).

use std::rc::Rc;

use actix_web::body::SizedStream;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use berth_oci::{Digest, RepoName};
use berth_storage::audit::{Action as AuditAction, Actor};
use berth_storage::events::Target;
use berth_storage::BlobInfo;
use futures::TryStreamExt;

use crate::downloads::{FileBody, Handoff};
use crate::error::{ApiError, ApiResult};
use crate::http::{byte_range, head_body, header};
use crate::AppState;

pub(crate) fn blob_headers(res: &mut actix_web::HttpResponseBuilder, digest: &Digest) {
    res.content_type("application/octet-stream")
        .insert_header(("Docker-Content-Digest", digest.as_str()))
        .insert_header(("ETag", format!("\"{digest}\"")))
        .insert_header(("Accept-Ranges", "bytes"))
        .insert_header(("Cache-Control", "max-age=31536000"));
}

pub async fn head(state: &AppState, name: &RepoName, digest: &Digest) -> ApiResult<HttpResponse> {
    let blob = state.storage.blob(name, digest).await?;
    let mut res = HttpResponse::Ok();
    blob_headers(&mut res, &blob.digest);
    Ok(res.body(head_body(blob.size)))
}

pub async fn get(
    state: &AppState,
    name: &RepoName,
    digest: &Digest,
    req: &HttpRequest,
) -> ApiResult<HttpResponse> {
    let blob = state.storage.blob(name, digest).await?;
    super::record_pull_event(state, Target::blob(name, digest.as_str(), blob.size)).await;
    send(state, &blob, req).await
}

/// A stored blob's `GET` answer: a redirect to the object store, or its bytes (a
/// `Range` of them), from files where it can.
pub(crate) async fn send(
    state: &AppState,
    blob: &BlobInfo,
    req: &HttpRequest,
) -> ApiResult<HttpResponse> {
    if let Some(url) = state.storage.blob_redirect(blob).await? {
        // The object store serves the bytes (and any Range) itself.
        return Ok(HttpResponse::TemporaryRedirect()
            .insert_header(("Location", url))
            .insert_header(("Docker-Content-Digest", blob.digest.as_str()))
            .finish());
    }
    let range = byte_range(header(req, "Range"), blob.size)?;
    let mut res = HttpResponse::build(if range.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    });
    blob_headers(&mut res, &blob.digest);
    let range = match range {
        Some(r) => {
            res.insert_header((
                "Content-Range",
                format!("bytes {}-{}/{}", r.start, r.end - 1, blob.size),
            ));
            r
        }
        None => 0..blob.size,
    };
    let length = range.end - range.start;
    if let Some(handoff) = req.conn_data::<Rc<Handoff>>() {
        if let Some(files) = state.storage.open_blob_files(blob, range.clone()).await? {
            let body = FileBody::new(handoff.clone(), files);
            return Ok(res.no_chunking(length).body(body));
        }
    }
    let body = state
        .storage
        .read_blob(blob, range.clone())
        .inspect_err(|e| {
            // Too late for an error response: the client sees the connection close.
            tracing::error!(error = %e, "reading blob failed");
            crate::observe::METRICS.backend_error("objects");
        });
    Ok(res.body(SizedStream::new(length, body)))
}

pub async fn delete(
    state: &AppState,
    name: &RepoName,
    digest: &Digest,
    actor: Actor,
) -> ApiResult<HttpResponse> {
    let result = state
        .storage
        .by(actor.clone())
        .delete_blob(name, digest, super::VIA_API)
        .await
        .map_err(ApiError::from);
    let target = format!("{name}@{digest}");
    super::audit_refusal(state, actor, AuditAction::BlobDeleted, target, &result).await;
    result?;
    Ok(HttpResponse::Accepted().finish())
}
