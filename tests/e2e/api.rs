//! Every endpoint of the distribution spec and its errors, over real HTTP.

use berth_tests::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

crate::on_both_databases!(
    version_check_and_unknown_routes,
    monolithic_uploads_and_blob_reads,
    blobs_are_visible_only_in_repositories_that_have_them,
    chunked_upload_in_order_and_out_of_order,
    streamed_patch_without_content_range,
    digest_mismatch_discards_the_upload,
    cancel_and_unknown_uploads,
    range_requests,
    cross_repository_mount,
    blob_delete,
    manifest_put_get_head_delete,
    manifest_validation_errors,
    index_and_docker_media_types,
    referrers_api,
    several_tags_in_one_put,
    tags_and_catalog_pagination,
    sha512_and_digest_algorithm,
    concurrent_pushes_of_one_blob_store_one_copy,
    resume_after_a_dropped_connection,
    downloads_pipelined_across_objects_and_abandoned,
    concurrent_completions_share_commits_and_keep_their_outcomes,
);

async fn version_check_and_unknown_routes(s: Berthd) {
    let c = s.client();
    let r = c.call("GET", "/v2/").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
    let r = c.call("GET", "/v2/nope").await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
    assert_eq!(error_code(r).await, "UNSUPPORTED");
    let r = c.call("POST", "/v2/a/tags/list").await;
    assert_eq!(r.status(), 405);
    let r = c.call("GET", "/v2/Bad_Name/tags/list").await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "NAME_INVALID");
    let r = c.call("GET", "/v2/never/pushed/tags/list").await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "NAME_UNKNOWN");
}

async fn monolithic_uploads_and_blob_reads(s: Berthd) {
    let c = s.client();
    let data = b"hello monolithic".to_vec();
    let digest = sha256(&data);
    // Single POST with ?digest=.
    let r = c
        .request(
            "POST",
            &format!("/v2/ns/app/blobs/uploads/?digest={digest}"),
        )
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.headers()["location"],
        format!("/v2/ns/app/blobs/{digest}").as_str()
    );
    assert_eq!(r.headers()["docker-content-digest"], digest.as_str());
    // POST then PUT.
    let d2 = c.push_blob("ns/app", b"second blob").await;
    for (d, body) in [(&digest, &data[..]), (&d2, b"second blob")] {
        let r = c.call("HEAD", &format!("/v2/ns/app/blobs/{d}")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["content-length"],
            body.len().to_string().as_str()
        );
        assert_eq!(r.headers()["docker-content-digest"], d.as_str());
        let r = c.call("GET", &format!("/v2/ns/app/blobs/{d}")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["docker-content-digest"], d.as_str());
        assert_eq!(r.bytes().await.unwrap(), body);
    }
    // An empty blob is a blob too.
    let empty = c.push_blob("ns/app", b"").await;
    let r = c.call("GET", &format!("/v2/ns/app/blobs/{empty}")).await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap().is_empty());
    // Missing digest on PUT.
    let loc = c.start_upload("ns/app").await;
    let r = c.request("PUT", &loc).body("x").send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    // Malformed digest in a URL.
    let r = c.call("GET", "/v2/ns/app/blobs/sha256:1234").await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
}

async fn blobs_are_visible_only_in_repositories_that_have_them(s: Berthd) {
    let c = s.client();
    let digest = c.push_blob("alice/private", b"secret layer").await;
    for repo in ["bob/app", "alice/other"] {
        let r = c.call("HEAD", &format!("/v2/{repo}/blobs/{digest}")).await;
        assert_eq!(r.status(), 404);
        let r = c.call("GET", &format!("/v2/{repo}/blobs/{digest}")).await;
        assert_eq!(r.status(), 404);
        assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
    }
    // Mounting without naming the source must not find it either.
    let r = c
        .call(
            "POST",
            &format!("/v2/bob/app/blobs/uploads/?mount={digest}"),
        )
        .await;
    assert_eq!(r.status(), 202);
}

