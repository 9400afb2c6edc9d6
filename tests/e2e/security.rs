//! The registry's gate tried as an attacker would: every route spelled with encoded
//! letters, double encoding, dot segments and parameters, anonymously and with another
//! user's token; scopes with encoded names; private and missing repositories compared
//! byte for byte; the conformance flows with auth on; metrics under junk methods; and
//! the first user of an open registry turning authentication on.

use std::time::Duration;

use berth_tests::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::auth::{bearer, ALICE, BOB};

crate::on_both_databases!(
    users = &[ALICE, BOB];
    encoded_paths_are_authorized_as_what_they_do,
    scope_names_follow_the_request_grammar,
    private_and_missing_repositories_answer_alike,
    uploads_and_mounts_with_auth_on,
    realms_and_token_requests_resist_tampering,
);

const ALICE_CREDS: Option<(&str, &str)> = Some((ALICE.0, ALICE.1));
const BOB_CREDS: Option<(&str, &str)> = Some((BOB.0, BOB.1));

/// One HTTP/1.1 request written byte for byte (no client normalises the path):
/// status and body.
async fn raw(
    s: &Berthd,
    method: &str,
    target: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    let mut conn = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        s.addr,
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut answer))
        .await
        .expect("answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

fn run(s: &Berthd, args: &[&str]) {
    let out = berthd_command(&s.data_dir, s.database_url.as_deref(), args, None);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// alice/secret (private) and alice/pub (public), each with tag `v1`; returns the
/// manifest digest of alice/pub:v1 and the layer digest of alice/secret.
async fn alice_repositories(s: &Berthd) -> (String, String) {
    let c = s.client();
    let mut digests = Vec::new();
    for (repo, layer) in [
        ("alice/secret", &b"secret layer"[..]),
        ("alice/pub", b"public layer"),
    ] {
        let t = bearer(&c, ALICE_CREDS, &format!("repository:{repo}:pull,push")).await;
        let (_, digest) = c.with_token(&t).push_image(repo, "v1", layer).await;
        digests.push(digest);
    }
    run(s, &["repo", "private", "alice/secret"]);
    (digests[1].clone(), sha256(b"secret layer"))
}

/// What alice's repositories hold, as their owner sees them.
async fn alice_state(s: &Berthd) -> Vec<String> {
    let c = s.client();
    let t = bearer(
        &c,
        ALICE_CREDS,
        "repository:alice/secret:pull repository:alice/pub:pull registry:catalog:*",
    )
    .await;
    let c = c.with_token(&t);
    let mut state = Vec::new();
    for path in [
        "/v2/_catalog",
        "/v2/alice/secret/tags/list",
        "/v2/alice/pub/tags/list",
        "/v2/alice/pub/manifests/v1",
        "/v2/alice/secret/manifests/v1",
    ] {
        let r = c.call("GET", path).await;
        state.push(format!("{path} {} {}", r.status(), r.text().await.unwrap()));
    }
    state
}

async fn encoded_paths_are_authorized_as_what_they_do(s: Berthd) {
    let (pub_digest, secret_layer) = alice_repositories(&s).await;
    let before = alice_state(&s).await;
    let c = s.client();
    let bob = bearer(
        &c,
        BOB_CREDS,
        "repository:alice/secret:pull,push,delete repository:alice/pub:pull,push,delete repository:alice/x:pull,push registry:catalog:*",
    )
    .await;
    let manifest = image_manifest(&sha256(b"cfg"), 3, &[(&sha256(b"l"), 1)], None);
    let layer = b"intruder";
    let push_query = format!("?digest={}", sha256(layer));
    let secret = [
        ("GET", "/v2/alice/secret/%6Danifests/v1".to_owned()),
        ("GET", "/v2/alice/secret/%6danifests/v1".to_owned()),
        ("HEAD", "/v2/alice/secret/%6Danifests/v1".to_owned()),
        ("GET", "/v2/%61lice/secret/manifests/v1".to_owned()),
        ("GET", "/v2/alice%2Fsecret/manifests/v1".to_owned()),
        ("GET", "/%762/alice/secret/manifests/v1".to_owned()),
        ("GET", "/v2/alice/secret/tags/%6Cist".to_owned()),
        ("GET", format!("/v2/alice/secret/%62lobs/{secret_layer}")),
        (
            "GET",
            format!("/v2/alice/secret/%72eferrers/{}", sha256(b"x")),
        ),
    ];
    let writes = [
        (
            "PUT",
            "/v2/alice/pub/%6Danifests/v1".to_owned(),
            manifest.clone(),
        ),
        (
            "PUT",
            "/v2/%61lice/pub/manifests/v1".to_owned(),
            manifest.clone(),
        ),
        (
            "POST",
            format!("/v2/alice/x/%62lobs/uploads/{push_query}"),
            layer.to_vec(),
        ),
        (
            "POST",
            format!("/v2/alice/x/blobs/%75ploads/{push_query}"),
            layer.to_vec(),
        ),
        (
            "DELETE",
            format!("/v2/alice/pub/%6Danifests/{pub_digest}"),
            Vec::new(),
        ),
        (
            "DELETE",
            "/v2/alice/pub/manifests/%76%31".to_owned(),
            Vec::new(),
        ),
    ];
    for (who, token) in [("anonymous", None), ("bob", Some(bob.as_str()))] {
        for (method, path) in &secret {
            let (status, body) = raw(&s, method, path, token, b"").await;
            let expected = if token.is_some() { 403 } else { 401 };
            assert_eq!(status, expected, "{who} {method} {path}: {body}");
        }
        for (method, path, body) in &writes {
            let (status, answer) = raw(&s, method, path, token, body).await;
            let expected = if token.is_some() { 403 } else { 401 };
            assert_eq!(status, expected, "{who} {method} {path}: {answer}");
        }
        // Spellings that are no request at all: never let through, whoever asks.
        for path in [
            "/v2/alice/secret/%256Danifests/v1",
            "/v2/bobby/../alice/secret/manifests/v1",
            "/v2/bobby/%2e%2e/alice/secret/manifests/v1",
            "/v2/alice/secret;v=1/manifests/v1",
            "/v2/alice//secret/manifests/v1",
            "/v2/alice/secret/manifests/v1/",
            "/v2/%ff/manifests/v1",
        ] {
            let (status, body) = raw(&s, "GET", path, token, b"").await;
            match token {
                None => assert_eq!(status, 401, "{path}: {body}"),
                Some(_) => {
                    assert!([400, 404].contains(&status), "{path}: {status} {body}");
                    let code =
                        serde_json::from_str::<Value>(&body).unwrap()["errors"][0]["code"].clone();
                    assert!(code.is_string(), "{path}: spec error body, got {body}");
                }
            }
        }
        // The catalog, however spelled, shows only what the caller may pull.
        let (status, body) = raw(&s, "GET", "/v2/%5Fcatalog", token, b"").await;
        match token {
            None => assert_eq!(status, 401),
            Some(_) => {
                assert_eq!(status, 200, "{body}");
                let listed: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(listed["repositories"], serde_json::json!(["alice/pub"]));
            }
        }
    }
    assert_eq!(alice_state(&s).await, before, "nothing changed");

    // The owner's encoded spelling is the same request as the plain one.
    let alice = bearer(&c, ALICE_CREDS, "repository:alice/secret:pull").await;
    let (status, body) = raw(
        &s,
        "GET",
        "/v2/%61lice/secret/%6Danifests/v1",
        Some(&alice),
        b"",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let plain = c
        .with_token(&alice)
        .call("GET", "/v2/alice/secret/manifests/v1")
        .await;
    assert_eq!(plain.text().await.unwrap(), body);
}

async fn scope_names_follow_the_request_grammar(s: Berthd) {
    alice_repositories(&s).await;
    let c = s.client();
    // `%2561lice` in the query is the scope name `%61lice`: no repository has it.
    for who in [None, BOB_CREDS] {
        let r = c
            .request(
                "GET",
                "/auth/token?service=berth&scope=repository:%2561lice/secret:pull",
            )
            .send()
            .await
            .unwrap();
        let r = match who {
            None => r,
            Some((u, p)) => c
                .request(
                    "GET",
                    "/auth/token?service=berth&scope=repository:%2561lice/secret:pull",
                )
                .basic_auth(u, Some(p))
                .send()
                .await
                .unwrap(),
        };
        assert_eq!(r.status(), 200);
        let token = r.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let claims = crate::auth::claims(&token);
        assert_eq!(claims["access"], serde_json::json!([]), "{who:?}");
        for path in [
            "/v2/%61lice/secret/manifests/v1",
            "/v2/%2561lice/secret/manifests/v1",
        ] {
            let (status, body) = raw(&s, "GET", path, Some(&token), b"").await;
            assert!(!(200..300).contains(&status), "{path}: {status} {body}");
        }
    }
}

/// An answer with the repository's name taken out, to compare two repositories.
async fn answer(s: &Berthd, method: &str, path: &str, token: Option<&str>, name: &str) -> String {
    let (status, body) = raw(s, method, path, token, b"").await;
    format!("{status} {}", body.replace(name, "<repo>"))
}

async fn private_and_missing_repositories_answer_alike(s: Berthd) {
    let (_, secret_layer) = alice_repositories(&s).await;
    let c = s.client();
    let paths = |repo: &str| {
        vec![
            ("GET", format!("/v2/{repo}/manifests/v1")),
            ("HEAD", format!("/v2/{repo}/manifests/v1")),
            ("GET", format!("/v2/{repo}/blobs/{secret_layer}")),
            ("HEAD", format!("/v2/{repo}/blobs/{secret_layer}")),
            ("GET", format!("/v2/{repo}/tags/list")),
            ("GET", format!("/v2/{repo}/referrers/{secret_layer}")),
            ("GET", format!("/v2/{repo}/blobs/uploads/abc")),
        ]
    };
    for who in [None, BOB_CREDS] {
        let mut answers = Vec::new();
        for repo in ["alice/secret", "alice/nothing"] {
            let scope = format!("repository:{repo}:pull");
            let r = c.request("GET", &format!("/auth/token?service=berth&scope={scope}"));
            let r = match who {
                None => r,
                Some((u, p)) => r.basic_auth(u, Some(p)),
            };
            let token: Value = r.send().await.unwrap().json().await.unwrap();
            let token = token["token"].as_str().unwrap().to_owned();
            let granted = crate::auth::claims(&token)["access"]
                .to_string()
                .replace(repo, "<repo>");
            let mut seen = vec![format!("granted {granted}")];
            for (method, path) in paths(repo) {
                seen.push(answer(&s, method, &path, None, repo).await);
                seen.push(answer(&s, method, &path, Some(&token), repo).await);
            }
            answers.push(seen);
        }
        assert_eq!(answers[0], answers[1], "{who:?}");
        // Docker Hub's answer: docker prints "pull access denied … may require 'docker login'".
        assert!(
            answers[0]
                .iter()
                .any(|a| a.starts_with("403 ") && a.contains("DENIED")),
            "{:?}",
            answers[0]
        );
    }
}

async fn uploads_and_mounts_with_auth_on(s: Berthd) {
    let c = s.client();
    // The conformance suite's chunked flow with one pull+push token: status reads too.
    let t = bearer(&c, ALICE_CREDS, "repository:alice/app:pull,push").await;
    let a = c.with_token(&t);
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let location = a.start_upload("alice/app").await;
    let location = a.append_chunk(&location, &data, 0..100_000).await;
    for method in ["GET", "HEAD"] {
        let r = a.call(method, &location).await;
        assert_eq!(r.status(), 204, "{method} upload status");
        assert_eq!(r.headers()["range"], "0-99999");
    }
    a.finish_upload(&location, &data, 100_000, &sha256(&data))
        .await;
    let blob = format!("/v2/alice/app/blobs/{}", sha256(&data));
    let r = a
        .request("GET", &blob)
        .header("Range", "bytes=500-0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416, "reversed range");
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes */{}", data.len())
    );

    // Mounts: the source is checked by the gate, and the challenge names it.
    let secret = bearer(&c, ALICE_CREDS, "repository:alice/secret:pull,push").await;
    c.with_token(&secret)
        .push_blob("alice/secret", b"mounted layer")
        .await;
    run(&s, &["repo", "private", "alice/secret"]);
    let digest = sha256(b"mounted layer");
    let mount = |to: &str| format!("/v2/{to}/blobs/uploads/?mount={digest}&from=alice/secret");
    let bob = bearer(&c, BOB_CREDS, "repository:bobby/app:pull,push").await;
    let r = c.with_token(&bob).call("POST", &mount("bobby/app")).await;
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(
        challenge.contains("scope=\"repository:bobby/app:pull,push repository:alice/secret:pull\""),
        "{challenge}"
    );
    let bob = bearer(
        &c,
        BOB_CREDS,
        "repository:bobby/app:pull,push repository:alice/secret:pull",
    )
    .await;
    let r = c.with_token(&bob).call("POST", &mount("bobby/app")).await;
    assert_eq!(r.status(), 403, "bob may not pull the source");
    let r = c
        .with_token(&bob)
        .call("HEAD", &format!("/v2/bobby/app/blobs/{digest}"))
        .await;
    assert_eq!(r.status(), 404, "nothing was mounted");
    let alice = bearer(
        &c,
        ALICE_CREDS,
        "repository:alice/other:pull,push repository:alice/secret:pull",
    )
    .await;
    let r = c
        .with_token(&alice)
        .call("POST", &mount("alice/other"))
        .await;
    assert_eq!(r.status(), 201, "the owner mounts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_labels_stay_bounded() {
    let s = Berthd::start(Db::Sqlite).await.unwrap();
    let c = s.client();
    // The series (lines) of /metrics after `round` requests with made-up methods.
    let junk = |round: usize| {
        let s = &s;
        async move {
            for i in 0..300 {
                let method = match i % 10 {
                    0 => format!("M{round}{}", "X".repeat(2000 + i)),
                    _ => format!("JUNK{round}X{i}"),
                };
                let (status, _) =
                    raw(s, &method, &format!("/v2/junk{i}/manifests/x"), None, b"").await;
                assert!(status >= 400, "{method}");
                raw(s, &method, &format!("/anything/{i}"), None, b"").await;
            }
            let text = s
                .client()
                .call("GET", "/metrics")
                .await
                .text()
                .await
                .unwrap();
            assert!(!text.contains("JUNK") && !text.contains("junk") && !text.contains("XXXX"));
            text.lines().filter(|l| !l.starts_with('#')).count()
        }
    };
    c.call("GET", "/v2/").await;
    c.call("GET", "/metrics").await;
    let first = junk(1).await;
    let second = junk(2).await;
    assert_eq!(first, second, "300 more made-up methods added series");
    let text = c.call("GET", "/metrics").await.text().await.unwrap();
    assert!(
        text.contains("method=\"other\""),
        "junk methods are counted as other"
    );
    assert!(text.len() < 64 * 1024, "{} bytes", text.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_user_turns_authentication_on_without_a_restart() {
    let s = Berthd::start(Db::Sqlite).await.unwrap();
    let c = s.client();
    assert_eq!(c.call("GET", "/v2/").await.status(), 200, "open");
    c.push_blob("anyone/app", b"open layer").await;
    add_users(&s.data_dir, None, &[], &[ALICE]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while c.call("GET", "/v2/").await.status() != 401 {
        assert!(
            std::time::Instant::now() < deadline,
            "auth still off: {}",
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = c
        .request(
            "POST",
            &format!("/v2/anyone/app/blobs/uploads/?digest={}", sha256(b"x")),
        )
        .body(&b"x"[..])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "anonymous pushes are refused now");
    let r = c
        .call(
            "GET",
            &format!("/v2/anyone/app/blobs/{}", sha256(b"open layer")),
        )
        .await;
    assert_eq!(r.status(), 401);
    // alice logs in and pushes to her namespace.
    let t = bearer(&c, ALICE_CREDS, "repository:alice/app:pull,push").await;
    c.with_token(&t).push_blob("alice/app", b"hers").await;
    assert!(s.log().contains("token authentication is now on"));
}

/// The `WWW-Authenticate` header of a raw request with extra header lines.
async fn challenge_with(s: &Berthd, headers: &str) -> String {
    let mut conn = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
    let head =
        format!("GET /v2/alice/secret/manifests/v1 HTTP/1.1\r\n{headers}Connection: close\r\n\r\n");
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("www-authenticate: "))
        .unwrap_or_else(|| panic!("no challenge in {text}"))
        .to_owned()
}

async fn realms_and_token_requests_resist_tampering(s: Berthd) {
    // The realm is where docker sends credentials: never from forwarded headers, and
    // never a Host that could end the quoted parameter.
    let plain = challenge_with(&s, &format!("Host: {}\r\n", s.addr)).await;
    assert!(
        plain.starts_with(&format!("Bearer realm=\"http://{}/auth/token\"", s.addr)),
        "{plain}"
    );
    let forwarded = challenge_with(
        &s,
        &format!(
            "Host: {}\r\nX-Forwarded-Host: evil.example\r\nForwarded: host=evil.example\r\n",
            s.addr
        ),
    )
    .await;
    assert!(!forwarded.contains("evil"), "{forwarded}");
    let injected = challenge_with(&s, "Host: a\"b,realm=\"http://evil.example\r\n").await;
    assert!(
        !injected.contains("evil") && injected.matches("realm=").count() == 1,
        "{injected}"
    );

    // A token request names a bounded number of scopes.
    let c = s.client();
    let many: Vec<String> = (0..65)
        .map(|i| format!("scope=repository:x/r{i}:pull"))
        .collect();
    let r = c
        .call(
            "GET",
            &format!("/auth/token?service=berth&{}", many.join("&")),
        )
        .await;
    assert_eq!(r.status(), 400);
    // A lowercase `basic` scheme is still Basic: wrong credentials are refused, not
    // quietly taken for an anonymous request.
    let r = c
        .request(
            "GET",
            "/auth/token?service=berth&scope=repository:alice/pub:pull",
        )
        .header(
            "Authorization",
            format!("basic {}", base64_of("alice:wrong-password")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Someone else's wrong passwords for alice (from another address) do not lock out
    // her access tokens.
    let pat = crate::auth::create_token(&s, "alice", "ci", "read");
    let attacker = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    for _ in 0..6 {
        let r = attacker
            .get(format!("{}/auth/token?service=berth", s.url))
            .basic_auth("alice", Some("not her password"))
            .send()
            .await
            .unwrap();
        assert!([401, 429].contains(&r.status().as_u16()));
    }
    let r = c
        .request("GET", "/auth/token?service=berth")
        .basic_auth("alice", Some("alice-secret-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429, "her password is rate-limited");
    let r = c
        .request(
            "GET",
            "/auth/token?service=berth&scope=repository:alice/pub:pull",
        )
        .basic_auth("alice", Some(&pat))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "her token still works");
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}
