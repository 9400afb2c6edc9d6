//! Garbage collection on a real database (SQLite, and PostgreSQL when configured) and
//! local disk: what a pass deletes, what it keeps, and that a dry run counts exactly
//! what the real pass then deletes.

use std::path::Path;
use std::time::Duration;

use berth_config::Config;
use berth_oci::media_types::{OCI_INDEX, OCI_MANIFEST};
use berth_storage::gc::{GcReport, Sweep};
use berth_storage::manifests::Reference;
use berth_storage::{Algorithm, Digest, Storage, StorageError};
use bytes::Bytes;
use futures::stream;

/// The grace the tests run with.
const GRACE: Duration = Duration::from_secs(1);
/// The upload expiry, and so the orphan age. Long enough that the guard against writes
/// outliving half of it never trips on a loaded machine; planted orphans are dated back.
const UPLOAD_EXPIRY_SECS: u64 = 60;

fn body(data: &[u8]) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
    stream::iter(vec![Ok(Bytes::copy_from_slice(data))])
}

async fn blob(s: &Storage, repo: &str, data: &[u8]) -> Digest {
    let d = Digest::of(Algorithm::Sha256, data);
    s.put_blob(repo, &d, body(data)).await.unwrap();
    d
}

fn image(config: &Digest, layer: &Digest, subject: Option<&Digest>) -> Vec<u8> {
    let mut m = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.to_string(), "size": 1}],
    });
    if let Some(s) = subject {
        m["subject"] =
            serde_json::json!({"mediaType": OCI_MANIFEST, "digest": s.to_string(), "size": 1});
    }
    serde_json::to_vec(&m).unwrap()
}

async fn put(s: &Storage, repo: &str, reference: Reference, body: &[u8]) -> Digest {
    s.put_manifest(repo, &reference, None, body, &[])
        .await
        .unwrap()
        .digest
}

async fn put_by_digest(s: &Storage, repo: &str, body: &[u8]) -> Digest {
    let digest = Digest::of(Algorithm::Sha256, body);
    put(s, repo, Reference::Digest(digest), body).await
}

async fn open(
    dir: &Path,
    database_url: Option<String>,
    untagged_after: Option<Duration>,
) -> Storage {
    let mut config = Config::in_dir(dir);
    config.database_url = database_url;
    config.gc.grace = GRACE;
    config.gc.delete_untagged_after = untagged_after;
    config.upload_expiry_secs = UPLOAD_EXPIRY_SECS;
    Storage::open(&config).await.unwrap()
}

async fn pass(s: &Storage, dry_run: bool) -> GcReport {
    s.collect_garbage(dry_run, Sweep::Always)
        .await
        .unwrap()
        .unwrap()
}

