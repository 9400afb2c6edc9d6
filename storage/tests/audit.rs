//! The audit log on a real database (SQLite, and PostgreSQL when configured): changes
//! made through `Storage::by` are recorded as the actor's, in their transaction;
//! filters and paging select the right entries newest first; hostile filter text is
//! data; entries past the retention expire and younger ones stay.

use std::time::Duration;

use berth_config::Config;
use berth_storage::audit::{Action, Actor, AuditFilter, Outcome};
use berth_storage::Storage;

async fn check(database_url: Option<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = Config::in_dir(tmp.path());
    config.database_url = database_url;
    let s = Storage::open(&config).await.unwrap();
    let alice = Actor::user("alice", Some("10.0.0.7".parse().unwrap()));

    // Changes with a transaction at hand are recorded in it, as their actor's.
    s.by(alice.clone()).set_quota("acme", 5_000).await.unwrap();
    s.by(Actor::local_admin())
        .remove_quota("acme")
        .await
        .unwrap();
    // Nothing removed: nothing recorded.
    assert!(!s
        .by(Actor::local_admin())
        .remove_quota("acme")
        .await
        .unwrap());
    let rule = s
        .by(alice.clone())
        .add_immutable_rule("acme/*", "v*")
        .await
        .unwrap();
    s.by(alice.clone())
        .remove_immutable_rule(rule.id)
        .await
        .unwrap();
    // A refusal, recorded on its own.
    let refused = Actor::user("mallory", None).entry(Action::TagDeleted, "acme/app:v1");
    s.audit(refused.outcome(Outcome::Denied)).await;

    let all = s.audit_log(&AuditFilter::default()).await.unwrap();
    let seen: Vec<(&str, Option<&str>, Option<&str>, &str)> = all
        .iter()
        .map(|e| {
            (
                e.action.as_str(),
                e.actor.as_deref(),
                e.target.as_deref(),
                e.outcome.as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                "tag_deleted",
                Some("mallory"),
                Some("acme/app:v1"),
                "denied"
            ),
            (
                "immutable_tag_rule_changed",
                Some("alice"),
                Some("acme/*"),
                "success"
            ),
            (
                "immutable_tag_rule_changed",
                Some("alice"),
                Some("acme/*"),
                "success"
            ),
            (
                "quota_changed",
                Some("berthd (local admin)"),
                Some("acme"),
                "success"
            ),
            ("quota_changed", Some("alice"), Some("acme"), "success"),
        ]
    );
    assert_eq!(all[4].address.as_deref(), Some("10.0.0.7"));
    assert_eq!(all[4].detail.as_deref(), Some("5000 bytes"));

    // Filters, alone and together; paging by id.
    let by_alice = AuditFilter {
        actor: Some("alice".into()),
        ..AuditFilter::default()
    };
    assert_eq!(s.audit_log(&by_alice).await.unwrap().len(), 3);
    let quota_by_alice = AuditFilter {
        action: Some(Action::QuotaChanged),
        ..by_alice.clone()
    };
    assert_eq!(s.audit_log(&quota_by_alice).await.unwrap().len(), 1);
    let first = AuditFilter {
        limit: Some(2),
        ..AuditFilter::default()
    };
    let page1 = s.audit_log(&first).await.unwrap();
    let page2 = s
        .audit_log(&AuditFilter {
            before: Some(page1[1].id),
            ..first.clone()
        })
        .await
        .unwrap();
    assert_eq!(page1.len() + page2.len(), 4);
    assert!(page2[0].id < page1[1].id);
    let future = AuditFilter {
        since: Some(all[0].at + 60_000),
        ..AuditFilter::default()
    };
    assert!(s.audit_log(&future).await.unwrap().is_empty());
    let past = AuditFilter {
        until: Some(all[4].at),
        ..AuditFilter::default()
    };
    assert!(s.audit_log(&past).await.unwrap().is_empty());
    // Filter text is a value compared, never SQL.
    let hostile = AuditFilter {
        actor: Some("alice' OR '1'='1".into()),
        ..AuditFilter::default()
    };
    assert!(s.audit_log(&hostile).await.unwrap().is_empty());
    // However much is asked for, a page is bounded.
    let huge = AuditFilter {
        limit: Some(u64::MAX),
        ..AuditFilter::default()
    };
    assert_eq!(huge.page_size(), berth_storage::audit::MAX_PAGE);

    // Expiry: entries older than the retention go, younger ones stay.
    assert_eq!(
        s.expire_audit_log(Duration::from_secs(3600)).await.unwrap(),
        0
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    s.audit(Actor::local_admin().entry(Action::UserCreated, "bobby"))
        .await;
    assert_eq!(
        s.expire_audit_log(Duration::from_millis(300))
            .await
            .unwrap(),
        5
    );
    let left = s.audit_log(&AuditFilter::default()).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].target.as_deref(), Some("bobby"));
}

