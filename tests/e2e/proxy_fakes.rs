//! What the pull-through proxy tests stand on: a berthd configured with `[[proxy]]`
//! tables, upstreams of every kind on loopback (another berthd, Distribution, a fake
//! HTTP/1.1 server that misbehaves on purpose, a relay that counts requests and
//! slows bytes down), and small readers of metrics and error bodies.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_tests::*;
use sha2::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------------
// The proxy server under test.

/// One `[[proxy]]` table: `prefix`, `upstream`, then `extra` keys (all strings).
pub fn proxy_table(prefix: &str, upstream: &str, extra: &[(&str, &str)]) -> String {
    let mut table = format!("[[proxy]]\nprefix = {prefix:?}\nupstream = {upstream:?}\n");
    for (key, value) in extra {
        table.push_str(&format!("{key} = {value:?}\n"));
    }
    table + "\n"
}

/// A berthd whose config file (`BERTH_CONFIG`) holds `[[proxy]]` tables.
pub struct ProxyServer {
    pub s: Berthd,
    /// Everything the server's environment got (the config file, credentials, `[gc]`):
    /// admin commands run with the same.
    pub env: Vec<(String, String)>,
    /// The `mirror_listen` address, when the config has one.
    pub mirror: Option<String>,
    _config: tempfile::TempDir,
}

impl ProxyServer {
    /// Starts berthd on `db` with `config` as its config file and `env` in its
    /// environment, after creating `users` (auth on when there are any) and running
    /// `setup(data_dir, database_url, env)` (organizations…). `mirror` is the config's
    /// `mirror_listen`, if any. `None` when that database is not available outside CI.
    pub async fn start(
        db: Db,
        config: &str,
        users: &[(&str, &str, bool)],
        env: &[(&str, &str)],
        mirror: Option<&str>,
        setup: impl FnOnce(&Path, Option<&str>, &[(&str, &str)]),
    ) -> Option<ProxyServer> {
        let database_url = match db {
            Db::Sqlite => None,
            Db::Postgres => Some(fresh_postgres_database(&postgres_admin_url()?).await),
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.toml");
        std::fs::write(&path, config).unwrap();
        let mut all = vec![("BERTH_CONFIG".to_owned(), path.display().to_string())];
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let pairs: Vec<(&str, &str)> = all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let tmp = Arc::new(tempfile::tempdir().unwrap());
        let data_dir = tmp.path().join("data");
        add_users(&data_dir, database_url.as_deref(), &pairs, users);
        setup(&data_dir, database_url.as_deref(), &pairs);
        let mut s = Berthd::spawn(data_dir, database_url, Some(tmp), &pairs);
        if let Some(mirror) = mirror {
            // Berthd takes the first "listening on" line: make sure it is the main one.
            if s.addr == mirror {
                let log = s.log();
                let main = log
                    .split("listening on http://")
                    .skip(1)
                    .filter_map(|rest| rest.split_whitespace().next())
                    .find(|addr| *addr != mirror)
                    .unwrap_or_else(|| panic!("no main listener in the log:\n{log}"))
                    .to_owned();
                s.url = format!("http://{main}");
                s.addr = main;
            }
            wait_for_port(mirror, "the mirror listener");
        }
        Some(ProxyServer {
            s,
            env: all,
            mirror: mirror.map(str::to_owned),
            _config: dir,
        })
    }

    pub fn client(&self) -> Client {
        self.s.client()
    }

    /// A client of the mirror listener.
    pub fn mirror_client(&self) -> Client {
        Client::new(&format!(
            "http://{}",
            self.mirror.as_deref().expect("a mirror_listen")
        ))
    }

    /// `berthd ARGS…` on the server's data with the server's environment.
    pub fn admin(&self, args: &[&str]) -> std::process::Output {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        berthd_command_with_env(
            &self.s.data_dir,
            self.s.database_url.as_deref(),
            &env,
            args,
            None,
        )
    }
}

// ---------------------------------------------------------------------------------
// Reading answers.

/// Status, spec error code and message of a response (for a body that is no spec
/// error: its text, or how many bytes came before it broke off).
pub async fn error_of(mut r: reqwest::Response) -> (u16, String, String) {
    let status = r.status().as_u16();
    let mut body = Vec::new();
    let broke = loop {
        match r.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let code = json["errors"][0]["code"].as_str().unwrap_or_default();
    let message = json["errors"][0]["message"].as_str().unwrap_or_default();
    let message = match (code.is_empty() && message.is_empty(), broke) {
        (false, _) => message.to_owned(),
        (true, Some(e)) => format!(
            "no spec error: {} body bytes, then the body broke off: {e:?}",
            body.len()
        ),
        (true, None) => format!(
            "no spec error: a {}-byte body: {}",
            body.len(),
            String::from_utf8_lossy(&body[..body.len().min(500)])
        ),
    };
    (status, code.to_owned(), message)
}

/// The text of `/metrics`.
pub async fn metrics(c: &Client) -> String {
    let r = c.call("GET", "/metrics").await;
    assert_eq!(r.status(), 200, "GET /metrics");
    r.text().await.unwrap()
}

/// The value of series `name` with exactly `labels` (in any order) in a Prometheus
/// text exposition; 0 when it is absent.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let want: BTreeMap<&str, &str> = labels.iter().copied().collect();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, have) = match series.split_once('{') {
            Some((n, rest)) => {
                let inner = rest.strip_suffix('}').unwrap_or(rest);
                let have: BTreeMap<&str, &str> = inner
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .filter_map(|p| {
                        let (k, v) = p.split_once('=')?;
                        Some((k.trim(), v.trim_matches('"')))
                    })
                    .collect();
                (n, have)
            }
            None => (series, BTreeMap::new()),
        };
        if series_name == name && have == want {
            return value.trim().parse().unwrap_or(0.0);
        }
    }
    0.0
}

