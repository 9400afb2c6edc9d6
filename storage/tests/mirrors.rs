//! What proxies keep, on a real database (SQLite, and PostgreSQL when configured):
//! upstream manifests stored before their layers and platform images arrive, layers
//! found in sibling repositories, and eviction by garbage collection that takes the
//! least recently pulled images of a proxy's namespace first (an index with its
//! images) and never anything outside it.

use std::time::Duration;

use berth_config::{Config, ProxyAccess, ProxyConfig};
use berth_oci::media_types::{OCI_INDEX, OCI_MANIFEST};
use berth_storage::gc::Sweep;
use berth_storage::manifests::Reference;
use berth_storage::{Algorithm, Digest, Storage, StorageError};
use bytes::Bytes;
use futures::stream;

async fn blob(s: &Storage, repo: &str, data: &[u8]) -> Digest {
    let d = Digest::of(Algorithm::Sha256, data);
    let body = stream::iter(vec![Ok::<_, std::io::Error>(Bytes::copy_from_slice(data))]);
    s.put_blob(repo, &d, body).await.unwrap();
    d
}

/// An image manifest over one layer of `size` bytes filled from `name`, and the layer.
fn image(name: &str, size: usize) -> (Vec<u8>, Vec<u8>) {
    let mut layer = name.as_bytes().to_vec();
    layer.resize(size, b'.');
    let layer_d = Digest::of(Algorithm::Sha256, &layer);
    let config_d = Digest::of(Algorithm::Sha256, b"{}");
    let m = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_d.to_string(), "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_d.to_string(), "size": size}],
    });
    (serde_json::to_vec(&m).unwrap(), layer)
}

fn proxy(prefix: &str, max_size: u64) -> ProxyConfig {
    ProxyConfig {
        prefix: prefix.into(),
        upstream: "http://127.0.0.1:9".into(),
        credentials_env: None,
        tag_ttl: Duration::from_secs(60),
        max_size: Some(max_size),
        access: ProxyAccess::Anonymous,
        mirror_listen: None,
    }
}

async fn exists(s: &Storage, repo: &str, digest: &Digest) -> bool {
    match s.manifest(repo, &Reference::Digest(digest.clone())).await {
        Ok(_) => true,
        Err(StorageError::ManifestUnknown(_)) => false,
        Err(e) => panic!("{e}"),
    }
}

async fn pull(s: &Storage, repo: &str, tag: &str) {
    let reference = Reference::Tag(tag.into());
    let m = s.manifest(repo, &reference).await.unwrap();
    s.record_pull(repo, &reference, &m);
    s.flush_pulls().await.unwrap();
    // Pull times are milliseconds: keep them apart so the order is the pull order.
    tokio::time::sleep(Duration::from_millis(5)).await;
}

