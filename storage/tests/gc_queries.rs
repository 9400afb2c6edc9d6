//! The garbage queries on a real database (SQLite, and PostgreSQL when configured).

use berth_config::Config;
use berth_oci::media_types::{OCI_INDEX, OCI_MANIFEST};
use berth_storage::manifests::Reference;
use berth_storage::{Algorithm, Digest, Storage};
use bytes::Bytes;
use futures::stream;

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

async fn check(database_url: Option<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = Config::in_dir(tmp.path());
    config.database_url = database_url;
    let s = Storage::open(&config).await.unwrap();
    let cfg = blob(&s, "gc/app", b"{}").await;
    let layer = blob(&s, "gc/app", b"l").await;
    let loose = blob(&s, "gc/app", b"pushed but never referenced").await;
    let tagged = put(
        &s,
        "gc/app",
        Reference::Tag("v1".into()),
        &image(&cfg, &layer, None),
    )
    .await;
    let other = blob(&s, "gc/app", b"o").await;
    let untagged_body = image(&cfg, &other, None);
    let untagged = put(
        &s,
        "gc/app",
        Reference::Digest(Digest::of(Algorithm::Sha256, &untagged_body)),
        &untagged_body,
    )
    .await;
    let child_body = image(&cfg, &layer, Some(&Digest::of(Algorithm::Sha256, b"gone")));
    let child = put(
        &s,
        "gc/app",
        Reference::Digest(Digest::of(Algorithm::Sha256, &child_body)),
        &child_body,
    )
    .await;
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": child.to_string(), "size": child_body.len()}]
    }))
    .unwrap();
    put(&s, "gc/app", Reference::Tag("multi".into()), &index).await;
    let referrer_body = image(&cfg, &layer, Some(&tagged));
    put(
        &s,
        "gc/app",
        Reference::Digest(Digest::of(Algorithm::Sha256, &referrer_body)),
        &referrer_body,
    )
    .await;
    let orphan_referrer_body = image(
        &other,
        &layer,
        Some(&Digest::of(Algorithm::Sha256, b"never pushed")),
    );
    let orphan_referrer = put(
        &s,
        "gc/app",
        Reference::Digest(Digest::of(Algorithm::Sha256, &orphan_referrer_body)),
        &orphan_referrer_body,
    )
    .await;

    let future = chrono_now() + 60_000;
    assert_eq!(
        s.unreferenced_blobs(future).await.unwrap(),
        vec![loose.to_string()]
    );
    assert!(
        s.unreferenced_blobs(0).await.unwrap().is_empty(),
        "young blobs are never garbage"
    );
    let mut orphans: Vec<String> = s
        .orphan_manifests()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.digest)
        .collect();
    orphans.sort();
    let mut expected = vec![untagged.to_string(), orphan_referrer.to_string()];
    expected.sort();
    assert_eq!(orphans, expected);
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn garbage_is_found_by_query_on_sqlite() {
    check(None).await;
}

#[tokio::test]
async fn garbage_is_found_by_query_on_postgres() {
    let Some(admin) = berth_tests::postgres_admin_url() else {
        eprintln!("SKIPPED: set BERTH_TEST_POSTGRES_URL to run the PostgreSQL variant");
        return;
    };
    check(Some(berth_tests::fresh_postgres_database(&admin).await)).await;
}
