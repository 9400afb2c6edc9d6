//! Replicas sharing PostgreSQL learn of each other's changes as they commit: the
//! triggers that bump a repository's generation (migration m0008) also `NOTIFY
//! berth_changes` with its name, and every replica `LISTEN`s and drops that
//! repository's cached entries.
//!
//! A notification arrives shortly after its commit, not at once, so on its own it
//! would not give read-your-writes. Two rules make it enough:
//! * A replica trusts its cache only while it has lately received a heartbeat it sent
//!   itself through the same queue. PostgreSQL delivers notifications in the order their
//!   transactions committed, so having received a heartbeat sent at time `s` means
//!   having received (and applied) every change committed before `s`.
//! * A change is answered [`SETTLE`] after its commit, and `SETTLE` is longer than
//!   [`TRUST_FOR`]. A request arriving after that answer, on any replica, finds the
//!   replica either holding a heartbeat sent after the commit — so the change is
//!   applied — or not trusting its cache, and then it asks the database (`generations`).
//!
//! Only durations on each replica's own monotonic clock are compared, never clocks of
//! two machines. Heartbeats run only while requests want them (idle replicas send none).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sea_orm::sqlx::postgres::{PgConnection, PgListener, PgPool};
use sea_orm::sqlx::Connection;
use tokio::sync::Notify;

use crate::cache::MetaCache;

/// How long a change's answer waits after its commit.
pub(crate) const SETTLE: Duration = Duration::from_millis(30);
/// How long a heartbeat received keeps the cache trusted, counted from its sending.
const TRUST_FOR: Duration = Duration::from_millis(20);
const HEARTBEAT_EVERY: Duration = Duration::from_millis(8);
/// Heartbeats go on this long after the last request that wanted them.
const WANTED_FOR: Duration = Duration::from_secs(2);
/// A heartbeat not answered within this (a database out of reach) starts over.
const SEND_LIMIT: Duration = Duration::from_secs(1);
/// Heartbeats sent but none received for this long: the listening connection is dead
/// (a cut network shows no error) and is replaced.
const SILENCE_LIMIT: Duration = Duration::from_secs(1);
const RETRY_AFTER: Duration = Duration::from_millis(500);

pub(crate) const CHANNEL: &str = "berth_changes";

pub(crate) struct ChangeFeed {
    /// The base of the nanosecond counters below.
    started: Instant,
    /// When the newest heartbeat received was sent.
    received: AtomicU64,
    /// When the current `LISTEN` began (`u64::MAX` while there is none): heartbeats sent
    /// before it prove nothing about this connection.
    listening_since: AtomicU64,
    /// When the newest heartbeat was sent.
    sent: AtomicU64,
    /// Until when heartbeats are wanted.
    wanted_until: AtomicU64,
    wake: Notify,
    /// This replica's own heartbeat channel.
    channel: String,
}

