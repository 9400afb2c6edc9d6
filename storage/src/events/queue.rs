//! Deliveries: the outbox fanned out into one row per event and endpoint, taken in
//! order by the one replica holding the endpoint's lease.

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter,
    QueryOrder, QuerySelect,
};

use super::Event;
use crate::entity::{event_delivery, event_lease, event_outbox, now_millis};
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

/// A delivery to create when fanning out.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub endpoint: String,
    pub body: String,
    pub callback_token: Option<String>,
}

/// An event read from the outbox, with the deliveries it fans out into.
#[derive(Debug, Clone)]
pub struct Fanned {
    pub seq: i64,
    pub event: Event,
    pub deliveries: Vec<NewDelivery>,
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
    pub async fn peek_outbox(&self, limit: u64) -> Result<Vec<(i64, Event)>> {
        let rows: Vec<event_outbox::Model> = event_outbox::Entity::find()
            .order_by_asc(event_outbox::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?;
        let mut events = Vec::with_capacity(rows.len());
        for row in rows {
            match serde_json::from_str(&row.payload) {
                Ok(event) => events.push((row.seq, event)),
                // Written by this code, never expected: dropped, not retried forever.
                Err(e) => {
                    tracing::error!(seq = row.seq, error = %e, "unreadable event dropped");
                    // An empty event (no id) is fanned out to nobody.
                    events.push((row.seq, Event::default()));
                }
            }
        }
        Ok(events)
    }

    /// Moves events from the outbox into their deliveries, in one commit. Each event
    /// is taken by whoever deletes its outbox row: one another replica fanned out
    /// meanwhile is skipped, so every event is fanned out exactly once. Returns the
    /// deliveries created.
    pub async fn fan_out(&self, fanned: &[Fanned]) -> Result<usize> {
        if fanned.is_empty() {
            return Ok(0);
        }
        let now = now_millis();
        let txn = self.write().await?;
        let taken: std::collections::HashSet<i64> = event_outbox::Entity::delete_many()
            .filter(event_outbox::Column::Seq.is_in(fanned.iter().map(|f| f.seq)))
            .exec_with_returning(&*txn)
            .await?
            .into_iter()
            .map(|m| m.seq)
            .collect();
        let rows: Vec<event_delivery::ActiveModel> = fanned
            .iter()
            .filter(|f| taken.contains(&f.seq))
            .flat_map(|f| {
                f.deliveries
                    .iter()
                    .map(move |d| event_delivery::ActiveModel {
                        endpoint: Set(d.endpoint.clone()),
                        event_id: Set(f.event.id.clone()),
                        action: Set(f.event.action.clone()),
                        repository: Set(f.event.target.repository.clone()),
                        body: Set(d.body.clone()),
                        status: Set(Status::Pending as i16),
                        attempts: Set(0),
                        next_at: Set(now),
                        created_at: Set(now),
                        callback_token: Set(d.callback_token.clone()),
                        ..Default::default()
                    })
            })
            .collect();
        let count = rows.len();
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<_> = rows.by_ref().take(200).collect();
            event_delivery::Entity::insert_many(chunk)
                .exec_without_returning(&*txn)
                .await?;
        }
        txn.commit().await?;
        Ok(count)
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

    /// The oldest pending deliveries of `endpoint`, in order.
    pub async fn pending_deliveries(&self, endpoint: &str, limit: u64) -> Result<Vec<Delivery>> {
        Ok(event_delivery::Entity::find()
            .filter(event_delivery::Column::Endpoint.eq(endpoint))
            .filter(event_delivery::Column::Status.eq(Status::Pending as i16))
            .order_by_asc(event_delivery::Column::Id)
            .limit(limit)
            .into_model()
            .all(&self.db)
            .await?)
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
        let _turn = self.write_turn().await;
        event_delivery::Entity::delete_many()
            .filter(event_delivery::Column::Id.is_in(ids.iter().copied()))
            .exec(&self.db)
            .await?;
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

    /// Deletes the oldest pending deliveries of `endpoint` beyond `backlog`; returns
    /// how many (they are counted, not kept).
    pub async fn cap_backlog(&self, endpoint: &str, backlog: u64) -> Result<u64> {
        let Some(cut) = self
            .nth_newest(endpoint, Some(Status::Pending), backlog)
            .await?
        else {
            return Ok(0);
        };
        let _turn = self.write_turn().await;
        let dropped = event_delivery::Entity::delete_many()
            .filter(event_delivery::Column::Endpoint.eq(endpoint))
            .filter(event_delivery::Column::Status.eq(Status::Pending as i16))
            .filter(event_delivery::Column::Id.lte(cut))
            .exec(&self.db)
            .await?;
        Ok(dropped.rows_affected)
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

    /// Pending deliveries and the oldest one's creation time, per endpoint.
    pub async fn queue_stats(&self) -> Result<Vec<QueueStats>> {
        Ok(event_delivery::Entity::find()
            .select_only()
            .column(event_delivery::Column::Endpoint)
            .column_as(event_delivery::Column::Id.count(), "pending")
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
