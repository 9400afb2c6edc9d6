//! The collector's lease: one row in `leases`, held until it expires, renewed as a pass
//! goes on. Two collectors at once would still be safe (every deletion is decided
//! under row locks), only wasteful; the lease keeps replicas from doing the work twice.
//!
//! Each change is one conditional statement, atomic on its own, run without a
//! transaction and not waited for on stable storage: a lease lost in a crash costs
//! nothing, while a pass every few seconds should not add commits to the ones pushes
//! wait for.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ConnectionTrait, EntityTrait};

use crate::entity::{lease, now_millis};
use crate::error::{Result, StorageError};
use crate::Storage;

const NAME: &str = "gc";
/// Long enough to outlast a page of work; short enough that a killed collector's lease
/// is taken over by another replica soon.
const TTL: Duration = Duration::from_secs(120);
/// Renewed when this much of it has passed.
const RENEW_AFTER: Duration = Duration::from_secs(30);

/// Another process holds the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHeld {
    pub holder: String,
    /// Unix milliseconds.
    pub until: i64,
}

impl std::fmt::Display for LeaseHeld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let until = chrono::DateTime::from_timestamp_millis(self.until)
            .map_or_else(|| self.until.to_string(), |t| t.to_rfc3339());
        write!(
            f,
            "another garbage collection is running ({}, lease until {until})",
            self.holder
        )
    }
}

pub(crate) struct Lease {
    holder: String,
    renewed: Mutex<Instant>,
}

impl Lease {
    pub async fn acquire(storage: &Storage) -> Result<std::result::Result<Lease, LeaseHeld>> {
        let holder = format!(
            "{} pid {} {}",
            hostname(),
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let lease = Lease {
            holder,
            renewed: Mutex::new(Instant::now()),
        };
        let _turn = storage.write_turn().await;
        let now = now_millis();
        create_row(storage, NAME).await?;
        let mut taken = lease
            .extend(storage, now, Expr::col(lease::Column::ExpiresAt).lt(now))
            .await?;
        if !taken {
            let row = lease::Entity::find_by_id(NAME)
                .one(&storage.db)
                .await?
                .expect("the lease row was created above");
            // A collector killed on this host need not be waited for.
            if holder_is_dead(&row.holder) {
                tracing::warn!(
                    holder = row.holder,
                    "taking over the garbage collection lease of a process that no longer runs"
                );
                let theirs = Expr::col(lease::Column::Holder).eq(row.holder.as_str());
                taken = lease.extend(storage, now, theirs).await?;
            }
            if !taken {
                return Ok(Err(LeaseHeld {
                    holder: row.holder,
                    until: row.expires_at,
                }));
            }
        }
        Ok(Ok(lease))
    }

    /// Extends the lease when due; an error when another process took it over (this
    /// one stalled past its expiry), which ends the pass.
    pub async fn renew(&self, storage: &Storage) -> Result<()> {
        if self.renewed.lock().expect("lease lock").elapsed() < RENEW_AFTER {
            return Ok(());
        }
        let _turn = storage.write_turn().await;
        let held = Expr::col(lease::Column::Holder).eq(self.holder.as_str());
        let kept = self.extend(storage, now_millis(), held).await?;
        if !kept {
            return Err(StorageError::Database(sea_orm::DbErr::Custom(
                "the garbage collection lease was taken over by another process".into(),
            )));
        }
        *self.renewed.lock().expect("lease lock") = Instant::now();
        Ok(())
    }

    /// Sets this holder and a new expiry where `condition` holds; whether it did.
    async fn extend(&self, storage: &Storage, now: i64, condition: Expr) -> Result<bool> {
        let update = Query::update()
            .table(lease::Entity)
            .value(lease::Column::Holder, self.holder.as_str())
            .value(lease::Column::ExpiresAt, now + TTL.as_millis() as i64)
            .and_where(Expr::col(lease::Column::Name).eq(NAME))
            .and_where(condition)
            .to_owned();
        Ok(storage.db.execute(&update).await?.rows_affected() == 1)
    }

    /// Gives the lease up (best effort: otherwise it expires).
    pub async fn release(self, storage: &Storage) {
        let _turn = storage.write_turn().await;
        let update = Query::update()
            .table(lease::Entity)
            .value(lease::Column::ExpiresAt, 0i64)
            .and_where(Expr::col(lease::Column::Name).eq(NAME))
            .and_where(Expr::col(lease::Column::Holder).eq(self.holder.as_str()))
            .to_owned();
        if let Err(e) = storage.db.execute(&update).await {
            tracing::warn!(error = %e, "cannot release the garbage collection lease; it expires by itself");
        }
    }
}

/// Whether `holder` names a process of this host that is gone (holders are written
/// `<host> pid <pid> <random>`; another host's processes cannot be checked).
fn holder_is_dead(holder: &str) -> bool {
    let mut words = holder.split(' ');
    let (Some(host), Some("pid"), Some(pid)) = (words.next(), words.next(), words.next()) else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    host == hostname()
        && pid != std::process::id()
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether the periodic task `name` is due (then it is booked for `every_ms` from now,
/// for every process sharing the database): a row of `leases` whose expiry is the
/// next due time.
pub(crate) async fn turn_due(storage: &Storage, name: &str, every_ms: i64) -> Result<bool> {
    let _turn = storage.write_turn().await;
    let now = now_millis();
    create_row(storage, name).await?;
    let book = Query::update()
        .table(lease::Entity)
        .value(lease::Column::ExpiresAt, now.saturating_add(every_ms))
        .and_where(Expr::col(lease::Column::Name).eq(name))
        .and_where(Expr::col(lease::Column::ExpiresAt).lte(now))
        .to_owned();
    Ok(storage.db.execute(&book).await?.rows_affected() == 1)
}

/// The row of lease `name`, expired, unless it exists.
async fn create_row(storage: &Storage, name: &str) -> Result<()> {
    let create = Query::insert()
        .into_table(lease::Entity)
        .columns([
            lease::Column::Name,
            lease::Column::Holder,
            lease::Column::ExpiresAt,
        ])
        .values_panic([name.into(), "".into(), 0i64.into()])
        .on_conflict(
            OnConflict::column(lease::Column::Name)
                .do_nothing()
                .to_owned(),
        )
        .to_owned();
    storage.db.execute(&create).await?;
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown host".into())
}
