//! Retention policies on a real database (SQLite, and PostgreSQL when configured): the
//! preview is exactly what a run deletes, immutable and pattern-kept tags stay, an
//! index's images and a deleted image's signatures go with it, and a repository's own
//! policy wins over its namespace's.

use std::time::Duration;

use berth_config::Config;
use berth_oci::media_types::{OCI_INDEX, OCI_MANIFEST};
use berth_storage::manifests::Reference;
use berth_storage::retention::RetentionPolicy;
use berth_storage::{Algorithm, Digest, Storage};
use bytes::Bytes;
use futures::stream;

async fn blob(s: &Storage, repo: &str, data: &[u8]) -> Digest {
    let d = Digest::of(Algorithm::Sha256, data);
    let body = stream::iter(vec![Ok::<_, std::io::Error>(Bytes::copy_from_slice(data))]);
    s.put_blob(repo, &d, body).await.unwrap();
    d
}

/// An image with its own layer `name` (of `size` bytes) over a shared config.
async fn image(
    s: &Storage,
    repo: &str,
    name: &str,
    size: usize,
    subject: Option<&Digest>,
) -> Vec<u8> {
    let cfg = blob(s, repo, b"{}").await;
    let mut data = name.as_bytes().to_vec();
    data.resize(size, b'.');
    let layer = blob(s, repo, &data).await;
    let mut m = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg.to_string(), "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.to_string(), "size": size}],
    });
    if let Some(sub) = subject {
        m["subject"] =
            serde_json::json!({"mediaType": OCI_MANIFEST, "digest": sub.to_string(), "size": 1});
    }
    serde_json::to_vec(&m).unwrap()
}

async fn tag(s: &Storage, repo: &str, t: &str, body: &[u8]) -> Digest {
    let d = s
        .put_manifest(repo, &Reference::Tag(t.into()), None, body, &[])
        .await
        .unwrap()
        .digest;
    // Push times are milliseconds: keep them apart so the order is the push order.
    tokio::time::sleep(Duration::from_millis(5)).await;
    d
}

async fn untagged(s: &Storage, repo: &str, body: &[u8]) -> Digest {
    let d = Digest::of(Algorithm::Sha256, body);
    s.put_manifest(repo, &Reference::Digest(d.clone()), None, body, &[])
        .await
        .unwrap();
    d
}

async fn tags(s: &Storage, repo: &str) -> Vec<String> {
    s.tags(repo, 1000, None).await.unwrap().items
}

fn policy(scope: &str) -> RetentionPolicy {
    RetentionPolicy {
        scope: scope.into(),
        keep_last: None,
        keep_pattern: None,
        unpushed_for: None,
        unpulled_for: None,
    }
}

