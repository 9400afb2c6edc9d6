//! Test helpers: start a real `berthd` process on an ephemeral port with a fresh data
//! directory (and, for PostgreSQL, a fresh database), and a small registry client.

pub mod browser;
pub mod containers;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_oci::{Algorithm, Digest};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// The metadata database a test server runs on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A path to a built binary of this workspace (`cargo build --bins` runs first).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test-binary> -> target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: build the workspace binaries first (cargo build --workspace --bins)",
        bin.display()
    );
    bin
}

/// True when running in CI, where a missing service is a failure rather than a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The PostgreSQL server URL for tests (`BERTH_TEST_POSTGRES_URL`), if configured.
/// In CI it must be configured.
pub fn postgres_admin_url() -> Option<String> {
    match std::env::var("BERTH_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if in_ci() => panic!(
            "BERTH_TEST_POSTGRES_URL is not set: PostgreSQL tests cannot run in CI without it"
        ),
        _ => None,
    }
}

/// Is `tool` on PATH? In CI every tool the tests use must be.
pub fn require_tool(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(!in_ci(), "{tool} is not installed; CI must install it");
        eprintln!(
            "SKIPPED: {tool} is not installed (install it, or run the README's test command)"
        );
    }
    found
}

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}_{}", std::process::id(), nanos)
}

/// Creates an empty PostgreSQL database and returns its URL.
pub async fn fresh_postgres_database(admin_url: &str) -> String {
    let name = format!("berth_test_{}", unique_suffix());
    let status = Command::new("psql")
        .arg(admin_url)
        .arg("-qc")
        .arg(format!("CREATE DATABASE {name}"))
        .status()
        .expect("run psql");
    assert!(status.success(), "CREATE DATABASE {name} failed");
    let base = admin_url.rsplit_once('/').map_or(admin_url, |(b, _)| b);
    format!("{base}/{name}")
}

/// A free loopback port (bound, then released for the caller's server).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// A real S3 protocol server (`s3s-fs`, installed by the README's test command) over
/// a temporary directory, with one bucket; killed on drop.
pub struct S3Server {
    child: Child,
    pub endpoint: String,
    pub bucket: String,
    /// The bucket's directory: one file per object.
    pub dir: PathBuf,
    port: u16,
    root: tempfile::TempDir,
}

pub const S3_ACCESS_KEY: &str = "berth-test-access";
pub const S3_SECRET_KEY: &str = "berth-test-secret-key-0123456789";

impl S3Server {
    /// `None` outside CI when s3s-fs is not installed.
    pub fn start() -> Option<S3Server> {
        if !require_tool("s3s-fs") {
            return None;
        }
        let root = tempfile::tempdir().expect("temp dir");
        let bucket = "registry".to_owned();
        let dir = root.path().join(&bucket);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        Some(S3Server {
            child: S3Server::spawn(root.path(), port),
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket,
            dir,
            port,
            root,
        })
    }

    fn spawn(root: &Path, port: u16) -> Child {
        let child = Command::new("s3s-fs")
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    }

    /// Starts the server again (after [`S3Server::kill`]) on the same port and data.
    pub fn restart(&mut self) {
        self.kill();
        self.child = S3Server::spawn(self.root.path(), self.port);
    }

