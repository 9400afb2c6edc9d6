//! How often what a client can repeat as fast as it likes reaches the audit log:
//! once per key (a client address, a token) per minute. Rate-limited sign-ins come
//! as fast as a client sends them, and so do sign-ins with an access token (a cheap
//! check); each would be a row.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const EVERY: Duration = Duration::from_secs(60);
/// Keys remembered at most; past it, those of more than a minute ago are forgotten,
/// and while it is still full nothing more is recorded.
const MAX_KEYS: usize = 10_000;

pub(crate) struct OnceAMinute<K> {
    last: Mutex<HashMap<K, Instant>>,
}

impl<K> Default for OnceAMinute<K> {
    fn default() -> Self {
        OnceAMinute {
            last: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq> OnceAMinute<K> {
    /// Whether what happened for `key` now is recorded (nothing was in the last
    /// minute).
    pub fn record_now(&self, key: K) -> bool {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap();
        if last
            .get(&key)
            .is_some_and(|at| now.duration_since(*at) < EVERY)
        {
            return false;
        }
        if last.len() >= MAX_KEYS {
            last.retain(|_, at| now.duration_since(*at) < EVERY);
        }
        if last.len() >= MAX_KEYS {
            // More keys than that within a minute: a flood, not recorded key by key
            // (each would be a row).
            return false;
        }
        last.insert(key, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn one_refusal_per_address_per_minute() {
        let refusals = OnceAMinute::<Option<IpAddr>>::default();
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        let b = Some(IpAddr::from([10, 0, 0, 2]));
        assert!(refusals.record_now(a));
        assert!(!refusals.record_now(a));
        assert!(refusals.record_now(b));
        assert!(refusals.record_now(None));
        assert!(!refusals.record_now(None));
    }
}
