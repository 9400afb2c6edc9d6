//! Immutable tags end to end: `berthd repo immutable` rules refuse `docker push` over a
//! protected tag with the rule's message, and registry deletes; the web UI's JSON API
//! and forms for rules are for the namespace's owners and admins only.

use std::process::Command;

use berth_tests::*;
use serde_json::{json, Value};

use crate::auth::{ALICE, BOB};
use crate::clients::{docker_available, docker_build_busybox, run};
use crate::web::{cookie_client, csrf_of, push_platform_image, sign_in};

const ROOT: (&str, &str, bool) = ("rooty", "rooty-secret-pw", true);

crate::on_both_databases!(registry_refuses_overwrites_and_deletes_of_protected_tags,);

mod with_users {
    use super::*;
    crate::on_both_databases!(
        users = &[ALICE, BOB, ROOT];
        rules_are_managed_by_owners_only,
        the_json_api_takes_personal_access_tokens,
    );
}

/// `berthd ARGS… --data-dir …` on the server's data: (success, stdout, stdout + stderr).
fn berthd(s: &Berthd, args: &[&str]) -> (bool, String, String) {
    let out = s.admin(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let all = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.success(), stdout, all)
}

fn immutable_message(tag: &str, pattern: &str, scope: &str) -> String {
    format!(
        "tag {tag} is immutable (rule \"{pattern}\" on {scope}): it can be neither overwritten nor deleted"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_push_to_an_immutable_tag_is_refused_with_the_rules_message() {
    if !docker_available() {
        return;
    }
    let s = Berthd::start(Db::Sqlite).await.unwrap();
    let (ok, _, out) = berthd(&s, &["repo", "immutable", "add", "test/*", "v*"]);
    assert!(ok, "{out}");
    let image = format!("{}/test/locked:v1", s.addr);
    let other = format!("{}/test/locked:latest", s.addr);
    let pid = std::process::id();
    docker_build_busybox(&image, &format!("first-{pid}"));
    // Untagged by the second build below: removed by id at the end.
    let first_id = run(Command::new("docker").args(["image", "inspect", "-f", "{{.Id}}", &image]));
    let first = run(Command::new("docker").args(["push", &image]));
    let first_digest = first
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .expect("docker push prints the digest")
        .to_owned();
    // The same image again: no overwrite, so accepted.
    run(Command::new("docker").args(["push", &image]));

    // Another image under the protected tag: refused, docker shows why.
    docker_build_busybox(&image, &format!("second-{pid}"));
    let out = Command::new("docker")
        .args(["push", &image])
        .output()
        .unwrap();
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "the overwrite was accepted: {shown}");
    assert!(
        shown.contains(&format!(
            "denied: {}",
            immutable_message("v1", "v*", "test/*")
        )),
        "{shown}"
    );
    let c = s.client();
    let r = c.call("HEAD", "/v2/test/locked/manifests/v1").await;
    assert_eq!(
        r.headers()["Docker-Content-Digest"].to_str().unwrap(),
        first_digest,
        "v1 still names the first image"
    );
    // The refused image under an unprotected tag goes in.
    run(Command::new("docker").args(["tag", &image, &other]));
    run(Command::new("docker").args(["push", &other]));
    run(Command::new("docker").args(["rmi", "-f", &image, &other, first_id.trim()]));
}

async fn registry_refuses_overwrites_and_deletes_of_protected_tags(s: Berthd) {
    let c = s.client();
    let (one, one_digest) = c.push_image("acme/app", "1.0", b"one").await;
    let (two, _) = c.push_image("acme/app", "latest", b"two").await;

    // The commands: add (checked), list (tab-separated, with a header), rm.
    let (ok, _, out) = berthd(&s, &["repo", "immutable", "add", "acme/*", "1.*"]);
    assert!(
        ok && out.contains("rule 1: tags matching \"1.*\" in acme/*"),
        "{out}"
    );
    let (ok, _, out) = berthd(&s, &["repo", "immutable", "add", "acme/app", "rc?"]);
    assert!(ok, "{out}");
    for (scope, pattern, why) in [
        ("acme/*", "v/1", "contains '/'"),
        ("acme/*", "", "is empty"),
        ("acme/*", "..", "can never match"),
        ("ACME/*", "v*", "scope \"ACME/*\""),
        ("acme/team/*", "v*", "scope \"acme/team/*\""),
    ] {
        let (ok, _, out) = berthd(&s, &["repo", "immutable", "add", scope, pattern]);
        assert!(!ok && out.contains(why), "{scope} {pattern}: {out}");
    }
    let (ok, out, _) = berthd(&s, &["repo", "immutable", "list"]);
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "ID\tSCOPE\tPATTERN\tCREATED");
    assert!(lines[1].starts_with("1\tacme/*\t1.*\t"), "{out}");
    assert!(lines[2].starts_with("2\tacme/app\trc?\t"), "{out}");
    assert_eq!(lines.len(), 3, "{out}");
    let (_, out, _) = berthd(&s, &["repo", "immutable", "list", "acme/other"]);
    assert_eq!(out.lines().count(), 2, "only the namespace's rule: {out}");

    // Over /v2: overwrite and delete refused with 403 DENIED naming the rule.
    let denied = |r: reqwest::Response, tag: &'static str| async move {
        assert_eq!(r.status(), 403);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "DENIED");
        assert_eq!(
            body["errors"][0]["message"],
            immutable_message(tag, "1.*", "acme/*")
        );
    };
    denied(
        c.push_manifest("acme/app", "1.0", OCI_MANIFEST, &two).await,
        "1.0",
    )
    .await;
    denied(c.call("DELETE", "/v2/acme/app/manifests/1.0").await, "1.0").await;
    denied(
        c.call("DELETE", &format!("/v2/acme/app/manifests/{one_digest}"))
            .await,
        "1.0",
    )
    .await;
    let r = c.push_manifest("acme/app", "1.0", OCI_MANIFEST, &one).await;
    assert_eq!(r.status(), 201, "the same manifest again");
    let r = c.call("GET", "/v2/acme/app/manifests/1.0").await;
    assert_eq!(r.headers()["Docker-Content-Digest"], one_digest.as_str());
    // Other tags are untouched: overwritten, deleted.
    let r = c
        .push_manifest("acme/app", "latest", OCI_MANIFEST, &one)
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        c.call("DELETE", "/v2/acme/app/manifests/latest")
            .await
            .status(),
        202
    );

    // Removing the rule frees the tag.
    let (ok, _, out) = berthd(&s, &["repo", "immutable", "rm", "1"]);
    assert!(ok && out.contains("removed rule 1"), "{out}");
    let (ok, _, out) = berthd(&s, &["repo", "immutable", "rm", "1"]);
    assert!(!ok && out.contains("no immutable tag rule 1"), "{out}");
    let r = c.push_manifest("acme/app", "1.0", OCI_MANIFEST, &two).await;
    assert_eq!(r.status(), 201);
}

