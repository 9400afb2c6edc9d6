//! Garbage collection in the background: one pass per `[gc] interval` on every
//! replica; the storage lease lets one of them collect at a time.

use std::time::Duration;

use berth_storage::audit::Actor;
use berth_storage::gc::Sweep;
use berth_storage::Storage;

use crate::observe::METRICS;

/// Runs a pass every `interval`, forever (the first after one interval: a freshly
/// started replica has nothing urgent to collect).
pub async fn run(storage: Storage, interval: Duration) {
    // What passes delete (retention runs, untagged manifests) is audited as theirs.
    let storage = storage.by(Actor::server("garbage collection"));
    let mut ticker =
        actix_web::rt::time::interval_at(actix_web::rt::time::Instant::now() + interval, interval);
    loop {
        ticker.tick().await;
        pass(&storage).await;
    }
}

/// One pass, logged in one line and recorded in the metrics.
pub async fn pass(storage: &Storage) {
    match storage.collect_garbage(false, Sweep::WhenDue).await {
        Ok(Ok(report)) => {
            METRICS.gc_pass(Ok(Some(&report)));
            tracing::info!(
                blobs = report.blobs,
                manifests = report.manifests,
                orphan_objects = report.orphan_objects,
                freed_bytes = report.freed_bytes(),
                skipped = report.skipped,
                "garbage collection: {report}"
            );
        }
        Ok(Err(held)) => {
            METRICS.gc_pass(Ok(None));
            tracing::debug!("garbage collection skipped: {held}");
        }
        Err(e) => {
            METRICS.gc_pass(Err(()));
            tracing::warn!(error = %e, "garbage collection failed; the next pass continues");
        }
    }
}
