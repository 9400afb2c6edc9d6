//! `GET /v2/<name>/referrers/<digest>` (end-12a/12b): manifests whose subject is `<digest>`.

use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use berth_oci::media_types::OCI_INDEX;
use berth_oci::{Digest, RepoName};
use serde_json::json;

use crate::error::ApiResult;
use crate::http::query_one;
use crate::AppState;

pub async fn list(
    state: &AppState,
    name: &RepoName,
    digest: &Digest,
    req: &HttpRequest,
) -> ApiResult<HttpResponse> {
    let artifact_type = query_one(req, "artifactType").filter(|t| !t.is_empty());
    let referrers = state
        .storage
        .referrers(name, digest, artifact_type.as_deref())
        .await?;
    Ok(index_response(artifact_type.is_some())
        .json(json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": referrers })))
}

/// A referrers answer: an image index, saying whether the `artifactType` filter was
/// applied.
pub(crate) fn index_response(filtered: bool) -> HttpResponseBuilder {
    let mut res = HttpResponse::Ok();
    res.content_type(OCI_INDEX);
    if filtered {
        res.insert_header(("OCI-Filters-Applied", "artifactType"));
    }
    res
}