async fn chunked_upload_in_order_and_out_of_order(s: Berthd) {
    let c = s.client();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let digest = sha256(&data);
    let mut loc = c.start_upload("ns/chunked").await;
    let chunks = [0..100_000, 100_000..250_000, 250_000..300_000];
    for (i, r) in chunks.iter().enumerate() {
        if i == 2 {
            // Out of order: restart at 0 -> 416 with the real Range.
            let resp = c
                .request("PATCH", &loc)
                .header("Content-Type", "application/octet-stream")
                .header("Content-Range", "0-9")
                .body(vec![0u8; 10])
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 416);
            assert_eq!(resp.headers()["range"], "0-249999");
            // Status: 204 with Range.
            let st = c.call("GET", &loc).await;
            assert_eq!(st.status(), 204);
            assert_eq!(st.headers()["range"], "0-249999");
            assert!(st.headers().contains_key("docker-upload-uuid"));
            break;
        }
        let resp = c
            .request("PATCH", &loc)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", format!("{}-{}", r.start, r.end - 1))
            .body(data[r.clone()].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        assert_eq!(resp.headers()["range"], format!("0-{}", r.end - 1).as_str());
        loc = resp.headers()["location"].to_str().unwrap().to_owned();
    }
    // Content-Length disagreeing with Content-Range.
    let resp = c
        .request("PATCH", &loc)
        .header("Content-Range", "250000-250009")
        .body(vec![0u8; 5])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // The last chunk travels with the PUT.
    let resp = c
        .request("PUT", &format!("{loc}?digest={digest}"))
        .header("Content-Range", "250000-299999")
        .body(data[250_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["docker-content-digest"], digest.as_str());
    let got = c
        .call("GET", &format!("/v2/ns/chunked/blobs/{digest}"))
        .await;
    assert_eq!(got.bytes().await.unwrap(), data);
    // The upload is gone once complete.
    let st = c.call("GET", &loc).await;
    assert_eq!(st.status(), 404);
    assert_eq!(error_code(st).await, "BLOB_UPLOAD_UNKNOWN");
}

async fn streamed_patch_without_content_range(s: Berthd) {
    let c = s.client();
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let digest = sha256(&data);
    let loc = c.start_upload("ns/streamed").await;
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(65536).map(|c| Ok(c.to_vec())).collect();
    let resp = c
        .request("PATCH", &loc)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(pieces)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.headers()["range"], "0-1999999");
    let loc = resp.headers()["location"].to_str().unwrap().to_owned();
    let resp = c.call("PUT", &format!("{loc}?digest={digest}")).await;
    assert_eq!(resp.status(), 201);
    let got = c
        .call("GET", &format!("/v2/ns/streamed/blobs/{digest}"))
        .await;
    assert_eq!(sha256(&got.bytes().await.unwrap()), digest);
}

async fn digest_mismatch_discards_the_upload(s: Berthd) {
    let c = s.client();
    let loc = c.start_upload("ns/bad").await;
    let wrong = sha256(b"something else");
    let r = c
        .request("PUT", &format!("{loc}?digest={wrong}"))
        .body("actual content")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    let st = c.call("GET", &loc).await;
    assert_eq!(st.status(), 404, "the bad upload is discarded");
    for d in [wrong, sha256(b"actual content")] {
        let r = c.call("HEAD", &format!("/v2/ns/bad/blobs/{d}")).await;
        assert_eq!(r.status(), 404, "no blob is created");
    }
    // Monolithic POST with a wrong digest: same.
    let r = c
        .request(
            "POST",
            &format!("/v2/ns/bad/blobs/uploads/?digest={}", sha256(b"x")),
        )
        .body("y")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    // Nothing of the rejected data is left in blob storage.
    assert_eq!(count_files(&s.data_dir.join("blobs/data")), 0);
}

pub fn count_files(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            if e.path().is_dir() {
                count_files(&e.path())
            } else {
                1
            }
        })
        .sum()
}

