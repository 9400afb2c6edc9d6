//! Recently verified passwords, so a correct login repeated (CI jobs, `docker pull`
//! loops, a burst of clients) costs a database read instead of an argon2 computation.
//!
//! Entries are keyed by HMAC-SHA256, under a random key made when the process starts,
//! of (user name, password): neither is kept, and the keys mean nothing outside this
//! process. Each entry records the user's stored password hash at the time it was
//! verified; a hit counts only when the user row read for this very login still has
//! that hash, so a password change (from `berthd user passwd` in another process, or
//! another replica) or a removal invalidates it at once. Entries live
//! [`TTL`] at most, and there are at most [`CAPACITY`] of them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;

use crate::secret;

/// How long a verified password is remembered.
pub const TTL: Duration = Duration::from_secs(300);
/// Entries kept at most (~200 bytes each).
pub const CAPACITY: usize = 10_000;

/// The cache key of one (user name, password).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tag([u8; 32]);

struct Entry {
    /// The user's stored password hash when the password was verified.
    password_hash: String,
    verified_at: Instant,
}

pub struct CredentialCache {
    key: hmac::Key,
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<Tag, Entry>>,
}

impl Default for CredentialCache {
    fn default() -> CredentialCache {
        CredentialCache::new(TTL, CAPACITY)
    }
}

impl CredentialCache {
    pub fn new(ttl: Duration, capacity: usize) -> CredentialCache {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
            .expect("the system's random generator works");
        CredentialCache {
            key,
            ttl,
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The key of `name` with `password`. Length-prefixed, so no two different pairs
    /// feed the MAC the same bytes.
    pub fn tag(&self, name: &str, password: &str) -> Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(&(name.len() as u64).to_be_bytes());
        ctx.update(name.as_bytes());
        ctx.update(password.as_bytes());
        let mut tag = [0u8; 32];
        tag.copy_from_slice(ctx.sign().as_ref());
        Tag(tag)
    }

    /// Whether `tag` was verified lately against `stored_hash`, the user's password
    /// hash as the database has it now. A stale or outdated entry is dropped.
    pub fn hit(&self, tag: &Tag, stored_hash: &str) -> bool {
        let mut entries = self.entries.lock().unwrap();
        let Some(entry) = entries.get(tag) else {
            return false;
        };
        if entry.verified_at.elapsed() < self.ttl && secret::same(&entry.password_hash, stored_hash)
        {
            return true;
        }
        entries.remove(tag);
        false
    }

    /// Remembers that `tag` matched `stored_hash`. When full, expired entries go
    /// first, then the oldest.
    pub fn insert(&self, tag: Tag, stored_hash: String) {
        let mut entries = self.entries.lock().unwrap();
        if entries.len() >= self.capacity && !entries.contains_key(&tag) {
            entries.retain(|_, e| e.verified_at.elapsed() < self.ttl);
            if entries.len() >= self.capacity {
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, e)| e.verified_at)
                    .map(|(t, _)| *t);
                if let Some(oldest) = oldest {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(
            tag,
            Entry {
                password_hash: stored_hash,
                verified_at: Instant::now(),
            },
        );
    }

    /// Entries held (expired ones included until they are dropped).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verified_password_hits_until_the_hash_changes() {
        let c = CredentialCache::default();
        let t = c.tag("alice", "correct horse");
        assert!(!c.hit(&t, "$hash1"), "nothing cached yet");
        c.insert(t, "$hash1".into());
        assert!(c.hit(&t, "$hash1"));
        assert!(c.hit(&t, "$hash1"), "hits repeat");
        assert!(!c.hit(&c.tag("alice", "wrong horse"), "$hash1"));
        assert!(!c.hit(&c.tag("alicex", "correct horse"), "$hash1"));
        // The name/password boundary is part of the key.
        assert_ne!(c.tag("ab", "cd"), c.tag("abc", "d"));
        // The password changed elsewhere: the user row has another hash now.
        assert!(!c.hit(&t, "$hash2"));
        assert!(!c.hit(&t, "$hash1"), "the outdated entry is gone");
        assert!(c.is_empty());
    }

    #[test]
    fn keys_differ_between_processes() {
        let (a, b) = (CredentialCache::default(), CredentialCache::default());
        assert_ne!(a.tag("alice", "pw"), b.tag("alice", "pw"));
    }

    #[test]
    fn entries_expire() {
        let c = CredentialCache::new(Duration::from_millis(50), 10);
        let t = c.tag("alice", "correct horse");
        c.insert(t, "$hash".into());
        assert!(c.hit(&t, "$hash"));
        std::thread::sleep(Duration::from_millis(80));
        assert!(!c.hit(&t, "$hash"));
        assert!(c.is_empty());
    }

    #[test]
    fn size_is_bounded_and_the_oldest_go_first() {
        let c = CredentialCache::new(Duration::from_secs(60), 3);
        let tags: Vec<Tag> = (0..5)
            .map(|i| c.tag(&format!("user{i}"), "password"))
            .collect();
        for t in &tags {
            c.insert(*t, "$hash".into());
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(c.len(), 3);
        assert!(!c.hit(&tags[0], "$hash"));
        assert!(!c.hit(&tags[1], "$hash"));
        for t in &tags[2..] {
            assert!(c.hit(t, "$hash"));
        }
        // Expired entries make room before live ones are dropped.
        let c = CredentialCache::new(Duration::from_millis(30), 2);
        let (old, live) = (c.tag("old1", "pw"), c.tag("live", "pw"));
        c.insert(old, "$h".into());
        std::thread::sleep(Duration::from_millis(40));
        c.insert(live, "$h".into());
        c.insert(c.tag("new1", "pw"), "$h".into());
        assert_eq!(c.len(), 2);
        assert!(c.hit(&live, "$h"));
    }
}
