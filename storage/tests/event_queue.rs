//! The delivery queue on a real database (SQLite, and PostgreSQL when configured):
//! notification endpoints' events are stored in runs of up to an envelope's worth, a
//! run every endpoint takes whole once for all of them, in order, each event fanned
//! out once; a capped backlog keeps exactly the newest events, cutting into the run
//! that crosses the limit; a run goes when the last delivery naming it does.

use berth_config::{Config, NotificationEndpoint};
use berth_storage::events::queue::{
    held, Attempt, Fanned, NewDelivery, ENVELOPE_EVENTS, WEBHOOK_BACKLOG,
};
use berth_storage::events::{Action, Event, Origin, Target};
use berth_storage::Storage;

/// Takes every event.
const ALL: &str = "notification:all";
/// Takes every event too.
const ALSO: &str = "notification:also";
/// Takes every other event (as an endpoint ignoring some would).
const SOME: &str = "notification:some";

/// Queues `n` pull events (for ALL and ALSO, the even ones for SOME); returns the
/// events' ids.
async fn queue(s: &Storage, n: usize) -> Vec<String> {
    let request = s.for_request(Origin::default());
    for i in 0..n {
        request
            .record_pull_event(Target::blob("acme/app", &format!("sha256:{i:064x}"), 1))
            .await
            .unwrap();
    }
    request.flush_buffered_events().await.unwrap();
    let rows = s.peek_outbox(10_000).await.unwrap();
    assert_eq!(rows.len(), n);
    let fanned: Vec<Fanned> = rows
        .iter()
        .enumerate()
        .map(|(i, row)| Fanned {
            seq: row.seq,
            event: row.event.clone(),
            deliveries: [ALL, ALSO, SOME]
                .iter()
                .filter(|e| **e != SOME || i % 2 == 0)
                .map(|e| NewDelivery::Notification {
                    endpoint: (*e).into(),
                    event: row.json.clone(),
                })
                .collect(),
        })
        .collect();
    assert_eq!(s.fan_out(&fanned).await.unwrap(), 2 * n + n.div_ceil(2));
    // Taken once: a second fan-out of the same rows (another replica's) adds nothing.
    assert_eq!(s.fan_out(&fanned).await.unwrap(), 0);
    assert!(s.peek_outbox(10).await.unwrap().is_empty());
    rows.into_iter().map(|r| r.event.id).collect()
}

/// Every pending event of `endpoint`, oldest first, and its rows' sizes and ids.
async fn pending(s: &Storage, endpoint: &str) -> (Vec<String>, Vec<u64>, Vec<i64>) {
    let rows = s
        .pending_deliveries(endpoint, 10_000, usize::MAX)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for row in &rows {
        let events: Vec<Event> = serde_json::from_str(&format!("[{}]", row.body)).unwrap();
        assert_eq!(events.len() as u64, held(row.events));
        assert_eq!(events[0].id, row.event_id);
        ids.extend(events.into_iter().map(|e| e.id));
    }
    let sizes = rows.iter().map(|r| held(r.events)).collect();
    (ids, sizes, rows.iter().map(|r| r.id).collect())
}

fn evens(ids: &[String]) -> Vec<String> {
    ids.iter().step_by(2).cloned().collect()
}