async fn cancel_and_unknown_uploads(s: Berthd) {
    let c = s.client();
    let loc = c.start_upload("ns/cancel").await;
    let r = c
        .request("PATCH", &loc)
        .body("partial")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = c.call("DELETE", &loc).await;
    assert_eq!(r.status(), 204);
    for method in ["GET", "PATCH", "PUT", "DELETE"] {
        let r = c
            .call(method, &format!("{loc}?digest={}", sha256(b"partial")))
            .await;
        assert_eq!(r.status(), 404, "{method} after cancel");
        assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    }
    let r = c
        .call("GET", "/v2/ns/cancel/blobs/uploads/no-such-id")
        .await;
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    // An upload id is only valid in its own repository.
    let loc = c.start_upload("ns/one").await;
    let id = loc.rsplit('/').next().unwrap();
    let r = c
        .call("GET", &format!("/v2/ns/two/blobs/uploads/{id}"))
        .await;
    assert_eq!(r.status(), 404);
    // Ids are not signed, but one dated in the future (it would never expire, nor the
    // tombstone its cancel leaves) is unknown; one dated now is as good as a POST's.
    let (random, rest) = id.split_once('.').unwrap();
    let (_, kind) = rest.split_once('.').unwrap();
    let far = format!("/v2/ns/one/blobs/uploads/{random}.9000000000000000.{kind}");
    for method in ["GET", "PATCH", "DELETE"] {
        let r = c.call(method, &far).await;
        assert_eq!(r.status(), 404, "{method} of a future id");
        assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let written = format!("/v2/ns/one/blobs/uploads/{random}.{now}.{kind}");
    assert_eq!(c.call("GET", &written).await.status(), 204);
    assert_eq!(
        count_files(&s.data_dir.join("blobs/data")),
        0,
        "cancelled data is deleted"
    );
}

async fn range_requests(s: Berthd) {
    let c = s.client();
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 256) as u8).collect();
    let d = c.push_blob("ns/range", &data).await;
    let path = format!("/v2/ns/range/blobs/{d}");
    let r = c
        .request("GET", &path)
        .header("Range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 10-19/1000");
    assert_eq!(r.bytes().await.unwrap(), &data[10..20]);
    let r = c
        .request("GET", &path)
        .header("Range", "bytes=-5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap(), &data[995..]);
    let r = c
        .request("GET", &path)
        .header("Range", "bytes=990-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), &data[990..]);
    let r = c
        .request("GET", &path)
        .header("Range", "bytes=5000-6000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()["content-range"], "bytes */1000");
    // A malformed Range is ignored (RFC 9110): the whole blob, connection intact.
    let r = c
        .request("GET", &path)
        .header("Range", "bytes=zz")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), data);
}

async fn cross_repository_mount(s: Berthd) {
    let c = s.client();
    let d = c.push_blob("src/repo", b"shared layer").await;
    let r = c
        .call(
            "POST",
            &format!("/v2/dst/repo/blobs/uploads/?mount={d}&from=src/repo"),
        )
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.headers()["location"],
        format!("/v2/dst/repo/blobs/{d}").as_str()
    );
    assert_eq!(r.headers()["docker-content-digest"], d.as_str());
    let r = c.call("GET", &format!("/v2/dst/repo/blobs/{d}")).await;
    assert_eq!(r.bytes().await.unwrap(), &b"shared layer"[..]);
    // Not mountable: 202 and a usable upload session.
    let missing = sha256(b"not here");
    let r = c
        .call(
            "POST",
            &format!("/v2/dst/repo/blobs/uploads/?mount={missing}&from=src/repo"),
        )
        .await;
    assert_eq!(r.status(), 202);
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let r = c
        .request("PUT", &format!("{loc}?digest={missing}"))
        .body("not here")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // Stored once although two repositories have it.
    assert_eq!(count_files(&s.data_dir.join("blobs/data")), 2);
}

async fn blob_delete(s: Berthd) {
    let c = s.client();
    let d = c.push_blob("del/a", b"to delete").await;
    let r = c
        .call(
            "POST",
            &format!("/v2/del/b/blobs/uploads/?mount={d}&from=del/a"),
        )
        .await;
    assert_eq!(r.status(), 201);
    let r = c.call("DELETE", &format!("/v2/del/a/blobs/{d}")).await;
    assert_eq!(r.status(), 202);
    let r = c.call("HEAD", &format!("/v2/del/a/blobs/{d}")).await;
    assert_eq!(r.status(), 404);
    let r = c.call("DELETE", &format!("/v2/del/a/blobs/{d}")).await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
    let r = c.call("GET", &format!("/v2/del/b/blobs/{d}")).await;
    assert_eq!(r.status(), 200, "other repositories keep their link");
}

