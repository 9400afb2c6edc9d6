//! Accounts and Docker token authentication against a real berthd: the challenge, the
//! token endpoint, namespace rules, forged tokens, rate limiting, the user commands,
//! and real `docker login` / `skopeo --creds`.

use std::process::Command;

use base64::Engine;
use berth_tests::containers::docker_with_config;
use berth_tests::*;
use serde_json::Value;

pub(crate) const ALICE: (&str, &str, bool) = ("alice", "alice-secret-pw", false);
pub(crate) const BOB: (&str, &str, bool) = ("bobby", "bobby-secret-pw", false);

crate::on_both_databases!(
    users = &[ALICE, BOB];
    token_flow_and_namespace_rules,
    forged_tokens_and_login_limits,
    user_commands,
    private_repositories,
    personal_access_tokens,
    organizations,
);

async fn token(c: &Client, user: Option<(&str, &str)>, scope: &str) -> reqwest::Response {
    let mut r = c.request("GET", &format!("/auth/token?service=berth&scope={scope}"));
    if let Some((u, p)) = user {
        r = r.basic_auth(u, Some(p));
    }
    r.send().await.unwrap()
}

pub(crate) fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

pub(crate) async fn bearer(c: &Client, user: Option<(&str, &str)>, scope: &str) -> String {
    let r = token(c, user, scope).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token"], body["access_token"]);
    assert!(body["expires_in"].as_i64().unwrap() > 0);
    assert!(body["issued_at"].is_string());
    body["token"].as_str().unwrap().to_owned()
}

/// A registry client with a token for `repo` (pull, push, delete) as `user`.
pub(crate) async fn pusher(s: &Berthd, user: (&str, &str, bool), repo: &str) -> Client {
    let c = s.client();
    let token = bearer(
        &c,
        Some((user.0, user.1)),
        &format!("repository:{repo}:pull,push,delete"),
    )
    .await;
    c.with_token(&token)
}

async fn push_blob_with(c: &Client, token: &str, repo: &str, data: &[u8]) -> reqwest::Response {
    c.request(
        "POST",
        &format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(data)),
    )
    .bearer_auth(token)
    .body(data.to_vec())
    .send()
    .await
    .unwrap()
}

async fn token_flow_and_namespace_rules(s: Berthd) {
    let c = s.client();
    // Every registry route challenges a request without a token.
    let r = c.call("GET", "/v2/").await;
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert_eq!(
        challenge,
        format!("Bearer realm=\"{}/auth/token\",service=\"berth\"", s.url)
    );
    assert_eq!(error_code(r).await, "UNAUTHORIZED");
    let r = c.call("GET", "/v2/alice/app/tags/list").await;
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("scope=\"repository:alice/app:pull\""));

    // The token grants the intersection of what was asked and what is allowed.
    let scope = "repository:alice/app:pull,push";
    let alice = bearer(&c, Some((ALICE.0, ALICE.1)), scope).await;
    let cl = claims(&alice);
    assert_eq!(cl["sub"], "alice");
    assert_eq!(cl["aud"], "berth");
    assert_eq!(cl["iss"], "berth");
    for claim in ["exp", "nbf", "iat", "jti"] {
        assert!(!cl[claim].is_null(), "{claim}");
    }
    assert_eq!(
        cl["access"][0]["actions"],
        serde_json::json!(["pull", "push"])
    );
    // Before it exists, alice/app is nobody else's to pull: it is answered as a
    // private repository would be (an entry without actions).
    let early = bearer(&c, Some((BOB.0, BOB.1)), scope).await;
    assert_eq!(
        claims(&early)["access"],
        serde_json::json!([{"type": "repository", "name": "alice/app", "actions": []}])
    );

    // alice pushes to alice/*; bob is denied there; anonymous pulls.
    assert_eq!(
        push_blob_with(&c, &alice, "alice/app", b"layer")
            .await
            .status(),
        201
    );
    let bob = bearer(&c, Some((BOB.0, BOB.1)), scope).await;
    assert_eq!(
        claims(&bob)["access"][0]["actions"],
        serde_json::json!(["pull"])
    );
    let anonymous = bearer(&c, None, scope).await;
    assert_eq!(claims(&anonymous)["sub"], "");
    assert_eq!(
        claims(&anonymous)["access"][0]["actions"],
        serde_json::json!(["pull"])
    );
    let r = push_blob_with(&c, &bob, "alice/app", b"layer").await;
    assert_eq!(r.status(), 403);
    assert_eq!(error_code(r).await, "DENIED");
    let r = push_blob_with(&c, &anonymous, "alice/app", b"layer").await;
    assert_eq!(r.status(), 403);
    let r = c
        .request("GET", &format!("/v2/alice/app/blobs/{}", sha256(b"layer")))
        .bearer_auth(&anonymous)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), &b"layer"[..]);
    // A token for one repository does not open another: ask for a wider token.
    let r = c
        .request("GET", "/v2/bobby/app/tags/list")
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("error=\"insufficient_scope\""));
    // POST grant, as `docker login` with identity tokens uses.
    let r = c
        .request("POST", "/auth/token")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=password&username={}&password={}&service=berth&scope=repository%3Aalice%2Fapp%3Apull%2Cpush",
            ALICE.0, ALICE.1
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["access"][0]["actions"],
        serde_json::json!(["pull", "push"])
    );
    // The password never reaches the log.
    assert!(!s.log().contains(ALICE.1));
}

