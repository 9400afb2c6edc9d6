//! Failed-login rate limiting, per username and per client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::AuthError;

/// Failures allowed per key within the window before logins are refused.
const MAX_FAILURES: u32 = 5;
const WINDOW: Duration = Duration::from_secs(60);
/// Entries kept at most; the oldest are dropped first (memory stays bounded).
const MAX_KEYS: usize = 100_000;

/// The key of a client address (`ip:10.0.0.1`; empty when unknown).
pub fn address_key(peer: Option<IpAddr>) -> String {
    format!("ip:{}", peer.map(|p| p.to_string()).unwrap_or_default())
}

/// The keys a password login counts against, the user's first: the same wherever the
/// password is tried (token endpoint, web sign-in), so a guess counts once.
pub fn password_keys(user: &str, peer: Option<IpAddr>) -> [String; 2] {
    [format!("user:{user}"), address_key(peer)]
}

#[derive(Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl LoginLimiter {
    /// Refuses when any of `keys` (e.g. `user:alice`, `ip:10.0.0.1`) failed too often lately.
    pub fn check(&self, keys: &[String]) -> Result<(), AuthError> {
        let map = self.failures.lock().unwrap();
        for key in keys {
            if let Some((count, since)) = map.get(key) {
                let elapsed = since.elapsed();
                if *count >= MAX_FAILURES && elapsed < WINDOW {
                    return Err(AuthError::RateLimited {
                        retry_after_secs: (WINDOW - elapsed).as_secs().max(1),
                    });
                }
            }
        }
        Ok(())
    }

    pub fn failed(&self, keys: &[String]) {
        let mut map = self.failures.lock().unwrap();
        if map.len() >= MAX_KEYS {
            map.retain(|_, (_, since)| since.elapsed() < WINDOW);
        }
        for key in keys {
            let entry = map.entry(key.clone()).or_insert((0, Instant::now()));
            if entry.1.elapsed() >= WINDOW {
                *entry = (0, Instant::now());
            }
            entry.0 += 1;
        }
    }

    pub fn succeeded(&self, keys: &[String]) {
        let mut map = self.failures.lock().unwrap();
        for key in keys {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_repeated_failures() {
        let l = LoginLimiter::default();
        let keys = vec!["user:alice".to_string(), "ip:127.0.0.1".to_string()];
        for _ in 0..MAX_FAILURES {
            l.check(&keys).unwrap();
            l.failed(&keys);
        }
        assert!(matches!(l.check(&keys), Err(AuthError::RateLimited { .. })));
        assert!(matches!(
            l.check(&["ip:127.0.0.1".to_string()]),
            Err(AuthError::RateLimited { .. })
        ));
        l.check(&["user:bob".to_string()]).unwrap();
    }
}