/// The Accept list Docker Engine sends for a manifest (one header per type).
pub const DOCKER_ACCEPT: [&str; 6] = [
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/json",
];

/// GET (or HEAD) a manifest with Docker's Accept list.
pub async fn manifest_request(
    c: &Client,
    method: &str,
    repo: &str,
    reference: &str,
) -> reqwest::Response {
    let mut r = c
        .request(method, &format!("/v2/{repo}/manifests/{reference}"))
        .header("User-Agent", "docker/28.2.2 go/go1.24 os/linux arch/amd64");
    for accept in DOCKER_ACCEPT {
        r = r.header("Accept", accept);
    }
    r.send().await.unwrap()
}

/// A whole GET of a manifest that must succeed: (bytes, Docker-Content-Digest,
/// Content-Type).
pub async fn get_manifest(c: &Client, repo: &str, reference: &str) -> (Vec<u8>, String, String) {
    let r = manifest_request(c, "GET", repo, reference).await;
    let status = r.status();
    let header = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (digest, media_type) = (header("docker-content-digest"), header("content-type"));
    let body = r.bytes().await.unwrap().to_vec();
    assert_eq!(
        status,
        200,
        "GET /v2/{repo}/manifests/{reference}: {}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(
        sha256(&body),
        digest,
        "GET /v2/{repo}/manifests/{reference}: the bytes hash to the digest the header names"
    );
    (body, digest, media_type)
}

/// A whole GET of a blob, hashed on the way: (status, length, sha256 digest, and the
/// body itself when `keep`), or the error that broke the body off.
pub async fn stream_blob(
    c: &Client,
    repo: &str,
    digest: &str,
    keep: bool,
) -> Result<(u16, u64, String, Vec<u8>), String> {
    let mut r = c
        .request("GET", &format!("/v2/{repo}/blobs/{digest}"))
        .send()
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = r.status().as_u16();
    let mut hasher = sha2::Sha256::new();
    let (mut len, mut kept) = (0u64, Vec::new());
    loop {
        match r.chunk().await {
            Ok(Some(chunk)) => {
                hasher.update(&chunk);
                len += chunk.len() as u64;
                if keep {
                    kept.extend_from_slice(&chunk);
                }
            }
            Ok(None) => break,
            Err(e) => return Err(format!("body broke off after {len} bytes: {e:?}")),
        }
    }
    Ok((
        status,
        len,
        format!("sha256:{}", hex::encode(hasher.finalize())),
        kept,
    ))
}

