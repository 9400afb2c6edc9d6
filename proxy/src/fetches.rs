//! Blob cache misses: one upstream fetch per blob, however many clients ask.
//!
//! The first request for an uncached blob starts a fetch on its own task, so it
//! finishes into the cache even if every client goes away. The fetch hands what the
//! upstream sends, in pieces of up to about `BATCH` bytes (the socket's reads gathered,
//! large ones not copied), to three consumers at once: the
//! clients that asked before the first byte arrived (directly, from memory), a hasher
//! and the spool file's writer (`spool`; each on a thread of its own, so neither slows
//! the others). A client that asks later, or takes more than `SLOW_CLIENT` to accept a
//! piece, reads the spool file as it grows. Every client gets all but the last piece
//! as it arrives; the last only once the digest is verified, so a client of a lying
//! upstream never receives a whole body. Only a verified blob is stored (through
//! `Storage::put_blob`, which verifies it again), and only then is the spool file
//! removed.
//!
//! Bounds: a fetch is started only for a blob a cached manifest of the repository
//! lists, with that size (a longer or shorter body is refused); a proxy runs at most
//! `MAX_FETCHES` at once; each fetch gets a deadline for its size. Disk: a fetch
//! starts only if the local disk keeps its reserve after every running fetch (of any
//! proxy) is done, this one included. Its spool file is allocated whole at the start,
//! so free space counts it from then on, and the copy into blob storage that follows
//! (where blobs are on local disk) is claimed until the fetch ends (`DiskClaims`).
//! Memory: every queue is a few pieces long, and the pieces in them are shared
//! (reference-counted), not copied per client.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_oci::Digest;
use berth_storage::digest::Hasher;
use berth_storage::{FreeSpace, Storage, StorageError};
use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::{mpsc, watch};

use crate::error::{ProxyError, Result};
use crate::metrics::ProxyMetrics;
use crate::upstream::Upstream;

/// The fetch hands on what arrived in pieces of about this size (less when the upstream
/// pauses).
const BATCH: usize = 256 * 1024;
/// Reads smaller than this are copied together, so a piece holds a bounded number of
/// reads however small the upstream's are.
const SMALL_READ: usize = 16 * 1024;
/// How long a direct client may take to accept a piece before it is left to read the
/// spool file.
const SLOW_CLIENT: Duration = Duration::from_secs(1);
/// Pieces queued for one direct follower (shared with the others: not copies).
const FOLLOWER_QUEUE: usize = 16;
/// Pieces queued for the hasher and for the writer.
const WORKER_QUEUE: usize = 16;
/// A client reading the spool file reads pieces of at most this size.
const READ_SIZE: usize = 256 * 1024;
/// Blob fetches one proxy runs at once; more get 429 until one ends.
const MAX_FETCHES: usize = 64;
/// How long a stored fetch is remembered (longer than a cache lookup takes).
const STORED_LATELY: Duration = Duration::from_secs(60);
/// A fetch may take this long, plus a second per MiB.
const DEADLINE_BASE: Duration = Duration::from_secs(300);

/// A fetch's state, as clients see it.
#[derive(Clone)]
enum Progress {
    /// Waiting for the upstream's answer.
    Starting,
    /// Bytes in the spool file so far.
    Running {
        written: u64,
    },
    /// Every byte written and the digest verified.
    Verified,
    Failed(ProxyError),
}

struct Fetch {
    size: u64,
    progress: watch::Receiver<Progress>,
    path: PathBuf,
    direct: Mutex<Direct>,
}

/// What the fetch hands on at once: the upstream's reads since the last piece, shared
/// by every consumer (each piece wakes them all, so it should not be as small as one
/// read).
type Piece = Arc<[Bytes]>;

/// The clients a fetch feeds directly.
struct Direct {
    /// Until the first piece goes out: a client joining later reads the spool file.
    joinable: bool,
    queues: Vec<mpsc::Sender<Piece>>,
}

/// Local disk that the running fetches of every proxy are still to take beyond their
/// spool files: their blobs' copies into blob storage. Shared by all proxies.
#[derive(Default)]
pub struct DiskClaims(Mutex<u64>);

/// The fetches running, by repository and digest.
pub struct Fetches {
    spool: PathBuf,
    claims: Arc<DiskClaims>,
    running: Mutex<HashMap<String, Arc<Fetch>>>,
    /// Fetches that stored their blob within `STORED_LATELY`, by key.
    stored: Mutex<HashMap<String, Instant>>,
}

