//! Failed-login rate limiting, per username and per client address, counted in the
//! database: the limits hold across replicas however a load balancer spreads guesses.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use sea_orm::sea_query::{CaseStatement, Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection};

use crate::error::AuthError;

/// Failures allowed per key within the window before logins are refused.
const MAX_FAILURES: i64 = 5;
const WINDOW_MS: i64 = 60_000;
/// Every this many counted failures, rows whose window has passed are deleted (the
/// table stays bounded by the failures of one window).
const SWEEP_EVERY: u64 = 1024;

const TABLE: &str = "login_failures";

/// The key of a client address (`ip:10.0.0.1`; empty when unknown).
pub fn address_key(peer: Option<IpAddr>) -> String {
    format!("ip:{}", client_of(peer))
}

/// The key of the budget for new names (sign-ups, a user's own organizations) a client
/// address has.
pub fn new_names_key(peer: Option<IpAddr>) -> String {
    format!("signup:{}", client_of(peer))
}

/// The client an address stands for, as limits count it: an IPv4 address itself (an
/// IPv4-mapped IPv6 address is the same client), an IPv6 address by its /64 (one
/// subscriber's network, RFC 6177: counting each address of it apart would give every
/// client 2^64 fresh allowances). Empty when unknown.
pub fn client_of(peer: Option<IpAddr>) -> String {
    match peer.map(|p| p.to_canonical()) {
        None => String::new(),
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => {
            let network = u128::from(v6) & !((1u128 << 64) - 1);
            format!("{}/64", std::net::Ipv6Addr::from(network))
        }
    }
}

/// The keys a password login counts against, the user's first: the same wherever the
/// password is tried (token endpoint, web sign-in), so a guess counts once.
pub fn password_keys(user: &str, peer: Option<IpAddr>) -> [String; 2] {
    [format!("user:{user}"), address_key(peer)]
}

/// Which of the keys checked have failures on record (only those need forgetting).
#[derive(Debug, Default)]
pub struct Recorded(Vec<String>);

impl Recorded {
    /// Keys known to have failures on record.
    pub fn of(keys: &[String]) -> Recorded {
        Recorded(keys.to_vec())
    }
}

#[derive(Default)]
pub struct LoginLimiter {
    counted: AtomicU64,
}

impl LoginLimiter {
    /// Refuses when any of `keys` (e.g. `user:alice`, `ip:10.0.0.1`) failed too often lately.
    pub async fn check(
        &self,
        db: &impl ConnectionTrait,
        keys: &[String],
    ) -> Result<Recorded, AuthError> {
        let rows = db
            .query_all(
                Query::select()
                    .columns(["key", "failures", "since"])
                    .from(TABLE)
                    .and_where(Expr::col("key").is_in(keys.iter().cloned())),
            )
            .await?;
        let now = now_millis();
        let mut recorded = Recorded::default();
        for row in rows {
            let (key, failures, since): (String, i64, i64) = (
                row.try_get("", "key")?,
                row.try_get("", "failures")?,
                row.try_get("", "since")?,
            );
            let age = now - since;
            if age < WINDOW_MS {
                if failures >= MAX_FAILURES {
                    return Err(AuthError::RateLimited {
                        retry_after_secs: Ord::max((WINDOW_MS - age) / 1000, 1) as u64,
                    });
                }
                recorded.0.push(key);
            }
        }
        Ok(recorded)
    }

    /// Checks `keys` and, in the same step, counts this attempt as a failure on each:
    /// however many attempts run at once on however many replicas, at most
    /// [`MAX_FAILURES`] per key get past here in a window (each key's row is updated
    /// only while under the limit, under its row lock). An attempt that then succeeds
    /// (or could not be judged) is taken back with [`LoginLimiter::refund`].
    pub async fn attempt(&self, db: &DatabaseConnection, keys: &[String]) -> Result<(), AuthError> {
        let txn = crate::namespaces::write_transaction(db).await?;
        for key in keys {
            let counted = txn.query_one(&count(key, true)).await?;
            if counted.is_none() {
                txn.rollback().await?;
                // The refusal, with the time left to wait.
                self.check(db, keys).await?;
                return Err(AuthError::RateLimited {
                    retry_after_secs: 1,
                });
            }
        }
        txn.commit().await?;
        self.sweep_now_and_then(db).await;
        Ok(())
    }

