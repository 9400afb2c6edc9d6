//! Sending: one task per endpoint with deliveries waiting, holding the endpoint's
//! lease (so one replica sends an endpoint's events, in order), sending the oldest
//! first and retrying it with exponential back-off until it is accepted.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_config::{Config, NotificationEndpoint, WebhookSettings};
use berth_storage::events::queue::{held, Attempt, Delivery, ENVELOPE_EVENTS};
use berth_storage::events::ENVELOPE_MEDIA_TYPE;
use berth_storage::Storage;

use crate::fanout::{fan_out, fan_out_buffered, notification_key};
use crate::{metrics, signature, EventsError, SIGNATURE_HEADER};
use berth_addresses::PublicOnly;

/// How much of a response is read, and kept for the delivery history.
const RESPONSE_READ: usize = 64 * 1024;
const EXCERPT_CHARS: usize = 1000;
/// How often queues are looked at without a local wake-up (other replicas' events).
const POLL: Duration = Duration::from_secs(1);
/// How long a woken delivery round waits for more events to gather.
const GATHER: Duration = Duration::from_millis(100);
/// How long a flush of buffered events spends fanning out the outbox first at most.
const DRAIN_BUDGET: Duration = Duration::from_secs(1);
/// How long a flush of buffered events waits after a failed write.
const FLUSH_RETRY: Duration = Duration::from_secs(1);
/// Webhook retries: 1 s doubling up to 10 min.
const WEBHOOK_BACKOFF: Duration = Duration::from_secs(1);
const WEBHOOK_MAX_BACKOFF: Duration = Duration::from_secs(600);
/// Delivered webhook deliveries kept per webhook (its history); a notification
/// endpoint's are removed once delivered.
pub const KEEP_LAST: u64 = 20;

pub(crate) struct Deliverer {
    storage: Storage,
    owner: String,
    endpoints: Vec<NotificationEndpoint>,
    by_key: HashMap<String, NotificationEndpoint>,
    webhooks: WebhookSettings,
    notify_client: reqwest::Client,
    webhook_client: reqwest::Client,
    /// Held while fanning out the outbox: delivery rounds and the buffered events'
    /// flushes both do, and would otherwise plan the same events twice.
    fanning: tokio::sync::Mutex<()>,
    /// Endpoints this instance is sending to now.
    running: Mutex<HashSet<String>>,
    /// Endpoints whose lease this instance holds, and when it last renewed it.
    leased: Mutex<HashMap<String, Instant>>,
    /// Endpoints backing off after a failure, until when (milliseconds since the
    /// epoch): no task, no lease renewal, no query for them meanwhile.
    backing_off: Mutex<HashMap<String, i64>>,
}

impl Deliverer {
    pub fn new(storage: Storage, config: &Config, owner: String) -> Result<Deliverer, EventsError> {
        let notify_client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("berth-notifications/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(EventsError::Client)?;
        let mut webhook_client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("berth-webhooks/", env!("CARGO_PKG_VERSION")))
            .timeout(config.webhooks.timeout)
            // A proxy would resolve names itself, past the address check.
            .no_proxy();
        if !config.webhooks.allow_private {
            webhook_client = webhook_client.dns_resolver(Arc::new(PublicOnly));
        }
        let endpoints = config.notifications.clone();
        for e in &endpoints {
            metrics::register(&e.name);
        }
        metrics::register(metrics::WEBHOOKS);
        Ok(Deliverer {
            storage,
            owner,
            by_key: endpoints
                .iter()
                .map(|e| (notification_key(&e.name), e.clone()))
                .collect(),
            endpoints,
            webhooks: config.webhooks.clone(),
            notify_client,
            webhook_client: webhook_client.build().map_err(EventsError::Client)?,
            fanning: tokio::sync::Mutex::new(()),
            running: Mutex::new(HashSet::new()),
            leased: Mutex::new(HashMap::new()),
            backing_off: Mutex::new(HashMap::new()),
        })
    }

