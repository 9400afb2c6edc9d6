//! Buffered events (pulls, repeated pushes) survive a write the database refuses: put
//! back in order, they are written by the next flush with the same ids. (SQLite commits
//! made to fail with `BERTH_TEST_FAIL_COMMITS`, debug builds only; its own test binary,
//! as the variable is read when connections open.)

use berth_config::{Config, NotificationEndpoint};
use berth_storage::events::queue::{Fanned, NewDelivery};
use berth_storage::events::{Event, Origin, Target};
use berth_storage::Storage;

async fn pulls(request: &Storage, n: usize) {
    for i in 0..n {
        let target = Target::blob("acme/app", &format!("sha256:{i:064x}"), 1);
        request.record_pull_event(target).await.unwrap();
    }
}

fn ids(events: &[Event]) -> Vec<String> {
    events.iter().map(|e| e.id.clone()).collect()
}

#[tokio::test]
#[cfg(debug_assertions)]
async fn buffered_events_survive_a_failed_write() {
    let tmp = tempfile::tempdir().unwrap();
    let failures = tmp.path().join("fail-commits");
    std::fs::write(&failures, "0").unwrap();
    std::env::set_var("BERTH_TEST_FAIL_COMMITS", &failures);
    let mut config = Config::in_dir(tmp.path());
    config.notifications = vec![NotificationEndpoint::new("ci", "http://127.0.0.1:9/")];
    let s = Storage::open(&config).await.unwrap();
    let request = s.for_request(Origin::default());

    // Into the outbox.
    pulls(&request, 5).await;
    std::fs::write(&failures, "1").unwrap();
    assert!(s.flush_buffered_events().await.is_err());
    let (turn, kept) = s.take_buffered_events().await;
    assert_eq!(kept.len(), 5, "put back");
    s.write_buffered_to_outbox(turn, &kept).await.unwrap();
    let stored: Vec<Event> = s
        .peek_outbox(10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .collect();
    assert_eq!(ids(&stored), ids(&kept));

    // Straight into deliveries (after what the outbox holds: written behind it).
    pulls(&request, 3).await;
    let (turn, events) = s.take_buffered_events().await;
    let fanned: Vec<Fanned> = events
        .iter()
        .map(|e| Fanned {
            seq: 0,
            event: e.clone(),
            deliveries: vec![NewDelivery::Notification {
                endpoint: "notification:ci".into(),
                event: serde_json::to_string(e).unwrap().into(),
            }],
        })
        .collect();
    std::fs::write(&failures, "1").unwrap();
    assert!(s.fan_out_buffered(turn, &fanned, 0).await.is_err());
    // Put back ahead of what came since.
    pulls(&request, 1).await;
    let (_turn, kept) = s.take_buffered_events().await;
    assert_eq!(kept.len(), 4);
    assert_eq!(ids(&kept[..3]), ids(&events));
    assert_eq!(s.dropped_buffered_events(), 0);
}