/// What one blob fetch needs.
pub struct Source {
    pub upstream: Arc<Upstream>,
    pub storage: Storage,
    pub metrics: ProxyMetrics,
    /// The local repository the blob is cached in.
    pub local: String,
    /// The upstream's name for it.
    pub remote: String,
}

/// A blob being fetched, followed by one client.
pub struct Following {
    pub size: u64,
    pub body: BoxStream<'static, std::io::Result<Bytes>>,
}

impl Fetches {
    /// Fetches spool into `spool`, which is emptied now (what a previous run left
    /// there was never verified).
    pub fn new(spool: PathBuf, claims: Arc<DiskClaims>) -> std::io::Result<Fetches> {
        if spool.exists() {
            std::fs::remove_dir_all(&spool)?;
        }
        std::fs::create_dir_all(&spool)?;
        Ok(Fetches {
            spool,
            claims,
            running: Mutex::default(),
            stored: Mutex::default(),
        })
    }

    /// Follows the fetch of `digest` (of `size` bytes, as a cached manifest lists it)
    /// into `source.local`, starting it if none runs, once the upstream has answered
    /// (its refusal is this request's error). `None`: the blob was stored a moment ago
    /// (read it from the cache).
    pub async fn follow(
        self: &Arc<Self>,
        source: Source,
        digest: &Digest,
        size: u64,
    ) -> Result<Option<Following>> {
        let Some((fetch, file)) = self.join(source, digest, size)? else {
            return Ok(None);
        };
        let direct = {
            let mut direct = fetch.direct.lock().expect("direct lock");
            direct.joinable.then(|| {
                let (tx, rx) = mpsc::channel(FOLLOWER_QUEUE);
                direct.queues.push(tx);
                rx
            })
        };
        let mut progress = fetch.progress.clone();
        loop {
            match &*progress.borrow_and_update() {
                Progress::Starting => {}
                Progress::Failed(e) => return Err(e.clone()),
                Progress::Running { .. } | Progress::Verified => break,
            }
            if progress.changed().await.is_err() {
                return Err(vanished());
            }
        }
        let reader = Reader {
            size: fetch.size,
            pos: 0,
            held: None,
            direct,
            pending: VecDeque::new(),
            file: tokio::fs::File::from_std(file),
            file_pos: 0,
            progress,
            done: false,
        };
        Ok(Some(Following {
            size: fetch.size,
            body: futures::stream::unfold(reader, Reader::next).boxed(),
        }))
    }

    /// The running fetch of `digest` into `source.local` or a new one, with its spool
    /// file opened while it is sure to exist; `None` when it was stored a moment ago.
    fn join(
        self: &Arc<Self>,
        source: Source,
        digest: &Digest,
        size: u64,
    ) -> Result<Option<(Arc<Fetch>, std::fs::File)>> {
        let key = format!("{}@{digest}", source.local);
        let mut running = self.running.lock().expect("fetches lock");
        let fetch = match running.get(&key) {
            Some(fetch) => {
                // Served without another upstream request.
                source.metrics.hit();
                fetch.clone()
            }
            None => {
                // Between the cache's answer to this request and now, a fetch may have
                // stored the blob and left.
                if self.stored_lately(&key) {
                    return Ok(None);
                }
                if running.len() >= MAX_FETCHES {
                    return Err(ProxyError::Busy {
                        upstream: source.upstream.url.clone(),
                        running: MAX_FETCHES,
                    });
                }
                let fetch = self.start(&key, source, digest, size)?;
                running.insert(key, fetch.clone());
                fetch
            }
        };
        let file = std::fs::File::open(&fetch.path).map_err(spool_error)?;
        Ok(Some((fetch, file)))
    }

    /// Whether the fetch of `key` stored its blob within `STORED_LATELY`.
    fn stored_lately(&self, key: &str) -> bool {
        let stored = self.stored.lock().expect("stored lock");
        stored
            .get(key)
            .is_some_and(|at| at.elapsed() < STORED_LATELY)
    }

    fn remember_stored(&self, key: &str) {
        let mut stored = self.stored.lock().expect("stored lock");
        stored.retain(|_, at| at.elapsed() < STORED_LATELY);
        stored.insert(key.to_owned(), Instant::now());
    }

