//! The gate with token authentication on: challenges, scopes, denials.

use crate::{registry, request, sha256, Reply};

const PULL: &[&str] = &["pull"];
const PUSH: &[&str] = &["pull", "push"];

/// A 401 with the spec's body and a Bearer challenge that is exactly `challenge`.
fn challenged(res: &Reply, challenge: &str) {
    res.assert_error(401, "UNAUTHORIZED");
    assert_eq!(res.header("www-authenticate"), challenge);
}

const REALM: &str = "Bearer realm=\"http://registry.test:5000/auth/token\",service=\"berth\"";

#[actix_web::test]
async fn requests_without_a_token_are_challenged_with_their_scopes() {
    let r = registry(true).await;
    let call = |method: &str, uri: &str| {
        r.send(request(method, uri).insert_header(("Host", "registry.test:5000")))
    };
    challenged(&call("GET", "/v2/").await, REALM);
    let digest = sha256(b"x");
    let cases = [
        (
            "GET",
            "/v2/a/app/tags/list".to_owned(),
            "repository:a/app:pull",
        ),
        ("GET", "/v2/_catalog".to_owned(), "registry:catalog:*"),
        (
            "HEAD",
            format!("/v2/a/app/blobs/{digest}"),
            "repository:a/app:pull",
        ),
        (
            "DELETE",
            format!("/v2/a/app/blobs/{digest}"),
            "repository:a/app:pull,delete",
        ),
        (
            "PUT",
            "/v2/a/app/manifests/v1".to_owned(),
            "repository:a/app:pull,push",
        ),
        (
            "POST",
            "/v2/a/app/blobs/uploads/".to_owned(),
            "repository:a/app:pull,push",
        ),
        (
            "POST",
            format!("/v2/a/app/blobs/uploads/?mount={digest}&from=b/lib"),
            "repository:a/app:pull,push repository:b/lib:pull",
        ),
        (
            "GET",
            format!("/v2/a/app/referrers/{digest}"),
            "repository:a/app:pull",
        ),
    ];
    for (method, uri, scope) in cases {
        let res = call(method, &uri).await;
        challenged(&res, &format!("{REALM},scope=\"{scope}\""));
    }
    // Nothing about the path is answered before authentication, not even that it is
    // no endpoint.
    challenged(&call("GET", "/v2/nope").await, REALM);
    challenged(&call("GET", "/v2/Bad_Name/tags/list").await, REALM);
    // A Host that is no plain authority is not echoed into the realm.
    let res = r
        .send(request("GET", "/v2/").insert_header(("Host", "evil\",realm=\"http://x")))
        .await;
    challenged(
        &res,
        "Bearer realm=\"http://localhost/auth/token\",service=\"berth\"",
    );
    // Invalid tokens are told so.
    for token in ["garbage", "a.b.c", "e30.e30.e30"] {
        let res = r
            .send(
                request("GET", "/v2/a/app/tags/list")
                    .insert_header(("Host", "registry.test:5000"))
                    .insert_header(("Authorization", format!("Bearer {token}"))),
            )
            .await;
        let expected = "scope=\"repository:a/app:pull\",error=\"invalid_token\"";
        challenged(&res, &format!("{REALM},{expected}"));
    }
}

#[actix_web::test]
async fn tokens_open_what_they_grant() {
    let r = registry(true).await;
    let alice = r.token("alice", &[("repository", "alice/app", PUSH)]);
    let reader = r.token("", &[("repository", "alice/app", PULL)]);
    let as_ = |token: &str, req: actix_web::test::TestRequest| {
        req.insert_header(("Authorization", format!("Bearer {token}")))
    };
    let data = b"layer".to_vec();
    let digest = sha256(&data);
    let upload = format!("/v2/alice/app/blobs/uploads/?digest={digest}");
    let res = r
        .send(as_(
            &alice,
            request("POST", &upload).set_payload(data.clone()),
        ))
        .await;
    assert_eq!(res.status, 201);
    assert_eq!(res.header("docker-content-digest"), digest.as_str());
    // Granted pull but asking to push: denied (403), no new challenge.
    let res = r
        .send(as_(
            &reader,
            request("POST", &upload).set_payload(data.clone()),
        ))
        .await;
    res.assert_error(403, "DENIED");
    assert!(!res.has("www-authenticate"));
    let blob = format!("/v2/alice/app/blobs/{digest}");
    let res = r.send(as_(&reader, request("GET", &blob))).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body, data);
    // A token for another repository: ask for a wider one.
    let res = r
        .send(as_(&alice, request("GET", "/v2/bob/app/tags/list")))
        .await;
    res.assert_error(401, "UNAUTHORIZED");
    assert!(res
        .header("www-authenticate")
        .ends_with(",scope=\"repository:bob/app:pull\",error=\"insufficient_scope\""));
    // Once authenticated, the path's own errors are answered.
    let res = r.send(as_(&alice, request("GET", "/v2/nope"))).await;
    res.assert_error(404, "UNSUPPORTED");
    let res = r.send(as_(&alice, request("GET", "/v2/"))).await;
    assert_eq!(res.status, 200);
    // The catalog needs its own scope; an anonymous token sees public repositories.
    let res = r.send(as_(&alice, request("GET", "/v2/_catalog"))).await;
    res.assert_error(401, "UNAUTHORIZED");
    let catalog = r.token("", &[("registry", "catalog", &["*"])]);
    let res = r.send(as_(&catalog, request("GET", "/v2/_catalog"))).await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.json(),
        serde_json::json!({"repositories": ["alice/app"]})
    );
}