async fn check(database_url: Option<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = Config::in_dir(tmp.path());
    config.database_url = database_url;
    // Room for two of the three 1,000-byte images (and their 2-byte config).
    config.proxies = vec![proxy("up", 2_100)];
    let s = Storage::open(&config).await.unwrap();

    // An index cached before its platform image, and that image before its layer: no
    // references check, as the upstream's content arrives when clients ask for it.
    let (child, child_layer) = image("child", 1000);
    let child_d = Digest::of(Algorithm::Sha256, &child);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": child_d.to_string(), "size": child.len(),
                       "platform": {"os": "linux", "architecture": "arm64"}}]
    }))
    .unwrap();
    let index_d = s
        .cache_manifest(
            "up/multi",
            Some("1"),
            Some(OCI_INDEX),
            &index,
            Algorithm::Sha256,
            true,
        )
        .await
        .unwrap();
    assert_eq!(index_d, Digest::of(Algorithm::Sha256, &index));
    let got = s
        .cache_manifest(
            "up/multi",
            None,
            Some(OCI_MANIFEST),
            &child,
            Algorithm::Sha256,
            true,
        )
        .await
        .unwrap();
    assert_eq!(got, child_d);
    blob(&s, "up/multi", &child_layer).await;
    blob(&s, "up/multi", b"{}").await;
    assert_eq!(
        s.manifest("up/multi", &Reference::Tag("1".into()))
            .await
            .unwrap()
            .digest,
        index_d
    );
    assert_eq!(s.repository_private("up/multi").await.unwrap(), Some(false));
    // Not a manifest: refused, nothing stored.
    assert!(s
        .cache_manifest(
            "up/bad",
            Some("1"),
            Some(OCI_MANIFEST),
            b"{\"no\":1}",
            Algorithm::Sha256,
            true
        )
        .await
        .is_err());

    // Three images under the proxy, one local image outside it.
    let mut images = Vec::new();
    for name in ["a", "b", "c"] {
        let (m, layer) = image(name, 1000);
        let repo = format!("up/{name}");
        blob(&s, &repo, &layer).await;
        blob(&s, &repo, b"{}").await;
        let d = s
            .cache_manifest(
                &repo,
                Some("v1"),
                Some(OCI_MANIFEST),
                &m,
                Algorithm::Sha256,
                false,
            )
            .await
            .unwrap();
        images.push((repo, d, Digest::of(Algorithm::Sha256, &layer)));
    }
    let (local, local_layer) = image("local", 5000);
    blob(&s, "acme/app", &local_layer).await;
    blob(&s, "acme/app", b"{}").await;
    let local_d = s
        .put_manifest("acme/app", &Reference::Tag("v1".into()), None, &local, &[])
        .await
        .unwrap()
        .digest;
    assert_eq!(s.repository_private("up/a").await.unwrap(), Some(true));

    // A layer of `up/a` is found there from another repository of the proxy, never
    // from outside it.
    let layer_a = &images[0].2;
    assert_eq!(
        s.repository_with_blob("up", layer_a)
            .await
            .unwrap()
            .as_deref(),
        Some("up/a")
    );
    let local_layer_d = Digest::of(Algorithm::Sha256, &local_layer);
    assert_eq!(
        s.repository_with_blob("up", &local_layer_d).await.unwrap(),
        None
    );
    assert_eq!(s.repository_with_blob("u", layer_a).await.unwrap(), None);

    // Pulled in this order: the index, a, c — b is the least recently pulled.
    pull(&s, "up/multi", "1").await;
    pull(&s, "up/a", "v1").await;
    pull(&s, "up/c", "v1").await;
    let report = s
        .collect_garbage(false, Sweep::Always)
        .await
        .unwrap()
        .unwrap();
    // Over 2,100 bytes: b goes, then the index (with its image), then a fits.
    assert!(
        !exists(&s, "up/b", &images[1].1).await,
        "b, least recently pulled, evicted"
    );
    assert!(
        !exists(&s, "up/multi", &index_d).await,
        "the index evicted next"
    );
    assert!(
        !exists(&s, "up/multi", &child_d).await,
        "with its platform image"
    );
    assert!(exists(&s, "up/a", &images[0].1).await, "a stays");
    assert!(
        exists(&s, "up/c", &images[2].1).await,
        "c, pulled last, stays"
    );
    assert!(
        exists(&s, "acme/app", &local_d).await,
        "outside the proxy: untouched"
    );
    assert_eq!(report.evicted, 3, "{report}");
    assert!(s.namespace_usage("up").await.unwrap().bytes <= 2_100);
    assert!(report.to_string().contains("evicted 3"), "{report}");

    // A dry run evicts nothing; under the limit, a pass evicts nothing.
    let dry = s
        .collect_garbage(true, Sweep::Always)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dry.evicted, 0);
    let again = s
        .collect_garbage(false, Sweep::Always)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.evicted, 0);
    assert!(exists(&s, "up/a", &images[0].1).await);

    // Down to nothing: everything of the proxy goes, nothing else.
    assert_eq!(s.evict_least_pulled("up", 0).await.unwrap(), 2);
    assert_eq!(s.namespace_usage("up").await.unwrap().bytes, 0);
    assert!(exists(&s, "acme/app", &local_d).await);
    // Evictions are the registry's own housekeeping, nobody's action to audit.
    let audited = s
        .audit_log(&berth_storage::audit::AuditFilter::default())
        .await
        .unwrap();
    assert!(audited.is_empty(), "{audited:?}");
}

#[tokio::test]
async fn mirrors_on_sqlite() {
    check(None).await;
}

#[tokio::test]
async fn mirrors_on_postgres() {
    let Some(admin) = berth_tests::postgres_admin_url() else {
        eprintln!("SKIPPED: set BERTH_TEST_POSTGRES_URL to run the PostgreSQL variant");
        return;
    };
    check(Some(berth_tests::fresh_postgres_database(&admin).await)).await;
}

/// A manifest fetched by a sha512 digest (or a tag the upstream says has one) is
/// stored under it, so the next request by that digest finds it in the cache.
#[tokio::test]
async fn a_manifest_is_cached_under_the_digest_it_was_asked_by() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = Config::in_dir(tmp.path());
    config.proxies = vec![proxy("up", 1 << 20)];
    let s = Storage::open(&config).await.unwrap();
    let (m, _) = image("sha512", 10);
    let d = s
        .cache_manifest(
            "up/x",
            Some("1"),
            Some(OCI_MANIFEST),
            &m,
            Algorithm::Sha512,
            true,
        )
        .await
        .unwrap();
    assert_eq!(d, Digest::of(Algorithm::Sha512, &m));
    let found = s
        .manifest("up/x", &Reference::Digest(d.clone()))
        .await
        .unwrap();
    assert_eq!(
        (found.digest.clone(), found.content.as_ref()),
        (d.clone(), m.as_slice())
    );
    let tagged = s
        .manifest("up/x", &Reference::Tag("1".into()))
        .await
        .unwrap();
    assert_eq!(tagged.digest, d);
}