    /// Starts a fetch on a task of its own; it leaves the map (and its spool file goes)
    /// when it ends, however it ends.
    fn start(
        self: &Arc<Self>,
        key: &str,
        source: Source,
        digest: &Digest,
        size: u64,
    ) -> Result<Arc<Fetch>> {
        let path = self.spool.join(uuid::Uuid::new_v4().simple().to_string());
        let file = std::fs::File::create_new(&path).map_err(spool_error)?;
        let copy = match source.storage.blobs_on_local_disk() {
            true => size,
            false => 0,
        };
        let claim = self
            .claims
            .claim(|| source.storage.free_space(), &file, size, copy)
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&path);
            })?;
        let (tx, rx) = watch::channel(Progress::Starting);
        let fetch = Arc::new(Fetch {
            size,
            progress: rx,
            path: path.clone(),
            direct: Mutex::new(Direct {
                joinable: true,
                queues: Vec::new(),
            }),
        });
        source.metrics.miss();
        let cleanup = Cleanup {
            fetches: self.clone(),
            key: key.to_owned(),
            path,
            _claim: claim,
        };
        let (job, digest) = (fetch.clone(), digest.clone());
        let (fetches, key) = (self.clone(), key.to_owned());
        tokio::spawn(async move {
            let _cleanup = cleanup;
            let deadline = DEADLINE_BASE + Duration::from_secs(size / (1024 * 1024));
            let fetched =
                tokio::time::timeout(deadline, download(&source, &job, &digest, file, &tx))
                    .await
                    .unwrap_or_else(|_| {
                        Err(ProxyError::Unreachable {
                            upstream: source.upstream.url.clone(),
                            reason: format!("the blob did not arrive within {deadline:?}"),
                        })
                    });
            // Direct clients not fed to the end read on from the spool file.
            {
                let mut direct = job.direct.lock().expect("direct lock");
                direct.joinable = false;
                direct.queues.clear();
            }
            match fetched {
                Ok(()) => {
                    tx.send_replace(Progress::Verified);
                    if store(&source, &digest, &job.path).await {
                        fetches.remember_stored(&key);
                    }
                }
                Err(e) => {
                    source.metrics.upstream_error(&e);
                    tracing::warn!(error = %e, repo = source.local, %digest, "fetching a blob failed");
                    tx.send_replace(Progress::Failed(e));
                }
            }
        });
        Ok(fetch)
    }
}

/// Takes a fetch out of the map and removes its spool file when its task ends (or
/// panics), and gives back its disk claim: the next request starts afresh. Clients
/// still reading hold the file open.
struct Cleanup {
    fetches: Arc<Fetches>,
    key: String,
    path: PathBuf,
    _claim: Claim,
}

impl DiskClaims {
    /// For a fetch of `size` bytes into `spool`: if the disk (as `measure` finds it)
    /// keeps its reserve once this and every running fetch is done, allocates the spool
    /// file and claims `copy` bytes (the blob's copy into storage); `BelowReserve`
    /// otherwise. Measured, allocated and claimed in one turn, so fetches starting
    /// together do not each count the same free space.
    fn claim(
        self: &Arc<Self>,
        measure: impl FnOnce() -> Option<FreeSpace>,
        spool: &std::fs::File,
        size: u64,
        copy: u64,
    ) -> Result<Claim> {
        let mut claimed = self.0.lock().expect("disk claims lock");
        if let Some(space) = measure() {
            let left = space.free.saturating_sub(*claimed);
            if left.saturating_sub(size.saturating_add(copy)) < space.reserve {
                return Err(StorageError::BelowReserve {
                    free: left,
                    reserve: space.reserve,
                }
                .into());
            }
        }
        // Where the file system cannot allocate ahead, the spool file is claimed too.
        let bytes = match allocate(spool, size)? {
            true => copy,
            false => copy.saturating_add(size),
        };
        *claimed = claimed.saturating_add(bytes);
        Ok(Claim {
            claims: self.clone(),
            bytes,
        })
    }
}

/// A running fetch's claim, given back when dropped.
struct Claim {
    claims: Arc<DiskClaims>,
    bytes: u64,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Ok(mut claimed) = self.claims.0.lock() {
            *claimed = claimed.saturating_sub(self.bytes);
        }
    }
}

