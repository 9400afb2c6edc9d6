//! Events end to end: Distribution-style notifications and Docker Hub-style webhooks
//! from real `berthd` processes to receivers these tests run on loopback — pushed,
//! pulled and deleted through Docker, with the receiver down, `berthd` killed with
//! events queued, two replicas sharing one queue, and users who may not manage a
//! namespace's webhooks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_tests::containers::{docker_available, docker_with_config};
use berth_tests::*;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::auth::pusher;
use crate::proxy::fakes::{eventually, metric, metrics, FakeUpstream, Handler, Reply};

const ALICE: (&str, &str, bool) = ("alice", "alice-password", false);
const BOB: (&str, &str, bool) = ("bobby", "bobby-password", false);
const ENVELOPE: &str = "application/vnd.docker.distribution.events.v2+json";

/// A receiver of notifications or webhooks: answers 200 while up, 503 while down,
/// and keeps every request with whether it was accepted.
struct Receiver {
    fake: FakeUpstream,
    up: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<(bool, Received)>>>,
}

#[derive(Clone, Debug)]
struct Received {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

impl Receiver {
    async fn start(up: bool) -> Receiver {
        Receiver::start_on("127.0.0.1:0", up).await
    }

    async fn start_on(addr: &str, up: bool) -> Receiver {
        let up = Arc::new(AtomicBool::new(up));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (flag, kept) = (up.clone(), log.clone());
        let handler: Handler = Arc::new(move |r| {
            let accepted = flag.load(Ordering::SeqCst);
            kept.lock().unwrap().push((
                accepted,
                Received {
                    headers: r.headers.clone(),
                    body: r.body.clone(),
                },
            ));
            match accepted {
                true => Reply::new(200).body(b"thanks".to_vec()),
                false => Reply::new(503).body(b"down for maintenance".to_vec()),
            }
        });
        Receiver {
            fake: FakeUpstream::start_on(addr, handler).await,
            up,
            log,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.fake.url)
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }

    fn requests(&self) -> Vec<(bool, Received)> {
        self.log.lock().unwrap().clone()
    }

