//! Manifests (`HEAD`/`GET`/`PUT`/`DELETE` by tag and digest), tags and catalog
//! listings with pagination, referrers.

use actix_web::body::BodySize;
use berth_oci::media_types::{OCI_INDEX, OCI_MANIFEST};
use serde_json::json;

use crate::{image_manifest, registry, request, sha256, MAX_MANIFEST};

#[actix_web::test]
async fn manifest_put_get_head_delete() {
    let r = registry(false).await;
    let config = r.push_blob("img/app", b"{}").await;
    let layer = r.push_blob("img/app", b"layer").await;
    let manifest = image_manifest(&config, &[(&layer, 5)], None);
    let digest = sha256(&manifest);

    let res = r
        .put_manifest("img/app", "v1", OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(res.status, 201);
    assert_eq!(
        res.header("location"),
        format!("/v2/img/app/manifests/{digest}")
    );
    assert_eq!(res.header("docker-content-digest"), digest.as_str());
    assert!(!res.has("oci-subject") && !res.has("oci-tag"));
    assert_eq!(res.size, BodySize::Sized(0));

    for reference in ["v1", digest.as_str()] {
        let uri = format!("/v2/img/app/manifests/{reference}");
        for method in ["GET", "HEAD"] {
            let res = r.call(method, &uri).await;
            assert_eq!(res.status, 200, "{method} {reference}");
            assert_eq!(res.header("content-type"), OCI_MANIFEST);
            assert_eq!(res.header("docker-content-digest"), digest.as_str());
            assert_eq!(res.header("etag"), format!("\"{digest}\""));
            assert_eq!(res.size, BodySize::Sized(manifest.len() as u64));
            let body: &[u8] = if method == "GET" { &manifest } else { b"" };
            assert_eq!(res.body, body, "{method}: the exact bytes");
        }
    }
    // By digest: the digest must be the body's.
    let res = r
        .put_manifest("img/app", digest.as_str(), OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(res.status, 201);
    assert_eq!(
        res.header("location"),
        format!("/v2/img/app/manifests/{digest}")
    );
    let other = sha256(b"other");
    r.put_manifest("img/app", other.as_str(), OCI_MANIFEST, &manifest)
        .await
        .assert_error(400, "DIGEST_INVALID");

    // Several tags in one PUT: each applied one named in OCI-Tag.
    let uri = format!("/v2/img/app/manifests/{digest}?tag=1.0&tag=latest");
    let res = r
        .send(
            request("PUT", &uri)
                .insert_header(("Content-Type", OCI_MANIFEST))
                .set_payload(manifest.clone()),
        )
        .await;
    assert_eq!(res.status, 201);
    let applied: Vec<&str> = res
        .headers
        .get_all("oci-tag")
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(applied, ["1.0", "latest"]);
    let uri = format!("/v2/img/app/manifests/{digest}?tag=ok&tag=-bad");
    let res = r
        .send(
            request("PUT", &uri)
                .insert_header(("Content-Type", OCI_MANIFEST))
                .set_payload(manifest.clone()),
        )
        .await;
    res.assert_error(400, "TAG_INVALID");
    r.call("HEAD", "/v2/img/app/manifests/ok")
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");

    // Delete a tag: the others stay.
    let res = r.call("DELETE", "/v2/img/app/manifests/latest").await;
    assert_eq!(res.status, 202);
    r.call("GET", "/v2/img/app/manifests/latest")
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    assert_eq!(r.call("GET", "/v2/img/app/manifests/v1").await.status, 200);
    // Delete by digest: the manifest and its tags.
    let uri = format!("/v2/img/app/manifests/{digest}");
    assert_eq!(r.call("DELETE", &uri).await.status, 202);
    for reference in ["v1", "1.0", digest.as_str()] {
        r.call("GET", &format!("/v2/img/app/manifests/{reference}"))
            .await
            .assert_error(404, "MANIFEST_UNKNOWN");
    }
    r.call("DELETE", &uri)
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    r.call("GET", "/v2/never/pushed/manifests/v1")
        .await
        .assert_error(404, "NAME_UNKNOWN");
    r.call("POST", "/v2/img/app/manifests/v1")
        .await
        .assert_error(405, "UNSUPPORTED");
}

#[actix_web::test]
async fn manifest_validation() {
    let r = registry(false).await;
    let (manifest, _) = r.push_image("val/app", "ok", b"layer").await;
    let unknown = sha256(b"never uploaded");
    let missing_blob = image_manifest(&unknown, &[], None);
    r.put_manifest("val/app", "t", OCI_MANIFEST, &missing_blob)
        .await
        .assert_error(400, "MANIFEST_BLOB_UNKNOWN");
    // Blobs of another repository are unknown here.
    r.put_manifest("val/other", "t", OCI_MANIFEST, &manifest)
        .await
        .assert_error(400, "MANIFEST_BLOB_UNKNOWN");
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": unknown.as_str(), "size": 1}],
    }))
    .unwrap();
    r.put_manifest("val/app", "i", OCI_INDEX, &index)
        .await
        .assert_error(400, "MANIFEST_BLOB_UNKNOWN");
    for body in [
        &b"{not json"[..],
        b"[]",
        br#"{"schemaVersion":1}"#,
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#,
        br#"{"schemaVersion":2,"mediaType":"text/plain"}"#,
    ] {
        r.put_manifest("val/app", "t", OCI_MANIFEST, body)
            .await
            .assert_error(400, "MANIFEST_INVALID");
    }
    // Content-Type and mediaType disagree.
    r.put_manifest("val/app", "t", OCI_INDEX, &manifest)
        .await
        .assert_error(400, "MANIFEST_INVALID");
    r.put_manifest("val/App", "t", OCI_MANIFEST, &manifest)
        .await
        .assert_error(400, "NAME_INVALID");
    // Over the limit: by Content-Length, before reading, and by the bytes read.
    let mut huge = manifest.clone();
    huge.truncate(huge.len() - 1);
    let pad = "x".repeat(MAX_MANIFEST as usize);
    huge.extend_from_slice(format!(r#","annotations":{{"pad":"{pad}"}}}}"#).as_bytes());
    r.put_manifest("val/app", "huge", OCI_MANIFEST, &huge)
        .await
        .assert_error(413, "MANIFEST_INVALID");
    let res = r
        .send(
            request("PUT", "/v2/val/app/manifests/huge")
                .insert_header(("Content-Type", OCI_MANIFEST))
                .set_payload(huge.clone())
                .insert_header(("Content-Length", "10")),
        )
        .await;
    res.assert_error(413, "MANIFEST_INVALID");
    // Nothing changed.
    let res = r.call("GET", "/v2/val/app/manifests/ok").await;
    assert_eq!(res.body, manifest);
    assert_eq!(
        r.call("GET", "/v2/val/app/tags/list").await.json(),
        json!({"name": "val/app", "tags": ["ok"]})
    );
}

#[actix_web::test]
async fn tags_and_catalog_pages() {
    let r = registry(false).await;
    let (manifest, _) = r.push_image("page/app", "b", b"l").await;
    for tag in ["a", "C", "c", "d", "_e"] {
        let res = r
            .put_manifest("page/app", tag, OCI_MANIFEST, &manifest)
            .await;
        assert_eq!(res.status, 201);
    }
    let res = r.call("GET", "/v2/page/app/tags/list").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), "application/json");
    assert!(!res.has("link"));
    assert_eq!(
        res.json(),
        json!({"name": "page/app", "tags": ["C", "_e", "a", "b", "c", "d"]})
    );
    let pages = [
        ("n=2", Some("_e"), json!(["C", "_e"])),
        ("n=2&last=_e", Some("b"), json!(["a", "b"])),
        ("n=2&last=b", None, json!(["c", "d"])),
        ("n=0", None, json!([])),
        ("last=c", None, json!(["d"])),
        ("n=10&last=zzz", None, json!([])),
    ];
    for (query, next, tags) in pages {
        let res = r
            .call("GET", &format!("/v2/page/app/tags/list?{query}"))
            .await;
        assert_eq!(res.status, 200, "{query}");
        assert_eq!(res.json()["tags"], tags, "{query}");
        match next {
            Some(last) => assert_eq!(
                res.header("link"),
                format!("</v2/page/app/tags/list?n=2&last={last}>; rel=\"next\"")
            ),
            None => assert!(!res.has("link"), "{query}"),
        }
    }
    for bad in ["n=x", "n=-1"] {
        r.call("GET", &format!("/v2/page/app/tags/list?{bad}"))
            .await
            .assert_error(400, "UNSUPPORTED");
    }
    r.call("GET", "/v2/page/none/tags/list")
        .await
        .assert_error(404, "NAME_UNKNOWN");

    for repo in ["page/zeta", "page/alpha"] {
        r.push_image(repo, "t", b"l").await;
    }
    let res = r.call("GET", "/v2/_catalog").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), "application/json");
    assert_eq!(
        res.json(),
        json!({"repositories": ["page/alpha", "page/app", "page/zeta"]})
    );
    let res = r.call("GET", "/v2/_catalog?n=2").await;
    assert_eq!(
        res.header("link"),
        "</v2/_catalog?n=2&last=page/app>; rel=\"next\""
    );
    assert_eq!(
        res.json()["repositories"],
        json!(["page/alpha", "page/app"])
    );
    let res = r.call("GET", "/v2/_catalog?n=2&last=page/app").await;
    assert!(!res.has("link"));
    assert_eq!(res.json()["repositories"], json!(["page/zeta"]));
    r.call("GET", "/v2/_catalog?n=many")
        .await
        .assert_error(400, "UNSUPPORTED");
    r.call("DELETE", "/v2/_catalog")
        .await
        .assert_error(405, "UNSUPPORTED");
}