    /// The settings that point `berthd` at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("BERTH_STORAGE_BACKEND", "s3".into()),
            ("BERTH_STORAGE_BUCKET", self.bucket.clone()),
            ("BERTH_STORAGE_ENDPOINT", self.endpoint.clone()),
            ("BERTH_STORAGE_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY.into()),
        ]
    }

    /// Files the bucket holds (objects; s3s-fs keeps in-progress multipart parts elsewhere).
    pub fn object_count(&self) -> usize {
        fn walk(dir: &Path) -> usize {
            std::fs::read_dir(dir).map_or(0, |entries| {
                entries
                    .map_while(Result::ok)
                    .map(|e| {
                        let p = e.path();
                        if p.is_dir() {
                            walk(&p)
                        } else {
                            1
                        }
                    })
                    .sum()
            })
        }
        walk(&self.dir)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running `berthd serve`.
pub struct Berthd {
    child: Option<Child>,
    pub url: String,
    pub addr: String,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    log: Arc<Mutex<String>>,
    _tmp: Option<Arc<tempfile::TempDir>>,
}

impl Berthd {
    /// A server with a fresh data dir on `db`, or `None` when that database is not
    /// available outside CI.
    pub async fn start(db: Db) -> Option<Berthd> {
        Berthd::start_with_users(db, &[]).await
    }

    /// Like [`Berthd::start`], with these users (`(name, password, admin)`) created
    /// first with `berthd user add` (which turns token authentication on).
    pub async fn start_with_users(db: Db, users: &[(&str, &str, bool)]) -> Option<Berthd> {
        Berthd::start_configured(db, users, &[]).await
    }

    /// Like [`Berthd::start_with_users`], with extra environment (`BERTH_*` settings).
    pub async fn start_configured(
        db: Db,
        users: &[(&str, &str, bool)],
        env: &[(&str, &str)],
    ) -> Option<Berthd> {
        let database_url = match db {
            Db::Sqlite => None,
            Db::Postgres => Some(fresh_postgres_database(&postgres_admin_url()?).await),
        };
        let tmp = Arc::new(tempfile::tempdir().expect("temp dir"));
        let data_dir = tmp.path().join("data");
        add_users(&data_dir, database_url.as_deref(), env, users);
        Some(Berthd::spawn(data_dir, database_url, Some(tmp), env))
    }

    /// Starts `berthd serve` on `data_dir` with extra environment variables.
    pub fn spawn(
        data_dir: PathBuf,
        database_url: Option<String>,
        tmp: Option<Arc<tempfile::TempDir>>,
        env: &[(&str, &str)],
    ) -> Berthd {
        let mut cmd = Command::new(workspace_bin("berthd"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .env_remove("BERTH_LISTEN")
            .env_remove("BERTH_DATA_DIR")
            .env_remove("BERTH_DATABASE_URL")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(url) = &database_url {
            cmd.env("BERTH_DATABASE_URL", url);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start berthd");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = log.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(addr) = line.split("listening on http://").nth(1) {
                        let addr = addr
                            .split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_owned();
                        let _ = tx.send(addr);
                    }
                    log.lock().unwrap().push_str(&(line + "\n"));
                }
            });
        }
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("berthd did not start; log:\n{}", log.lock().unwrap()));
        Berthd {
            child: Some(child),
            url: format!("http://{addr}"),
            addr,
            data_dir,
            database_url,
            log,
            _tmp: tmp,
        }
    }

    /// The server process's id, while it runs (e.g. to read its /proc/<pid>/status).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the server printed so far. berthd writes its log from a thread of its
    /// own, a moment after the request: this waits until nothing new came for 200 ms
    /// (at most 5 s), so the lines of requests already answered are in.
    pub fn log(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = self.log.lock().unwrap().len();
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let log = self.log.lock().unwrap();
            if log.len() == seen || Instant::now() > deadline {
                return log.clone();
            }
            seen = log.len();
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(&child, "TERM");
        wait_timeout(&mut child, Duration::from_secs(30)).expect("berthd did not stop on SIGTERM")
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, "KILL");
            let _ = child.wait();
        }
    }

    /// Starts a new server process on the same data (and database).
    pub fn restart(&mut self) -> Berthd {
        if self.child.is_some() {
            self.stop();
        }
        Berthd::spawn(
            self.data_dir.clone(),
            self.database_url.clone(),
            self._tmp.clone(),
            &[],
        )
    }

    /// `berthd ARGS…` (an admin command) on this server's data, while it runs.
    pub fn admin(&self, args: &[&str]) -> std::process::Output {
        berthd_command(&self.data_dir, self.database_url.as_deref(), args, None)
    }

    /// [`Berthd::admin`] that must succeed; its standard output.
    pub fn admin_ok(&self, args: &[&str]) -> String {
        succeeded(&self.admin(args), format_args!("berthd {args:?}"))
    }

    pub fn client(&self) -> Client {
        Client::new(&self.url)
    }
}

impl Drop for Berthd {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- berthd log ({}) ---\n{}", self.url, self.log());
        }
    }
}

