//! Delivering registry events: Distribution-style notifications to the endpoints in
//! the config, and Docker Hub-style webhooks to the URLs namespace owners add.
//!
//! Storage writes each event to its outbox in the transaction of the change it
//! describes (events of requests that changed nothing are buffered and fanned out
//! directly). Here, off the request path, events are fanned out into deliveries per
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
    let deliverer = Arc::new(deliver::Deliverer::new(storage, config, instance)?);
    tokio::spawn(deliverer.clone().write_buffered());
    tokio::spawn(deliverer.clone().run());
    tokio::spawn(deliverer.housekeeping());
    Ok(())
}