    /// The events of accepted envelopes, in the order they arrived.
    fn accepted_events(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|(ok, _)| *ok)
            .flat_map(|(_, r)| r.json()["events"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// The accepted events once one with `action` is among them (within `limit`).
    async fn events_until(&self, action: &str, limit: Duration) -> Vec<Value> {
        eventually(limit, action, || async {
            let events = self.accepted_events();
            match events.iter().any(|e| e["action"] == action) {
                true => Ok(events),
                false => Err(format!("{events:#?}")),
            }
        })
        .await
    }

    /// The accepted events once there are `n` (within `limit`), and a little later:
    /// anything sent twice would have arrived meanwhile.
    async fn settled_events(&self, n: usize, limit: Duration) -> Vec<Value> {
        eventually(limit, "every event", || async {
            match self.accepted_events().len() {
                got if got >= n => Ok(()),
                got => Err(format!("{got} so far")),
            }
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        self.accepted_events()
    }

    /// Every event id in every envelope, accepted or not.
    fn all_event_ids(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .flat_map(|(_, r)| r.json()["events"].as_array().cloned().unwrap_or_default())
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// Writes a config file for `berthd` (kept in `dir`).
fn config_file(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("berth.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn notification(name: &str, url: &str, extra: &str) -> String {
    format!("[[notifications]]\nname = \"{name}\"\nurl = \"{url}\"\nbackoff = \"50ms\"\nmax_backoff = \"300ms\"\n{extra}\n")
}

/// HMAC-SHA256 as a receiver computes it to check a signature.
fn hmac_sha256(key: &[u8], body: &[u8]) -> String {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(body)
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    hex::encode(outer)
}

/// Only the events about `repo`.
fn about<'a>(events: &'a [Value], repo: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["target"]["repository"] == repo)
        .collect()
}

fn position(events: &[&Value], what: &str, pred: impl Fn(&Value) -> bool) -> usize {
    events
        .iter()
        .position(|e| pred(e))
        .unwrap_or_else(|| panic!("no {what} among {events:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_push_pull_and_delete_are_notified_in_order_and_webhooks_signed() {
    if !docker_available() {
        return;
    }
    let ci = Receiver::start(true).await;
    let no_pulls = Receiver::start(true).await;
    let hook = Receiver::start(true).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        &format!(
            "{}{}",
            notification(
                "ci",
                &ci.url("/events"),
                "headers = { Authorization = [\"Bearer ci-secret\"] }"
            ),
            notification(
                "no-pulls",
                &no_pulls.url("/"),
                "ignore_actions = [\"pull\"]"
            ),
        ),
    );
    let config = config.to_str().unwrap();
    let s = Berthd::start_configured(
        Db::Sqlite,
        &[ALICE],
        &[
            ("BERTH_CONFIG", config),
            ("BERTH_WEBHOOKS_ALLOW_PRIVATE", "true"),
        ],
    )
    .await
    .unwrap();
    // Alice's webhook for her namespace, with a secret, through the JSON API.
    let pat = s
        .admin_ok(&[
            "token",
            "create",
            "alice",
            "--name",
            "hooks",
            "--scope",
            "read-write-delete",
        ])
        .trim()
        .to_owned();
    let api = s.client().with_token(&pat);
    let r = api
        .request("POST", "/api/v1/webhooks")
        .json(&json!({"scope": "alice/*", "name": "deploy", "url": hook.url("/hook"), "secret": "s3cret"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["signed"], true);
    assert!(created.get("secret").is_none(), "the secret is never shown");
    let hook_id = created["id"].as_i64().unwrap();

    // Docker pushes, pulls, and the tag's manifest is deleted.
    let cfg = tempfile::tempdir().unwrap();
    let docker = |args: &[&str], stdin: Option<&str>| {
        succeeded(
            &docker_with_config(cfg.path(), args, stdin),
            format_args!("docker {args:?}"),
        )
    };
    docker(
        &["login", "-u", "alice", "--password-stdin", &s.addr],
        Some(ALICE.1),
    );
    let image = format!("{}/alice/app:v1", s.addr);
    crate::clients::docker_build_busybox(&image, "events");
    docker(&["push", &image], None);
    let manifest_digest = docker(
        &["inspect", "--format", "{{index .RepoDigests 0}}", &image],
        None,
    )
    .trim()
    .rsplit_once('@')
    .unwrap()
    .1
    .to_owned();
    run(Command::new("docker").args(["rmi", "-f", &image]));
    docker(&["pull", &image], None);
    run(Command::new("docker").args(["rmi", "-f", &image]));
    // The pull's events are written before any later change's.
    let c = pusher(&s, ALICE, "alice/app").await;
    let r = c
        .call(
            "DELETE",
            &format!("/v2/alice/app/manifests/{manifest_digest}"),
        )
        .await;
    assert_eq!(r.status(), 202);

    let events = ci.events_until("delete", Duration::from_secs(30)).await;
    let mine = about(&events, "alice/app");
    // Envelopes as Distribution sends them, with the configured header.
    for (_, r) in ci.requests() {
        assert_eq!(r.header("content-type"), Some(ENVELOPE));
        assert_eq!(r.header("authorization"), Some("Bearer ci-secret"));
    }
    let ids: Vec<&str> = mine.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "each event once: {ids:?}");
    let push = position(&mine, "manifest push", |e| {
        e["action"] == "push" && e["target"]["tag"] == "v1"
    });
    let pushed = mine[push];
    assert_eq!(pushed["target"]["digest"], manifest_digest.as_str());
    assert!(pushed["target"]["mediaType"]
        .as_str()
        .unwrap()
        .contains("manifest"));
    assert_eq!(pushed["target"]["size"], pushed["target"]["length"]);
    assert_eq!(
        pushed["target"]["url"],
        format!("{}/v2/alice/app/manifests/{manifest_digest}", s.url).as_str()
    );
    assert_eq!(pushed["actor"]["name"], "alice");
    assert_eq!(pushed["request"]["method"], "PUT");
    assert!(pushed["request"]["useragent"]
        .as_str()
        .unwrap()
        .contains("docker"));
    assert!(pushed["request"]["addr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert_eq!(pushed["request"]["host"], s.addr.as_str());
    assert!(!pushed["request"]["id"].as_str().unwrap().is_empty());
    assert!(!pushed["source"]["instanceID"].as_str().unwrap().is_empty());
    assert!(chrono_like(pushed["timestamp"].as_str().unwrap()));
    // Its blobs' pushes before it (docker pushes layers, then the config).
    let blob_pushes: Vec<usize> = mine
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            e["action"] == "push" && e["target"]["mediaType"] == "application/octet-stream"
        })
        .map(|(i, _)| i)
        .collect();
    assert!(blob_pushes.len() >= 2, "{mine:#?}");
    assert!(blob_pushes.iter().all(|&i| i < push));
    // Pulls after it: the manifest (docker resolves the tag with a HEAD, then GETs
    // by digest) and the blobs.
    let pull = position(&mine, "manifest pull", |e| {
        e["action"] == "pull" && e["target"]["digest"] == manifest_digest.as_str()
    });
    assert!(pull > push);
    assert_eq!(mine[pull]["request"]["method"], "GET");
    assert!(mine
        .iter()
        .skip(pull)
        .any(|e| e["action"] == "pull" && e["target"]["mediaType"] == "application/octet-stream"));
    let delete = position(&mine, "delete", |e| e["action"] == "delete");
    assert!(delete > pull, "the delete after the pulls");
    assert_eq!(mine[delete]["target"]["digest"], manifest_digest.as_str());
    assert_eq!(mine[delete]["request"]["method"], "DELETE");
    // The endpoint ignoring pulls got everything else, and no pull.
    let other = no_pulls
        .events_until("delete", Duration::from_secs(10))
        .await;
    assert!(other.iter().all(|e| e["action"] != "pull"));
    assert_eq!(
        other.iter().filter(|e| e["action"] == "push").count(),
        mine.iter().filter(|e| e["action"] == "push").count()
    );

    // The webhook: one Docker Hub payload for the tag push, signed.
    let (_, delivery) = eventually(Duration::from_secs(10), "the webhook", || async {
        hook.requests()
            .into_iter()
            .next()
            .ok_or_else(|| "nothing yet".to_owned())
    })
    .await;
    let payload = delivery.json();
    assert_eq!(payload["push_data"]["tag"], "v1");
    assert_eq!(payload["push_data"]["pusher"], "alice");
    assert!(payload["push_data"]["pushed_at"].as_i64().unwrap() > 1_700_000_000);
    assert_eq!(payload["repository"]["repo_name"], "alice/app");
    assert_eq!(payload["repository"]["namespace"], "alice");
    assert_eq!(payload["repository"]["name"], "app");
    assert_eq!(payload["repository"]["owner"], "alice");
    assert_eq!(payload["repository"]["is_private"], false);
    assert!(payload["repository"]["star_count"].is_i64());
    assert!(payload["repository"]["pull_count"].is_i64());
    assert!(payload["repository"]["date_created"].is_i64());
    assert_eq!(
        delivery.header("x-berth-signature-256").unwrap(),
        format!("sha256={}", hmac_sha256(b"s3cret", &delivery.body))
    );
    let event_id = delivery.header("x-berth-delivery").unwrap().to_owned();
    assert_eq!(delivery.header("content-type"), Some("application/json"));
    // The receiver's verdict through the callback URL.
    let callback = payload["callback_url"].as_str().unwrap();
    let path = callback.strip_prefix(&s.url).expect("on the registry");
    let r = s
        .client()
        .request("POST", path)
        .json(&json!({"state": "success", "description": "deployed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = s
        .client()
        .request(
            "POST",
            "/api/v1/webhooks/callback/00000000000000000000000000000000",
        )
        .json(&json!({"state": "success"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Its history, then a redelivery: the same event id and bytes, sent again.
    let history: Value = api
        .call("GET", &format!("/api/v1/webhooks/{hook_id}/deliveries"))
        .await
        .json()
        .await
        .unwrap();
    let first = &history["deliveries"][0];
    assert_eq!(first["status"], "delivered");
    assert_eq!(first["response_status"], 200);
    assert_eq!(first["response_excerpt"], "thanks");
    assert!(first["response_ms"].is_i64());
    assert_eq!(first["callback_state"], "success");
    assert_eq!(first["callback_description"], "deployed");
    let r = api
        .call(
            "POST",
            &format!(
                "/api/v1/webhooks/{hook_id}/deliveries/{}/redeliver",
                first["id"]
            ),
        )
        .await;
    assert_eq!(r.status(), 202);
    let (_, again) = eventually(Duration::from_secs(10), "the redelivery", || async {
        hook.requests()
            .into_iter()
            .nth(1)
            .ok_or_else(|| "not yet".to_owned())
    })
    .await;
    assert_eq!(again.header("x-berth-delivery"), Some(event_id.as_str()));
    assert_eq!(again.body, delivery.body);
    // `berthd webhook` shows the same history.
    let listed = s.admin_ok(&["webhook", "deliveries", &hook_id.to_string()]);
    assert!(
        listed.contains(&event_id) && listed.contains("delivered"),
        "{listed}"
    );
    // The registry delete is in the audit log, with who and from where.
    let audit = s.admin_ok(&["audit", "--action", "manifest_deleted", "--json"]);
    let audit: Value = serde_json::from_str(&audit).unwrap();
    let entry = &audit[0];
    assert_eq!(entry["actor"], "alice");
    assert_eq!(
        entry["target"],
        format!("alice/app@{manifest_digest}").as_str()
    );
    assert_eq!(entry["address"], "127.0.0.1");
    assert_eq!(entry["outcome"], "success");
    // Metrics: the configured endpoints by name, webhooks together.
    let text = metrics(&s.client()).await;
    assert!(metric(&text, "berth_events_delivered_total", &[("endpoint", "ci")]) >= 1.0);
    assert!(
        metric(
            &text,
            "berth_events_delivered_total",
            &[("endpoint", "webhooks")]
        ) >= 2.0
    );
    assert_eq!(
        metric(&text, "berth_events_queued", &[("endpoint", "ci")]),
        0.0
    );
    // (The helper reads an absent series as 0: the line itself is looked for.)
    assert!(text.lines().any(|l| l == "berth_events_outbox 0"), "{text}");
}

/// RFC 3339 with a time zone, as Distribution writes timestamps.
fn chrono_like(text: &str) -> bool {
    text.len() >= 20 && text.as_bytes()[10] == b'T' && text.ends_with('Z')
}

async fn events_survive_a_dead_receiver_and_a_killed_server(db: Db) {
    let ci = Receiver::start(false).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), &notification("ci", &ci.url("/"), ""));
    let config = config.to_str().unwrap().to_owned();
    let env = [("BERTH_CONFIG", config.as_str())];
    let Some(mut s) = Berthd::start_configured(db, &[], &env).await else {
        return;
    };
    let c = s.client();
    let mut pushed = Vec::new();
    for i in 0..5 {
        let (_, digest) = c
            .push_image("down/app", &format!("t{i}"), &seeded_bytes(i, 1000))
            .await;
        pushed.push(digest);
    }
    // 2 blobs and a manifest each; the receiver refuses them all for now.
    eventually(Duration::from_secs(20), "queued and failing", || async {
        let text = metrics(&c).await;
        let queued = metric(&text, "berth_events_queued", &[("endpoint", "ci")]);
        let failed = metric(&text, "berth_events_failed_total", &[("endpoint", "ci")]);
        match queued == 15.0 && failed >= 2.0 {
            true => Ok(()),
            false => Err(format!("queued {queued}, failed {failed}")),
        }
    })
    .await;
    let refused_before_kill = ci.all_event_ids();
    assert!(!refused_before_kill.is_empty());
    s.kill();
    ci.set_up(true);
    let s = Berthd::spawn(s.data_dir.clone(), s.database_url.clone(), None, &env);
    // The killed instance's lease on the endpoint runs out first.
    let events = ci.settled_events(15, Duration::from_secs(60)).await;
    // Each accepted once; a refused one came again with the same id.
    let mut accepted: HashMap<String, usize> = HashMap::new();
    for e in &events {
        *accepted
            .entry(e["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(accepted.len(), 15, "{accepted:?}");
    assert!(accepted.values().all(|&n| n == 1), "{accepted:?}");
    for id in &refused_before_kill {
        assert!(
            accepted.contains_key(id),
            "refused {id} was never delivered"
        );
    }
    // In the order they were pushed.
    let manifests: Vec<&str> = events
        .iter()
        .filter(|e| e["target"]["tag"].is_string())
        .map(|e| e["target"]["digest"].as_str().unwrap())
        .collect();
    assert_eq!(
        manifests,
        pushed.iter().map(String::as_str).collect::<Vec<_>>()
    );
    eventually(Duration::from_secs(10), "an empty queue", || async {
        let text = metrics(&s.client()).await;
        match metric(&text, "berth_events_queued", &[("endpoint", "ci")]) {
            0.0 => Ok(()),
            n => Err(format!("{n} queued")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_survive_a_dead_receiver_and_a_killed_server_on_sqlite() {
    events_survive_a_dead_receiver_and_a_killed_server(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_survive_a_dead_receiver_and_a_killed_server_on_postgres() {
    events_survive_a_dead_receiver_and_a_killed_server(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_deliver_each_event_once() {
    let ci = Receiver::start(true).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), &notification("ci", &ci.url("/"), ""));
    let Some(cluster) =
        crate::cluster::Cluster::start(&[], &[("BERTH_CONFIG", config.to_str().unwrap())]).await
    else {
        return;
    };
    let (a, b) = (cluster.a.client(), cluster.b.client());
    let mut pushed = Vec::new();
    for i in 0..10u64 {
        let c = if i % 2 == 0 { &a } else { &b };
        let (_, digest) = c
            .push_image("two/app", &format!("t{i}"), &seeded_bytes(100 + i, 500))
            .await;
        pushed.push(digest);
    }
    let events = ci.settled_events(30, Duration::from_secs(30)).await;
    assert_eq!(
        events.len(),
        30,
        "each event once, whichever replica sent it"
    );
    let mut ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 30);
    // Both replicas' events, each naming the instance that took the request.
    let sources: std::collections::BTreeSet<&str> = events
        .iter()
        .map(|e| e["source"]["instanceID"].as_str().unwrap())
        .collect();
    assert_eq!(sources.len(), 2);
    let manifests: Vec<&str> = events
        .iter()
        .filter(|e| e["target"]["tag"].is_string())
        .map(|e| e["target"]["digest"].as_str().unwrap())
        .collect();
    assert_eq!(
        manifests,
        pushed.iter().map(String::as_str).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoints_backlog_is_capped_and_counted() {
    let ci = Receiver::start(false).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), &notification("ci", &ci.url("/"), "backlog = 4"));
    let s = Berthd::start_configured(
        Db::Sqlite,
        &[],
        &[("BERTH_CONFIG", config.to_str().unwrap())],
    )
    .await
    .unwrap();
    let c = s.client();
    for i in 0..3 {
        c.push_image("cap/app", &format!("t{i}"), &seeded_bytes(200 + i, 300))
            .await;
    }
    // A client's forwarded host never makes it into the events' URLs.
    let config_digest = c.push_blob("cap/app", b"{}").await;
    let layer = seeded_bytes(203, 300);
    let layer_digest = c.push_blob("cap/app", &layer).await;
    let manifest = image_manifest(&config_digest, 2, &[(&layer_digest, layer.len())], None);
    let r = c
        .request("PUT", "/v2/cap/app/manifests/t3")
        .header("Content-Type", OCI_MANIFEST)
        .header("X-Forwarded-Host", "evil.example")
        .header("Forwarded", "host=evil.example;proto=https")
        .body(manifest)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let text = eventually(Duration::from_secs(20), "the backlog capped", || async {
        let text = metrics(&c).await;
        let dropped = metric(&text, "berth_events_dropped_total", &[("endpoint", "ci")]);
        let queued = metric(&text, "berth_events_queued", &[("endpoint", "ci")]);
        match dropped >= 8.0 && queued <= 4.0 {
            true => Ok(text),
            false => Err(format!("dropped {dropped}, queued {queued}")),
        }
    })
    .await;
    assert!(
        metric(
            &text,
            "berth_events_oldest_pending_seconds",
            &[("endpoint", "ci")]
        ) >= 0.0
    );
    // The newest survive: once up, the last push's manifest arrives.
    ci.set_up(true);
    let events = eventually(Duration::from_secs(20), "the rest", || async {
        let events = ci.accepted_events();
        match events.len() == 4 {
            true => Ok(events),
            false => Err(format!("{events:#?}")),
        }
    })
    .await;
    let last = events.last().unwrap();
    assert_eq!(last["target"]["tag"], "t3");
    let url = last["target"]["url"].as_str().unwrap();
    // (The scheme follows X-Forwarded-Proto, as the token realm does: a proxy in front
    // terminates TLS. The host is the one the request was sent to.)
    assert!(
        url.contains(&format!("://{}/v2/cap/app/manifests/", s.addr)),
        "{url}"
    );
    assert_eq!(last["request"]["host"], s.addr.as_str());
}

/// Tag and untagged deletes in the web UI and its JSON API are notified too, with the
/// signed-in user as the actor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_deletes_are_notified() {
    let ci = Receiver::start(true).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), &notification("ci", &ci.url("/"), ""));
    let s = Berthd::start_configured(
        Db::Sqlite,
        &[ALICE],
        &[("BERTH_CONFIG", config.to_str().unwrap())],
    )
    .await
    .unwrap();
    let c = pusher(&s, ALICE, "alice/site").await;
    let (old, _) = c.push_image("alice/site", "old", b"old").await;
    // The same manifest pushed again (CI re-runs): an event too, buffered, yet still
    // before the delete below.
    let r = c
        .push_manifest("alice/site", "old", OCI_MANIFEST, &old)
        .await;
    assert_eq!(r.status(), 201);
    let (_, untagged) = c.push_image("alice/site", "v1", b"v1").await;
    c.push_image("alice/site", "v1", b"v1 again").await;
    let http = crate::web::sign_in(&s.url, ALICE).await;
    let page = http
        .get(format!("{}/r/alice/site", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = crate::web::csrf_of(&page);
    let r = http
        .post(format!("{}/manage/delete-tag", s.url))
        .form(&[
            ("csrf", csrf.as_str()),
            ("repository", "alice/site"),
            ("tag", "old"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let r = http
        .delete(format!(
            "{}/api/v1/untagged?scope=alice/site&digest={untagged}",
            s.url
        ))
        .header("X-CSRF-Token", csrf.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let events = eventually(Duration::from_secs(20), "both deletes", || async {
        let deletes: Vec<Value> = ci
            .accepted_events()
            .into_iter()
            .filter(|e| e["action"] == "delete")
            .collect();
        match deletes.len() {
            2 => Ok(deletes),
            n => Err(format!("{n} deletes")),
        }
    })
    .await;
    assert_eq!(events[0]["target"]["tag"], "old");
    assert_eq!(events[1]["target"]["digest"], untagged.as_str());
    let all = ci.accepted_events();
    let old_pushes: Vec<usize> = all
        .iter()
        .enumerate()
        .filter(|(_, e)| e["action"] == "push" && e["target"]["tag"] == "old")
        .map(|(i, _)| i)
        .collect();
    let delete = all.iter().position(|e| e["action"] == "delete").unwrap();
    assert_eq!(old_pushes.len(), 2, "the push and its repetition");
    assert!(old_pushes.iter().all(|&i| i < delete));
    for e in &events {
        assert_eq!(e["actor"]["name"], "alice");
        assert_eq!(e["target"]["repository"], "alice/site");
    }
    assert_eq!(events[0]["request"]["method"], "POST");
    assert_eq!(events[1]["request"]["method"], "DELETE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_their_owners_and_never_reach_internal_addresses() {
    let s = Berthd::start_configured(Db::Sqlite, &[ALICE, BOB], &[])
        .await
        .unwrap();
    let token = |user: &str| {
        s.admin_ok(&[
            "token",
            "create",
            user,
            "--name",
            "t",
            "--scope",
            "read-write-delete",
        ])
        .trim()
        .to_owned()
    };
    let (alice, bob) = (
        s.client().with_token(&token("alice")),
        s.client().with_token(&token("bobby")),
    );
    let add = |c: &Client, scope: &str, url: &str| {
        c.request("POST", "/api/v1/webhooks")
            .json(&json!({"scope": scope, "name": "h", "url": url}))
            .send()
    };
    // Internal targets are refused as added (the address check at delivery covers
    // names that resolve to them).
    for url in [
        "http://127.0.0.1:8080/x",
        "http://localhost/x",
        "http://[::1]/x",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/x",
        "http://0x7f000001/x",
        "file:///etc/passwd",
        "http://user:pw@hooks.example.com/x",
    ] {
        let r = add(&alice, "alice/*", url).await.unwrap();
        assert_eq!(r.status(), 400, "{url}");
        let body: Value = r.json().await.unwrap();
        assert!(body.to_string().contains("webhook"), "{body}");
    }
    let r = add(&alice, "alice/*", "https://hooks.example.invalid/x")
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    // Someone else's namespace: not theirs to see or change.
    let r = add(&bob, "alice/*", "https://hooks.example.invalid/y")
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = bob.call("GET", "/api/v1/webhooks?scope=alice/*").await;
    assert_eq!(r.status(), 403);
    for (method, path) in [
        ("GET", format!("/api/v1/webhooks/{id}/deliveries")),
        ("DELETE", format!("/api/v1/webhooks/{id}")),
        (
            "POST",
            format!("/api/v1/webhooks/{id}/deliveries/1/redeliver"),
        ),
    ] {
        // Not theirs: as if it did not exist (its scope may name a private repository).
        let r = bob.call(method, &path).await;
        assert_eq!(r.status(), 404, "{method} {path}");
        let r = s.client().call(method, &path).await;
        // Reads ask for a sign-in; writes without a session fail the CSRF check first.
        let expected = if method == "GET" { 401 } else { 403 };
        assert_eq!(r.status(), expected, "anonymous {method} {path}");
    }
    let r = s
        .client()
        .call("GET", "/manage/webhooks?scope=alice/*")
        .await;
    assert_ne!(r.status(), 200);
    // A repository someone may not see is not there for them.
    let r = bob.call("GET", "/api/v1/webhooks?scope=alice/app").await;
    assert_eq!(r.status(), 404);
    // A read-write token may not add one (an owner's decision).
    let rw = s
        .admin_ok(&[
            "token",
            "create",
            "alice",
            "--name",
            "rw",
            "--scope",
            "read-write",
        ])
        .trim()
        .to_owned();
    let r = add(
        &s.client().with_token(&rw),
        "alice/*",
        "https://hooks.example.invalid/z",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 403);
    // Nor read them: webhook URLs often carry secrets of their own.
    let r = s
        .client()
        .with_token(&rw)
        .call("GET", "/api/v1/webhooks?scope=alice/*")
        .await;
    assert_eq!(r.status(), 403);
    // Alice sees hers and removes it.
    let listed: Value = alice
        .call("GET", "/api/v1/webhooks?scope=alice/*")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["webhooks"][0]["id"], id);
    let r = alice
        .call("DELETE", &format!("/api/v1/webhooks/{id}"))
        .await;
    assert_eq!(r.status(), 204);
    let r = alice
        .call("GET", &format!("/api/v1/webhooks/{id}/deliveries"))
        .await;
    assert_eq!(r.status(), 404);
    let out = s.admin(&["webhook", "add", "alice/*", "h", "http://127.0.0.1:9/x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("internal"));
    // A removed user's namespace keeps no webhooks for the name's next owner.
    let r = add(&alice, "alice/*", "https://hooks.example.invalid/again")
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    s.admin_ok(&["user", "rm", "alice"]);
    let listed = s.admin_ok(&["webhook", "ls", "alice/*"]);
    assert_eq!(listed.lines().count(), 1, "only the header: {listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_manage_webhooks_on_their_pages() {
    let hook = Receiver::start(true).await;
    let s = Berthd::start_configured(
        Db::Sqlite,
        &[ALICE, BOB],
        &[("BERTH_WEBHOOKS_ALLOW_PRIVATE", "true")],
    )
    .await
    .unwrap();
    pusher(&s, ALICE, "alice/web")
        .await
        .push_image("alice/web", "v0", b"before")
        .await;
    let http = crate::web::sign_in(&s.url, ALICE).await;
    let page = |http: reqwest::Client, scope: &'static str| {
        let url = format!("{}/manage/webhooks?scope={scope}", s.url);
        async move {
            let r = http.get(url).send().await.unwrap();
            (
                r.status().as_u16(),
                r.text().await.unwrap().replace("&#x2f;", "/"),
            )
        }
    };
    // The repository page links to it for its owner.
    let repo = http
        .get(format!("{}/r/alice/web", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .replace("&#x2f;", "/");
    assert!(repo.contains("/manage/webhooks?scope=alice/web"), "{repo}");
    let (status, html) = page(http.clone(), "alice/web").await;
    assert_eq!(status, 200);
    assert!(html.contains("No webhooks"));
    let csrf = crate::web::csrf_of(&html);
    let post = |path: &'static str, form: Vec<(&'static str, String)>| {
        let http = http.clone();
        let url = format!("{}{path}", s.url);
        async move { http.post(url).form(&form).send().await.unwrap() }
    };
    let r = post(
        "/manage/webhooks",
        vec![
            ("csrf", csrf.clone()),
            ("scope", "alice/web".into()),
            ("name", "chat".into()),
            ("url", hook.url("/chat")),
            ("secret", "".into()),
        ],
    )
    .await;
    assert_eq!(r.status(), 303);
    // A push: the page shows the delivery, and it can be sent again.
    pusher(&s, ALICE, "alice/web")
        .await
        .push_image("alice/web", "v1", b"after")
        .await;
    eventually(Duration::from_secs(10), "the delivery", || async {
        match hook.requests().len() {
            1 => Ok(()),
            n => Err(format!("{n} requests")),
        }
    })
    .await;
    let (_, html) = page(http.clone(), "alice/web").await;
    assert!(html.contains("chat") && html.contains("unsigned"), "{html}");
    let (_, first) = &hook.requests()[0];
    assert!(first.header("x-berth-signature-256").is_none());
    let html = eventually(Duration::from_secs(10), "delivered on the page", || async {
        let (_, html) = page(http.clone(), "alice/web").await;
        match html.contains(">delivered") {
            true => Ok(html),
            false => Err(html),
        }
    })
    .await;
    assert!(html.contains(">v1<") && html.contains("200"), "{html}");
    let id = |name: &str| {
        let marker = format!("name=\"{name}\" value=\"");
        let start = html.find(&marker).unwrap() + marker.len();
        html[start..][..html[start..].find('"').unwrap()].to_owned()
    };
    let (hook_id, delivery) = (id("id"), id("delivery"));
    let r = post(
        "/manage/webhooks/redeliver",
        vec![
            ("csrf", csrf.clone()),
            ("scope", "alice/web".into()),
            ("id", hook_id.clone()),
            ("delivery", delivery),
        ],
    )
    .await;
    assert_eq!(r.status(), 303);
    eventually(Duration::from_secs(10), "the redelivery", || async {
        match hook.requests().len() {
            2 => Ok(()),
            n => Err(format!("{n} requests")),
        }
    })
    .await;
    // Another user is refused, and a form without the token too.
    let bob = crate::web::sign_in(&s.url, BOB).await;
    let (status, _) = page(bob, "alice/web").await;
    assert_eq!(status, 403);
    let r = post(
        "/manage/webhooks/remove",
        vec![
            ("csrf", "forged".into()),
            ("scope", "alice/web".into()),
            ("id", hook_id.clone()),
        ],
    )
    .await;
    assert_eq!(r.status(), 403);
    let r = post(
        "/manage/webhooks/remove",
        vec![
            ("csrf", csrf),
            ("scope", "alice/web".into()),
            ("id", hook_id),
        ],
    )
    .await;
    assert_eq!(r.status(), 303);
    let (_, html) = page(http.clone(), "alice/web").await;
    assert!(html.contains("No webhooks"));
    // Both changes are in the audit log, as alice's.
    let audit = s.admin_ok(&["audit", "--action", "webhook_changed", "--json"]);
    let audit: Value = serde_json::from_str(&audit).unwrap();
    let details: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["actor"], "alice");
            assert_eq!(e["target"], "alice/web");
            e["detail"].as_str().unwrap()
        })
        .collect();
    assert!(
        details[0].starts_with("removed webhook") && details[1].starts_with("added webhook"),
        "{details:?}"
    );
}