    /// Forever: fans the outbox out and starts a sender for every endpoint with
    /// deliveries waiting, when woken by a local commit or every [`POLL`].
    pub async fn run(self: Arc<Self>) {
        let wake = self.storage.events_notify();
        loop {
            let more = match self.round().await {
                Ok(more) => more,
                Err(e) => {
                    tracing::warn!(error = %e, "event delivery round failed; will retry");
                    false
                }
            };
            if more {
                // Behind: on with the outbox (the senders run meanwhile).
                tokio::task::yield_now().await;
                continue;
            }
            let _ = tokio::time::timeout(POLL, wake.notified()).await;
            // Events come in bursts under load: what commits meanwhile is fanned out
            // and sent together (fewer, larger transactions and envelopes), at the cost
            // of this much latency.
            tokio::time::sleep(GATHER).await;
        }
    }

    /// Fans out (part of) the outbox and starts the senders; returns whether more of
    /// the outbox may be waiting.
    async fn round(self: &Arc<Self>) -> Result<bool, EventsError> {
        let more = self.fan_out_outbox().await?;
        let now = chrono::Utc::now().timestamp_millis();
        self.backing_off
            .lock()
            .expect("lock")
            .retain(|_, until| *until > now);
        for endpoint in self.storage.endpoints_with_pending().await? {
            if self
                .backing_off
                .lock()
                .expect("lock")
                .contains_key(&endpoint)
            {
                continue;
            }
            let known = endpoint.starts_with("webhook:") || self.by_key.contains_key(&endpoint);
            // An endpoint another replica's config has (during a config change) is
            // left to it.
            if !known || !self.running.lock().expect("lock").insert(endpoint.clone()) {
                continue;
            }
            let this = self.clone();
            tokio::spawn(async move {
                if let Err(e) = this.send_all(&endpoint).await {
                    tracing::warn!(endpoint, error = %e, "delivering events failed; will retry");
                }
                this.running.lock().expect("lock").remove(&endpoint);
            });
        }
        Ok(more)
    }

    /// Fans out (part of) the outbox; returns whether more may be waiting.
    async fn fan_out_outbox(&self) -> Result<bool, EventsError> {
        let _fanning = self.fanning.lock().await;
        fan_out(&self.storage, &self.endpoints).await
    }

    fn lease_ms(&self) -> i64 {
        let longest = self
            .endpoints
            .iter()
            .map(|e| e.timeout)
            .chain([self.webhooks.timeout])
            .max()
            .unwrap_or_default();
        // Renewed every third of it while sending (one send takes at most a timeout,
        // well inside it); what a killed instance leaves runs out this long after its
        // last renewal.
        (longest * 2 + Duration::from_secs(5))
            .max(Duration::from_secs(15))
            .as_millis() as i64
    }

    /// Sends `endpoint`'s deliveries until its queue is empty, or another replica
    /// holds it.
    async fn send_all(&self, endpoint: &str) -> Result<(), EventsError> {
        let lease = self.lease_ms();
        // Renewed when a third of it has run (a write per batch would compete with
        // pushes for the database), and kept when the queue is empty: the next event
        // goes out without waiting for one.
        let renew_after = Duration::from_millis(lease as u64 / 3);
        loop {
            let renewed = self.leased.lock().expect("lock").get(endpoint).copied();
            if renewed.is_none_or(|at| at.elapsed() > renew_after) {
                let held = self
                    .storage
                    .lease_endpoint(endpoint, &self.owner, lease)
                    .await?;
                let mut leased = self.leased.lock().expect("lock");
                if !held {
                    leased.remove(endpoint);
                    return Ok(());
                }
                leased.insert(endpoint.to_owned(), Instant::now());
            }
            // A webhook's payloads go one by one; a notification endpoint's rows are
            // joined into envelopes of up to ENVELOPE_EVENTS events.
            let rows = match endpoint.starts_with("webhook:") {
                true => 1,
                false => ENVELOPE_EVENTS as u64,
            };
            let batch = self
                .storage
                .pending_deliveries(endpoint, rows, ENVELOPE_EVENTS)
                .await?;
            let Some(head) = batch.first() else {
                return Ok(());
            };
            if head.next_at > chrono::Utc::now().timestamp_millis() {
                // In order: nothing after the head goes before it. Looked at again when
                // it is due (by whichever replica then takes the lease).
                self.backing_off
                    .lock()
                    .expect("lock")
                    .insert(endpoint.to_owned(), head.next_at);
                return Ok(());
            }
            let attempts = head.attempts;
            let (attempt, ok) = self.send(endpoint, &batch).await?;
            let ids: Vec<i64> = batch.iter().map(|d| d.id).collect();
            if ok {
                let keep = !self.by_key.contains_key(endpoint);
                self.storage.deliveries_done(&ids, &attempt, keep).await?;
                let events = batch.iter().map(|d| held(d.events) as usize).sum();
                metrics::delivered(endpoint, events);
            } else {
                metrics::failed(endpoint);
                let delay = self.backoff(endpoint, attempts);
                tracing::info!(
                    endpoint,
                    error = attempt.error.as_deref().unwrap_or_default(),
                    status = attempt.status,
                    retry_in_ms = delay.as_millis() as u64,
                    "event delivery failed"
                );
                let next = chrono::Utc::now().timestamp_millis() + delay.as_millis() as i64;
                self.storage.deliveries_failed(&ids, &attempt, next).await?;
            }
        }
    }