/// Registry deletes are recorded in their own transaction, as their actor's: one
/// that deletes nothing (or is refused) records nothing, and the registry's own
/// removals (a proxy cache's evictions) are nobody's.
async fn check_deletes(database_url: Option<String>) {
    use berth_oci::media_types::OCI_MANIFEST;
    use berth_storage::manifests::Reference;
    use berth_storage::{Algorithm, Digest};

    let tmp = tempfile::tempdir().unwrap();
    let mut config = Config::in_dir(tmp.path());
    config.database_url = database_url;
    let s = Storage::open(&config).await.unwrap();
    let bob = s.by(Actor::user("bob", Some("10.0.0.9".parse().unwrap())));
    let config_blob = Digest::of(Algorithm::Sha256, b"{}");
    let body = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{}"))]);
    s.put_blob("acme/app", &config_blob, body).await.unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_blob.to_string(), "size": 2},
        "layers": [],
    }))
    .unwrap();
    let v1 = Reference::Tag("v1".into());
    s.put_manifest("acme/app", &v1, None, &manifest, &[])
        .await
        .unwrap();

    bob.delete_manifest("acme/app", &v1, "registry API")
        .await
        .unwrap();
    assert!(bob
        .delete_manifest("acme/app", &v1, "registry API")
        .await
        .is_err());
    bob.delete_blob("acme/app", &config_blob, "web UI")
        .await
        .unwrap();
    assert!(bob
        .delete_blob("acme/app", &config_blob, "web UI")
        .await
        .is_err());

    let all = s.audit_log(&AuditFilter::default()).await.unwrap();
    let seen: Vec<_> = all
        .iter()
        .map(|e| {
            (
                e.action.as_str(),
                e.actor.as_deref(),
                e.address.as_deref(),
                e.target.clone().unwrap_or_default(),
                e.detail.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                "blob_deleted",
                Some("bob"),
                Some("10.0.0.9"),
                format!("acme/app@{config_blob}"),
                Some("web UI")
            ),
            (
                "tag_deleted",
                Some("bob"),
                Some("10.0.0.9"),
                "acme/app:v1".to_owned(),
                Some("registry API")
            ),
        ]
    );
}

#[tokio::test]
async fn deletes_are_audited_on_sqlite() {
    check_deletes(None).await;
}

#[tokio::test]
async fn deletes_are_audited_on_postgres() {
    let Some(admin) = berth_tests::postgres_admin_url() else {
        eprintln!("SKIPPED: set BERTH_TEST_POSTGRES_URL to run the PostgreSQL variant");
        return;
    };
    check_deletes(Some(berth_tests::fresh_postgres_database(&admin).await)).await;
}

#[tokio::test]
async fn audit_log_on_sqlite() {
    check(None).await;
}

#[tokio::test]
async fn audit_log_on_postgres() {
    let Some(admin) = berth_tests::postgres_admin_url() else {
        eprintln!("SKIPPED: set BERTH_TEST_POSTGRES_URL to run the PostgreSQL variant");
        return;
    };
    check(Some(berth_tests::fresh_postgres_database(&admin).await)).await;
}
