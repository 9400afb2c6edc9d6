//! Delivering registry events: Distribution-style notifications to the endpoints in
//! the config, and Docker Hub-style webhooks to the URLs namespace owners add.
//!
//! Storage writes each event to its outbox in the transaction of the change it
//! describes. Here, off the request path, events are fanned out into one delivery per
//! endpoint (`fanout`), and each endpoint's deliveries are sent in order by the one
//! replica holding its lease (`deliver`), at least once, with the same event id on
//! every attempt and exponential back-off between them.

mod address;
mod deliver;
mod error;
mod fanout;
mod hub;
pub mod metrics;
pub mod origin;
mod signature;
pub mod webhooks;

use std::sync::Arc;

use berth_config::Config;
use berth_storage::Storage;

pub use address::check_webhook_url;
pub use error::EventsError;
pub use signature::{signature, SIGNATURE_HEADER};

/// Starts delivery for this instance (`instance` names it in leases and logs): runs
/// until the process ends.
pub fn start(storage: Storage, config: &Config, instance: String) -> Result<(), EventsError> {
    tokio::spawn(write_buffered(storage.clone()));
    let deliverer = Arc::new(deliver::Deliverer::new(storage, config, instance)?);
    tokio::spawn(deliverer.clone().run());
    tokio::spawn(deliverer.housekeeping());
    Ok(())
}

/// Forever: writes the events buffered in memory (pulls, repeated pushes) every
/// 50 ms, apart from delivery, so a slow delivery round never lets the buffer fill.
async fn write_buffered(storage: Storage) {
    let mut ticker = tokio::time::interval(std::time::Duration::from_millis(50));
    loop {
        ticker.tick().await;
        if let Err(e) = storage.flush_buffered_events().await {
            tracing::warn!(error = %e, "writing buffered events failed; will retry");
        }
    }
}
