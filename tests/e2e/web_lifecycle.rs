//! Usage and retention in the web UI, over real HTTP against a real `berthd`: who may
//! read a namespace's or the registry's usage and manage retention policies (JSON API
//! and pages), usage figures to the byte for a layer two repositories share, a policy
//! set through the API whose preview is exactly what the run then deletes, bad input
//! refused with a clear 400 and nothing changed, writes without the CSRF token
//! refused.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use berth_tests::*;
use serde_json::{json, Value};

use crate::auth::{pusher, ALICE, BOB};
use crate::web::{cookie_client, csrf_of, sign_in};

const ROOT: (&str, &str, bool) = ("rooty", "rooty-secret-pw", true);

mod with_users {
    use super::*;
    crate::on_both_databases!(
        users = &[ALICE, BOB, ROOT];
        usage_is_exact_and_for_owners_only,
        retention_through_the_api_deletes_what_it_previewed,
        retention_on_the_pages,
    );
}

/// Pushes blobs (the first is the config) and an image manifest of them to
/// `repo:tag`; returns the manifest's digest.
async fn push(c: &Client, repo: &str, tag: &str, blobs: &[&[u8]]) -> String {
    let mut digests = Vec::new();
    for b in blobs {
        digests.push(c.push_blob(repo, b).await);
    }
    let layers: Vec<(&str, usize)> = digests[1..]
        .iter()
        .zip(&blobs[1..])
        .map(|(d, b)| (d.as_str(), b.len()))
        .collect();
    let manifest = image_manifest(&digests[0], blobs[0].len(), &layers, None);
    let r = c.push_manifest(repo, tag, OCI_MANIFEST, &manifest).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    sha256(&manifest)
}

fn config(marker: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
        "config": {"Labels": {"marker": marker}},
    }))
    .unwrap()
}

/// Status and JSON body (`null` for an empty one) of a request.
async fn call(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    csrf: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut r = http.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url);
    if let Some(token) = csrf {
        r = r.header("X-CSRF-Token", token);
    }
    if let Some(body) = body {
        r = r.json(body);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let body = match text.is_empty() {
        true => Value::Null,
        false => serde_json::from_str(&text).unwrap_or(Value::String(text)),
    };
    (status, body)
}

async fn put(http: &reqwest::Client, url: String, csrf: Option<&str>, body: Value) -> (u16, Value) {
    call(http, "PUT", &url, csrf, Some(&body)).await
}

async fn get(http: &reqwest::Client, url: &str) -> (u16, Value) {
    call(http, "GET", url, None, None).await
}

/// A page's status and HTML (escaped slashes back to `/`).
async fn page(http: &reqwest::Client, url: &str) -> (u16, String) {
    let r = http.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, unescape(&r.text().await.unwrap()))
}

fn unescape(html: &str) -> String {
    html.replace("&#x2f;", "/").replace("&quot;", "\"")
}

async fn post_form(http: &reqwest::Client, url: &str, form: &[(&str, &str)]) -> (u16, String) {
    let r = http.post(url).form(form).send().await.unwrap();
    let status = r.status().as_u16();
    let location = r
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned());
    let text = unescape(&r.text().await.unwrap());
    (status, location.unwrap_or(text))
}