/// GET a blob that must come back whole: 200 and exactly `expected`.
pub async fn assert_blob(c: &Client, repo: &str, digest: &str, expected: &[u8]) {
    let (status, len, got, body) = stream_blob(c, repo, digest, true)
        .await
        .unwrap_or_else(|e| panic!("GET /v2/{repo}/blobs/{digest}: {e}"));
    assert_eq!(
        status,
        200,
        "GET /v2/{repo}/blobs/{digest}: {}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(len as usize, expected.len(), "blob {digest} length");
    assert_eq!(got, digest, "blob {digest}: what came back hashes to {got}");
    assert!(body == expected, "blob {digest}: bytes differ");
}

/// Pulls an image the way a client does (manifest by `reference`, then its config
/// and layers), checking every digest; returns the manifest digest.
pub async fn pull_image(c: &Client, repo: &str, reference: &str) -> String {
    let (body, digest, _) = get_manifest(c, repo, reference).await;
    let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut blobs = vec![m["config"]["digest"].as_str().unwrap().to_owned()];
    blobs.extend(
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_owned()),
    );
    for blob in blobs {
        let (status, _, got, _) = stream_blob(c, repo, &blob, false)
            .await
            .unwrap_or_else(|e| panic!("GET /v2/{repo}/blobs/{blob}: {e}"));
        assert_eq!(status, 200, "GET /v2/{repo}/blobs/{blob}");
        assert_eq!(got, blob, "GET /v2/{repo}/blobs/{blob}: content");
    }
    digest
}