async fn check(database_url: Option<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = Config::in_dir(tmp.path());
    config.database_url = database_url;
    let s = Storage::open(&config).await.unwrap();
    let app = "acme/app";
    // Pushed in this order: an old multi-platform index, v1…v4, keep-me, v5 = latest.
    let child = image(&s, app, "child-layer", 100, None).await;
    let child_d = untagged(&s, app, &child).await;
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": child_d.to_string(), "size": child.len()}]
    }))
    .unwrap();
    tag(&s, app, "multi-old", &index).await;
    let mut by_tag = std::collections::HashMap::new();
    for (i, t) in ["v1", "v2", "v3", "v4", "keep-me", "v5"].iter().enumerate() {
        let body = image(&s, app, t, 1000 + i, None).await;
        by_tag.insert(*t, tag(&s, app, t, &body).await);
    }
    let latest = image(&s, app, "v5", 1005, None).await;
    tag(&s, app, "latest", &latest).await;
    // A signature of v2 (which goes) and one of v5 (which stays).
    let sig_v2 = untagged(
        &s,
        app,
        &image(&s, app, "sig-v2", 10, Some(&by_tag["v2"])).await,
    )
    .await;
    let sig_v5 = untagged(
        &s,
        app,
        &image(&s, app, "sig-v5", 10, Some(&by_tag["v5"])).await,
    )
    .await;
    s.add_immutable_rule(app, "v1").await.unwrap();
    let mut ns = policy("acme/*");
    ns.keep_last = Some(3);
    ns.keep_pattern = Some("keep-*".into());
    s.set_retention(&ns).await.unwrap();

    let preview = s.retention_preview(None).await.unwrap();
    let mut doomed: Vec<&str> = preview.tags.iter().map(|t| t.tag.as_str()).collect();
    doomed.sort();
    // Kept: the 3 most recently pushed (latest, v5, keep-me: every tag counts in the
    // ranking), keep-* by pattern, v1 as immutable.
    assert_eq!(doomed, ["multi-old", "v2", "v3", "v4"], "{preview:?}");
    let mut manifests = preview.manifests.clone();
    manifests.sort();
    let mut expected: Vec<String> = [
        &by_tag["v2"],
        &by_tag["v3"],
        &by_tag["v4"],
        &sig_v2,
        &child_d,
    ]
    .iter()
    .map(|d| format!("{app}@{d}"))
    .collect();
    let index_d = Digest::of(Algorithm::Sha256, &index);
    expected.push(format!("{app}@{index_d}"));
    expected.sort();
    assert_eq!(manifests, expected);
    // v2's, v3's and v4's layers, the signature's layer, the child's layer; not the
    // shared config.
    assert_eq!(preview.freed_bytes, 1001 + 1002 + 1003 + 10 + 100);

    let applied = s.apply_retention(None).await.unwrap();
    assert_eq!(applied, preview, "the run deleted what the preview showed");
    let mut left = tags(&s, app).await;
    left.sort();
    assert_eq!(left, ["keep-me", "latest", "v1", "v5"]);
    for gone in [
        &by_tag["v2"],
        &by_tag["v3"],
        &by_tag["v4"],
        &sig_v2,
        &child_d,
        &index_d,
    ] {
        assert!(s
            .manifest(app, &Reference::Digest(gone.clone()))
            .await
            .is_err());
    }
    assert!(s
        .manifest(app, &Reference::Digest(sig_v5.clone()))
        .await
        .is_ok());
    assert!(
        s.retention_preview(None).await.unwrap().tags.is_empty(),
        "a second run has nothing left to do"
    );

    // A repository's own policy wins over its namespace's: not pulled for 300 ms.
    let other = "acme/other";
    let old = image(&s, other, "old", 50, None).await;
    tag(&s, other, "old", &old).await;
    let fresh = image(&s, other, "fresh", 60, None).await;
    tag(&s, other, "pulled", &fresh).await;
    let mut own = policy(other);
    own.unpulled_for = Some(Duration::from_millis(300));
    s.set_retention(&own).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let reference = Reference::Tag("pulled".into());
    let m = s.manifest(other, &reference).await.unwrap();
    s.record_pull(other, &reference, &m);
    s.flush_pulls().await.unwrap();
    let plan = s.retention_preview(Some(other)).await.unwrap();
    assert_eq!(
        plan.tags.iter().map(|t| t.tag.as_str()).collect::<Vec<_>>(),
        ["old"]
    );
    s.apply_retention(Some(other)).await.unwrap();
    assert_eq!(tags(&s, other).await, ["pulled"]);
    assert_eq!(s.retention_policies(None).await.unwrap().len(), 2);
    assert!(s.remove_retention(other).await.unwrap());

    // Hostile or empty policies are refused.
    let mut bad = policy("acme/*");
    assert!(
        s.set_retention(&bad).await.is_err(),
        "a policy that deletes nothing"
    );
    bad.keep_last = Some(0);
    assert!(s.set_retention(&bad).await.is_err(), "keep_last 0");
    for scope in ["", "../x", "acme/**", "ACME/app", "acme/app/"] {
        let mut p = policy(scope);
        p.keep_last = Some(1);
        assert!(
            s.set_retention(&p).await.is_err(),
            "scope {scope:?} accepted"
        );
    }
    let mut p = policy("acme/app");
    p.keep_last = Some(1);
    p.keep_pattern = Some("a/b".into());
    assert!(s.set_retention(&p).await.is_err(), "pattern with /");
}

#[tokio::test]
async fn retention_on_sqlite() {
    check(None).await;
}

#[tokio::test]
async fn retention_on_postgres() {
    let Some(admin) = berth_tests::postgres_admin_url() else {
        eprintln!("SKIPPED: set BERTH_TEST_POSTGRES_URL to run the PostgreSQL variant");
        return;
    };
    check(Some(berth_tests::fresh_postgres_database(&admin).await)).await;
}