fn as_pairs(f: &[(String, String)]) -> Vec<(&str, &str)> {
    f.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The error message of a JSON error answer.
fn message(body: &Value) -> &str {
    body["errors"][0]["message"].as_str().unwrap_or_default()
}

/// The tags `/v2/<repo>/tags/list` lists, as `user`.
async fn tags_of(s: &Berthd, user: (&str, &str, bool), repo: &str) -> Vec<String> {
    let c = pusher(s, user, repo).await;
    let r = c.call("GET", &format!("/v2/{repo}/tags/list")).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let mut tags: Vec<String> = body["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    tags.sort();
    tags
}

fn sizes(blobs: &[&[u8]]) -> u64 {
    let distinct: BTreeMap<String, u64> =
        blobs.iter().map(|b| (sha256(b), b.len() as u64)).collect();
    distinct.values().sum()
}

async fn usage_is_exact_and_for_owners_only(s: Berthd) {
    let base = &s.url;
    // alice/one and alice/two share a layer; alice/two is private; bobby has his own.
    let shared = vec![b's'; 40_000];
    let (one_config, one_layer) = (config("one"), vec![b'1'; 3_000]);
    let (two_config, two_layer) = (config("two"), vec![b'2'; 500]);
    let (bob_config, bob_layer) = (config("bob"), vec![b'b'; 700]);
    let c = pusher(&s, ALICE, "alice/one").await;
    push(&c, "alice/one", "1", &[&one_config, &shared, &one_layer]).await;
    let c = pusher(&s, ALICE, "alice/two").await;
    push(&c, "alice/two", "1", &[&two_config, &shared, &two_layer]).await;
    let c = pusher(&s, BOB, "bobby/tool").await;
    push(&c, "bobby/tool", "1", &[&bob_config, &bob_layer]).await;
    s.admin_ok(&["repo", "private", "alice/two"]);
    s.admin_ok(&["org", "add", "acmeco", "--owner", "alice"]);
    s.admin_ok(&["org", "member", "add", "acmeco", "bobby", "--role", "write"]);
    let one = sizes(&[&one_config, &shared, &one_layer]);
    let two = sizes(&[&two_config, &shared, &two_layer]);
    let alice_ns = sizes(&[&one_config, &two_config, &shared, &one_layer, &two_layer]);
    assert_eq!(
        alice_ns,
        one + two - shared.len() as u64,
        "shared counts once"
    );
    let bob_ns = sizes(&[&bob_config, &bob_layer]);

    let anonymous = cookie_client();
    let alice = sign_in(base, ALICE).await;
    let bob = sign_in(base, BOB).await;
    let root = sign_in(base, ROOT).await;
    let registry = format!("{base}/api/v1/usage");
    let ns = |name: &str| format!("{base}/api/v1/namespaces/{name}/usage");
    let repo = |scope: &str| format!("{base}/api/v1/usage?scope={scope}");

    // Anonymous: sign in first; a private repository does not exist.
    assert_eq!(get(&anonymous, &registry).await.0, 401);
    assert_eq!(get(&anonymous, &ns("alice")).await.0, 401);
    assert_eq!(get(&anonymous, &repo("alice/one")).await.0, 401);
    assert_eq!(get(&anonymous, &repo("alice/*")).await.0, 401);
    assert_eq!(get(&anonymous, &repo("alice/two")).await.0, 404);
    // Another user: refused, private repositories hidden; their own namespace is theirs.
    assert_eq!(get(&bob, &registry).await.0, 403);
    assert_eq!(get(&bob, &ns("alice")).await.0, 403);
    assert_eq!(get(&bob, &repo("alice/one")).await.0, 403);
    assert_eq!(get(&bob, &repo("alice/two")).await.0, 404);
    let (status, body) = get(&bob, &ns("bobby")).await;
    assert_eq!((status, &body["bytes"]), (200, &json!(bob_ns)), "{body}");
    // An organization's usage is its admins' (bobby only writes there).
    assert_eq!(get(&bob, &ns("acmeco")).await.0, 403);
    let (status, body) = get(&alice, &ns("acmeco")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((&body["bytes"], &body["total"]), (&json!(0), &json!(0)));

    // The owner: exact figures, the private repository included; not the registry's.
    assert_eq!(get(&alice, &registry).await.0, 403);
    let (status, body) = get(&alice, &ns("alice")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({
            "namespace": "alice", "bytes": alice_ns, "quota": null,
            "total": 2, "page": 1, "per_page": 100,
            "repositories": [
                {"name": "alice/one", "private": false, "bytes": one},
                {"name": "alice/two", "private": true, "bytes": two},
            ],
        })
    );
    let (_, same) = get(&alice, &repo("alice/*")).await;
    assert_eq!(same, body, "?scope=alice/* is the namespace");
    let (status, body) = get(&alice, &repo("alice/two")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"repository": "alice/two", "bytes": two,
               "namespace": {"namespace": "alice", "bytes": alice_ns, "quota": null}})
    );
    assert_eq!(get(&alice, &repo("alice/missing")).await.0, 404);

    // A registry admin: the registry, every namespace, anyone's repository.
    let (status, body) = get(&root, &registry).await;
    assert_eq!(status, 200, "{body}");
    let stored = alice_ns + bob_ns;
    let logical = one + two + bob_ns;
    assert_eq!(
        (
            &body["blobs"],
            &body["stored_bytes"],
            &body["logical_bytes"]
        ),
        (&json!(7), &json!(stored), &json!(logical)),
        "{body}"
    );
    let ratio = body["dedup_ratio"].as_f64().unwrap();
    assert!(
        (ratio - logical as f64 / stored as f64).abs() < 1e-9,
        "{body}"
    );
    assert_eq!(
        body["namespaces"],
        json!([
            {"namespace": "alice", "bytes": alice_ns, "quota": null},
            {"namespace": "bobby", "bytes": bob_ns, "quota": null},
        ])
    );
    assert_eq!(get(&root, &repo("alice/two")).await.0, 200);
    let (status, body) = get(&root, &ns("nobody")).await;
    assert_eq!((status, &body["bytes"]), (200, &json!(0)));

    // Names that cannot be namespaces or scopes: 400 saying why.
    for url in [
        ns("Alice"),
        repo("../x"),
        repo("alice/team/*"),
        repo(&"a".repeat(10_000)),
    ] {
        let (status, body) = get(&root, &url).await;
        assert_eq!(status, 400, "{url}: {body}");
        assert!(message(&body).contains("scope"), "{body}");
    }

    // A quota shows in the answer and on the pages (the server rereads quotas every 5 s).
    s.admin_ok(&["quota", "set", "alice", "100000"]);
    let start = Instant::now();
    loop {
        let (_, body) = get(&alice, &ns("alice")).await;
        if body["quota"] == json!(100_000) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "{body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (status, html) = page(&alice, &format!("{base}/u/alice")).await;
    assert_eq!(status, 200);
    let percent = format!("{:.1}%", alice_ns as f64 * 100.0 / 100_000.0);
    assert!(
        html.contains("<meter") && html.contains("100.0 kB") && html.contains(&percent),
        "{html}"
    );
    assert!(
        html.contains("alice/two") && html.contains(&format!("{:.1} kB", two as f64 / 1000.0)),
        "the private repository's size for its owner"
    );
    let (status, html) = page(&alice, &format!("{base}/r/alice/one")).await;
    assert_eq!(status, 200);
    assert!(
        html.contains("id=\"storage\"") && html.contains(&format!("{:.1} kB", one as f64 / 1000.0)),
        "{html}"
    );
    // Others see neither the section nor the sizes.
    for http in [&bob, &anonymous] {
        let (_, html) = page(http, &format!("{base}/u/alice")).await;
        assert!(!html.contains("id=\"storage\""), "{html}");
        let (_, html) = page(http, &format!("{base}/r/alice/one")).await;
        assert!(!html.contains("id=\"storage\""), "{html}");
    }
    // The registry page: admins only.
    let (status, html) = page(&root, &format!("{base}/usage")).await;
    assert_eq!(status, 200);
    assert!(
        html.contains("Deduplication")
            && html.contains(&format!("{:.2}×", logical as f64 / stored as f64)),
        "{html}"
    );
    assert_eq!(page(&alice, &format!("{base}/usage")).await.0, 403);
    assert_eq!(page(&anonymous, &format!("{base}/usage")).await.0, 401);
}

const POLICY: &str = "/api/v1/retention";

async fn retention_through_the_api_deletes_what_it_previewed(s: Berthd) {
    let base = &s.url;
    let policy = |scope: &str| format!("{base}{POLICY}?scope={scope}");
    let preview = |scope: &str| format!("{base}{POLICY}/preview?scope={scope}");
    let run = |scope: &str| format!("{base}{POLICY}/run?scope={scope}");

    // alice/app: five tags, one image each (the config shared), oldest first.
    let c = pusher(&s, ALICE, "alice/app").await;
    let mut layers = BTreeMap::new();
    for tag in ["v1", "old-1", "old-2", "old-3", "latest"] {
        let layer = format!("layer of {tag} ").repeat(200).into_bytes();
        c.push_image("alice/app", tag, &layer).await;
        layers.insert(tag, layer.len() as u64);
        // Distinct push times, so "most recently pushed" is unambiguous.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let c = pusher(&s, ALICE, "alice/secret").await;
    c.push_image("alice/secret", "1", b"secret").await;
    s.admin_ok(&["repo", "private", "alice/secret"]);
    s.admin_ok(&["org", "add", "acmeco", "--owner", "alice"]);
    s.admin_ok(&["org", "member", "add", "acmeco", "bobby", "--role", "write"]);

    let anonymous = cookie_client();
    let (_, signin) = page(&anonymous, &format!("{base}/signin")).await;
    let anonymous_csrf = csrf_of(&signin);
    let alice = sign_in(base, ALICE).await;
    let bob = sign_in(base, BOB).await;
    let root = sign_in(base, ROOT).await;

    // The owner reads (no policy yet) and gets the token for writes.
    let (status, body) = get(&alice, &policy("alice/app")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["policy"], &body["inherited"], &body["applies"]),
        (&Value::Null, &Value::Null, &Value::Null)
    );
    let csrf = body["csrf"].as_str().unwrap().to_owned();
    let csrf = csrf.as_str();

    // A namespace policy, durations as text; a repository's own policy replaces it there.
    let (status, body) = put(
        &alice,
        policy("alice/*"),
        Some(csrf),
        json!({"unpushed_for": "30days", "unpulled_for": "12h"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let ns_policy = json!({"scope": "alice/*", "keep_last": null, "keep_pattern": null,
                           "unpushed_for": "30days", "unpulled_for": "12h"});
    assert_eq!(body, ns_policy);
    let (_, body) = get(&alice, &policy("alice/app")).await;
    assert_eq!(
        (&body["policy"], &body["inherited"], &body["applies"]),
        (&Value::Null, &ns_policy, &json!("alice/*"))
    );
    let (status, body) = get(&alice, &preview("alice/app")).await;
    assert_eq!(status, 404, "no policy of its own: {body}");
    assert!(message(&body).contains("use scope=alice/*"), "{body}");
    let (status, body) = put(
        &alice,
        policy("alice/app"),
        Some(csrf),
        json!({"keep_last": 2, "keep_pattern": "v*"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let app_policy = json!({"scope": "alice/app", "keep_last": 2, "keep_pattern": "v*",
                            "unpushed_for": null, "unpulled_for": null});
    assert_eq!(body, app_policy);
    let (_, body) = get(&alice, &policy("alice/*")).await;
    assert_eq!(body["policy"], ns_policy);
    assert_eq!(body["repositories"], json!([app_policy]));
    let (_, body) = get(&alice, &policy("alice/app")).await;
    assert_eq!(body["applies"], "alice/app");

    // Bad input: 400 with the reason, and nothing changed.
    let long = "a".repeat(10 * 1024);
    let bad: Vec<(String, Value, &str)> = vec![
        (
            policy("alice/app"),
            json!({"keep_last": 0}),
            "keep_last must be at least 1",
        ),
        (
            policy("alice/app"),
            json!({"keep_last": 3, "keep_forever": true}),
            "unknown field `keep_forever`",
        ),
        (
            policy("alice/app"),
            json!({"keep_last": -1}),
            "invalid value: integer `-1`",
        ),
        (
            policy("alice/app"),
            json!({"unpushed_for": "30 parsecs"}),
            "unpushed_for \"30 parsecs\"",
        ),
        (
            policy("alice/app"),
            json!({"unpulled_for": "0s"}),
            "unpulled_for must be longer than 0",
        ),
        (
            policy("alice/app"),
            json!({"keep_pattern": "v*"}),
            "needs keep_last, unpushed_for or unpulled_for",
        ),
        (
            policy("alice/app"),
            json!({"keep_last": 1, "keep_pattern": long}),
            "pattern is 10240 bytes long",
        ),
        (
            policy("alice/app"),
            json!({"keep_last": 1, "keep_pattern": "a/b"}),
            "pattern",
        ),
        (
            policy("alice/app"),
            json!({"scope": "alice/other", "keep_last": 1}),
            "is not the one in the URL",
        ),
        (
            policy("../x"),
            json!({"keep_last": 1}),
            "scope is not a repository name: invalid repository name: \"../x\"",
        ),
        (policy("alice/../x"), json!({"keep_last": 1}), "scope"),
        (policy(&long), json!({"keep_last": 1}), "bytes long"),
        (
            format!("{base}{POLICY}"),
            json!({"keep_last": 1}),
            "scope is missing",
        ),
    ];
    for (url, body, why) in &bad {
        let (status, answer) = put(&alice, url.clone(), Some(csrf), body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        let said = message(&answer);
        assert!(
            said.contains(why) && said.len() < 1000,
            "{body}: expected {why:?} in {said:?}"
        );
        assert_eq!(answer["errors"][0]["code"], "UNSUPPORTED");
    }
    let r = alice
        .put(policy("alice/app"))
        .header("X-CSRF-Token", csrf)
        .body("keep_last=3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "not JSON");
    for (scope, expected) in [("alice/app", &app_policy), ("alice/*", &ns_policy)] {
        let (_, body) = get(&alice, &policy(scope)).await;
        assert_eq!(&body["policy"], expected, "{scope} unchanged");
    }
    let (status, body) = get(&alice, &preview("../x")).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        message(&body).starts_with("invalid retention policy: scope"),
        "{body}"
    );

    // Without the session's CSRF token, writes are refused and change nothing.
    for token in [None, Some("forged"), Some(anonymous_csrf.as_str())] {
        let (status, _) = put(&alice, policy("alice/app"), token, json!({"keep_last": 1})).await;
        assert_eq!(status, 403);
        let (status, _) = call(&alice, "DELETE", &policy("alice/app"), token, None).await;
        assert_eq!(status, 403);
        let (status, _) = call(&alice, "POST", &run("alice/app"), token, None).await;
        assert_eq!(status, 403);
    }
    assert_eq!(
        get(&alice, &policy("alice/app")).await.1["policy"],
        app_policy
    );
    assert_eq!(tags_of(&s, ALICE, "alice/app").await.len(), 5);

    // Authorization: anonymous (with a valid anonymous token: still not theirs).
    let anon = Some(anonymous_csrf.as_str());
    assert_eq!(get(&anonymous, &policy("alice/app")).await.0, 401);
    assert_eq!(get(&anonymous, &policy("alice/*")).await.0, 401);
    assert_eq!(get(&anonymous, &preview("alice/app")).await.0, 401);
    assert_eq!(get(&anonymous, &policy("alice/secret")).await.0, 404);
    let (status, _) = put(
        &anonymous,
        policy("alice/app"),
        anon,
        json!({"keep_last": 1}),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(
        call(&anonymous, "DELETE", &policy("alice/app"), anon, None)
            .await
            .0,
        401
    );
    assert_eq!(
        call(&anonymous, "POST", &run("alice/app"), anon, None)
            .await
            .0,
        401
    );
    // Another user: 403, and 404 for a private repository.
    let (_, home) = page(&bob, &format!("{base}/")).await;
    let bob_csrf = csrf_of(&home);
    let bob_token = Some(bob_csrf.as_str());
    for scope in ["alice/app", "alice/*"] {
        assert_eq!(get(&bob, &policy(scope)).await.0, 403);
        assert_eq!(get(&bob, &preview(scope)).await.0, 403);
        let (status, _) = put(&bob, policy(scope), bob_token, json!({"keep_last": 1})).await;
        assert_eq!(status, 403);
        assert_eq!(
            call(&bob, "DELETE", &policy(scope), bob_token, None)
                .await
                .0,
            403
        );
        assert_eq!(
            call(&bob, "POST", &run(scope), bob_token, None).await.0,
            403
        );
    }
    assert_eq!(get(&bob, &policy("alice/secret")).await.0, 404);
    assert_eq!(get(&bob, &preview("alice/secret")).await.0, 404);
    let (status, _) = put(
        &bob,
        policy("alice/secret"),
        bob_token,
        json!({"keep_last": 1}),
    )
    .await;
    assert_eq!(status, 404);
    // Their own namespace is theirs; an organization's is its admins'.
    let (status, _) = put(&bob, policy("bobby/*"), bob_token, json!({"keep_last": 1})).await;
    assert_eq!(status, 200);
    let (status, _) = put(&bob, policy("acmeco/*"), bob_token, json!({"keep_last": 1})).await;
    assert_eq!(status, 403);
    let (status, _) = put(
        &alice,
        policy("acmeco/*"),
        Some(csrf),
        json!({"keep_last": 1}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(get(&alice, &preview("acmeco/*")).await.0, 200);
    // A registry admin manages anyone's.
    let (status, body) = get(&root, &policy("alice/*")).await;
    assert_eq!((status, &body["policy"]), (200, &ns_policy));
    let root_csrf = body["csrf"].as_str().unwrap().to_owned();
    let (status, _) = call(&root, "DELETE", &policy("bobby/*"), Some(&root_csrf), None).await;
    assert_eq!(status, 204);
    let (status, body) = call(&root, "DELETE", &policy("bobby/*"), Some(&root_csrf), None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        get(&root, &preview("alice/secret")).await.0,
        404,
        "no policy there"
    );

    // The preview: the tags after the 2 most recent, except v* (kept by pattern).
    let (status, plan) = get(&alice, &preview("alice/app")).await;
    assert_eq!(status, 200, "{plan}");
    let doomed: Vec<&str> = plan["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tag"].as_str().unwrap())
        .collect();
    assert_eq!(doomed, ["old-2", "old-1"], "{plan}");
    for t in plan["tags"].as_array().unwrap() {
        assert_eq!(t["repository"], "alice/app");
        assert!(t["digest"].as_str().unwrap().starts_with("sha256:"));
        assert!(t["pushed_at"].as_i64().unwrap() > 0);
        assert_eq!(t["last_pulled_at"], Value::Null);
    }
    assert_eq!(plan["manifests"].as_array().unwrap().len(), 2, "{plan}");
    assert_eq!(
        plan["freed_bytes"],
        json!(layers["old-1"] + layers["old-2"]),
        "their layers; the config stays with the other tags"
    );
    assert_eq!(plan["scope"], "alice/app");
    // The root sees the same plan.
    assert_eq!(get(&root, &preview("alice/app")).await.1, plan);

    // A stale plan id runs nothing (409).
    let (status, body) = call(
        &alice,
        "POST",
        &format!("{}&plan=0000000000000000", run("alice/app")),
        Some(csrf),
        None,
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(message(&body).contains("preview it again"), "{body}");
    assert_eq!(tags_of(&s, ALICE, "alice/app").await.len(), 5);

    // The run deletes exactly what the preview showed.
    let plan_id = plan["plan_id"].as_str().unwrap();
    let (status, done) = call(
        &alice,
        "POST",
        &format!("{}&plan={plan_id}", run("alice/app")),
        Some(csrf),
        None,
    )
    .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done, plan, "the run deleted what the preview listed");
    assert_eq!(
        tags_of(&s, ALICE, "alice/app").await,
        ["latest", "old-3", "v1"]
    );
    for (_, digest) in plan["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().split_once('@').unwrap())
    {
        let c = pusher(&s, ALICE, "alice/app").await;
        let r = c
            .call("GET", &format!("/v2/alice/app/manifests/{digest}"))
            .await;
        assert_eq!(r.status(), 404, "{digest} went with its tag");
    }
    let (_, again) = get(&alice, &preview("alice/app")).await;
    assert_eq!(again["tags"], json!([]), "nothing left to delete");

    // A push after the preview changes the plan: the run with the old id deletes nothing.
    let c = pusher(&s, ALICE, "alice/app").await;
    c.push_image("alice/app", "new-1", b"newest").await;
    let (status, _) = call(
        &alice,
        "POST",
        &format!(
            "{}&plan={}",
            run("alice/app"),
            again["plan_id"].as_str().unwrap()
        ),
        Some(csrf),
        None,
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(
        tags_of(&s, ALICE, "alice/app").await,
        ["latest", "new-1", "old-3", "v1"]
    );
    // Without a plan id the run applies whatever the policy says now.
    let (status, done) = call(&alice, "POST", &run("alice/app"), Some(csrf), None).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["tags"][0]["tag"], "old-3");

    // Removing the policy: 204, then 404; the namespace's applies again.
    let (status, _) = call(&alice, "DELETE", &policy("alice/app"), Some(csrf), None).await;
    assert_eq!(status, 204);
    let (status, _) = call(&alice, "DELETE", &policy("alice/app"), Some(csrf), None).await;
    assert_eq!(status, 404);
    let (_, body) = get(&alice, &policy("alice/app")).await;
    assert_eq!(
        (&body["policy"], &body["applies"]),
        (&Value::Null, &json!("alice/*"))
    );
}

async fn retention_on_the_pages(s: Berthd) {
    let base = &s.url;
    let c = pusher(&s, ALICE, "alice/web").await;
    for tag in ["a", "b", "c"] {
        c.push_image("alice/web", tag, format!("layer {tag}").as_bytes())
            .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let alice = sign_in(base, ALICE).await;
    let bob = sign_in(base, BOB).await;
    let (status, html) = page(&alice, &format!("{base}/r/alice/web")).await;
    assert_eq!(status, 200);
    assert!(
        html.contains("id=\"retention\"") && html.contains("No policy"),
        "{html}"
    );
    assert!(
        !html.contains("Preview and delete"),
        "nothing to preview yet"
    );
    let csrf = csrf_of(&html);
    let (_, bob_home) = page(&bob, &format!("{base}/")).await;
    let bob_csrf = csrf_of(&bob_home);

    // Set through the repository page's form.
    let set = format!("{base}/manage/retention");
    let form = |token: &str, keep_last: &str| {
        vec![
            ("csrf".to_owned(), token.to_owned()),
            ("scope".to_owned(), "alice/web".to_owned()),
            ("keep_last".to_owned(), keep_last.to_owned()),
            ("keep_pattern".to_owned(), String::new()),
            ("unpushed_for".to_owned(), String::new()),
            ("unpulled_for".to_owned(), String::new()),
        ]
    };
    assert_eq!(
        post_form(&bob, &set, &as_pairs(&form(&bob_csrf, "1")))
            .await
            .0,
        403
    );
    assert_eq!(
        post_form(&alice, &set, &as_pairs(&form("forged", "1")))
            .await
            .0,
        403
    );
    let (status, said) = post_form(&alice, &set, &as_pairs(&form(&csrf, "many"))).await;
    assert_eq!(status, 400);
    assert!(said.contains("expected a whole number of tags"), "{said}");
    let (status, said) = post_form(&alice, &set, &as_pairs(&form(&csrf, "0"))).await;
    assert_eq!(status, 400);
    assert!(said.contains("keep_last must be at least 1"), "{said}");
    let (status, location) = post_form(&alice, &set, &as_pairs(&form(&csrf, "1"))).await;
    assert_eq!((status, location.as_str()), (303, "/r/alice/web#retention"));
    let (_, html) = page(&alice, &format!("{base}/r/alice/web")).await;
    assert!(
        html.contains("Deletes a tag when it is not among the most recently pushed"),
        "{html}"
    );
    assert!(
        html.contains("/manage/retention/preview?scope=alice/web"),
        "{html}"
    );

    // Preview and delete.
    let preview_url = format!("{base}/manage/retention/preview?scope=alice/web");
    assert_eq!(page(&bob, &preview_url).await.0, 403);
    let (status, html) = page(&alice, &preview_url).await;
    assert_eq!(status, 200);
    assert!(
        html.contains("remove 2 tags")
            && html.contains("<td>a</td>")
            && html.contains("<td>b</td>"),
        "{html}"
    );
    let plan = {
        let marker = "name=\"plan\" value=\"";
        let start = html.find(marker).unwrap() + marker.len();
        html[start..][..16].to_owned()
    };
    let run = format!("{base}/manage/retention/run");
    let run_form = |token: &str, plan: &str| {
        vec![
            ("csrf".to_owned(), token.to_owned()),
            ("scope".to_owned(), "alice/web".to_owned()),
            ("plan".to_owned(), plan.to_owned()),
        ]
    };
    assert_eq!(
        post_form(&bob, &run, &as_pairs(&run_form(&bob_csrf, &plan)))
            .await
            .0,
        403
    );
    let (status, html) = post_form(&alice, &run, &as_pairs(&run_form(&csrf, "stale"))).await;
    assert_eq!(status, 409);
    assert!(
        html.contains("the plan changed since it was previewed"),
        "{html}"
    );
    assert_eq!(tags_of(&s, ALICE, "alice/web").await, ["a", "b", "c"]);
    let (status, html) = post_form(&alice, &run, &as_pairs(&run_form(&csrf, &plan))).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("Deleted 2 tags"), "{html}");
    assert_eq!(tags_of(&s, ALICE, "alice/web").await, ["c"]);

    // The namespace page: its policy form; a repository policy listed as replacing it.
    let (status, html) = page(&alice, &format!("{base}/u/alice")).await;
    assert_eq!(status, 200);
    assert!(
        html.contains("id=\"retention\"") && html.contains("value=\"alice/*\""),
        "{html}"
    );
    assert!(html.contains("href=\"/r/alice/web#retention\""), "{html}");
    let ns_form = [
        ("csrf", csrf.as_str()),
        ("scope", "alice/*"),
        ("keep_last", ""),
        ("keep_pattern", "release-*"),
        ("unpushed_for", "30days"),
        ("unpulled_for", ""),
    ];
    let (status, location) = post_form(&alice, &set, &ns_form).await;
    assert_eq!((status, location.as_str()), (303, "/u/alice#retention"));
    let (_, html) = page(&alice, &format!("{base}/u/alice")).await;
    assert!(
        html.contains("not pushed for 30days") && html.contains("<code>release-*</code>"),
        "{html}"
    );
    let (_, html) = page(&bob, &format!("{base}/u/alice")).await;
    assert!(!html.contains("id=\"retention\""), "{html}");

    // Removing: the repository's own policy goes, the namespace's shows as inherited.
    let remove = format!("{base}/manage/retention/remove");
    let (status, _) = post_form(
        &bob,
        &remove,
        &[("csrf", &bob_csrf), ("scope", "alice/web")],
    )
    .await;
    assert_eq!(status, 403);
    let (status, location) =
        post_form(&alice, &remove, &[("csrf", &csrf), ("scope", "alice/web")]).await;
    assert_eq!((status, location.as_str()), (303, "/r/alice/web#retention"));
    let (_, html) = page(&alice, &format!("{base}/r/alice/web")).await;
    assert!(
        html.contains("Inherited from") && html.contains("alice/*"),
        "{html}"
    );
    assert!(
        html.contains("/manage/retention/preview?scope=alice/%2A"),
        "{html}"
    );
}