    /// Takes back one attempt counted by [`LoginLimiter::attempt`] on each of `keys`.
    /// Like [`LoginLimiter::failed`] and [`LoginLimiter::succeeded`], bookkeeping after
    /// the login was judged: a database refusing it is logged and the answer stands.
    pub async fn refund(&self, db: &impl ConnectionTrait, keys: &[String]) {
        let refunded = async {
            db.execute(
                Query::update()
                    .table(TABLE)
                    .value("failures", Expr::col("failures").sub(1))
                    .and_where(Expr::col("key").is_in(keys.iter().cloned())),
            )
            .await?;
            db.execute(
                Query::delete()
                    .from_table(TABLE)
                    .and_where(Expr::col("key").is_in(keys.iter().cloned()))
                    .and_where(Expr::col("failures").lte(0)),
            )
            .await
        };
        logged(refunded.await, "take back a login attempt");
    }

    /// Counts a failure on each of `keys`, after the fact (cheap checks: tokens).
    pub async fn failed(&self, db: &DatabaseConnection, keys: &[String]) {
        for key in keys {
            logged(
                db.query_one(&count(key, false)).await,
                "count a failed login",
            );
        }
        self.sweep_now_and_then(db).await;
    }

    /// Forgets the failures of `keys` that [`LoginLimiter::check`] found recorded.
    pub async fn succeeded(&self, db: &impl ConnectionTrait, keys: &[String], recorded: &Recorded) {
        let forget: Vec<&String> = keys.iter().filter(|k| recorded.0.contains(k)).collect();
        if forget.is_empty() {
            return;
        }
        let forgotten = db
            .execute(
                Query::delete()
                    .from_table(TABLE)
                    .and_where(Expr::col("key").is_in(forget.into_iter().cloned())),
            )
            .await;
        logged(forgotten, "forget failed logins");
    }

    async fn sweep_now_and_then(&self, db: &DatabaseConnection) {
        if self.counted.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY != SWEEP_EVERY - 1 {
            return;
        }
        let swept = db
            .execute(
                Query::delete()
                    .from_table(TABLE)
                    .and_where(Expr::col("since").lte(now_millis() - WINDOW_MS)),
            )
            .await;
        logged(swept, "delete expired login failures");
    }
}

fn logged<T>(result: Result<T, sea_orm::DbErr>, what: &str) {
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot {what}");
    }
}