async fn manifest_put_get_head_delete(s: Berthd) {
    let c = s.client();
    let (manifest, digest) = c.push_image("img/app", "v1", b"layer one").await;
    for reference in ["v1", digest.as_str()] {
        let r = c
            .call("GET", &format!("/v2/img/app/manifests/{reference}"))
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], OCI_MANIFEST);
        assert_eq!(r.headers()["docker-content-digest"], digest.as_str());
        assert_eq!(r.bytes().await.unwrap(), manifest, "exact bytes come back");
        let r = c
            .call("HEAD", &format!("/v2/img/app/manifests/{reference}"))
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["content-length"],
            manifest.len().to_string().as_str()
        );
        assert_eq!(r.headers()["docker-content-digest"], digest.as_str());
    }
    // PUT by digest: the digest must match; Location names the digest.
    let r = c
        .push_manifest("img/app", &digest, OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.headers()["location"],
        format!("/v2/img/app/manifests/{digest}").as_str()
    );
    assert_eq!(r.headers()["docker-content-digest"], digest.as_str());
    // Retag, then delete the tag only.
    let r = c
        .push_manifest("img/app", "v2", OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(r.status(), 201);
    let r = c.call("DELETE", "/v2/img/app/manifests/v2").await;
    assert_eq!(r.status(), 202);
    let r = c.call("GET", "/v2/img/app/manifests/v2").await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    let r = c.call("GET", "/v2/img/app/manifests/v1").await;
    assert_eq!(r.status(), 200, "other tags stay");
    // Delete by digest removes the manifest and its tags.
    let r = c
        .call("DELETE", &format!("/v2/img/app/manifests/{digest}"))
        .await;
    assert_eq!(r.status(), 202);
    for reference in ["v1", digest.as_str()] {
        let r = c
            .call("GET", &format!("/v2/img/app/manifests/{reference}"))
            .await;
        assert_eq!(r.status(), 404);
    }
    let r = c
        .call("DELETE", &format!("/v2/img/app/manifests/{digest}"))
        .await;
    assert_eq!(r.status(), 404);
    let tags: Value = c
        .call("GET", "/v2/img/app/tags/list")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], json!([]));
}

async fn manifest_validation_errors(s: Berthd) {
    let c = s.client();
    let (manifest, _) = c.push_image("val/app", "ok", b"layer").await;
    let unknown = sha256(b"never uploaded");
    let bad_ref = image_manifest(&unknown, 3, &[], None);
    let r = c
        .push_manifest("val/app", "t", OCI_MANIFEST, &bad_ref)
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");
    // A blob of another repository is unknown here too.
    let r = c
        .push_manifest("val/other", "t", OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");
    let r = c
        .push_manifest("val/app", "t", OCI_MANIFEST, b"{not json")
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "MANIFEST_INVALID");
    let r = c
        .push_manifest(
            "val/app",
            "t",
            OCI_MANIFEST,
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#,
        )
        .await;
    assert_eq!(error_code(r).await, "MANIFEST_INVALID");
    // Content-Type and mediaType disagree.
    let r = c.push_manifest("val/app", "t", OCI_INDEX, &manifest).await;
    assert_eq!(error_code(r).await, "MANIFEST_INVALID");
    // Digest reference that does not match the body.
    let r = c
        .push_manifest("val/app", &sha256(b"other"), OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    let r = c
        .push_manifest("val/app", ".badtag", OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "TAG_INVALID");
    let r = c
        .push_manifest("val/App", "t", OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(error_code(r).await, "NAME_INVALID");
    // Oversized (default limit 4 MiB).
    let mut huge = manifest.clone();
    huge.truncate(huge.len() - 1);
    huge.extend_from_slice(
        format!(
            r#","annotations":{{"pad":"{}"}}}}"#,
            "x".repeat(4 * 1024 * 1024)
        )
        .as_bytes(),
    );
    let r = c
        .push_manifest("val/app", "huge", OCI_MANIFEST, &huge)
        .await;
    assert_eq!(r.status(), 413);
    assert_eq!(error_code(r).await, "MANIFEST_INVALID");
    // Nothing was lost: the good manifest is still there, and no bad tag appeared.
    let r = c.call("GET", "/v2/val/app/manifests/ok").await;
    assert_eq!(r.bytes().await.unwrap(), manifest);
    let tags: Value = c
        .call("GET", "/v2/val/app/tags/list")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], json!(["ok"]));
}

