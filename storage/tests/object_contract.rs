//! The object-store contract (storage/src/objects/backend.rs), one suite run on every
//! backend: memory, local disk, and a real S3 server (s3s-fs).

use std::sync::Arc;
use std::time::Duration;

use berth_storage::objects::{
    Durability, LocalDisk, Memory, ObjectBackend, ObjectInfo, Objects, Segment, DATA_PREFIX, S3,
};
use berth_storage::{Algorithm, Digest};
use bytes::Bytes;
use futures::{stream, Stream, StreamExt, TryStreamExt};

const MIB: usize = 1024 * 1024;

/// Runs every check of the contract on a backend made by `open` (each check gets a
/// fresh, empty store).
async fn contract<B: ObjectBackend>(open: impl Fn() -> B) {
    finished_objects_appear_whole_and_unfinished_ones_never(open()).await;
    aborted_writes_leave_nothing(open()).await;
    ranged_reads_are_exact(open()).await;
    deletes_are_idempotent_and_batched(open()).await;
    listing_reports_size_and_write_time_by_prefix(open()).await;
    deferred_writes_are_readable_and_flush_succeeds(open()).await;
    capabilities_are_what_the_backend_promises(open()).await;
    blobs_span_objects_and_read_back_across_them(open()).await;
    an_interrupted_body_keeps_what_arrived(open()).await;
    concurrent_writers_never_collide(open()).await;
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed)
        .collect::<Vec<u8>>()
}

