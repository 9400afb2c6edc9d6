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
        refusal(&map, keys)
    }

    /// Checks `keys` and, in the same step, counts this attempt as a failure on each:
    /// however many attempts run at once, at most [`MAX_FAILURES`] per key get past
    /// here in a window. An attempt that then succeeds (or could not be judged) is
    /// taken back with [`LoginLimiter::refund`].
    pub fn attempt(&self, keys: &[String]) -> Result<(), AuthError> {
        let mut map = self.failures.lock().unwrap();
        refusal(&map, keys)?;
        count(&mut map, keys);
        Ok(())
    }

    /// Takes back one attempt counted by [`LoginLimiter::attempt`] on each of `keys`.
    pub fn refund(&self, keys: &[String]) {
        let mut map = self.failures.lock().unwrap();
        for key in keys {
            if let Some(entry) = map.get_mut(key) {
                entry.0 = entry.0.saturating_sub(1);
                if entry.0 == 0 {
                    map.remove(key);
                }
            }
        }
    }

    /// Counts a failure on each of `keys`, after the fact (cheap checks: tokens).
    pub fn failed(&self, keys: &[String]) {
        count(&mut self.failures.lock().unwrap(), keys);
    }

    /// Forgets the failures of `keys`.
    pub fn succeeded(&self, keys: &[String]) {
        let mut map = self.failures.lock().unwrap();
        for key in keys {
            map.remove(key);
        }
    }
}

fn refusal(map: &HashMap<String, (u32, Instant)>, keys: &[String]) -> Result<(), AuthError> {
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

fn count(map: &mut HashMap<String, (u32, Instant)>, keys: &[String]) {
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

    #[test]
    fn concurrent_attempts_get_at_most_the_allowed_number_through() {
        let l = std::sync::Arc::new(LoginLimiter::default());
        let keys = password_keys("alice", Some([10, 0, 0, 1].into()));
        let passed = std::sync::atomic::AtomicU32::new(0);
        let barrier = std::sync::Barrier::new(40);
        std::thread::scope(|s| {
            for _ in 0..40 {
                s.spawn(|| {
                    barrier.wait();
                    if l.attempt(&keys).is_ok() {
                        // A slow password check would run here.
                        std::thread::sleep(Duration::from_millis(20));
                        passed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(passed.into_inner(), MAX_FAILURES);
        assert!(matches!(l.check(&keys), Err(AuthError::RateLimited { .. })));
    }

    #[test]
    fn a_refunded_attempt_does_not_count() {
        let l = LoginLimiter::default();
        let keys = password_keys("alice", None);
        for _ in 0..10 * MAX_FAILURES {
            l.attempt(&keys).unwrap();
            l.refund(&keys);
        }
        l.check(&keys).unwrap();
        for _ in 0..MAX_FAILURES - 1 {
            l.attempt(&keys).unwrap();
        }
        l.succeeded(&keys[..1]);
        l.refund(&keys[1..]);
        // The user's failures are forgotten; the address still holds its 3 others.
        l.check(&keys[..1]).unwrap();
        l.attempt(&keys).unwrap();
        l.attempt(&keys).unwrap();
        assert!(matches!(
            l.attempt(&keys),
            Err(AuthError::RateLimited { .. })
        ));
    }
}
