//! Online garbage collection, end to end: real `berthd` processes (the server's own
//! loop and `berthd gc` beside it) on SQLite and PostgreSQL, local disk and S3, raced
//! by pushing clients, paused at its decision points (`BERTH_TEST_GC_PAUSE`) and
//! killed in the middle of a pass. What must hold: a blob a client was told exists
//! (HEAD 200, upload 201) is never taken from under its manifest PUT, a 201 on a
//! manifest is never followed by a missing blob, and once pushes stop the store holds
//! exactly the referenced blobs' bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use berth_tests::*;

// ---------------------------------------------------------------------------------
// A registry under test: its server, store and database, and `berthd gc` beside it.

struct Registry {
    server: Option<Berthd>,
    s3: Option<S3Server>,
    data_dir: PathBuf,
    database_url: Option<String>,
    /// Settings every process of this registry gets (S3, `[gc]`, log filter).
    env: Vec<(String, String)>,
    _tmp: tempfile::TempDir,
}

/// What `berthd gc` printed and how it ended.
#[derive(Debug)]
struct GcRun {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl GcRun {
    fn of(out: std::process::Output) -> GcRun {
        GcRun {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The pass's report line: (manifests, blobs, blob bytes, orphans, orphan bytes).
    fn counts(&self) -> Counts {
        assert!(self.ok, "berthd gc failed: {self:?}");
        let line = self
            .stdout
            .lines()
            .find(|l| l.starts_with("deleted ") || l.starts_with("would delete "))
            .unwrap_or_else(|| panic!("no report line: {self:?}"));
        report_counts(line)
    }
}

/// (manifests, blobs, blob bytes, orphan objects, orphan bytes)
type Counts = (u64, u64, u64, u64, u64);

/// The counts of a report line: `deleted M manifests, B blobs (X bytes) and O orphan
/// objects (Y bytes) in 0.1 s`.
fn report_counts(line: &str) -> Counts {
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit() && c != '.')
        .filter(|t| !t.is_empty() && !t.contains('.'))
        .map(|t| t.parse().unwrap())
        .collect();
    assert!(numbers.len() >= 5, "not a report line: {line}");
    (numbers[0], numbers[1], numbers[2], numbers[3], numbers[4])
}

const LOG: &str = "info,sqlx=warn,berth::access=off";

impl Registry {
    /// A registry on `db` (and S3 when `s3`), not started yet; `None` when that
    /// database or s3s-fs is not available outside CI.
    async fn new(db: Db, s3: bool, env: &[(&str, &str)]) -> Option<Registry> {
        let s3 = match s3 {
            true => Some(S3Server::start()?),
            false => None,
        };
        let database_url = match db {
            Db::Sqlite => None,
            Db::Postgres => Some(fresh_postgres_database(&postgres_admin_url()?).await),
        };
        let tmp = tempfile::tempdir().unwrap();
        let mut all: Vec<(String, String)> = vec![("BERTH_LOG".into(), LOG.into())];
        if let Some(s3) = &s3 {
            all.extend(s3.env().into_iter().map(|(k, v)| (k.to_owned(), v)));
        }
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Some(Registry {
            server: None,
            s3,
            data_dir: tmp.path().join("data"),
            database_url,
            env: all,
            _tmp: tmp,
        })
    }

    fn env_with(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env = self.env.clone();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    }

    /// Starts `berthd serve` (again) on this registry's data, with `extra` settings.
    fn serve(&mut self, extra: &[(&str, &str)]) {
        if let Some(mut old) = self.server.take() {
            old.kill();
        }
        let env = self.env_with(extra);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.server = Some(Berthd::spawn(
            self.data_dir.clone(),
            self.database_url.clone(),
            None,
            &env,
        ));
    }

    fn server(&self) -> &Berthd {
        self.server.as_ref().expect("server started")
    }

    fn client(&self) -> Client {
        self.server().client()
    }

    /// `berthd gc ARGS` as a separate process on this registry, with `extra` settings.
    fn gc_command(&self, args: &[&str], extra: &[(&str, &str)]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(workspace_bin("berthd"));
        cmd.arg("gc")
            .args(args)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env_remove("BERTH_DATABASE_URL")
            .env("NO_COLOR", "1")
            .envs(self.env_with(extra))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(url) = &self.database_url {
            cmd.env("BERTH_DATABASE_URL", url);
        }
        cmd
    }

    /// Runs one `berthd gc` pass to its end (at most 60 s).
    async fn gc(&self, args: &[&str], extra: &[(&str, &str)]) -> GcRun {
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            self.gc_command(args, extra).output(),
        )
        .await
        .expect("berthd gc did not finish within 60 s")
        .expect("run berthd gc");
        GcRun::of(out)
    }

    /// Starts `berthd gc` in the background.
    fn gc_background(
        &self,
        args: &[&str],
        extra: &[(&str, &str)],
    ) -> tokio::task::JoinHandle<GcRun> {
        let child = self
            .gc_command(args, extra)
            .spawn()
            .expect("start berthd gc");
        tokio::spawn(async move {
            let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
                .await
                .expect("berthd gc did not finish within 60 s")
                .expect("wait for berthd gc");
            GcRun::of(out)
        })
    }

    /// The directory object keys (`data/xx/…`) are relative to.
    fn key_root(&self) -> PathBuf {
        match &self.s3 {
            Some(s3) => s3.dir.clone(),
            None => self.data_dir.join("blobs"),
        }
    }

    fn object_path(&self, key: &str) -> PathBuf {
        self.key_root().join(key)
    }

    /// Every object in the store (files under the data prefix): key → size.
    fn objects(&self) -> BTreeMap<String, u64> {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, u64>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(root, &path, out);
                } else if let Ok(meta) = entry.metadata() {
                    let key = path
                        .strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned();
                    out.insert(key, meta.len());
                }
            }
        }
        let root = self.key_root();
        let mut out = BTreeMap::new();
        walk(&root, &root.join("data"), &mut out);
        out
    }

    fn stored_bytes(&self) -> u64 {
        self.objects().values().sum()
    }

    /// One SQL query on the registry's database (sqlite3 / psql, another process: it
    /// sees what was committed); its rows, `|`-separated columns.
    fn sql(&self, sql: &str) -> String {
        match &self.database_url {
            Some(url) => psql(url, sql),
            None => {
                let out = std::process::Command::new("sqlite3")
                    .args(["-bail", "-cmd", ".timeout 10000"])
                    .arg(self.data_dir.join("berth.db"))
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
        }
    }

    fn count(&self, sql: &str) -> u64 {
        self.sql(sql).parse().unwrap()
    }

    /// The object keys of blob `digest`, as its rows name them.
    fn keys_of(&self, digest: &str) -> Vec<String> {
        let keys = self.sql(&format!(
            "SELECT key FROM blob_objects WHERE digest = '{digest}' ORDER BY key"
        ));
        keys.lines().map(str::to_owned).collect()
    }

    /// The current value of a metric of the running server (0 when absent).
    async fn metric(&self, series: &str) -> f64 {
        metric_value(&metrics_text(&self.client()).await, series)
    }
}

