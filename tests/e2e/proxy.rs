//! The pull-through proxy cache (`[[proxy]]` tables) end to end: real berthd
//! processes in front of real upstreams on loopback — another berthd with token auth,
//! Distribution, a fake server that lies about digests and answers 429/503/404, a
//! relay that counts what reaches the upstream — pulled through by skopeo, the Docker
//! Engine and raw HTTP, with the upstream stopped, a tag moved, a size limit and
//! `berthd gc`, writes refused, metrics and access rules.

#[path = "proxy_fakes.rs"]
pub(crate) mod fakes;

use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_tests::containers::{docker, docker_available};
use berth_tests::*;
use serde_json::{json, Value};

use crate::auth::{bearer, claims};
use fakes::*;

/// (name, password, admin)
type User = (&'static str, &'static str, bool);

const ALICE: User = ("alice", "alice-secret-pw", false);
const BOB: User = ("bobby", "bobby-secret-pw", false);
const CAROL: User = ("carol1", "carol-secret-pw", false);
const ROOT: User = ("rooty", "rooty-secret-pw", true);

/// `proxy="<prefix>"` series of the proxy metrics.
fn proxy_metric(text: &str, name: &str, prefix: &str) -> f64 {
    metric(text, name, &[("proxy", prefix)])
}

fn upstream_errors(text: &str, prefix: &str, kind: &str) -> f64 {
    metric(
        text,
        "berth_proxy_upstream_errors_total",
        &[("proxy", prefix), ("kind", kind)],
    )
}

/// Asserts an answer is `status` with spec error `code`; returns its message.
async fn expect_error(r: reqwest::Response, status: u16, code: &str, what: &str) -> String {
    let (got, got_code, message) = error_of(r).await;
    assert_eq!(
        (got, got_code.as_str()),
        (status, code),
        "{what}: expected {status} {code}, got {got} {got_code}: {message}"
    );
    message
}

/// No request was answered 500: the contract's "never 500".
fn assert_no_500(p: &ProxyServer) {
    let log = p.s.log();
    let failed: Vec<&str> = log.lines().filter(|l| l.contains("status=500")).collect();
    assert!(failed.is_empty(), "answered 500:\n{}", failed.join("\n"));
}

/// The blobs (config, then layers) a manifest names.
fn blobs_of(manifest: &[u8]) -> Vec<(String, usize)> {
    let m: Value = serde_json::from_slice(manifest).unwrap();
    let entry = |v: &Value| {
        (
            v["digest"].as_str().unwrap().to_owned(),
            v["size"].as_u64().unwrap() as usize,
        )
    };
    let mut out = vec![entry(&m["config"])];
    out.extend(m["layers"].as_array().unwrap().iter().map(entry));
    out
}

fn skopeo(args: &[&str]) -> String {
    run(Command::new("skopeo").args(args))
}

/// The `sha256:` word a `docker push` printed.
fn pushed_digest(output: &str) -> String {
    output
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("docker push prints the digest: {output}"))
        .to_owned()
}