async fn forged_tokens_and_login_limits(s: Berthd) {
    let c = s.client();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let real = bearer(&c, Some((BOB.0, BOB.1)), "repository:bobby/app:pull,push").await;
    let parts: Vec<&str> = real.split('.').collect();
    // Same signature, payload widened to alice's namespace.
    let mut cl = claims(&real);
    cl["access"][0]["name"] = "alice/app".into();
    let tampered = format!("{}.{}.{}", parts[0], b64.encode(cl.to_string()), parts[2]);
    let none = format!(
        "{}.{}.",
        b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(cl.to_string())
    );
    let hs = format!(
        "{}.{}.{}",
        b64.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
        b64.encode(cl.to_string()),
        parts[2]
    );
    for forged in [tampered, none, hs, "garbage".to_string()] {
        let r = push_blob_with(&c, &forged, "alice/app", b"x").await;
        assert_eq!(r.status(), 401, "{forged}");
        assert!(r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("error=\"invalid_token\""));
    }
    assert_eq!(
        push_blob_with(&c, &real, "bobby/app", b"x").await.status(),
        201
    );
    // Wrong password and unknown user: the same answer.
    let r = token(
        &c,
        Some((BOB.0, "wrong-password")),
        "repository:bobby/app:pull",
    )
    .await;
    assert_eq!(r.status(), 401);
    let wrong = r.text().await.unwrap();
    let r = token(
        &c,
        Some(("nosuchuser", "wrong-password")),
        "repository:bobby/app:pull",
    )
    .await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.text().await.unwrap(), wrong, "no user enumeration");
    // Repeated failures are rate limited, even with the right password afterwards.
    for _ in 0..5 {
        token(
            &c,
            Some((BOB.0, "wrong-password")),
            "repository:bobby/app:pull",
        )
        .await;
    }
    let r = token(&c, Some((BOB.0, BOB.1)), "repository:bobby/app:pull").await;
    assert_eq!(r.status(), 429);
    assert!(
        r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    assert_eq!(error_code(r).await, "TOOMANYREQUESTS");
}

