//! The load: clients pushing unique images (a base layer they share, a layer of their
//! own uploaded in one request or in chunks, a config) through the load balancer, each
//! pulled back and verified at once; every acknowledged push (201 on the manifest) is
//! recorded, and every error with its time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_tests::{image_manifest, seeded_bytes, sha256, OCI_MANIFEST};
use tokio::task::JoinHandle;

const KIB: usize = 1024;
const CHUNK: usize = 256 * KIB;

/// A push the registry acknowledged.
pub struct Acked {
    pub repo: String,
    pub tag: String,
    pub digest: String,
    pub manifest: Vec<u8>,
    /// (digest, length) of the config and layers.
    pub blobs: Vec<(String, usize)>,
    pub chunked: bool,
}

/// An error a client saw that a fault may explain: a 5xx, a 429, a connection reset
/// or a timeout.
pub struct ErrorSeen {
    pub at: Instant,
    pub what: String,
}

#[derive(Default)]
struct ClientReport {
    acknowledged: Vec<Acked>,
    errors: Vec<ErrorSeen>,
    /// Answers no fault explains (a 4xx, wrong bytes, a lost push).
    wrong: Vec<String>,
    interrupted: usize,
    pulls_verified: usize,
}

pub struct Report {
    pub started: Instant,
    pub acknowledged: Vec<Acked>,
    pub errors: Vec<ErrorSeen>,
    pub wrong: Vec<String>,
    pub interrupted: usize,
    pub pulls_verified: usize,
}

