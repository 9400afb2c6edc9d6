//! Running out of resources: a full disk, commits that fail, a PostgreSQL connection
//! killed mid-transaction, S3 stopped mid-upload. Each checks the same promise: a 201
//! is given only for a durable commit (everything acknowledged is there after a
//! restart, byte for byte), nothing half-written is left behind, no request hangs, and
//! writes work again without restarting berthd.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_tests::*;
use serde_json::Value;

/// The longest any request may take, disk full or not.
const REQUEST_LIMIT: Duration = Duration::from_secs(20);

/// A 64 MiB tmpfs for a data directory (mounting needs root, which CI has); unmounted
/// on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount() -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            assert!(!in_ci(), "cannot mount a tmpfs: CI runs the tests as root");
            eprintln!("SKIPPED: mounting a small file system needs root");
            return None;
        }
        Some(SmallDisk { dir })
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn filler(&self) -> PathBuf {
        self.dir.path().join("filler")
    }

    /// Fills the file system with a filler file, leaving `leave` bytes free.
    fn fill(&self, leave: u64) {
        use std::io::Write;
        let mut file = std::fs::File::create(self.filler()).unwrap();
        let block = vec![1u8; 1 << 20];
        let mut written = 0u64;
        while let Ok(n @ 1..) = file.write(&block) {
            written += n as u64;
        }
        file.set_len(written.saturating_sub(leave)).unwrap();
    }

    fn free(&self) {
        std::fs::remove_file(self.filler()).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// What a 201 acknowledged, to be found again after a restart.
enum Acked {
    Manifest { tag: String, bytes: Vec<u8> },
    Blob { bytes: Vec<u8> },
}

/// Sends a request; it must be answered within [`REQUEST_LIMIT`].
async fn send(req: reqwest::RequestBuilder) -> (u16, String, reqwest::header::HeaderMap) {
    let started = Instant::now();
    let r = tokio::time::timeout(REQUEST_LIMIT, req.send())
        .await
        .unwrap_or_else(|_| panic!("a request hung for more than {REQUEST_LIMIT:?}"))
        .expect("the server answers");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.text().await.unwrap();
    assert!(started.elapsed() < REQUEST_LIMIT);
    (status, body, headers)
}

/// Accepted, or refused as out of space with the clear error; nothing else.
fn stored_or_full(what: &str, (status, body): &(u16, String)) -> bool {
    match *status {
        200..=299 => true,
        507 => {
            let v: Value = serde_json::from_str(body).expect("a JSON error body");
            assert_eq!(v["errors"][0]["code"], "UNKNOWN", "{body}");
            let message = v["errors"][0]["message"].as_str().unwrap();
            assert!(
                message.starts_with("the registry is out of space"),
                "{message}"
            );
            false
        }
        _ => panic!("{what}: {status} {body}"),
    }
}

/// A manifest of the seed image, made distinct (and a few KiB large) by `n`.
fn manifest_variant(seed: &[u8], n: usize) -> Vec<u8> {
    let mut m: Value = serde_json::from_slice(seed).unwrap();
    m["annotations"] = serde_json::json!({ "n": n.to_string(), "pad": "x".repeat(4000) });
    serde_json::to_vec(&m).unwrap()
}

fn blob_variant(n: usize, size: usize) -> Vec<u8> {
    (0..size).map(|i| ((i * 31 + n * 7) % 251) as u8).collect()
}

async fn put_manifest(c: &Client, repo: &str, tag: &str, bytes: &[u8]) -> (u16, String) {
    let req = c
        .request("PUT", &format!("/v2/{repo}/manifests/{tag}"))
        .header("Content-Type", OCI_MANIFEST)
        .body(bytes.to_vec());
    let (status, body, _) = send(req).await;
    (status, body)
}

async fn post_blob(c: &Client, repo: &str, data: &[u8]) -> (u16, String) {
    let path = format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(data));
    let (status, body, _) = send(c.request("POST", &path).body(data.to_vec())).await;
    (status, body)
}

