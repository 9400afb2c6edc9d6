//! Writing events into the outbox, inside the transaction of the change they describe.

use sea_orm::sea_query::Query;
use sea_orm::ConnectionTrait;

use super::gate::PutBack;
use super::{Action, Event, Origin, Target};
use crate::db::WriteTxn;
use crate::entity::{event_outbox, now_millis};
use crate::error::Result;
use crate::Storage;

/// Inserts `events` with whatever `db` is (the change's transaction).
pub(crate) async fn record(db: &impl ConnectionTrait, events: &[Event]) -> Result<()> {
    let now = now_millis();
    for chunk in events.chunks(500) {
        let mut insert = Query::insert()
            .into_table(event_outbox::Entity)
            .columns([
                event_outbox::Column::Payload,
                event_outbox::Column::CreatedAt,
            ])
            .to_owned();
        for event in chunk {
            let payload = serde_json::to_string(event).expect("events serialize");
            insert.values_panic([payload.into(), now.into()]);
        }
        db.execute(&insert).await?;
    }
    Ok(())
}

/// How long a request that filled the event buffer waits for it to be taken when no
/// flush runs in this process, and when one does.
const ROOM_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
const FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// This instance's turn to write buffered events, held until they are written.
pub struct FlushTurn<'a> {
    _held: tokio::sync::MutexGuard<'a, ()>,
}

impl Storage {
    /// This storage acting for one request: the changes it makes are recorded with
    /// events naming `origin`. Cheap (a clone of shared handles).
    pub fn for_request(&self, origin: Origin) -> Storage {
        Storage {
            origin: Some(std::sync::Arc::new(origin)),
            ..self.clone()
        }
    }

    /// The events of one change for `repo`, if anyone wants them: none without an
    /// origin (changes the registry makes itself, such as a proxy's cache filling) or
    /// without a consumer.
    pub(crate) async fn events_for(
        &self,
        action: Action,
        repo: &str,
        targets: impl IntoIterator<Item = Target>,
    ) -> Result<Vec<Event>> {
        let Some(origin) = self.origin.as_deref() else {
            return Ok(Vec::new());
        };
        if !self.events.wants(&self.db, action, repo).await? {
            return Ok(Vec::new());
        }
        Ok(targets
            .into_iter()
            .map(|t| origin.event(action, t))
            .collect())
    }

    /// [`Storage::events_for`] for a change about to be committed: what this
    /// instance buffered before it (pulls, repeated pushes) is written first, so it
    /// goes out first.
    pub(crate) async fn events_for_change(
        &self,
        action: Action,
        repo: &str,
        targets: impl IntoIterator<Item = Target>,
    ) -> Result<Vec<Event>> {
        let events = self.events_for(action, repo, targets).await?;
        if !events.is_empty() {
            self.flush_buffered_events().await?;
        }
        Ok(events)
    }

    /// Whether pull events are wanted (checked before building them on the pull path).
    pub fn wants_pull_events(&self) -> bool {
        self.events.wants_pulls()
    }

    /// Buffers a pull's event (of the request this storage acts for).
    pub async fn record_pull_event(&self, target: Target) -> Result<()> {
        if let Some(origin) = self.origin.as_deref().filter(|_| self.events.wants_pulls()) {
            self.buffer_events(vec![origin.event(Action::Pull, target)])
                .await?;
        }
        Ok(())
    }

    /// Buffers the events of a request that changed nothing (a manifest pushed again
    /// as it was): no change to commit them with, and a durable write per such
    /// request would make repeated pushes, which CI sends all the time, cost a commit
    /// each.
    /// When that fills the buffer, the request waits until its flush takes it, so
    /// requests slow down to the pace delivery's fan-out keeps, none is dropped, and
    /// the outbox does not fill with what fan-out has yet to catch up with. (Taken is
    /// not written: a write that fails puts them back, as for any buffered event; and
    /// while the flush's writes fail, requests do not wait for it.) With no flush in
    /// this process (an admin command, a test), the request writes the buffer itself
    /// after [`ROOM_WAIT`]; with one, only after [`FLUSH_WAIT`] (a flush that stuck).
    pub(crate) async fn buffer_events(&self, events: Vec<Event>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let Some(takes) = self.events.buffer(events) else {
            return Ok(());
        };
        if self.events.flush_failing() {
            return Ok(());
        }
        let wait = match self.events.has_flusher() {
            true => FLUSH_WAIT,
            false => ROOM_WAIT,
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let taken = self.events.taken.notified();
            tokio::pin!(taken);
            // Listening before looking, so a take in between is not missed.
            taken.as_mut().enable();
            if self.events.takes() > takes {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, taken).await.is_err() {
                break;
            }
        }
        self.flush_buffered_events().await
    }

    /// Writes the buffered events into the outbox (with the pull counts, and before
    /// any change this instance makes, so they keep their order).
    pub async fn flush_buffered_events(&self) -> Result<()> {
        let (turn, events) = self.take_buffered_events().await;
        self.write_buffered_to_outbox(turn, &events).await
    }

    /// Writes buffered events taken with `_turn` into the outbox; put back when that
    /// fails.
    pub async fn write_buffered_to_outbox(
        &self,
        _turn: FlushTurn<'_>,
        events: &[Event],
    ) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        // (Dropped before the turn, so put back while it is held.)
        let put_back = PutBack::new(|| self.events.restore(events.to_vec()));
        let written = async {
            let txn = self.write().await?;
            self.commit_with_events(txn, events).await
        }
        .await;
        if written.is_ok() {
            put_back.disarm();
        }
        written
    }

    /// Whether any events are buffered.
    pub fn has_buffered_events(&self) -> bool {
        self.events.has_buffered()
    }

    /// Buffered events dropped because the database refused them while 100,000
    /// waited.
    pub fn dropped_buffered_events(&self) -> u64 {
        self.events
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The buffered events, with this instance's turn to write them (changes wait for
    /// it): for `berth-events` to fan them out directly (see
    /// [`Storage::fan_out_buffered`]).
    pub async fn take_buffered_events(&self) -> (FlushTurn<'_>, Vec<Event>) {
        let turn = self.events.flush.lock().await;
        (FlushTurn { _held: turn }, self.events.take_buffered())
    }

    /// Wakes this instance's delivery: events were committed.
    pub(crate) fn events_written(&self) {
        self.events.written.notify_one();
    }

    /// Commits `txn` with `events` written in it (the change they describe), then
    /// wakes this instance's delivery if there were any.
    pub(crate) async fn commit_with_events(&self, txn: WriteTxn, events: &[Event]) -> Result<()> {
        record(&*txn, events).await?;
        txn.commit().await?;
        if !events.is_empty() {
            self.events_written();
        }
        Ok(())
    }

    /// What this instance's delivery waits on between rounds.
    pub fn events_notify(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.events.written.clone()
    }

    /// Says a flush of buffered events runs in this process until the returned value
    /// is dropped; it tells the flush when the buffer is full.
    pub fn start_buffer_flush(&self) -> super::BufferFlush {
        super::BufferFlush::start(self.events.clone())
    }

    /// The flush's write failed: for `pause`, requests that fill the buffer do not wait
    /// for it (their events are kept, as the failed write's are).
    pub fn buffered_write_failed(&self, pause: std::time::Duration) {
        self.events.flush_failed(pause);
    }
}