async fn check(database_url: Option<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = Config::in_dir(tmp.path());
    config.database_url = database_url;
    config.notifications = ["all", "also", "some"]
        .map(|name| NotificationEndpoint::new(name, "http://127.0.0.1:9/"))
        .to_vec();
    let s = Storage::open(&config).await.unwrap();

    let first = queue(&s, 250).await;
    let (ids, rows, _) = pending(&s, ALL).await;
    assert_eq!(ids, first, "in order, each once");
    assert_eq!(rows, vec![100, 100, 50], "runs of an envelope's worth");
    let (ids, rows, _) = pending(&s, SOME).await;
    assert_eq!(ids, evens(&first));
    assert_eq!(rows, vec![50, 50, 25]);
    // Stored once: the runs ALL and ALSO take whole; SOME's parts are its own.
    assert_eq!(s.shared_event_runs().await.unwrap(), 3);

    let mut all = first.clone();
    all.extend(queue(&s, 3).await);
    assert_eq!(pending(&s, ALL).await.0, all);
    assert_eq!(s.shared_event_runs().await.unwrap(), 4);
    let mut stats = s.queue_stats().await.unwrap();
    stats.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
    let figures: Vec<_> = stats
        .iter()
        .map(|q| (q.endpoint.as_str(), q.pending))
        .collect();
    assert_eq!(figures, [(ALL, 253), (ALSO, 253), (SOME, 127)]);

    // A sender takes whole rows up to an envelope's worth, the first one at least.
    let batch = s
        .pending_deliveries(ALL, 100, ENVELOPE_EVENTS)
        .await
        .unwrap();
    assert_eq!(batch.len(), 1);
    let batch = s.pending_deliveries(ALL, 100, 10).await.unwrap();
    assert_eq!(batch.len(), 1, "a row bigger than the limit still goes");

    // SOME's and ALSO's deliveries sent: the runs stay while ALL's rows name them.
    for endpoint in [SOME, ALSO] {
        let rows = pending(&s, endpoint).await.2;
        s.deliveries_done(&rows, &Attempt::default(), false)
            .await
            .unwrap();
        assert!(pending(&s, endpoint).await.0.is_empty());
    }
    assert_eq!(s.shared_event_runs().await.unwrap(), 4);

    // Capped at 120: the newest 120 stay, the run crossing the limit cut into (and
    // its rest no longer shared).
    assert_eq!(s.cap_backlog(ALL, 120).await.unwrap(), 133);
    let (ids, rows, _) = pending(&s, ALL).await;
    assert_eq!(ids, all[133..]);
    assert_eq!(rows, vec![67, 50, 3]);
    assert_eq!(s.shared_event_runs().await.unwrap(), 2);
    assert_eq!(s.cap_backlog(ALL, 120).await.unwrap(), 0);
    // On a row's boundary: whole rows go.
    assert_eq!(s.cap_backlog(ALL, 53).await.unwrap(), 67);
    assert_eq!(pending(&s, ALL).await.0, all[200..]);
    // Sent: nothing is left behind.
    let all_rows = pending(&s, ALL).await.2;
    s.deliveries_done(&all_rows, &Attempt::default(), false)
        .await
        .unwrap();
    assert!(s.queue_stats().await.unwrap().is_empty());
    assert_eq!(s.shared_event_runs().await.unwrap(), 0);
    // And caps down to nothing take the runs too.
    queue(&s, 30).await;
    assert_eq!(s.shared_event_runs().await.unwrap(), 1);
    assert_eq!(s.cap_backlog(ALL, 0).await.unwrap(), 30);
    assert_eq!(s.cap_backlog(SOME, 0).await.unwrap(), 15);
    assert_eq!(
        s.shared_event_runs().await.unwrap(),
        1,
        "ALSO still names it"
    );
    assert_eq!(s.cap_backlog(ALSO, 0).await.unwrap(), 30);
    assert_eq!(s.shared_event_runs().await.unwrap(), 0);

    // Buffered events go straight to their deliveries while the outbox is empty...
    let request = s.for_request(Origin::default());
    pulls(&request, 3).await;
    let (turn, events) = s.take_buffered_events().await;
    assert_eq!(
        s.fan_out_buffered(turn, &to_all(&events), 0).await.unwrap(),
        3
    );
    assert!(s.peek_outbox(10).await.unwrap().is_empty());
    // One endpoint alone: nothing to share, the row holds its events.
    assert_eq!(s.shared_event_runs().await.unwrap(), 0);
    let direct = ids_of(&events);
    assert_eq!(pending(&s, ALL).await.0, direct);
    // ...and behind it while it holds something committed before them.
    pulls(&request, 2).await;
    s.flush_buffered_events().await.unwrap();
    let committed: Vec<Event> = s
        .peek_outbox(10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .collect();
    assert_eq!(committed.len(), 2);
    pulls(&request, 2).await;
    let (turn, later) = s.take_buffered_events().await;
    // Webhook events a caller left out as trimmed are not counted when the events go
    // to the outbox instead (its fan-out plans them all again).
    assert_eq!(
        s.fan_out_buffered(turn, &to_all(&later), 5).await.unwrap(),
        0
    );
    assert_eq!(s.trimmed_webhook_events(), 0);
    let waiting: Vec<Event> = s
        .peek_outbox(10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .collect();
    assert_eq!(
        ids_of(&waiting),
        [ids_of(&committed), ids_of(&later)].concat()
    );
    assert_eq!(pending(&s, ALL).await.0, direct);

    // With no flush in this process (an admin command; this test so far), the request
    // that fills the buffer writes it itself, after 2 s: nothing is dropped.
    pulls(&request, 10_001).await;
    assert_eq!(s.peek_outbox(20_000).await.unwrap().len(), 4 + 10_000);
    assert_eq!(s.take_buffered_events().await.1.len(), 1);

    // With one (delivery's, woken at once), it waits until the flush takes it:
    // requests slow down to the flushes' pace, and nothing goes to the outbox.
    let flush = s.start_buffer_flush();
    let filling = tokio::spawn({
        let request = request.clone();
        async move { pulls(&request, 10_000).await }
    });
    flush.full().await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!filling.is_finished(), "the request waits for its flush");
    assert_eq!(s.take_buffered_events().await.1.len(), 10_000);
    tokio::time::timeout(std::time::Duration::from_secs(1), filling)
        .await
        .expect("released by the take")
        .unwrap();
    assert_eq!(s.peek_outbox(20_000).await.unwrap().len(), 4 + 10_000);

    // While the flush's writes fail, it does not wait: its events are kept.
    s.buffered_write_failed(std::time::Duration::from_secs(60));
    pulls(&request, 10_000).await;
    assert_eq!(s.take_buffered_events().await.1.len(), 10_000);
}

/// `n` pull events of the request `request` acts for.
async fn pulls(request: &Storage, n: usize) {
    for i in 0..n {
        let target = Target::blob("acme/b", &format!("sha256:{i:064x}"), 1);
        request.record_pull_event(target).await.unwrap();
    }
}

fn ids_of(events: &[Event]) -> Vec<String> {
    events.iter().map(|e| e.id.clone()).collect()
}

/// `events` planned for ALL only.
fn to_all(events: &[Event]) -> Vec<Fanned> {
    events
        .iter()
        .map(|e| Fanned {
            seq: 0,
            event: e.clone(),
            deliveries: vec![NewDelivery::Notification {
                endpoint: ALL.into(),
                event: serde_json::to_string(e).unwrap().into(),
            }],
        })
        .collect()
}

/// Two endpoints sending the same runs at the same moment: each run is removed by
/// whichever finishes second, none is left behind.
async fn check_shared_runs_released(database_url: Option<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = Config::in_dir(tmp.path());
    config.database_url = database_url;
    config.notifications = ["a", "b"]
        .map(|name| NotificationEndpoint::new(name, "http://127.0.0.1:9/"))
        .to_vec();
    let s = Storage::open(&config).await.unwrap();
    let request = s.for_request(Origin::default());
    pulls(&request, 2_000).await;
    let (turn, events) = s.take_buffered_events().await;
    let fanned: Vec<Fanned> = events
        .iter()
        .map(|e| {
            let json: std::sync::Arc<str> = serde_json::to_string(e).unwrap().into();
            Fanned {
                seq: 0,
                event: e.clone(),
                deliveries: ["notification:a", "notification:b"]
                    .map(|endpoint| NewDelivery::Notification {
                        endpoint: endpoint.into(),
                        event: json.clone(),
                    })
                    .to_vec(),
            }
        })
        .collect();
    assert_eq!(s.fan_out_buffered(turn, &fanned, 0).await.unwrap(), 4_000);
    assert_eq!(s.shared_event_runs().await.unwrap(), 20);
    let a = pending(&s, "notification:a").await.2;
    let b = pending(&s, "notification:b").await.2;
    let sent = Attempt::default();
    for (a, b) in a.chunks(1).zip(b.chunks(1)) {
        let (ra, rb) = tokio::join!(
            s.deliveries_done(a, &sent, false),
            s.deliveries_done(b, &sent, false)
        );
        ra.unwrap();
        rb.unwrap();
    }
    assert_eq!(s.shared_event_runs().await.unwrap(), 0);
}

/// `n` tag pushes, each to be delivered to `webhook` (a payload naming it).
fn to_webhook(webhook: &str, n: usize) -> Vec<Fanned> {
    (0..n)
        .map(|i| {
            let target = Target::manifest("acme/app", "sha256:0", "m", 1, Some("latest"));
            let event = Origin::default().event(Action::Push, target);
            Fanned {
                seq: 0,
                deliveries: vec![NewDelivery::Webhook {
                    endpoint: webhook.into(),
                    body: format!("{{\"n\":{i}}}"),
                    callback_token: event.id.clone(),
                }],
                event,
            }
        })
        .collect()
}

/// A webhook's pending deliveries' event ids, oldest first.
async fn webhook_pending(s: &Storage, webhook: &str) -> Vec<String> {
    let rows = s.pending_deliveries(webhook, 10_000, usize::MAX).await;
    rows.unwrap().into_iter().map(|d| d.event_id).collect()
}

/// A webhook slower than its pushes keeps its newest WEBHOOK_BACKLOG events and its
/// oldest, trimmed as new ones are queued (counted); other webhooks and what was
/// delivered stay.
async fn check_webhook_trim(database_url: Option<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = Config::in_dir(tmp.path());
    config.database_url = database_url;
    let s = Storage::open(&config).await.unwrap();
    let (slow, other) = ("webhook:1", "webhook:2");
    let backlog = WEBHOOK_BACKLOG as usize;

    let first = to_webhook(slow, backlog - 400);
    let (turn, _) = s.take_buffered_events().await;
    assert_eq!(
        s.fan_out_buffered(turn, &first, 0).await.unwrap(),
        backlog - 400
    );
    assert_eq!(s.trimmed_webhook_events(), 0);
    // The oldest is delivered: history, not backlog.
    let delivered = s.pending_deliveries(slow, 1, 1).await.unwrap()[0].id;
    s.deliveries_done(&[delivered], &Attempt::default(), true)
        .await
        .unwrap();

    let mut second = to_webhook(slow, 405);
    second.extend(to_webhook(other, 3));
    let (turn, _) = s.take_buffered_events().await;
    // (7 more the caller left out, as a batch holding more than a backlog's worth
    // leaves its oldest: counted with the 3 trimmed here.)
    assert_eq!(s.fan_out_buffered(turn, &second, 7).await.unwrap(), 408);
    // 599 pending and 405 more: the newest 1,000 stay, and the oldest (its sender may
    // be sending it); the 3 after it go.
    let kept: Vec<String> = first[1..2]
        .iter()
        .chain(&first[5..])
        .chain(&second[..405])
        .map(|f| f.event.id.clone())
        .collect();
    assert_eq!(
        webhook_pending(&s, slow).await,
        kept,
        "the newest, in order"
    );
    assert_eq!(s.trimmed_webhook_events(), 3 + 7);
    assert_eq!(webhook_pending(&s, other).await.len(), 3);
    let history = s.webhook_deliveries(1, 2 * WEBHOOK_BACKLOG).await.unwrap();
    assert_eq!(history.len(), backlog + 2);
    assert!(history.iter().any(|d| d.id == delivered && d.status == 1));
}

#[tokio::test]
async fn webhook_trimmed_on_sqlite() {
    check_webhook_trim(None).await;
}

#[tokio::test]
async fn webhook_trimmed_on_postgres() {
    let Some(admin) = berth_tests::postgres_admin_url() else {
        eprintln!("SKIPPED: set BERTH_TEST_POSTGRES_URL to run the PostgreSQL variant");
        return;
    };
    check_webhook_trim(Some(berth_tests::fresh_postgres_database(&admin).await)).await;
}

#[tokio::test]
async fn shared_runs_released_on_sqlite() {
    check_shared_runs_released(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_runs_released_on_postgres() {
    let Some(admin) = berth_tests::postgres_admin_url() else {
        eprintln!("SKIPPED: set BERTH_TEST_POSTGRES_URL to run the PostgreSQL variant");
        return;
    };
    check_shared_runs_released(Some(berth_tests::fresh_postgres_database(&admin).await)).await;
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

/// A write of buffered events given up midway (its request gone, the runtime stopping)
/// puts them back, for the next flush: no one else would write them.
#[tokio::test]
async fn buffered_events_written_midway_are_put_back() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = Config::in_dir(tmp.path());
    config.notifications = vec![NotificationEndpoint::new("all", "http://127.0.0.1:9/")];
    let s = Storage::open(&config).await.unwrap();
    pulls(&s.for_request(Origin::default()), 3).await;
    let (turn, events) = s.take_buffered_events().await;
    // Polled once (its BEGIN goes to SQLite's worker thread), then dropped.
    let write = s.write_buffered_to_outbox(turn, &events);
    assert!(futures::FutureExt::now_or_never(write).is_none());
    assert_eq!(ids_of(&s.take_buffered_events().await.1), ids_of(&events));
    assert!(s.peek_outbox(10).await.unwrap().is_empty());
}
