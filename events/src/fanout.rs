//! Fanning the outbox out: which endpoints get which event, in what form.

use std::collections::HashMap;
use std::sync::Arc;

use berth_config::NotificationEndpoint;
use berth_storage::events::queue::{Fanned, NewDelivery, WEBHOOK_BACKLOG};
use berth_storage::events::webhooks::{endpoint_of, Webhook};
use berth_storage::events::{Event, BLOB_MEDIA_TYPE};
use berth_storage::explore::RepoDetail;
use berth_storage::Storage;

use crate::hub;
use crate::EventsError;

/// Events read from the outbox at a time.
const BATCH: u64 = 500;
/// Batches fanned out in one delivery round at most: a round also starts the senders,
/// which an outbox filling as fast as it is read must not keep waiting.
const ROUND_BATCHES: usize = 4;

/// The delivery key of a configured endpoint.
pub(crate) fn notification_key(name: &str) -> String {
    format!("notification:{name}")
}

/// Fans out the outbox, [`ROUND_BATCHES`] batches at most; returns whether more
/// may be waiting.
pub(crate) async fn fan_out(
    storage: &Storage,
    endpoints: &[NotificationEndpoint],
) -> Result<bool, EventsError> {
    for _ in 0..ROUND_BATCHES {
        let events = storage.peek_outbox(BATCH).await?;
        let last = (events.len() as u64) < BATCH;
        let mut fanned = Vec::with_capacity(events.len());
        // Webhooks and repository details, read once per repository and batch.
        let mut repos = HashMap::new();
        for row in events {
            let deliveries =
                plan(storage, endpoints, &row.event, &row.json, &mut repos, None).await?;
            fanned.push(Fanned {
                seq: row.seq,
                event: row.event,
                deliveries,
            });
        }
        storage.fan_out(&fanned).await?;
        if last {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Fans out the events buffered in memory (pulls, repeated pushes) without the outbox
/// in between where their order allows (see `Storage::fan_out_buffered`); returns the
/// events queued (once per endpoint).
pub(crate) async fn fan_out_buffered(
    storage: &Storage,
    endpoints: &[NotificationEndpoint],
) -> Result<usize, EventsError> {
    let (turn, events) = storage.take_buffered_events().await;
    if events.is_empty() {
        return Ok(0);
    }
    match plan_batch(storage, endpoints, events).await {
        Ok((fanned, trimmed)) => Ok(storage.fan_out_buffered(turn, &fanned, trimmed).await?),
        // Kept, all of them in order, for the outbox's fan-out to try again.
        Err((e, events)) => {
            storage.write_buffered_to_outbox(turn, &events).await?;
            Err(e)
        }
    }
}

/// The deliveries of a batch of buffered events, and how many webhook events were
/// left out as older than a backlog's worth of the batch (see [`webhook_cuts`]); on
/// a failure, the events back.
async fn plan_batch(
    storage: &Storage,
    endpoints: &[NotificationEndpoint],
    events: Vec<Event>,
) -> Result<(Vec<Fanned>, u64), (EventsError, Vec<Event>)> {
    let mut repos = HashMap::new();
    let cuts = match webhook_cuts(storage, &events, &mut repos).await {
        Ok(cuts) => cuts,
        Err(e) => return Err((e, events)),
    };
    let mut fanned = Vec::with_capacity(events.len());
    let mut events = events.into_iter().enumerate();
    while let Some((i, event)) = events.next() {
        let json: Arc<str> = serde_json::to_string(&event)
            .expect("events serialize")
            .into();
        let cuts = Some((&cuts, i));
        match plan(storage, endpoints, &event, &json, &mut repos, cuts).await {
            Ok(deliveries) => fanned.push(Fanned {
                seq: 0,
                event,
                deliveries,
            }),
            Err(e) => {
                let all = fanned
                    .into_iter()
                    .map(|f| f.event)
                    .chain([event])
                    .chain(events.map(|(_, e)| e))
                    .collect();
                return Err((e, all));
            }
        }
    }
    Ok((fanned, cuts.values().map(|c| c.skipped).sum()))
}

/// Where a webhook's share of a batch of events starts.
struct Cut {
    /// The index of the first event of the batch the webhook gets.
    from: usize,
    /// Its events before that.
    skipped: u64,
}

/// Per webhook with more than [`WEBHOOK_BACKLOG`] events in `events`, where its newest
/// that many start. A webhook's backlog keeps its newest that many (and the one its
/// sender may be sending, which none of these is yet): the older ones would go in the
/// commit that queued them, so their payloads are neither made nor stored (they count
/// as trimmed).
async fn webhook_cuts(
    storage: &Storage,
    events: &[Event],
    repos: &mut HashMap<String, RepoFacts>,
) -> Result<HashMap<i64, Cut>, EventsError> {
    let mut seen: HashMap<i64, u64> = HashMap::new();
    let mut cuts = HashMap::new();
    for (i, event) in events.iter().enumerate().rev() {
        if !is_tag_push(event) {
            continue;
        }
        for hook in &facts(storage, &event.target.repository, repos).await?.hooks {
            let n = seen.entry(hook.id).or_default();
            *n += 1;
            if *n == WEBHOOK_BACKLOG {
                cuts.insert(
                    hook.id,
                    Cut {
                        from: i,
                        skipped: 0,
                    },
                );
            }
        }
    }
    for (id, cut) in cuts.iter_mut() {
        cut.skipped = seen[id] - WEBHOOK_BACKLOG;
    }
    Ok(cuts)
}

/// A repository's webhooks and what their payloads say about it.
struct RepoFacts {
    hooks: Vec<Webhook>,
    detail: Option<RepoDetail>,
    created_at: Option<i64>,
}

/// A repository's webhooks and what their payloads say about it, read once per batch.
async fn facts<'a>(
    storage: &Storage,
    name: &str,
    repos: &'a mut HashMap<String, RepoFacts>,
) -> Result<&'a RepoFacts, EventsError> {
    if !repos.contains_key(name) {
        let hooks = storage.webhooks_for(name).await?;
        let (detail, created_at) = match hooks.is_empty() {
            true => (None, None),
            false => (
                storage.repository_detail(name).await?,
                storage.repository_created_at(name).await?,
            ),
        };
        let facts = RepoFacts {
            hooks,
            detail,
            created_at,
        };
        repos.insert(name.to_owned(), facts);
    }
    Ok(&repos[name])
}

/// Webhooks are about tags: a manifest pushed with one.
fn is_tag_push(event: &Event) -> bool {
    event.action == "push"
        && event.target.tag.is_some()
        && event.target.media_type.as_deref() != Some(BLOB_MEDIA_TYPE)
}

/// The deliveries of one event; with `cuts`, it is the `i`-th of a batch whose cuts
/// those are (webhooks it comes before the cut of get nothing).
async fn plan(
    storage: &Storage,
    endpoints: &[NotificationEndpoint],
    event: &Event,
    json: &Arc<str>,
    repos: &mut HashMap<String, RepoFacts>,
    cuts: Option<(&HashMap<i64, Cut>, usize)>,
) -> Result<Vec<NewDelivery>, EventsError> {
    if event.id.is_empty() {
        return Ok(Vec::new());
    }
    let mut deliveries = Vec::new();
    for endpoint in endpoints.iter().filter(|e| wants(e, event)) {
        deliveries.push(NewDelivery::Notification {
            endpoint: notification_key(&endpoint.name),
            event: json.clone(),
        });
    }
    if !is_tag_push(event) {
        return Ok(deliveries);
    }
    let facts = facts(storage, &event.target.repository, repos).await?;
    let cut_off = |id: i64| cuts.is_some_and(|(cuts, i)| cuts.get(&id).is_some_and(|c| i < c.from));
    let base = base_of(event);
    for hook in facts.hooks.iter().filter(|h| !cut_off(h.id)) {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let payload = hub::payload(
            event,
            facts.detail.as_ref(),
            facts.created_at,
            &base,
            &token,
        );
        deliveries.push(NewDelivery::Webhook {
            endpoint: endpoint_of(hook.id),
            body: payload,
            callback_token: token,
        });
    }
    Ok(deliveries)
}

/// Whether a configured endpoint takes `event` (Distribution's `ignore` rules).
fn wants(endpoint: &NotificationEndpoint, event: &Event) -> bool {
    let ignored_action = endpoint.ignore_actions.contains(&event.action);
    let ignored_type = event
        .target
        .media_type
        .as_deref()
        .is_some_and(|t| endpoint.ignore_media_types.iter().any(|i| i == t));
    !ignored_action && !ignored_type
}

/// The registry's address as the event's URLs give it (`[auth] external_url`, else
/// what its request addressed: see `origin::base_url`).
fn base_of(event: &Event) -> String {
    event
        .target
        .url
        .as_deref()
        .and_then(|u| u.split_once("/v2/"))
        .map(|(base, _)| base.to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_config::Config;
    use berth_storage::events::webhooks::NewWebhook;
    use berth_storage::events::{Action, Origin, Target};

    /// Storage in a temporary directory, configured with one notification endpoint.
    async fn with_one_endpoint() -> (tempfile::TempDir, Storage, NotificationEndpoint) {
        let tmp = tempfile::tempdir().unwrap();
        let mut config = Config::in_dir(tmp.path());
        let endpoint = NotificationEndpoint::new("ci", "http://127.0.0.1:9/");
        config.notifications = vec![endpoint.clone()];
        let storage = Storage::open(&config).await.unwrap();
        (tmp, storage, endpoint)
    }

    /// A round does bounded work: with more waiting than it fans out, it says so and
    /// leaves the rest (the senders start meanwhile), and the next rounds take it.
    #[tokio::test]
    async fn a_round_fans_out_a_bounded_share_of_the_outbox() {
        let (_tmp, storage, endpoint) = with_one_endpoint().await;
        let request = storage.for_request(Origin::default());
        let waiting = ROUND_BATCHES * BATCH as usize + 10;
        for i in 0..waiting {
            let target = Target::blob("acme/app", &format!("sha256:{i:064x}"), 1);
            request.record_pull_event(target).await.unwrap();
        }
        storage.flush_buffered_events().await.unwrap();
        let endpoints = [endpoint];
        assert!(fan_out(&storage, &endpoints).await.unwrap(), "more waits");
        assert_eq!(storage.peek_outbox(1000).await.unwrap().len(), 10);
        assert!(!fan_out(&storage, &endpoints).await.unwrap(), "all taken");
        assert!(storage.peek_outbox(1000).await.unwrap().is_empty());
        let stats = storage.queue_stats().await.unwrap();
        assert_eq!(stats[0].pending as usize, waiting);
    }

    /// A flush holding more tag pushes for a webhook than its backlog keeps makes and
    /// stores payloads for the newest that many only (the rest would be trimmed in the
    /// same commit), counts the rest as trimmed, and still gives every event to the
    /// notification endpoints and to a webhook that gets fewer.
    #[tokio::test]
    async fn a_flush_makes_no_payload_a_full_backlog_would_trim() {
        let (_tmp, storage, endpoint) = with_one_endpoint().await;
        let hook = |namespace: &str, repository: Option<&str>| NewWebhook {
            namespace: namespace.into(),
            repository: repository.map(str::to_owned),
            name: "deploy".into(),
            url: "http://127.0.0.1:9/hook".into(),
            secret: None,
            created_by: "admin".into(),
        };
        let busy = storage.add_webhook(hook("acme", None)).await.unwrap();
        let quiet = storage
            .add_webhook(hook("acme", Some("acme/quiet")))
            .await
            .unwrap();
        let extra = 25;
        let pushes = WEBHOOK_BACKLOG as usize + extra;
        let events: Vec<Event> = (0..pushes)
            .map(|i| {
                let repo = if i % 100 == 0 {
                    "acme/quiet"
                } else {
                    "acme/app"
                };
                let target = Target::manifest(repo, "sha256:0", "m", 1, Some("latest"));
                Origin::default().event(Action::Push, target)
            })
            .collect();
        let (fanned, trimmed) = plan_batch(&storage, &[endpoint], events.clone())
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        assert_eq!(trimmed, extra as u64);
        let (turn, _) = storage.take_buffered_events().await;
        let queued = storage
            .fan_out_buffered(turn, &fanned, trimmed)
            .await
            .unwrap();
        let quiet_pushes = pushes.div_ceil(100);
        assert_eq!(
            queued,
            pushes + WEBHOOK_BACKLOG as usize + quiet_pushes,
            "every event to the endpoint, a backlog's worth to the busy webhook"
        );
        assert_eq!(storage.trimmed_webhook_events(), extra as u64);
        let busy_ids: Vec<String> = storage
            .pending_deliveries(&endpoint_of(busy.id), 10_000, usize::MAX)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.event_id)
            .collect();
        let newest: Vec<String> = events[extra..].iter().map(|e| e.id.clone()).collect();
        assert_eq!(busy_ids, newest, "the newest, in order");
        let quiet_queued = storage
            .pending_deliveries(&endpoint_of(quiet.id), 10_000, usize::MAX)
            .await
            .unwrap();
        assert_eq!(quiet_queued.len(), quiet_pushes);
    }
}
