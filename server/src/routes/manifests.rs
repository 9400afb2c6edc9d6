//! Manifests: `GET`/`HEAD` (end-3), `PUT` (end-7, with `?tag=`), `DELETE` (end-9 by
//! digest, end-18 by tag).

use actix_web::dev::Payload;
use actix_web::{HttpRequest, HttpResponse};
use berth_oci::{Reference, RepoName};
use berth_storage::audit::Actor;
use berth_storage::events::Target;
use berth_storage::manifests::StoredManifest;
use berth_storage::StorageError;
use futures::StreamExt;

use crate::error::{ApiError, ApiResult};
use crate::http::{head_body, header, query_all};
use crate::AppState;

fn manifest_headers(res: &mut actix_web::HttpResponseBuilder, m: &StoredManifest) {
    res.content_type(m.media_type.as_str())
        .insert_header(("Docker-Content-Digest", m.digest.as_str()))
        .insert_header(("ETag", format!("\"{}\"", m.digest)));
}

pub async fn get(
    state: &AppState,
    name: &RepoName,
    reference: &Reference,
) -> ApiResult<HttpResponse> {
    let m = state.storage.manifest(name, reference).await?;
    state.storage.record_pull(name, reference, &m);
    record_pull_event(state, name, reference, &m).await;
    Ok(respond(&m, false))
}

pub async fn head(
    state: &AppState,
    name: &RepoName,
    reference: &Reference,
) -> ApiResult<HttpResponse> {
    let m = state.storage.manifest(name, reference).await?;
    Ok(respond(&m, true))
}

/// A manifest GET's event, for endpoints that want pulls.
pub(crate) async fn record_pull_event(
    state: &AppState,
    name: &RepoName,
    reference: &Reference,
    m: &StoredManifest,
) {
    let tag = match reference {
        Reference::Tag(t) => Some(t.as_str()),
        Reference::Digest(_) => None,
    };
    let size = m.content.len() as u64;
    let target = Target::manifest(name, m.digest.as_str(), &m.media_type, size, tag);
    super::record_pull_event(state, target).await;
}

/// A manifest's 200: its bytes, or for a `HEAD` only their length.
pub(crate) fn respond(m: &StoredManifest, head: bool) -> HttpResponse {
    let mut res = HttpResponse::Ok();
    manifest_headers(&mut res, m);
    if head {
        res.body(head_body(m.content.len() as u64))
    } else {
        res.body(m.content.clone())
    }
}

pub async fn put(
    state: &AppState,
    name: &RepoName,
    reference: &Reference,
    req: &HttpRequest,
    mut body: Payload,
) -> ApiResult<HttpResponse> {
    let limit = state.storage.max_manifest_bytes();
    let too_large = |size| ApiError::from(StorageError::ManifestTooLarge { size, limit });
    if let Some(len) = header(req, "Content-Length").and_then(|l| l.parse::<u64>().ok()) {
        if len > limit {
            return Err(too_large(len));
        }
    }
    // Read at most `limit` bytes: a manifest is small, but the body is the client's to size.
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request("MANIFEST_INVALID", format!("reading the manifest: {e}"))
        })?;
        bytes.extend_from_slice(&chunk);
        if bytes.len() as u64 > limit {
            return Err(too_large(bytes.len() as u64));
        }
    }
    let extra_tags = query_all(req, "tag");
    let put = state
        .storage
        .put_manifest(
            name,
            reference,
            header(req, "Content-Type"),
            &bytes,
            &extra_tags,
        )
        .await?;
    let mut res = HttpResponse::Created();
    res.insert_header(("Location", format!("/v2/{name}/manifests/{}", put.digest)))
        .insert_header(("Docker-Content-Digest", put.digest.as_str()));
    if let Some(subject) = &put.subject {
        res.insert_header(("OCI-Subject", subject.as_str()));
    }
    for tag in put.tags.iter().filter(|t| extra_tags.contains(t)) {
        res.append_header(("OCI-Tag", tag.as_str()));
    }
    Ok(res.finish())
}

pub async fn delete(
    state: &AppState,
    name: &RepoName,
    reference: &Reference,
    actor: Actor,
) -> ApiResult<HttpResponse> {
    let result = state
        .storage
        .by(actor.clone())
        .delete_manifest(name, reference, super::VIA_API)
        .await
        .map_err(ApiError::from);
    let (action, target) = berth_storage::manifests::deletion_audited_as(name, reference);
    super::audit_refusal(state, actor, action, target, &result).await;
    result?;
    Ok(HttpResponse::Accepted().finish())
}