async fn put(backend: &dyn ObjectBackend, key: &str, data: &[u8], durability: Durability) {
    let mut writer = backend.create(key, durability);
    for chunk in data.chunks(256 * 1024) {
        writer.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    writer.finish(false).await.unwrap();
}

async fn read(backend: &dyn ObjectBackend, key: &str, range: std::ops::Range<u64>) -> Vec<u8> {
    collect(backend.read(key, range).await.unwrap()).await
}

async fn collect(s: impl Stream<Item = berth_storage::Result<Bytes>>) -> Vec<u8> {
    s.try_fold(Vec::new(), |mut acc, b| async move {
        acc.extend_from_slice(&b);
        Ok(acc)
    })
    .await
    .unwrap()
}

async fn listed(backend: &dyn ObjectBackend, prefix: &str) -> Vec<ObjectInfo> {
    let mut all: Vec<ObjectInfo> = backend.list(prefix).try_collect().await.unwrap();
    all.sort_by(|a, b| a.key.cmp(&b.key));
    all
}

async fn finished_objects_appear_whole_and_unfinished_ones_never(b: impl ObjectBackend) {
    // Larger than a part, so the write goes through a multipart upload.
    let data = pattern(12 * MIB + 7, 1);
    let key = "data/ab/visible";
    let mut writer = b.create(key, Durability::OnReturn);
    for chunk in data.chunks(MIB) {
        writer.write(Bytes::copy_from_slice(chunk)).await.unwrap();
        assert_eq!(b.head(key).await.unwrap(), None, "visible before finishing");
        assert!(
            b.read(key, 0..1).await.is_err(),
            "readable before finishing"
        );
        assert!(
            listed(&b, "data").await.is_empty(),
            "listed before finishing"
        );
    }
    writer.finish(false).await.unwrap();
    let info = b.head(key).await.unwrap().expect("visible once finished");
    assert_eq!((info.key.as_str(), info.size), (key, data.len() as u64));
    assert_eq!(read(&b, key, 0..data.len() as u64).await, data);
}

async fn aborted_writes_leave_nothing(b: impl ObjectBackend) {
    for size in [10, 7 * MIB] {
        let key = format!("data/cd/aborted-{size}");
        let mut writer = b.create(&key, Durability::OnReturn);
        writer.write(Bytes::from(pattern(size, 2))).await.unwrap();
        writer.abort().await;
        assert_eq!(b.head(&key).await.unwrap(), None);
    }
    assert!(
        listed(&b, "").await.is_empty(),
        "an aborted write left objects"
    );
}

async fn ranged_reads_are_exact(b: impl ObjectBackend) {
    let data = pattern(3 * MIB + 5, 3);
    let key = "data/ef/ranged";
    put(&b, key, &data, Durability::OnReturn).await;
    let len = data.len() as u64;
    for range in [
        0..1,
        0..len,
        1..len - 1,
        len - 1..len,
        MIB as u64..2 * MIB as u64 + 3,
    ] {
        let expected = &data[range.start as usize..range.end as usize];
        assert_eq!(
            read(&b, key, range.clone()).await,
            expected,
            "range {range:?}"
        );
    }
    // Past the end: an error, never a short read.
    let past = b.read(key, len - 1..len + 10).await;
    let short = match past {
        Err(_) => false,
        Ok(s) => s.try_collect::<Vec<Bytes>>().await.is_ok(),
    };
    assert!(!short, "a read past the end succeeded");
    assert!(b.read("data/ef/missing", 0..1).await.is_err());
}

async fn deletes_are_idempotent_and_batched(b: impl ObjectBackend) {
    put(&b, "data/00/one", b"one", Durability::OnReturn).await;
    b.delete(vec!["data/00/one".into()]).await.unwrap();
    assert_eq!(b.head("data/00/one").await.unwrap(), None);
    b.delete(vec!["data/00/one".into(), "data/00/never".into()])
        .await
        .expect("deleting missing objects is not an error");
    // More keys than one S3 DeleteObjects request takes.
    let keys: Vec<String> = (0..2100)
        .map(|i| format!("data/{:02x}/k{i}", i % 256))
        .collect();
    futures::stream::iter(&keys)
        .for_each_concurrent(32, |k| {
            let b = &b;
            async move { put(b, k, k.as_bytes(), Durability::OnReturn).await }
        })
        .await;
    assert_eq!(listed(&b, "data").await.len(), keys.len());
    let mut doubled = keys.clone();
    doubled.extend(keys.iter().take(10).cloned());
    b.delete(doubled).await.unwrap();
    assert!(listed(&b, "data").await.is_empty());
}

async fn listing_reports_size_and_write_time_by_prefix(b: impl ObjectBackend) {
    let before = chrono::Utc::now() - chrono::Duration::seconds(2);
    put(&b, "data/11/a", b"aaaa", Durability::OnReturn).await;
    put(&b, "data/12/b", &pattern(6 * MIB, 4), Durability::OnReturn).await;
    put(&b, "database/x", b"not under data/", Durability::OnReturn).await;
    put(&b, "other/c", b"c", Durability::OnReturn).await;
    let after = chrono::Utc::now() + chrono::Duration::seconds(2);
    let data = listed(&b, "data").await;
    let found: Vec<(&str, u64)> = data.iter().map(|o| (o.key.as_str(), o.size)).collect();
    assert_eq!(found, [("data/11/a", 4), ("data/12/b", 6 * MIB as u64)]);
    for object in &data {
        assert!(
            before <= object.modified && object.modified <= after,
            "{} written at {} (expected between {before} and {after})",
            object.key,
            object.modified
        );
    }
    assert_eq!(listed(&b, "data/11").await.len(), 1);
    assert_eq!(listed(&b, "").await.len(), 4);
}

async fn deferred_writes_are_readable_and_flush_succeeds(b: impl ObjectBackend) {
    put(&b, "data/22/deferred", b"later", Durability::Deferred).await;
    assert_eq!(read(&b, "data/22/deferred", 0..5).await, b"later");
    b.flush().await.unwrap();
    assert_eq!(read(&b, "data/22/deferred", 0..5).await, b"later");
    b.check().await.unwrap();
}

async fn capabilities_are_what_the_backend_promises(b: impl ObjectBackend) {
    put(&b, "data/33/cap", b"capable", Durability::OnReturn).await;
    if let Some(files) = b.files() {
        use std::io::Read;
        let mut content = String::new();
        files
            .open("data/33/cap")
            .await
            .unwrap()
            .read_to_string(&mut content)
            .unwrap();
        assert_eq!(content, "capable");
    }
    if let Some(signer) = b.signer() {
        let url = signer
            .signed_get("data/33/cap", Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(http_get(&url).await, b"capable");
    }
}

/// A plain GET, without credentials, of a pre-signed URL.
async fn http_get(url: &str) -> Vec<u8> {
    let url = url::Url::parse(url).unwrap();
    let addr = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(80));
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            conn,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = Vec::new();
        conn.read_to_end(&mut response).unwrap();
        let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&response[..split]).to_string();
        assert!(head.starts_with("HTTP/1.1 200"), "pre-signed GET: {head}");
        response[split + 4..].to_vec()
    })
    .await
    .unwrap()
}

fn body(chunks: Vec<Result<Bytes, String>>) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
    stream::iter(chunks)
}