async fn index_and_docker_media_types(s: Berthd) {
    let c = s.client();
    let (m1, d1) = c.push_image("multi/app", "amd64", b"amd64 layer").await;
    let (m2, d2) = c.push_image("multi/app", "arm64", b"arm64 layer").await;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": d1, "size": m1.len(), "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": OCI_MANIFEST, "digest": d2, "size": m2.len(), "platform": {"os": "linux", "architecture": "arm64"}},
        ]
    }))
    .unwrap();
    let r = c
        .push_manifest("multi/app", "latest", OCI_INDEX, &index)
        .await;
    assert_eq!(r.status(), 201);
    let r = c.call("GET", "/v2/multi/app/manifests/latest").await;
    assert_eq!(r.headers()["content-type"], OCI_INDEX);
    assert_eq!(r.bytes().await.unwrap(), index);
    // An index naming a manifest the repository lacks.
    let bad = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": sha256(b"nope"), "size": 4}]
    }))
    .unwrap();
    let r = c.push_manifest("multi/app", "bad", OCI_INDEX, &bad).await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");
    // Docker schema 2 manifest and manifest list keep their media types.
    let docker_manifest_type = "application/vnd.docker.distribution.manifest.v2+json";
    let docker_list_type = "application/vnd.docker.distribution.manifest.list.v2+json";
    let cfg = c.push_blob("multi/docker", b"{\"os\":\"linux\"}").await;
    let layer = c.push_blob("multi/docker", b"docker layer").await;
    let dm = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": docker_manifest_type,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": cfg, "size": 15},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": layer, "size": 12}]
    }))
    .unwrap();
    let r = c
        .push_manifest("multi/docker", "m", docker_manifest_type, &dm)
        .await;
    assert_eq!(r.status(), 201);
    let dl = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": docker_list_type,
        "manifests": [{"mediaType": docker_manifest_type, "digest": sha256(&dm), "size": dm.len(), "platform": {"os": "linux", "architecture": "amd64"}}]
    }))
    .unwrap();
    let r = c
        .push_manifest("multi/docker", "list", docker_list_type, &dl)
        .await;
    assert_eq!(r.status(), 201);
    for (tag, ty) in [("m", docker_manifest_type), ("list", docker_list_type)] {
        let r = c
            .call("HEAD", &format!("/v2/multi/docker/manifests/{tag}"))
            .await;
        assert_eq!(r.headers()["content-type"], ty);
    }
}

async fn referrers_api(s: Berthd) {
    let c = s.client();
    let (subject, subject_digest) = c.push_image("art/app", "v1", b"image layer").await;
    let empty_cfg = c.push_blob("art/app", b"{}").await;
    let sig_blob = c.push_blob("art/app", b"signature bytes").await;
    let mut pushed = Vec::new();
    for kind in [
        "application/vnd.example.signature",
        "application/vnd.example.sbom",
    ] {
        let m = image_manifest(
            &empty_cfg,
            2,
            &[(&sig_blob, 15)],
            Some((&subject_digest, subject.len(), kind)),
        );
        let d = sha256(&m);
        let r = c.push_manifest("art/app", &d, OCI_MANIFEST, &m).await;
        assert_eq!(r.status(), 201);
        assert_eq!(r.headers()["oci-subject"], subject_digest.as_str());
        pushed.push((kind, d, m.len()));
    }
    let r = c
        .call("GET", &format!("/v2/art/app/referrers/{subject_digest}"))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], OCI_INDEX);
    assert!(!r.headers().contains_key("oci-filters-applied"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["schemaVersion"], 2);
    assert_eq!(body["mediaType"], OCI_INDEX);
    let list = body["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    for (kind, d, size) in &pushed {
        let entry = list
            .iter()
            .find(|e| e["digest"] == d.as_str())
            .expect("referrer listed");
        assert_eq!(entry["artifactType"], *kind);
        assert_eq!(entry["size"], *size);
        assert_eq!(entry["mediaType"], OCI_MANIFEST);
        assert_eq!(entry["annotations"]["org.example.kind"], *kind);
    }
    let r = c
        .call(
            "GET",
            &format!(
                "/v2/art/app/referrers/{subject_digest}?artifactType=application/vnd.example.sbom"
            ),
        )
        .await;
    assert_eq!(r.headers()["oci-filters-applied"], "artifactType");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(
        body["manifests"][0]["artifactType"],
        "application/vnd.example.sbom"
    );
    // Unknown subject: an empty list, not 404.
    let r = c
        .call("GET", &format!("/v2/art/app/referrers/{}", sha256(b"none")))
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["manifests"], json!([]));
    let r = c.call("GET", "/v2/art/app/referrers/sha256:nothex").await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    // Referrers pushed before their subject are accepted.
    let orphan_subject = sha256(b"future subject");
    let m = image_manifest(
        &empty_cfg,
        2,
        &[],
        Some((&orphan_subject, 10, "application/vnd.example.early")),
    );
    let r = c.push_manifest("art/app", "early", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), 201);
    let body: Value = c
        .call("GET", &format!("/v2/art/app/referrers/{orphan_subject}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["manifests"][0]["artifactType"],
        "application/vnd.example.early"
    );
}