/// Allocates the spool file's `size` bytes at once (its length stays 0 until written):
/// from now on free space counts them, so the next fetch's check sees this one. False
/// where the file system cannot allocate ahead (the file is written as it comes); one
/// without room refuses the fetch here rather than midway.
fn allocate(file: &std::fs::File, size: u64) -> Result<bool> {
    if size == 0 {
        return Ok(true);
    }
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::KEEP_SIZE, 0, size) {
        Ok(()) => Ok(true),
        // A full disk (507, like any).
        Err(e @ (rustix::io::Errno::NOSPC | rustix::io::Errno::DQUOT)) => {
            Err(StorageError::from(std::io::Error::from(e)).into())
        }
        // Not supported here (EOPNOTSUPP).
        Err(_) => Ok(false),
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(mut running) = self.fetches.running.lock() {
            running.remove(&self.key);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Receives the blob from the upstream and hands each piece to the direct clients,
/// the hasher and the writer; done once all of it is written and its digest verified.
async fn download(
    source: &Source,
    fetch: &Fetch,
    digest: &Digest,
    file: std::fs::File,
    progress: &watch::Sender<Progress>,
) -> Result<()> {
    let upstream = &source.upstream;
    let res = upstream.blob(&source.remote, digest.as_str()).await?;
    let size = fetch.size;
    if let Some(announced) = res.content_length().filter(|&n| n != size) {
        return Err(bad(
            source,
            format!("{announced} bytes announced for blob {digest} of {size}"),
        ));
    }
    // The upstream answers: clients get their 200 now.
    progress.send_replace(Progress::Running { written: 0 });
    let (hash_tx, hash_rx) = mpsc::channel::<Piece>(WORKER_QUEUE);
    let (write_tx, write_rx) = mpsc::channel::<Piece>(WORKER_QUEUE);
    let algorithm = digest.algorithm();
    let hasher = tokio::task::spawn_blocking(move || hash(hash_rx, Hasher::new(algorithm)));
    let writer = {
        let progress = progress.clone();
        let path = fetch.path.clone();
        tokio::task::spawn_blocking(move || {
            crate::spool::write(write_rx, file, &path, |written| {
                progress.send_replace(Progress::Running { written });
            })
        })
    };
    let mut body = res.bytes_stream();
    let mut received = 0u64;
    let outcome = async {
        let mut batch = Gathered::default();
        loop {
            let next = match body.next().now_or_never() {
                Some(next) => next,
                // Nothing more yet: send what is gathered, then wait.
                None if batch.bytes > 0 => {
                    dispatch(fetch, batch.take(), &hash_tx, &write_tx).await?;
                    continue;
                }
                None => body.next().await,
            };
            let Some(piece) = next else {
                if batch.bytes > 0 {
                    dispatch(fetch, batch.take(), &hash_tx, &write_tx).await?;
                }
                break;
            };
            let piece = piece.map_err(|e| ProxyError::Unreachable {
                upstream: upstream.url.clone(),
                reason: format!("the blob broke off after {received} bytes: {e}"),
            })?;
            received += piece.len() as u64;
            if received > size {
                return Err(bad(
                    source,
                    format!("more than the {size} bytes of blob {digest}"),
                ));
            }
            if piece.is_empty() {
                continue;
            }
            source.metrics.upstream_bytes(piece.len() as u64);
            batch.push(piece);
            if batch.bytes >= BATCH {
                dispatch(fetch, batch.take(), &hash_tx, &write_tx).await?;
            }
        }
        Ok(())
    }
    .await;
    drop((hash_tx, write_tx));
    let actual = hasher
        .await
        .map_err(|e| spool_error(std::io::Error::other(e)))?;
    let written = writer
        .await
        .map_err(|e| spool_error(std::io::Error::other(e)))?
        .map_err(spool_error)?;
    outcome?;
    if received != size || written != size {
        return Err(ProxyError::Unreachable {
            upstream: upstream.url.clone(),
            reason: format!("the blob ended after {received} of {size} bytes"),
        });
    }
    if actual != *digest {
        return Err(ProxyError::DigestMismatch {
            upstream: upstream.url.clone(),
            expected: digest.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

/// The reads gathered for the next piece: large ones as they are, small ones copied
/// together.
#[derive(Default)]
struct Gathered {
    reads: Vec<Bytes>,
    small: BytesMut,
    bytes: usize,
}

impl Gathered {
    fn push(&mut self, read: Bytes) {
        self.bytes += read.len();
        if read.len() >= SMALL_READ {
            self.end_small();
            self.reads.push(read);
        } else {
            self.small.extend_from_slice(&read);
            if self.small.len() >= SMALL_READ {
                self.end_small();
            }
        }
    }

    fn end_small(&mut self) {
        if !self.small.is_empty() {
            self.reads.push(self.small.split().freeze());
        }
    }

    /// What is gathered, as one piece; empty again.
    fn take(&mut self) -> Piece {
        self.end_small();
        self.bytes = 0;
        std::mem::take(&mut self.reads).into()
    }
}

/// Hands a piece to the direct clients, the hasher and the writer. A direct client
/// that has not taken it within `SLOW_CLIENT` is left behind (it reads on from the spool
/// file): one slow reader must not hold up the fetch for the others.
async fn dispatch(
    fetch: &Fetch,
    piece: Piece,
    hash_tx: &mpsc::Sender<Piece>,
    write_tx: &mpsc::Sender<Piece>,
) -> Result<()> {
    // No client joins once pieces go out, so the queues can be taken for the sends.
    let queues = {
        let mut direct = fetch.direct.lock().expect("direct lock");
        direct.joinable = false;
        std::mem::take(&mut direct.queues)
    };
    let sends = queues.into_iter().map(|q| {
        let piece = piece.clone();
        async move {
            let sent = tokio::time::timeout(SLOW_CLIENT, q.send(piece)).await;
            matches!(sent, Ok(Ok(()))).then_some(q)
        }
    });
    let kept: Vec<_> = futures::future::join_all(sends)
        .await
        .into_iter()
        .flatten()
        .collect();
    fetch.direct.lock().expect("direct lock").queues = kept;
    let stopped = hash_tx.send(piece.clone()).await.is_err() || write_tx.send(piece).await.is_err();
    if stopped {
        return Err(spool_error(std::io::Error::other(
            "the hasher or the writer stopped",
        )));
    }
    Ok(())
}

/// The hasher's thread.
fn hash(mut pieces: mpsc::Receiver<Piece>, mut hasher: Hasher) -> Digest {
    while let Some(piece) = pieces.blocking_recv() {
        for read in piece.iter() {
            hasher.update(read);
        }
    }
    hasher.finish()
}

/// Puts a verified spool file into the cache; whether it is there.
async fn store(source: &Source, digest: &Digest, path: &std::path::Path) -> bool {
    let stored = async {
        let file = tokio::fs::File::open(path).await?;
        let body = tokio_util::io::ReaderStream::with_capacity(file, READ_SIZE);
        source
            .storage
            .put_blob(&source.local, digest, body)
            .await
            .map_err(std::io::Error::other)
    }
    .await;
    match stored {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, repo = source.local, %digest, "caching a fetched blob failed; the next pull fetches it again");
            false
        }
    }
}

fn bad(source: &Source, reason: String) -> ProxyError {
    ProxyError::BadAnswer {
        upstream: source.upstream.url.clone(),
        reason,
    }
}

fn spool_error(e: std::io::Error) -> ProxyError {
    StorageError::Io(e).into()
}

/// One client's way through a fetch.
struct Reader {
    size: u64,
    /// Bytes received so far (sent, or held).
    pos: u64,
    /// The latest piece, sent once the next one is there (or, the last, once verified).
    held: Option<Bytes>,
    /// Pieces straight from the fetch, while it keeps this client fed.
    direct: Option<mpsc::Receiver<Piece>>,
    /// The reads of the latest direct piece not sent on yet.
    pending: VecDeque<Bytes>,
    file: tokio::fs::File,
    file_pos: u64,
    progress: watch::Receiver<Progress>,
    done: bool,
}

impl Reader {
    async fn next(mut self) -> Option<(std::io::Result<Bytes>, Reader)> {
        if self.done {
            return None;
        }
        loop {
            let piece = match self.piece().await {
                Ok(piece) => piece,
                Err(e) => {
                    self.done = true;
                    return Some((Err(std::io::Error::other(e.to_string())), self));
                }
            };
            match piece {
                Some(piece) => {
                    self.pos += piece.len() as u64;
                    if let Some(before) = self.held.replace(piece) {
                        return Some((Ok(before), self));
                    }
                }
                None => {
                    // Everything received: the last piece goes once verified.
                    if let Err(e) = self.verified().await {
                        self.done = true;
                        return Some((Err(std::io::Error::other(e.to_string())), self));
                    }
                    self.done = true;
                    return self.held.take().map(|last| (Ok(last), self));
                }
            }
        }
    }

    /// The next bytes, from the fetch or the spool file; `None` once all is received.
    async fn piece(&mut self) -> Result<Option<Bytes>> {
        if let Some(read) = self.pending.pop_front() {
            return Ok(Some(read));
        }
        if self.pos >= self.size {
            return Ok(None);
        }
        if let Some(direct) = &mut self.direct {
            match direct.recv().await {
                Some(piece) => {
                    self.pending.extend(piece.iter().cloned());
                    if let Some(read) = self.pending.pop_front() {
                        return Ok(Some(read));
                    }
                }
                // Left behind (or the fetch ended): on from the spool file.
                None => self.direct = None,
            }
        }
        loop {
            let written = match &*self.progress.borrow_and_update() {
                Progress::Starting => 0,
                Progress::Running { written } => *written,
                Progress::Verified => self.size,
                Progress::Failed(e) => return Err(e.clone()),
            };
            if self.pos < written {
                if self.file_pos != self.pos {
                    self.file
                        .seek(std::io::SeekFrom::Start(self.pos))
                        .await
                        .map_err(spool_error)?;
                    self.file_pos = self.pos;
                }
                let want = usize::try_from(written - self.pos)
                    .unwrap_or(READ_SIZE)
                    .min(READ_SIZE);
                let mut buffer = BytesMut::with_capacity(want);
                while buffer.len() < want {
                    let n = self.file.read_buf(&mut buffer).await.map_err(spool_error)?;
                    if n == 0 {
                        return Err(spool_error(std::io::Error::other(
                            "the spool file ended early",
                        )));
                    }
                }
                self.file_pos += buffer.len() as u64;
                return Ok(Some(buffer.freeze()));
            }
            if self.progress.changed().await.is_err() {
                return Err(vanished());
            }
        }
    }

    async fn verified(&mut self) -> Result<()> {
        loop {
            match &*self.progress.borrow_and_update() {
                Progress::Verified => return Ok(()),
                Progress::Failed(e) => return Err(e.clone()),
                Progress::Starting | Progress::Running { .. } => {}
            }
            if self.progress.changed().await.is_err() {
                return Err(vanished());
            }
        }
    }
}

fn vanished() -> ProxyError {
    spool_error(std::io::Error::other("the fetch ended without an outcome"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(free: u64) -> impl FnOnce() -> Option<FreeSpace> {
        move || Some(FreeSpace { free, reserve: 100 })
    }

    fn refused(claimed: Result<Claim>) -> bool {
        match claimed {
            Err(ProxyError::Storage(e)) => matches!(*e, StorageError::BelowReserve { .. }),
            _ => false,
        }
    }

    /// Fetches starting together each count what the others will still take: the
    /// copies into blob storage by their claims, their spool files by being allocated
    /// (which the free space measured then shows).
    #[test]
    fn running_fetches_claim_their_disk() {
        let dir = tempfile::tempdir().unwrap();
        let spool = |name: &str| std::fs::File::create_new(dir.path().join(name)).unwrap();
        let claims = Arc::new(DiskClaims::default());
        // 1,000 free, 100 kept: a 300-byte blob takes 600 with its copy.
        let first = claims.claim(space(1000), &spool("a"), 300, 300).unwrap();
        // Its spool file now takes 300 of the free space; its copy is claimed.
        assert!(refused(claims.claim(space(700), &spool("b"), 160, 160)));
        let second = claims.claim(space(700), &spool("c"), 100, 100).unwrap();
        assert_eq!(*claims.0.lock().unwrap(), 400);
        drop(first);
        assert_eq!(*claims.0.lock().unwrap(), 100);
        // Blobs on S3: only the spool file.
        claims.claim(space(700), &spool("d"), 400, 0).unwrap();
        drop(second);
        assert_eq!(*claims.0.lock().unwrap(), 0);
        // Without a measure (none could be made), nothing is refused.
        claims.claim(|| None, &spool("e"), 10, 10).unwrap();
    }

    /// The spool file's blocks are allocated at once, its length left at 0.
    #[test]
    fn a_spool_file_is_allocated_whole() {
        // The checkout's file system, as the spool's tests use.
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let path = dir.path().join("spool");
        let file = std::fs::File::create_new(&path).unwrap();
        assert!(allocate(&file, 8 << 20).unwrap());
        let meta = std::fs::metadata(&path).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(meta.len(), 0);
        assert!(
            meta.blocks() * 512 >= 8 << 20,
            "{} bytes allocated (the checkout's file system must allocate ahead: ext4, xfs)",
            meta.blocks() * 512
        );
    }
}
