//! How often rate-limited sign-ins reach the audit log: once per client address per
//! minute. Wrong passwords are few by themselves (the limiter allows a handful per
//! address and window), but refusals come as fast as a client sends them, and each
//! would be a row.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const EVERY: Duration = Duration::from_secs(60);
/// Addresses remembered at most; past it, those of more than a minute ago are
/// forgotten, and while it is still full nothing more is recorded.
const MAX_ADDRESSES: usize = 10_000;

#[derive(Default)]
pub(crate) struct Refusals {
    last: Mutex<HashMap<Option<IpAddr>, Instant>>,
}

impl Refusals {
    /// Whether a refusal from `peer` now is recorded (none was in the last minute).
    pub fn record_now(&self, peer: Option<IpAddr>) -> bool {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap();
        if last
            .get(&peer)
            .is_some_and(|at| now.duration_since(*at) < EVERY)
        {
            return false;
        }
        if last.len() >= MAX_ADDRESSES {
            last.retain(|_, at| now.duration_since(*at) < EVERY);
        }
        if last.len() >= MAX_ADDRESSES {
            // More addresses than that within a minute: a flood, not recorded address
            // by address (each would be a row).
            return false;
        }
        last.insert(peer, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_refusal_per_address_per_minute() {
        let refusals = Refusals::default();
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        let b = Some(IpAddr::from([10, 0, 0, 2]));
        assert!(refusals.record_now(a));
        assert!(!refusals.record_now(a));
        assert!(refusals.record_now(b));
        assert!(refusals.record_now(None));
        assert!(!refusals.record_now(None));
    }
}