impl ChangeFeed {
    /// Starts listening and heartbeating for `cache`, for as long as the runtime lives.
    pub(crate) fn start(pool: PgPool, cache: Arc<MetaCache>) -> Arc<ChangeFeed> {
        let feed = Arc::new(ChangeFeed {
            started: Instant::now(),
            received: AtomicU64::new(0),
            listening_since: AtomicU64::new(u64::MAX),
            sent: AtomicU64::new(0),
            wanted_until: AtomicU64::new(0),
            wake: Notify::new(),
            channel: format!("berth_heartbeat_{}", uuid::Uuid::new_v4().simple()),
        });
        tokio::spawn(supervise(pool.clone(), cache, feed.clone()));
        tokio::spawn(heartbeat(pool, feed.clone()));
        feed
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// Whether the cache holds every change committed before this request arrived
    /// (else the caller asks the database). Keeps heartbeats going while asked.
    pub(crate) fn trusted(&self) -> bool {
        let now = self.now();
        let wanted_until = self.wanted_until.load(Ordering::Relaxed);
        if wanted_until < now + WANTED_FOR.as_nanos() as u64 / 2 {
            self.wanted_until
                .store(now + WANTED_FOR.as_nanos() as u64, Ordering::Relaxed);
            if wanted_until < now {
                self.wake.notify_one();
            }
        }
        let received = self.received.load(Ordering::Acquire);
        received >= self.listening_since.load(Ordering::Acquire)
            && now.saturating_sub(received) < TRUST_FOR.as_nanos() as u64
    }

    /// Whether heartbeats sent since listening began stopped arriving (one may be heard
    /// before its sender notes it sent).
    fn silent(&self) -> bool {
        let since = self.listening_since.load(Ordering::Acquire);
        let sent = self.sent.load(Ordering::Relaxed);
        let heard = self.received.load(Ordering::Acquire).max(since);
        sent > since && sent.saturating_sub(heard) > SILENCE_LIMIT.as_nanos() as u64
    }
}

/// Keeps a listener running, replacing it when it ends or goes silent.
async fn supervise(pool: PgPool, cache: Arc<MetaCache>, feed: Arc<ChangeFeed>) {
    loop {
        let listener = tokio::spawn(listen(pool.clone(), cache.clone(), feed.clone()));
        loop {
            tokio::time::sleep(SILENCE_LIMIT / 4).await;
            if listener.is_finished() {
                break;
            }
            if feed.silent() {
                tracing::warn!("no change notification received for a while: listening again");
                listener.abort();
                // Gone before the next one listens (it could still note a heartbeat).
                let _ = listener.await;
                break;
            }
        }
        feed.listening_since.store(u64::MAX, Ordering::Release);
        tokio::time::sleep(RETRY_AFTER).await;
    }
}

/// Listens until the connection is lost: applies changes, notes heartbeats.
async fn listen(pool: PgPool, cache: Arc<MetaCache>, feed: Arc<ChangeFeed>) {
    let mut listener = match PgListener::connect_with(&pool).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for changes");
            return;
        }
    };
    feed.listening_since.store(feed.now(), Ordering::Release);
    if let Err(e) = listener.listen_all([CHANNEL, feed.channel.as_str()]).await {
        tracing::warn!(error = %e, "cannot listen for changes");
        return;
    }
    // Whatever changed while nobody listened. Reads that started before this are
    // kept out of the cache by its epoch.
    cache.invalidate_all();
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) if n.channel() == CHANNEL => cache.invalidate(n.payload()),
            Ok(Some(n)) => {
                if let Ok(sent) = n.payload().parse::<u64>() {
                    feed.received.fetch_max(sent, Ordering::AcqRel);
                }
            }
            // The connection was lost: notifications may have been missed.
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "lost the change notifications");
                return;
            }
        }
    }
}

/// Sends heartbeats to this replica's own channel while they are wanted.
async fn heartbeat(pool: PgPool, feed: Arc<ChangeFeed>) {
    let mut conn: Option<PgConnection> = None;
    let mut ticker = tokio::time::interval(HEARTBEAT_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if feed.wanted_until.load(Ordering::Relaxed) < feed.now() {
            feed.wake.notified().await;
        }
        ticker.tick().await;
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match tokio::time::timeout(SEND_LIMIT, connect(&pool)).await {
                Ok(Ok(c)) => conn.insert(c),
                _ => {
                    tokio::time::sleep(RETRY_AFTER).await;
                    continue;
                }
            },
        };
        let sent = feed.now();
        let send = sea_orm::sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&feed.channel)
            .bind(sent.to_string())
            .execute(&mut *c);
        match tokio::time::timeout(SEND_LIMIT, send).await {
            Ok(Ok(_)) => {
                feed.sent.fetch_max(sent, Ordering::Relaxed);
            }
            _ => conn = None,
        }
    }
}

/// A connection of its own: heartbeats need no durability, so commits do not wait
/// for the WAL to reach the disk; and a heartbeat stuck on the server (behind a commit
/// that cannot finish) ends there too, rather than holding a backend per retry.
async fn connect(pool: &PgPool) -> Result<PgConnection, sea_orm::sqlx::Error> {
    let mut conn = PgConnection::connect_with(&pool.connect_options()).await?;
    for setting in [
        "SET synchronous_commit = off",
        "SET statement_timeout = '1s'",
        "SET lock_timeout = '1s'",
    ] {
        sea_orm::sqlx::query(setting).execute(&mut conn).await?;
    }
    Ok(conn)
}