async fn user_commands(s: Berthd) {
    let db = s.database_url.as_deref();
    let run = |args: &[&str], stdin: Option<&str>| berthd_command(&s.data_dir, db, args, stdin);
    let out = run(&["user", "list"], None);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "alice\nbobby\n");
    // While the server runs: add, change password, remove.
    assert!(run(
        &["user", "add", "carol1", "--admin", "--password-stdin"],
        Some("carol-password")
    )
    .status
    .success());
    let c = s.client();
    let t = bearer(
        &c,
        Some(("carol1", "carol-password")),
        "repository:alice/app:push",
    )
    .await;
    assert_eq!(
        claims(&t)["access"][0]["actions"],
        serde_json::json!(["push"]),
        "admins push anywhere"
    );
    assert!(run(
        &["user", "passwd", "carol1", "--password-stdin"],
        Some("new-password")
    )
    .status
    .success());
    assert_eq!(
        token(
            &c,
            Some(("carol1", "carol-password")),
            "repository:x/y:pull"
        )
        .await
        .status(),
        401
    );
    assert_eq!(
        token(&c, Some(("carol1", "new-password")), "repository:x/y:pull")
            .await
            .status(),
        200
    );
    assert!(run(&["user", "rm", "carol1"], None).status.success());
    assert_eq!(
        token(&c, Some(("carol1", "new-password")), "repository:x/y:pull")
            .await
            .status(),
        401
    );
    // Clear refusals.
    let out = run(
        &["user", "add", "Bad_Name", "--password-stdin"],
        Some("whatever-password"),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid username"));
    let out = run(
        &["user", "add", "alice", "--password-stdin"],
        Some("whatever-password"),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    let out = run(
        &["user", "add", "shorty", "--password-stdin"],
        Some("short"),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 8"));
    let out = run(&["user", "rm", "nobody1"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such user"));
    // The stored hash is argon2id, never the password.
    assert!(!s.log().contains("whatever-password"));
}

/// The repositories `/v2/_catalog` lists for `who`.
async fn catalog(c: &Client, who: Option<(&str, &str)>) -> Value {
    let t = bearer(c, who, "registry:catalog:*").await;
    let body: Value = c
        .with_token(&t)
        .call("GET", "/v2/_catalog")
        .await
        .json()
        .await
        .unwrap();
    body["repositories"].clone()
}

async fn private_repositories(s: Berthd) {
    let c = s.client();
    let alice_creds = Some((ALICE.0, ALICE.1));
    let bob_creds = Some((BOB.0, BOB.1));
    for repo in ["alice/secret", "alice/open"] {
        let t = bearer(&c, alice_creds, &format!("repository:{repo}:pull,push")).await;
        c.with_token(&t)
            .push_image(repo, "v1", b"private layer")
            .await;
    }
    let run = |args: &[&str]| berthd_command(&s.data_dir, s.database_url.as_deref(), args, None);
    let out = run(&["repo", "private", "alice/secret"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "alice/secret is now private"
    );

    let scope = "repository:alice/secret:pull";
    for who in [None, bob_creds] {
        let t = bearer(&c, who, scope).await;
        assert_eq!(
            claims(&t)["access"],
            serde_json::json!([{"type": "repository", "name": "alice/secret", "actions": []}]),
            "no pull granted to {who:?}"
        );
        for path in [
            "/v2/alice/secret/manifests/v1",
            "/v2/alice/secret/tags/list",
        ] {
            let r = c.with_token(&t).call("GET", path).await;
            assert_eq!(r.status(), 403, "{path} for {who:?}");
            assert_eq!(error_code(r).await, "DENIED");
        }
    }
    let t = bearer(&c, alice_creds, scope).await;
    let r = c
        .with_token(&t)
        .call("GET", "/v2/alice/secret/manifests/v1")
        .await;
    assert_eq!(r.status(), 200, "the owner pulls");

    // The catalog shows each viewer only what they may pull.
    assert_eq!(catalog(&c, None).await, serde_json::json!(["alice/open"]));
    assert_eq!(
        catalog(&c, bob_creds).await,
        serde_json::json!(["alice/open"])
    );
    assert_eq!(
        catalog(&c, alice_creds).await,
        serde_json::json!(["alice/open", "alice/secret"])
    );

    assert!(run(&["repo", "public", "alice/secret"]).status.success());
    let t = bearer(&c, None, scope).await;
    let r = c
        .with_token(&t)
        .call("GET", "/v2/alice/secret/manifests/v1")
        .await;
    assert_eq!(r.status(), 200, "public again");
    let out = run(&["repo", "private", "alice/never-pushed"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not known"));
}

async fn organizations(s: Berthd) {
    let run = |args: &[&str], stdin: Option<&str>| {
        berthd_command(&s.data_dir, s.database_url.as_deref(), args, stdin)
    };
    assert!(run(
        &["user", "add", "carol1", "--password-stdin"],
        Some("carol-password")
    )
    .status
    .success());
    let out = run(&["org", "add", "acme", "--owner", "alice"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(run(
        &["org", "member", "add", "acme", "bobby", "--role", "write"],
        None
    )
    .status
    .success());
    assert!(run(
        &["org", "member", "add", "acme", "carol1", "--role", "read"],
        None
    )
    .status
    .success());
    // Names are shared between users and organizations; unknown members are refused.
    assert!(!run(&["org", "add", "alice", "--owner", "alice"], None)
        .status
        .success());
    assert!(!run(&["org", "member", "add", "acme", "nobody1"], None)
        .status
        .success());
    assert!(!run(
        &["org", "member", "add", "acme", "bobby", "--role", "owner"],
        None
    )
    .status
    .success());

    let c = s.client();
    let scope = "repository:acme/app:pull,push,delete";
    let actions = |who: (&'static str, &'static str)| {
        let c = c.clone();
        async move { claims(&bearer(&c, Some(who), scope).await)["access"][0]["actions"].clone() }
    };
    assert_eq!(
        actions((ALICE.0, ALICE.1)).await,
        serde_json::json!(["pull", "push", "delete"])
    );
    assert_eq!(
        actions((BOB.0, BOB.1)).await,
        serde_json::json!(["pull", "push"])
    );
    assert_eq!(
        actions(("carol1", "carol-password")).await,
        serde_json::json!(["pull"])
    );
    let t = bearer(&c, Some((BOB.0, BOB.1)), scope).await;
    assert_eq!(
        push_blob_with(&c, &t, "acme/app", b"team layer")
            .await
            .status(),
        201
    );
    // A private organization repository: members read it, others do not.
    c.with_token(&t)
        .push_image("acme/app", "v1", b"team layer")
        .await;
    assert!(run(&["repo", "private", "acme/app"], None).status.success());
    let pull = "repository:acme/app:pull";
    let carol = bearer(&c, Some(("carol1", "carol-password")), pull).await;
    let r = c
        .with_token(&carol)
        .call("GET", "/v2/acme/app/manifests/v1")
        .await;
    assert_eq!(r.status(), 200);
    let anonymous = bearer(&c, None, pull).await;
    let r = c
        .with_token(&anonymous)
        .call("GET", "/v2/acme/app/manifests/v1")
        .await;
    assert_eq!(r.status(), 403);
    // Members see the organization's private repository in the catalog; others do not.
    let listed = |body: Value| body.as_array().unwrap().iter().any(|r| r == "acme/app");
    assert!(listed(
        catalog(&c, Some(("carol1", "carol-password"))).await
    ));
    assert!(!listed(catalog(&c, None).await));
    assert!(
        listed(catalog(&c, Some((ALICE.0, ALICE.1))).await),
        "the owner (org admin) too"
    );
}

/// `berthd token create` for a user; returns the secret it prints.
pub(crate) fn create_token(s: &Berthd, user: &str, name: &str, scope: &str) -> String {
    let out = berthd_command(
        &s.data_dir,
        s.database_url.as_deref(),
        &["token", "create", user, "--name", name, "--scope", scope],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(secret.starts_with("berth_pat_"), "{secret}");
    secret
}

async fn personal_access_tokens(s: Berthd) {
    let c = s.client();
    let ci = create_token(&s, "alice", "ci", "read-write");
    let ro = create_token(&s, "alice", "readonly", "read");
    let scope = "repository:alice/pat:pull,push";
    // A token works as the password, capped by its scope.
    let t = bearer(&c, Some(("alice", &ci)), scope).await;
    assert_eq!(
        claims(&t)["access"][0]["actions"],
        serde_json::json!(["pull", "push"])
    );
    assert_eq!(
        push_blob_with(&c, &t, "alice/pat", b"pushed with a token")
            .await
            .status(),
        201
    );
    let t = bearer(&c, Some(("alice", &ro)), scope).await;
    assert_eq!(
        claims(&t)["access"][0]["actions"],
        serde_json::json!(["pull"])
    );
    // The catalog lists what she may pull, which a read token may ask for.
    let listed = catalog(&c, Some(("alice", &ro))).await;
    assert!(
        listed.as_array().unwrap().iter().any(|r| r == "alice/pat"),
        "{listed}"
    );
    assert_eq!(
        token(&c, Some(("bobby", &ci)), scope).await.status(),
        401,
        "only for its own user"
    );
    // Listed without secrets, with last use.
    let run = |args: &[&str]| berthd_command(&s.data_dir, s.database_url.as_deref(), args, None);
    let out = run(&["token", "list", "alice"]);
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!listing.contains(&ci) && !listing.contains("berth_pat_"));
    let ci_line = listing
        .lines()
        .find(|l| l.contains("\tci\t"))
        .expect("ci listed");
    assert!(ci_line.contains("read-write"));
    assert!(!ci_line.ends_with("never"), "last use recorded: {ci_line}");
    // Revoked: refused at the next token request.
    let id = ci_line.split('\t').next().unwrap();
    assert!(run(&["token", "revoke", "alice", id]).status.success());
    assert_eq!(token(&c, Some(("alice", &ci)), scope).await.status(), 401);
    let r = token(&c, Some(("alice", &ro)), scope).await;
    assert_eq!(r.status(), 200);
    // Never kept by a cache on the way (RFC 6749 5.1).
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert!(!s.log().contains(&ci));

    // An ordinary token request never creates a refresh token…
    let with_scope =
        format!("/auth/token?service=berth&offline_token=true&client_id=docker&scope={scope}");
    let r = c
        .request("GET", &with_scope)
        .basic_auth(ALICE.0, Some(ALICE.1))
        .send()
        .await
        .unwrap();
    assert!(r.json::<Value>().await.unwrap()["refresh_token"].is_null());
    // …a login (`docker login`: an offline token, no scope) gets a revocable one.
    let refresh = c.docker_login_token(ALICE.0, ALICE.1).await;
    // The sign-in prunes the user's login tokens (expired ones, beyond the cap) as well.
    assert!(!s.log().contains("cannot prune"), "{}", s.log());
    let exchange = |refresh: String| {
        let c = c.clone();
        async move {
            c.request("POST", "/auth/token")
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(format!(
                    "grant_type=refresh_token&refresh_token={refresh}&service=berth&client_id=docker&scope=repository%3Aalice%2Fpat%3Apull%2Cpush"
                ))
                .send()
                .await
                .unwrap()
        }
    };
    let r = exchange(refresh.clone()).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["access"][0]["actions"],
        serde_json::json!(["pull", "push"])
    );
    let out = run(&["token", "list", "alice"]);
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let login_line = listing
        .lines()
        .find(|l| l.contains("\tdocker login\t"))
        .expect("listed");
    assert!(run(&[
        "token",
        "revoke",
        "alice",
        login_line.split('\t').next().unwrap()
    ])
    .status
    .success());
    assert_eq!(exchange(refresh).await.status(), 401, "revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_signing_key_is_used() {
    // One key file given to two servers with separate databases: tokens from either
    // verify on both. A server with its own key (kept in its database) refuses them.
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("signing-key.p8");
    let made = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "ed25519",
            "-outform",
            "DER",
            "-out",
        ])
        .arg(&key)
        .status()
        .unwrap();
    assert!(made.success(), "openssl genpkey");
    let key_env = [("BERTH_AUTH_SIGNING_KEY", key.to_str().unwrap())];
    let first = Berthd::start_configured(Db::Sqlite, &[ALICE], &key_env)
        .await
        .unwrap();
    let second = Berthd::start_configured(Db::Sqlite, &[ALICE], &key_env)
        .await
        .unwrap();
    let own_key = Berthd::start_with_users(Db::Sqlite, &[ALICE])
        .await
        .unwrap();
    let t = bearer(
        &first.client(),
        Some((ALICE.0, ALICE.1)),
        "repository:alice/app:push",
    )
    .await;
    let r = push_blob_with(&second.client(), &t, "alice/app", b"signed elsewhere").await;
    assert_eq!(r.status(), 201);
    let r = push_blob_with(&own_key.client(), &t, "alice/app", b"signed elsewhere").await;
    assert_eq!(r.status(), 401, "another key does not verify");
    // A configured key that cannot be read stops the server with a clear message.
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(workspace_bin("berthd"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path())
        .env("BERTH_AUTH_ENABLED", "true")
        .env("BERTH_AUTH_SIGNING_KEY", "/nonexistent/key.p8")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/key.p8"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signup_only_when_switched_on() {
    let signup = |s: &Berthd, user: &str, password: &str| {
        let c = s.client();
        let body = format!("username={user}&password={password}");
        async move {
            c.request("POST", "/auth/signup")
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    let off = Berthd::start_with_users(Db::Sqlite, &[ALICE])
        .await
        .unwrap();
    let r = signup(&off, "newbie", "newbie-password").await;
    assert_eq!(r.status(), 403, "off by default");
    assert_eq!(error_code(r).await, "DENIED");
    let on = Berthd::start_configured(Db::Sqlite, &[ALICE], &[("BERTH_AUTH_SIGNUP", "true")])
        .await
        .unwrap();
    assert_eq!(signup(&on, "newbie", "newbie-password").await.status(), 201);
    let t = bearer(
        &on.client(),
        Some(("newbie", "newbie-password")),
        "repository:newbie/app:push",
    )
    .await;
    assert_eq!(
        claims(&t)["access"][0]["actions"],
        serde_json::json!(["push"])
    );
    for (user, password) in [
        ("newbie", "another-password"),
        ("Bad_Name", "long-enough-pw"),
        ("shorty", "short"),
    ] {
        let r = signup(&on, user, password).await;
        assert_eq!(r.status(), 400, "{user}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_login_push_and_pull_by_namespace() {
    if !require_tool("docker") {
        return;
    }
    let s = Berthd::start_with_users(Db::Sqlite, &[ALICE, BOB])
        .await
        .unwrap();
    let cfg = tempfile::tempdir().unwrap();
    let docker = |args: &[&str], stdin: Option<&str>| docker_with_config(cfg.path(), args, stdin);
    let ctx = tempfile::tempdir().unwrap();
    std::fs::copy("/bin/busybox", ctx.path().join("busybox")).unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM scratch\nCOPY busybox /bin/busybox\nCMD [\"/bin/busybox\", \"echo\", \"hi from alice\"]\n").unwrap();
    let mine = format!("{}/alice/hello:1", s.addr);
    let theirs = format!("{}/bobby/hello:1", s.addr);
    let out = docker(
        &["build", "-q", "-t", &mine, ctx.path().to_str().unwrap()],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(docker(&["tag", &mine, &theirs], None).status.success());

    let out = docker(
        &["login", &s.addr, "-u", ALICE.0, "--password-stdin"],
        Some(ALICE.1),
    );
    assert!(
        out.status.success(),
        "docker login: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Login Succeeded"));
    let out = docker(&["push", &mine], None);
    assert!(
        out.status.success(),
        "push to own namespace: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = docker(&["push", &theirs], None);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = docker(
        &["login", &s.addr, "-u", ALICE.0, "--password-stdin"],
        Some("wrong-password"),
    );
    assert!(!out.status.success());
    assert!(docker(&["logout", &s.addr], None).status.success());

    // Anonymous pull of the public repository.
    assert!(docker(&["rmi", "-f", &mine, &theirs], None)
        .status
        .success());
    let out = docker(&["pull", &mine], None);
    assert!(
        out.status.success(),
        "anonymous pull: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = docker(&["run", "--rm", &mine], None);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hi from alice");
    docker(&["rmi", "-f", &mine], None);
    assert!(
        !s.log().contains(ALICE.1),
        "the password never reaches the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_with_credentials() {
    if !require_tool("skopeo") || !require_tool("umoci") {
        return;
    }
    let s = Berthd::start_with_users(Db::Sqlite, &[ALICE, BOB])
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().display();
    let sh = |script: &str| {
        let out = Command::new("sh").arg("-ec").arg(script).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = sh(&format!(
        "cd {d} && umoci init --layout img && umoci new --image img:t"
    ));
    assert!(ok, "{err}");
    let copy = |creds: &str, repo: &str| {
        sh(&format!(
            "skopeo copy --dest-tls-verify=false --dest-creds {creds} oci:{d}/img:t docker://{}/{repo}:1",
            s.addr
        ))
    };
    let (ok, err) = copy(&format!("{}:{}", ALICE.0, ALICE.1), "alice/skopeo");
    assert!(ok, "{err}");
    let (ok, err) = copy(&format!("{}:{}", BOB.0, BOB.1), "alice/skopeo");
    assert!(!ok);
    assert!(
        err.contains("denied") || err.contains("unauthorized"),
        "{err}"
    );
}
