//! Registry tokens whose signature was verified lately, so a client's every request
//! (docker sends the same token for a whole pull) costs a hash lookup instead of an
//! Ed25519 verification, which took most of a metadata request's time.
//!
//! Entries are keyed by the SHA-256 of the whole token: a token differing in any byte
//! (another payload, another signature) is another key, and is verified in full.
//! Only the signature check is remembered: expiry, not-before, audience and issuer are
//! checked again on every hit ([`TokenService::verify`](crate::TokenService::verify)).
//! Memory stays bounded whatever tokens clients send (anyone may get an anonymous
//! token, with many scopes): tokens longer than [`MAX_TOKEN_LEN`] are verified every
//! time and never kept, and at most [`CAPACITY`] entries are; when full, expired ones
//! go, and if none had expired, all (they are verified again on their next use).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_lc_rs::digest;

use crate::token::Claims;

/// Entries kept at most.
pub const CAPACITY: usize = 4_096;
/// The longest token kept: docker's, for a repository or two, are under 1 KiB; the
/// claims an entry holds are smaller than its token.
pub const MAX_TOKEN_LEN: usize = 2_048;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key([u8; 32]);

impl Key {
    fn of(token: &str) -> Key {
        let mut key = [0u8; 32];
        key.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
        Key(key)
    }
}

pub struct VerifiedTokens {
    capacity: usize,
    entries: Mutex<HashMap<Key, Arc<Claims>>>,
}

impl Default for VerifiedTokens {
    fn default() -> VerifiedTokens {
        VerifiedTokens::new(CAPACITY)
    }
}

impl VerifiedTokens {
    pub fn new(capacity: usize) -> VerifiedTokens {
        VerifiedTokens {
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The claims of `token` if its signature was verified before.
    pub fn get(&self, token: &str) -> Option<Arc<Claims>> {
        if token.len() > MAX_TOKEN_LEN {
            return None;
        }
        // Hashed before the lock is taken: no request waits for another's hashing.
        let key = Key::of(token);
        self.entries.lock().unwrap().get(&key).cloned()
    }

    /// Remembers that `token`'s signature is good. `now` (Unix seconds) decides which
    /// entries have expired when room is needed.
    pub fn insert(&self, token: &str, claims: Arc<Claims>, now: i64) {
        if token.len() > MAX_TOKEN_LEN {
            return;
        }
        let key = Key::of(token);
        let mut entries = self.entries.lock().unwrap();
        if entries.len() >= self.capacity {
            entries.retain(|_, c| c.exp >= now);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key, claims);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Arc<Claims> {
        Arc::new(Claims {
            iss: "berth".into(),
            sub: "alice".into(),
            aud: "registry".into(),
            exp,
            nbf: 0,
            iat: 0,
            jti: "j".into(),
            access: vec![],
        })
    }

    #[test]
    fn only_the_same_token_hits() {
        let v = VerifiedTokens::default();
        v.insert("aaa.bbb.ccc", claims(100), 0);
        assert!(v.get("aaa.bbb.ccc").is_some());
        assert!(v.get("aaa.bbb.ccd").is_none());
        assert!(v.get("aaa.bbb.cc").is_none());
        assert!(v.get("").is_none());
    }

    #[test]
    fn long_tokens_are_never_kept() {
        let v = VerifiedTokens::default();
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        v.insert(&long, claims(100), 0);
        assert!(v.get(&long).is_none());
        assert_eq!(v.len(), 0);
        let longest = "a".repeat(MAX_TOKEN_LEN);
        v.insert(&longest, claims(100), 0);
        assert!(v.get(&longest).is_some());
    }

    #[test]
    fn size_is_bounded_and_expired_entries_go_first() {
        let v = VerifiedTokens::new(3);
        v.insert("expired", claims(10), 0);
        v.insert("live1", claims(100), 0);
        v.insert("live2", claims(100), 0);
        v.insert("live3", claims(100), 50);
        assert_eq!(v.len(), 3);
        assert!(v.get("expired").is_none());
        assert!(v.get("live1").is_some());
        // Full of live entries: they all go, the new one stays.
        v.insert("live4", claims(100), 50);
        assert_eq!(v.len(), 1);
        assert!(v.get("live4").is_some());
        for i in 0..100 {
            v.insert(&format!("t{i}"), claims(100), 50);
            assert!(v.len() <= 3);
        }
    }
}