/// Every object file under the blob root.
fn objects(dir: &Path) -> Vec<std::path::PathBuf> {
    walk(&dir.join("blobs"))
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn unknown_blob<T>(r: Result<T, StorageError>) -> bool {
    matches!(r, Err(StorageError::BlobUnknown(_)))
}

async fn blobs_and_orphans(database_url: Option<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), database_url, None).await;
    let cfg = blob(&s, "gc/app", b"{}").await;
    let layer = blob(&s, "gc/app", b"l").await;
    let loose = blob(&s, "gc/app", b"pushed but never referenced").await;
    let seen = blob(&s, "gc/app", b"uploaded, then confirmed by a HEAD").await;
    // Mounted elsewhere and unlinked from its first repository: still one blob.
    let mounted = blob(&s, "gc/app", b"mounted").await;
    assert!(s.mount_blob("gc/other", "gc/app", &mounted).await.unwrap());
    put(
        &s,
        "gc/app",
        Reference::Tag("v1".into()),
        &image(&cfg, &layer, None),
    )
    .await;
    // An orphan object (a crash between write and commit), planted in the store.
    let planted = tmp
        .path()
        .join("blobs/data/ab/abplanted0000000000000000000000000");
    std::fs::create_dir_all(planted.parent().unwrap()).unwrap();
    std::fs::write(&planted, b"nobody names me").unwrap();

    let young = pass(&s, false).await;
    assert_eq!(
        (young.blobs, young.orphan_objects),
        (0, 0),
        "nothing is older than the grace yet"
    );

    tokio::time::sleep(GRACE + Duration::from_millis(300)).await;
    // The orphan, dated back past the orphan age (its own write time is what counts).
    let long_ago = std::time::SystemTime::now() - Duration::from_secs(2 * UPLOAD_EXPIRY_SECS);
    std::fs::File::options()
        .write(true)
        .open(&planted)
        .unwrap()
        .set_modified(long_ago)
        .unwrap();
    // A HEAD now refreshes the link (its touch time is older than a quarter grace).
    s.blob("gc/app", &seen).await.unwrap();
    let before = objects(tmp.path()).len();
    let dry = pass(&s, true).await;
    assert_eq!(dry.blobs, 2, "{dry}");
    assert_eq!(dry.orphan_objects, 1, "{dry}");
    assert_eq!(
        objects(tmp.path()).len(),
        before,
        "a dry run deletes nothing"
    );
    let real = pass(&s, false).await;
    assert_eq!(
        (
            real.blobs,
            real.blob_bytes,
            real.orphan_objects,
            real.orphan_bytes
        ),
        (
            dry.blobs,
            dry.blob_bytes,
            dry.orphan_objects,
            dry.orphan_bytes
        ),
        "the dry run counted what the pass deleted"
    );
    assert_eq!(
        real.blob_bytes,
        (b"pushed but never referenced".len() + b"mounted".len()) as u64
    );
    assert!(unknown_blob(s.blob("gc/app", &loose).await));
    assert!(unknown_blob(s.blob("gc/other", &mounted).await));
    assert!(!planted.exists());
    for kept in [&cfg, &layer, &seen] {
        let info = s.blob("gc/app", kept).await.unwrap();
        let bytes = s.read_small_blob("gc/app", kept, 1 << 20).await.unwrap();
        assert_eq!(Digest::of(Algorithm::Sha256, &bytes), *kept);
        assert_eq!(info.size, bytes.len() as u64);
    }
    // Exactly the kept blobs' objects remain.
    assert_eq!(objects(tmp.path()).len(), 3);
    // A collected blob can be pushed again.
    let again = blob(&s, "gc/app", b"pushed but never referenced").await;
    assert_eq!(again, loose);
    s.blob("gc/app", &loose).await.unwrap();

    // Deleting the tagged manifest leaves its blobs unreferenced: they go after the grace.
    let tagged = s
        .manifest("gc/app", &Reference::Tag("v1".into()))
        .await
        .unwrap();
    s.delete_manifest("gc/app", &Reference::Digest(tagged.digest.clone()), "test")
        .await
        .unwrap();
    tokio::time::sleep(GRACE + Duration::from_millis(300)).await;
    let last = pass(&s, false).await;
    assert_eq!(last.blobs, 3 + 1, "{last}");
    assert!(objects(tmp.path()).is_empty());
}

