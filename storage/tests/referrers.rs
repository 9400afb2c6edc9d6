//! A referrers list stays bounded whoever pushes referrers: annotations are carried
//! within a budget (referrers past it are listed without theirs), on a real database
//! (SQLite, and PostgreSQL when configured).

use berth_config::Config;
use berth_oci::media_types::OCI_INDEX;
use berth_storage::manifests::{Reference, REFERRER_ANNOTATION_CHARS};
use berth_storage::{Algorithm, Digest, Storage};

/// An empty index naming `subject`, with one annotation of `bytes` bytes.
fn referrer(subject: &Digest, n: usize, bytes: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [],
        "artifactType": "application/vnd.example.sig",
        "subject": {"mediaType": OCI_INDEX, "digest": subject.to_string(), "size": 2},
        "annotations": {"n": n.to_string(), "pad": "x".repeat(bytes)},
    }))
    .unwrap()
}

async fn check(database_url: Option<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = Config::in_dir(tmp.path());
    config.database_url = database_url;
    let s = Storage::open(&config).await.unwrap();
    let subject = Digest::of(Algorithm::Sha256, b"any subject, pushed or not");
    // Three of 40% of the budget each, then a small one.
    let big = (REFERRER_ANNOTATION_CHARS as usize) * 2 / 5;
    for (n, bytes) in [(0, big), (1, big), (2, big), (3, 10)] {
        let body = referrer(&subject, n, bytes);
        let d = Digest::of(Algorithm::Sha256, &body);
        s.put_manifest(
            "acme/app",
            &Reference::Digest(d),
            Some(OCI_INDEX),
            &body,
            &[],
        )
        .await
        .unwrap();
    }
    let listed = s.referrers("acme/app", &subject, None).await.unwrap();
    assert_eq!(listed.len(), 4, "every referrer is listed");
    let carried: Vec<Option<String>> = listed
        .iter()
        .map(|r| r.annotations.as_ref().map(|a| a["n"].clone()))
        .collect();
    assert_eq!(
        carried,
        [Some("0".into()), Some("1".into()), None, Some("3".into())],
        "annotations within the budget, oldest first"
    );
}

#[tokio::test]
async fn referrers_on_sqlite() {
    check(None).await;
}

#[tokio::test]
async fn referrers_on_postgres() {
    let Some(admin) = berth_tests::postgres_admin_url() else {
        eprintln!("SKIPPED: set BERTH_TEST_POSTGRES_URL to run the PostgreSQL variant");
        return;
    };
    check(Some(berth_tests::fresh_postgres_database(&admin).await)).await;
}
