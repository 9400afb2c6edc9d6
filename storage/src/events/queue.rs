//! Deliveries: the outbox fanned out into rows per endpoint, taken in order by the
//! one replica holding the endpoint's lease. A notification endpoint's row carries
//! a run of events (what one envelope would hold), a webhook's row one event: rows
//! are what a busy registry writes per event, so events that travel together are
//! stored together.

use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};

use std::collections::HashMap;
use std::sync::Arc;

use super::outbox::FlushTurn;
use super::Event;
use crate::entity::{event_delivery, event_lease, event_log, event_outbox, now_millis};
use crate::error::Result;
use crate::Storage;

/// A delivery's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i16)]
pub enum Status {
    Pending = 0,
    Delivered = 1,
}

impl Status {
    pub fn from_i16(v: i16) -> Status {
        match v {
            0 => Status::Pending,
            _ => Status::Delivered,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Delivered => "delivered",
        }
    }
}

/// Events in one notification delivery row at most (one envelope's worth).
pub const ENVELOPE_EVENTS: usize = 100;

/// A webhook's undelivered events kept at most (users add webhooks: what one of them
/// can make the registry keep stays bounded), besides the one being sent. The oldest
/// go as new ones are queued, in the same commit, so a webhook slower than its pushes
/// costs a bounded queue rather than one that grows until the next cleanup.
pub const WEBHOOK_BACKLOG: u64 = 1000;

/// A delivery to create when fanning out.
#[derive(Debug, Clone)]
pub enum NewDelivery {
    /// The event's JSON, for a notification endpoint: joined with the events next to
    /// it for the same endpoint into one row.
    Notification { endpoint: String, event: Arc<str> },
    /// A webhook's whole payload, a row of its own (its history lists it).
    Webhook {
        endpoint: String,
        body: String,
        callback_token: String,
    },
}

/// An event read from the outbox (its JSON as stored), with the deliveries it fans
/// out into.
#[derive(Debug, Clone)]
pub struct Fanned {
    pub seq: i64,
    pub event: Event,
    pub deliveries: Vec<NewDelivery>,
}

/// An outbox row: the event, and its JSON as written.
#[derive(Debug, Clone)]
pub struct Outboxed {
    pub seq: i64,
    pub event: Event,
    pub json: Arc<str>,
}

/// A delivery as the sender and the history pages see it.
#[derive(Debug, Clone, FromQueryResult)]
pub struct Delivery {
    pub id: i64,
    pub endpoint: String,
    pub event_id: String,
    pub action: String,
    pub repository: String,
    pub body: String,
    /// How many events `body` holds (a notification row's run; 1 for a webhook's).
    pub events: i32,
    /// The shared run `body` was read from, if any.
    pub log_id: Option<i64>,
    pub status: i16,
    pub attempts: i32,
    pub next_at: i64,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub response_ms: Option<i32>,
    pub response_excerpt: Option<String>,
    pub callback_state: Option<String>,
    pub callback_description: Option<String>,
}

/// How one attempt went.
#[derive(Debug, Clone, Default)]
pub struct Attempt {
    pub status: Option<u16>,
    pub error: Option<String>,
    pub response_ms: Option<u64>,
    pub response_excerpt: Option<String>,
}

/// An endpoint's queue, for `/metrics`.
#[derive(Debug, Clone, FromQueryResult)]
pub struct QueueStats {
    pub endpoint: String,
    pub pending: i64,
    pub oldest: Option<i64>,
}