/// POST, a PATCH with the first half, PUT with the rest: the first refusal, or the
/// PUT's answer.
async fn chunked_blob(c: &Client, repo: &str, data: &[u8]) -> (u16, String) {
    let (status, body, headers) =
        send(c.request("POST", &format!("/v2/{repo}/blobs/uploads/"))).await;
    if status != 202 {
        return (status, body);
    }
    let location = headers["location"].to_str().unwrap().to_owned();
    let half = data.len() / 2;
    let (status, body, headers) = send(
        c.request("PATCH", &location)
            .header("Content-Range", format!("0-{}", half - 1))
            .body(data[..half].to_vec()),
    )
    .await;
    if status != 202 {
        return (status, body);
    }
    let location = headers["location"].to_str().unwrap().to_owned();
    let (status, body, _) = send(
        c.request("PUT", &format!("{location}?digest={}", sha256(data)))
            .body(data[half..].to_vec()),
    )
    .await;
    (status, body)
}

/// Everything acknowledged is there, byte for byte.
async fn assert_all_present(c: &Client, repo: &str, acked: &[Acked]) {
    for a in acked {
        match a {
            Acked::Manifest { tag, bytes } => {
                let r = c.call("GET", &format!("/v2/{repo}/manifests/{tag}")).await;
                assert_eq!(r.status(), 200, "acknowledged tag {tag} is gone");
                assert_eq!(r.headers()["docker-content-digest"], sha256(bytes).as_str());
                assert_eq!(&r.bytes().await.unwrap()[..], &bytes[..]);
            }
            Acked::Blob { bytes } => {
                let digest = sha256(bytes);
                let r = c.call("GET", &format!("/v2/{repo}/blobs/{digest}")).await;
                assert_eq!(r.status(), 200, "acknowledged blob {digest} is gone");
                assert_eq!(sha256(&r.bytes().await.unwrap()), digest);
            }
        }
    }
}