async fn untagged_manifests(database_url: Option<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), database_url, Some(Duration::from_millis(500))).await;
    let cfg = blob(&s, "gc/app", b"{}").await;
    let layer = blob(&s, "gc/app", b"l").await;
    let other = blob(&s, "gc/app", b"o").await;
    let tagged = put(
        &s,
        "gc/app",
        Reference::Tag("v1".into()),
        &image(&cfg, &layer, None),
    )
    .await;
    let untagged = put_by_digest(&s, "gc/app", &image(&cfg, &other, None)).await;
    // An image a tagged index lists stays; so does the index.
    let child_body = image(&other, &layer, None);
    let child = put_by_digest(&s, "gc/app", &child_body).await;
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": child.to_string(), "size": child_body.len()}]
    }))
    .unwrap();
    put(&s, "gc/app", Reference::Tag("multi".into()), &index).await;
    // A signature of the tagged image stays; a signature of the untagged one goes with it.
    let kept_referrer = put_by_digest(&s, "gc/app", &image(&cfg, &layer, Some(&tagged))).await;
    let gone_referrer = put_by_digest(&s, "gc/app", &image(&other, &layer, Some(&untagged))).await;
    // An untagged image pulled by digest recently stays.
    let pulled = put_by_digest(&s, "gc/app", &image(&layer, &cfg, None)).await;
    // So does one pushed again (by digest alone) just now: its 201 is a promise too.
    let repushed_body = image(&other, &cfg, None);
    let repushed = put_by_digest(&s, "gc/app", &repushed_body).await;

    // What an owner reviews before deleting: every untagged manifest, newest first.
    let listed = s.untagged_manifests("gc/app").await.unwrap();
    let mut digests: Vec<&str> = listed.iter().map(|m| m.digest.as_str()).collect();
    digests.sort();
    let mut expected: Vec<String> = [
        &untagged,
        &child,
        &kept_referrer,
        &gone_referrer,
        &pulled,
        &repushed,
    ]
    .iter()
    .map(|d| d.to_string())
    .collect();
    expected.sort();
    assert_eq!(digests, expected);
    let index_digest = Digest::of(Algorithm::Sha256, &index).to_string();
    let of = |d: &Digest| listed.iter().find(|m| m.digest == d.to_string()).unwrap();
    assert_eq!(of(&child).listed_by.as_deref(), Some(index_digest.as_str()));
    assert_eq!(of(&untagged).listed_by, None);
    assert_eq!(
        of(&gone_referrer).subject.as_deref(),
        Some(untagged.to_string().as_str())
    );
    // `{}` and `o`: 3 bytes, none of them its own (the config and `o` are shared).
    assert_eq!((of(&untagged).size, of(&untagged).freed_bytes), (3, 0));

    tokio::time::sleep(Duration::from_millis(700)).await;
    put_by_digest(&s, "gc/app", &repushed_body).await;
    let reference = Reference::Digest(pulled.clone());
    let m = s.manifest("gc/app", &reference).await.unwrap();
    s.record_pull("gc/app", &reference, &m);
    s.flush_pulls().await.unwrap();
    let report = pass(&s, false).await;
    assert_eq!(report.manifests, 2, "{report}");
    let exists = |d: &Digest| {
        let s = s.clone();
        let d = d.clone();
        async move { s.manifest("gc/app", &Reference::Digest(d)).await.is_ok() }
    };
    assert!(!exists(&untagged).await);
    assert!(!exists(&gone_referrer).await);
    for d in [&tagged, &child, &kept_referrer, &pulled, &repushed] {
        assert!(exists(d).await, "{d} was kept");
    }
    // An owner's deletion of one untagged manifest, decided on the locked row: a
    // tagged one and one an index lists stay.
    for needed in [&tagged, &child] {
        let refused = s.delete_untagged("gc/app", needed).await;
        assert!(
            matches!(refused, Err(StorageError::ManifestInUse(_))),
            "{refused:?}"
        );
        assert!(exists(needed).await);
    }
    s.delete_untagged("gc/app", &pulled).await.unwrap();
    assert!(!exists(&pulled).await);
    assert!(matches!(
        s.delete_untagged("gc/app", &pulled).await,
        Err(StorageError::ManifestUnknown(_))
    ));
    // Nothing the kept manifests reference was collected with them.
    tokio::time::sleep(GRACE + Duration::from_millis(300)).await;
    let blobs = pass(&s, false).await;
    assert_eq!(blobs.blobs, 0, "every blob is still referenced: {blobs}");
}

async fn one_collector_at_a_time(database_url: Option<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), database_url, None).await;
    let (a, b) = tokio::join!(
        s.collect_garbage(false, Sweep::Always),
        s.collect_garbage(false, Sweep::Always)
    );
    let outcomes = [a.unwrap(), b.unwrap()];
    assert!(
        outcomes.iter().any(|o| o.is_ok()),
        "one pass ran: {outcomes:?}"
    );
    // Once it is done, the next one runs.
    pass(&s, false).await;
}

async fn postgres() -> Option<String> {
    let admin = berth_tests::postgres_admin_url()?;
    Some(berth_tests::fresh_postgres_database(&admin).await)
}

#[tokio::test]
async fn blobs_and_orphans_on_sqlite() {
    blobs_and_orphans(None).await;
}

#[tokio::test]
async fn untagged_manifests_on_sqlite() {
    untagged_manifests(None).await;
}

#[tokio::test]
async fn one_collector_at_a_time_on_sqlite() {
    one_collector_at_a_time(None).await;
}

#[tokio::test]
async fn blobs_and_orphans_on_postgres() {
    let Some(url) = postgres().await else {
        eprintln!("SKIPPED: set BERTH_TEST_POSTGRES_URL to run the PostgreSQL variant");
        return;
    };
    blobs_and_orphans(Some(url)).await;
}

#[tokio::test]
async fn untagged_manifests_on_postgres() {
    let Some(url) = postgres().await else {
        eprintln!("SKIPPED: set BERTH_TEST_POSTGRES_URL to run the PostgreSQL variant");
        return;
    };
    untagged_manifests(Some(url)).await;
}

#[tokio::test]
async fn one_collector_at_a_time_on_postgres() {
    let Some(url) = postgres().await else {
        eprintln!("SKIPPED: set BERTH_TEST_POSTGRES_URL to run the PostgreSQL variant");
        return;
    };
    one_collector_at_a_time(Some(url)).await;
}