/// Creates users (`(name, password, admin)`) with `berthd user add`.
pub fn add_users(
    data_dir: &Path,
    database_url: Option<&str>,
    env: &[(&str, &str)],
    users: &[(&str, &str, bool)],
) {
    for (name, password, admin) in users {
        let mut args = vec!["user", "add", name, "--password-stdin"];
        if *admin {
            args.push("--admin");
        }
        let out = berthd_command_with_env(data_dir, database_url, env, &args, Some(password));
        assert!(
            out.status.success(),
            "user add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Runs a `berthd` admin command on a data dir (and database), with `stdin` as input.
pub fn berthd_command(
    data_dir: &Path,
    database_url: Option<&str>,
    args: &[&str],
    stdin: Option<&str>,
) -> std::process::Output {
    berthd_command_with_env(data_dir, database_url, &[], args, stdin)
}

/// [`berthd_command`] with extra environment (`BERTH_*` settings).
pub fn berthd_command_with_env(
    data_dir: &Path,
    database_url: Option<&str>,
    env: &[(&str, &str)],
    args: &[&str],
    stdin: Option<&str>,
) -> std::process::Output {
    let mut cmd = Command::new(workspace_bin("berthd"));
    cmd.args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("BERTH_DATABASE_URL")
        .envs(env.iter().copied());
    if let Some(url) = database_url {
        cmd.env("BERTH_DATABASE_URL", url);
    }
    run_with_input(&mut cmd, stdin)
}

/// Runs one SQL statement with `psql` against `url`; it must succeed. Its output,
/// unaligned and without headers, trimmed.
pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-qtAc", sql])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs the `berth` CLI: `berth --home HOME args…` with `stdin`, away from the
/// machine's own Docker configuration.
pub fn berth(home: &Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    run_with_input(
        Command::new(workspace_bin("berth"))
            .arg("--home")
            .arg(home)
            .args(args)
            .env("DOCKER_CONFIG", home.join("no-docker-config")),
        stdin,
    )
}

/// Runs `cmd` with piped output, writing `stdin` (plus a newline) to its input.
pub fn run_with_input(cmd: &mut Command, stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{input}\n").as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status();
}

pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().ok().flatten() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// A request body that sends `data` in `piece`-byte pieces, `delay` apart: slow enough
/// for a test to act (kill, SIGTERM) in the middle of it.
pub fn slow_body(data: Vec<u8>, piece: usize, delay: Duration) -> reqwest::Body {
    let data = std::sync::Arc::new(data);
    let stream = futures::stream::unfold(0usize, move |off| {
        let data = data.clone();
        async move {
            if off >= data.len() {
                return None;
            }
            tokio::time::sleep(delay).await;
            let end = (off + piece).min(data.len());
            Some((Ok::<_, std::io::Error>(data[off..end].to_vec()), end))
        }
    });
    reqwest::Body::wrap_stream(stream)
}

/// The standard output of `out`, from a command that must have succeeded (`what`
/// names it when it did not).
pub fn succeeded(out: &std::process::Output, what: impl std::fmt::Display) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `cmd`, which must succeed; its standard output.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    succeeded(&out, format_args!("{cmd:?}"))
}

/// Deterministic bytes, different for every seed: a seeded xorshift stream.
pub fn seeded_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn sha256(data: &[u8]) -> String {
    Digest::of(Algorithm::Sha256, data).to_string()
}

/// A thin registry client over reqwest for the spec's calls.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
    /// Sent as a bearer token on every request when set.
    pub token: Option<String>,
}

impl Client {
    pub fn new(base: &str) -> Client {
        Client {
            base: base.to_owned(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                // berthd closes a connection idle for 5 s (actix's keep-alive). A request
                // sent on it as the server closes it fails (`IncompleteMessage`), which Go
                // clients retry and reqwest does not: drop idle connections well before.
                .pool_idle_timeout(std::time::Duration::from_secs(2))
                .build()
                .unwrap(),
            token: None,
        }
    }

    /// The same client, authenticating every request with `token`.
    pub fn with_token(&self, token: &str) -> Client {
        Client {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn request(&self, method: &str, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            self.url(path),
        );
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Sends a request with no body and no extra headers.
    pub async fn call(&self, method: &str, path: &str) -> reqwest::Response {
        self.request(method, path).send().await.unwrap()
    }

    /// What `docker login` asks the token endpoint for (an offline token with Basic
    /// credentials); returns the refresh token it keeps instead of the password.
    pub async fn docker_login_token(&self, user: &str, password: &str) -> String {
        let r = self
            .request(
                "GET",
                "/auth/token?service=berth&offline_token=true&client_id=docker",
            )
            .basic_auth(user, Some(password))
            .send()
            .await
            .unwrap();
        let body: serde_json::Value = r.json().await.unwrap();
        body["refresh_token"]
            .as_str()
            .expect("refresh_token")
            .to_owned()
    }

    /// Starts an upload; returns its Location path.
    pub async fn start_upload(&self, repo: &str) -> String {
        let r = self
            .request("POST", &format!("/v2/{repo}/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "start upload: {}", r.text().await.unwrap());
        r.headers()["location"].to_str().unwrap().to_owned()
    }

    /// Sends `data[from..]` to the upload at `location`, then completes it with `digest`:
    /// both steps must succeed.
    pub async fn finish_upload(&self, location: &str, data: &[u8], from: usize, digest: &str) {
        let r = self
            .request("PATCH", location)
            .header("Content-Range", format!("{from}-{}", data.len() - 1))
            .body(data[from..].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            202,
            "PATCH from {from}: {}",
            r.text().await.unwrap()
        );
        let r = self
            .request("PUT", &format!("{location}?digest={digest}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "PUT: {}", r.text().await.unwrap());
    }

    /// Sends `data[range]` to the upload at `location` as one PATCH with its
    /// Content-Range; it must be accepted. Returns the next Location.
    pub async fn append_chunk(
        &self,
        location: &str,
        data: &[u8],
        range: std::ops::Range<usize>,
    ) -> String {
        let r = self
            .request("PATCH", location)
            .header(
                "Content-Range",
                format!("{}-{}", range.start, range.end - 1),
            )
            .body(data[range].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "PATCH: {}", r.text().await.unwrap());
        r.headers()["location"].to_str().unwrap().to_owned()
    }

    /// Uploads a blob with POST + PUT and returns its digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha256(data);
        let location = self.start_upload(repo).await;
        let r = self
            .request("PUT", &format!("{location}?digest={digest}"))
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "push blob: {}", r.text().await.unwrap());
        digest
    }

    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> reqwest::Response {
        self.request("PUT", &format!("/v2/{repo}/manifests/{reference}"))
            .header("Content-Type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// Pushes a config and one layer, then an image manifest under `tag`.
    /// Returns (manifest bytes, manifest digest).
    pub async fn push_image(&self, repo: &str, tag: &str, layer: &[u8]) -> (Vec<u8>, String) {
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let config_digest = self.push_blob(repo, config).await;
        let layer_digest = self.push_blob(repo, layer).await;
        let manifest = image_manifest(
            &config_digest,
            config.len(),
            &[(&layer_digest, layer.len())],
            None,
        );
        let r = self.push_manifest(repo, tag, OCI_MANIFEST, &manifest).await;
        assert_eq!(
            r.status(),
            201,
            "push manifest: {}",
            r.text().await.unwrap()
        );
        let digest = sha256(&manifest);
        (manifest, digest)
    }
}

/// An OCI image manifest JSON, optionally with a subject and artifactType.
pub fn image_manifest(
    config: &str,
    config_size: usize,
    layers: &[(&str, usize)],
    subject: Option<(&str, usize, &str)>,
) -> Vec<u8> {
    let mut m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config, "size": config_size},
        "layers": layers.iter().map(|(d, s)| serde_json::json!({"mediaType": OCI_LAYER, "digest": d, "size": s})).collect::<Vec<_>>(),
    });
    if let Some((digest, size, artifact_type)) = subject {
        m["subject"] =
            serde_json::json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": size});
        m["artifactType"] = serde_json::json!(artifact_type);
        m["annotations"] = serde_json::json!({"org.example.kind": artifact_type});
    }
    serde_json::to_vec(&m).unwrap()
}

/// The spec error code of a JSON error response.
pub async fn error_code(r: reqwest::Response) -> String {
    let body: serde_json::Value = r.json().await.expect("JSON error body");
    body["errors"][0]["code"]
        .as_str()
        .expect("errors[0].code")
        .to_owned()
}

/// A TCP proxy on a loopback port to `upstream` that, once, cuts the connection that
/// carries the upstream byte past `cut_after` (counted over all connections): a
/// dropped connection in the middle of a request body.
pub struct CuttingProxy {
    pub addr: String,
    cut: Arc<std::sync::atomic::AtomicBool>,
}

impl CuttingProxy {
    pub async fn start(upstream: &str, cut_after: usize) -> CuttingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (upstream, flag) = (upstream.to_owned(), cut.clone());
        let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                tokio::spawn(relay(client, server, cut_after, flag.clone(), sent.clone()));
            }
        });
        CuttingProxy { addr, cut }
    }

    /// Whether a connection was cut.
    pub fn has_cut(&self) -> bool {
        self.cut.load(std::sync::atomic::Ordering::SeqCst)
    }
}

async fn relay(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    cut_after: usize,
    cut: Arc<std::sync::atomic::AtomicBool>,
    sent: Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let back = tokio::spawn(async move { tokio::io::copy(&mut from_server, &mut to_client).await });
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from_client.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let before = sent.fetch_add(n, Ordering::SeqCst);
        if before + n > cut_after && !cut.swap(true, Ordering::SeqCst) {
            back.abort();
            return; // both connections close here
        }
        if to_server.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to_server.shutdown().await;
    let _ = back.await;
}

/// Reads one HTTP/1.1 response that has a Content-Length (never a chunked one, as
/// blob downloads are): its status and body.
pub async fn read_response(conn: &mut (impl tokio::io::AsyncBufRead + Unpin)) -> (u16, Vec<u8>) {
    let mut status = 0;
    let mut length = None;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).await.unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(rest) = line.strip_prefix("HTTP/1.1 ") {
            status = rest[..3].parse().unwrap();
        } else if let Some((name, value)) = line.split_once(':') {
            assert!(
                !name.eq_ignore_ascii_case("transfer-encoding"),
                "a file body is never chunked"
            );
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.trim().parse().unwrap());
            }
        } else {
            panic!("not a header line: {line:?}");
        }
    }
    assert_ne!(status, 0, "no status line");
    let mut body = vec![0u8; length.expect("a Content-Length")];
    conn.read_exact(&mut body).await.unwrap();
    (status, body)
}

