//! Immutable tag rules on a real database (SQLite, and PostgreSQL when configured):
//! protected tags are neither overwritten nor deleted (by tag or by digest), other
//! tags and repositories are untouched, and concurrent first pushes of one protected
//! tag leave exactly one winner.

use berth_config::Config;
use berth_oci::media_types::OCI_MANIFEST;
use berth_storage::manifests::Reference;
use berth_storage::tag_rules::ImmutableRule;
use berth_storage::{Algorithm, Digest, Storage, StorageError};
use bytes::Bytes;
use futures::stream;

async fn blob(s: &Storage, repo: &str, data: &[u8]) -> Digest {
    let d = Digest::of(Algorithm::Sha256, data);
    let body = stream::iter(vec![Ok::<_, std::io::Error>(Bytes::copy_from_slice(data))]);
    s.put_blob(repo, &d, body).await.unwrap();
    d
}

/// An image manifest in `repo` whose one layer is `layer` (pushed first).
async fn image(s: &Storage, repo: &str, layer: &str) -> (Vec<u8>, String) {
    let config = blob(s, repo, b"{}").await;
    let layer = blob(s, repo, layer.as_bytes()).await;
    let body = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.to_string(), "size": 1}],
    }))
    .unwrap();
    let digest = Digest::of(Algorithm::Sha256, &body).to_string();
    (body, digest)
}

fn tag(t: &str) -> Reference {
    Reference::Tag(t.into())
}

fn by_digest(d: &str) -> Reference {
    Reference::Digest(d.parse().unwrap())
}

async fn put(s: &Storage, repo: &str, t: &str, body: &[u8]) -> Result<(), StorageError> {
    s.put_manifest(repo, &tag(t), None, body, &[])
        .await
        .map(|_| ())
}

async fn digest_of(s: &Storage, repo: &str, t: &str) -> String {
    s.manifest(repo, &tag(t)).await.unwrap().digest.to_string()
}

/// The refusal's tag and message.
#[track_caller]
fn refused(result: Result<(), StorageError>, want_tag: &str, want_rule: &str) {
    match result {
        Err(e @ StorageError::TagImmutable { .. }) => {
            let StorageError::TagImmutable { tag, rule } = &e else {
                unreachable!()
            };
            assert_eq!((tag.as_str(), rule.as_str()), (want_tag, want_rule));
            assert_eq!(
                e.to_string(),
                format!("tag {want_tag} is immutable (rule {want_rule}): it can be neither overwritten nor deleted")
            );
        }
        other => panic!("expected {want_tag} to be immutable, got {other:?}"),
    }
}