async fn blobs_span_objects_and_read_back_across_them(b: impl ObjectBackend) {
    let (first, largest) = b.object_sizes(Durability::OnReturn);
    let objects = Objects::new(b);
    // Enough for several objects where objects are small, one where they are large.
    let size = (largest.min(64 * MIB as u64) + 123) as usize;
    let big = pattern(size, 5);
    let chunks = big
        .chunks(65_536)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let mut h = berth_storage::digest::Hasher::new(Algorithm::Sha256);
    let w1 = objects
        .write(body(chunks), &mut h, Durability::OnReturn)
        .await
        .unwrap();
    // Sizes double from the first object's to the largest.
    let mut expected = Vec::new();
    let (mut left, mut next) = (size as u64, first);
    while left > 0 {
        expected.push(next.min(left));
        left -= next.min(left);
        next = (next * 2).min(largest);
    }
    let sizes: Vec<u64> = w1.segments.iter().map(|s| s.size).collect();
    assert_eq!(sizes, expected);
    let w2 = objects
        .write(
            body(vec![Ok(Bytes::from_static(b"tail"))]),
            &mut h,
            Durability::Deferred,
        )
        .await
        .unwrap();
    objects.flush().await.unwrap();
    let segs: Vec<Segment> = w1.segments.into_iter().chain(w2.segments).collect();
    let mut all = big.clone();
    all.extend_from_slice(b"tail");
    assert_eq!(h.finish(), Digest::of(Algorithm::Sha256, &all));
    let total = all.len() as u64;
    assert_eq!(collect(objects.read(&segs, 0..total)).await, all);
    // Across the first boundary between objects.
    let boundary = segs[0].size;
    let r = (boundary - 10)..(boundary + 3);
    assert_eq!(
        collect(objects.read(&segs, r.clone())).await,
        &all[r.start as usize..r.end as usize]
    );
    assert_eq!(
        collect(objects.read(&segs, (total - 2)..total)).await,
        b"il"
    );
    if let Some(files) = objects.open_files(&segs, r.clone()).await.unwrap() {
        let mut sent = Vec::new();
        for (file, range) in files {
            use std::os::unix::fs::FileExt;
            let mut buf = vec![0; (range.end - range.start) as usize];
            file.read_exact_at(&mut buf, range.start).unwrap();
            sent.extend(buf);
        }
        assert_eq!(sent, &all[r.start as usize..r.end as usize]);
    }
    let listed: Vec<ObjectInfo> = objects.list().try_collect().await.unwrap();
    assert_eq!(listed.len(), segs.len());
    assert!(listed.iter().all(|o| o.key.starts_with(DATA_PREFIX)));
    objects.delete_all(&segs).await.unwrap();
    assert_eq!(
        objects.list().count().await,
        0,
        "deleting every object leaves none"
    );
}

async fn an_interrupted_body_keeps_what_arrived(b: impl ObjectBackend) {
    let objects = Objects::new(b);
    let mut h = berth_storage::digest::Hasher::new(Algorithm::Sha256);
    let w = objects
        .write(
            body(vec![Ok(Bytes::from_static(b"abc")), Err("reset".into())]),
            &mut h,
            Durability::OnReturn,
        )
        .await
        .unwrap();
    assert_eq!(w.segments.len(), 1);
    assert_eq!(w.segments[0].size, 3);
    assert_eq!(w.interrupted.as_deref(), Some("reset"));
    assert_eq!(collect(objects.read(&w.segments, 0..3)).await, b"abc");
    let empty = objects
        .write(body(vec![]), &mut h, Durability::Deferred)
        .await
        .unwrap();
    assert!(empty.segments.is_empty());
    assert_eq!(
        objects.list().count().await,
        1,
        "an empty body stores nothing"
    );
}

