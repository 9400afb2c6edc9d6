//! Cluster mode: `berthd` replicas sharing one PostgreSQL database and one real S3
//! server (s3s-fs), with nothing of their own. Any replica serves any request.

use std::process::Command;
use std::time::{Duration, Instant};

use berth_tests::*;
use serde_json::Value;

use crate::auth::bearer;
use crate::clients::{run, umoci_busybox};

const ALICE: (&str, &str, bool) = ("alice", "alice-password", false);
const MIB: usize = 1024 * 1024;

/// Replicas `a` and `b` on one fresh database and one S3 server.
pub(crate) struct Cluster {
    s3: S3Server,
    pub a: Berthd,
    pub b: Berthd,
}

impl Cluster {
    /// `None` outside CI when PostgreSQL or s3s-fs is missing.
    pub(crate) async fn start(
        users: &[(&str, &str, bool)],
        extra: &[(&'static str, &str)],
    ) -> Option<Cluster> {
        let s3 = S3Server::start()?;
        // Test PostgreSQL trusts loopback, so any password works: it must never be logged.
        let database_url = fresh_postgres_database(&postgres_admin_url()?)
            .await
            .replacen(
                "postgres://postgres@",
                "postgres://postgres:pg-secret-password@",
                1,
            );
        let env = cluster_env(&s3, extra);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let scratch = tempfile::tempdir().unwrap();
        add_users(scratch.path(), Some(&database_url), &env, users);
        let replica = || {
            let tmp = std::sync::Arc::new(tempfile::tempdir().unwrap());
            Berthd::spawn(
                tmp.path().join("data"),
                Some(database_url.clone()),
                Some(tmp),
                &env,
            )
        };
        let (a, b) = (replica(), replica());
        Some(Cluster { s3, a, b })
    }
}

fn cluster_env(s3: &S3Server, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut env = s3.env();
    env.push(("BERTH_LOG", "info,sqlx=warn".into()));
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    env
}

/// Nothing in a replica's own data directory: the state is all shared.
fn holds_no_state(replica: &Berthd) -> bool {
    std::fs::read_dir(&replica.data_dir).map_or(true, |mut d| d.next().is_none())
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn get_bytes(c: &Client, path: &str) -> Vec<u8> {
    let r = c.call("GET", path).await;
    assert_eq!(r.status(), 200, "GET {path}");
    r.bytes().await.unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_through_one_replica_pull_through_the_other() {
    let Some(cluster) = Cluster::start(&[ALICE], &[]).await else {
        return;
    };
    // A token from replica a is good on replica b: the signing key is in the database.
    let token = bearer(
        &cluster.a.client(),
        Some((ALICE.0, ALICE.1)),
        "repository:alice/app:push,pull,delete",
    )
    .await;
    let (a, b) = (
        cluster.a.client().with_token(&token),
        cluster.b.client().with_token(&token),
    );
    let layer = pattern(3 * MIB + 17, 1);
    let (manifest, digest) = a.push_image("alice/app", "v1", &layer).await;
    let r = b.call("GET", "/v2/alice/app/manifests/v1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["docker-content-digest"], digest.as_str());
    assert_eq!(r.bytes().await.unwrap(), manifest);
    let pulled = get_bytes(&b, &format!("/v2/alice/app/blobs/{}", sha256(&layer))).await;
    assert_eq!(pulled, layer);
    // Pushed on b, seen at once on a (cached reads are confirmed against the database).
    let (_, digest2) = b.push_image("alice/app", "v1", b"second layer").await;
    let r = a.call("HEAD", "/v2/alice/app/manifests/v1").await;
    assert_eq!(r.headers()["docker-content-digest"], digest2.as_str());
    let r = a
        .call("DELETE", &format!("/v2/alice/app/manifests/{digest2}"))
        .await;
    assert_eq!(r.status(), 202);
    assert_eq!(
        b.call("GET", "/v2/alice/app/manifests/v1").await.status(),
        404
    );
    assert!(holds_no_state(&cluster.a) && holds_no_state(&cluster.b));

    // A real client: skopeo pushes an image through a and copies it back out of b.
    if !require_tool("skopeo") || !require_tool("umoci") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    umoci_busybox(tmp.path(), "cluster");
    let dir = tmp.path().display();
    let creds = format!("{}:{}", ALICE.0, ALICE.1);
    run(Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false", "--dest-creds", &creds])
        .arg(format!("oci:{dir}/img:busybox"))
        .arg(format!("docker://{}/alice/busybox:1", cluster.a.addr)));
    run(Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", "--src-creds", &creds])
        .arg(format!("docker://{}/alice/busybox:1", cluster.b.addr))
        .arg(format!("oci:{dir}/back:busybox")));
    let raw = |layout: &str| {
        run(Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("oci:{dir}/{layout}:busybox")))
    };
    assert_eq!(raw("img"), raw("back"));
}

/// Read-your-writes across replicas, in a tight loop: b has the old state cached each
/// time (it just served it), a changes it and answers, and b's next answer is the new
/// state — a moved tag, a new tag in the list, a deleted manifest, an unlinked blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_replica_is_read_at_once_through_another() {
    let Some(cluster) = Cluster::start(&[], &[]).await else {
        return;
    };
    let (a, b) = (cluster.a.client(), cluster.b.client());
    let digest_of = |r: &reqwest::Response| {
        r.headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    let tags = |c: Client| async move {
        let r = c.call("GET", "/v2/ryw/app/tags/list").await;
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        body["tags"].as_array().cloned().unwrap_or_default()
    };
    let (manifest, mut previous) = a.push_image("ryw/app", "moving", b"layer 0").await;
    assert!(!manifest.is_empty());
    for i in 1..=100u32 {
        let layer = format!("layer {i}");
        // b serves (and caches) the current state.
        let r = b.call("GET", "/v2/ryw/app/manifests/moving").await;
        assert_eq!(digest_of(&r), previous, "round {i}");
        assert!(!tags(b.clone())
            .await
            .contains(&Value::from(format!("t{i}"))));

        let (manifest, digest) = a.push_image("ryw/app", "moving", layer.as_bytes()).await;
        let r = a
            .push_manifest("ryw/app", &format!("t{i}"), OCI_MANIFEST, &manifest)
            .await;
        assert_eq!(r.status(), 201);
        let r = b.call("GET", "/v2/ryw/app/manifests/moving").await;
        assert_eq!(r.status(), 200, "round {i}");
        assert_eq!(digest_of(&r), digest, "round {i}: the moved tag");
        assert!(
            tags(b.clone())
                .await
                .contains(&Value::from(format!("t{i}"))),
            "round {i}: the new tag"
        );

        // The previous image: cached on b by digest, deleted through a.
        let by_digest = format!("/v2/ryw/app/manifests/{previous}");
        assert_eq!(b.call("HEAD", &by_digest).await.status(), 200);
        assert_eq!(a.call("DELETE", &by_digest).await.status(), 202);
        assert_eq!(
            b.call("GET", &by_digest).await.status(),
            404,
            "round {i}: the deleted manifest"
        );
        let blob = format!(
            "/v2/ryw/app/blobs/{}",
            sha256(format!("layer {}", i - 1).as_bytes())
        );
        assert_eq!(b.call("HEAD", &blob).await.status(), 200);
        assert_eq!(a.call("DELETE", &blob).await.status(), 202);
        assert_eq!(
            b.call("HEAD", &blob).await.status(),
            404,
            "round {i}: the unlinked blob"
        );
        previous = digest;
    }
}

/// Failed logins count across replicas: a burst of wrong passwords spread over two
/// replicas gets no more password checks than one replica allows, and then the right
/// password is refused on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_limits_hold_across_replicas() {
    let Some(cluster) = Cluster::start(&[ALICE], &[]).await else {
        return;
    };
    let login = |c: Client, password: String| async move {
        c.request("GET", "/auth/token?service=berth")
            .basic_auth(ALICE.0, Some(password))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    let guesses: Vec<_> = (0..40)
        .map(|i| {
            let replica = if i % 2 == 0 { &cluster.a } else { &cluster.b };
            login(replica.client(), format!("guess-{i}-pw"))
        })
        .collect();
    let statuses = futures::future::join_all(guesses).await;
    let checked = statuses.iter().filter(|&&s| s == 401).count();
    let refused = statuses.iter().filter(|&&s| s == 429).count();
    assert!(checked <= 5, "{checked} checked: {statuses:?}");
    assert_eq!(checked + refused, 40, "{statuses:?}");
    for replica in [&cluster.a, &cluster.b] {
        assert_eq!(
            login(replica.client(), ALICE.1.into()).await,
            429,
            "the right password too, on either replica"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_upload_moves_between_replicas() {
    let Some(cluster) = Cluster::start(&[], &[]).await else {
        return;
    };
    let (a, b) = (cluster.a.client(), cluster.b.client());
    let data = pattern(27 * MIB + 5, 2);
    let mut location = a.start_upload("team/big").await;
    let mut offset = 0;
    // PATCHes of 6 MiB and 3 MiB, alternating between the replicas.
    for (i, size) in [6, 3, 6, 3, 6, 3].iter().map(|m| m * MIB).enumerate() {
        let c = if i % 2 == 0 { &b } else { &a };
        let end = (offset + size).min(data.len());
        let r = c
            .request("PATCH", &location)
            .header("Content-Range", format!("{offset}-{}", end - 1))
            .body(data[offset..end].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "PATCH {i}: {}", r.text().await.unwrap());
        assert_eq!(r.headers()["range"], format!("0-{}", end - 1).as_str());
        location = r.headers()["location"].to_str().unwrap().to_owned();
        offset = end;
        // The other replica reports the same progress.
        let other = if i % 2 == 0 { &a } else { &b };
        let status = other.call("GET", &location).await;
        assert_eq!(status.status(), 204);
        assert_eq!(status.headers()["range"], format!("0-{}", end - 1).as_str());
    }
    // An out-of-order chunk is refused whichever replica gets it.
    let r = b
        .request("PATCH", &location)
        .header("Content-Range", "0-9")
        .body(vec![0u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    let digest = sha256(&data);
    a.finish_upload(&location, &data, offset, &digest).await;
    assert_eq!(
        get_bytes(&b, &format!("/v2/team/big/blobs/{digest}")).await,
        data
    );
    // A ranged read across the chunk objects, from the replica that finished nothing.
    let r = b
        .request("GET", &format!("/v2/team/big/blobs/{digest}"))
        .header("Range", format!("bytes={}-{}", 6 * MIB - 3, 9 * MIB + 2))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap(), &data[6 * MIB - 3..=9 * MIB + 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_push_loses_nothing_acknowledged() {
    let Some(mut cluster) = Cluster::start(&[], &[]).await else {
        return;
    };
    let (a, b) = (cluster.a.client(), cluster.b.client());
    let data = pattern(12 * MIB, 3);
    let location = a.start_upload("team/app").await;
    let r = a
        .request("PATCH", &location)
        .header("Content-Range", format!("0-{}", 6 * MIB - 1))
        .body(data[..6 * MIB].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // The next chunk is on its way, slowly, when replica a dies.
    let slow = a
        .request("PATCH", &location)
        .header("Content-Range", format!("{}-{}", 6 * MIB, 12 * MIB - 1))
        .body(slow_body(
            data[6 * MIB..].to_vec(),
            256 * 1024,
            Duration::from_millis(100),
        ))
        .send();
    let in_flight = tokio::spawn(slow);
    tokio::time::sleep(Duration::from_millis(800)).await;
    cluster.a.kill();
    assert!(in_flight.await.unwrap().is_err(), "the connection died");
    // Replica b knows what was acknowledged, and the client goes on from there.
    let r = b.call("GET", &location).await;
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["range"], format!("0-{}", 6 * MIB - 1).as_str());
    let digest = sha256(&data);
    b.finish_upload(&location, &data, 6 * MIB, &digest).await;
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = b.push_blob("team/app", config).await;
    let manifest = image_manifest(&config_digest, config.len(), &[(&digest, data.len())], None);
    let r = b
        .push_manifest("team/app", "latest", OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        get_bytes(&b, &format!("/v2/team/app/blobs/{digest}")).await,
        data
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_of_one_tag_end_consistent() {
    let Some(cluster) = Cluster::start(&[], &[]).await else {
        return;
    };
    let (a, b) = (cluster.a.client(), cluster.b.client());
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = a.push_blob("team/race", config).await;
    let mut manifests = Vec::new();
    for i in 0..20u8 {
        let layer = vec![i; 100];
        let digest = a.push_blob("team/race", &layer).await;
        manifests.push(image_manifest(
            &config_digest,
            config.len(),
            &[(&digest, layer.len())],
            None,
        ));
    }
    // Ten rounds; in each, both replicas set `latest` to a different manifest at once.
    for round in manifests.chunks(2) {
        let (ra, rb) = tokio::join!(
            a.push_manifest("team/race", "latest", OCI_MANIFEST, &round[0]),
            b.push_manifest("team/race", "latest", OCI_MANIFEST, &round[1]),
        );
        assert_eq!(ra.status(), 201, "{}", ra.text().await.unwrap());
        assert_eq!(rb.status(), 201, "{}", rb.text().await.unwrap());
        let on_a = a.call("GET", "/v2/team/race/manifests/latest").await;
        let on_b = b.call("GET", "/v2/team/race/manifests/latest").await;
        let (da, db) = (
            on_a.headers()["docker-content-digest"].clone(),
            on_b.headers()["docker-content-digest"].clone(),
        );
        assert_eq!(da, db, "both replicas agree on the tag");
        assert!([sha256(&round[0]), sha256(&round[1])].contains(&da.to_str().unwrap().to_owned()));
    }
    let tags: Value = b
        .call("GET", "/v2/team/race/tags/list")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["latest"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_migrate_once() {
    let Some(s3) = S3Server::start() else {
        return;
    };
    let Some(admin) = postgres_admin_url() else {
        return;
    };
    let database_url = fresh_postgres_database(&admin).await;
    let env = cluster_env(&s3, &[("BERTH_AUTH_ENABLED", "true")]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Three replicas on an empty database at the same moment.
    let replicas: Vec<Berthd> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..3)
            .map(|_| {
                let (env, url) = (&env, &database_url);
                scope.spawn(move || {
                    let tmp = std::sync::Arc::new(tempfile::tempdir().unwrap());
                    Berthd::spawn(tmp.path().join("data"), Some(url.clone()), Some(tmp), env)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let psql = |sql: &str| psql(&database_url, sql);
    // Every migration recorded exactly once (the lists grow; duplicates never may).
    for table in ["seaql_migrations", "berth_auth_migrations"] {
        let counts = psql(&format!(
            "SELECT count(*) || ' ' || count(DISTINCT version) FROM {table}"
        ));
        let (all, distinct) = counts.split_once(' ').unwrap();
        assert!(all.parse::<u32>().unwrap() >= 4, "{table}: {counts}");
        assert_eq!(all, distinct, "{table}: a migration applied twice");
    }
    assert_eq!(psql("SELECT count(*) FROM signing_keys"), "1");
    // They all serve, with one signing key: a token from one works on another.
    let token = bearer(&replicas[0].client(), None, "repository:x/y:pull").await;
    let r = replicas[2]
        .client()
        .with_token(&token)
        .call("GET", "/v2/x/y/tags/list")
        .await;
    // Verified (a token another replica cannot verify gets 401 invalid_token), then
    // refused: x/y does not exist, which anonymous callers learn no more about than
    // about a private repository.
    assert_eq!(r.status(), 403, "the token verified on another replica");
    assert_eq!(error_code(r).await, "DENIED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_uploads_expire_with_their_data() {
    let Some(cluster) = Cluster::start(&[], &[("BERTH_STORAGE_UPLOAD_EXPIRY_SECS", "2")]).await
    else {
        return;
    };
    let a = cluster.a.client();
    let before = cluster.s3.object_count();
    let location = a.start_upload("team/app").await;
    let r = a
        .request("PATCH", &location)
        .body(vec![7u8; MIB])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(cluster.s3.object_count(), before + 1);
    // An upload kept busy does not expire.
    let busy = a.start_upload("team/app").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut busy_location = busy;
    loop {
        let r = a
            .request("PATCH", &busy_location)
            .body(vec![1u8; 10])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "a busy upload stays");
        busy_location = r.headers()["location"].to_str().unwrap().to_owned();
        let status = cluster.b.client().call("GET", &location).await;
        if status.status() == 404 {
            assert_eq!(error_code(status).await, "BLOB_UPLOAD_UNKNOWN");
            break;
        }
        assert!(Instant::now() < deadline, "the idle upload never expired");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The busy upload is still known (completing it with a wrong digest discards it)...
    let r = a
        .request("PUT", &format!("{busy_location}?digest={}", sha256(b"")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    // ...and the idle one's data went with it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.s3.object_count() != before {
        assert!(Instant::now() < deadline, "upload objects left behind");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_gets_redirect_to_presigned_urls_when_asked() {
    let Some(cluster) = Cluster::start(&[], &[("BERTH_STORAGE_REDIRECT", "true")]).await else {
        return;
    };
    let a = cluster.a.client();
    let data = pattern(2 * MIB, 4);
    let digest = a.push_blob("team/app", &data).await;
    let r = cluster
        .b
        .client()
        .call("GET", &format!("/v2/team/app/blobs/{digest}"))
        .await;
    assert_eq!(r.status(), 307);
    assert_eq!(r.headers()["docker-content-digest"], digest.as_str());
    let url = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(url.starts_with(&cluster.s3.endpoint), "{url}");
    // The pre-signed URL works without any credentials.
    let fetched = reqwest::get(&url).await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.bytes().await.unwrap(), data);
    // HEAD is answered by berthd; a blob stored in several objects is served directly.
    let r = a
        .call("HEAD", &format!("/v2/team/app/blobs/{digest}"))
        .await;
    assert_eq!(r.status(), 200);
    let location = a.start_upload("team/app").await;
    let r = a
        .request("PATCH", &location)
        .body(data[..MIB].to_vec())
        .send()
        .await
        .unwrap();
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let two = [&data[..MIB], b"tail"].concat();
    a.finish_upload(&location, &two, MIB, &sha256(&two)).await;
    let r = a
        .call("GET", &format!("/v2/team/app/blobs/{}", sha256(&two)))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), two);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_request_ids() {
    let Some(mut cluster) = Cluster::start(&[], &[("BERTH_LOG_FORMAT", "json")]).await else {
        return;
    };
    let a = cluster.a.client();
    for probe in ["/healthz", "/readyz"] {
        let r = a.call("GET", probe).await;
        assert_eq!(r.status(), 200, "{probe}");
    }
    let data = pattern(MIB, 5);
    let digest = a.push_blob("team/app", &data).await;
    get_bytes(&a, &format!("/v2/team/app/blobs/{digest}")).await;
    // The caller's request id comes back and is on the request's log lines.
    let r = a
        .request("GET", "/v2/team/app/manifests/missing")
        .header("X-Request-Id", "lb-req-4711")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "lb-req-4711");
    let generated = a.call("GET", "/v2/").await;
    assert_eq!(generated.headers()["x-request-id"].len(), 32);

    let metrics = a.call("GET", "/metrics").await;
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    let value = |line_start: &str, labels: &[&str]| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line_start) && labels.iter().all(|x| l.contains(x)))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {line_start} {labels:?} in\n{text}"))
    };
    let blob_route = r#"route="/v2/{name:.+}/blobs/{digest}""#;
    assert_eq!(
        value(
            "berth_http_requests_total",
            &[blob_route, r#"method="GET""#, r#"status="200""#]
        ),
        1.0
    );
    assert!(
        value(
            "berth_http_request_duration_seconds_count",
            &[blob_route, r#"method="GET""#]
        ) >= 1.0
    );
    assert!(value("berth_http_received_bytes_total", &[]) >= MIB as f64);
    assert!(value("berth_http_sent_bytes_total", &[]) >= MIB as f64);
    assert_eq!(value("berth_uploads_in_progress", &[]), 0.0);
    assert_eq!(
        value("berth_backend_errors_total", &[r#"backend="objects""#]),
        0.0
    );

    // Without object storage the replica is alive but not ready, and says why.
    cluster.s3.kill();
    assert_eq!(a.call("GET", "/healthz").await.status(), 200);
    let r = a.call("GET", "/readyz").await;
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["failing"], "object storage");
    let r = a
        .request(
            "POST",
            &format!("/v2/team/app/blobs/uploads/?digest={}", sha256(b"x")),
        )
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(error_code(r).await, "UNKNOWN");
    let r = a.call("GET", &format!("/v2/team/app/blobs/{digest}")).await;
    // Headers may go out before the store fails; the body never completes.
    assert!(r.status() == 500 || r.bytes().await.is_err());
    let text = a.call("GET", "/metrics").await.text().await.unwrap();
    assert!(text
        .lines()
        .any(|l| l.starts_with("berth_backend_errors_total")
            && l.contains("objects")
            && !l.ends_with(" 0")));

    // JSON log lines; the request id on the request's lines; no secret anywhere.
    let log = cluster.a.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    assert!(lines.iter().any(|l| {
        l["fields"]["path"] == "/v2/team/app/manifests/missing"
            && l["span"]["id"] == "lb-req-4711"
            && l["fields"]["status"] == 404
    }));
    for secret in [S3_SECRET_KEY, "pg-secret-password"] {
        assert!(!log.contains(secret), "{secret} was logged");
    }
}