// ---------------------------------------------------------------------------------
// 1. A private berth upstream with token auth.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_berth_upstream_pulled_by_skopeo_and_docker() {
    if !require_tool("skopeo") || !require_tool("umoci") {
        return;
    }
    let upstream = Berthd::start_with_users(Db::Sqlite, &[ALICE])
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().display().to_string();
    let marker = format!("proxied-from-a-private-berth-{}", std::process::id());
    crate::clients::umoci_busybox(tmp.path(), &marker);
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &format!("{}:{}", ALICE.0, ALICE.1),
        &format!("oci:{d}/img:busybox"),
        &format!("docker://{}/alice/app:1", upstream.addr),
    ]);
    upstream.admin_ok(&["repo", "private", "alice/app"]);
    // Anonymous callers cannot read it upstream: the proxy needs the credentials.
    let anonymous = bearer(&upstream.client(), None, "repository:alice/app:pull").await;
    let r = upstream
        .client()
        .with_token(&anonymous)
        .call("GET", "/v2/alice/app/manifests/1")
        .await;
    assert_eq!(r.status(), 403, "the upstream repository is private");

    // A two-platform index next to it: an arm64 sibling sharing the layers.
    let up = crate::auth::pusher(&upstream, ALICE, "alice/app").await;
    let (amd64, amd64_digest, amd64_type) = get_manifest(&up, "alice/app", "1").await;
    let blobs = blobs_of(&amd64);
    let (config_digest, _) = &blobs[0];
    let config = up
        .call("GET", &format!("/v2/alice/app/blobs/{config_digest}"))
        .await
        .bytes()
        .await
        .unwrap();
    let mut arm_config: Value = serde_json::from_slice(&config).unwrap();
    arm_config["architecture"] = json!("arm64");
    let arm_config = serde_json::to_vec(&arm_config).unwrap();
    let arm_config_digest = up.push_blob("alice/app", &arm_config).await;
    let mut arm: Value = serde_json::from_slice(&amd64).unwrap();
    arm["config"]["digest"] = json!(arm_config_digest);
    arm["config"]["size"] = json!(arm_config.len());
    let arm = serde_json::to_vec(&arm).unwrap();
    let arm_digest = sha256(&arm);
    let r = up
        .push_manifest("alice/app", &arm_digest, &amd64_type, &arm)
        .await;
    assert_eq!(
        r.status(),
        201,
        "arm64 manifest: {}",
        r.text().await.unwrap()
    );
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": amd64_type, "digest": amd64_digest, "size": amd64.len(), "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": amd64_type, "digest": arm_digest, "size": arm.len(), "platform": {"os": "linux", "architecture": "arm64"}},
        ]
    }))
    .unwrap();
    let index_digest = sha256(&index);
    let r = up
        .push_manifest("alice/app", "multi", OCI_INDEX, &index)
        .await;
    assert_eq!(r.status(), 201, "index: {}", r.text().await.unwrap());

    let config = proxy_table(
        "up",
        &upstream.url,
        &[("username_env", "UP_USER"), ("password_env", "UP_PASSWORD")],
    ) + &proxy_table("nocreds", &upstream.url, &[]);
    let p = ProxyServer::start(
        Db::Sqlite,
        &config,
        &[],
        &[("UP_USER", ALICE.0), ("UP_PASSWORD", ALICE.1)],
        None,
        |_, _, _| {},
    )
    .await
    .unwrap();
    let c = p.client();
    let via = format!("docker://{}/up/alice/app", p.s.addr);

    // skopeo: the manifest and every blob come back byte-identical, to dir: and oci:.
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("{via}:1"),
        &format!("dir:{d}/pulled"),
    ]);
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("{via}:1"),
    ]);
    assert_eq!(
        raw.as_bytes(),
        &amd64[..],
        "the manifest through the proxy is the upstream's bytes"
    );
    for (digest, size) in &blobs {
        let hex = digest.strip_prefix("sha256:").unwrap();
        let original = std::fs::read(tmp.path().join("img/blobs/sha256").join(hex)).unwrap();
        let pulled = std::fs::read(tmp.path().join("pulled").join(hex))
            .unwrap_or_else(|e| panic!("skopeo wrote no {digest}: {e}"));
        assert_eq!(pulled.len(), *size);
        assert!(original == pulled, "blob {digest} changed on its way");
    }
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("{via}:1"),
        &format!("oci:{d}/copied:1"),
    ]);
    let copied = skopeo(&["inspect", "--raw", &format!("oci:{d}/copied:1")]);
    assert_eq!(copied.as_bytes(), &amd64[..], "oci: layout copy");

    // The index: every platform with skopeo --all, one child by digest on its own.
    skopeo(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        &format!("{via}:multi"),
        &format!("dir:{d}/multi"),
    ]);
    let files = file_digests(&tmp.path().join("multi"));
    for (what, digest) in [
        ("index", &index_digest),
        ("amd64 manifest", &amd64_digest),
        ("arm64 manifest", &arm_digest),
        ("arm64 config", &arm_config_digest),
        ("amd64 config", config_digest),
        ("layer", &blobs[1].0),
    ] {
        assert!(
            files.contains(digest),
            "skopeo copy --all through the proxy lacks the {what} {digest}: {files:?}"
        );
    }
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("{via}@{arm_digest}"),
        &format!("dir:{d}/arm"),
    ]);
    let files = file_digests(&tmp.path().join("arm"));
    assert!(files.contains(&arm_digest) && files.contains(&arm_config_digest));
    let (bytes, _, media_type) = get_manifest(&c, "up/alice/app", &arm_digest).await;
    assert_eq!(bytes, arm);
    assert_eq!(media_type, amd64_type);
    let (bytes, digest, media_type) = get_manifest(&c, "up/alice/app", "multi").await;
    assert_eq!((bytes, digest), (index.clone(), index_digest.clone()));
    assert_eq!(media_type, OCI_INDEX);

    // The tag list goes through too.
    let r = c.call("GET", "/v2/up/alice/app/tags/list").await;
    assert_eq!(r.status(), 200, "tags/list through the proxy");
    let tags: Value = r.json().await.unwrap();
    let tags: Vec<&str> = tags["tags"]
        .as_array()
        .unwrap_or_else(|| panic!("no tags: {tags}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(tags.contains(&"1") && tags.contains(&"multi"), "{tags:?}");

    // Without credentials the same upstream repository is refused (never a 5xx).
    let r = manifest_request(&c, "GET", "nocreds/alice/app", "1").await;
    let (status, code, message) = error_of(r).await;
    // The upstream's refusal is named: 502 UNAVAILABLE "upstream … answered 403 …".
    assert!(
        status == 502 && code == "UNAVAILABLE" && message.contains("answered 40"),
        "a private upstream repository without credentials: {status} {code} {message}"
    );
    let text = metrics(&c).await;
    assert!(
        upstream_errors(&text, "nocreds", "denied") >= 1.0,
        "kind=\"denied\" counted: {}",
        text.lines()
            .filter(|l| l.contains("berth_proxy"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The proxy signed in with a token from the upstream's realm; the password stays
    // out of the proxy's log.
    assert!(
        upstream.log().contains("path=/auth/token"),
        "the proxy asked the upstream's token endpoint"
    );
    assert!(!p.s.log().contains(ALICE.1), "the password is never logged");
    assert_no_500(&p);

    // The Docker Engine pulls, runs, and pulls the index for its platform.
    if !docker_available() {
        return;
    }
    let image = format!("{}/up/alice/app:1", p.s.addr);
    let multi = format!("{}/up/alice/app:multi", p.s.addr);
    docker(&["pull", &image]);
    assert_eq!(
        docker(&["run", "--rm", &image, "/bin/busybox", "cat", "/marker"]),
        marker
    );
    let repo_digest = docker(&["inspect", "--format", "{{index .RepoDigests 0}}", &image]);
    assert!(repo_digest.ends_with(&amd64_digest), "{repo_digest}");
    docker(&["pull", &multi]);
    // The same image as `:1` on this host: it has both digests now.
    let repo_digests = docker(&[
        "inspect",
        "--format",
        "{{range .RepoDigests}}{{println .}}{{end}}",
        &multi,
    ]);
    assert!(
        repo_digests
            .lines()
            .any(|l| l.trim().ends_with(&format!("/up/alice/app@{index_digest}"))),
        "pulled by the index digest: {repo_digests}"
    );
    assert_eq!(
        docker(&["run", "--rm", &multi, "/bin/busybox", "cat", "/marker"]),
        marker
    );
    docker(&["rmi", "-f", &image, &multi]);
}

// ---------------------------------------------------------------------------------
// 2. Distribution upstream, and the mirror listener.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distribution_upstream_and_the_mirror_listener() {
    if !docker_available() || !require_tool("skopeo") {
        return;
    }
    let Some(dist) = Distribution::start() else {
        return;
    };
    let marker = format!("proxied-from-distribution-{}", std::process::id());
    let team = format!("{}/team/bb:1", dist.addr);
    let library = format!("{}/library/bb:1", dist.addr);
    crate::clients::docker_build_busybox(&team, &marker);
    let digest = pushed_digest(&docker(&["push", &team]));
    docker(&["tag", &team, &library]);
    assert_eq!(pushed_digest(&docker(&["push", &library])), digest);
    // A second tag, for the mirror's tag list to have a next page.
    let library2 = format!("{}/library/bb:2", dist.addr);
    docker(&["tag", &team, &library2]);
    docker(&["push", &library2]);
    docker(&["rmi", "-f", &team, &library, &library2]);

    let mirror = format!("127.0.0.1:{}", free_port());
    let config = proxy_table("dist", &dist.url, &[("mirror_listen", &mirror)]);
    let p = ProxyServer::start(Db::Sqlite, &config, &[], &[], Some(&mirror), |_, _, _| {})
        .await
        .unwrap();
    let c = p.client();

    // docker pull through the prefix, and run.
    let image = format!("{}/dist/team/bb:1", p.s.addr);
    docker(&["pull", &image]);
    assert_eq!(docker(&["run", "--rm", &image]), marker);
    let repo_digest = docker(&["inspect", "--format", "{{index .RepoDigests 0}}", &image]);
    assert!(repo_digest.ends_with(&digest), "{repo_digest} vs {digest}");
    docker(&["rmi", "-f", &image]);
    let upstream_manifest = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{team}"),
    ]);
    let blobs = blobs_of(upstream_manifest.as_bytes());
    // Each blob reached Distribution once at most: docker skips a layer its daemon
    // holds already (another test's image may share the busybox layer), never one
    // fetched twice through the proxy.
    for (blob, _) in &blobs {
        let fetched = dist.requests("GET", &format!("/v2/team/bb/blobs/{blob}"));
        assert!(
            fetched <= 1,
            "{blob} fetched from Distribution {fetched} times"
        );
    }
    assert!(
        dist.requests("GET", "/v2/team/bb/blobs/") >= 1,
        "docker's pull went through to Distribution"
    );

    // skopeo: the same bytes; a second pull reaches Distribution for no blob.
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().display();
    let via = format!("docker://{}/dist/team/bb:1", p.s.addr);
    assert_eq!(
        skopeo(&["inspect", "--raw", "--tls-verify=false", &via]),
        upstream_manifest
    );
    for dir in ["pulled", "again"] {
        skopeo(&[
            "copy",
            "--src-tls-verify=false",
            &via,
            &format!("dir:{d}/{dir}"),
        ]);
        for (blob, size) in &blobs {
            let hex = blob.strip_prefix("sha256:").unwrap();
            let bytes = std::fs::read(tmp.path().join(dir).join(hex)).unwrap();
            assert_eq!((bytes.len(), sha256(&bytes)), (*size, blob.clone()));
        }
    }
    // Over both pulls, every blob reached Distribution exactly once: what docker's
    // pull cached is not fetched again, what it skipped was fetched for skopeo.
    for (blob, _) in &blobs {
        let fetched = dist.requests("GET", &format!("/v2/team/bb/blobs/{blob}"));
        assert_eq!(fetched, 1, "{blob}: cached blobs are not fetched again");
    }

    // The mirror listener: what Docker Engine sends to a registry mirror.
    let m = p.mirror_client();
    let r = m.call("GET", "/v2/").await;
    assert_eq!(r.status(), 200, "GET /v2/ on the mirror");
    assert_eq!(
        r.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
    let r = manifest_request(&m, "GET", "library/bb", "1").await;
    assert_eq!(r.status(), 200, "mirror GET /v2/library/bb/manifests/1");
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(r.headers()["docker-content-digest"], digest.as_str());
    let body = r.bytes().await.unwrap().to_vec();
    assert_eq!(sha256(&body), digest);
    assert_eq!(body, upstream_manifest.as_bytes());
    let asked = dist.requests("GET", "/v2/library/bb/");
    let (main, main_digest, _) = get_manifest(&c, "dist/library/bb", "1").await;
    assert_eq!(
        (main, main_digest),
        (body.clone(), digest.clone()),
        "the mirror form is the prefixed name on the main listener"
    );
    assert_eq!(
        dist.requests("GET", "/v2/library/bb/"),
        asked,
        "one cache: what the mirror fetched, the prefixed name serves"
    );
    let r = manifest_request(&m, "HEAD", "library/bb", "1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["docker-content-digest"], digest.as_str());
    let (by_digest, _, _) = get_manifest(&m, "library/bb", &digest).await;
    assert_eq!(by_digest, body);
    for (blob, size) in &blobs {
        let r = m
            .call("HEAD", &format!("/v2/library/bb/blobs/{blob}"))
            .await;
        assert_eq!(r.status(), 200, "mirror HEAD blob {blob}");
        assert_eq!(r.headers()["content-length"], size.to_string().as_str());
        let (status, len, got, _) = stream_blob(&m, "library/bb", blob, false)
            .await
            .unwrap_or_else(|e| panic!("mirror GET blob {blob}: {e}"));
        assert_eq!((status, len as usize, &got), (200, *size, blob));
    }
    let r = manifest_request(&m, "GET", "library/none", "1").await;
    expect_error(
        r,
        404,
        "MANIFEST_UNKNOWN",
        "unknown upstream image on the mirror",
    )
    .await;
    // The mirror's tag list names the repository as addressed there (so would its link
    // to a next page: Distribution 2.8 does not page tag lists; see the unit test).
    let r = m.call("GET", "/v2/library/bb/tags/list").await;
    assert_eq!(r.status(), 200);
    let listed: serde_json::Value = r.json().await.unwrap();
    assert_eq!(listed["name"], "library/bb");
    // (In the upstream's order, which Distribution 2.8 does not sort.)
    let mut tags: Vec<&str> = listed["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    tags.sort();
    assert_eq!(tags, ["1", "2"]);
    // A blob is served under a repository only where a manifest cached there lists it:
    // asking for a cached blob under any other name neither serves it nor makes that
    // name a repository.
    let (blob, _) = &blobs[0];
    let r = c
        .call("GET", &format!("/v2/dist/made/up/blobs/{blob}"))
        .await;
    expect_error(
        r,
        404,
        "BLOB_UNKNOWN",
        "a cached blob under an unknown name",
    )
    .await;
    let r = c
        .call("HEAD", &format!("/v2/dist/made/up/blobs/{blob}"))
        .await;
    assert_eq!(r.status(), 404, "HEAD: the upstream has no such repository");
    let catalog: serde_json::Value = c.call("GET", "/v2/_catalog").await.json().await.unwrap();
    let catalog = catalog.to_string();
    assert!(
        catalog.contains("dist/library/bb") && !catalog.contains("made/up"),
        "{catalog}"
    );
    // Docker pulls from the mirror listener as from a registry of its own.
    let from_mirror = format!("{mirror}/library/bb:1");
    docker(&["pull", &from_mirror]);
    assert_eq!(docker(&["run", "--rm", &from_mirror]), marker);
    docker(&["rmi", "-f", &from_mirror]);
    // The mirror is the proxy namespace: writes there are refused as under the prefix.
    let r = m.call("POST", "/v2/library/bb/blobs/uploads/").await;
    expect_error(r, 403, "DENIED", "upload POST on the mirror listener").await;
    let r = m
        .call("DELETE", &format!("/v2/library/bb/manifests/{digest}"))
        .await;
    expect_error(r, 403, "DENIED", "manifest DELETE on the mirror listener").await;
    assert_no_500(&p);
}

// ---------------------------------------------------------------------------------
// 3. The upstream stops; a tag moves.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_tags_when_the_upstream_is_down_and_moved_tags_after_the_ttl() {
    let mut upstream = Berthd::start(Db::Sqlite).await.unwrap();
    let u = upstream.client();
    let layer_a = seeded_bytes(31, 300_000);
    let (manifest_a, digest_a) = u.push_image("lib/app", "v", &layer_a).await;
    // An image whose manifest berth caches but whose layer nobody asks for until the
    // upstream is down.
    let layer_c = seeded_bytes(33, 100_000);
    let (manifest_c, _) = u.push_image("lib/app", "c", &layer_c).await;
    let config = proxy_table("up", &upstream.url, &[("tag_ttl", "4s")]);
    let p = ProxyServer::start(Db::Sqlite, &config, &[], &[], None, |_, _, _| {})
        .await
        .unwrap();
    let c = p.client();
    assert_eq!(get_manifest(&c, "up/lib/app", "c").await.0, manifest_c);
    let fetched = Instant::now();
    assert_eq!(pull_image(&c, "up/lib/app", "v").await, digest_a);

    // The tag moves upstream: before tag_ttl berth still answers the old digest.
    let layer_b = seeded_bytes(32, 300_000);
    let (_, digest_b) = u.push_image("lib/app", "v", &layer_b).await;
    let (_, digest, _) = get_manifest(&c, "up/lib/app", "v").await;
    assert!(
        fetched.elapsed() < Duration::from_millis(3500),
        "too slow to check the TTL: {:?}",
        fetched.elapsed()
    );
    assert_eq!(
        digest, digest_a,
        "within tag_ttl the cached digest is served"
    );
    tokio::time::sleep_until((fetched + Duration::from_millis(4600)).into()).await;
    assert_eq!(
        pull_image(&c, "up/lib/app", "v").await,
        digest_b,
        "after tag_ttl the tag is re-validated and the new digest served"
    );

    // The upstream stops.
    upstream.stop();
    let before = metrics(&c).await;
    tokio::time::sleep(Duration::from_millis(4600)).await;
    let (_, digest, _) = get_manifest(&c, "up/lib/app", "v").await;
    assert_eq!(digest, digest_b, "an expired tag is served stale");
    assert_eq!(pull_image(&c, "up/lib/app", "v").await, digest_b);
    let (bytes, _, _) = get_manifest(&c, "up/lib/app", &digest_a).await;
    assert_eq!(bytes, manifest_a, "the old image by digest");
    assert_blob(&c, "up/lib/app", &sha256(&layer_a), &layer_a).await;
    assert_blob(&c, "up/lib/app", &sha256(&layer_b), &layer_b).await;
    let after = metrics(&c).await;
    let stale = |t: &str| proxy_metric(t, "berth_proxy_stale_total", "up");
    assert!(
        stale(&after) > stale(&before),
        "stale answers counted: {} -> {}",
        stale(&before),
        stale(&after)
    );
    assert!(
        upstream_errors(&after, "up", "unreachable")
            > upstream_errors(&before, "up", "unreachable"),
        "unreachable upstream counted"
    );

    // Nothing cached: 503 UNAVAILABLE naming the upstream.
    let r = manifest_request(&c, "GET", "up/lib/app", "other").await;
    let message = expect_error(r, 503, "UNAVAILABLE", "an uncached tag, upstream down").await;
    assert!(
        message.contains(&upstream.url),
        "the message names the upstream {}: {message}",
        upstream.url
    );
    let r = manifest_request(&c, "HEAD", "up/lib/app", "other").await;
    assert_eq!(r.status(), 503, "HEAD of an uncached tag, upstream down");
    let r = c
        .call("GET", &format!("/v2/up/lib/app/blobs/{}", sha256(&layer_c)))
        .await;
    let message = expect_error(
        r,
        503,
        "UNAVAILABLE",
        "an uncached layer of a cached manifest, upstream down",
    )
    .await;
    assert!(message.contains(&upstream.url), "{message}");
    // A digest no cached manifest lists: unknown, or unavailable (never a 500).
    let missing = sha256(b"never pushed anywhere");
    let r = c
        .call("GET", &format!("/v2/up/lib/app/blobs/{missing}"))
        .await;
    let (status, code, message) = error_of(r).await;
    assert!(
        matches!(
            (status, code.as_str()),
            (404, "BLOB_UNKNOWN") | (503, "UNAVAILABLE")
        ),
        "a blob nothing lists, upstream down: {status} {code} {message}"
    );
    let r = manifest_request(&c, "GET", "up/lib/other", "1").await;
    expect_error(
        r,
        503,
        "UNAVAILABLE",
        "an uncached repository, upstream down",
    )
    .await;
    assert_no_500(&p);
}

// ---------------------------------------------------------------------------------
// 4. One upstream fetch for many clients; a client leaving does not stop it.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_fetch_a_blob_once_and_a_dropped_client_still_caches_it() {
    const BIG: usize = 200 << 20;
    const HALF: usize = 64 << 20;
    let mut upstream = Berthd::start(Db::Sqlite).await.unwrap();
    let u = upstream.client();
    let (big, big_digest) = {
        let data = seeded_bytes(41, BIG);
        let digest = u.push_blob("lib/big", &data).await;
        (data, digest)
    };
    drop(big); // only its digest is needed from here on
    let half = seeded_bytes(42, HALF);
    let half_digest = u.push_blob("lib/big", &half).await;
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = u.push_blob("lib/big", config).await;
    let manifest = image_manifest(
        &config_digest,
        config.len(),
        &[(&big_digest, BIG), (&half_digest, HALF)],
        None,
    );
    let r = u
        .push_manifest("lib/big", "1", OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    // 100 MiB/s a connection: the 20 requests all arrive while the first fetch runs.
    let relay = Relay::start(&upstream.addr, 100 << 20).await;
    let p = ProxyServer::start(
        Db::Sqlite,
        &proxy_table("up", &relay.url, &[]),
        &[],
        &[],
        None,
        |_, _, _| {},
    )
    .await
    .unwrap();
    let c = p.client();
    // As a client pulls: the manifest first, then its layers.
    assert_eq!(get_manifest(&c, "up/lib/big", "1").await.0, manifest);

    let pulls: Vec<_> = (0..20)
        .map(|_| {
            let (c, digest) = (c.clone(), big_digest.clone());
            tokio::spawn(async move { stream_blob(&c, "up/lib/big", &digest, false).await })
        })
        .collect();
    for (i, pull) in pulls.into_iter().enumerate() {
        let (status, len, digest, _) = pull
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("client {i}: {e}"));
        assert_eq!(status, 200, "client {i}");
        assert_eq!(len as usize, BIG, "client {i}: body length");
        assert_eq!(digest, big_digest, "client {i}: body content");
    }
    let path = format!("/v2/lib/big/blobs/{big_digest}");
    assert_eq!(
        relay.count("GET", &path),
        1,
        "blob GETs that reached the upstream: {:#?}",
        relay.request_lines()
    );
    let logged = upstream
        .log()
        .matches(&format!("method=GET path={path} "))
        .count();
    assert_eq!(logged, 1, "the upstream's access log agrees");

    // A client that leaves half-way: the fetch goes on and the blob is cached.
    relay.set_rate(16 << 20);
    let carried = relay.down_bytes();
    let mut r = c
        .call("GET", &format!("/v2/up/lib/big/blobs/{half_digest}"))
        .await;
    assert_eq!(r.status(), 200);
    let mut received = 0;
    while received < HALF / 2 {
        let chunk = r.chunk().await.unwrap().expect("more of the body");
        received += chunk.len();
    }
    drop(r);
    let left_at = Instant::now();
    eventually(
        Duration::from_secs(30),
        "berth fetching the rest of the blob after its client left",
        || {
            let got = relay.down_bytes() - carried;
            async move {
                (got >= HALF as u64)
                    .then_some(())
                    .ok_or(format!("{got} of {HALF} bytes carried"))
            }
        },
    )
    .await;
    eprintln!(
        "the client left after {received} bytes; the fetch ended {:?} later",
        left_at.elapsed()
    );
    let path = format!("/v2/lib/big/blobs/{half_digest}");
    assert_eq!(relay.count("GET", &path), 1, "{:#?}", relay.request_lines());
    upstream.stop();
    eventually(
        Duration::from_secs(10),
        "the abandoned blob pulling whole from berth with the upstream stopped",
        || {
            let (c, d) = (c.clone(), half_digest.clone());
            async move {
                match stream_blob(&c, "up/lib/big", &d, false).await {
                    Ok((200, len, got, _)) if len as usize == HALF && got == d => Ok(()),
                    other => Err(format!("{:?}", other.map(|(s, l, g, _)| (s, l, g)))),
                }
            }
        },
    )
    .await;
    assert_blob(&c, "up/lib/big", &half_digest, &half).await;
    let fetched = proxy_metric(&metrics(&c).await, "berth_proxy_upstream_bytes_total", "up");
    assert!(
        fetched >= (BIG + HALF) as f64 && fetched < (2 * BIG) as f64,
        "upstream bytes: {fetched} for one fetch of {BIG} and one of {HALF}"
    );
    assert_no_500(&p);
}

// ---------------------------------------------------------------------------------
// 5. A fake upstream: wrong bytes, 429, 503, 404, Basic auth.

const NORMAL: u8 = 0;
const OVERLOADED: u8 = 1;
const RATE_LIMITED: u8 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_or_failing_upstream() {
    let FakeImage {
        config: config_blob,
        config_digest,
        layer,
        layer_digest,
        manifest,
        digest: good,
    } = FakeImage::new("amd64", 51, 64 * 1024);
    // Asked for by these digests, served as other bytes.
    let claimed_manifest = image_manifest(
        &config_digest,
        config_blob.len(),
        &[(&sha256(b"other layer"), 11)],
        None,
    );
    let claimed = sha256(&claimed_manifest);
    let mut served_manifest = claimed_manifest.clone();
    served_manifest.extend_from_slice(b"\n");
    let claimed_blob_digest = sha256(&seeded_bytes(53, 4 << 20));
    let served_blob = seeded_bytes(54, 4 << 20);
    // Honest manifests listing: the lying blob (lib/bad:b); a layer the upstream does
    // not have (lib/good:holes); a layer fetched only while the upstream fails
    // (lib/good:later).
    let listing =
        |layer: (&str, usize)| image_manifest(&config_digest, config_blob.len(), &[layer], None);
    let lying = listing((&claimed_blob_digest, 4 << 20));
    let missing_layer = sha256(b"missing layer");
    let holes = listing((&missing_layer, 13));
    let later_layer = seeded_bytes(55, 32 * 1024);
    let later = listing((&sha256(&later_layer), later_layer.len()));
    let basic = basic_auth("fakeuser", "fake-password");

    let mode = Arc::new(AtomicU8::new(NORMAL));
    let handler: Handler = {
        let (mode, manifest, good) = (mode.clone(), manifest.clone(), good.clone());
        let (config_blob, layer) = (config_blob.clone(), layer.clone());
        let (config_digest, layer_digest) = (config_digest.clone(), layer_digest.clone());
        let (claimed, claimed_blob_digest) = (claimed.clone(), claimed_blob_digest.clone());
        let (served_blob, basic) = (served_blob.clone(), basic.clone());
        let (lying, holes, later, later_layer) = (
            lying.clone(),
            holes.clone(),
            later.clone(),
            later_layer.clone(),
        );
        let serve_manifest = |bytes: &[u8]| {
            Reply::new(200)
                .header("Content-Type", OCI_MANIFEST)
                .header("Docker-Content-Digest", &sha256(bytes))
                .body(bytes.to_vec())
        };
        Arc::new(move |req: &FakeRequest| {
            let path = req.path.split('?').next().unwrap_or_default();
            if path == "/v2/" {
                return Reply::new(200)
                    .header("Content-Type", "application/json")
                    .body(b"{}".to_vec());
            }
            let parts: Vec<&str> = path.trim_start_matches("/v2/").split('/').collect();
            let [_, repo, kind, reference] = parts[..] else {
                return Reply::error(404, "NAME_UNKNOWN");
            };
            let not_found = match kind {
                "manifests" => Reply::error(404, "MANIFEST_UNKNOWN"),
                "blobs" => Reply::error(404, "BLOB_UNKNOWN"),
                _ => Reply::error(404, "NAME_UNKNOWN"),
            };
            if repo == "private" && req.header("authorization") != Some(basic.as_str()) {
                return Reply::error(401, "UNAUTHORIZED")
                    .header("WWW-Authenticate", "Basic realm=\"fake\"");
            }
            match repo {
                "good" | "private" => {
                    match mode.load(Ordering::SeqCst) {
                        OVERLOADED => return Reply::error(503, "UNAVAILABLE"),
                        RATE_LIMITED => {
                            return Reply::error(429, "TOOMANYREQUESTS").header("Retry-After", "1")
                        }
                        _ => {}
                    }
                    match (kind, reference) {
                        ("manifests", r) if r == "t" || r == good => serve_manifest(&manifest),
                        ("manifests", r) if r == "holes" || r == sha256(&holes) => {
                            serve_manifest(&holes)
                        }
                        ("manifests", r) if r == "later" || r == sha256(&later) => {
                            serve_manifest(&later)
                        }
                        ("blobs", d) if d == sha256(&later_layer) => Reply::new(200)
                            .header("Content-Type", "application/octet-stream")
                            .body(later_layer.clone()),
                        ("blobs", d) if d == config_digest => Reply::new(200)
                            .header("Content-Type", "application/octet-stream")
                            .header("Docker-Content-Digest", d)
                            .body(config_blob.clone()),
                        ("blobs", d) if d == layer_digest => Reply::new(200)
                            .header("Content-Type", "application/octet-stream")
                            .header("Docker-Content-Digest", d)
                            .body(layer.clone()),
                        ("tags", "list") => Reply::new(200)
                            .header("Content-Type", "application/json")
                            .body(
                                serde_json::to_vec(
                                    &json!({"name": format!("lib/{repo}"), "tags": ["t"]}),
                                )
                                .unwrap(),
                            ),
                        _ => not_found,
                    }
                }
                "bad" => match (kind, reference) {
                    ("manifests", r) if r == "b" || r == sha256(&lying) => serve_manifest(&lying),
                    ("manifests", d) if d == claimed => Reply::new(200)
                        .header("Content-Type", OCI_MANIFEST)
                        .header("Docker-Content-Digest", &claimed)
                        .body(served_manifest.clone()),
                    ("blobs", d) if d == claimed_blob_digest => Reply::new(200)
                        .header("Content-Type", "application/octet-stream")
                        .header("Docker-Content-Digest", d)
                        .body(served_blob.clone()),
                    _ => not_found,
                },
                _ => not_found,
            }
        })
    };
    let fake = FakeUpstream::start(handler).await;
    let config = proxy_table("f", &fake.url, &[("tag_ttl", "1s")])
        + &proxy_table(
            "fb",
            &fake.url,
            &[
                ("username_env", "FAKE_USER"),
                ("password_env", "FAKE_PASSWORD"),
            ],
        );
    let p = ProxyServer::start(
        Db::Sqlite,
        &config,
        &[],
        &[
            ("FAKE_USER", "fakeuser"),
            ("FAKE_PASSWORD", "fake-password"),
        ],
        None,
        |_, _, _| {},
    )
    .await
    .unwrap();
    let c = p.client();
    let m0 = metrics(&c).await;

    // Good content passes; by digest it is fetched once.
    assert_eq!(pull_image(&c, "f/lib/good", "t").await, good);
    assert_blob(&c, "f/lib/good", &layer_digest, &layer).await;
    assert_eq!(
        fake.count(&format!("/v2/lib/good/blobs/{layer_digest}")),
        1,
        "a blob is fetched once: {:#?}",
        fake.requests()
    );
    let r = c.call("GET", "/v2/f/lib/good/tags/list").await;
    assert_eq!(r.status(), 200);
    let tags: Value = r.json().await.unwrap();
    assert_eq!(tags["tags"], json!(["t"]), "{tags}");
    for (tag, bytes) in [("holes", &holes), ("later", &later)] {
        assert_eq!(&get_manifest(&c, "f/lib/good", tag).await.0, bytes);
    }

    // A manifest whose bytes are not its digest: 502 DIGEST_INVALID, nothing cached.
    let upstream_path = format!("/v2/lib/bad/manifests/{claimed}");
    for attempt in 1..=2 {
        let seen = fake.count(&upstream_path);
        let r = manifest_request(&c, "GET", "f/lib/bad", &claimed).await;
        expect_error(
            r,
            502,
            "DIGEST_INVALID",
            &format!("attempt {attempt}: a manifest not matching its digest"),
        )
        .await;
        assert!(
            fake.count(&upstream_path) > seen,
            "attempt {attempt} reached the upstream (nothing was cached): {:#?}",
            fake.requests()
        );
    }

    // A blob whose bytes are not its digest: the body breaks off, nothing cached.
    assert_eq!(get_manifest(&c, "f/lib/bad", "b").await.0, lying);
    let upstream_path = format!("/v2/lib/bad/blobs/{claimed_blob_digest}");
    for attempt in 1..=2 {
        let seen = fake.count(&upstream_path);
        match stream_blob(&c, "f/lib/bad", &claimed_blob_digest, false).await {
            Err(broke) => eprintln!("attempt {attempt}: {broke}"),
            Ok((200, len, got, _)) => assert!(
                (len as usize) < served_blob.len(),
                "attempt {attempt}: the client got a whole {len}-byte body ({got}) for {claimed_blob_digest}"
            ),
            Ok((status, len, _, _)) => assert_eq!(
                status, 502,
                "attempt {attempt}: a blob not matching its digest answered {status} ({len} bytes)"
            ),
        }
        assert!(
            fake.count(&upstream_path) > seen,
            "attempt {attempt} reached the upstream (nothing was cached): {:#?}",
            fake.requests()
        );
    }

    // Basic auth with the configured credentials; without them, refused (no 5xx).
    assert_eq!(pull_image(&c, "fb/lib/private", "t").await, good);
    assert!(fake
        .requests()
        .iter()
        .any(|r| r.path.starts_with("/v2/lib/private/")
            && r.header("authorization") == Some(basic.as_str())));
    let r = manifest_request(&c, "GET", "f/lib/private", "t").await;
    let (status, code, message) = error_of(r).await;
    assert!(
        status == 502 && code == "UNAVAILABLE" && message.contains("answered 401"),
        "an upstream refusing us: {status} {code} {message}"
    );

    // 503 upstream: an expired cached tag is served stale; an uncached one fails (no 500).
    mode.store(OVERLOADED, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (_, digest, _) = get_manifest(&c, "f/lib/good", "t").await;
    assert_eq!(digest, good, "stale while the upstream answers 503");
    let r = manifest_request(&c, "GET", "f/lib/good", "u").await;
    let (status, code, message) = error_of(r).await;
    assert!(
        status == 503 && code == "UNAVAILABLE" && message.contains("answered 503"),
        "an uncached tag while the upstream answers 503: {status} {code} {message}"
    );
    let later_path = format!("/v2/f/lib/good/blobs/{}", sha256(&later_layer));
    let (status, code, message) = error_of(c.call("GET", &later_path).await).await;
    assert!(
        status == 503 && code == "UNAVAILABLE" && message.contains("answered 503"),
        "an uncached blob while the upstream answers 503: {status} {code} {message}"
    );

    // 429 upstream: stale again; an uncached tag is 429 TOOMANYREQUESTS.
    mode.store(RATE_LIMITED, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (_, digest, _) = get_manifest(&c, "f/lib/good", "t").await;
    assert_eq!(digest, good, "stale while the upstream answers 429");
    let r = manifest_request(&c, "GET", "f/lib/good", "u").await;
    expect_error(r, 429, "TOOMANYREQUESTS", "an uncached tag, upstream 429").await;
    let r = c.call("GET", &later_path).await;
    expect_error(r, 429, "TOOMANYREQUESTS", "an uncached blob, upstream 429").await;

    // 404 upstream: 404 with the spec's code.
    mode.store(NORMAL, Ordering::SeqCst);
    let r = manifest_request(&c, "GET", "f/lib/good", "nope").await;
    expect_error(r, 404, "MANIFEST_UNKNOWN", "unknown tag upstream").await;
    let r = c
        .call(
            "GET",
            &format!("/v2/f/lib/good/blobs/{}", sha256(b"no such blob")),
        )
        .await;
    expect_error(r, 404, "BLOB_UNKNOWN", "a blob no manifest lists").await;
    let r = c
        .call("GET", &format!("/v2/f/lib/good/blobs/{missing_layer}"))
        .await;
    expect_error(r, 404, "BLOB_UNKNOWN", "a listed blob the upstream lacks").await;
    assert!(
        fake.count(&format!("/v2/lib/good/blobs/{missing_layer}")) >= 1,
        "the upstream was asked for it"
    );
    // The upstream recovered: what failed before pulls now.
    assert_blob(&c, "f/lib/good", &sha256(&later_layer), &later_layer).await;
    let r = c.call("GET", "/v2/f/lib/none/tags/list").await;
    expect_error(r, 404, "NAME_UNKNOWN", "unknown repository upstream").await;

    let m1 = metrics(&c).await;
    let delta = |kind: &str| upstream_errors(&m1, "f", kind) - upstream_errors(&m0, "f", kind);
    for kind in [
        "bad_content",
        "server_error",
        "rate_limited",
        "not_found",
        "denied",
    ] {
        assert!(
            delta(kind) >= 1.0,
            "upstream errors of kind {kind} counted: {}",
            m1.lines()
                .filter(|l| l.contains("berth_proxy"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert!(
        delta("bad_content") >= 2.0,
        "both lying answers, twice each"
    );
    let stale = |t: &str| proxy_metric(t, "berth_proxy_stale_total", "f");
    assert!(stale(&m1) - stale(&m0) >= 2.0, "two stale answers");
    assert_no_500(&p);
}

// ---------------------------------------------------------------------------------
// 6. A size limit: the least recently pulled image goes first.

async fn size_limit_evicts_the_least_recently_pulled_image(db: Db) {
    let mut upstream = Berthd::start(Db::Sqlite).await.unwrap();
    let u = upstream.client();
    let mut images = Vec::new();
    for (i, name) in ["one", "two", "three"].into_iter().enumerate() {
        let layer = seeded_bytes(60 + i as u64, 1_200 * 1024);
        let (_, digest) = u.push_image(&format!("lib/{name}"), "1", &layer).await;
        images.push((format!("up/lib/{name}"), digest, layer));
    }
    let config = proxy_table("up", &upstream.url, &[("max_size", "3MiB")]);
    let Some(p) = ProxyServer::start(
        db,
        &config,
        &[],
        &[("BERTH_GC_INTERVAL", "off")],
        None,
        |_, _, _| {},
    )
    .await
    else {
        eprintln!("SKIPPED: set BERTH_TEST_POSTGRES_URL to run the PostgreSQL variant");
        return;
    };
    let c = p.client();
    // Pulled in order one, two, three, then one again: two is the least recent.
    for (repo, digest, _) in images.iter().chain(images.iter().take(1)) {
        assert_eq!(pull_image(&c, repo, "1").await, *digest);
        // Pull times may be written at a flush (every 2 s): one flush a pull.
        tokio::time::sleep(Duration::from_millis(2100)).await;
    }
    // The last pull time reaches the database within 2 s.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = p.admin(&["gc"]);
    let report = succeeded(&out, "berthd gc");
    eprintln!(
        "berthd gc: {report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    upstream.stop();
    for i in [0, 2] {
        let (repo, digest, layer) = &images[i];
        assert_eq!(
            pull_image(&c, repo, "1").await,
            *digest,
            "{repo} stays cached"
        );
        assert_blob(&c, repo, &sha256(layer), layer).await;
    }
    // Image two is gone, by tag and by digest (the server may take a moment to see
    // what another process deleted).
    let (repo, digest, _) = &images[1];
    let evicted = Instant::now();
    for reference in ["1", digest.as_str()] {
        eventually(
            Duration::from_secs(5),
            "the least recently pulled image evicted",
            || {
                let c = c.clone();
                async move {
                    let r = manifest_request(&c, "GET", repo, reference).await;
                    match error_of(r).await {
                        (503, code, _) if code == "UNAVAILABLE" => Ok(()),
                        other => Err(format!("GET {repo}:{reference} answered {other:?}")),
                    }
                }
            },
        )
        .await;
        eprintln!("{repo}@{reference} gone after {:?}", evicted.elapsed());
    }
    assert_no_500(&p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_limit_evicts_the_least_recently_pulled_image_sqlite() {
    size_limit_evicts_the_least_recently_pulled_image(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_limit_evicts_the_least_recently_pulled_image_postgres() {
    size_limit_evicts_the_least_recently_pulled_image(Db::Postgres).await;
}

// ---------------------------------------------------------------------------------
// 7. Writes refused; metrics.

/// Every kind of write into `repo` (a proxy namespace) answers 403 DENIED.
async fn writes_are_denied(c: &Client, repo: &str, manifest: &[u8], digest: &str, layer: &str) {
    let what = |w: &str| format!("{w} in {repo}");
    let r = c.call("POST", &format!("/v2/{repo}/blobs/uploads/")).await;
    expect_error(r, 403, "DENIED", &what("upload POST")).await;
    let data = b"a blob pushed into a proxy namespace".to_vec();
    let r = c
        .request(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(&data)),
        )
        .body(data)
        .send()
        .await
        .unwrap();
    expect_error(r, 403, "DENIED", &what("monolithic upload")).await;
    let r = c
        .call(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?mount={layer}&from={repo}"),
        )
        .await;
    expect_error(r, 403, "DENIED", &what("mount")).await;
    for reference in ["2", digest] {
        let r = c
            .push_manifest(repo, reference, OCI_MANIFEST, manifest)
            .await;
        expect_error(
            r,
            403,
            "DENIED",
            &what(&format!("manifest PUT {reference}")),
        )
        .await;
    }
    for reference in [digest, "1"] {
        let r = c
            .call("DELETE", &format!("/v2/{repo}/manifests/{reference}"))
            .await;
        expect_error(
            r,
            403,
            "DENIED",
            &what(&format!("manifest DELETE {reference}")),
        )
        .await;
    }
    let r = c.call("DELETE", &format!("/v2/{repo}/blobs/{layer}")).await;
    expect_error(r, 403, "DENIED", &what("blob DELETE")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_denied_and_metrics_count_without_auth() {
    let mut upstream = Berthd::start(Db::Sqlite).await.unwrap();
    let layer = seeded_bytes(71, 100_000);
    let (manifest, digest) = upstream.client().push_image("lib/app", "1", &layer).await;
    let layer_digest = sha256(&layer);
    let config = proxy_table("up", &upstream.url, &[("tag_ttl", "1s")]);
    let p = ProxyServer::start(Db::Sqlite, &config, &[], &[], None, |_, _, _| {})
        .await
        .unwrap();
    let c = p.client();
    let value = |t: &str, name: &str| proxy_metric(t, name, "up");
    let (hits, misses, bytes) = (
        "berth_proxy_hits_total",
        "berth_proxy_misses_total",
        "berth_proxy_upstream_bytes_total",
    );

    // A first pull: misses, and the bytes fetched.
    let m0 = metrics(&c).await;
    assert_eq!(pull_image(&c, "up/lib/app", "1").await, digest);
    let m1 = metrics(&c).await;
    assert!(value(&m1, misses) - value(&m0, misses) >= 1.0, "misses");
    // At least the blobs' bytes (whether manifests count too is the server's choice).
    let fetched: usize = blobs_of(&manifest).iter().map(|b| b.1).sum::<usize>();
    assert!(
        value(&m1, bytes) - value(&m0, bytes) >= fetched as f64,
        "upstream bytes {} -> {}, fetched {fetched}",
        value(&m0, bytes),
        value(&m1, bytes)
    );
    // Again: hits only.
    assert_eq!(pull_image(&c, "up/lib/app", "1").await, digest);
    let m2 = metrics(&c).await;
    assert!(value(&m2, hits) - value(&m1, hits) >= 1.0, "hits");
    assert_eq!(
        value(&m2, misses),
        value(&m1, misses),
        "no miss when cached"
    );
    assert_eq!(
        value(&m2, bytes),
        value(&m1, bytes),
        "nothing fetched again"
    );
    // 404 upstream.
    let r = manifest_request(&c, "GET", "up/lib/app", "nope").await;
    expect_error(r, 404, "MANIFEST_UNKNOWN", "unknown tag").await;
    let m3 = metrics(&c).await;
    assert!(
        upstream_errors(&m3, "up", "not_found") > upstream_errors(&m2, "up", "not_found"),
        "not_found counted"
    );

    // Writes are refused; the cached image is untouched; other namespaces still push.
    writes_are_denied(&c, "up/lib/app", &manifest, &digest, &layer_digest).await;
    let r = c.call("POST", "/v2/up/lib/new/blobs/uploads/").await;
    expect_error(r, 403, "DENIED", "upload into a new proxied repository").await;
    assert_eq!(pull_image(&c, "up/lib/app", "1").await, digest);
    c.push_image("mine/app", "1", b"a layer of my own").await;

    // The upstream stops: stale answers and unreachable errors.
    upstream.stop();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let m4 = metrics(&c).await;
    assert_eq!(pull_image(&c, "up/lib/app", "1").await, digest);
    let m5 = metrics(&c).await;
    assert!(
        value(&m5, "berth_proxy_stale_total") - value(&m4, "berth_proxy_stale_total") >= 1.0,
        "stale counted"
    );
    assert!(
        upstream_errors(&m5, "up", "unreachable") > upstream_errors(&m4, "up", "unreachable"),
        "unreachable counted"
    );
    assert_no_500(&p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_denied_with_auth_on() {
    let upstream = Berthd::start(Db::Sqlite).await.unwrap();
    let layer = seeded_bytes(72, 50_000);
    let (manifest, digest) = upstream.client().push_image("lib/app", "1", &layer).await;
    let p = ProxyServer::start(
        Db::Sqlite,
        &proxy_table("up", &upstream.url, &[]),
        &[ROOT, ALICE],
        &[],
        None,
        |_, _, _| {},
    )
    .await
    .unwrap();
    let c = p.client();
    for who in [ROOT, ALICE] {
        let token = bearer(
            &c,
            Some((who.0, who.1)),
            "repository:up/lib/app:pull,push,delete",
        )
        .await;
        let t = c.with_token(&token);
        assert_eq!(pull_image(&t, "up/lib/app", "1").await, digest, "{}", who.0);
        writes_are_denied(&t, "up/lib/app", &manifest, &digest, &sha256(&layer)).await;
    }
    assert_no_500(&p);
}

// ---------------------------------------------------------------------------------
// 8. Who may pull through a proxy.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_anonymous_users_and_organization() {
    let upstream = Berthd::start(Db::Sqlite).await.unwrap();
    let (_, digest) = upstream
        .client()
        .push_image("lib/app", "1", &seeded_bytes(81, 20_000))
        .await;
    let config = proxy_table("pub", &upstream.url, &[("access", "anonymous")])
        + &proxy_table("mem", &upstream.url, &[("access", "users")])
        + &proxy_table("dflt", &upstream.url, &[])
        + &proxy_table("team", &upstream.url, &[("access", "org:acme")]);
    let p = ProxyServer::start(
        Db::Sqlite,
        &config,
        &[ALICE, BOB, CAROL],
        &[],
        None,
        |data_dir, database_url, env| {
            for args in [
                &["org", "add", "acme", "--owner", "alice"][..],
                &["org", "member", "add", "acme", "bobby", "--role", "read"],
            ] {
                let out = berthd_command_with_env(data_dir, database_url, env, args, None);
                succeeded(&out, format_args!("berthd {args:?}"));
            }
        },
    )
    .await
    .unwrap();
    let c = p.client();
    let path = |prefix: &str| format!("/v2/{prefix}/lib/app/manifests/1");

    // Without a token: challenged, for the proxy repository.
    for prefix in ["pub", "mem", "dflt", "team"] {
        let r = c.call("GET", &path(prefix)).await;
        assert_eq!(r.status(), 401, "{prefix}: no token");
        let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(
            challenge.contains(&format!("scope=\"repository:{prefix}/lib/app:pull\"")),
            "{challenge}"
        );
    }
    // Who gets through where (None: anonymous).
    let cases: [(Option<User>, &str, bool); 16] = [
        (None, "pub", true),
        (None, "mem", false),
        (None, "dflt", false),
        (None, "team", false),
        (Some(ALICE), "pub", true),
        (Some(ALICE), "mem", true),
        (Some(ALICE), "dflt", true),
        (Some(ALICE), "team", true),
        (Some(BOB), "pub", true),
        (Some(BOB), "mem", true),
        (Some(BOB), "dflt", true),
        (Some(BOB), "team", true),
        (Some(CAROL), "pub", true),
        (Some(CAROL), "mem", true),
        (Some(CAROL), "dflt", true),
        (Some(CAROL), "team", false),
    ];
    for (who, prefix, allowed) in cases {
        let name = who.map_or("anonymous", |w| w.0);
        let scope = format!("repository:{prefix}/lib/app:pull");
        let token = bearer(&c, who.map(|w| (w.0, w.1)), &scope).await;
        let granted = claims(&token)["access"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["name"] == format!("{prefix}/lib/app") && a["actions"] == json!(["pull"]));
        assert_eq!(granted, allowed, "{name} on {prefix}: the token's access");
        let t = c.with_token(&token);
        if allowed {
            assert_eq!(
                pull_image(&t, &format!("{prefix}/lib/app"), "1").await,
                digest,
                "{name} pulls through {prefix}"
            );
        } else {
            let r = t.call("GET", &path(prefix)).await;
            let (status, code, message) = error_of(r).await;
            assert!(
                matches!(
                    (status, code.as_str()),
                    (403, "DENIED") | (401, "UNAUTHORIZED")
                ),
                "{name} on {prefix}: {status} {code} {message}"
            );
            if who.is_some() {
                assert_eq!(
                    (status, code.as_str()),
                    (403, "DENIED"),
                    "a signed-in non-member on {prefix}"
                );
            }
        }
    }

    assert_no_500(&p);

    // A real client's token flow.
    if !require_tool("skopeo") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().display();
    let copy = |creds: Option<User>, prefix: &str, dir: &str| {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--src-tls-verify=false"]);
        if let Some((user, password, _)) = creds {
            cmd.args(["--src-creds", &format!("{user}:{password}")]);
        }
        cmd.arg(format!("docker://{}/{prefix}/lib/app:1", p.s.addr))
            .arg(format!("dir:{d}/{dir}"))
            .output()
            .unwrap()
    };
    succeeded(&copy(None, "pub", "pub"), "anonymous skopeo copy from pub");
    succeeded(
        &copy(Some(ALICE), "mem", "mem"),
        "alice's skopeo copy from mem",
    );
    succeeded(
        &copy(Some(BOB), "team", "team"),
        "bobby's skopeo copy from team",
    );
    let out = copy(Some(CAROL), "team", "refused");
    assert!(!out.status.success(), "carol1 is no member of acme");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("denied") || err.contains("unauthorized"),
        "{err}"
    );
}

/// Docker Hub's ways, on a fake: a Bearer challenge whose realm wants Basic
/// credentials (one token per scope, reused), blobs redirected to a storage host (which
/// never sees the credentials), and the referrers API passed through — or, where the
/// upstream has none, the cache's own answer.
#[tokio::test]
async fn token_flow_redirects_and_referrers() {
    let FakeImage {
        config: config_blob,
        config_digest,
        layer,
        layer_digest,
        manifest,
        digest: good,
    } = FakeImage::new("arm64", 61, 300 * 1024);
    let basic = basic_auth("hubuser", "hub-password");
    let signature = json!({"mediaType": OCI_MANIFEST, "digest": sha256(b"sig"), "size": 3,
                           "artifactType": "application/vnd.example.sig"});

    // The storage host: serves the layer to whoever has the (pre-signed) URL.
    let storage: Handler = {
        let layer = layer.clone();
        Arc::new(move |_req: &FakeRequest| {
            Reply::new(200)
                .header("Content-Type", "application/octet-stream")
                .body(layer.clone())
        })
    };
    let storage = FakeUpstream::start(storage).await;
    let handler: Handler = {
        let (manifest, good, basic) = (manifest.clone(), good.clone(), basic.clone());
        let (config_blob, config_digest) = (config_blob.clone(), config_digest.clone());
        let layer_digest = layer_digest.clone();
        let (storage_url, signature) = (storage.url.clone(), signature.clone());
        let realm = std::sync::OnceLock::<String>::new();
        Arc::new(move |req: &FakeRequest| {
            let path = req.path.split('?').next().unwrap_or_default();
            let host = req.header("host").unwrap_or_default();
            let realm = realm.get_or_init(|| format!("http://{host}/token"));
            if path == "/token" {
                if req.header("authorization") != Some(basic.as_str()) {
                    return Reply::error(401, "UNAUTHORIZED");
                }
                return Reply::new(200)
                    .header("Content-Type", "application/json")
                    .body(br#"{"token":"tok-1","expires_in":300}"#.to_vec());
            }
            if req.header("authorization") != Some("Bearer tok-1") {
                return Reply::error(401, "UNAUTHORIZED").header(
                    "WWW-Authenticate",
                    &format!(
                        "Bearer realm=\"{realm}\",service=\"fake\",scope=\"repository:lib/app:pull\""
                    ),
                );
            }
            match path {
                "/v2/lib/app/manifests/t" => Reply::new(200)
                    .header("Content-Type", OCI_MANIFEST)
                    .header("Docker-Content-Digest", &good)
                    .body(manifest.clone()),
                p if p == format!("/v2/lib/app/manifests/{good}") => Reply::new(200)
                    .header("Content-Type", OCI_MANIFEST)
                    .header("Docker-Content-Digest", &good)
                    .body(manifest.clone()),
                p if p == format!("/v2/lib/app/blobs/{config_digest}") => Reply::new(200)
                    .header("Content-Type", "application/octet-stream")
                    .body(config_blob.clone()),
                p if p == format!("/v2/lib/app/blobs/{layer_digest}") => Reply::new(307).header(
                    "Location",
                    &format!("{storage_url}/store/{layer_digest}?signature=abc"),
                ),
                p if p == format!("/v2/lib/app/referrers/{good}") => {
                    let mut reply = Reply::new(200)
                        .header("Content-Type", "application/vnd.oci.image.index.v1+json");
                    if req.path.contains("artifactType=") {
                        reply = reply.header("OCI-Filters-Applied", "artifactType");
                    }
                    reply.body(
                        serde_json::to_vec(&json!({"schemaVersion": 2,
                            "mediaType": "application/vnd.oci.image.index.v1+json",
                            "manifests": [signature.clone()]}))
                        .unwrap(),
                    )
                }
                _ => Reply::error(404, "MANIFEST_UNKNOWN"),
            }
        })
    };
    let fake = FakeUpstream::start(handler).await;
    let config = proxy_table(
        "hub",
        &fake.url,
        &[
            ("username_env", "HUB_USER"),
            ("password_env", "HUB_PASSWORD"),
            ("tag_ttl", "off"),
            ("access", "anonymous"),
        ],
    );
    let env = [("HUB_USER", "hubuser"), ("HUB_PASSWORD", "hub-password")];
    let p = ProxyServer::start(Db::Sqlite, &config, &[], &env, None, |_, _, _| {})
        .await
        .unwrap();
    let c = p.client();

    // Three pulls (the tag asked for every time: `tag_ttl = "off"`).
    for _ in 0..3 {
        assert_eq!(pull_image(&c, "hub/lib/app", "t").await, good);
    }
    assert_blob(&c, "hub/lib/app", &layer_digest, &layer).await;
    let tokens: Vec<FakeRequest> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/token"))
        .collect();
    assert_eq!(
        tokens.len(),
        1,
        "one token for the scope, reused: {tokens:#?}"
    );
    assert!(
        tokens[0].path.contains("service=fake")
            && tokens[0]
                .path
                .contains("scope=repository%3Alib%2Fapp%3Apull"),
        "the challenge's service and scope: {}",
        tokens[0].path
    );
    let fetched = storage.requests();
    assert_eq!(
        fetched.len(),
        1,
        "the layer fetched once, from the storage host"
    );
    assert!(
        fetched[0]
            .path
            .starts_with(&format!("/store/{layer_digest}?signature=abc")),
        "{}",
        fetched[0].path
    );
    assert_eq!(
        fetched[0].header("authorization"),
        None,
        "credentials never go to the storage host"
    );

    // Referrers: the upstream's, with its filter; where it has none, the cache's own.
    let r = c
        .call("GET", &format!("/v2/hub/lib/app/referrers/{good}"))
        .await;
    assert_eq!(r.status(), 200);
    let index: Value = r.json().await.unwrap();
    assert_eq!(index["manifests"], json!([signature]), "{index}");
    let r = c
        .call(
            "GET",
            &format!("/v2/hub/lib/app/referrers/{good}?artifactType=application%2Fvnd.example.sig"),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()
            .get("OCI-Filters-Applied")
            .and_then(|v| v.to_str().ok()),
        Some("artifactType")
    );
    let other = sha256(b"no such subject");
    let r = c
        .call("GET", &format!("/v2/hub/lib/app/referrers/{other}"))
        .await;
    assert_eq!(
        r.status(),
        200,
        "the upstream's 404: the cache's (empty) list"
    );
    let index: Value = r.json().await.unwrap();
    assert_eq!(index["manifests"], json!([]), "{index}");
    assert_no_500(&p);
}