async fn concurrent_writers_never_collide(b: impl ObjectBackend) {
    let objects = Arc::new(Objects::new(b));
    let writes = (0..16u8).map(|i| {
        let objects = objects.clone();
        tokio::spawn(async move {
            let data = pattern(100_000 + i as usize, i);
            let mut h = berth_storage::digest::Hasher::new(Algorithm::Sha256);
            let chunks = data
                .chunks(10_000)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            let w = objects
                .write(body(chunks), &mut h, Durability::OnReturn)
                .await
                .unwrap();
            (data, w.segments)
        })
    });
    for write in futures::future::join_all(writes).await {
        let (data, segments) = write.unwrap();
        let len = data.len() as u64;
        assert_eq!(collect(objects.read(&segments, 0..len)).await, data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_keeps_the_contract() {
    contract(Memory::new).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_disk_keeps_the_contract() {
    let root = tempfile::tempdir().unwrap();
    let n = std::sync::atomic::AtomicUsize::new(0);
    contract(|| {
        let dir = root.path().join(
            n.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                .to_string(),
        );
        LocalDisk::new(&dir).unwrap()
    })
    .await;
    // Nothing staged is left behind by any check (object_store stages as `<key>#<n>`).
    let staged = walk(root.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains('#'))
        .collect::<Vec<_>>();
    assert!(staged.is_empty(), "staging files left: {staged:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().map_while(Result::ok) {
        let path = entry.path();
        match path.is_dir() {
            true => found.extend(walk(&path)),
            false => found.push(path),
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_keeps_the_contract() {
    let Some(server) = berth_tests::S3Server::start() else {
        return;
    };
    let n = std::sync::atomic::AtomicUsize::new(0);
    contract(|| {
        // A fresh bucket per check: s3s-fs serves every directory of its root as one.
        let bucket = format!(
            "contract{}",
            n.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        std::fs::create_dir_all(server.dir.parent().unwrap().join(&bucket)).unwrap();
        let builder = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region("us-east-1")
            .with_access_key_id(berth_tests::S3_ACCESS_KEY)
            .with_secret_access_key(berth_tests::S3_SECRET_KEY);
        S3::new(builder, Some(&server.endpoint), true).unwrap()
    })
    .await;
}

/// The orphan sweep lists the store while pushes write and delete objects; s3s-fs then
/// fails a list request now and then (a file gone between its directory walk and its
/// `stat`), and a run of such failures longer than the 5 s that bounds writes' retries
/// failed a whole garbage collection pass. Listing is retried for longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_listing_outlasts_a_run_of_server_errors() {
    let Some(server) = berth_tests::S3Server::start() else {
        return;
    };
    let bucket = "flaky";
    std::fs::create_dir_all(server.dir.parent().unwrap().join(bucket)).unwrap();
    let proxy = FailingLists::start(&server.endpoint, Duration::from_secs(6)).await;
    let builder = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_access_key_id(berth_tests::S3_ACCESS_KEY)
        .with_secret_access_key(berth_tests::S3_SECRET_KEY)
        // A connection per request, so that the proxy sees every request line.
        .with_client_options(object_store::ClientOptions::new().with_pool_max_idle_per_host(0));
    let b = S3::new(builder, Some(&proxy.url), false).unwrap();
    for key in ["data/aa/1", "data/bb/2", "data/cc/3"] {
        put(&b, key, key.as_bytes(), Durability::OnReturn).await;
    }
    let started = std::time::Instant::now();
    let keys: Vec<String> = listed(&b, "data")
        .await
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, ["data/aa/1", "data/bb/2", "data/cc/3"]);
    assert!(started.elapsed() >= Duration::from_secs(6));
    assert!(
        proxy.failed() >= 3,
        "only {} list requests failed",
        proxy.failed()
    );
}

/// A proxy to an S3 server that answers list requests with `500 InternalError` for
/// `window` from the first one it sees, and relays everything else.
struct FailingLists {
    url: String,
    failed: Arc<std::sync::atomic::AtomicUsize>,
}

impl FailingLists {
    async fn start(upstream: &str, window: Duration) -> FailingLists {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let first_list = Arc::new(std::sync::OnceLock::new());
        let counter = failed.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let (upstream, failed, first_list) =
                    (upstream.clone(), counter.clone(), first_list.clone());
                tokio::spawn(async move {
                    // The request head (a request line is all the proxy needs).
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match client.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(
                        &head[..head.iter().position(|&b| b == b'\r').unwrap()],
                    )
                    .into_owned();
                    if line.starts_with("GET ") && line.contains("list-type=2") {
                        let since: &std::time::Instant =
                            first_list.get_or_init(std::time::Instant::now);
                        if since.elapsed() < window {
                            failed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let body = "<Error><Code>InternalError</Code></Error>";
                            let answer = format!(
                                "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\n\
                                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = client.write_all(answer.as_bytes()).await;
                            return;
                        }
                    }
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    if server.write_all(&head).await.is_ok() {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        FailingLists { url, failed }
    }

    fn failed(&self) -> usize {
        self.failed.load(std::sync::atomic::Ordering::SeqCst)
    }
}
