//! The delivery queue on a real database (SQLite, and PostgreSQL when configured): a
//! notification endpoint's events are stored in runs of up to an envelope's worth, in
//! order, each fanned out once; a capped backlog keeps exactly the newest events,
//! cutting into the run that crosses the limit.

use berth_config::{Config, NotificationEndpoint};
use berth_storage::events::queue::{held, Fanned, NewDelivery, ENVELOPE_EVENTS};
use berth_storage::events::{Event, Origin, Target};
use berth_storage::Storage;

const ENDPOINT: &str = "notification:ci";

fn endpoint() -> NotificationEndpoint {
    NotificationEndpoint {
        name: "ci".into(),
        url: "http://127.0.0.1:9/".into(),
        headers: Vec::new(),
        timeout: std::time::Duration::from_secs(1),
        backoff: std::time::Duration::from_secs(1),
        max_backoff: std::time::Duration::from_secs(1),
        ignore_media_types: Vec::new(),
        ignore_actions: Vec::new(),
        backlog: 1000,
    }
}

/// Queues `n` pull events of `repo` for the endpoint; returns the events' ids.
async fn queue(s: &Storage, repo: &str, n: usize) -> Vec<String> {
    let request = s.for_request(Origin::default());
    for i in 0..n {
        request.record_pull_event(Target::blob(repo, &format!("sha256:{i:064x}"), 1));
    }
    request.flush_buffered_events().await.unwrap();
    let rows = s.peek_outbox(10_000).await.unwrap();
    assert_eq!(rows.len(), n);
    let fanned: Vec<Fanned> = rows
        .iter()
        .map(|row| Fanned {
            seq: row.seq,
            event: row.event.clone(),
            deliveries: vec![NewDelivery::Notification {
                endpoint: ENDPOINT.into(),
                event: row.json.clone(),
            }],
        })
        .collect();
    assert_eq!(s.fan_out(&fanned).await.unwrap(), n);
    // Taken once: a second fan-out of the same rows (another replica's) adds nothing.
    assert_eq!(s.fan_out(&fanned).await.unwrap(), 0);
    assert!(s.peek_outbox(10).await.unwrap().is_empty());
    rows.into_iter().map(|r| r.event.id).collect()
}

/// Every pending event of the endpoint, oldest first, with the row sizes.
async fn pending(s: &Storage) -> (Vec<String>, Vec<u64>) {
    let rows = s
        .pending_deliveries(ENDPOINT, 10_000, usize::MAX)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for row in &rows {
        let events: Vec<Event> = serde_json::from_str(&format!("[{}]", row.body)).unwrap();
        assert_eq!(events.len() as u64, held(row.events));
        assert_eq!(events[0].id, row.event_id);
        ids.extend(events.into_iter().map(|e| e.id));
    }
    (ids, rows.iter().map(|r| held(r.events)).collect())
}

async fn check(database_url: Option<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = Config::in_dir(tmp.path());
    config.database_url = database_url;
    config.notifications = vec![endpoint()];
    let s = Storage::open(&config).await.unwrap();

    let mut all = queue(&s, "acme/app", 250).await;
    let (ids, rows) = pending(&s).await;
    assert_eq!(ids, all, "in order, each once");
    assert_eq!(rows, vec![100, 100, 50], "runs of an envelope's worth");
    all.extend(queue(&s, "acme/app", 3).await);
    assert_eq!(pending(&s).await.0, all);
    let stats = s.queue_stats().await.unwrap();
    assert_eq!(stats.len(), 1);
    assert_eq!(
        (stats[0].endpoint.as_str(), stats[0].pending),
        (ENDPOINT, 253)
    );

    // A sender takes whole rows up to an envelope's worth, the first one at least.
    let batch = s
        .pending_deliveries(ENDPOINT, 100, ENVELOPE_EVENTS)
        .await
        .unwrap();
    assert_eq!(batch.len(), 1);
    let batch = s.pending_deliveries(ENDPOINT, 100, 10).await.unwrap();
    assert_eq!(batch.len(), 1, "a row bigger than the limit still goes");

    // Capped at 120: the newest 120 stay, the run crossing the limit cut into.
    assert_eq!(s.cap_backlog(ENDPOINT, 120).await.unwrap(), 133);
    let (ids, rows) = pending(&s).await;
    assert_eq!(ids, all[133..]);
    assert_eq!(rows, vec![67, 50, 3]);
    assert_eq!(s.cap_backlog(ENDPOINT, 120).await.unwrap(), 0);
    // On a row's boundary: whole rows go.
    assert_eq!(s.cap_backlog(ENDPOINT, 53).await.unwrap(), 67);
    assert_eq!(pending(&s).await.0, all[200..]);
    assert_eq!(s.cap_backlog(ENDPOINT, 0).await.unwrap(), 53);
    assert!(pending(&s).await.0.is_empty());
    assert!(s.queue_stats().await.unwrap().is_empty());
}

#[tokio::test]
async fn event_queue_on_sqlite() {
    check(None).await;
}

#[tokio::test]
async fn event_queue_on_postgres() {
    let Some(admin) = berth_tests::postgres_admin_url() else {
        eprintln!("SKIPPED: set BERTH_TEST_POSTGRES_URL to run the PostgreSQL variant");
        return;
    };
    check(Some(berth_tests::fresh_postgres_database(&admin).await)).await;
}