impl Storage {
    /// The oldest `limit` events in the outbox, with their sequence numbers.
    pub async fn peek_outbox(&self, limit: u64) -> Result<Vec<Outboxed>> {
        let rows: Vec<event_outbox::Model> = event_outbox::Entity::find()
            .order_by_asc(event_outbox::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?;
        let mut events = Vec::with_capacity(rows.len());
        for row in rows {
            let event = match serde_json::from_str(&row.payload) {
                Ok(event) => event,
                // Written by this code, never expected: dropped, not retried forever.
                Err(e) => {
                    tracing::error!(seq = row.seq, error = %e, "unreadable event dropped");
                    // An empty event (no id) is fanned out to nobody.
                    Event::default()
                }
            };
            events.push(Outboxed {
                seq: row.seq,
                event,
                json: row.payload.into(),
            });
        }
        Ok(events)
    }

    /// Moves events from the outbox into their deliveries, in one commit. Each event
    /// is taken by whoever deletes its outbox row: one another replica fanned out
    /// meanwhile is skipped, so every event is fanned out exactly once. Returns the
    /// events queued (an event counted once per endpoint).
    pub async fn fan_out(&self, fanned: &[Fanned]) -> Result<usize> {
        if fanned.is_empty() {
            return Ok(0);
        }
        let txn = self.write().await?;
        let taken: std::collections::HashSet<i64> = event_outbox::Entity::delete_many()
            .filter(event_outbox::Column::Seq.is_in(fanned.iter().map(|f| f.seq)))
            .exec_with_returning(&*txn)
            .await?
            .into_iter()
            .map(|m| m.seq)
            .collect();
        let taken: Vec<&Fanned> = fanned.iter().filter(|f| taken.contains(&f.seq)).collect();
        let (queued, trimmed) = insert_deliveries(&*txn, &taken).await?;
        txn.commit().await?;
        self.events.webhooks_trimmed(trimmed);
        Ok(queued)
    }

    /// Fans buffered events (see [`Storage::take_buffered_events`]), planned by the
    /// caller, straight out into their deliveries, without the outbox in between: but
    /// only while the outbox is empty, so that nothing committed before them is sent
    /// after them; otherwise they are written to the outbox, behind it. `pre_trimmed`:
    /// webhook events the caller left out of `fanned`'s deliveries, older than a
    /// backlog's worth of them, counted as trimmed once these are queued (not when the events
    /// go to the outbox, whose fan-out plans them all again). Returns the events queued
    /// (once per endpoint).
    pub async fn fan_out_buffered(
        &self,
        turn: FlushTurn<'_>,
        fanned: &[Fanned],
        pre_trimmed: u64,
    ) -> Result<usize> {
        if fanned.is_empty() {
            return Ok(0);
        }
        // (Dropped before the turn, so put back while it is held.)
        let put_back = super::gate::PutBack::new(|| {
            self.events
                .restore(fanned.iter().map(|f| f.event.clone()).collect())
        });
        let written = async {
            let txn = self.write().await?;
            let waiting = event_outbox::Entity::find()
                .select_only()
                .column(event_outbox::Column::Seq)
                .limit(1)
                .into_tuple::<i64>()
                .one(&*txn)
                .await?;
            let (queued, trimmed) = match waiting {
                Some(_) => {
                    let events: Vec<Event> = fanned.iter().map(|f| f.event.clone()).collect();
                    super::record(&*txn, &events).await?;
                    (0, 0)
                }
                None => {
                    let (queued, trimmed) =
                        insert_deliveries(&*txn, &fanned.iter().collect::<Vec<_>>()).await?;
                    (queued, trimmed + pre_trimmed)
                }
            };
            txn.commit().await?;
            self.events.webhooks_trimmed(trimmed);
            Ok::<_, crate::error::StorageError>(queued)
        }
        .await;
        // On an error, put back by `put_back` for the next flush.
        let queued = written?;
        put_back.disarm();
        drop(turn);
        self.events_written();
        Ok(queued)
    }

    /// Endpoints with deliveries waiting.
    pub async fn endpoints_with_pending(&self) -> Result<Vec<String>> {
        Ok(event_delivery::Entity::find()
            .select_only()
            .column(event_delivery::Column::Endpoint)
            .filter(event_delivery::Column::Status.eq(Status::Pending as i16))
            .distinct()
            .into_tuple()
            .all(&self.db)
            .await?)
    }

    /// Takes or renews `endpoint`'s lease for `owner` until `ttl_ms` from now; false
    /// while another owner's lease runs.
    pub async fn lease_endpoint(&self, endpoint: &str, owner: &str, ttl_ms: i64) -> Result<bool> {
        let now = now_millis();
        let _turn = self.write_turn().await;
        event_lease::Entity::insert(event_lease::ActiveModel {
            endpoint: Set(endpoint.to_owned()),
            owner: Set(owner.to_owned()),
            until: Set(0),
        })
        .on_conflict_do_nothing()
        .exec_without_returning(&self.db)
        .await?;
        let taken = event_lease::Entity::update_many()
            .col_expr(event_lease::Column::Owner, Expr::value(owner))
            .col_expr(event_lease::Column::Until, Expr::value(now + ttl_ms))
            .filter(event_lease::Column::Endpoint.eq(endpoint))
            .filter(
                event_lease::Column::Owner
                    .eq(owner)
                    .or(event_lease::Column::Until.lt(now)),
            )
            .exec(&self.db)
            .await?;
        Ok(taken.rows_affected == 1)
    }

    /// The oldest pending deliveries of `endpoint`, in order: `rows` rows at most,
    /// and no more than `events` events unless the first holds more.
    pub async fn pending_deliveries(
        &self,
        endpoint: &str,
        rows: u64,
        events: usize,
    ) -> Result<Vec<Delivery>> {
        let mut batch: Vec<Delivery> = event_delivery::Entity::find()
            .filter(event_delivery::Column::Endpoint.eq(endpoint))
            .filter(event_delivery::Column::Status.eq(Status::Pending as i16))
            .order_by_asc(event_delivery::Column::Id)
            .limit(rows)
            .into_model()
            .all(&self.db)
            .await?;
        let mut total = 0;
        let keep = batch
            .iter()
            .take_while(|d| {
                total += held(d.events) as usize;
                total <= events
            })
            .count();
        batch.truncate(keep.max(1));
        let shared: Vec<i64> = batch.iter().filter_map(|d| d.log_id).collect();
        if !shared.is_empty() {
            let runs: HashMap<i64, String> = event_log::Entity::find()
                .select_only()
                .column(event_log::Column::Id)
                .column(event_log::Column::Body)
                .filter(event_log::Column::Id.is_in(shared))
                .into_tuple()
                .all(&self.db)
                .await?
                .into_iter()
                .collect();
            for d in &mut batch {
                if let Some(body) = d.log_id.and_then(|id| runs.get(&id)) {
                    d.body.clone_from(body);
                }
            }
            // A run released between the two reads went with its row (a backlog cap):
            // the row is gone too, and nothing of it is sent.
            batch.retain(|d| d.log_id.is_none() || !d.body.is_empty());
        }
        Ok(batch)
    }

    /// Records a successful attempt of the deliveries `ids`; without `keep` they are
    /// removed instead (a notification endpoint's: no one reads their history, and
    /// under load they would pile up).
    pub async fn deliveries_done(&self, ids: &[i64], attempt: &Attempt, keep: bool) -> Result<()> {
        if keep {
            return self
                .record_attempt(ids, attempt, Some(Status::Delivered), None)
                .await;
        }
        let txn = self.write().await?;
        let done = event_delivery::Entity::delete_many()
            .filter(event_delivery::Column::Id.is_in(ids.iter().copied()))
            .exec_with_returning(&*txn)
            .await?;
        release_runs(&*txn, done.iter().filter_map(|d| d.log_id)).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Records a failed attempt; the deliveries are tried again from `next_at`.
    pub async fn deliveries_failed(
        &self,
        ids: &[i64],
        attempt: &Attempt,
        next_at: i64,
    ) -> Result<()> {
        self.record_attempt(ids, attempt, None, Some(next_at)).await
    }

    async fn record_attempt(
        &self,
        ids: &[i64],
        attempt: &Attempt,
        status: Option<Status>,
        next_at: Option<i64>,
    ) -> Result<()> {
        let now = now_millis();
        let mut update = event_delivery::Entity::update_many()
            .col_expr(
                event_delivery::Column::Attempts,
                Expr::col(event_delivery::Column::Attempts).add(1),
            )
            .col_expr(
                event_delivery::Column::LastStatus,
                Expr::value(attempt.status.map(i32::from)),
            )
            .col_expr(
                event_delivery::Column::LastError,
                Expr::value(attempt.error.clone()),
            )
            .col_expr(
                event_delivery::Column::ResponseMs,
                Expr::value(
                    attempt
                        .response_ms
                        .map(|ms| i32::try_from(ms).unwrap_or(i32::MAX)),
                ),
            )
            .col_expr(
                event_delivery::Column::ResponseExcerpt,
                Expr::value(attempt.response_excerpt.clone()),
            );
        if let Some(status) = status {
            update = update
                .col_expr(event_delivery::Column::Status, Expr::value(status as i16))
                .col_expr(event_delivery::Column::DeliveredAt, Expr::value(now));
        }
        if let Some(next_at) = next_at {
            update = update.col_expr(event_delivery::Column::NextAt, Expr::value(next_at));
        }
        let _turn = self.write_turn().await;
        update
            .filter(event_delivery::Column::Id.is_in(ids.iter().copied()))
            // One finished meanwhile (sent by an instance whose lease ran out) stays so.
            .filter(event_delivery::Column::Status.eq(Status::Pending as i16))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Webhook events this instance trimmed past their backlog (the oldest of a
    /// webhook slower than its pushes).
    pub fn trimmed_webhook_events(&self) -> u64 {
        self.events
            .trimmed
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Deletes the oldest pending events of `endpoint` beyond `backlog`; returns how
    /// many went (they are counted, not kept). The row that crosses the limit keeps
    /// its newest events.
    pub async fn cap_backlog(&self, endpoint: &str, backlog: u64) -> Result<u64> {
        let pending = || {
            event_delivery::Entity::find()
                .filter(event_delivery::Column::Endpoint.eq(endpoint))
                .filter(event_delivery::Column::Status.eq(Status::Pending as i16))
        };
        let newest: Vec<(i64, i32)> = pending()
            .select_only()
            .column(event_delivery::Column::Id)
            .column(event_delivery::Column::Events)
            .order_by_desc(event_delivery::Column::Id)
            // Every row holds an event at least: the limit is crossed within these.
            .limit(backlog + 1)
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut kept = 0u64;
        let Some(cross) = newest.iter().position(|(_, events)| {
            kept += held(*events);
            kept > backlog
        }) else {
            return Ok(0);
        };
        let (cut, events) = newest[cross];
        let room = held(events) - (kept - backlog);
        let txn = self.write().await?;
        let older: Option<i64> = pending()
            .select_only()
            .column_as(event_delivery::Column::Events.sum(), "events")
            .filter(event_delivery::Column::Id.lt(cut))
            .into_tuple()
            .one(&*txn)
            .await?
            .flatten();
        let mut dropped = older.unwrap_or(0) as u64;
        let crossing = pending()
            .filter(event_delivery::Column::Id.eq(cut))
            .one(&*txn)
            .await?;
        let mut released = Vec::new();
        if let Some(row) = crossing {
            // (Another replica may have trimmed it meanwhile.)
            dropped += held(row.events).saturating_sub(room);
            let body = match row.log_id {
                Some(id) => {
                    released.push(id);
                    event_log::Entity::find_by_id(id)
                        .one(&*txn)
                        .await?
                        .map(|run| run.body)
                        .unwrap_or_default()
                }
                None => row.body,
            };
            let mut trimmed: Vec<Event> = match room {
                0 => Vec::new(),
                _ => serde_json::from_str(&format!("[{body}]")).unwrap_or_default(),
            };
            let from = trimmed.len().saturating_sub(room as usize);
            trimmed.drain(..from);
            if trimmed.is_empty() {
                event_delivery::Entity::delete_by_id(cut)
                    .exec(&*txn)
                    .await?;
            } else {
                let first = &trimmed[0];
                let body: Vec<String> = trimmed
                    .iter()
                    .map(|e| serde_json::to_string(e).expect("events serialize"))
                    .collect();
                event_delivery::ActiveModel {
                    id: Set(cut),
                    event_id: Set(first.id.clone()),
                    action: Set(first.action.clone()),
                    repository: Set(first.target.repository.clone()),
                    body: Set(body.join(",")),
                    events: Set(trimmed.len() as i32),
                    log_id: Set(None),
                    ..Default::default()
                }
                .update(&*txn)
                .await?;
            }
        }
        let older_runs: Vec<i64> = pending()
            .select_only()
            .column(event_delivery::Column::LogId)
            .filter(event_delivery::Column::Id.lt(cut))
            .filter(event_delivery::Column::LogId.is_not_null())
            .distinct()
            .into_tuple()
            .all(&*txn)
            .await?;
        event_delivery::Entity::delete_many()
            .filter(event_delivery::Column::Endpoint.eq(endpoint))
            .filter(event_delivery::Column::Status.eq(Status::Pending as i16))
            .filter(event_delivery::Column::Id.lt(cut))
            .exec(&*txn)
            .await?;
        released.extend(older_runs);
        release_runs(&*txn, released).await?;
        txn.commit().await?;
        Ok(dropped)
    }

    /// The id of `endpoint`'s `n`-th newest delivery (0: the newest) in `status` (or
    /// any): where a cut falls.
    async fn nth_newest(
        &self,
        endpoint: &str,
        status: Option<Status>,
        n: u64,
    ) -> Result<Option<i64>> {
        let mut q = event_delivery::Entity::find()
            .select_only()
            .column(event_delivery::Column::Id)
            .filter(event_delivery::Column::Endpoint.eq(endpoint));
        if let Some(status) = status {
            q = q.filter(event_delivery::Column::Status.eq(status as i16));
        }
        Ok(q.order_by_desc(event_delivery::Column::Id)
            .offset(n)
            .limit(1)
            .into_tuple()
            .one(&self.db)
            .await?)
    }

    /// Shared runs of events stored (see `event_log`): what is left of them once
    /// every delivery naming them is gone, for tests and diagnostics.
    pub async fn shared_event_runs(&self) -> Result<u64> {
        Ok(event_log::Entity::find().count(&self.db).await?)
    }

    /// Events in the outbox, not yet fanned out.
    pub async fn outbox_len(&self) -> Result<u64> {
        Ok(event_outbox::Entity::find().count(&self.db).await?)
    }

    /// Pending deliveries and the oldest one's creation time, per endpoint.
    pub async fn queue_stats(&self) -> Result<Vec<QueueStats>> {
        Ok(event_delivery::Entity::find()
            .select_only()
            .column(event_delivery::Column::Endpoint)
            .column_as(event_delivery::Column::Events.sum(), "pending")
            .column_as(event_delivery::Column::CreatedAt.min(), "oldest")
            .filter(event_delivery::Column::Status.eq(Status::Pending as i16))
            .group_by(event_delivery::Column::Endpoint)
            .into_model()
            .all(&self.db)
            .await?)
    }

    /// Keeps each endpoint's newest `keep_last` delivered deliveries (a webhook's
    /// history) and forgets older ones; returns how many went.
    pub async fn prune_deliveries(&self, keep_last: u64) -> Result<u64> {
        let delivered = Status::Delivered as i16;
        let endpoints: Vec<String> = event_delivery::Entity::find()
            .select_only()
            .column(event_delivery::Column::Endpoint)
            .filter(event_delivery::Column::Status.eq(delivered))
            .distinct()
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut removed = 0;
        for endpoint in endpoints {
            let Some(cut) = self
                .nth_newest(&endpoint, Some(Status::Delivered), keep_last)
                .await?
            else {
                continue;
            };
            let _turn = self.write_turn().await;
            removed += event_delivery::Entity::delete_many()
                .filter(event_delivery::Column::Endpoint.eq(endpoint.as_str()))
                .filter(event_delivery::Column::Status.eq(delivered))
                .filter(event_delivery::Column::Id.lte(cut))
                .exec(&self.db)
                .await?
                .rows_affected;
        }
        Ok(removed)
    }
}

/// Inserts the deliveries of `taken` (in order) in `txn`, then trims the webhooks they
/// went to to their [`WEBHOOK_BACKLOG`]; returns the events queued (once per
/// endpoint) and those trimmed.
async fn insert_deliveries(txn: &impl ConnectionTrait, taken: &[&Fanned]) -> Result<(usize, u64)> {
    let now = now_millis();
    let row = |endpoint: &str, first: &Event, body: String, events: usize, token| {
        event_delivery::ActiveModel {
            endpoint: Set(endpoint.to_owned()),
            event_id: Set(first.id.clone()),
            action: Set(first.action.clone()),
            repository: Set(first.target.repository.clone()),
            body: Set(body),
            events: Set(events as i32),
            status: Set(Status::Pending as i16),
            attempts: Set(0),
            next_at: Set(now),
            created_at: Set(now),
            callback_token: Set(token),
            log_id: Set(None),
            ..Default::default()
        }
    };
    let mut rows: Vec<event_delivery::ActiveModel> = Vec::new();
    let mut queued = 0;
    let mut webhooks = std::collections::BTreeSet::new();
    for f in taken {
        for d in &f.deliveries {
            if let NewDelivery::Webhook {
                endpoint,
                body,
                callback_token,
            } = d
            {
                queued += 1;
                webhooks.insert(endpoint.as_str());
                rows.push(row(
                    endpoint,
                    &f.event,
                    body.clone(),
                    1,
                    Some(callback_token.clone()),
                ));
            }
        }
    }
    // The events notification endpoints take, in runs of an envelope's worth: a run
    // an endpoint takes whole is stored once (`event_log`) and named by the row of
    // each endpoint taking it; an endpoint that takes part of it gets its part.
    let notified: Vec<(&Event, Vec<(&str, &str)>)> = taken
        .iter()
        .filter_map(|f| {
            let to: Vec<(&str, &str)> = f
                .deliveries
                .iter()
                .filter_map(|d| match d {
                    NewDelivery::Notification { endpoint, event } => {
                        Some((endpoint.as_str(), &**event))
                    }
                    NewDelivery::Webhook { .. } => None,
                })
                .collect();
            (!to.is_empty()).then_some((&f.event, to))
        })
        .collect();
    for run in notified.chunks(ENVELOPE_EVENTS) {
        // Per endpoint, in order of appearance: its events and the first one.
        let mut parts: Vec<(&str, &Event, Vec<&str>)> = Vec::new();
        for (event, to) in run {
            for (endpoint, json) in to {
                match parts.iter_mut().find(|p| p.0 == *endpoint) {
                    Some(part) => part.2.push(json),
                    None => parts.push((endpoint, event, vec![json])),
                }
            }
        }
        // Worth sharing when two endpoints or more take it whole.
        let whole = parts.iter().filter(|p| p.2.len() == run.len()).count();
        let mut shared = None;
        for (endpoint, first, events) in parts {
            queued += events.len();
            if events.len() < run.len() || whole < 2 {
                rows.push(row(endpoint, first, events.join(","), events.len(), None));
                continue;
            }
            let log_id = match shared {
                Some(id) => id,
                None => {
                    let id = event_log::Entity::insert(event_log::ActiveModel {
                        body: Set(events.join(",")),
                        events: Set(events.len() as i32),
                        created_at: Set(now),
                        ..Default::default()
                    })
                    .exec(txn)
                    .await?
                    .last_insert_id;
                    *shared.insert(id)
                }
            };
            let mut named = row(endpoint, first, String::new(), events.len(), None);
            named.log_id = Set(Some(log_id));
            rows.push(named);
        }
    }
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<_> = rows.by_ref().take(200).collect();
        event_delivery::Entity::insert_many(chunk)
            .exec_without_returning(txn)
            .await?;
    }
    let mut trimmed = 0;
    for endpoint in webhooks {
        trimmed += trim_webhook(txn, endpoint).await?;
    }
    Ok((queued, trimmed))
}

/// Deletes the webhook `endpoint`'s pending deliveries (an event each) older than its
/// newest [`WEBHOOK_BACKLOG`], but for the oldest: the one its sender may be sending
/// now, whose outcome and callback must find it. Returns how many went.
async fn trim_webhook(txn: &impl ConnectionTrait, endpoint: &str) -> Result<u64> {
    let pending = || {
        event_delivery::Entity::find()
            .filter(event_delivery::Column::Endpoint.eq(endpoint))
            .filter(event_delivery::Column::Status.eq(Status::Pending as i16))
    };
    let head: Option<i64> = pending()
        .select_only()
        .column(event_delivery::Column::Id)
        .order_by_asc(event_delivery::Column::Id)
        .limit(1)
        .into_tuple()
        .one(txn)
        .await?;
    let oldest_kept: Option<i64> = pending()
        .select_only()
        .column(event_delivery::Column::Id)
        .order_by_desc(event_delivery::Column::Id)
        .offset(WEBHOOK_BACKLOG - 1)
        .limit(1)
        .into_tuple()
        .one(txn)
        .await?;
    let (Some(head), Some(oldest_kept)) = (head, oldest_kept) else {
        return Ok(0);
    };
    let trimmed = event_delivery::Entity::delete_many()
        .filter(event_delivery::Column::Endpoint.eq(endpoint))
        .filter(event_delivery::Column::Status.eq(Status::Pending as i16))
        .filter(event_delivery::Column::Id.gt(head))
        .filter(event_delivery::Column::Id.lt(oldest_kept))
        .exec(txn)
        .await?;
    Ok(trimmed.rows_affected)
}

/// Removes those of the shared runs `ids` no delivery names any more.
async fn release_runs(db: &impl ConnectionTrait, ids: impl IntoIterator<Item = i64>) -> Result<()> {
    let ids: std::collections::BTreeSet<i64> = ids.into_iter().collect();
    if ids.is_empty() {
        return Ok(());
    }
    // Locked first (in order), then checked in a statement of its own: of two
    // endpoints' transactions sending the same run at once (PostgreSQL), the second
    // waits for the first and then sees its row gone, so one of them removes the run.
    let _locked: Vec<i64> = event_log::Entity::find()
        .select_only()
        .column(event_log::Column::Id)
        .filter(event_log::Column::Id.is_in(ids.iter().copied()))
        .order_by_asc(event_log::Column::Id)
        .lock_exclusive()
        .into_tuple()
        .all(db)
        .await?;
    let named = Query::select()
        .column(event_delivery::Column::LogId)
        .from(event_delivery::Entity)
        .and_where(event_delivery::Column::LogId.is_in(ids.iter().copied()))
        .to_owned();
    event_log::Entity::delete_many()
        .filter(event_log::Column::Id.is_in(ids))
        .filter(event_log::Column::Id.not_in_subquery(named))
        .exec(db)
        .await?;
    Ok(())
}

/// The events a row holds (every row holds one at least).
pub fn held(events: i32) -> u64 {
    Ord::max(events, 1) as u64
}

/// Inserts a copy of a delivery (same event id and body) at the end of its endpoint's
/// queue.
pub(crate) async fn requeue(
    db: &impl ConnectionTrait,
    original: &event_delivery::Model,
) -> Result<i64> {
    let now = now_millis();
    let inserted = event_delivery::Entity::insert(event_delivery::ActiveModel {
        endpoint: Set(original.endpoint.clone()),
        event_id: Set(original.event_id.clone()),
        action: Set(original.action.clone()),
        repository: Set(original.repository.clone()),
        body: Set(original.body.clone()),
        events: Set(original.events),
        log_id: Set(original.log_id),
        status: Set(Status::Pending as i16),
        attempts: Set(0),
        next_at: Set(now),
        created_at: Set(now),
        // The body names the original's callback URL: a verdict marks both.
        callback_token: Set(original.callback_token.clone()),
        ..Default::default()
    })
    .exec(db)
    .await?;
    Ok(inserted.last_insert_id)
}