async fn metrics_text(c: &Client) -> String {
    let r = c.call("GET", "/metrics").await;
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Polls `check` every 50 ms until it holds; panics with `what` (and the last value
/// `check` reported) after `limit`.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(()) => return,
            Err(last) if Instant::now() > deadline => {
                panic!("{what}: not within {limit:?}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Waits for the collector to reach pause point `point` (`<dir>/<point>.reached`).
async fn reached(dir: &Path, point: &str, limit: Duration) {
    let mark = dir.join(format!("{point}.reached"));
    eventually(limit, &format!("the collector reaching {point}"), || {
        let found = mark.exists();
        async move { found.then_some(()).ok_or_else(|| "not yet".to_owned()) }
    })
    .await;
}

async fn head(c: &Client, repo: &str, digest: &str) -> u16 {
    c.call("HEAD", &format!("/v2/{repo}/blobs/{digest}"))
        .await
        .status()
        .as_u16()
}

/// GET a blob: its status and bytes.
async fn get_blob(c: &Client, repo: &str, digest: &str) -> (u16, Vec<u8>) {
    let r = c.call("GET", &format!("/v2/{repo}/blobs/{digest}")).await;
    let status = r.status().as_u16();
    (status, r.bytes().await.unwrap().to_vec())
}

/// An image as pushed: its manifest and every blob it references.
#[derive(Clone)]
struct Image {
    repo: String,
    tag: String,
    manifest: Vec<u8>,
    digest: String,
    blobs: Vec<Blob>,
}

#[derive(Clone)]
struct Blob {
    digest: String,
    data: Arc<Vec<u8>>,
}

impl Blob {
    fn new(data: Vec<u8>) -> Blob {
        Blob {
            digest: sha256(&data),
            data: Arc::new(data),
        }
    }
}

/// A config blob unique to `(a, b)`.
fn config_blob(a: usize, b: usize) -> Blob {
    Blob::new(
        format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"config":{{"Labels":{{"image":"{a}-{b}"}}}}}}"#
        )
        .into_bytes(),
    )
}

fn image(repo: &str, tag: &str, config: &Blob, layers: &[Blob]) -> Image {
    let sizes: Vec<(&str, usize)> = layers
        .iter()
        .map(|l| (l.digest.as_str(), l.data.len()))
        .collect();
    let manifest = image_manifest(&config.digest, config.data.len(), &sizes, None);
    let mut blobs = vec![config.clone()];
    blobs.extend(layers.iter().cloned());
    Image {
        repo: repo.to_owned(),
        tag: tag.to_owned(),
        digest: sha256(&manifest),
        manifest,
        blobs,
    }
}

/// Pulls `image` by digest: the manifest's exact bytes and every blob, sha256-checked.
async fn assert_pulls(c: &Client, image: &Image) {
    let r = c
        .request(
            "GET",
            &format!("/v2/{}/manifests/{}", image.repo, image.digest),
        )
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "manifest {}@{} is gone",
        image.repo,
        image.digest
    );
    assert_eq!(r.bytes().await.unwrap(), image.manifest, "manifest bytes");
    for blob in &image.blobs {
        let (status, data) = get_blob(c, &image.repo, &blob.digest).await;
        assert_eq!(
            status, 200,
            "blob {} of acknowledged manifest {}@{} is missing",
            blob.digest, image.repo, image.digest
        );
        assert_eq!(sha256(&data), blob.digest, "blob bytes of {}", blob.digest);
    }
}

/// [`assert_pulls`] for every image, eight at a time.
async fn pull_all(c: &Client, images: &[Image]) {
    use futures::StreamExt;
    futures::stream::iter(images)
        .for_each_concurrent(8, |img| assert_pulls(c, img))
        .await;
}

