//! Online garbage collection: tags by retention policies, untagged manifests (by
//! policy), unreferenced blobs and objects no row names, deleted while pushes and pulls go on (the protocol that makes
//! that safe is `liveness`; the README's storage design section tells it whole).
//!
//! A pass runs under a lease so that one replica collects at a time. Each step works
//! in pages: candidates are found by a read-only query, then each page is re-checked
//! and deleted in one short write transaction, and only after that commit are the
//! page's objects deleted. A pass killed at any point leaves every row consistent; the
//! objects of a committed page whose deletion never ran no longer have a row naming
//! them, so the orphan sweep of a later pass deletes them.

mod blobs;
mod lease;
mod manifests;
mod orphans;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use berth_config::Config;
use serde::Serialize;

use crate::error::Result;
use crate::Storage;

pub use lease::LeaseHeld;

/// Whether a pass sweeps the store for orphan objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sweep {
    /// Every time (`berthd gc`).
    Always,
    /// At most once per grace period across all replicas (the background passes):
    /// listing a whole store is the costly part of a pass (on S3, one request per
    /// 1,000 objects), and orphans only come from crashes.
    WhenDue,
}

/// Garbage collection's settings, as storage applies them.
#[derive(Debug, Clone)]
pub(crate) struct GcSettings {
    /// Unreferenced blobs and unnamed objects younger than this (since their last
    /// use) are kept.
    grace_ms: i64,
    /// How old an object must be before the orphan sweep may delete it: at least the
    /// grace, and at least the upload expiry (the longest a push's objects may wait
    /// for a row to name them).
    orphan_age_ms: i64,
    delete_untagged_after_ms: Option<i64>,
    /// Pull-through proxies' namespaces and their size limits (`[[proxy]] max_size`).
    size_limits: Vec<(String, u64)>,
}

impl GcSettings {
    pub fn for_config(config: &Config) -> GcSettings {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let grace_ms = ms(config.gc.grace);
        GcSettings {
            grace_ms,
            orphan_age_ms: grace_ms.max(ms(Duration::from_secs(config.upload_expiry_secs))),
            delete_untagged_after_ms: config.gc.delete_untagged_after.map(ms),
            size_limits: config
                .proxies
                .iter()
                .filter_map(|p| Some((p.prefix.clone(), p.max_size?)))
                .collect(),
        }
    }

    /// How stale a link's touch time may get before a HEAD or GET refreshes it: a
    /// quarter of the grace, so a blob seen through a repository stays collectable
    /// no sooner than three quarters of the grace later.
    pub fn touch_every_ms(&self) -> i64 {
        self.grace_ms / 4
    }

    /// Whether untagged manifests are collected (`delete_untagged_after` is set).
    pub fn deletes_untagged(&self) -> bool {
        self.delete_untagged_after_ms.is_some()
    }

    /// A write that took longer than this is refused before a row names its objects:
    /// the orphan sweep could take them meanwhile.
    pub fn max_write_ms(&self) -> i64 {
        self.orphan_age_ms / 2
    }
}

/// What a pass deleted (or, dry, would delete).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    /// Tags retention policies deleted.
    pub tags: u64,
    /// Blobs nothing references, untouched for the grace period.
    pub blobs: u64,
    pub blob_bytes: u64,
    /// Manifests retention policies took with their tags, untagged manifests (by the
    /// `delete_untagged_after` policy), and their referrers.
    pub manifests: u64,
    /// Objects in the store that no row names, older than the grace.
    pub orphan_objects: u64,
    pub orphan_bytes: u64,
    /// Cached images a proxy evicted to stay within its size limit (a dry run
    /// evicts and counts nothing).
    pub evicted: u64,
    /// Candidates another transaction held at the time (taken by a later pass).
    pub skipped: u64,
    pub duration: Duration,
}

/// Tries of a page PostgreSQL rolled back to break a deadlock with a racing push.
const DEADLOCK_TRIES: u32 = 3;

