//! Fanning the outbox out: which endpoints get which event, in what form.

use std::collections::HashMap;
use std::sync::Arc;

use berth_config::NotificationEndpoint;
use berth_storage::events::queue::{Fanned, NewDelivery};
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
            let deliveries = plan(storage, endpoints, &row.event, &row.json, &mut repos).await?;
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
    let mut repos = HashMap::new();
    let mut fanned = Vec::with_capacity(events.len());
    let mut events = events.into_iter();
    while let Some(event) = events.next() {
        let json: Arc<str> = serde_json::to_string(&event)
            .expect("events serialize")
            .into();
        match plan(storage, endpoints, &event, &json, &mut repos).await {
            Ok(deliveries) => fanned.push(Fanned {
                seq: 0,
                event,
                deliveries,
            }),
            // Kept, all of them in order, for the outbox's fan-out to try again.
            Err(e) => {
                let all: Vec<Event> = fanned
                    .into_iter()
                    .map(|f| f.event)
                    .chain([event])
                    .chain(events)
                    .collect();
                storage.write_buffered_to_outbox(turn, &all).await?;
                return Err(e);
            }
        }
    }
    Ok(storage.fan_out_buffered(turn, &fanned).await?)
}

/// A repository's webhooks and what their payloads say about it.
struct RepoFacts {
    hooks: Vec<Webhook>,
    detail: Option<RepoDetail>,
    created_at: Option<i64>,
}

/// The deliveries of one event.
async fn plan(
    storage: &Storage,
    endpoints: &[NotificationEndpoint],
    event: &Event,
    json: &Arc<str>,
    repos: &mut HashMap<String, RepoFacts>,
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
    // Webhooks are about tags: a manifest pushed with one.
    let tag_push = event.action == "push"
        && event.target.tag.is_some()
        && event.target.media_type.as_deref() != Some(BLOB_MEDIA_TYPE);
    if tag_push {
        let name = &event.target.repository;
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
            repos.insert(name.clone(), facts);
        }
        let facts = &repos[name];
        if !facts.hooks.is_empty() {
            let base = base_of(event);
            for hook in &facts.hooks {
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
        }
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
    use berth_storage::events::{Origin, Target};

    /// A round does bounded work: with more waiting than it fans out, it says so and
    /// leaves the rest (the senders start meanwhile), and the next rounds take it.
    #[tokio::test]
    async fn a_round_fans_out_a_bounded_share_of_the_outbox() {
        let tmp = tempfile::tempdir().unwrap();
        let mut config = Config::in_dir(tmp.path());
        let endpoint = NotificationEndpoint::new("ci", "http://127.0.0.1:9/");
        config.notifications = vec![endpoint.clone()];
        let storage = Storage::open(&config).await.unwrap();
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
}
