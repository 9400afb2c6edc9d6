//! What owners add is bounded per namespace: retention policies and immutable tag
//! rules (each planned by every garbage collection pass), its own and its
//! repositories' counted together; changing one already there is not adding. On a real
//! database (SQLite, and PostgreSQL when configured).

use berth_config::Config;
use berth_storage::retention::RetentionPolicy;
use berth_storage::tag_rules::MAX_PER_NAMESPACE;
use berth_storage::{Storage, StorageError};

fn policy(scope: &str, keep_last: u32) -> RetentionPolicy {
    RetentionPolicy {
        scope: scope.into(),
        keep_last: Some(keep_last),
        keep_pattern: None,
        unpushed_for: None,
        unpulled_for: None,
    }
}

fn beyond_limit<T: std::fmt::Debug>(r: Result<T, StorageError>, what: &str) -> bool {
    match r {
        Err(StorageError::Limit {
            holder,
            what: w,
            limit,
        }) => holder == "acme" && w == what && limit == MAX_PER_NAMESPACE,
        other => panic!("expected the {what} limit, got {other:?}"),
    }
}

async fn check(database_url: Option<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = Config::in_dir(tmp.path());
    config.database_url = database_url;
    let s = Storage::open(&config).await.unwrap();

    s.set_retention(&policy("acme/*", 3)).await.unwrap();
    for i in 1..MAX_PER_NAMESPACE {
        s.set_retention(&policy(&format!("acme/app{i}"), 1))
            .await
            .unwrap();
    }
    assert!(beyond_limit(
        s.set_retention(&policy("acme/one-more", 1)).await,
        "retention policies"
    ));
    // A namespace whose name starts alike is another one.
    s.set_retention(&policy("acme2/*", 1)).await.unwrap();
    s.set_retention(&policy("acme2/app", 1)).await.unwrap();
    // Changing a policy there is not adding one.
    s.set_retention(&policy("acme/app1", 5)).await.unwrap();
    assert!(s.remove_retention("acme/app2").await.unwrap());
    s.set_retention(&policy("acme/one-more", 1)).await.unwrap();

    s.add_immutable_rule("acme/*", "v*").await.unwrap();
    for i in 1..MAX_PER_NAMESPACE {
        s.add_immutable_rule("acme/app", &format!("release-{i}"))
            .await
            .unwrap();
    }
    assert!(beyond_limit(
        s.add_immutable_rule("acme/other", "latest").await,
        "immutable tag rules"
    ));
    // Adding one that is there already adds nothing.
    s.add_immutable_rule("acme/*", "v*").await.unwrap();
    s.add_immutable_rule("acme2/app", "latest").await.unwrap();
}

#[tokio::test]
async fn owner_limits_on_sqlite() {
    check(None).await;
}

#[tokio::test]
async fn owner_limits_on_postgres() {
    let Some(admin) = berth_tests::postgres_admin_url() else {
        eprintln!("SKIPPED: set BERTH_TEST_POSTGRES_URL to run the PostgreSQL variant");
        return;
    };
    check(Some(berth_tests::fresh_postgres_database(&admin).await)).await;
}