async fn put_manifest(c: &Client, image: &Image) -> (u16, String) {
    let r = c
        .push_manifest(&image.repo, &image.tag, OCI_MANIFEST, &image.manifest)
        .await;
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

fn error_code_of(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// How a blob is uploaded.
#[derive(Debug, Clone, Copy)]
enum Method {
    /// POST, then PUT with the whole body.
    Monolithic,
    /// One POST with `?digest=` and the body.
    SinglePost,
    /// POST, three PATCHes, PUT.
    Chunked,
    /// A mount from another repository; a normal upload when the registry says 202.
    Mount,
}

/// Uploads `blob` into `repo` by `method`; every step must succeed.
async fn upload(c: &Client, repo: &str, blob: &Blob, method: Method, mount_from: &str) {
    let data = &blob.data[..];
    let digest = &blob.digest;
    match method {
        Method::Monolithic => {
            c.push_blob(repo, data).await;
        }
        Method::SinglePost => {
            let r = c
                .request(
                    "POST",
                    &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
                )
                .body(data.to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status(),
                201,
                "POST ?digest=: {}",
                r.text().await.unwrap()
            );
        }
        Method::Chunked => {
            let mut location = c.start_upload(repo).await;
            let third = data.len().div_ceil(3).max(1);
            let mut from = 0;
            while from < data.len() {
                let to = (from + third).min(data.len());
                location = c.append_chunk(&location, data, from..to).await;
                from = to;
            }
            let r = c
                .request("PUT", &format!("{location}?digest={digest}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201, "chunked PUT: {}", r.text().await.unwrap());
        }
        Method::Mount => {
            let r = c
                .request(
                    "POST",
                    &format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={mount_from}"),
                )
                .send()
                .await
                .unwrap();
            match r.status().as_u16() {
                201 => {}
                202 => {
                    let location = r.headers()["location"].to_str().unwrap().to_owned();
                    let r = c
                        .request("PUT", &format!("{location}?digest={digest}"))
                        .body(data.to_vec())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(
                        r.status(),
                        201,
                        "PUT after mount: {}",
                        r.text().await.unwrap()
                    );
                }
                s => panic!("mount: {s} {}", r.text().await.unwrap()),
            }
        }
    }
}

/// The store's bytes against the referenced blobs' bytes, with what differs.
fn store_report(reg: &Registry, expected: &BTreeMap<String, u64>) -> String {
    let rows = reg.sql("SELECT digest, size FROM blobs ORDER BY digest");
    let stored: BTreeMap<String, u64> = rows
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(d, s)| (d.to_owned(), s.parse().unwrap()))
        .collect();
    let unreferenced: Vec<_> = stored
        .keys()
        .filter(|d| !expected.contains_key(*d))
        .collect();
    let missing: Vec<_> = expected
        .keys()
        .filter(|d| !stored.contains_key(*d))
        .collect();
    let named: BTreeSet<String> = reg
        .sql("SELECT key FROM blob_objects")
        .lines()
        .map(str::to_owned)
        .collect();
    let unnamed: Vec<_> = reg
        .objects()
        .into_iter()
        .filter(|(k, _)| !named.contains(k))
        .collect();
    format!(
        "store {} bytes, referenced {} bytes; blob rows {} (unreferenced {unreferenced:?}, \
         referenced but missing {missing:?}); objects no row names {unnamed:?}; uploads {}",
        reg.stored_bytes(),
        expected.values().sum::<u64>(),
        stored.len(),
        reg.sql("SELECT count(*) FROM uploads"),
    )
}

/// Waits (past the grace, for the collector) until the store holds exactly the bytes
/// of `expected` and the database exactly its blobs.
async fn assert_store_settles_to(
    reg: &Registry,
    expected: &BTreeMap<String, u64>,
    limit: Duration,
) {
    let want: u64 = expected.values().sum();
    eventually(
        limit,
        "the store holding exactly the referenced blobs",
        || {
            let got = reg.stored_bytes();
            let rows = reg.count("SELECT count(*) FROM blobs");
            let result = match got == want && rows == expected.len() as u64 {
                true => Ok(()),
                false => Err(store_report(reg, expected)),
            };
            async move { result }
        },
    )
    .await;
    let report = store_report(reg, expected);
    assert!(
        report.contains("unreferenced []")
            && report.contains("missing []")
            && report.contains("names []"),
        "{report}"
    );
}

// ---------------------------------------------------------------------------------
// 1. The collector against racing pushes.

const RACE_GRACE: Duration = Duration::from_secs(2);
const CLIENTS: usize = 8;
const IMAGES_PER_CLIENT: usize = 15;

/// What the racing clients saw.
#[derive(Default, Debug)]
struct RaceStats {
    acknowledged: usize,
    deleted: usize,
    garbage_uploads: usize,
    cancelled_uploads: usize,
    /// Blobs found gone (HEAD 404) after a pause of about the grace, uploaded again.
    reuploads_after_pause: usize,
    /// Blobs a slow client found still there (HEAD 200) after its pause.
    found_after_pause: usize,
    /// MANIFEST_BLOB_UNKNOWN answers that the protocol allows (the blob's last
    /// confirmation older than three quarters of the grace).
    tolerated_unknown: usize,
    /// MANIFEST_BLOB_UNKNOWN although every blob was confirmed within three quarters
    /// of the grace: the protocol broken.
    violations: Vec<String>,
}

/// What docker does before a manifest PUT: HEAD every blob (concurrently), upload the
/// ones that answer 404. Returns when the first HEAD was sent (no blob's confirmation
/// is older) and how many were uploaded.
async fn ensure_blobs(
    c: &Client,
    repo: &str,
    other: &str,
    blobs: &[(Blob, Method)],
) -> (Instant, usize) {
    let started = Instant::now();
    let uploads = futures::future::join_all(blobs.iter().map(|(blob, method)| async move {
        match head(c, repo, &blob.digest).await {
            200 => 0,
            404 => {
                upload(c, repo, blob, *method, other).await;
                1
            }
            s => panic!("HEAD {}: {s}", blob.digest),
        }
    }))
    .await;
    (started, uploads.into_iter().sum())
}

async fn racing_client(
    c: Client,
    i: usize,
    base: Arc<Vec<Blob>>,
    kept: Arc<Mutex<Vec<Image>>>,
) -> (Vec<Image>, RaceStats) {
    let repo = format!("race/app{}", i % 4);
    let other = format!("race/app{}", (i + 1) % 4);
    let pausing = i < CLIENTS / 2;
    let mut stats = RaceStats::default();
    let mut acked = Vec::new();
    for k in 0..IMAGES_PER_CLIENT {
        let config = config_blob(i, k);
        let a = (i + k) % base.len();
        let b = (i * 3 + k * 7 + 1) % base.len();
        let mut layers = vec![base[a].clone()];
        if b != a {
            layers.push(base[b].clone());
        }
        let seed = (i * 1000 + k) as u64;
        layers.push(Blob::new(seeded_bytes(
            seed,
            700 + (seed as usize * 7919) % 40_000,
        )));
        if k % 2 == 0 {
            layers.push(Blob::new(seeded_bytes(
                seed + 500_000,
                1500 + (seed as usize * 131) % 9000,
            )));
        }
        let img = image(&repo, &format!("t{k}"), &config, &layers);
        let rotation = [Method::Monolithic, Method::SinglePost, Method::Chunked];
        let plan: Vec<(Blob, Method)> = img
            .blobs
            .iter()
            .enumerate()
            .map(|(j, blob)| {
                let method = match base.iter().any(|b| b.digest == blob.digest) {
                    true => Method::Mount,
                    false => rotation[(i + k + j) % rotation.len()],
                };
                (blob.clone(), method)
            })
            .collect();
        let (mut confirmed, _) = ensure_blobs(&c, &repo, &other, &plan).await;
        if pausing && (k % 5 == 1 || k % 5 == 4) {
            // A slow client: about the grace (1.6 to 2.7 s) between its uploads and the
            // manifest, so that its HEADs land while passes take those blobs.
            let jitter = ((i * 7 + k * 13) % 10) as u32;
            let pause =
                RACE_GRACE - Duration::from_millis(400) + Duration::from_millis(120) * jitter;
            tokio::time::sleep(pause).await;
            let (again, uploaded) = ensure_blobs(&c, &repo, &other, &plan).await;
            confirmed = again;
            stats.reuploads_after_pause += uploaded;
            stats.found_after_pause += plan.len() - uploaded;
        }
        let mut attempts = 0;
        loop {
            let (status, body) = put_manifest(&c, &img).await;
            let elapsed = confirmed.elapsed();
            if status == 201 {
                break;
            }
            assert!(
                status == 400 && error_code_of(&body) == "MANIFEST_BLOB_UNKNOWN",
                "manifest PUT {}:{}: {status} {body}",
                img.repo,
                img.tag
            );
            if elapsed < RACE_GRACE * 3 / 4 {
                stats.violations.push(format!(
                    "client {i} image {k}: MANIFEST_BLOB_UNKNOWN {elapsed:?} after every blob \
                     was confirmed (HEAD 200 / upload 201): {body}"
                ));
            } else {
                stats.tolerated_unknown += 1;
            }
            attempts += 1;
            assert!(
                attempts < 4,
                "client {i} image {k}: no manifest PUT succeeded"
            );
            confirmed = ensure_blobs(&c, &repo, &other, &plan).await.0;
        }
        stats.acknowledged += 1;
        if k % 5 == 3 {
            // Deleted again: its own blobs become garbage.
            let r = c
                .call("DELETE", &format!("/v2/{repo}/manifests/{}", img.digest))
                .await;
            assert_eq!(r.status(), 202, "delete manifest");
            stats.deleted += 1;
        } else {
            kept.lock().unwrap().push(img.clone());
            acked.push(img);
        }
        if k % 3 == 0 {
            // Uploaded, never referenced.
            let junk = Blob::new(seeded_bytes(
                seed + 9_000_000,
                300 + (seed as usize * 37) % 20_000,
            ));
            upload(&c, &repo, &junk, rotation[k / 3 % 3], &other).await;
            stats.garbage_uploads += 1;
        }
        if k % 4 == 2 {
            // Started, one chunk, cancelled.
            let location = c.start_upload(&repo).await;
            let junk = seeded_bytes(seed + 7_000_000, 5000);
            c.append_chunk(&location, &junk, 0..junk.len()).await;
            let r = c.call("DELETE", &location).await;
            assert_eq!(r.status(), 204, "cancel upload");
            stats.cancelled_uploads += 1;
        }
    }
    (acked, stats)
}

/// Pulls acknowledged images while the clients push: a 201 is never followed by a
/// missing blob, even for a moment.
async fn verifier(
    c: Client,
    kept: Arc<Mutex<Vec<Image>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> usize {
    let mut checked = 0;
    let mut n = 0usize;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let pick = {
            let kept = kept.lock().unwrap();
            (!kept.is_empty()).then(|| kept[n % kept.len()].clone())
        };
        n = n.wrapping_mul(31).wrapping_add(7);
        match pick {
            Some(img) => {
                assert_pulls(&c, &img).await;
                checked += 1;
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    checked
}

async fn gc_against_racing_pushes(db: Db, s3: bool) {
    let grace = format!("{}ms", RACE_GRACE.as_millis());
    let Some(mut reg) = Registry::new(
        db,
        s3,
        &[("BERTH_GC_INTERVAL", "150ms"), ("BERTH_GC_GRACE", &grace)],
    )
    .await
    else {
        eprintln!("SKIPPED: PostgreSQL (BERTH_TEST_POSTGRES_URL) or s3s-fs not available");
        return;
    };
    reg.serve(&[]);
    let started = Instant::now();
    let base = Arc::new(vec![
        Blob::new(seeded_bytes(1, 3_000)),
        Blob::new(seeded_bytes(2, 60_000)),
        Blob::new(seeded_bytes(3, 400_000)),
        Blob::new(seeded_bytes(4, 1_100_000)),
    ]);
    let kept = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let check = tokio::spawn(verifier(reg.client(), kept.clone(), stop.clone()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| tokio::spawn(racing_client(reg.client(), i, base.clone(), kept.clone())))
        .collect();
    let mut images = Vec::new();
    let mut total = RaceStats::default();
    for client in clients {
        let (acked, stats) = client.await.expect("a client failed");
        images.extend(acked);
        total.acknowledged += stats.acknowledged;
        total.deleted += stats.deleted;
        total.garbage_uploads += stats.garbage_uploads;
        total.cancelled_uploads += stats.cancelled_uploads;
        total.reuploads_after_pause += stats.reuploads_after_pause;
        total.found_after_pause += stats.found_after_pause;
        total.tolerated_unknown += stats.tolerated_unknown;
        total.violations.extend(stats.violations);
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let verified = check.await.expect("the verifier failed");
    let pushed = started.elapsed();
    eprintln!("{total:?}; {verified} pulls verified while pushing; pushes took {pushed:?}");
    assert!(
        total.violations.is_empty(),
        "a blob confirmed to the client was collected before its manifest PUT:\n{}",
        total.violations.join("\n")
    );
    assert_eq!(total.acknowledged, CLIENTS * IMAGES_PER_CLIENT);
    assert!(
        total.reuploads_after_pause > 0,
        "no slow client found a blob collected: the collector did not run ({total:?})"
    );
    let c = reg.client();
    pull_all(&c, &images).await;
    eprintln!("pulled every image: {:?}", started.elapsed());
    // Pushes stopped: past the grace, the collector leaves exactly the referenced blobs.
    let mut expected = BTreeMap::new();
    for img in &images {
        for b in &img.blobs {
            expected.insert(b.digest.clone(), b.data.len() as u64);
        }
    }
    assert_store_settles_to(&reg, &expected, RACE_GRACE + Duration::from_secs(20)).await;
    assert_eq!(reg.count("SELECT count(*) FROM uploads"), 0);
    eprintln!("store settled: {:?}", started.elapsed());
    pull_all(&c, &images).await;
    let deleted = reg.metric("berth_gc_deleted_total{kind=\"blobs\"}").await;
    let runs = reg.metric("berth_gc_runs_total{outcome=\"ok\"}").await;
    let failed = reg.metric("berth_gc_runs_total{outcome=\"failed\"}").await;
    let log = reg.server().log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert_eq!(failed, 0.0, "a pass failed:\n{}", warnings.join("\n"));
    eprintln!(
        "{} images kept, {} distinct blobs ({} bytes) left; {runs} passes deleted {deleted} blobs; {:?} in all",
        images.len(),
        expected.len(),
        expected.values().sum::<u64>(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_pushes_sqlite_local_disk() {
    gc_against_racing_pushes(Db::Sqlite, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_pushes_postgres_local_disk() {
    gc_against_racing_pushes(Db::Postgres, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_pushes_postgres_s3() {
    gc_against_racing_pushes(Db::Postgres, true).await;
}

// ---------------------------------------------------------------------------------
// 2. The HEAD-then-manifest-PUT race, made deterministic.

const PAST_GRACE: Duration = Duration::from_millis(1300);

fn gc_env() -> [(&'static str, &'static str); 2] {
    [("BERTH_GC_INTERVAL", "off"), ("BERTH_GC_GRACE", "1s")]
}

/// A manifest of a fresh config and `layer`, in `repo`.
async fn image_over(c: &Client, repo: &str, seed: usize, layer: &Blob) -> Image {
    let config = config_blob(seed, 0);
    c.push_blob(repo, &config.data).await;
    image(repo, "v1", &config, std::slice::from_ref(layer))
}

async fn head_then_manifest_race(db: Db) {
    let Some(mut reg) = Registry::new(db, false, &gc_env()).await else {
        eprintln!("SKIPPED: set BERTH_TEST_POSTGRES_URL to run the PostgreSQL variant");
        return;
    };
    reg.serve(&[]);
    let c = reg.client();
    let pause = tempfile::tempdir().unwrap();
    let hook = pause.path().to_str().unwrap().to_owned();
    let hold = pause.path().join("blobs-decided");

    // (a) The collector decides first: a HEAD meanwhile waits, then says 404, and the
    //     manifest fails until the blob is uploaded again.
    let x = Blob::new(seeded_bytes(11, 4096));
    c.push_blob("race/a", &x.data).await;
    tokio::time::sleep(PAST_GRACE).await;
    std::fs::write(&hold, b"").unwrap();
    let gc = reg.gc_background(&[], &[("BERTH_TEST_GC_PAUSE", &hook)]);
    reached(pause.path(), "blobs-decided", Duration::from_secs(20)).await;
    let probe = {
        let c = c.clone();
        let digest = x.digest.clone();
        tokio::spawn(async move { head(&c, "race/a", &digest).await })
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let early = probe.is_finished();
    std::fs::remove_file(&hold).unwrap();
    let status = probe.await.unwrap();
    assert_ne!(
        status, 200,
        "HEAD said 200 for a blob the collector had decided to delete"
    );
    assert_eq!(status, 404, "HEAD after the collector's commit");
    eprintln!(
        "(a) HEAD {} while the collector held the blob",
        match early {
            true => "answered at once",
            false => "waited",
        }
    );
    let run = gc.await.unwrap();
    assert_eq!(run.counts().1, 1, "{run:?}");
    let img = image_over(&c, "race/a", 1, &x).await;
    let (status, body) = put_manifest(&c, &img).await;
    assert_eq!(
        (status, error_code_of(&body).as_str()),
        (400, "MANIFEST_BLOB_UNKNOWN"),
        "{body}"
    );
    c.push_blob("race/a", &x.data).await;
    let (status, body) = put_manifest(&c, &img).await;
    assert_eq!(status, 201, "{body}");
    assert_pulls(&c, &img).await;

    // (b) The HEAD comes first: it refreshes the link, the pass keeps the blob.
    let y = Blob::new(seeded_bytes(12, 5000));
    c.push_blob("race/b", &y.data).await;
    tokio::time::sleep(PAST_GRACE).await;
    assert_eq!(head(&c, "race/b", &y.digest).await, 200);
    let run = reg.gc(&[], &[]).await;
    assert_eq!(
        run.counts().1,
        0,
        "a blob just confirmed by HEAD was collected: {run:?}"
    );
    let img = image_over(&c, "race/b", 2, &y).await;
    let (status, body) = put_manifest(&c, &img).await;
    assert_eq!(status, 201, "{body}");
    assert_pulls(&c, &img).await;

    // (c) A manifest PUT while the collector holds a doomed blob: never a 201.
    let z = Blob::new(seeded_bytes(13, 6000));
    c.push_blob("race/c", &z.data).await;
    tokio::time::sleep(PAST_GRACE).await;
    let img = image_over(&c, "race/c", 3, &z).await; // its config is fresh
    std::fs::remove_file(pause.path().join("blobs-decided.reached")).unwrap();
    std::fs::write(&hold, b"").unwrap();
    let gc = reg.gc_background(&[], &[("BERTH_TEST_GC_PAUSE", &hook)]);
    reached(pause.path(), "blobs-decided", Duration::from_secs(20)).await;
    let push = {
        let c = c.clone();
        let img = img.clone();
        tokio::spawn(async move { put_manifest(&c, &img).await })
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    if push.is_finished() {
        eprintln!("(c) the manifest PUT answered while the collector held the blob");
    }
    std::fs::remove_file(&hold).unwrap();
    let (status, body) = push.await.unwrap();
    assert_ne!(
        status, 201,
        "a manifest referencing a blob being collected was acknowledged"
    );
    assert_eq!(
        (status, error_code_of(&body).as_str()),
        (400, "MANIFEST_BLOB_UNKNOWN"),
        "{body}"
    );
    let run = gc.await.unwrap();
    assert_eq!(run.counts().1, 1, "{run:?}");
    assert_eq!(head(&c, "race/c", &z.digest).await, 404);
    assert_eq!(
        c.call("GET", &format!("/v2/race/c/manifests/{}", img.digest))
            .await
            .status(),
        404
    );

    // (d) A mount of a doomed blob while the collector holds it: not mounted (202, a
    //     normal upload instead), never a 201 for a blob about to disappear.
    let m = Blob::new(seeded_bytes(14, 7000));
    c.push_blob("race/d", &m.data).await;
    tokio::time::sleep(PAST_GRACE).await;
    let gc = paused_gc(&reg, pause.path(), "blobs-decided").await;
    let mount = {
        let c = c.clone();
        let digest = m.digest.clone();
        tokio::spawn(async move {
            let r = c
                .call(
                    "POST",
                    &format!("/v2/race/d2/blobs/uploads/?mount={digest}&from=race/d"),
                )
                .await;
            r.status().as_u16()
        })
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    std::fs::remove_file(&hold).unwrap();
    let status = mount.await.unwrap();
    assert_eq!(status, 202, "mount of a blob being collected");
    // The blob, and the config of (c) whose manifest was refused.
    assert_eq!(gc.await.unwrap().counts().1, 2);
    assert_eq!(head(&c, "race/d2", &m.digest).await, 404);
    assert_eq!(head(&c, "race/d", &m.digest).await, 404);

    // (e) The same bytes uploaded again (to another repository) while the collector
    //     holds the doomed blob: the upload succeeds and the blob is whole afterwards,
    //     made of the new upload's objects (the old ones are deleted).
    let e = Blob::new(seeded_bytes(15, 9000));
    c.push_blob("race/e", &e.data).await;
    let old_keys = reg.keys_of(&e.digest);
    tokio::time::sleep(PAST_GRACE).await;
    let gc = paused_gc(&reg, pause.path(), "blobs-decided").await;
    let again = {
        let c = c.clone();
        let e = e.clone();
        tokio::spawn(async move {
            upload(&c, "race/e2", &e, Method::SinglePost, "race/e").await;
        })
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    std::fs::remove_file(&hold).unwrap();
    again.await.expect("the upload beside the collector failed");
    assert_eq!(
        gc.await.unwrap().counts().1,
        1,
        "the old blob was collected"
    );
    let new_keys = reg.keys_of(&e.digest);
    assert!(!new_keys.is_empty(), "the uploaded blob has no row");
    for key in &new_keys {
        assert!(
            !old_keys.contains(key),
            "the blob row names an object the collector deleted: {key}"
        );
        assert!(
            reg.object_path(key).exists(),
            "object {key} of the new blob is missing"
        );
    }
    for key in &old_keys {
        assert!(
            !reg.object_path(key).exists(),
            "old object {key} left behind"
        );
    }
    let (status, data) = get_blob(&c, "race/e2", &e.digest).await;
    assert_eq!((status, sha256(&data)), (200, e.digest.clone()));
    assert_eq!(
        head(&c, "race/e", &e.digest).await,
        404,
        "race/e's link went with the old blob"
    );
    let img = image_over(&c, "race/e2", 5, &e).await;
    let (status, body) = put_manifest(&c, &img).await;
    assert_eq!(status, 201, "{body}");
    assert_pulls(&c, &img).await;
}

/// Starts `berthd gc` held at `point` and waits until it is there.
async fn paused_gc(reg: &Registry, dir: &Path, point: &str) -> tokio::task::JoinHandle<GcRun> {
    let _ = std::fs::remove_file(dir.join(format!("{point}.reached")));
    std::fs::write(dir.join(point), b"").unwrap();
    let hook = dir.to_str().unwrap().to_owned();
    let gc = reg.gc_background(&[], &[("BERTH_TEST_GC_PAUSE", &hook)]);
    reached(dir, point, Duration::from_secs(20)).await;
    gc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_then_manifest_race_sqlite() {
    head_then_manifest_race(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_then_manifest_race_postgres() {
    head_then_manifest_race(Db::Postgres).await;
}

// ---------------------------------------------------------------------------------
// 3. kill -9 in the middle of a pass.

fn fast_gc_env() -> [(&'static str, &'static str); 3] {
    [
        ("BERTH_GC_INTERVAL", "200ms"),
        ("BERTH_GC_GRACE", "1s"),
        ("BERTH_STORAGE_UPLOAD_EXPIRY_SECS", "1"),
    ]
}

/// An image and three garbage blobs, with the object keys of each.
async fn image_and_garbage(reg: &Registry, repo: &str) -> (Image, Vec<(Blob, Vec<String>)>) {
    let c = reg.client();
    let layer = Blob::new(seeded_bytes(21, 70_000));
    let config = config_blob(21, 0);
    c.push_blob(repo, &config.data).await;
    c.push_blob(repo, &layer.data).await;
    let img = image(repo, "v1", &config, &[layer]);
    let (status, body) = put_manifest(&c, &img).await;
    assert_eq!(status, 201, "{body}");
    let mut garbage = Vec::new();
    for n in 0..3 {
        let junk = Blob::new(seeded_bytes(30 + n, 10_000 + n as usize * 1000));
        upload(
            &c,
            repo,
            &junk,
            [Method::Monolithic, Method::Chunked, Method::SinglePost][n as usize],
            repo,
        )
        .await;
        let keys = reg.keys_of(&junk.digest);
        assert!(!keys.is_empty());
        garbage.push((junk, keys));
    }
    (img, garbage)
}

fn referenced(images: &[&Image]) -> BTreeMap<String, u64> {
    images
        .iter()
        .flat_map(|i| i.blobs.iter())
        .map(|b| (b.digest.clone(), b.data.len() as u64))
        .collect()
}

fn rows_of(reg: &Registry, garbage: &[(Blob, Vec<String>)]) -> u64 {
    let list: Vec<String> = garbage
        .iter()
        .map(|(b, _)| format!("'{}'", b.digest))
        .collect();
    reg.count(&format!(
        "SELECT count(*) FROM blobs WHERE digest IN ({})",
        list.join(",")
    ))
}

async fn kill_mid_pass(db: Db, s3: bool, point: &str) {
    let Some(mut reg) = Registry::new(db, s3, &fast_gc_env()).await else {
        eprintln!("SKIPPED: PostgreSQL (BERTH_TEST_POSTGRES_URL) or s3s-fs not available");
        return;
    };
    let started = Instant::now();
    let pause = tempfile::tempdir().unwrap();
    let hook = pause.path().to_str().unwrap().to_owned();
    std::fs::write(pause.path().join(point), b"").unwrap();
    // Pushed with the collector off, so that the first pass finds all the garbage past
    // the grace at once (one page).
    reg.serve(&[("BERTH_GC_INTERVAL", "off")]);
    let (img, garbage) = image_and_garbage(&reg, "crash/app").await;
    let garbage_bytes: u64 = garbage.iter().map(|(b, _)| b.data.len() as u64).sum();
    reg.server.as_mut().unwrap().stop();
    tokio::time::sleep(PAST_GRACE).await;
    reg.serve(&[("BERTH_TEST_GC_PAUSE", &hook)]);
    reached(pause.path(), point, Duration::from_secs(20)).await;
    let pid = reg.server().pid().unwrap();
    reg.server.as_mut().unwrap().kill();
    let expect_rows = match point {
        "blobs-committed" => 0, // the pass committed, its objects not deleted yet
        _ => 3,                 // decided, not committed: nothing happened
    };
    assert_eq!(
        rows_of(&reg, &garbage),
        expect_rows,
        "garbage rows after the kill at {point}"
    );
    for (blob, keys) in &garbage {
        for key in keys {
            assert!(
                reg.object_path(key).exists(),
                "object {key} of {} was deleted before the kill at {point}",
                blob.digest
            );
        }
    }
    let holder = reg.sql("SELECT holder FROM leases");
    assert!(
        holder.contains(&format!("pid {pid} ")),
        "the lease names the killed process: {holder}"
    );

    // Restarted without the hold: everything acknowledged is there.
    reg.serve(&[]);
    let c = reg.client();
    assert_pulls(&c, &img).await;
    // The killed pass's lease names a process of this host that is gone: the restarted
    // server takes it over at once instead of waiting for it to expire (2 minutes).
    let expected = referenced(&[&img]);
    assert_store_settles_to(&reg, &expected, Duration::from_secs(20)).await;
    for (blob, keys) in &garbage {
        assert_eq!(head(&c, "crash/app", &blob.digest).await, 404);
        for key in keys {
            assert!(!reg.object_path(key).exists(), "{key} left behind");
        }
    }
    let objects: usize = garbage.iter().map(|(_, k)| k.len()).sum();
    let (series, count) = match point {
        "blobs-committed" => ("berth_gc_deleted_total{kind=\"orphan_objects\"}", objects),
        _ => ("berth_gc_deleted_total{kind=\"blobs\"}", 3),
    };
    assert_eq!(reg.metric(series).await, count as f64, "{series}");
    let freed = reg.metric("berth_gc_freed_bytes_total").await;
    assert_eq!(freed, garbage_bytes as f64, "bytes freed after the restart");
    let busy = reg.metric("berth_gc_runs_total{outcome=\"busy\"}").await;
    assert_eq!(
        busy, 0.0,
        "the dead collector's lease held the restarted server up"
    );
    assert_pulls(&c, &img).await;
    eprintln!("kill at {point}: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_after_commit_sqlite_local_disk() {
    kill_mid_pass(Db::Sqlite, false, "blobs-committed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_after_commit_sqlite_s3() {
    kill_mid_pass(Db::Sqlite, true, "blobs-committed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_after_commit_postgres_local_disk() {
    kill_mid_pass(Db::Postgres, false, "blobs-committed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_before_commit_sqlite_local_disk() {
    kill_mid_pass(Db::Sqlite, false, "blobs-decided").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_before_commit_sqlite_s3() {
    kill_mid_pass(Db::Sqlite, true, "blobs-decided").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_before_commit_postgres_local_disk() {
    kill_mid_pass(Db::Postgres, false, "blobs-decided").await;
}

// ---------------------------------------------------------------------------------
// 4. Orphan objects, and the objects of uploads in progress.

/// Writes an object no row names, last modified `age` ago.
fn plant(reg: &Registry, name: &str, data: &[u8], age: Duration) -> PathBuf {
    let path = reg.key_root().join("data").join(&name[..2]).join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, data).unwrap();
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
    path
}

fn set_age(path: &Path, age: Duration) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
}

/// The objects an upload in progress names.
fn upload_keys(reg: &Registry) -> Vec<String> {
    reg.sql("SELECT segments FROM uploads")
        .lines()
        .flat_map(|l| {
            serde_json::from_str::<Vec<serde_json::Value>>(l)
                .unwrap()
                .into_iter()
                .map(|s| s["key"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// `grace` and `expiry` (seconds): the orphan age is the larger.
async fn orphans_and_uploads(db: Db, s3: bool, grace: &str, expiry: &str) {
    let Some(mut reg) = Registry::new(
        db,
        s3,
        &[
            ("BERTH_GC_INTERVAL", "200ms"),
            ("BERTH_GC_GRACE", grace),
            ("BERTH_STORAGE_UPLOAD_EXPIRY_SECS", expiry),
        ],
    )
    .await
    else {
        eprintln!("SKIPPED: PostgreSQL (BERTH_TEST_POSTGRES_URL) or s3s-fs not available");
        return;
    };
    let started = Instant::now();
    let orphan_age = Duration::from_secs(expiry.parse::<u64>().unwrap()).max(Duration::from_secs(
        grace.trim_end_matches('s').parse::<u64>().unwrap(),
    ));
    // Keep-alive period for uploads: well inside the expiry.
    let keep_alive =
        (Duration::from_secs(expiry.parse::<u64>().unwrap()) / 4).min(Duration::from_millis(250));
    reg.serve(&[]);
    let c = reg.client();
    let (img, _) = image_and_garbage(&reg, "orphans/app").await;

    // An upload kept busy, chunk by chunk, for longer than the orphan age. It starts
    // first, so its first object is older than the young orphan below.
    let data = seeded_bytes(41, 128 * 1024);
    let piece = 2048;
    let mut location = c.start_upload("orphans/app").await;
    location = c.append_chunk(&location, &data, 0..piece).await;
    let first_keys = upload_keys(&reg);
    assert_eq!(first_keys.len(), 1, "one object for the first chunk");
    let first = reg.object_path(&first_keys[0]);
    // An idle upload whose only object is older than the orphan age (by the store's
    // clock), not expired yet.
    let idle_data = seeded_bytes(42, 8000);
    let idle_location = c.start_upload("orphans/app").await;
    c.append_chunk(&idle_location, &idle_data, 0..idle_data.len())
        .await;
    let idle_key = upload_keys(&reg)
        .into_iter()
        .find(|k| *k != first_keys[0])
        .unwrap();
    let idle = reg.object_path(&idle_key);
    set_age(&idle, Duration::from_secs(3600));

    // Planted: one long orphaned, one just written, and a file outside the data prefix.
    let old = plant(
        &reg,
        "ab0ld0000000000000000000000000000",
        b"orphaned an hour ago",
        Duration::from_secs(3600),
    );
    let young_at = SystemTime::now();
    let young = plant(
        &reg,
        "cdy0ung00000000000000000000000000",
        b"orphaned just now",
        Duration::ZERO,
    );
    let outside = reg.key_root().join("operator-notes.txt");
    std::fs::write(&outside, b"not the collector's").unwrap();
    set_age(&outside, Duration::from_secs(3600));

    let mut idle_checks = 0;
    let mut idle_ended = false;
    let mut old_gone = None;
    let mut offset = piece;
    let mut last_patch = Instant::now();
    let deadline = Instant::now() + orphan_age + Duration::from_secs(10);
    let young_gone_at = loop {
        assert!(
            Instant::now() < deadline,
            "orphans not collected (old gone: {old_gone:?}, young there: {})",
            young.exists()
        );
        // While the idle upload exists, its object stays (it may expire meanwhile:
        // expiry deletes the row first, then the objects).
        if !idle_ended {
            let present = idle.exists();
            let status = c.call("GET", &idle_location).await.status();
            match status.as_u16() {
                204 => assert!(
                    present,
                    "an upload's object was deleted while the upload exists"
                ),
                404 => idle_ended = true,
                s => panic!("upload status {s}"),
            }
            idle_checks += 1;
        }
        assert!(first.exists(), "the busy upload's first object was deleted");
        if old_gone.is_none() && !old.exists() {
            old_gone = Some(young_at.elapsed().unwrap());
        }
        if old_gone.is_some() && !young.exists() {
            break SystemTime::now();
        }
        if last_patch.elapsed() >= keep_alive {
            assert!(
                offset + piece < data.len(),
                "ran out of chunks to keep the upload busy"
            );
            location = c
                .append_chunk(&location, &data, offset..offset + piece)
                .await;
            offset += piece;
            last_patch = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    location = c.append_chunk(&location, &data, offset..data.len()).await;
    let young_age = young_gone_at.duration_since(young_at).unwrap();
    assert!(
        young_age + Duration::from_millis(100) >= orphan_age,
        "an orphan was collected {young_age:?} after it was written (orphan age {orphan_age:?})"
    );
    let first_age = SystemTime::now()
        .duration_since(std::fs::metadata(&first).unwrap().modified().unwrap())
        .unwrap();
    assert!(
        first_age > orphan_age,
        "the upload's first object is older than the orphan age"
    );
    // The upload completes with every byte, its oldest object included.
    let digest = sha256(&data);
    let r = c
        .request("PUT", &format!("{location}?digest={digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let (status, got) = get_blob(&c, "orphans/app", &digest).await;
    assert_eq!((status, sha256(&got)), (200, digest.clone()));
    assert!(
        outside.exists(),
        "a file outside the data prefix was deleted"
    );
    assert_pulls(&c, &img).await;
    eprintln!(
        "orphan age {orphan_age:?}: old orphan went after {old_gone:?}, young after {young_age:?}; \
         idle upload checked {idle_checks} times (ended: {idle_ended}); {:?} in all",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_and_uploads_sqlite_local_disk() {
    orphans_and_uploads(Db::Sqlite, false, "1s", "3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_and_uploads_postgres_s3() {
    orphans_and_uploads(Db::Postgres, true, "3s", "1").await;
}

// ---------------------------------------------------------------------------------
// 5. The operator's view: `berthd gc`, the lease, metrics, logs.

async fn dry_run_and_lease(db: Db) {
    let Some(mut reg) = Registry::new(db, false, &gc_env()).await else {
        eprintln!("SKIPPED: set BERTH_TEST_POSTGRES_URL to run the PostgreSQL variant");
        return;
    };
    reg.serve(&[]);
    let c = reg.client();
    let (img, garbage) = image_and_garbage(&reg, "ops/app").await;
    let garbage_bytes: u64 = garbage.iter().map(|(b, _)| b.data.len() as u64).sum();
    let orphan = plant(
        &reg,
        "ef0rphan000000000000000000000000",
        b"fifteen bytes!!",
        Duration::from_secs(3600),
    );
    let orphan_env = [("BERTH_STORAGE_UPLOAD_EXPIRY_SECS", "1")];
    tokio::time::sleep(PAST_GRACE).await;

    let dry = reg.gc(&["--dry-run"], &orphan_env).await;
    assert!(dry.stdout.starts_with("would delete "), "{dry:?}");
    assert_eq!(dry.counts(), (0, 3, garbage_bytes, 1, 15), "{dry:?}");
    assert_eq!(rows_of(&reg, &garbage), 3, "a dry run deletes nothing");
    assert!(orphan.exists(), "a dry run deletes nothing");
    let real = reg.gc(&[], &orphan_env).await;
    assert!(real.stdout.starts_with("deleted "), "{real:?}");
    assert_eq!(
        real.counts(),
        dry.counts(),
        "the dry run counted what the pass deleted"
    );
    assert_eq!(rows_of(&reg, &garbage), 0);
    assert!(!orphan.exists());
    assert_store_settles_to(&reg, &referenced(&[&img]), Duration::from_secs(1)).await;
    assert_pulls(&c, &img).await;

    // One collector at a time: a second `berthd gc` while one is paused (after its
    // commit, so that on SQLite it holds no write lock) is refused.
    let junk = Blob::new(seeded_bytes(51, 2222));
    c.push_blob("ops/app", &junk.data).await;
    tokio::time::sleep(PAST_GRACE).await;
    let pause = tempfile::tempdir().unwrap();
    let hook = pause.path().to_str().unwrap().to_owned();
    std::fs::write(pause.path().join("blobs-committed"), b"").unwrap();
    let first = reg.gc_background(&[], &[("BERTH_TEST_GC_PAUSE", &hook)]);
    reached(pause.path(), "blobs-committed", Duration::from_secs(20)).await;
    let second = reg.gc(&[], &[]).await;
    assert!(
        !second.ok,
        "a second collection ran beside the first: {second:?}"
    );
    assert!(
        second
            .stderr
            .contains("another garbage collection is running"),
        "{second:?}"
    );
    let dry = reg.gc(&["--dry-run"], &[]).await;
    assert!(
        !dry.ok && dry.stderr.contains("another garbage collection is running"),
        "{dry:?}"
    );
    std::fs::remove_file(pause.path().join("blobs-committed")).unwrap();
    let first = first.await.unwrap();
    assert_eq!(first.counts().1, 1, "{first:?}");
    // Released: the next one runs.
    let next = reg.gc(&[], &[]).await;
    assert_eq!(next.counts(), (0, 0, 0, 0, 0), "{next:?}");
    assert_pulls(&c, &img).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_counts_and_one_collector_sqlite() {
    dry_run_and_lease(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_counts_and_one_collector_postgres() {
    dry_run_and_lease(Db::Postgres).await;
}

/// With the untagged-manifest policy on, a dry run counts what the pass deletes: the
/// manifests and the blobs unreferenced when it starts; the blobs only those
/// manifests referenced go in the next pass (counted by its own dry run).
async fn dry_run_with_untagged_policy(db: Db) {
    let Some(mut reg) = Registry::new(
        db,
        false,
        &[
            ("BERTH_GC_INTERVAL", "off"),
            ("BERTH_GC_GRACE", "1s"),
            ("BERTH_GC_DELETE_UNTAGGED_AFTER", "1s"),
        ],
    )
    .await
    else {
        eprintln!("SKIPPED: set BERTH_TEST_POSTGRES_URL to run the PostgreSQL variant");
        return;
    };
    reg.serve(&[]);
    let c = reg.client();
    let (tagged, _) = image_and_garbage(&reg, "ops/app").await;
    // An untagged image (pushed by digest) with a layer of its own.
    let layer = Blob::new(seeded_bytes(61, 3333));
    c.push_blob("ops/app", &layer.data).await;
    let mut untagged = image_over(&c, "ops/app", 61, &layer).await;
    untagged.tag = untagged.digest.clone();
    let (status, body) = put_manifest(&c, &untagged).await;
    assert_eq!(status, 201, "{body}");
    tokio::time::sleep(PAST_GRACE).await;
    let dry = reg.gc(&["--dry-run"], &[]).await;
    let real = reg.gc(&[], &[]).await;
    let (m, b, _, _, _) = real.counts();
    assert_eq!(
        (m, b),
        (1, 3),
        "the untagged manifest and the garbage: {real:?}"
    );
    assert_eq!(
        dry.counts(),
        real.counts(),
        "the dry run counted something else than the pass deleted: {dry:?} vs {real:?}"
    );
    // The untagged image's two blobs (old enough, unreferenced now) go next.
    let dry = reg.gc(&["--dry-run"], &[]).await;
    let real = reg.gc(&[], &[]).await;
    assert_eq!((real.counts().0, real.counts().1), (0, 2), "{real:?}");
    assert_eq!(dry.counts(), real.counts(), "{dry:?} vs {real:?}");
    assert_pulls(&c, &tagged).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_counts_with_untagged_policy_sqlite() {
    dry_run_with_untagged_policy(Db::Sqlite).await;
}

/// `berthd gc` deleting an untagged manifest while the server runs: the server stops
/// serving it within a second (on SQLite it caches manifests in process, and drops
/// the cache when another process's collection deleted any).
async fn collected_manifest_gone_from_running_server(db: Db) {
    let Some(mut reg) = Registry::new(
        db,
        false,
        &[("BERTH_GC_INTERVAL", "off"), ("BERTH_GC_GRACE", "1s")],
    )
    .await
    else {
        eprintln!("SKIPPED: set BERTH_TEST_POSTGRES_URL to run the PostgreSQL variant");
        return;
    };
    reg.serve(&[]);
    let c = reg.client();
    let layer = Blob::new(seeded_bytes(71, 4444));
    c.push_blob("ops/app", &layer.data).await;
    let mut img = image_over(&c, "ops/app", 71, &layer).await;
    img.tag = img.digest.clone();
    let (status, body) = put_manifest(&c, &img).await;
    assert_eq!(status, 201, "{body}");
    assert_pulls(&c, &img).await; // now in the server's cache
                                  // Unpulled past the grace (pull times are written every 2 s), then collected by
                                  // the command.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let run = reg
        .gc(&[], &[("BERTH_GC_DELETE_UNTAGGED_AFTER", "1s")])
        .await;
    assert_eq!(run.counts().0, 1, "{run:?}");
    let collected = Instant::now();
    let status = || async {
        c.request("GET", &format!("/v2/ops/app/manifests/{}", img.digest))
            .header("Accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    while status().await != 404 {
        assert!(
            collected.elapsed() < Duration::from_millis(1500),
            "the server still serves a manifest `berthd gc` deleted, {:?} later (run: {run:?})",
            collected.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collected_manifest_gone_from_running_server_sqlite() {
    collected_manifest_gone_from_running_server(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collected_manifest_gone_from_running_server_postgres() {
    collected_manifest_gone_from_running_server(Db::Postgres).await;
}

/// The server's own loop: metrics and one log line per pass.
async fn server_metrics_and_log(db: Db) {
    let Some(mut reg) = Registry::new(db, false, &fast_gc_env()).await else {
        eprintln!("SKIPPED: set BERTH_TEST_POSTGRES_URL to run the PostgreSQL variant");
        return;
    };
    reg.serve(&[]);
    let c = reg.client();
    let (img, garbage) = image_and_garbage(&reg, "ops/app").await;
    let garbage_bytes: u64 = garbage.iter().map(|(b, _)| b.data.len() as u64).sum();
    let deleted = "berth_gc_deleted_total{kind=\"blobs\"}";
    eventually(
        Duration::from_secs(15),
        "the server collecting the garbage",
        || {
            let reg = &reg;
            async move {
                let n = reg.metric(deleted).await;
                (n >= 3.0).then_some(()).ok_or(format!("{n}"))
            }
        },
    )
    .await;
    // Let a few more passes run: they find nothing more.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let before = metrics_text(&c).await;
    let log = reg.server().log();
    let after = metrics_text(&c).await;
    let ok = "berth_gc_runs_total{outcome=\"ok\"}";
    assert_eq!(metric_value(&after, deleted), 3.0, "blobs deleted");
    assert_eq!(
        metric_value(&after, "berth_gc_deleted_total{kind=\"manifests\"}"),
        0.0
    );
    assert_eq!(
        metric_value(&after, "berth_gc_runs_total{outcome=\"failed\"}"),
        0.0
    );
    assert!(metric_value(&after, ok) >= 2.0, "passes: {after}");
    assert_eq!(
        metric_value(&after, "berth_gc_freed_bytes_total"),
        garbage_bytes as f64
    );
    let last = metric_value(&after, "berth_gc_last_success_timestamp_seconds");
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - last).abs() < 10.0, "last success {last}, now {now}");
    assert!(metric_value(&after, "berth_gc_duration_seconds_count") >= metric_value(&before, ok));
    // One line per pass.
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("garbage collection: "))
        .collect();
    let passes = lines.len() as f64;
    assert!(
        metric_value(&before, ok) <= passes && passes <= metric_value(&after, ok),
        "{passes} log lines for {} to {} passes:\n{}",
        metric_value(&before, ok),
        metric_value(&after, ok),
        lines.join("\n")
    );
    let logged_blobs: u64 = lines
        .iter()
        .map(|l| report_counts(l.split("garbage collection: ").nth(1).unwrap()).1)
        .sum();
    assert_eq!(
        logged_blobs,
        3,
        "blobs the log lines report:\n{}",
        lines.join("\n")
    );
    assert_pulls(&c, &img).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_metrics_and_log_sqlite() {
    server_metrics_and_log(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_metrics_and_log_postgres() {
    server_metrics_and_log(Db::Postgres).await;
}
