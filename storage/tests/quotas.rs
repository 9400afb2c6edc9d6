//! Quotas and usage on a real database (SQLite, and PostgreSQL when configured): usage
//! counts a layer shared inside a namespace once, and a push that would go over the
//! quota is refused with usage and quota in the message, storing nothing.

use berth_config::Config;
use berth_oci::media_types::OCI_MANIFEST;
use berth_storage::manifests::Reference;
use berth_storage::{Algorithm, Digest, Storage, StorageError};
use bytes::Bytes;
use futures::stream;

fn body(data: &[u8]) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
    stream::iter(vec![Ok(Bytes::copy_from_slice(data))])
}

async fn blob(s: &Storage, repo: &str, data: &[u8]) -> Result<Digest, StorageError> {
    let d = Digest::of(Algorithm::Sha256, data);
    s.put_blob(repo, &d, body(data)).await?;
    Ok(d)
}

fn image(blobs: &[(&Digest, usize)]) -> Vec<u8> {
    let (config, layers) = blobs.split_first().unwrap();
    let descriptor = |(d, size): &(&Digest, usize), media_type: &str| serde_json::json!({"mediaType": media_type, "digest": d.to_string(), "size": size});
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": descriptor(config, "application/vnd.oci.image.config.v1+json"),
        "layers": layers.iter().map(|l| descriptor(l, "application/vnd.oci.image.layer.v1.tar")).collect::<Vec<_>>(),
    }))
    .unwrap()
}

async fn push(
    s: &Storage,
    repo: &str,
    tag: &str,
    blobs: &[(&Digest, usize)],
) -> Result<(), StorageError> {
    s.put_manifest(repo, &Reference::Tag(tag.into()), None, &image(blobs), &[])
        .await
        .map(drop)
}

async fn check(database_url: Option<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = Config::in_dir(tmp.path());
    config.database_url = database_url;
    config.default_quota = Some(1_000_000);
    let s = Storage::open(&config).await.unwrap();
    let base = vec![b'b'; 1000];
    let a_only = vec![b'a'; 300];
    let b_only = vec![b'c'; 200];
    let cfg = blob(&s, "acme/a", b"{}").await.unwrap();
    let base_d = blob(&s, "acme/a", &base).await.unwrap();
    let a_d = blob(&s, "acme/a", &a_only).await.unwrap();
    push(
        &s,
        "acme/a",
        "v1",
        &[(&cfg, 2), (&base_d, 1000), (&a_d, 300)],
    )
    .await
    .unwrap();
    // acme/b shares the config and the base layer (mounted, as docker does).
    assert!(s.mount_blob("acme/b", "acme/a", &base_d).await.unwrap());
    assert!(s.mount_blob("acme/b", "acme/a", &cfg).await.unwrap());
    let b_d = blob(&s, "acme/b", &b_only).await.unwrap();
    push(
        &s,
        "acme/b",
        "v1",
        &[(&cfg, 2), (&base_d, 1000), (&b_d, 200)],
    )
    .await
    .unwrap();
    // An unreferenced upload counts for nobody.
    blob(&s, "acme/b", b"loose").await.unwrap();

    let acme = s.namespace_usage("acme").await.unwrap();
    assert_eq!(acme.bytes, 2 + 1000 + 300 + 200, "shared blobs count once");
    assert_eq!(acme.quota, Some(1_000_000), "the default applies");
    assert_eq!(s.repository_usage("acme/a").await.unwrap(), 1302);
    assert_eq!(s.repository_usage("acme/b").await.unwrap(), 1202);
    let registry = s.registry_usage().await.unwrap();
    assert_eq!(registry.blobs, 5);
    assert_eq!(registry.stored_bytes, 1502 + 5);
    assert_eq!(registry.logical_bytes, 1302 + 1202);
    assert!((registry.dedup_ratio() - 2504.0 / 1507.0).abs() < 1e-9);

    // A quota just above today's usage.
    s.set_quota("acme", 1600).await.unwrap();
    assert_eq!(s.quotas().await.unwrap(), vec![("acme".to_string(), 1600)]);
    // A blob that would go over is refused at completion and not stored.
    let big = vec![b'x'; 200];
    let err = blob(&s, "acme/b", &big).await.unwrap_err();
    let StorageError::QuotaExceeded {
        usage,
        quota,
        adding,
        ..
    } = &err
    else {
        panic!("expected QuotaExceeded, got {err}");
    };
    assert_eq!((*usage, *quota, *adding), (1502, 1600, 200));
    let message = err.to_string();
    assert!(
        message.contains("acme") && message.contains("used of"),
        "{message}"
    );
    assert!(matches!(
        s.blob("acme/b", &Digest::of(Algorithm::Sha256, &big)).await,
        Err(StorageError::BlobUnknown(_))
    ));
    // Two blobs that fit one by one but not together: the manifest is refused and its
    // tag not created.
    let p = blob(&s, "acme/c", &[b'p'; 60]).await.unwrap();
    let q = blob(&s, "acme/c", &[b'q'; 60]).await.unwrap();
    let cfg_c = blob(&s, "acme/c", b"{}").await.unwrap();
    let err = push(&s, "acme/c", "both", &[(&cfg_c, 2), (&p, 60), (&q, 60)])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::QuotaExceeded {
                usage: 1502,
                adding: 120,
                ..
            }
        ),
        "{err}"
    );
    assert!(s
        .manifest("acme/c", &Reference::Tag("both".into()))
        .await
        .is_err());
    // Blobs the namespace already references add nothing: another repository may use them.
    assert!(s.mount_blob("acme/c", "acme/a", &base_d).await.unwrap());
    push(&s, "acme/c", "v1", &[(&cfg, 2), (&base_d, 1000)])
        .await
        .unwrap();
    // Up to the quota exactly.
    let fill = blob(&s, "acme/c", &[b'f'; 98]).await.unwrap();
    push(&s, "acme/c", "v2", &[(&cfg, 2), (&fill, 98)])
        .await
        .unwrap();
    assert_eq!(s.namespace_usage("acme").await.unwrap().bytes, 1600);
    let one_more = blob(&s, "acme/c", b"1").await;
    assert!(matches!(one_more, Err(StorageError::QuotaExceeded { .. })));
    assert!(s.mount_blob("acme/c", "acme/a", &a_d).await.unwrap());
    push(&s, "acme/c", "v3", &[(&cfg, 2), (&a_d, 300), (&fill, 98)])
        .await
        .unwrap();
    // Other namespaces are not affected; removing the quota brings the default back.
    blob(&s, "other/x", &[b'w'; 10]).await.unwrap();
    assert!(s.remove_quota("acme").await.unwrap());
    assert!(!s.remove_quota("acme").await.unwrap());
    blob(&s, "acme/c", &[b'w'; 10]).await.unwrap();
    // Hostile names are refused.
    for bad in ["", "acme/app", "../x", "ACME", &"a".repeat(300)] {
        assert!(s.set_quota(bad, 1).await.is_err(), "{bad:?} accepted");
    }
}

#[tokio::test]
async fn quotas_and_usage_on_sqlite() {
    check(None).await;
}

#[tokio::test]
async fn quotas_and_usage_on_postgres() {
    let Some(admin) = berth_tests::postgres_admin_url() else {
        eprintln!("SKIPPED: set BERTH_TEST_POSTGRES_URL to run the PostgreSQL variant");
        return;
    };
    check(Some(berth_tests::fresh_postgres_database(&admin).await)).await;
}