async fn several_tags_in_one_put(s: Berthd) {
    let c = s.client();
    let (manifest, digest) = c.push_image("tags/multi", "first", b"layer").await;
    let r = c
        .request(
            "PUT",
            &format!("/v2/tags/multi/manifests/{digest}?tag=1.2.3&tag=1.2&tag=latest"),
        )
        .header("Content-Type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let applied: Vec<_> = r
        .headers()
        .get_all("oci-tag")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(applied, ["1.2.3", "1.2", "latest"]);
    for t in ["1.2.3", "1.2", "latest"] {
        let r = c
            .call("HEAD", &format!("/v2/tags/multi/manifests/{t}"))
            .await;
        assert_eq!(r.headers()["docker-content-digest"], digest.as_str());
    }
    let r = c
        .request(
            "PUT",
            &format!("/v2/tags/multi/manifests/{digest}?tag=ok&tag=-bad"),
        )
        .header("Content-Type", OCI_MANIFEST)
        .body(manifest)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "TAG_INVALID");
    let r = c.call("HEAD", "/v2/tags/multi/manifests/ok").await;
    assert_eq!(r.status(), 404, "a rejected PUT applies no tag");
}

async fn tags_and_catalog_pagination(s: Berthd) {
    let c = s.client();
    let (manifest, _) = c.push_image("page/app", "b", b"l").await;
    for t in ["a", "C", "c", "d", "_e"] {
        assert_eq!(
            c.push_manifest("page/app", t, OCI_MANIFEST, &manifest)
                .await
                .status(),
            201
        );
    }
    let all: Value = c
        .call("GET", "/v2/page/app/tags/list")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        all,
        json!({"name": "page/app", "tags": ["C", "_e", "a", "b", "c", "d"]})
    );
    let r = c.call("GET", "/v2/page/app/tags/list?n=2").await;
    assert_eq!(
        r.headers()["link"],
        "</v2/page/app/tags/list?n=2&last=_e>; rel=\"next\""
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["tags"], json!(["C", "_e"]));
    let r = c.call("GET", "/v2/page/app/tags/list?n=2&last=_e").await;
    assert!(r.headers().contains_key("link"));
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!(["a", "b"]));
    let r = c.call("GET", "/v2/page/app/tags/list?n=2&last=b").await;
    assert!(!r.headers().contains_key("link"), "last page has no Link");
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!(["c", "d"]));
    let r = c.call("GET", "/v2/page/app/tags/list?n=0").await;
    assert!(!r.headers().contains_key("link"));
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!([]));
    let r = c.call("GET", "/v2/page/app/tags/list?n=x").await;
    assert_eq!(r.status(), 400);
    for repo in ["page/zeta", "page/alpha"] {
        c.push_image(repo, "t", b"l").await;
    }
    let r = c.call("GET", "/v2/_catalog?n=2").await;
    assert_eq!(
        r.headers()["link"],
        "</v2/_catalog?n=2&last=page/app>; rel=\"next\""
    );
    assert_eq!(
        r.json::<Value>().await.unwrap()["repositories"],
        json!(["page/alpha", "page/app"])
    );
    let r = c.call("GET", "/v2/_catalog?n=2&last=page/app").await;
    assert_eq!(
        r.json::<Value>().await.unwrap()["repositories"],
        json!(["page/zeta"])
    );
}

