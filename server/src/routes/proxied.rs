//! The registry's reads in a proxy's namespace: manifests, blobs, tags and referrers answered
//! by `berth_proxy` (from the cache, or through the upstream). Writes never get here:
//! the gate refuses them.

use actix_web::body::SizedStream;
use actix_web::{HttpRequest, HttpResponse};
use berth_oci::{Digest, Reference, RepoName};
use berth_proxy::{Blob, Route};
use serde_json::json;

use crate::authz::MirrorOf;
use crate::error::ApiResult;
use crate::http::{head_body, query_one, Pagination};
use crate::routes::{blobs, manifests, referrers};
use crate::AppState;

/// A manifest's `GET` (a pull, counted) or `HEAD`.
pub async fn manifest(
    state: &AppState,
    route: &Route<'_>,
    name: &RepoName,
    reference: &Reference,
    head: bool,
) -> ApiResult<HttpResponse> {
    let m = route.proxy.manifest(name, &route.remote, reference).await?;
    if !head {
        state.storage.record_pull(name, reference, &m);
        super::manifests::record_pull_event(state, name, reference, &m).await;
    }
    Ok(manifests::respond(&m, head))
}

pub async fn get_blob(
    state: &AppState,
    route: &Route<'_>,
    name: &RepoName,
    digest: &Digest,
    req: &HttpRequest,
) -> ApiResult<HttpResponse> {
    match route.proxy.blob(name, &route.remote, digest).await? {
        // Ranges and all, as any stored blob.
        Blob::Cached(blob) => blobs::send(state, &blob, req).await,
        // Whole (a `Range` may be ignored, RFC 9110 14.2): its bytes are still arriving.
        Blob::Following(following) => {
            let mut res = HttpResponse::Ok();
            blobs::blob_headers(&mut res, digest);
            Ok(res.body(SizedStream::new(following.size, following.body)))
        }
    }
}

pub async fn head_blob(
    route: &Route<'_>,
    name: &RepoName,
    digest: &Digest,
) -> ApiResult<HttpResponse> {
    let size = route.proxy.blob_size(name, &route.remote, digest).await?;
    let mut res = HttpResponse::Ok();
    blobs::blob_headers(&mut res, digest);
    Ok(res.body(head_body(size)))
}

pub async fn list_tags(
    route: &Route<'_>,
    name: &RepoName,
    req: &HttpRequest,
) -> ApiResult<HttpResponse> {
    let p = Pagination::from_request(req)?;
    let page = route
        .proxy
        .tags(
            name,
            &route.remote,
            p.n,
            crate::http::MAX_PAGE,
            p.last.as_deref(),
        )
        .await?;
    let addressed = addressed_name(name, req);
    Ok(p.respond(
        &format!("/v2/{addressed}/tags/list"),
        &page,
        json!({ "name": addressed, "tags": page.items }),
    ))
}

/// `name` as the client addressed it: on a proxy's mirror listener, without the
/// proxy's prefix (the gate put it there), so a `Link` to the next page leads there.
fn addressed_name<'a>(name: &'a RepoName, req: &HttpRequest) -> &'a str {
    let name = name.as_str();
    req.app_data::<MirrorOf>()
        .and_then(|mirror| name.strip_prefix(mirror.0.as_str()))
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or(name)
}

pub async fn list_referrers(
    state: &AppState,
    route: &Route<'_>,
    name: &RepoName,
    digest: &Digest,
    req: &HttpRequest,
) -> ApiResult<HttpResponse> {
    let artifact_type = query_one(req, "artifactType").filter(|t| !t.is_empty());
    let answer = route
        .proxy
        .referrers(&route.remote, digest, artifact_type.as_deref())
        .await?;
    let Some((index, filtered)) = answer else {
        return referrers::list(state, name, digest, req).await;
    };
    Ok(referrers::index_response(filtered).body(index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mirror_listeners_names_are_told_as_addressed() {
        let name = RepoName::parse("hub/library/nginx").unwrap();
        let main = actix_web::test::TestRequest::default().to_http_request();
        assert_eq!(addressed_name(&name, &main), "hub/library/nginx");
        let mirror = actix_web::test::TestRequest::default()
            .app_data(MirrorOf("hub".into()))
            .to_http_request();
        assert_eq!(addressed_name(&name, &mirror), "library/nginx");
        // Only the whole first component is the prefix.
        let other = actix_web::test::TestRequest::default()
            .app_data(MirrorOf("hu".into()))
            .to_http_request();
        assert_eq!(addressed_name(&name, &other), "hub/library/nginx");
    }
}