impl Report {
    /// The errors seen within [from, to], counted by kind ("3 × 503, 1 × connection").
    pub fn errors_between(&self, from: Instant, to: Instant) -> String {
        let mut kinds: Vec<(String, usize)> = Vec::new();
        for e in self.errors.iter().filter(|e| e.at >= from && e.at <= to) {
            let kind = e.what.split(':').next().unwrap_or_default().to_owned();
            match kinds.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, n)) => *n += 1,
                None => kinds.push((kind, 1)),
            }
        }
        if kinds.is_empty() {
            return "none".into();
        }
        kinds
            .iter()
            .map(|(k, n)| format!("{n} × {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<ClientReport>>,
    started: Instant,
}

impl Load {
    pub fn start(url: &str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (0..clients)
            .map(|n| tokio::spawn(client(url.to_owned(), n, stop.clone())))
            .collect();
        Load {
            stop,
            clients,
            started: Instant::now(),
        }
    }

    pub async fn stop(self) -> Report {
        self.stop.store(true, Ordering::SeqCst);
        let mut report = Report {
            started: self.started,
            acknowledged: Vec::new(),
            errors: Vec::new(),
            wrong: Vec::new(),
            interrupted: 0,
            pulls_verified: 0,
        };
        for c in self.clients {
            let c = c.await.unwrap();
            report.acknowledged.extend(c.acknowledged);
            report.errors.extend(c.errors);
            report.wrong.extend(c.wrong);
            report.interrupted += c.interrupted;
            report.pulls_verified += c.pulls_verified;
        }
        report.errors.sort_by_key(|e| e.at);
        report
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Why a step failed: a fault's error (counted, the push abandoned) or a wrong answer.
enum Failure {
    Retryable(String),
    Wrong(String),
}

type Step<T> = Result<T, Failure>;

/// Sends `request`; 5xx, 429 and transport errors are retryable, any other status
/// than `expect` is wrong.
async fn send(
    request: reqwest::RequestBuilder,
    expect: &[u16],
    what: &str,
) -> Step<reqwest::Response> {
    match request.send().await {
        Ok(r) if expect.contains(&r.status().as_u16()) => Ok(r),
        Ok(r) if r.status().is_server_error() || r.status() == 429 => Err(Failure::Retryable(
            format!("{}: {what}", r.status().as_u16()),
        )),
        Ok(r) => {
            // What finds this request in the servers' logs.
            let status = r.status();
            let path = r.url().path().to_owned();
            let id = r
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_owned();
            let body = r.text().await.unwrap_or_default();
            Err(Failure::Wrong(format!(
                "{what} {path}: {status} {body} (request id {id})"
            )))
        }
        Err(e) if e.is_timeout() => Err(Failure::Retryable(format!("timeout: {what}"))),
        Err(e) => Err(Failure::Retryable(format!("connection: {what}: {e}"))),
    }
}

/// A body read to the end; a transport error mid-body is retryable.
async fn body(r: reqwest::Response, what: &str) -> Step<Vec<u8>> {
    r.bytes()
        .await
        .map(|b| b.to_vec())
        .map_err(|e| Failure::Retryable(format!("connection: {what} body: {e}")))
}

fn location(base: &str, r: &reqwest::Response) -> String {
    let l = r.headers()["location"].to_str().unwrap();
    if l.starts_with('/') {
        format!("{base}{l}")
    } else {
        l.to_owned()
    }
}

async fn push_blob(
    c: &reqwest::Client,
    base: &str,
    repo: &str,
    data: &[u8],
    chunked: bool,
) -> Step<String> {
    let digest = sha256(data);
    let head = send(
        c.head(format!("{base}/v2/{repo}/blobs/{digest}")),
        &[200, 404],
        "blob HEAD",
    )
    .await?;
    if head.status() == 200 {
        return Ok(digest);
    }
    let r = send(
        c.post(format!("{base}/v2/{repo}/blobs/uploads/")),
        &[202],
        "upload start",
    )
    .await?;
    let mut at = location(base, &r);
    if chunked {
        for (i, piece) in data.chunks(CHUNK).enumerate() {
            let from = i * CHUNK;
            let r = send(
                c.patch(&at)
                    .header("Content-Type", "application/octet-stream")
                    .header(
                        "Content-Range",
                        format!("{from}-{}", from + piece.len() - 1),
                    )
                    .body(piece.to_vec()),
                &[202],
                "upload chunk",
            )
            .await?;
            at = location(base, &r);
        }
        let sep = if at.contains('?') { '&' } else { '?' };
        send(
            c.put(format!("{at}{sep}digest={digest}")),
            &[201],
            "upload end",
        )
        .await?;
    } else {
        let sep = if at.contains('?') { '&' } else { '?' };
        send(
            c.put(format!("{at}{sep}digest={digest}"))
                .header("Content-Type", "application/octet-stream")
                .body(data.to_vec()),
            &[201],
            "monolithic upload",
        )
        .await?;
    }
    Ok(digest)
}

/// Pulls `pushed` back: the manifest by tag and by digest, every blob, all verified.
async fn pull(c: &reqwest::Client, base: &str, pushed: &Acked) -> Step<()> {
    for reference in [&pushed.tag, &pushed.digest] {
        let r = send(
            c.get(format!("{base}/v2/{}/manifests/{reference}", pushed.repo))
                .header("Accept", OCI_MANIFEST),
            &[200],
            "manifest GET",
        )
        .await?;
        if body(r, "manifest GET").await? != pushed.manifest {
            return Err(Failure::Wrong(format!(
                "{}:{reference}: other manifest bytes",
                pushed.repo
            )));
        }
    }
    for (digest, len) in &pushed.blobs {
        let r = send(
            c.get(format!("{base}/v2/{}/blobs/{digest}", pushed.repo)),
            &[200],
            "blob GET",
        )
        .await?;
        let data = body(r, "blob GET").await?;
        if data.len() != *len || sha256(&data) != *digest {
            return Err(Failure::Wrong(format!(
                "{}@{digest}: other blob bytes",
                pushed.repo
            )));
        }
    }
    Ok(())
}

async fn client(base: String, n: usize, stop: Arc<AtomicBool>) -> ClientReport {
    let c = http();
    let mut report = ClientReport::default();
    // Shared by every client's images, as a distribution's base layer is.
    let shared = seeded_bytes(7, 512 * KIB);
    let repo = format!("load/client-{n}");
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let chunked = i.is_multiple_of(2);
        let layer = seeded_bytes(
            (n as u64) << 32 | i,
            64 * KIB + (i as usize % 4) * 300 * KIB,
        );
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Labels":{{"push":"{n}-{i}"}}}},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#
        );
        let tag = format!("p{i}");
        let pushed = async {
            let base_digest = push_blob(&c, &base, &repo, &shared, false).await?;
            let layer_digest = push_blob(&c, &base, &repo, &layer, chunked).await?;
            let config_digest = push_blob(&c, &base, &repo, config.as_bytes(), false).await?;
            let manifest = image_manifest(
                &config_digest,
                config.len(),
                &[(&base_digest, shared.len()), (&layer_digest, layer.len())],
                None,
            );
            send(
                c.put(format!("{base}/v2/{repo}/manifests/{tag}"))
                    .header("Content-Type", OCI_MANIFEST)
                    .body(manifest.clone()),
                &[201],
                "manifest PUT",
            )
            .await?;
            Ok(Acked {
                repo: repo.clone(),
                tag: tag.clone(),
                digest: sha256(&manifest),
                manifest,
                blobs: vec![
                    (config_digest, config.len()),
                    (base_digest, shared.len()),
                    (layer_digest, layer.len()),
                ],
                chunked,
            })
        }
        .await;
        let pushed = match pushed {
            Ok(p) => p,
            Err(failure) => {
                report.interrupted += 1;
                record(&mut report, failure);
                continue;
            }
        };
        let pulled = pull(&c, &base, &pushed).await;
        report.acknowledged.push(pushed);
        match pulled {
            Ok(()) => report.pulls_verified += 1,
            Err(failure) => record(&mut report, failure),
        }
    }
    report
}

fn record(report: &mut ClientReport, failure: Failure) {
    match failure {
        Failure::Retryable(what) => report.errors.push(ErrorSeen {
            at: Instant::now(),
            what,
        }),
        Failure::Wrong(what) => {
            let at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            report
                .wrong
                .push(format!("at {:.3} (Unix time): {what}", at.as_secs_f64()));
        }
    }
}

/// Pulls every acknowledged push back (the cluster whole again); what does not come
/// back whole and byte-identical.
pub async fn verify_all(base: &str, acknowledged: &[Acked]) -> Result<(), Vec<String>> {
    let c = http();
    let mut lost = Vec::new();
    for pushed in acknowledged {
        match pull(&c, base, pushed).await {
            Ok(()) => {}
            Err(Failure::Retryable(why) | Failure::Wrong(why)) => lost.push(format!(
                "{}:{} ({}): {why}",
                pushed.repo, pushed.tag, pushed.digest
            )),
        }
    }
    if lost.is_empty() {
        Ok(())
    } else {
        Err(lost)
    }
}