/// Polls `check` every 100 ms until it returns `Ok`; panics with `what` and the last
/// error after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => {
                panic!("{what}: not within {limit:?}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

// ---------------------------------------------------------------------------------
// A fake upstream: a tiny HTTP/1.1 server answering each request as told.

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct FakeRequest {
    pub method: String,
    /// With its query string.
    pub path: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl FakeRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the fake answers.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn new(status: u16) -> Reply {
        Reply {
            status,
            headers: vec![(
                "Docker-Distribution-API-Version".into(),
                "registry/2.0".into(),
            )],
            body: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: Vec<u8>) -> Reply {
        self.body = body;
        self
    }

    /// A spec JSON error.
    pub fn error(status: u16, code: &str) -> Reply {
        Reply::new(status)
            .header("Content-Type", "application/json")
            .body(
                serde_json::to_vec(&serde_json::json!({
                    "errors": [{"code": code, "message": format!("fake upstream says {code}")}]
                }))
                .unwrap(),
            )
    }
}

pub type Handler = Arc<dyn Fn(&FakeRequest) -> Reply + Send + Sync>;

/// The fake upstream server; stops when dropped.
pub struct FakeUpstream {
    pub url: String,
    seen: Arc<Mutex<Vec<FakeRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeUpstream {
    pub async fn start(handler: Handler) -> FakeUpstream {
        FakeUpstream::start_on("127.0.0.1:0", handler).await
    }

    /// On a given address (a port an earlier fake gave up, say).
    pub async fn start_on(addr: &str, handler: Handler) -> FakeUpstream {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(fake_connection(conn, handler.clone(), log.clone()));
            }
        });
        FakeUpstream { url, seen, task }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<FakeRequest> {
        self.seen.lock().unwrap().clone()
    }

    /// How many requests had this path (any method).
    pub fn count(&self, path: &str) -> usize {
        self.requests().iter().filter(|r| r.path == path).count()
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves requests on one connection, one at a time, until the client closes it.
async fn fake_connection(
    mut conn: tokio::net::TcpStream,
    handler: Handler,
    seen: Arc<Mutex<Vec<FakeRequest>>>,
) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // The head of the next request.
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let mut chunk = [0u8; 8192];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if buf.len() > 1 << 20 {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or_default().split(' ');
        let mut request = FakeRequest {
            method: first.next().unwrap_or_default().to_owned(),
            path: first.next().unwrap_or_default().to_owned(),
            headers: lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect(),
            body: Vec::new(),
        };
        // The request body, if any.
        let length: usize = request
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < length {
            let mut chunk = [0u8; 8192];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        request.body = buf.drain(..length).collect();
        seen.lock().unwrap().push(request.clone());
        let reply = handler(&request);
        let mut out = format!("HTTP/1.1 {} Fake\r\n", reply.status);
        for (k, v) in &reply.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n", reply.body.len()));
        if conn.write_all(out.as_bytes()).await.is_err() {
            return;
        }
        if request.method != "HEAD" && conn.write_all(&reply.body).await.is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------
// A relay in front of an upstream: records the request lines it carries, counts the
// bytes coming back and can slow them down.

pub struct Relay {
    pub url: String,
    lines: Arc<Mutex<Vec<String>>>,
    down: Arc<AtomicU64>,
    rate: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// A relay to `upstream` (`host:port`), passing at most `rate` bytes a second
    /// back on each connection (0: as fast as it comes).
    pub async fn start(upstream: &str, rate: u64) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let lines = Arc::new(Mutex::new(Vec::new()));
        let down = Arc::new(AtomicU64::new(0));
        let rate = Arc::new(AtomicU64::new(rate));
        let (upstream, l, d, r) = (
            upstream.to_owned(),
            lines.clone(),
            down.clone(),
            rate.clone(),
        );
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue; // the upstream is down: the client sees the connection close
                };
                tokio::spawn(relay_connection(
                    client,
                    server,
                    l.clone(),
                    d.clone(),
                    r.clone(),
                ));
            }
        });
        Relay {
            url,
            lines,
            down,
            rate,
            task,
        }
    }

    pub fn set_rate(&self, bytes_per_second: u64) {
        self.rate.store(bytes_per_second, Ordering::SeqCst);
    }

    /// Bytes carried back from the upstream so far.
    pub fn down_bytes(&self) -> u64 {
        self.down.load(Ordering::SeqCst)
    }

    /// The request lines (`GET /v2/… HTTP/1.1`) carried so far.
    pub fn request_lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// How many requests `METHOD PATH` were carried.
    pub fn count(&self, method: &str, path: &str) -> usize {
        let prefix = format!("{method} {path} ");
        self.request_lines()
            .iter()
            .filter(|l| l.starts_with(&prefix))
            .count()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay_connection(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    lines: Arc<Mutex<Vec<String>>>,
    down: Arc<AtomicU64>,
    rate: Arc<AtomicU64>,
) {
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let back = tokio::spawn(async move {
        let started = Instant::now();
        let mut sent = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from_server.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if to_client.write_all(&buf[..n]).await.is_err() {
                break;
            }
            sent += n as u64;
            down.fetch_add(n as u64, Ordering::SeqCst);
            let rate = rate.load(Ordering::SeqCst);
            if rate > 0 {
                let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
        let _ = to_client.shutdown().await;
    });
    let mut pending = String::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from_client.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.push_str(&String::from_utf8_lossy(&buf[..n]));
        while let Some(i) = pending.find("\r\n") {
            let line: String = pending.drain(..i + 2).collect();
            let line = line.trim_end();
            let method = line.split(' ').next().unwrap_or_default();
            if line.ends_with(" HTTP/1.1")
                && ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"].contains(&method)
            {
                lines.lock().unwrap().push(line.to_owned());
            }
        }
        if to_server.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to_server.shutdown().await;
    let _ = back.await;
}

// ---------------------------------------------------------------------------------
// Images made here.

/// sha256 digests of every file under `dir` (recursively).
pub fn file_digests(dir: &Path) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(file_digests(&path));
        } else {
            out.insert(sha256(&std::fs::read(&path).unwrap()));
        }
    }
    out
}

/// A one-layer image a fake upstream serves: its config, layer and manifest with their
/// digests.
pub struct FakeImage {
    pub config: Vec<u8>,
    pub config_digest: String,
    pub layer: Vec<u8>,
    pub layer_digest: String,
    pub manifest: Vec<u8>,
    pub digest: String,
}

impl FakeImage {
    /// For `architecture`, with a layer of `size` seeded bytes.
    pub fn new(architecture: &str, seed: u64, size: usize) -> FakeImage {
        let config = format!(
            r#"{{"architecture":"{architecture}","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}}}}"#
        )
        .into_bytes();
        let layer = seeded_bytes(seed, size);
        let (config_digest, layer_digest) = (sha256(&config), sha256(&layer));
        let manifest = image_manifest(&config_digest, config.len(), &[(&layer_digest, size)], None);
        FakeImage {
            digest: sha256(&manifest),
            config,
            config_digest,
            layer,
            layer_digest,
            manifest,
        }
    }
}

/// An `Authorization: Basic` value.
pub fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}
