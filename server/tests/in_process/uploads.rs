//! Blob uploads: `POST` (session, monolithic, mount), `PATCH`, `PUT`, `GET`, `DELETE`.

use actix_web::body::BodySize;

use crate::{registry, request, sha256, Reply};

/// The headers of an upload in progress: Location (its URL, ending in its id),
/// Range and Docker-Upload-UUID, and no body.
fn check_upload(res: &Reply, status: u16, repo: &str, range: &str) -> String {
    assert_eq!(res.status.as_u16(), status, "{res:?}");
    let location = res.header("location").to_owned();
    let id = res.header("docker-upload-uuid");
    assert_eq!(location, format!("/v2/{repo}/blobs/uploads/{id}"));
    assert_eq!(res.header("range"), range);
    assert_eq!(res.size, BodySize::Sized(0));
    location
}

/// A finished blob: 201, its Location and digest.
fn check_created(res: &Reply, repo: &str, digest: &berth_oci::Digest) {
    assert_eq!(res.status, 201, "{res:?}");
    assert_eq!(res.header("location"), format!("/v2/{repo}/blobs/{digest}"));
    assert_eq!(res.header("docker-content-digest"), digest.as_str());
}

#[actix_web::test]
async fn chunked_upload() {
    let r = registry(false).await;
    let data: Vec<u8> = (0..30u8).collect();
    let digest = sha256(&data);
    let res = r.call("POST", "/v2/ns/up/blobs/uploads/").await;
    let loc = check_upload(&res, 202, "ns/up", "0-0");
    let res = r.call("GET", &loc).await;
    check_upload(&res, 204, "ns/up", "0-0");

    // A chunk with Content-Range.
    let res = r
        .send(
            request("PATCH", &loc)
                .insert_header(("Content-Range", "0-9"))
                .set_payload(data[..10].to_vec()),
        )
        .await;
    let loc = check_upload(&res, 202, "ns/up", "0-9");
    // Out of order: 416 with the upload's range.
    let res = r
        .send(
            request("PATCH", &loc)
                .insert_header(("Content-Range", "20-29"))
                .set_payload(data[20..].to_vec()),
        )
        .await;
    res.assert_error(416, "BLOB_UPLOAD_INVALID");
    assert_eq!(res.header("range"), "0-9");
    // Malformed Content-Range, or one that disagrees with Content-Length.
    for range in ["10", "x-y", "19-10", "0-18446744073709551615"] {
        let res = r
            .send(
                request("PATCH", &loc)
                    .insert_header(("Content-Range", range))
                    .set_payload(data[10..20].to_vec()),
            )
            .await;
        res.assert_error(400, "BLOB_UPLOAD_INVALID");
    }
    let res = r
        .send(
            request("PATCH", &loc)
                .insert_header(("Content-Range", "10-14"))
                .set_payload(data[10..20].to_vec()),
        )
        .await;
    res.assert_error(400, "SIZE_INVALID");
    // A chunk without Content-Range is appended.
    let res = r
        .send(request("PATCH", &loc).set_payload(data[10..20].to_vec()))
        .await;
    let loc = check_upload(&res, 202, "ns/up", "0-19");
    let res = r.call("GET", &loc).await;
    check_upload(&res, 204, "ns/up", "0-19");

    // Completing needs a digest, and the right one.
    let res = r
        .send(request("PUT", &loc).set_payload(data[20..].to_vec()))
        .await;
    res.assert_error(400, "DIGEST_INVALID");
    let res = r
        .send(
            request("PUT", &format!("{loc}?digest={digest}"))
                .insert_header(("Content-Range", "20-29"))
                .set_payload(data[20..].to_vec()),
        )
        .await;
    check_created(&res, "ns/up", &digest);
    let res = r.call("GET", &format!("/v2/ns/up/blobs/{digest}")).await;
    assert_eq!(res.body, data);
    // A finished upload is gone.
    r.call("GET", &loc)
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
}

#[actix_web::test]
async fn wrong_digest_and_cancel() {
    let r = registry(false).await;
    let res = r.call("POST", "/v2/ns/up/blobs/uploads/").await;
    let loc = check_upload(&res, 202, "ns/up", "0-0");
    let res = r
        .send(request("PUT", &format!("{loc}?digest={}", sha256(b"other"))).set_payload("data"))
        .await;
    res.assert_error(400, "DIGEST_INVALID");
    r.call("GET", &loc)
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");

    let res = r.call("POST", "/v2/ns/up/blobs/uploads/").await;
    let loc = check_upload(&res, 202, "ns/up", "0-0");
    let res = r.send(request("PATCH", &loc).set_payload("part")).await;
    check_upload(&res, 202, "ns/up", "0-3");
    let res = r.call("DELETE", &loc).await;
    assert_eq!(res.status, 204);
    for method in ["GET", "PATCH", "PUT", "DELETE"] {
        let uri = format!("{loc}?digest={}", sha256(b"part"));
        r.call(method, &uri)
            .await
            .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    }
    r.call("GET", "/v2/ns/up/blobs/uploads/no-such-id")
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    // An upload id belongs to its repository.
    let res = r.call("POST", "/v2/ns/one/blobs/uploads/").await;
    let id = res.header("docker-upload-uuid").to_owned();
    r.call("GET", &format!("/v2/ns/two/blobs/uploads/{id}"))
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
}

#[actix_web::test]
async fn monolithic_and_mount() {
    let r = registry(false).await;
    let data = b"one request".to_vec();
    let digest = sha256(&data);
    let res = r
        .send(
            request(
                "POST",
                &format!("/v2/src/app/blobs/uploads/?digest={digest}"),
            )
            .set_payload(data.clone()),
        )
        .await;
    check_created(&res, "src/app", &digest);
    let res = r
        .send(
            request(
                "POST",
                &format!("/v2/src/app/blobs/uploads/?digest={}", sha256(b"x")),
            )
            .set_payload(data.clone()),
        )
        .await;
    res.assert_error(400, "DIGEST_INVALID");
    let res = r
        .send(request("POST", "/v2/src/app/blobs/uploads/?digest=sha256:12").set_payload("x"))
        .await;
    res.assert_error(400, "DIGEST_INVALID");
    r.call("POST", "/v2/src/app/blobs/uploads/?digest-algorithm=md5")
        .await
        .assert_error(400, "UNSUPPORTED");
    let res = r
        .call("POST", "/v2/src/app/blobs/uploads/?digest-algorithm=sha512")
        .await;
    check_upload(&res, 202, "src/app", "0-0");

    // Mounted from a repository that has it: 201, no upload.
    let res = r
        .call(
            "POST",
            &format!("/v2/dst/app/blobs/uploads/?mount={digest}&from=src/app"),
        )
        .await;
    check_created(&res, "dst/app", &digest);
    let res = r.call("GET", &format!("/v2/dst/app/blobs/{digest}")).await;
    assert_eq!(res.body, data);
    // Not in the source (or no source named): an upload session instead.
    let missing = sha256(b"not there");
    for query in [
        format!("mount={missing}&from=src/app"),
        format!("mount={digest}"),
        format!("mount={digest}&from=nowhere/app"),
    ] {
        let res = r
            .call("POST", &format!("/v2/other/app/blobs/uploads/?{query}"))
            .await;
        check_upload(&res, 202, "other/app", "0-0");
    }
    r.call(
        "POST",
        "/v2/dst/app/blobs/uploads/?mount=sha256:12&from=src/app",
    )
    .await
    .assert_error(400, "DIGEST_INVALID");
}
