//! The audit log over real HTTP against a real `berthd`: each audited action, done
//! the way users do it (web forms, the JSON API with a session or a personal access
//! token, the token endpoint, `berthd` commands), leaves an entry with its actor,
//! address, target and outcome; refusals and failed sign-ins too (a made-up user name
//! cut short); only registry admins read the log (API and page), filters and paging
//! select what they say; `berthd audit` prints it as a table or JSON.

use std::time::Duration;

use berth_tests::*;
use serde_json::Value;

use crate::auth::{create_token, pusher, ALICE, BOB};
use crate::web::{cookie_client, csrf_of, sign_in};

const ROOT: (&str, &str, bool) = ("rooty", "rooty-secret-pw", true);
const LOCAL_ADMIN: &str = "berthd (local admin)";
const HERE: &str = "127.0.0.1";

/// Runs each `async fn(Db)` on SQLite and on PostgreSQL (skipped without
/// `BERTH_TEST_POSTGRES_URL`); the function starts its own server (with sign-up on).
macro_rules! on_sqlite_and_postgres {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(berth_tests::Db::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if berth_tests::postgres_admin_url().is_none() {
                        eprintln!("SKIPPED: set BERTH_TEST_POSTGRES_URL to run the PostgreSQL variant");
                        return;
                    }
                    super::$name(berth_tests::Db::Postgres).await;
                }
            )*
        }
    };
}

on_sqlite_and_postgres!(audit_entries_for_each_action_visible_to_admins_only);