async fn sha512_and_digest_algorithm(s: Berthd) {
    use sha2::Digest as _;
    let c = s.client();
    let data = b"hashed with sha512".to_vec();
    let d512 = format!("sha512:{}", hex::encode(sha2::Sha512::digest(&data)));
    let r = c
        .call(
            "POST",
            "/v2/algo/app/blobs/uploads/?digest-algorithm=sha512",
        )
        .await;
    assert_eq!(r.status(), 202);
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let r = c
        .request("PATCH", &loc)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = c.call("PUT", &format!("{loc}?digest={d512}")).await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["docker-content-digest"], d512.as_str());
    let r = c.call("GET", &format!("/v2/algo/app/blobs/{d512}")).await;
    assert_eq!(r.bytes().await.unwrap(), data);
    // sha512 completion of an upload that announced nothing (hashed again at the end).
    let other = b"announced nothing".to_vec();
    let d = format!("sha512:{}", hex::encode(sha2::Sha512::digest(&other)));
    let loc = c.start_upload("algo/app").await;
    let r = c
        .request("PUT", &format!("{loc}?digest={d}"))
        .body(other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = c
        .call("POST", "/v2/algo/app/blobs/uploads/?digest-algorithm=md5")
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "UNSUPPORTED");
    let r = c
        .request(
            "POST",
            &format!(
                "/v2/algo/app/blobs/uploads/?digest=sha384:{}",
                "a".repeat(96)
            ),
        )
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "UNSUPPORTED");
}

async fn concurrent_pushes_of_one_blob_store_one_copy(s: Berthd) {
    let c = s.client();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 241) as u8).collect();
    let pushes = (0..4).map(|i| {
        let c = c.clone();
        let data = data.clone();
        async move { c.push_blob(&format!("race/r{}", i % 2), &data).await }
    });
    let digests = futures::future::join_all(pushes).await;
    assert!(digests.iter().all(|d| *d == sha256(&data)));
    assert_eq!(
        count_files(&s.data_dir.join("blobs/data")),
        1,
        "one copy stored"
    );
    for repo in ["race/r0", "race/r1"] {
        let r = c
            .call("GET", &format!("/v2/{repo}/blobs/{}", digests[0]))
            .await;
        assert_eq!(sha256(&r.bytes().await.unwrap()), digests[0]);
    }
}

async fn resume_after_a_dropped_connection(s: Berthd) {
    let c = s.client();
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 239) as u8).collect();
    let digest = sha256(&data);
    let loc = c.start_upload("resume/app").await;
    // Announce the whole body, send 400 kB, then drop the connection.
    let mut sock = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
    let head = format!(
        "PATCH {loc} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Range: 0-{}\r\nContent-Length: {}\r\n\r\n",
        s.addr,
        data.len() - 1,
        data.len()
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&data[..400_000]).await.unwrap();
    sock.flush().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    drop(sock);
    // The server keeps what arrived; poll until the dropped request is processed.
    let mut received = 0;
    for _ in 0..50 {
        let st = c.call("GET", &loc).await;
        assert_eq!(st.status(), 204);
        let range = st.headers()["range"].to_str().unwrap().to_owned();
        received = range.split('-').nth(1).unwrap().parse::<usize>().unwrap() + 1;
        if received == 400_000 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(received, 400_000, "the bytes before the drop are kept");
    c.finish_upload(&loc, &data, received, &digest).await;
    let mut body = Vec::new();
    let r = c
        .call("GET", &format!("/v2/resume/app/blobs/{digest}"))
        .await;
    body.extend_from_slice(&r.bytes().await.unwrap());
    assert_eq!(body, data);
}

