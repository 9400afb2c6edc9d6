//! Whether an event is wanted at all: events are written only when an endpoint would
//! receive them (a configured notification endpoint that does not ignore the action,
//! or a webhook on the repository's namespace), so a registry without consumers
//! writes nothing extra.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_config::NotificationEndpoint;
use sea_orm::{DatabaseConnection, EntityTrait, QuerySelect};

use super::{namespace_of, Action, Event};
use crate::entity::webhook;
use crate::error::Result;

/// How long another replica's new webhook may go unseen here.
const WEBHOOKS_FRESH: Duration = Duration::from_secs(2);
/// Events of requests that changed nothing held in memory between flushes; beyond
/// it a request waits for them to be taken (backpressure, never a drop).
const MAX_BUFFERED: usize = 10_000;
/// Events kept in memory while the database refuses to take them (put back after a
/// failed write); beyond it the oldest are dropped (counted).
const MAX_KEPT: usize = 100_000;

pub(crate) struct EventGate {
    /// Per action (push, pull, delete, mount): does any notification endpoint want it?
    notified: [bool; 4],
    /// Namespaces with webhooks, and when they were read.
    webhooks: Mutex<Option<(Instant, Arc<HashSet<String>>)>>,
    /// Events of requests that changed nothing (pulls, a manifest pushed again): no
    /// transaction to join, so written in batches (see `outbox`).
    buffered: Mutex<Vec<Event>>,
    /// Held from taking buffered events until they are written: a change waits for it
    /// (see `outbox`), so events buffered before it are never written after it.
    pub flush: tokio::sync::Mutex<()>,
    /// Events dropped past [`MAX_KEPT`].
    pub dropped: std::sync::atomic::AtomicU64,
    /// Webhook events trimmed past their backlog by this instance (see
    /// `queue::WEBHOOK_BACKLOG`).
    pub trimmed: std::sync::atomic::AtomicU64,
    /// Woken when events were committed, so this instance's delivery starts at once.
    pub written: Arc<tokio::sync::Notify>,
    /// Woken when the buffer is full, so its flush starts at once.
    full: tokio::sync::Notify,
    /// Wakes the requests waiting for room in the buffer when it is taken.
    pub taken: tokio::sync::Notify,
    /// How many times the buffer was taken (under its lock).
    takes: std::sync::atomic::AtomicU64,
    /// Whether a [`BufferFlush`] runs in this process (delivery's).
    flusher: AtomicBool,
    /// Until when (milliseconds since the epoch) the flush's writes are failing.
    failing_until: AtomicI64,
}

/// Runs its action when dropped, unless disarmed: events taken from the buffer are put
/// back when their write fails, and also when the future writing them is dropped
/// midway (its request given up, the runtime stopping), as no one else will write them.
pub(crate) struct PutBack<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> PutBack<F> {
    pub fn new(put_back: F) -> PutBack<F> {
        PutBack(Some(put_back))
    }

    /// The events are written: nothing to put back.
    pub fn disarm(mut self) {
        self.0 = None;
    }
}

impl<F: FnOnce()> Drop for PutBack<F> {
    fn drop(&mut self) {
        if let Some(put_back) = self.0.take() {
            put_back();
        }
    }
}

fn index(action: Action) -> usize {
    match action {
        Action::Push => 0,
        Action::Pull => 1,
        Action::Delete => 2,
        Action::Mount => 3,
    }
}

impl EventGate {
    pub fn new(endpoints: &[NotificationEndpoint]) -> EventGate {
        let mut notified = [false; 4];
        for action in [Action::Push, Action::Pull, Action::Delete, Action::Mount] {
            notified[index(action)] = endpoints
                .iter()
                .any(|e| !e.ignore_actions.iter().any(|a| a == action.as_str()));
        }
        EventGate {
            notified,
            webhooks: Mutex::new(None),
            buffered: Mutex::new(Vec::new()),
            flush: tokio::sync::Mutex::new(()),
            dropped: Default::default(),
            trimmed: Default::default(),
            written: Arc::new(tokio::sync::Notify::new()),
            full: tokio::sync::Notify::new(),
            taken: tokio::sync::Notify::new(),
            takes: Default::default(),
            flusher: AtomicBool::new(false),
            failing_until: AtomicI64::new(0),
        }
    }

    /// Pulls are wanted by notification endpoints only (webhooks are about pushes).
    pub fn wants_pulls(&self) -> bool {
        self.notified[index(Action::Pull)]
    }