/// Counts one failure on `key` (a new window when the last one passed), returning its
/// row; with `only_under_limit`, returns nothing and changes nothing once the key
/// reached the limit within its window.
fn count(key: &str, only_under_limit: bool) -> sea_orm::sea_query::InsertStatement {
    let now = now_millis();
    let expired = Expr::col((TABLE, "since")).lte(now - WINDOW_MS);
    let mut on_conflict = OnConflict::column("key");
    on_conflict
        .value(
            "failures",
            CaseStatement::new()
                .case(expired.clone(), Expr::val(1))
                .finally(Expr::col((TABLE, "failures")).add(1)),
        )
        .value(
            "since",
            CaseStatement::new()
                .case(expired.clone(), Expr::val(now))
                .finally(Expr::col((TABLE, "since"))),
        );
    if only_under_limit {
        on_conflict.action_and_where(expired.or(Expr::col((TABLE, "failures")).lt(MAX_FAILURES)));
    }
    Query::insert()
        .into_table(TABLE)
        .columns(["key", "failures", "since"])
        .values_panic([key.into(), 1i64.into(), now.into()])
        .on_conflict(on_conflict.to_owned())
        .returning_col("failures")
        .to_owned()
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm_migration::MigratorTrait;

    async fn db() -> (tempfile::TempDir, DatabaseConnection) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("l.db").display());
        let db = sea_orm::Database::connect(url).await.unwrap();
        crate::migration::Migrator::up(&db, None).await.unwrap();
        (dir, db)
    }

    fn limited<T: std::fmt::Debug>(r: Result<T, AuthError>) -> bool {
        matches!(r, Err(AuthError::RateLimited { .. }))
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(client_of(ip("10.1.2.3")), "10.1.2.3");
        assert_eq!(client_of(ip("::ffff:10.1.2.3")), "10.1.2.3");
        assert_eq!(client_of(ip("2001:db8:1:2:aaaa::1")), "2001:db8:1:2::/64");
        assert_eq!(
            client_of(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            client_of(ip("2001:db8:1:2::7"))
        );
        assert_ne!(
            client_of(ip("2001:db8:1:3::1")),
            client_of(ip("2001:db8:1:2::1"))
        );
        assert_eq!(client_of(ip("::1")), "::/64");
        assert_eq!(client_of(None), "");
    }

    /// Guessing from a fresh address of one's /64 each time gains nothing.
    #[tokio::test]
    async fn rotating_ipv6_addresses_share_one_limit() {
        let (_dir, db) = db().await;
        let l = LoginLimiter::default();
        for i in 0..MAX_FAILURES {
            let peer = format!("2001:db8:7:7::{:x}", i + 1).parse().ok();
            let keys = password_keys(&format!("user{i}"), peer);
            l.check(&db, &keys).await.unwrap();
            l.failed(&db, &keys).await;
        }
        let fresh = "2001:db8:7:7:1234:5678:9abc:def0".parse().ok();
        assert!(limited(
            l.check(&db, &password_keys("someone", fresh)).await
        ));
        let elsewhere = "2001:db8:7:8::1".parse().ok();
        l.check(&db, &password_keys("someone", elsewhere))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn blocks_after_repeated_failures() {
        let (_dir, db) = db().await;
        let l = LoginLimiter::default();
        let keys = vec!["user:alice".to_string(), "ip:127.0.0.1".to_string()];
        for _ in 0..MAX_FAILURES {
            l.check(&db, &keys).await.unwrap();
            l.failed(&db, &keys).await;
        }
        assert!(limited(l.check(&db, &keys).await));
        assert!(limited(l.check(&db, &["ip:127.0.0.1".to_string()]).await));
        l.check(&db, &["user:bob".to_string()]).await.unwrap();
    }

    #[tokio::test]
    async fn concurrent_attempts_get_at_most_the_allowed_number_through() {
        let (_dir, db) = db().await;
        let l = std::sync::Arc::new(LoginLimiter::default());
        let keys = password_keys("alice", Some([10, 0, 0, 1].into()));
        let attempts = (0..40).map(|_| {
            let (l, db, keys) = (l.clone(), db.clone(), keys.clone());
            tokio::spawn(async move { l.attempt(&db, &keys).await.is_ok() })
        });
        let mut passed = 0;
        for a in attempts.collect::<Vec<_>>() {
            passed += i64::from(a.await.unwrap());
        }
        assert_eq!(passed, MAX_FAILURES);
        assert!(limited(l.check(&db, &keys).await));
    }

    #[tokio::test]
    async fn a_refunded_attempt_does_not_count() {
        let (_dir, db) = db().await;
        let l = LoginLimiter::default();
        let keys = password_keys("alice", None);
        for _ in 0..10 * MAX_FAILURES {
            l.attempt(&db, &keys).await.unwrap();
            l.refund(&db, &keys).await;
        }
        l.check(&db, &keys).await.unwrap();
        for _ in 0..MAX_FAILURES - 1 {
            l.attempt(&db, &keys).await.unwrap();
        }
        let recorded = l.check(&db, &keys).await.unwrap();
        l.succeeded(&db, &keys[..1], &recorded).await;
        l.refund(&db, &keys[1..]).await;
        // The user's failures are forgotten; the address still holds its 3 others.
        l.check(&db, &keys[..1]).await.unwrap();
        l.attempt(&db, &keys).await.unwrap();
        l.attempt(&db, &keys).await.unwrap();
        assert!(limited(l.attempt(&db, &keys).await));
    }
}