    fn backoff(&self, endpoint: &str, attempts: i32) -> Duration {
        let (first, max) = match self.by_key.get(endpoint) {
            Some(e) => (e.backoff, e.max_backoff),
            None => (WEBHOOK_BACKOFF, WEBHOOK_MAX_BACKOFF),
        };
        first.saturating_mul(1u32 << attempts.clamp(0, 20)).min(max)
    }

    /// One attempt: the envelope of `batch` to a configured endpoint, or the payload
    /// of `batch[0]` to a webhook. `Ok((attempt, accepted))`.
    async fn send(
        &self,
        endpoint: &str,
        batch: &[Delivery],
    ) -> Result<(Attempt, bool), EventsError> {
        let request = match self.by_key.get(endpoint) {
            Some(config) => {
                let mut body = String::from("{\"events\":[");
                for (i, d) in batch.iter().enumerate() {
                    if i > 0 {
                        body.push(',');
                    }
                    body.push_str(&d.body);
                }
                body.push_str("]}");
                let mut request = self
                    .notify_client
                    .post(&config.url)
                    .timeout(config.timeout)
                    .header("Content-Type", ENVELOPE_MEDIA_TYPE);
                for (name, value) in &config.headers {
                    request = request.header(name, value);
                }
                request.body(body)
            }
            None => {
                let id = endpoint
                    .strip_prefix("webhook:")
                    .and_then(|id| id.parse().ok())
                    .unwrap_or(-1);
                let Some(hook) = self.storage.webhook(id).await? else {
                    // Removed meanwhile (which drops its deliveries).
                    return Ok((Attempt::default(), true));
                };
                let d = &batch[0];
                let mut request = self
                    .webhook_client
                    .post(&hook.url)
                    .header("Content-Type", "application/json")
                    .header("X-Berth-Event", d.action.as_str())
                    .header("X-Berth-Delivery", d.event_id.as_str());
                if let Some(secret) = &hook.secret {
                    request =
                        request.header(SIGNATURE_HEADER, signature(secret, d.body.as_bytes()));
                }
                // Checked again at send time: the URL may predate a stricter config.
                if let Err(e) = crate::check_webhook_url(&hook.url, self.webhooks.allow_private) {
                    return Ok((
                        Attempt {
                            error: Some(e.to_string()),
                            ..Attempt::default()
                        },
                        false,
                    ));
                }
                request.body(d.body.clone())
            }
        };
        let started = Instant::now();
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                return Ok((
                    Attempt {
                        error: Some(describe(&e)),
                        response_ms: Some(started.elapsed().as_millis() as u64),
                        ..Attempt::default()
                    },
                    false,
                ))
            }
        };
        let status = response.status();
        let excerpt = read_excerpt(response).await;
        let ok = status.is_success() || status.is_redirection();
        Ok((
            Attempt {
                status: Some(status.as_u16()),
                error: (!ok).then(|| format!("the endpoint answered {status}")),
                response_ms: Some(started.elapsed().as_millis() as u64),
                response_excerpt: excerpt,
            },
            ok,
        ))
    }

    /// Forever: fans out the events buffered in memory (pulls, repeated pushes) every
    /// 50 ms, and at once when the buffer is full (requests wait for that).
    pub async fn write_buffered(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(Duration::from_millis(50));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // (Requests that fill the buffer wait for this flush from now on, until it ends.)
        let flush = self.storage.start_buffer_flush();
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = flush.full() => {}
            }
            if !self.storage.has_buffered_events() {
                continue;
            }
            // Buffered events go straight to their deliveries only while the outbox is
            // empty (else behind it, through it: twice the work). A flush that fanned
            // out only a share of it would leave its own events to it whenever it held
            // more than that share, and so would every flush after: so it fans out what
            // it can in DRAIN_BUDGET (an outbox that other replicas keep full gets the
            // flush's events behind it then, once).
            let started = Instant::now();
            while started.elapsed() < DRAIN_BUDGET {
                match self.fan_out_outbox().await {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "fanning out the outbox failed; will retry");
                        break;
                    }
                }
            }
            if let Err(e) = fan_out_buffered(&self.storage, &self.endpoints).await {
                tracing::warn!(error = %e, "writing buffered events failed; will retry");
                // Put back, the buffer stays full: without a pause every request would
                // wake the flush to plan them all again, and wait for it meanwhile.
                self.storage.buffered_write_failed(2 * FLUSH_RETRY);
                tokio::time::sleep(FLUSH_RETRY).await;
            }
        }
    }

    /// Every few seconds: backlogs capped and queue figures for `/metrics`; webhooks'
    /// older history forgotten every minute.
    pub async fn housekeeping(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(Duration::from_secs(5));
        let mut last_prune = Instant::now();
        loop {
            ticker.tick().await;
            if let Err(e) = self.tidy(&mut last_prune).await {
                tracing::warn!(error = %e, "event queue housekeeping failed; will retry");
            }
        }
    }

    async fn tidy(&self, last_prune: &mut Instant) -> Result<(), EventsError> {
        metrics::buffer_dropped(self.storage.dropped_buffered_events());
        // Webhooks are trimmed as their events are queued; counted and said here.
        let trimmed = metrics::webhooks_trimmed(self.storage.trimmed_webhook_events());
        if trimmed > 0 {
            tracing::warn!(
                dropped = trimmed,
                "webhooks' backlogs were full: their oldest events were dropped"
            );
        }
        // (A failed count leaves the figure as it was; the rest goes on.)
        match self.storage.outbox_len().await {
            Ok(events) => metrics::outbox(events),
            Err(e) => tracing::warn!(error = %e, "counting the event outbox failed"),
        }
        let mut stats = self.storage.queue_stats().await?;
        let mut capped = false;
        for s in &stats {
            // Webhooks are not capped here: storage trims them as it queues their
            // events (sparing the one being sent).
            let Some(backlog) = self.by_key.get(&s.endpoint).map(|e| e.backlog) else {
                continue;
            };
            if s.pending as u64 > backlog {
                let dropped = self.storage.cap_backlog(&s.endpoint, backlog).await?;
                if dropped > 0 {
                    tracing::warn!(
                        endpoint = s.endpoint,
                        dropped,
                        "an endpoint's backlog was full: its oldest events were dropped"
                    );
                    metrics::dropped(&s.endpoint, dropped);
                    capped = true;
                }
            }
        }
        if capped {
            stats = self.storage.queue_stats().await?;
        }
        let now = chrono::Utc::now().timestamp_millis();
        let labels: Vec<String> = self
            .endpoints
            .iter()
            .map(|e| e.name.clone())
            .chain([metrics::WEBHOOKS.to_owned()])
            .collect();
        metrics::queues(
            stats.into_iter().map(|s| {
                let age = s.oldest.map_or(0, |t| (now - t).max(0) / 1000);
                (s.endpoint, s.pending, age)
            }),
            &labels,
        );
        if last_prune.elapsed() > Duration::from_secs(60) {
            *last_prune = Instant::now();
            self.storage.prune_deliveries(KEEP_LAST).await?;
        }
        Ok(())
    }
}

/// A failed request, said plainly (reqwest's own text nests its causes).
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The start of a response's body, read up to [`RESPONSE_READ`] bytes.
async fn read_excerpt(mut response: reqwest::Response) -> Option<String> {
    let mut body = Vec::new();
    while body.len() < RESPONSE_READ {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    if body.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&body);
    Some(text.chars().take(EXCERPT_CHARS).collect())
}