/// Status and body (JSON when it parses, else the text with `/` unescaped).
async fn send(r: reqwest::RequestBuilder) -> (u16, Value) {
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap().replace("&#x2f;", "/");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

async fn post_form(http: &reqwest::Client, url: String, form: &[(&str, &str)]) -> u16 {
    http.post(url)
        .form(form)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The CSRF token of a signed-in visitor's settings page.
async fn csrf(http: &reqwest::Client, base: &str) -> String {
    let html = http
        .get(format!("{base}/settings"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    csrf_of(&html)
}

/// The whole log, newest first, as an admin reads it through the API.
async fn log(admin: &reqwest::Client, base: &str) -> Vec<Value> {
    let (status, body) = send(admin.get(format!("{base}/api/v1/audit?limit=1000"))).await;
    assert_eq!(status, 200, "{body}");
    body["entries"].as_array().unwrap().clone()
}

/// The newest entry of `action` on `target`; it must exist.
fn entry<'e>(log: &'e [Value], action: &str, target: &str) -> &'e Value {
    log.iter()
        .find(|e| e["action"] == action && e["target"] == target)
        .unwrap_or_else(|| panic!("no {action} entry for {target} in {log:#?}"))
}

/// Asserts who did it, from where (`None`: no network address, a local command) and
/// how it ended.
fn assert_entry(e: &Value, actor: &str, address: Option<&str>, outcome: &str) {
    assert_eq!(e["actor"], actor, "{e}");
    assert_eq!(e["address"].as_str(), address, "{e}");
    assert_eq!(e["outcome"], outcome, "{e}");
    assert!(e["time"].as_str().unwrap().ends_with('Z'), "{e}");
}

fn config(marker: &str) -> Vec<u8> {
    format!(r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"marker":"{marker}"}}"#).into_bytes()
}

/// Pushes a one-layer image to `repo:tag`; returns its manifest digest.
async fn push(c: &Client, repo: &str, tag: &str, marker: &str) -> String {
    let config = config(marker);
    let layer = format!("layer {marker}").into_bytes();
    let config_digest = c.push_blob(repo, &config).await;
    let layer_digest = c.push_blob(repo, &layer).await;
    let manifest = image_manifest(
        &config_digest,
        config.len(),
        &[(&layer_digest, layer.len())],
        None,
    );
    let r = c.push_manifest(repo, tag, OCI_MANIFEST, &manifest).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    sha256(&manifest)
}

async fn audit_entries_for_each_action_visible_to_admins_only(db: Db) {
    let s = Berthd::start_configured(db, &[ALICE, BOB, ROOT], &[("BERTH_AUTH_SIGNUP", "true")])
        .await
        .expect("database available");
    let base = s.url.as_str();
    let c = s.client();

    // Images to change and delete later (pushed before passwords change).
    let pushing = pusher(&s, ALICE, "alice/app").await;
    push(&pushing, "alice/app", "v1", "one").await;
    let v2 = push(&pushing, "alice/app", "v2", "two").await;

    // Sign-ins: the web form, `docker login` (a login token), and failures.
    let root = sign_in(base, ROOT).await;
    let alice = sign_in(base, ALICE).await;
    c.docker_login_token(ALICE.0, ALICE.1).await;
    let wrong = c
        .request("GET", "/auth/token?service=berth")
        .basic_auth("alice", Some("not-her-password"));
    assert_eq!(send(wrong).await.0, 401);
    let made_up = format!("{}\u{1b}[2J", "x".repeat(5_000));
    let long = c
        .request("GET", "/auth/token?service=berth")
        .basic_auth(&made_up, Some("whatever"));
    assert_eq!(send(long).await.0, 401);

    // Tokens: created and revoked by `berthd token` and on the settings page.
    let root_pat = create_token(&s, "rooty", "audit-reader", "read");
    let alice_pat = create_token(&s, "alice", "ci", "read-write-delete");
    let alice_csrf = csrf(&alice, base).await;
    let form = [
        ("csrf", alice_csrf.as_str()),
        ("name", "laptop"),
        ("scope", "read"),
        ("expires_in_days", "30"),
    ];
    assert_eq!(
        post_form(&alice, format!("{base}/settings/tokens"), &form).await,
        201
    );
    let listed = s.admin_ok(&["token", "list", "alice"]);
    let id_of = |name: &str| {
        listed
            .lines()
            .find(|l| l.split('\t').nth(1) == Some(name))
            .and_then(|l| l.split('\t').next())
            .unwrap_or_else(|| panic!("token {name} in {listed}"))
            .to_owned()
    };
    let (laptop, ci) = (id_of("laptop"), id_of("ci"));

    // `docker login` with an access token (it keeps the token: no refresh token; sent
    // again at once, recorded once), and Docker's OAuth2 login (a POST asking for an
    // offline token) with the password, which gets a refresh token that works; token
    // requests for a scope are no login.
    for _ in 0..3 {
        let with_pat = c
            .request(
                "GET",
                "/auth/token?service=berth&offline_token=true&client_id=docker",
            )
            .basic_auth("alice", Some(&alice_pat));
        let (status, body) = send(with_pat).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.get("refresh_token").is_none(), "{body}");
    }
    let oauth = |scope: &'static str| {
        c.request("POST", "/auth/token").form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", ALICE.1),
            ("service", "berth"),
            ("client_id", "docker"),
            ("access_type", "offline"),
            ("scope", scope),
        ])
    };
    let (status, body) = send(oauth("")).await;
    assert_eq!(status, 200, "{body}");
    let refresh = body["refresh_token"].as_str().expect("a refresh token");
    let refreshed = c.request("POST", "/auth/token").form(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh),
        ("service", "berth"),
        ("client_id", "docker"),
        ("access_type", "offline"),
        ("scope", "repository:alice/app:pull"),
    ]);
    let (status, body) = send(refreshed).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["access_token"].is_string(), "{body}");
    let (status, body) = send(oauth("repository:alice/app:pull")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("refresh_token").is_none(), "{body}");
    let scoped = c
        .request(
            "GET",
            "/auth/token?service=berth&offline_token=true&scope=repository:alice/app:pull",
        )
        .basic_auth("alice", Some(&alice_pat));
    assert_eq!(send(scoped).await.0, 200);
    let form = [("csrf", alice_csrf.as_str()), ("id", laptop.as_str())];
    assert_eq!(
        post_form(&alice, format!("{base}/settings/tokens/revoke"), &form).await,
        303
    );
    s.admin_ok(&["token", "create", "bobby", "--name", "temp"]);
    let bob_tokens = s.admin_ok(&["token", "list", "bobby"]);
    let temp = bob_tokens
        .lines()
        .nth(1)
        .unwrap()
        .split('\t')
        .next()
        .unwrap();
    s.admin_ok(&["token", "revoke", "bobby", temp]);

    // Users: sign-up, password changes (web and `berthd`), removal.
    let signup = c
        .request("POST", "/auth/signup")
        .form(&[("username", "carol"), ("password", "carol-secret-pw")]);
    assert_eq!(send(signup).await.0, 201);
    let bob_password = "bobby-new-secret";
    let out = berthd_command(
        &s.data_dir,
        s.database_url.as_deref(),
        &["user", "passwd", "bobby", "--password-stdin"],
        Some(bob_password),
    );
    succeeded(&out, "berthd user passwd");
    let form = [
        ("csrf", alice_csrf.as_str()),
        ("current", ALICE.1),
        ("new", "alice-newer-pw"),
        ("confirm", "alice-newer-pw"),
    ];
    assert_eq!(
        post_form(&alice, format!("{base}/settings/password"), &form).await,
        303
    );
    s.admin_ok(&["user", "rm", "carol"]);

    // Organizations and members: the web forms, `berthd org`, and a refusal.
    let alice_csrf = csrf(&alice, base).await;
    let form = [("csrf", alice_csrf.as_str()), ("name", "acme")];
    assert_eq!(
        post_form(&alice, format!("{base}/settings/organizations"), &form).await,
        303
    );
    let members = format!("{base}/u/acme/members");
    for role in ["read", "write"] {
        let form = [
            ("csrf", alice_csrf.as_str()),
            ("user", "bobby"),
            ("role", role),
        ];
        assert_eq!(post_form(&alice, members.clone(), &form).await, 303);
    }
    s.admin_ok(&["org", "member", "rm", "acme", "bobby"]);
    s.admin_ok(&["org", "add", "bobsorg", "--owner", "bobby"]);
    let bob = sign_in(base, ("bobby", bob_password, false)).await;
    let bob_csrf = csrf(&bob, base).await;
    let form = [
        ("csrf", bob_csrf.as_str()),
        ("user", "bobby"),
        ("role", "admin"),
    ];
    assert_eq!(post_form(&bob, members.clone(), &form).await, 403);

    // Visibility and deletions: the web forms (and a refusal), the untagged API.
    let form = [
        ("csrf", bob_csrf.as_str()),
        ("repository", "alice/app"),
        ("private", "true"),
    ];
    assert_eq!(
        post_form(&bob, format!("{base}/manage/visibility"), &form).await,
        403
    );
    let form = [
        ("csrf", alice_csrf.as_str()),
        ("repository", "alice/app"),
        ("private", "true"),
    ];
    assert_eq!(
        post_form(&alice, format!("{base}/manage/visibility"), &form).await,
        303
    );
    s.admin_ok(&["repo", "public", "alice/app"]);
    let form = [
        ("csrf", alice_csrf.as_str()),
        ("repository", "alice/app"),
        ("tag", "v2"),
    ];
    assert_eq!(
        post_form(&alice, format!("{base}/manage/delete-tag"), &form).await,
        303
    );
    let untagged = format!("{base}/api/v1/untagged?scope=alice/app&digest={v2}");
    let deleted = alice.delete(&untagged).header("X-CSRF-Token", &alice_csrf);
    let (status, body) = send(deleted).await;
    assert_eq!(status, 200, "{body}");

    // Retention, quotas and immutable tag rules: `berthd`, and the API with a token.
    s.admin_ok(&["repo", "retention", "set", "alice/app", "--keep-last", "1"]);
    push(&pushing, "alice/app", "v3", "three").await;
    s.admin_ok(&["repo", "retention", "run", "alice/app"]);
    s.admin_ok(&["repo", "retention", "rm", "alice/app"]);
    s.admin_ok(&["quota", "set", "alice", "1GB"]);
    s.admin_ok(&["quota", "rm", "alice"]);
    let rule = c
        .with_token(&alice_pat)
        .request("POST", "/api/v1/immutable-tag-rules")
        .json(&serde_json::json!({"scope": "alice/app", "pattern": "v*"}));
    let (status, body) = send(rule).await;
    assert_eq!(status, 201, "{body}");
    let rule_id = body["id"].as_i64().unwrap();
    let remove = c
        .with_token(&alice_pat)
        .request("DELETE", &format!("/api/v1/immutable-tag-rules/{rule_id}"));
    assert_eq!(send(remove).await.0, 204);

    // Every action above, as the admin reads it.
    let entries = log(&root, base).await;
    let web = Some(HERE);
    for user in ["alice", "bobby", "rooty"] {
        let e = entry(&entries, "user_created", user);
        assert_entry(e, LOCAL_ADMIN, None, "success");
    }
    assert_entry(entry(&entries, "sign_in", "rooty"), "rooty", web, "success");
    let docker = entries
        .iter()
        .find(|e| {
            e["action"] == "sign_in" && e["detail"].as_str().unwrap().contains("docker login")
        })
        .expect("a docker login");
    assert_entry(docker, "alice", web, "success");
    // The three logins above (password, access token once a minute, OAuth2), and
    // nothing for the ordinary token requests.
    let logins: Vec<&Value> = entries
        .iter()
        .filter(|e| {
            e["action"] == "sign_in" && e["detail"].as_str().unwrap().contains("docker login")
        })
        .collect();
    assert_eq!(logins.len(), 3, "{logins:#?}");
    let with_token = format!("docker login with access token {ci}");
    let pat_login = logins
        .iter()
        .find(|e| e["detail"] == with_token.as_str())
        .unwrap_or_else(|| panic!("{with_token:?} in {logins:#?}"));
    assert_entry(pat_login, "alice", web, "success");
    assert_eq!(pat_login["target"], "alice");
    let failed = entry(&entries, "sign_in_failed", "alice");
    assert_entry(failed, "alice", web, "failure");
    let cut = entries
        .iter()
        .find(|e| e["action"] == "sign_in_failed" && e["target"] != "alice")
        .expect("the made-up name's failed sign-in");
    let name = cut["actor"].as_str().unwrap();
    assert!(
        name.starts_with("xxxx") && name.chars().count() <= 300,
        "{name}"
    );
    assert!(!name.chars().any(char::is_control), "{name:?}");
    assert_entry(
        entry(&entries, "token_created", "rooty"),
        LOCAL_ADMIN,
        None,
        "success",
    );
    let by_alice: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "token_created" && e["actor"] == "alice")
        .collect();
    assert_eq!(by_alice.len(), 1, "{by_alice:?}");
    assert!(by_alice[0]["detail"].as_str().unwrap().contains("laptop"));
    let revoked = entry(&entries, "token_revoked", "alice");
    assert_entry(revoked, "alice", web, "success");
    assert!(revoked["detail"].as_str().unwrap().contains(&laptop));
    assert_entry(
        entry(&entries, "token_revoked", "bobby"),
        LOCAL_ADMIN,
        None,
        "success",
    );
    assert_entry(
        entry(&entries, "user_created", "carol"),
        "carol",
        web,
        "success",
    );
    assert_entry(
        entry(&entries, "user_changed", "bobby"),
        LOCAL_ADMIN,
        None,
        "success",
    );
    assert_entry(
        entry(&entries, "user_changed", "alice"),
        "alice",
        web,
        "success",
    );
    assert_entry(
        entry(&entries, "user_removed", "carol"),
        LOCAL_ADMIN,
        None,
        "success",
    );
    assert_entry(
        entry(&entries, "org_created", "acme"),
        "alice",
        web,
        "success",
    );
    assert_entry(
        entry(&entries, "org_created", "bobsorg"),
        LOCAL_ADMIN,
        None,
        "success",
    );
    let added = entries
        .iter()
        .find(|e| e["action"] == "member_added" && e["outcome"] == "success")
        .unwrap();
    assert_entry(added, "alice", web, "success");
    assert_eq!(added["detail"], "bobby as read");
    let role = entry(&entries, "member_role_changed", "acme");
    assert_entry(role, "alice", web, "success");
    assert_eq!(role["detail"], "bobby from read to write");
    assert_entry(
        entry(&entries, "member_removed", "acme"),
        LOCAL_ADMIN,
        None,
        "success",
    );
    let refused = entries
        .iter()
        .find(|e| e["action"] == "member_added" && e["outcome"] == "denied")
        .expect("bobby's refused membership change");
    assert_entry(refused, "bobby", web, "denied");
    let visibility: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "visibility_changed")
        .collect();
    assert_eq!(visibility.len(), 3, "{visibility:#?}");
    assert_entry(visibility[0], LOCAL_ADMIN, None, "success");
    assert_eq!(visibility[0]["detail"], "public");
    assert_entry(visibility[1], "alice", web, "success");
    assert_eq!(visibility[1]["detail"], "private");
    assert_entry(visibility[2], "bobby", web, "denied");
    let tag = entry(&entries, "tag_deleted", "alice/app:v2");
    assert_entry(tag, "alice", web, "success");
    let untagged = entry(&entries, "manifest_deleted", &format!("alice/app@{v2}"));
    assert_entry(untagged, "alice", web, "success");
    let policy: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "retention_changed")
        .collect();
    assert_eq!(policy.len(), 2);
    assert_eq!(policy[0]["detail"], "removed");
    assert_eq!(policy[1]["detail"], "set keep_last=1");
    let run = entry(&entries, "retention_run", "alice/app");
    assert_entry(run, LOCAL_ADMIN, None, "success");
    assert!(
        run["detail"]
            .as_str()
            .unwrap()
            .starts_with("deleted 1 tags"),
        "{run}"
    );
    let quota = entries
        .iter()
        .filter(|e| e["action"] == "quota_changed" && e["target"] == "alice")
        .count();
    assert_eq!(quota, 2);
    let rules: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "immutable_tag_rule_changed")
        .collect();
    assert_eq!(rules.len(), 2);
    assert_entry(rules[0], "alice", web, "success");
    assert!(rules[0]["detail"]
        .as_str()
        .unwrap()
        .starts_with("removed rule"));
    assert!(rules[1]["detail"]
        .as_str()
        .unwrap()
        .starts_with("added rule"));
    // Names and ids only: no secret ever reaches the log.
    let all = serde_json::to_string(&entries).unwrap();
    for secret in [
        &root_pat,
        &alice_pat,
        ALICE.1,
        "alice-newer-pw",
        bob_password,
        "berth_pat_",
    ] {
        assert!(!all.contains(secret), "{secret} in the log");
    }
    let ci_entry = entries
        .iter()
        .find(|e| {
            e["action"] == "token_created" && e["target"] == "alice" && e["actor"] == LOCAL_ADMIN
        })
        .expect("berthd token create");
    let detail = ci_entry["detail"].as_str().unwrap();
    assert!(
        detail.starts_with(&format!("token {ci} \"ci\" (read-write-delete")),
        "{detail}"
    );

    // Admins only: anonymous visitors sign in first, others are refused, whether
    // with a session or a token, on the API and the page.
    let api = format!("{base}/api/v1/audit");
    let page = format!("{base}/admin/audit");
    let anonymous = cookie_client();
    assert_eq!(send(anonymous.get(&api)).await.0, 401);
    assert_eq!(send(anonymous.get(&page)).await.0, 401);
    for user in [&alice, &bob] {
        assert_eq!(send(user.get(&api)).await.0, 403);
        assert_eq!(send(user.get(&page)).await.0, 403);
    }
    let alice_with_pat = c.with_token(&alice_pat);
    assert_eq!(
        send(alice_with_pat.request("GET", "/api/v1/audit")).await.0,
        403
    );
    let (status, body) = send(c.with_token(&root_pat).request("GET", "/api/v1/audit")).await;
    assert_eq!(status, 200, "{body}");
    let (status, html) = send(root.get(format!("{page}?actor=alice&action=tag_deleted"))).await;
    assert_eq!(status, 200);
    let html = html.as_str().unwrap();
    assert!(
        html.contains("alice/app:v2") && html.contains(HERE),
        "{html}"
    );
    assert!(!html.contains("rooty</td>"), "filtered to alice");
    let nav = send(root.get(format!("{base}/"))).await.1;
    assert!(nav.as_str().unwrap().contains("href=\"/admin/audit\""));
    let nav = send(alice.get(format!("{base}/"))).await.1;
    assert!(!nav.as_str().unwrap().contains("/admin/audit"));

    // Filters: actor, action, time (RFC 3339 or a duration ago), paging; bad ones 400.
    let read = |query: &str| {
        let url = format!("{api}?{query}");
        let root = root.clone();
        async move {
            let (status, body) = send(root.get(&url)).await;
            assert_eq!(status, 200, "{url}: {body}");
            body
        }
    };
    let mine = read("actor=alice&action=token_created").await;
    assert_eq!(mine["entries"].as_array().unwrap().len(), 1);
    let recent = read("since=1h").await["entries"].as_array().unwrap().len();
    assert_eq!(recent, entries.len());
    let old = read("until=2000-01-01T00:00:00Z").await;
    assert!(old["entries"].as_array().unwrap().is_empty());
    let first = read("limit=3").await;
    let next = first["next_before"].as_i64().unwrap();
    let second = read(&format!("limit=3&before={next}")).await;
    let ids: Vec<i64> = [&first, &second]
        .iter()
        .flat_map(|p| {
            p["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_i64().unwrap())
        })
        .collect();
    let expected: Vec<i64> = entries[..6]
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, expected);
    for bad in [
        "action=drop_table",
        "since=yesterday",
        "limit=-1",
        "before=x",
    ] {
        assert_eq!(send(root.get(format!("{api}?{bad}"))).await.0, 400, "{bad}");
    }
    let hostile = read("actor=alice%27%20OR%20%271%27%3D%271").await;
    assert!(hostile["entries"].as_array().unwrap().is_empty());

    // `berthd audit`: a table, and JSON, with the same filters.
    let table = s.admin_ok(&["audit", "--actor", "alice", "--action", "tag_deleted"]);
    let rows: Vec<&str> = table.lines().collect();
    assert!(rows[0].starts_with("ID\tTIME\tACTOR"), "{table}");
    assert_eq!(rows.len(), 2, "{table}");
    assert!(
        rows[1].contains("\talice\t127.0.0.1\ttag_deleted\talice/app:v2\tsuccess"),
        "{table}"
    );
    let json = s.admin_ok(&[
        "audit",
        "--since",
        "1h",
        "--action",
        "user_created",
        "--json",
    ]);
    let listed: Vec<Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(listed.len(), 4, "{json}");
    assert!(listed.iter().all(|e| e["action"] == "user_created"));
    let out = s.admin(&["audit", "--action", "nonsense"]);
    assert!(!out.status.success());

    // Rate limited: the refusals are recorded as denied (last: it locks this address).
    let mut limited = false;
    for _ in 0..10 {
        let r = c
            .request("GET", "/auth/token?service=berth")
            .basic_auth("bobby", Some("guessing"));
        if send(r).await.0 == 429 {
            limited = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(limited, "never rate limited");
    let denied = s.admin_ok(&["audit", "--action", "sign_in_failed", "--json"]);
    let denied: Vec<Value> = serde_json::from_str(&denied).unwrap();
    let e = denied
        .iter()
        .find(|e| e["outcome"] == "denied")
        .expect("a rate-limited sign-in");
    assert_eq!(e["actor"], "bobby");
    assert!(e["detail"].as_str().unwrap().contains("rate limited"));
}