#[actix_web::test]
async fn referrers() {
    let r = registry(false).await;
    let (subject, subject_digest) = r.push_image("art/app", "v1", b"image layer").await;
    let config = r.push_blob("art/app", b"{}").await;
    let mut pushed = Vec::new();
    for kind in [
        "application/vnd.example.sig",
        "application/vnd.example.sbom",
    ] {
        let m = image_manifest(&config, &[], Some((&subject_digest, subject.len(), kind)));
        let d = sha256(&m);
        let res = r
            .put_manifest("art/app", d.as_str(), OCI_MANIFEST, &m)
            .await;
        assert_eq!(res.status, 201);
        assert_eq!(res.header("oci-subject"), subject_digest.as_str());
        pushed.push((kind, d, m.len()));
    }
    let uri = format!("/v2/art/app/referrers/{subject_digest}");
    let res = r.call("GET", &uri).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), OCI_INDEX);
    assert!(!res.has("oci-filters-applied"));
    let body = res.json();
    assert_eq!(body["schemaVersion"], 2);
    assert_eq!(body["mediaType"], OCI_INDEX);
    let list = body["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    for (kind, d, size) in &pushed {
        let entry = list.iter().find(|e| e["digest"] == d.as_str()).unwrap();
        assert_eq!(entry["artifactType"], *kind);
        assert_eq!(entry["size"], *size);
        assert_eq!(entry["mediaType"], OCI_MANIFEST);
        assert_eq!(entry["annotations"]["org.example.kind"], *kind);
    }
    let res = r
        .call(
            "GET",
            &format!("{uri}?artifactType=application/vnd.example.sbom"),
        )
        .await;
    assert_eq!(res.header("oci-filters-applied"), "artifactType");
    let body = res.json();
    assert_eq!(body["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(
        body["manifests"][0]["artifactType"],
        "application/vnd.example.sbom"
    );
    // An unknown subject has no referrers (200, empty), a malformed one is refused.
    let res = r
        .call("GET", &format!("/v2/art/app/referrers/{}", sha256(b"none")))
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["manifests"], json!([]));
    r.call("GET", "/v2/art/app/referrers/sha256:nothex")
        .await
        .assert_error(400, "DIGEST_INVALID");
    r.call("DELETE", &uri)
        .await
        .assert_error(405, "UNSUPPORTED");
}