/// Waits (up to 20 s) until something listens on `addr`.
pub fn wait_for_port(addr: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{what} ({addr}) did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Debian's `docker-registry` (Distribution), anonymous, on a loopback port, with its
/// access log kept; killed on drop.
pub struct Distribution {
    child: std::process::Child,
    pub addr: String,
    pub url: String,
    log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Distribution {
    /// `None` outside CI when docker-registry is not installed.
    pub fn start() -> Option<Distribution> {
        if !require_tool("docker-registry") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem: {{ rootdirectory: {} }}\nhttp: {{ addr: {addr} }}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start docker-registry");
        let log = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    log.lock().unwrap().push_str(&(line + "\n"));
                }
            });
        }
        wait_for_port(&addr, "docker-registry");
        Some(Distribution {
            child,
            url: format!("http://{addr}"),
            addr,
            log,
            _dir: dir,
        })
    }

    /// Its output so far (the access log has a line per request: `"GET /v2/… HTTP/1.1"`),
    /// after a moment for lines still on their way.
    pub fn log(&self) -> String {
        std::thread::sleep(Duration::from_millis(300));
        self.log.lock().unwrap().clone()
    }

    /// Access log lines of `METHOD PATH-PREFIX` requests.
    pub fn requests(&self, method: &str, path_prefix: &str) -> usize {
        self.log()
            .matches(&format!("\"{method} {path_prefix}"))
            .count()
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- docker-registry log ({}) ---\n{}",
                self.url,
                self.log.lock().unwrap()
            );
        }
    }
}