/// Runs `page` (one deleting transaction and what follows its commit) until it is not a
/// deadlock's victim, [`DEADLOCK_TRIES`] times at most: rolled back whole, it is safe
/// to run again, and a pass should not fail for what a retry resolves.
async fn retry_deadlocks<T, F, Fut>(mut page: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut tries = 1;
    loop {
        match page().await {
            Err(e) if e.is_deadlock() && tries < DEADLOCK_TRIES => {
                tracing::debug!(error = %e, "a garbage collection page was a deadlock's victim; running it again");
                tokio::time::sleep(Duration::from_millis(50 * u64::from(tries))).await;
                tries += 1;
            }
            done => return done,
        }
    }
}

impl GcReport {
    /// Adds what one page of deletions did.
    fn add_page(&mut self, page: &GcReport) {
        self.blobs += page.blobs;
        self.blob_bytes += page.blob_bytes;
        self.manifests += page.manifests;
        self.skipped += page.skipped;
    }

    pub fn freed_bytes(&self) -> u64 {
        self.blob_bytes + self.orphan_bytes
    }
}

impl std::fmt::Display for GcReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = if self.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        write!(
            f,
            "{verb} {} manifests, {} blobs ({} bytes) and {} orphan objects ({} bytes) in {:.1} s",
            self.manifests,
            self.blobs,
            self.blob_bytes,
            self.orphan_objects,
            self.orphan_bytes,
            self.duration.as_secs_f64()
        )?;
        if self.tags > 0 {
            write!(f, "; retention policies {verb} {} tags", self.tags)?;
        }
        if self.evicted > 0 {
            write!(f, "; proxies evicted {} cached manifests", self.evicted)?;
        }
        if self.skipped > 0 {
            write!(
                f,
                "; {} in use right now, left for the next pass",
                self.skipped
            )?;
        }
        Ok(())
    }
}

impl Storage {
    /// Runs one garbage collection pass now: unreferenced blobs, orphan objects (see
    /// [`Sweep`]), then
    /// retention policies and untagged manifests (when that policy is on). `Err(LeaseHeld)`
    /// inside the `Ok` when another process is collecting.
    ///
    /// Blobs come first, so what a pass deletes depends only on the state it starts
    /// from and a dry run counts exactly what the pass would delete: the blobs that
    /// manifests deleted by this pass leave unreferenced go in the next pass, and so do
    /// the images of an untagged index deleted by this one. (Proxies' evictions come
    /// before, and their blobs go once unreferenced for the grace period, like any.)
    pub async fn collect_garbage(
        &self,
        dry_run: bool,
        sweep: Sweep,
    ) -> Result<std::result::Result<GcReport, LeaseHeld>> {
        let lease = match lease::Lease::acquire(self).await? {
            Ok(lease) => lease,
            Err(held) => return Ok(Err(held)),
        };
        let started = Instant::now();
        let mut report = GcReport {
            dry_run,
            ..GcReport::default()
        };
        let outcome = async {
            if !dry_run {
                for (namespace, max_bytes) in &self.gc.size_limits {
                    report.evicted += self.evict_least_pulled(namespace, *max_bytes).await?;
                }
            }
            blobs::collect(self, &lease, &mut report).await?;
            let sweep = match sweep {
                Sweep::Always => true,
                Sweep::WhenDue => lease::turn_due(self, "orphan-sweep", self.gc.grace_ms).await?,
            };
            if sweep {
                orphans::collect(self, &lease, &mut report).await?;
            }
            let retention = match dry_run {
                true => self.retention_preview(None).await?,
                false => self.apply_retention(None).await?,
            };
            report.tags += retention.tags.len() as u64;
            report.manifests += retention.manifests.len() as u64;
            if let Some(after_ms) = self.gc.delete_untagged_after_ms {
                // What retention deletes is not counted twice by a dry run.
                let taken: HashSet<i64> = retention.manifest_ids.iter().copied().collect();
                let before = report.manifests;
                manifests::collect(self, &lease, after_ms, &taken, &mut report).await?;
                let untagged = report.manifests - before;
                if !dry_run && untagged > 0 {
                    let entry = self
                        .actor
                        .entry(crate::audit::Action::ManifestDeleted, None)
                        .detail(format!(
                            "{untagged} untagged manifests (with their referrers) past delete_untagged_after"
                        ));
                    self.audit(entry).await;
                }
            }
            Ok::<_, crate::error::StorageError>(())
        }
        .await;
        lease.release(self).await;
        outcome?;
        report.duration = started.elapsed();
        Ok(Ok(report))
    }
}
