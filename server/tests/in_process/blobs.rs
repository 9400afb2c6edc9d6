//! `GET /v2/`, unknown endpoints, and blobs: `HEAD`, `GET` (with `Range`), `DELETE`.

use actix_web::body::BodySize;

use crate::{registry, request};

#[actix_web::test]
async fn base_and_unknown_endpoints() {
    let r = registry(false).await;
    for uri in ["/v2/", "/v2"] {
        let res = r.call("GET", uri).await;
        assert_eq!(res.status, 200);
        assert_eq!(res.header("content-type"), "application/json");
        assert_eq!(&res.body[..], b"{}");
    }
    let res = r.call("HEAD", "/v2/").await;
    assert_eq!(res.status, 200);
    r.call("POST", "/v2/")
        .await
        .assert_error(405, "UNSUPPORTED");
    r.call("GET", "/v2/nope")
        .await
        .assert_error(404, "UNSUPPORTED");
    r.call("GET", "/v2/a/b/nothing/here")
        .await
        .assert_error(404, "UNSUPPORTED");
    r.call("POST", "/v2/a/tags/list")
        .await
        .assert_error(405, "UNSUPPORTED");
    r.call("GET", "/v2/Bad_Name/tags/list")
        .await
        .assert_error(400, "NAME_INVALID");
    r.call("GET", "/v2/a/manifests/-bad-tag")
        .await
        .assert_error(400, "TAG_INVALID");
    // Outside /v2: actix-web's routes, then the same 404 body.
    r.call("GET", "/nothing")
        .await
        .assert_error(404, "UNSUPPORTED");
    r.call("DELETE", "/auth/token")
        .await
        .assert_error(405, "UNSUPPORTED");
}

#[actix_web::test]
async fn blob_head_get_and_delete() {
    let r = registry(false).await;
    let data = b"hello blob".to_vec();
    let digest = r.push_blob("ns/app", &data).await;
    let uri = format!("/v2/ns/app/blobs/{digest}");
    let check_headers = |res: &crate::Reply| {
        assert_eq!(res.status, 200);
        assert_eq!(res.header("docker-content-digest"), digest.as_str());
        assert_eq!(res.header("etag"), format!("\"{digest}\""));
        assert_eq!(res.header("accept-ranges"), "bytes");
        assert_eq!(res.header("content-type"), "application/octet-stream");
        assert_eq!(res.header("cache-control"), "max-age=31536000");
        assert!(!res.has("content-range"));
        assert_eq!(res.size, BodySize::Sized(data.len() as u64));
    };
    let head = r.call("HEAD", &uri).await;
    check_headers(&head);
    assert!(head.body.is_empty(), "HEAD sends no bytes");
    let get = r.call("GET", &uri).await;
    check_headers(&get);
    assert_eq!(get.body, data);

    // Other repositories do not have it; malformed digests are refused.
    r.call("HEAD", &format!("/v2/ns/other/blobs/{digest}"))
        .await
        .assert_error(404, "BLOB_UNKNOWN");
    r.call("GET", &format!("/v2/ns/other/blobs/{digest}"))
        .await
        .assert_error(404, "BLOB_UNKNOWN");
    r.call("GET", "/v2/ns/app/blobs/sha256:1234")
        .await
        .assert_error(400, "DIGEST_INVALID");
    r.call(
        "GET",
        &format!("/v2/ns/app/blobs/sha384:{}", "a".repeat(96)),
    )
    .await
    .assert_error(400, "UNSUPPORTED");
    r.call("PUT", &uri).await.assert_error(405, "UNSUPPORTED");

    // An empty blob.
    let empty = r.push_blob("ns/app", b"").await;
    let res = r.call("GET", &format!("/v2/ns/app/blobs/{empty}")).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.size, BodySize::Sized(0));

    let del = r.call("DELETE", &uri).await;
    assert_eq!(del.status, 202);
    assert_eq!(del.size, BodySize::Sized(0));
    r.call("HEAD", &uri).await.assert_error(404, "BLOB_UNKNOWN");
    r.call("GET", &uri).await.assert_error(404, "BLOB_UNKNOWN");
    r.call("DELETE", &uri)
        .await
        .assert_error(404, "BLOB_UNKNOWN");
}

#[actix_web::test]
async fn blob_ranges() {
    let r = registry(false).await;
    let data: Vec<u8> = (0..100u8).collect();
    let digest = r.push_blob("ns/range", &data).await;
    let uri = format!("/v2/ns/range/blobs/{digest}");
    let get = |range: &str| r.send(request("GET", &uri).insert_header(("Range", range.to_owned())));

    // One range: 206, Content-Range, exactly those bytes.
    for (range, first, last) in [
        ("bytes=10-19", 10, 19),
        ("bytes=0-0", 0, 0),
        ("bytes=90-", 90, 99),
        ("bytes=-5", 95, 99),
        ("bytes=-500", 0, 99),
        ("bytes=95-1000", 95, 99),
        ("bytes=0-18446744073709551615", 0, 99),
    ] {
        let res = get(range).await;
        assert_eq!(res.status, 206, "{range}");
        assert_eq!(
            res.header("content-range"),
            format!("bytes {first}-{last}/100"),
            "{range}"
        );
        assert_eq!(res.size, BodySize::Sized(last - first + 1), "{range}");
        assert_eq!(res.body, data[first as usize..=last as usize], "{range}");
        assert_eq!(res.header("docker-content-digest"), digest.as_str());
        assert_eq!(res.header("accept-ranges"), "bytes");
    }
    // Unsatisfiable: 416 naming the size.
    for range in [
        "bytes=100-",
        "bytes=100-200",
        "bytes=-0",
        "bytes=18446744073709551615-",
        "bytes=20-10",
    ] {
        let res = get(range).await;
        res.assert_error(416, "BLOB_UNKNOWN");
        assert_eq!(res.header("content-range"), "bytes */100", "{range}");
    }
    // Several ranges, malformed or foreign ones: the whole blob.
    for range in [
        "bytes=0-1,5-6",
        "bytes=0-1,",
        "bytes=zz",
        "bytes=",
        "items=0-1",
        "bytes=0-18446744073709551616",
    ] {
        let res = get(range).await;
        assert_eq!(res.status, 200, "{range}");
        assert!(!res.has("content-range"), "{range}");
        assert_eq!(res.body, data, "{range}");
    }
    // HEAD ignores Range.
    let res = r
        .send(request("HEAD", &uri).insert_header(("Range", "bytes=0-1")))
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.size, BodySize::Sized(100));

    // An empty blob has no satisfiable range.
    let empty = r.push_blob("ns/range", b"").await;
    let res = r
        .send(
            request("GET", &format!("/v2/ns/range/blobs/{empty}"))
                .insert_header(("Range", "bytes=0-")),
        )
        .await;
    res.assert_error(416, "BLOB_UNKNOWN");
    assert_eq!(res.header("content-range"), "bytes */0");
}