const RULES: &str = "/api/v1/immutable-tag-rules";

async fn page_of(http: &reqwest::Client, url: &str) -> String {
    let r = http.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    r.text().await.unwrap()
}

/// Text as the templates escape it (`"` and `/` too), back to plain.
fn unescape(html: &str) -> String {
    html.replace("&#x2f;", "/").replace("&quot;", "\"")
}

async fn rules_are_managed_by_owners_only(s: Berthd) {
    let base = &s.url;
    let c = s.client();
    push_platform_image(&c, ALICE, "alice/app", "v1", "amd64", "RUN a").await;
    push_platform_image(&c, ALICE, "alice/app", "latest", "amd64", "RUN b").await;
    push_platform_image(&c, ALICE, "alice/secret", "v1", "amd64", "RUN c").await;
    assert!(berthd(&s, &["repo", "private", "alice/secret"]).0);
    let (ok, _, out) = berthd(&s, &["org", "add", "acmeco", "--owner", "alice"]);
    assert!(ok, "{out}");
    let (ok, _, out) = berthd(
        &s,
        &["org", "member", "add", "acmeco", "bobby", "--role", "write"],
    );
    assert!(ok, "{out}");

    let anonymous = cookie_client();
    let alice = sign_in(base, ALICE).await;
    let bob = sign_in(base, BOB).await;
    let root = sign_in(base, ROOT).await;
    let list = |http: &reqwest::Client, scope: &str| {
        // Scopes are [a-z0-9._-/*]: nothing to encode.
        let r = http.get(format!("{base}{RULES}?scope={scope}"));
        async move {
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let add = |http: &reqwest::Client, csrf: &str, scope: &str, pattern: &str| {
        let r = http
            .post(format!("{base}{RULES}"))
            .header("X-CSRF-Token", csrf)
            .json(&json!({"scope": scope, "pattern": pattern}));
        async move {
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let remove = |http: &reqwest::Client, csrf: &str, id: &Value| {
        let r = http
            .delete(format!("{base}{RULES}/{id}"))
            .header("X-CSRF-Token", csrf);
        async move { r.send().await.unwrap().status().as_u16() }
    };

    // The owner: lists with the token for writes, adds, sees it listed.
    let (status, listed) = list(&alice, "alice/app").await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["rules"], json!([]));
    let alice_csrf = listed["csrf"].as_str().unwrap().to_owned();
    let (status, rule) = add(&alice, &alice_csrf, "alice/app", "v*").await;
    assert_eq!(status, 201, "{rule}");
    assert_eq!(
        (&rule["scope"], &rule["pattern"]),
        (&json!("alice/app"), &json!("v*"))
    );
    let (status, ns_rule) = add(&alice, &alice_csrf, "alice/*", "release-*").await;
    assert_eq!(status, 201, "{ns_rule}");
    let (_, listed) = list(&alice, "alice/app").await;
    assert_eq!(listed["rules"], json!([rule, ns_rule]));
    let (status, body) = add(&alice, &alice_csrf, "alice/app", "a/b").await;
    assert_eq!(status, 400);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("contains '/'"),
        "{body}"
    );
    // Writes need the session's token in the header.
    let (status, _) = add(&alice, "", "alice/app", "x*").await;
    assert_eq!(status, 403);
    let (status, _) = add(&alice, "forged", "alice/app", "x*").await;
    assert_eq!(status, 403);
    assert_eq!(remove(&alice, "forged", &rule["id"]).await, 403);

    // Anonymous: sign in first (and no token to write with).
    let (status, _) = list(&anonymous, "alice/app").await;
    assert_eq!(status, 401);
    let (status, _) = list(&anonymous, "alice/*").await;
    assert_eq!(status, 401);
    let (status, _) = add(&anonymous, "", "alice/app", "x*").await;
    assert_eq!(status, 403);
    assert_eq!(remove(&anonymous, "", &rule["id"]).await, 403);

    // Another user: refused; a private repository does not exist for them.
    let page = page_of(&bob, &format!("{base}/r/alice/app")).await;
    assert!(!page.contains("immutable-tags"), "no rule forms for others");
    let bob_csrf = csrf_of(&page);
    assert_eq!(list(&bob, "alice/app").await.0, 403);
    assert_eq!(list(&bob, "alice/*").await.0, 403);
    assert_eq!(list(&bob, "alice/secret").await.0, 404);
    assert_eq!(add(&bob, &bob_csrf, "alice/app", "x*").await.0, 403);
    assert_eq!(add(&bob, &bob_csrf, "alice/*", "x*").await.0, 403);
    assert_eq!(add(&bob, &bob_csrf, "alice/secret", "x*").await.0, 404);
    // A rule by id someone may not manage is as missing as one that is: its scope
    // may name a private repository.
    assert_eq!(remove(&bob, &bob_csrf, &rule["id"]).await, 404);
    assert_eq!(remove(&bob, &bob_csrf, &json!(9999)).await, 404);
    // Their own namespace is theirs; an organization's is its admins' (bob writes only).
    assert_eq!(add(&bob, &bob_csrf, "bobby/*", "v*").await.0, 201);
    assert_eq!(add(&bob, &bob_csrf, "acmeco/*", "v*").await.0, 403);
    assert_eq!(add(&alice, &alice_csrf, "acmeco/*", "v*").await.0, 201);

    // A registry admin manages everyone's rules.
    let (status, listed) = list(&root, "alice/*").await;
    assert_eq!(status, 200);
    assert_eq!(listed["rules"], json!([rule, ns_rule]));
    let root_csrf = listed["csrf"].as_str().unwrap().to_owned();
    assert_eq!(remove(&root, &root_csrf, &ns_rule["id"]).await, 204);
    assert_eq!(remove(&root, &root_csrf, &ns_rule["id"]).await, 404);

    // The rule holds, for pushes and for the page's delete form.
    let token = crate::auth::bearer(
        &c,
        Some((ALICE.0, ALICE.1)),
        "repository:alice/app:pull,push,delete",
    )
    .await;
    let pusher = c.with_token(&token);
    let (other, _) = pusher.push_image("alice/app", "scratch", b"other").await;
    let r = pusher
        .push_manifest("alice/app", "v1", OCI_MANIFEST, &other)
        .await;
    assert_eq!(r.status(), 403);
    let page = page_of(&alice, &format!("{base}/r/alice/app?tab=tags")).await;
    let page = unescape(&page);
    assert!(
        page.contains("Immutable tags") && page.contains("<code>v*</code>"),
        "{page}"
    );
    assert!(page.contains(">immutable</span>"), "v1 is marked");
    let form = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
    };
    let r = alice
        .post(format!("{base}/manage/delete-tag"))
        .form(&form(&[
            ("csrf", &alice_csrf),
            ("repository", "alice/app"),
            ("tag", "v1"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let shown = unescape(&r.text().await.unwrap());
    assert!(
        shown.contains(&immutable_message("v1", "v*", "alice/app")),
        "{shown}"
    );
    // In the audit log, as the registry API's refusals are.
    let (ok, out, all) = berthd(&s, &["audit", "--action", "tag_deleted", "--json"]);
    assert!(ok, "{all}");
    let entries: serde_json::Value = serde_json::from_str(&out).unwrap();
    let refused = entries
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["target"] == "alice/app:v1")
        .unwrap_or_else(|| panic!("the refusal in {entries:#}"));
    assert_eq!(refused["actor"], "alice", "{refused}");
    assert_eq!(refused["outcome"], "denied", "{refused}");
    let detail = refused["detail"].as_str().unwrap();
    assert!(detail.contains("immutable"), "{detail}");

    // The page's forms: add for the namespace, remove; others refused.
    let add_form = |csrf: &str, scope: &str| {
        form(&[
            ("csrf", csrf),
            ("repository", "alice/app"),
            ("scope", scope),
            ("pattern", "stable"),
        ])
    };
    let url = format!("{base}/manage/immutable-tags");
    let r = bob
        .post(&url)
        .form(&add_form(&bob_csrf, "alice/*"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = alice
        .post(&url)
        .form(&add_form(&alice_csrf, "other/*"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "only the repository or its namespace");
    let r = alice
        .post(&url)
        .form(&add_form(&alice_csrf, "alice/*"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let (_, listed) = list(&alice, "alice/app").await;
    let added = listed["rules"][1].clone();
    assert_eq!(
        (&added["scope"], &added["pattern"]),
        (&json!("alice/*"), &json!("stable"))
    );
    let remove_url = format!("{base}/manage/immutable-tags/remove");
    let id = added["id"].to_string();
    let remove_form =
        |csrf: &str| form(&[("csrf", csrf), ("repository", "alice/app"), ("id", &id)]);
    let r = bob
        .post(&remove_url)
        .form(&remove_form(&bob_csrf))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        404,
        "a rule bob may not manage is not there for him"
    );
    let r = alice
        .post(&remove_url)
        .form(&remove_form("forged"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = alice
        .post(&remove_url)
        .form(&remove_form(&alice_csrf))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let (_, listed) = list(&alice, "alice/app").await;
    assert_eq!(listed["rules"], json!([rule]));
}

/// The JSON API with `Authorization: Bearer <personal access token>` instead of the
/// session cookie: reads see what the token's user sees, writes need no CSRF token but
/// are limited by the token's scope, a bad token is a 401 in the JSON error format, and
/// pages ignore the header.
async fn the_json_api_takes_personal_access_tokens(s: Berthd) {
    let base = &s.url;
    let c = s.client();
    push_platform_image(&c, ALICE, "alice/tokened", "v1", "amd64", "RUN a").await;
    push_platform_image(&c, ALICE, "alice/hidden", "v1", "amd64", "RUN b").await;
    assert!(berthd(&s, &["repo", "private", "alice/hidden"]).0);
    let read = crate::auth::create_token(&s, "alice", "reader", "read");
    let write = crate::auth::create_token(&s, "alice", "writer", "read-write");
    let delete = crate::auth::create_token(&s, "alice", "deleter", "read-write-delete");
    let http = reqwest::Client::new();
    let get = |url: String, token: Option<&str>| {
        let mut r = http.get(url);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        async move {
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };

    // Reads: the private repository is there for alice's token, not without one.
    let search = format!("{base}/api/v1/search?q=hidden");
    let (status, body) = get(search.clone(), Some(&read)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("alice/hidden"), "{body}");
    let (_, body) = get(search.clone(), None).await;
    assert!(!body.contains("alice/hidden"), "{body}");
    let (status, body) = get(
        format!("{base}/api/v1/repositories/alice/hidden"),
        Some(&read),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // A token that is not one: 401 in the JSON error format, nothing else said.
    for bad in ["berth_pat_not-a-real-token", "", "x y z"] {
        let (status, body) = get(search.clone(), Some(bad)).await;
        if bad.is_empty() {
            // `Bearer ` with nothing after it is no token: the anonymous answer.
            assert_eq!(status, 200, "{body}");
            continue;
        }
        assert_eq!(status, 401, "{bad}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["errors"][0]["code"], "UNAUTHORIZED", "{body}");
    }

    // Writes: no CSRF token needed, the scope decides.
    let add = |token: &str, pattern: &str| {
        let r = http
            .post(format!("{base}{RULES}"))
            .bearer_auth(token)
            .json(&json!({"scope": "alice/tokened", "pattern": pattern}));
        async move {
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = add(&read, "v*").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["errors"][0]["message"],
        "this token's scope (read) does not permit push"
    );
    let (status, rule) = add(&write, "v*").await;
    assert_eq!(status, 201, "{rule}");
    let remove = |token: &str| {
        let r = http
            .delete(format!("{base}{RULES}/{}", rule["id"]))
            .bearer_auth(token);
        async move { r.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(remove(&write).await, 403, "removing a rule needs delete");
    assert_eq!(remove(&delete).await, 204);
    // Untagged deletes and retention need delete too.
    let r = http
        .put(format!("{base}/api/v1/retention?scope=alice/tokened"))
        .bearer_auth(&write)
        .json(&json!({"keep_last": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .delete(format!(
            "{base}/api/v1/untagged?scope=alice/tokened&digest=sha256:{}",
            "0".repeat(64)
        ))
        .bearer_auth(&write)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Another user's token has only that user's rights, whatever its scope.
    let bobs = crate::auth::create_token(&s, "bobby", "bobs", "read-write-delete");
    let (status, body) = add(&bobs, "x*").await;
    assert!(status == 403 || status == 404, "{status} {body}");
    let (_, body) = get(search.clone(), Some(&bobs)).await;
    assert!(!body.contains("alice/hidden"), "{body}");

    // Pages ignore the header: the private repository is not there for it.
    let (status, _) = get(format!("{base}/r/alice/hidden"), Some(&read)).await;
    assert_eq!(status, 404);
    // A revoked token is refused at once.
    let (_, listing, _) = berthd(&s, &["token", "list", "alice"]);
    let id = listing
        .lines()
        .find(|l| l.split('\t').nth(1) == Some("reader"))
        .and_then(|l| l.split('\t').next())
        .unwrap_or_else(|| panic!("{listing}"))
        .to_owned();
    assert!(
        berthd(&s, &["token", "revoke", "alice", &id]).0,
        "token revoke"
    );
    let (status, _) = get(search, Some(&read)).await;
    assert_eq!(status, 401);
}