/// Runs SQL with the sqlite3 command-line tool (another process: it sees only what
/// was committed).
fn sqlite(db: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .args(["-bail", "-cmd", ".timeout 5000"])
        .arg(db)
        .arg(sql)
        .output()
        .expect("run sqlite3");
    assert!(
        out.status.success(),
        "sqlite3 {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Object keys the metadata refers to: blobs and uploads in progress.
fn referenced_objects(db: &Path) -> Vec<String> {
    let mut keys = Vec::new();
    for line in sqlite(
        db,
        "SELECT segments FROM blobs UNION ALL SELECT segments FROM uploads",
    )
    .lines()
    {
        let segments: Vec<Value> = serde_json::from_str(line).unwrap();
        keys.extend(
            segments
                .iter()
                .map(|s| s["key"].as_str().unwrap().to_owned()),
        );
    }
    keys.sort();
    keys
}

/// Every file under `root`, as a key relative to it.
fn files_under(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .map_while(Result::ok)
        {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let key = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push(key);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn assert_database_intact(db: &Path) {
    assert_eq!(sqlite(db, "PRAGMA integrity_check"), "ok");
}

fn tag_committed(db: &Path, repo: &str, tag: &str) -> bool {
    let sql = format!(
        "SELECT count(*) FROM tags JOIN repositories r ON r.id = tags.repository_id \
         WHERE r.name = '{repo}' AND tags.name = '{tag}'"
    );
    sqlite(db, &sql) == "1"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_never_turns_a_201_into_lost_data() {
    let Some(disk) = SmallDisk::mount() else {
        return;
    };
    if !require_tool("sqlite3") {
        return;
    }
    // No reserve: the writes themselves meet the full disk.
    let mut s = Berthd::spawn(
        disk.data_dir(),
        None,
        None,
        &[("BERTH_STORAGE_MIN_FREE", "0")],
    );
    let c = s.client();
    let repo = "full/app";
    let (seed, _) = c.push_image(repo, "seed", b"seed layer").await;
    let mut acked = vec![Acked::Manifest {
        tag: "seed".into(),
        bytes: seed.clone(),
    }];
    disk.fill(2 * 1024 * 1024);
    let (mut refused, mut refused_in_a_row) = (0, 0);
    for n in 0..300 {
        let manifest = manifest_variant(&seed, n);
        let tag = format!("full-{n}");
        let small = blob_variant(n, 48 * 1024);
        let chunked = blob_variant(n + 1000, 96 * 1024);
        let outcomes = [
            put_manifest(&c, repo, &tag, &manifest).await,
            post_blob(&c, repo, &small).await,
            chunked_blob(&c, repo, &chunked).await,
        ];
        let stored: Vec<bool> = outcomes
            .iter()
            .map(|outcome| stored_or_full(&tag, outcome))
            .collect();
        if stored[0] {
            acked.push(Acked::Manifest {
                tag,
                bytes: manifest,
            });
        }
        for (ok, bytes) in stored[1..].iter().zip([small, chunked]) {
            if *ok {
                acked.push(Acked::Blob { bytes });
            }
        }
        refused += stored.iter().filter(|ok| !**ok).count();
        refused_in_a_row = if stored.iter().any(|ok| *ok) {
            0
        } else {
            refused_in_a_row + 1
        };
        if refused_in_a_row == 5 {
            break;
        }
    }
    assert_eq!(refused_in_a_row, 5, "the disk never filled up");
    eprintln!(
        "{} pushes acknowledged, {refused} refused as out of space",
        acked.len()
    );
    assert!(refused >= 15);

    // Space comes back: writes work again at once, no restart.
    disk.free();
    for n in 500..503 {
        let manifest = manifest_variant(&seed, n);
        let tag = format!("after-{n}");
        assert_eq!(put_manifest(&c, repo, &tag, &manifest).await.0, 201);
        acked.push(Acked::Manifest {
            tag,
            bytes: manifest,
        });
        let small = blob_variant(n, 48 * 1024);
        assert_eq!(post_blob(&c, repo, &small).await.0, 201);
        acked.push(Acked::Blob { bytes: small });
        let chunked = blob_variant(n + 1000, 96 * 1024);
        assert_eq!(chunked_blob(&c, repo, &chunked).await.0, 201);
        acked.push(Acked::Blob { bytes: chunked });
    }
    let r = c.call("GET", "/readyz").await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_all_present(&c, repo, &acked).await;

    let mut s2 = s.restart();
    assert_all_present(&s2.client(), repo, &acked).await;
    s2.stop();
    let db = disk.data_dir().join("berth.db");
    assert_database_intact(&db);
    assert_eq!(
        files_under(&disk.data_dir().join("blobs")),
        referenced_objects(&db),
        "object files that no blob or upload refers to"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_reserve_pushes_are_refused_up_front_and_resume_when_space_returns() {
    let Some(disk) = SmallDisk::mount() else {
        return;
    };
    let s = Berthd::spawn(
        disk.data_dir(),
        None,
        None,
        &[("BERTH_STORAGE_MIN_FREE", "16MiB")],
    );
    let c = s.client();
    let repo = "reserve/app";
    let (seed, seed_digest) = c.push_image(repo, "seed", b"seed layer").await;
    c.push_image(repo, "doomed", b"another layer").await;
    disk.fill(8 * 1024 * 1024);

    let (status, body) = post_blob(&c, repo, b"new bytes").await;
    assert_eq!(status, 507, "{body}");
    assert!(body.contains("below the 16 MiB kept in reserve"), "{body}");
    let chunked = chunked_blob(&c, repo, &blob_variant(1, 4096)).await;
    assert!(!stored_or_full("chunked", &chunked));
    let (status, _) = put_manifest(&c, repo, "new", &manifest_variant(&seed, 1)).await;
    assert_eq!(status, 507);
    // What writes nothing new, and reads and deletes, still work.
    assert_eq!(put_manifest(&c, repo, "seed", &seed).await.0, 201);
    let r = c.call("GET", &format!("/v2/{repo}/manifests/seed")).await;
    assert_eq!(r.headers()["docker-content-digest"], seed_digest.as_str());
    assert_eq!(
        c.call("DELETE", &format!("/v2/{repo}/manifests/doomed"))
            .await
            .status(),
        202
    );
    let r = c.call("GET", "/readyz").await;
    assert_eq!(r.status(), 200, "pulls still work: the replica stays ready");
    let ready: Value = r.json().await.unwrap();
    assert_eq!(ready["storage"], "below reserve", "{ready}");
    assert!(ready["free_bytes"].as_u64().unwrap() < ready["min_free_bytes"].as_u64().unwrap());
    let metrics = c.call("GET", "/metrics").await.text().await.unwrap();
    let gauge = |name: &str| -> u64 {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap();
        line.split(' ').nth(1).unwrap().parse().unwrap()
    };
    assert_eq!(gauge("berth_storage_min_free_bytes"), 16 * 1024 * 1024);
    assert!(gauge("berth_storage_free_bytes") < 16 * 1024 * 1024);

    disk.free();
    let data = blob_variant(2, 4096);
    assert_eq!(post_blob(&c, repo, &data).await.0, 201);
    assert_eq!(chunked_blob(&c, repo, &blob_variant(3, 4096)).await.0, 201);
    assert_eq!(
        put_manifest(&c, repo, "new", &manifest_variant(&seed, 1))
            .await
            .0,
        201
    );
    let ready: Value = c.call("GET", "/readyz").await.json().await.unwrap();
    assert_eq!(ready["storage"], Value::Null, "{ready}");
}

/// Arms the commit-failure hook (`BERTH_TEST_FAIL_COMMITS`, debug builds): the next
/// `n` commits fail as a commit on a full disk does.
fn arm(trigger: &Path, n: u32) {
    std::fs::write(trigger, n.to_string()).unwrap();
}

fn disarmed(trigger: &Path) -> bool {
    std::fs::read_to_string(trigger).unwrap().trim() == "0"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_commits_on_every_write_path_acknowledge_nothing_and_leave_nothing() {
    if !require_tool("sqlite3") {
        return;
    }
    let tmp = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let trigger = tmp.path().join("fail-commits");
    arm(&trigger, 0);
    let data_dir = tmp.path().join("data");
    let trigger_env = trigger.to_str().unwrap().to_owned();
    let mut s = Berthd::spawn(
        data_dir.clone(),
        None,
        Some(tmp.clone()),
        &[("BERTH_TEST_FAIL_COMMITS", &trigger_env)],
    );
    let db = data_dir.join("berth.db");
    let c = s.client();
    let repo = "faults/app";
    let (seed, _) = c.push_image(repo, "seed", b"seed layer").await;
    let mut acked = vec![Acked::Manifest {
        tag: "seed".into(),
        bytes: seed.clone(),
    }];

    // A manifest PUT (one write transaction).
    let manifest = manifest_variant(&seed, 1);
    arm(&trigger, 1);
    assert_eq!(put_manifest(&c, repo, "m1", &manifest).await.0, 500);
    assert!(disarmed(&trigger));
    assert!(!tag_committed(&db, repo, "m1"));
    assert_eq!(put_manifest(&c, repo, "m1", &manifest).await.0, 201);
    assert!(tag_committed(&db, repo, "m1"));
    acked.push(Acked::Manifest {
        tag: "m1".into(),
        bytes: manifest,
    });

    // A monolithic blob (the batched completion).
    let blob = blob_variant(1, 100_000);
    arm(&trigger, 1);
    assert_eq!(post_blob(&c, repo, &blob).await.0, 500);
    assert!(disarmed(&trigger));
    assert_eq!(post_blob(&c, repo, &blob).await.0, 201);
    acked.push(Acked::Blob { bytes: blob });

    // A chunk PATCH (an autocommit statement): the upload stays where it was.
    let data = blob_variant(2, 200_000);
    let (_, _, headers) = send(c.request("POST", &format!("/v2/{repo}/blobs/uploads/"))).await;
    let location = headers["location"].to_str().unwrap().to_owned();
    let first = c.append_chunk(&location, &data, 0..50_000).await;
    arm(&trigger, 1);
    let (status, _, _) = send(
        c.request("PATCH", &first)
            .header("Content-Range", "50000-99999")
            .body(data[50_000..100_000].to_vec()),
    )
    .await;
    assert_eq!(status, 500);
    assert!(disarmed(&trigger));
    let r = c.call("GET", &first).await;
    assert_eq!(
        r.headers()["range"],
        "0-49999",
        "the failed chunk was not recorded"
    );
    let next = c.append_chunk(&first, &data, 50_000..100_000).await;

    // The completing PUT of that upload (the batched completion again): retried, it works.
    let complete = format!("{next}?digest={}", sha256(&data));
    arm(&trigger, 1);
    let (status, _, _) = send(c.request("PUT", &complete).body(data[100_000..].to_vec())).await;
    assert_eq!(status, 500);
    assert!(disarmed(&trigger));
    assert_eq!(c.call("GET", &next).await.headers()["range"], "0-99999");
    let (status, _, _) = send(c.request("PUT", &complete).body(data[100_000..].to_vec())).await;
    assert_eq!(status, 201);
    acked.push(Acked::Blob { bytes: data });

    // A tag delete.
    c.push_image(repo, "doomed", b"doomed layer").await;
    arm(&trigger, 1);
    let doomed = format!("/v2/{repo}/manifests/doomed");
    assert_eq!(c.call("DELETE", &doomed).await.status(), 500);
    assert!(tag_committed(&db, repo, "doomed"));
    assert_eq!(c.call("DELETE", &doomed).await.status(), 202);
    assert!(!tag_committed(&db, repo, "doomed"));

    // Many failures in a row (each connection failing more than once): every later 201
    // is committed (another process sees it at once) and nothing holds the write lock.
    arm(&trigger, 40);
    for n in 0..40 {
        let (status, _) = put_manifest(
            &c,
            repo,
            &format!("lost-{n}"),
            &manifest_variant(&seed, 100 + n),
        )
        .await;
        assert_eq!(status, 500);
    }
    assert!(disarmed(&trigger));
    for n in 0..20 {
        let tag = format!("kept-{n}");
        let manifest = manifest_variant(&seed, 200 + n);
        assert_eq!(put_manifest(&c, repo, &tag, &manifest).await.0, 201);
        assert!(
            tag_committed(&db, repo, &tag),
            "{tag} acknowledged, not committed"
        );
        acked.push(Acked::Manifest {
            tag,
            bytes: manifest,
        });
    }
    sqlite(&db, "BEGIN IMMEDIATE; ROLLBACK;");

    let mut s2 = s.restart();
    assert_all_present(&s2.client(), repo, &acked).await;
    s2.stop();
    assert_database_intact(&db);
    assert_eq!(
        files_under(&data_dir.join("blobs")),
        referenced_objects(&db)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_killed_mid_transaction_acknowledge_nothing_lost() {
    let Some(s) = Berthd::start(Db::Postgres).await else {
        eprintln!("SKIPPED: set BERTH_TEST_POSTGRES_URL to run the PostgreSQL variant");
        return;
    };
    let admin = postgres_admin_url().unwrap();
    let database = s.database_url.clone().unwrap();
    let name = database.rsplit('/').next().unwrap().to_owned();
    let c = s.client();
    let repo = "killed/app";
    let (seed, _) = c.push_image(repo, "seed", b"seed layer").await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pushers: Vec<_> = (0..4)
        .map(|p| {
            let (c, seed, stop) = (c.clone(), seed.clone(), stop.clone());
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut failed = 0;
                for n in (p * 10_000).. {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    let tag = format!("t-{n}");
                    let manifest = manifest_variant(&seed, n);
                    match put_manifest(&c, repo, &tag, &manifest).await {
                        (201, _) => acked.push(Acked::Manifest {
                            tag,
                            bytes: manifest,
                        }),
                        (500, _) => failed += 1,
                        (status, body) => panic!("{status} {body}"),
                    }
                    let blob = blob_variant(n, 20_000);
                    match post_blob(&c, repo, &blob).await {
                        (201, _) => acked.push(Acked::Blob { bytes: blob }),
                        (500, _) => failed += 1,
                        (status, body) => panic!("{status} {body}"),
                    }
                }
                (acked, failed)
            })
        })
        .collect();
    // Kill every berthd backend again and again while the pushes run.
    let kill = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    );
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        psql(&admin, &kill);
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut acked = Vec::new();
    let mut failed = 0;
    for p in pushers {
        let (a, f) = p.await.unwrap();
        acked.extend(a);
        failed += f;
    }
    assert!(failed > 0, "no write was hit by a killed connection");
    assert!(
        acked.len() > 20,
        "too few pushes went through: {}",
        acked.len()
    );

    // Once the killing stops, at most one request fails (the one that finds a dead
    // connection: the pool then pings the others) and then every push succeeds.
    let mut n = 90_000;
    let mut failures_after = 0;
    let mut in_a_row = 0;
    while in_a_row < 10 {
        let tag = format!("after-{n}");
        let manifest = manifest_variant(&seed, n);
        match put_manifest(&c, repo, &tag, &manifest).await {
            (201, _) => {
                in_a_row += 1;
                acked.push(Acked::Manifest {
                    tag,
                    bytes: manifest,
                });
            }
            (500, _) => {
                in_a_row = 0;
                failures_after += 1;
            }
            (status, body) => panic!("{status} {body}"),
        }
        // The request that finds a killed connection fails; it makes the pool check
        // the others, so the next one works.
        assert!(
            failures_after <= 1,
            "writes do not recover after the kills: {failures_after} failures"
        );
        n += 1;
    }
    eprintln!(
        "{} pushes acknowledged, {failed} failed while backends were killed, {failures_after} after",
        acked.len()
    );
    let mut s = s;
    let s2 = s.restart();
    assert_all_present(&s2.client(), repo, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_stopped_mid_upload_acknowledges_nothing_lost_and_leaves_no_objects() {
    let Some(mut s3) = S3Server::start() else {
        return;
    };
    if !require_tool("sqlite3") {
        return;
    }
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let s = Berthd::start_configured(Db::Sqlite, &[], &env)
        .await
        .unwrap();
    let c = s.client();
    let repo = "s3down/app";
    let (seed, _) = c.push_image(repo, "seed", b"seed layer").await;
    let mut acked = vec![Acked::Manifest {
        tag: "seed".into(),
        bytes: seed.clone(),
    }];
    let db = s.data_dir.join("berth.db");

    // A PATCH streaming 12 MiB (S3 multipart parts of 5 MiB) when S3 goes away.
    let data = blob_variant(7, 12 * 1024 * 1024);
    let (_, _, headers) = send(c.request("POST", &format!("/v2/{repo}/blobs/uploads/"))).await;
    let location = headers["location"].to_str().unwrap().to_owned();
    let patch = {
        let req = c.request("PATCH", &location).body(slow_body(
            data.clone(),
            1024 * 1024,
            Duration::from_millis(100),
        ));
        tokio::spawn(async move { send(req).await })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    s3.kill();
    let (status, body, _) = patch.await.unwrap();
    assert!(
        matches!(status, 500..=599),
        "PATCH with S3 down: {status} {body}"
    );
    // A monolithic push while it is down.
    let blob = blob_variant(8, 6 * 1024 * 1024);
    let (status, body) = post_blob(&c, repo, &blob).await;
    assert!(
        matches!(status, 500..=599),
        "POST with S3 down: {status} {body}"
    );
    let r = c.call("GET", "/readyz").await;
    assert_eq!(r.status(), 503);

    s3.restart();
    // Nothing from the failed requests remains, and the upload resumes where the
    // server says it is.
    assert_eq!(files_under(&s3.dir), referenced_objects(&db));
    let r = c.call("GET", &location).await;
    assert_eq!(r.status(), 204);
    let range = r.headers()["range"].to_str().unwrap().to_owned();
    let received: usize = range.split('-').nth(1).unwrap().parse().unwrap();
    let from = if received == 0 { 0 } else { received + 1 };
    c.finish_upload(&location, &data, from, &sha256(&data))
        .await;
    acked.push(Acked::Blob { bytes: data });
    assert_eq!(post_blob(&c, repo, &blob).await.0, 201);
    acked.push(Acked::Blob { bytes: blob });
    assert_all_present(&c, repo, &acked).await;
    assert_eq!(files_under(&s3.dir), referenced_objects(&db));
}