    pub async fn wants(&self, db: &DatabaseConnection, action: Action, repo: &str) -> Result<bool> {
        if self.notified[index(action)] {
            return Ok(true);
        }
        if action != Action::Push {
            return Ok(false);
        }
        Ok(self
            .webhook_namespaces(db)
            .await?
            .contains(namespace_of(repo)))
    }

    async fn webhook_namespaces(&self, db: &DatabaseConnection) -> Result<Arc<HashSet<String>>> {
        if let Some((read, set)) = &*self.webhooks.lock().expect("webhooks lock") {
            if read.elapsed() < WEBHOOKS_FRESH {
                return Ok(set.clone());
            }
        }
        let names: Vec<String> = webhook::Entity::find()
            .select_only()
            .column(webhook::Column::Namespace)
            .distinct()
            .into_tuple()
            .all(db)
            .await?;
        let set = Arc::new(names.into_iter().collect::<HashSet<_>>());
        *self.webhooks.lock().expect("webhooks lock") = Some((Instant::now(), set.clone()));
        Ok(set)
    }

    /// Forgets the namespaces read (a webhook was added or removed here).
    pub fn webhooks_changed(&self) {
        *self.webhooks.lock().expect("webhooks lock") = None;
    }

    /// Buffers `events`. When that fills the buffer, its flush is woken and the
    /// count of takes so far is returned: the caller waits for the next one. (Past
    /// [`MAX_KEPT`], reached only while writes fail and requests do not wait, the
    /// oldest are dropped, counted.)
    pub fn buffer(&self, events: impl IntoIterator<Item = Event>) -> Option<u64> {
        let mut buffered = self.buffered.lock().expect("buffered events lock");
        buffered.extend(events);
        self.keep_newest(&mut buffered);
        if buffered.len() < MAX_BUFFERED {
            return None;
        }
        self.full.notify_one();
        Some(self.takes.load(Ordering::Relaxed))
    }

    /// Whether a [`BufferFlush`] runs.
    pub fn has_flusher(&self) -> bool {
        self.flusher.load(Ordering::Relaxed)
    }

    /// The flush's write failed: for `pause`, requests filling the buffer do not wait.
    pub fn flush_failed(&self, pause: Duration) {
        let until = crate::entity::now_millis() + pause.as_millis() as i64;
        self.failing_until.store(until, Ordering::Relaxed);
    }

    pub fn flush_failing(&self) -> bool {
        self.failing_until.load(Ordering::Relaxed) > crate::entity::now_millis()
    }

    /// How many times the buffer was taken.
    pub fn takes(&self) -> u64 {
        let _buffered = self.buffered.lock().expect("buffered events lock");
        self.takes.load(Ordering::Relaxed)
    }

    pub fn webhooks_trimmed(&self, n: u64) {
        self.trimmed.fetch_add(n, Ordering::Relaxed);
    }

    pub fn has_buffered(&self) -> bool {
        !self
            .buffered
            .lock()
            .expect("buffered events lock")
            .is_empty()
    }

    pub fn take_buffered(&self) -> Vec<Event> {
        let mut buffered = self.buffered.lock().expect("buffered events lock");
        self.takes.fetch_add(1, Ordering::Relaxed);
        let taken = std::mem::take(&mut *buffered);
        drop(buffered);
        self.taken.notify_waiters();
        taken
    }

    /// Puts back `events` a write failed to store, ahead of those buffered since.
    pub fn restore(&self, mut events: Vec<Event>) {
        let mut buffered = self.buffered.lock().expect("buffered events lock");
        events.append(&mut buffered);
        self.keep_newest(&mut events);
        *buffered = events;
    }

    /// Drops the oldest of `events` past [`MAX_KEPT`], counted.
    fn keep_newest(&self, events: &mut Vec<Event>) {
        if events.len() > MAX_KEPT {
            let cut = events.len() - MAX_KEPT;
            events.drain(..cut);
            self.dropped.fetch_add(cut as u64, Ordering::Relaxed);
        }
    }
}

/// A flush of buffered events running in this process, from
/// [`crate::Storage::start_buffer_flush`] until dropped (its loop ending, by a panic
/// too): meanwhile requests that fill the buffer wait for it rather than write it
/// themselves.
pub struct BufferFlush {
    gate: Arc<EventGate>,
}

impl BufferFlush {
    pub(crate) fn start(gate: Arc<EventGate>) -> BufferFlush {
        gate.flusher.store(true, Ordering::Relaxed);
        BufferFlush { gate }
    }

    /// Until the buffer is full (at once if it filled since the last call).
    pub async fn full(&self) {
        self.gate.full.notified().await
    }
}

impl Drop for BufferFlush {
    fn drop(&mut self) {
        self.gate.flusher.store(false, Ordering::Relaxed);
    }
}