/// Blob bytes go from the files to the socket in the kernel (zero-copy), past
/// actix-web's buffer: every answer must still be framed and in order, whatever the
/// blob's shape and however the client reads.
async fn downloads_pipelined_across_objects_and_abandoned(s: Berthd) {
    let c = s.client();
    // Three PATCHes: a blob stored as three objects.
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let digest = sha256(&data);
    let mut loc = c.start_upload("ns/zero-copy").await;
    for r in [0..1_000_000, 1_000_000..2_500_000, 2_500_000..3_000_000] {
        loc = c.append_chunk(&loc, &data, r).await;
    }
    let resp = c.call("PUT", &format!("{loc}?digest={digest}")).await;
    assert_eq!(resp.status(), 201);
    let blob = format!("/v2/ns/zero-copy/blobs/{digest}");

    // Three requests in one write on one connection: each answer whole, in order.
    let get = |extra: &str| format!("GET {blob} HTTP/1.1\r\nHost: berth\r\n{extra}\r\n");
    let requests = [
        get(""),
        get("Range: bytes=999990-2500009\r\n"),
        "GET /v2/ HTTP/1.1\r\nHost: berth\r\n\r\n".to_owned(),
    ];
    let mut conn = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
    conn.write_all(requests.concat().as_bytes()).await.unwrap();
    let mut conn = tokio::io::BufReader::new(conn);
    let (status, body) = berth_tests::read_response(&mut conn).await;
    assert_eq!(status, 200);
    assert!(body == data, "the whole blob");
    let (status, body) = berth_tests::read_response(&mut conn).await;
    assert_eq!(status, 206);
    assert!(body == data[999_990..2_500_010], "a range across objects");
    let (status, body) = berth_tests::read_response(&mut conn).await;
    assert_eq!((status, body.as_slice()), (200, &b"{}"[..]));

    // Clients that leave mid-download do not disturb the others.
    for _ in 0..3 {
        let mut conn = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
        conn.write_all(get("").as_bytes()).await.unwrap();
        let mut start = [0u8; 1000];
        conn.read_exact(&mut start).await.unwrap();
    }
    let got = c.call("GET", &blob).await.bytes().await.unwrap();
    assert!(got == data, "the blob after abandoned downloads");
}

/// Completions are written in batches (one transaction for whatever is queued): each
/// push still gets its own outcome, whatever else shares its commit.
async fn concurrent_completions_share_commits_and_keep_their_outcomes(s: Berthd) {
    let c = s.client();
    let blobs: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 4096]).collect();
    // 40 pushes of 10 distinct blobs into 4 new repositories, all at once.
    let pushes = (0..40).map(|i| {
        let (c, data) = (c.clone(), blobs[i % 10].clone());
        async move { c.push_blob(&format!("batch/r{}", i % 4), &data).await }
    });
    futures::future::join_all(pushes).await;
    assert_eq!(
        count_files(&s.data_dir.join("blobs/data")),
        10,
        "one copy each"
    );
    for i in 0..40 {
        let digest = sha256(&blobs[i % 10]);
        let r = c
            .call("GET", &format!("/v2/batch/r{}/blobs/{digest}", i % 4))
            .await;
        assert_eq!(r.bytes().await.unwrap(), blobs[i % 10]);
    }
    let r = c
        .call(
            "GET",
            &format!("/v2/batch/other/blobs/{}", sha256(&blobs[0])),
        )
        .await;
    assert_eq!(r.status(), 404);

    // One upload completed twice at once, and another completed while cancelled: one
    // request wins each race, the other finds the upload unknown.
    let data = b"raced".to_vec();
    let digest = sha256(&data);
    let twice = c.start_upload("batch/race").await;
    let put = |loc: String| {
        let (c, data, digest) = (c.clone(), data.clone(), digest.clone());
        async move {
            c.request("PUT", &format!("{loc}?digest={digest}"))
                .body(data)
                .send()
                .await
                .unwrap()
        }
    };
    let (a, b) = tokio::join!(put(twice.clone()), put(twice.clone()));
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [201, 404]);
    let cancelled = c.start_upload("batch/race").await;
    let (done, cancel) = tokio::join!(put(cancelled.clone()), c.call("DELETE", &cancelled));
    let outcomes = (done.status().as_u16(), cancel.status().as_u16());
    assert!(
        outcomes == (201, 404) || outcomes == (404, 204),
        "complete vs cancel: {outcomes:?}"
    );
    // A completed upload's URL stays unknown, and a replayed body leaves nothing behind.
    let files = count_files(&s.data_dir.join("blobs/data"));
    let replay = put(twice).await;
    assert_eq!(replay.status(), 404);
    assert_eq!(error_code(replay).await, "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(count_files(&s.data_dir.join("blobs/data")), files);
    let r = c
        .call("GET", &format!("/v2/batch/race/blobs/{digest}"))
        .await;
    assert_eq!(r.bytes().await.unwrap(), data);
}