async fn check(database_url: Option<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = Config::in_dir(tmp.path());
    config.database_url = database_url;
    let s = Storage::open(&config).await.unwrap();
    let repo = "acme/app";
    let (a, a_digest) = image(&s, repo, "a").await;
    let (b, b_digest) = image(&s, repo, "b").await;
    let (c, c_digest) = image(&s, repo, "c").await;
    put(&s, repo, "v1", &a).await.unwrap();
    put(&s, repo, "latest", &a).await.unwrap();
    put(&s, repo, "release-1", &b).await.unwrap();

    // Rules: validated, idempotent, listed by scope.
    let ns_rule = s.add_immutable_rule("acme/*", "v*").await.unwrap();
    assert_eq!(
        s.add_immutable_rule("acme/*", "v*").await.unwrap(),
        ns_rule,
        "adding a rule twice gives the same rule"
    );
    let repo_rule = s.add_immutable_rule(repo, "release-?").await.unwrap();
    let other_rule = s.add_immutable_rule("other/*", "*").await.unwrap();
    for (scope, pattern) in [
        ("acme/", "v*"),
        ("Acme/*", "v*"),
        ("acme/*", ".."),
        ("acme/*", ""),
    ] {
        assert!(
            matches!(
                s.add_immutable_rule(scope, pattern).await,
                Err(StorageError::TagRuleInvalid(_))
            ),
            "{scope} {pattern}"
        );
    }
    let ids = |rules: Vec<ImmutableRule>| rules.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.immutable_rules(Some(repo)).await.unwrap()),
        [ns_rule.id, repo_rule.id]
    );
    assert_eq!(
        ids(s.immutable_rules(Some("acme/*")).await.unwrap()),
        [ns_rule.id, repo_rule.id]
    );
    assert_eq!(
        ids(s.immutable_rules(Some("acme/other")).await.unwrap()),
        [ns_rule.id]
    );
    assert_eq!(
        ids(s.immutable_rules(None).await.unwrap()),
        [ns_rule.id, repo_rule.id, other_rule.id]
    );
    assert_eq!(ns_rule.to_string(), "\"v*\" on acme/*");

    // Overwrites of protected tags are refused, whole: nothing of the push is kept.
    refused(put(&s, repo, "v1", &b).await, "v1", "\"v*\" on acme/*");
    refused(
        put(&s, repo, "release-1", &a).await,
        "release-1",
        "\"release-?\" on acme/app",
    );
    refused(
        s.put_manifest(repo, &tag("latest"), None, &c, &["v1".into()])
            .await
            .map(|_| ()),
        "v1",
        "\"v*\" on acme/*",
    );
    assert_eq!(digest_of(&s, repo, "v1").await, a_digest);
    assert_eq!(digest_of(&s, repo, "latest").await, a_digest);
    assert!(matches!(
        s.manifest(repo, &by_digest(&c_digest)).await,
        Err(StorageError::ManifestUnknown(_))
    ));

    // The same manifest again is no overwrite, also beside a new tag (which takes
    // the write path, past the "already stored" shortcut).
    put(&s, repo, "v1", &a).await.unwrap();
    s.put_manifest(repo, &tag("v1"), None, &a, &["stable".into()])
        .await
        .unwrap();
    assert_eq!(digest_of(&s, repo, "stable").await, a_digest);

    // Unprotected tags move freely; a new protected tag can be created, then stays.
    put(&s, repo, "latest", &b).await.unwrap();
    assert_eq!(digest_of(&s, repo, "latest").await, b_digest);
    put(&s, repo, "v2", &b).await.unwrap();
    refused(put(&s, repo, "v2", &a).await, "v2", "\"v*\" on acme/*");
    put(&s, repo, "release-10", &b).await.unwrap();
    put(&s, repo, "release-10", &a).await.unwrap();

    // Deletes: by a protected tag, or by the digest of a manifest a protected tag is on.
    refused(
        s.delete_manifest(repo, &tag("v1"), "test").await,
        "v1",
        "\"v*\" on acme/*",
    );
    refused(
        s.delete_manifest(repo, &by_digest(&a_digest), "test").await,
        "v1",
        "\"v*\" on acme/*",
    );
    assert_eq!(digest_of(&s, repo, "v1").await, a_digest);
    assert_eq!(digest_of(&s, repo, "stable").await, a_digest);
    s.delete_manifest(repo, &tag("stable"), "test")
        .await
        .unwrap();
    put(&s, repo, "temp", &c).await.unwrap();
    s.delete_manifest(repo, &by_digest(&c_digest), "test")
        .await
        .unwrap();
    assert!(matches!(
        s.delete_manifest(repo, &tag("never-pushed"), "test").await,
        Err(StorageError::ManifestUnknown(_))
    ));

    // A namespace rule covers every repository in it; a repository's rule only its own;
    // another namespace's rule none.
    let (other_a, _) = image(&s, "acme/other", "a").await;
    let (other_b, _) = image(&s, "acme/other", "b").await;
    put(&s, "acme/other", "v1", &other_a).await.unwrap();
    put(&s, "acme/other", "release-1", &other_a).await.unwrap();
    refused(
        put(&s, "acme/other", "v1", &other_b).await,
        "v1",
        "\"v*\" on acme/*",
    );
    put(&s, "acme/other", "release-1", &other_b).await.unwrap();
    let (free_a, _) = image(&s, "free/app", "a").await;
    let (free_b, _) = image(&s, "free/app", "b").await;
    put(&s, "free/app", "v1", &free_a).await.unwrap();
    put(&s, "free/app", "v1", &free_b).await.unwrap();
    s.delete_manifest("free/app", &tag("v1"), "test")
        .await
        .unwrap();

    // Removing the rule frees its tags.
    s.remove_immutable_rule(ns_rule.id).await.unwrap();
    assert!(matches!(
        s.remove_immutable_rule(ns_rule.id).await,
        Err(StorageError::TagRuleUnknown(id)) if id == ns_rule.id
    ));
    put(&s, repo, "v1", &b).await.unwrap();
    s.delete_manifest(repo, &tag("v1"), "test").await.unwrap();

    // Concurrent first pushes of one protected tag, each of another manifest: one
    // creates it, every other is an overwrite and refused.
    s.add_immutable_rule(repo, "race").await.unwrap();
    let mut bodies = Vec::new();
    for i in 0..6 {
        bodies.push(image(&s, repo, &format!("racer {i}")).await);
    }
    let pushes: Vec<_> = bodies
        .iter()
        .map(|(body, digest)| {
            let (s, body, digest) = (s.clone(), body.clone(), digest.clone());
            tokio::spawn(async move { (digest, put(&s, "acme/app", "race", &body).await) })
        })
        .collect();
    let mut winners = Vec::new();
    for push in pushes {
        match push.await.unwrap() {
            (digest, Ok(())) => winners.push(digest),
            (_, result) => refused(result, "race", "\"race\" on acme/app"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one push creates the tag");
    assert_eq!(digest_of(&s, repo, "race").await, winners[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immutable_tags_hold_on_sqlite() {
    check(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immutable_tags_hold_on_postgres() {
    let Some(admin) = berth_tests::postgres_admin_url() else {
        eprintln!("SKIPPED: set BERTH_TEST_POSTGRES_URL to run the PostgreSQL variant");
        return;
    };
    check(Some(berth_tests::fresh_postgres_database(&admin).await)).await;
}
