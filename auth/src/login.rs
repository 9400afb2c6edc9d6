//! Checking a login, the one way every entry point does it (the token endpoint's
//! password and token grants, the web sign-in form):
//!
//! * Failed logins are limited per user name and per client address ([`LoginLimiter`]).
//!   A password attempt is counted *before* its password is checked, and checks for
//!   one user name run one at a time, so a burst of concurrent guesses gets no more
//!   argon2 checks than the limit allows; the rest are refused with
//!   [`AuthError::RateLimited`].
//! * A correct password is remembered for a few minutes ([`CredentialCache`]): the
//!   same login again (150 clients at once, say) costs a database read, not argon2.
//!   The user row is read on every login and a remembered password only counts while
//!   the row's password hash is the one it was verified against.
//! * argon2 itself runs a few at a time process-wide (see `password`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sea_orm::DatabaseConnection;

use crate::cache::CredentialCache;
use crate::error::AuthError;
use crate::limiter::{self, LoginLimiter};
use crate::password;
use crate::pat::{self, VerifiedToken};
use crate::users::{self, User};

/// Login checks, shared by the token endpoint and the web UI of one process (they
/// reach them through [`Accounts`](crate::Accounts)).
#[derive(Default)]
pub(crate) struct Logins {
    limiter: LoginLimiter,
    cache: CredentialCache,
    turns: Turns,
    /// argon2 verifications made (the slow path), for tests and diagnostics.
    checks: AtomicU64,
}

impl Logins {
    /// The user whose password `password` is. Refused with
    /// [`AuthError::RateLimited`] after too many failures for this name or from this
    /// address (even with the right password), with [`AuthError::BadCredentials`] for
    /// a wrong password or an unknown user (alike, in answer and time), and with
    /// [`AuthError::Overloaded`] when too many password checks are waiting.
    pub async fn password(
        &self,
        db: &DatabaseConnection,
        name: &str,
        password: String,
        peer: Option<IpAddr>,
    ) -> Result<User, AuthError> {
        let keys = limiter::password_keys(name, peer);
        let recorded = self.limiter.check(db, &keys).await?;
        let tag = self.cache.tag(name, &password);
        if let Remembered::Yes(user) = self.remembered(db, name, &tag).await? {
            self.limiter.succeeded(db, &keys[..1], &recorded).await;
            return Ok(user);
        }
        // One check per name at a time: those queued behind a correct login find it
        // remembered, those behind failures find the limit reached.
        let _turn = self.turns.wait(name).await;
        let found = match self.remembered(db, name, &tag).await? {
            Remembered::Yes(user) => {
                self.limiter.succeeded(db, &keys[..1], &recorded).await;
                return Ok(user);
            }
            Remembered::No(found) => found,
        };
        self.limiter.attempt(db, &keys).await?;
        let stored = found.as_ref().map(|(_, hash)| hash.clone());
        self.checks.fetch_add(1, Ordering::Relaxed);
        match (password::verify(password, stored).await, found) {
            (Ok(true), Some((user, hash))) => {
                self.cache.insert(tag, hash);
                // This attempt counted on the user's key too, so it has a row now.
                let recorded = limiter::Recorded::of(&keys[..1]);
                self.limiter.succeeded(db, &keys[..1], &recorded).await;
                self.limiter.refund(db, &keys[1..]).await;
                Ok(user)
            }
            // Stays counted.
            (Ok(_), _) => Err(AuthError::BadCredentials),
            // Not judged (overloaded): not the client's failure.
            (Err(e), _) => {
                self.limiter.refund(db, &keys).await;
                Err(e)
            }
        }
    }

    /// Whether `tag` (their name and this password) was verified lately against the
    /// password hash `name`'s row has now; if not, the row as read (the user and
    /// their hash), so that checking the password needs no second read.
    async fn remembered(
        &self,
        db: &DatabaseConnection,
        name: &str,
        tag: &crate::cache::Tag,
    ) -> Result<Remembered, AuthError> {
        Ok(match users::credentials(db, name).await? {
            Some((user, hash)) if self.cache.hit(tag, &hash) => Remembered::Yes(user),
            found => Remembered::No(found),
        })
    }

    /// The user and scope of a personal access token or login token: `secret` given as
    /// `name`'s password, or (`name` None) as an OAuth2 refresh token. A token is a
    /// cheap lookup (SHA-256), so failures are counted after the fact, against the
    /// address only: a token's 256 random bits need no per-user limit, and wrong
    /// passwords sent for a user by someone else must not lock their CI's tokens out.
    pub async fn token(
        &self,
        db: &DatabaseConnection,
        name: Option<&str>,
        secret: &str,
        peer: Option<IpAddr>,
    ) -> Result<VerifiedToken, AuthError> {
        let keys = [limiter::address_key(peer)];
        self.limiter.check(db, &keys).await?;
        let found = pat::authenticate(db, name, secret).await;
        if let Err(AuthError::BadCredentials) = found {
            self.limiter.failed(db, &keys).await;
        }
        found
    }

    /// Counts a sign-up from `peer` (every attempt counts, so nobody farms accounts);
    /// refused once the address made too many lately.
    pub async fn signup(
        &self,
        db: &DatabaseConnection,
        peer: Option<IpAddr>,
    ) -> Result<(), AuthError> {
        self.limiter
            .attempt(db, &[limiter::new_names_key(peer)])
            .await
    }

    /// Counts an organization `creator` sets out to make from `peer`: every attempt
    /// counts, as a refused name tells that something holds it, so names are not
    /// probed faster than this. Against the creator, and against the address as a
    /// sign-up is (new names from one address share a budget, however many accounts
    /// it made).
    pub async fn new_org(
        &self,
        db: &DatabaseConnection,
        creator: &str,
        peer: Option<IpAddr>,
    ) -> Result<(), AuthError> {
        let keys = [format!("org:{creator}"), limiter::new_names_key(peer)];
        self.limiter.attempt(db, &keys).await
    }

    /// Verified passwords remembered now.
    #[cfg(test)]
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// Passwords checked with argon2 so far (remembered ones are not).
    #[cfg(test)]
    pub fn password_checks(&self) -> u64 {
        self.checks.load(Ordering::Relaxed)
    }
}

/// What [`Logins::remembered`] found.
enum Remembered {
    Yes(User),
    No(Option<(User, String)>),
}

/// One turn at a time per user name. The map holds only names someone is checking
/// or waiting for (with how many do), so it stays as small as the logins in flight.
#[derive(Default)]
struct Turns {
    names: Mutex<HashMap<String, Line>>,
}

/// A name's lock, and how many hold it or wait for it.
type Line = (Arc<tokio::sync::Mutex<()>>, usize);

struct Turn<'a> {
    turns: &'a Turns,
    name: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Turns {
    async fn wait(&self, name: &str) -> Turn<'_> {
        let lock = {
            let mut names = self.names.lock().unwrap();
            let entry = names.entry(name.to_owned()).or_default();
            entry.1 += 1;
            entry.0.clone()
        };
        // Counted from here: dropped while waiting (the client went away), the turn
        // still leaves the map as it found it.
        let mut turn = Turn {
            turns: self,
            name: name.to_owned(),
            guard: None,
        };
        turn.guard = Some(lock.lock_owned().await);
        turn
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut names = self.turns.names.lock().unwrap();
        if let Some(entry) = names.get_mut(&self.name) {
            entry.1 -= 1;
            if entry.1 == 0 {
                names.remove(&self.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::testing;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn turns_serialize_one_name_and_clean_up() {
        let turns = Arc::new(Turns::default());
        let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let (turns, inside) = (turns.clone(), inside.clone());
                tokio::spawn(async move {
                    let name = if i % 2 == 0 { "alice" } else { "bobby" };
                    let _turn = turns.wait(name).await;
                    let now = inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    assert!(now < 2, "one per name, two names");
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert!(turns.names.lock().unwrap().is_empty());
        // A waiter that gives up leaves nothing behind either.
        let held = turns.wait("alice").await;
        let gave_up =
            tokio::time::timeout(std::time::Duration::from_millis(20), turns.wait("alice")).await;
        assert!(gave_up.is_err());
        drop(held);
        assert!(turns.names.lock().unwrap().is_empty());
    }

    async fn accounts() -> (tempfile::TempDir, crate::Accounts) {
        let (dir, accounts) = testing::accounts().await;
        accounts
            .add_user("alice", "alice-password".into(), false)
            .await
            .unwrap();
        (dir, accounts)
    }

    const PEER: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)));

    async fn burst(
        accounts: &crate::Accounts,
        n: usize,
        password: &str,
    ) -> Vec<Result<User, AuthError>> {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let (accounts, password) = (accounts.clone(), password.to_owned());
                tokio::spawn(async move { accounts.check_password("alice", password, PEER).await })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        results
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_guesses_get_only_the_allowed_checks() {
        let (_dir, accounts) = accounts().await;
        let results = burst(&accounts, 40, "wrong-password").await;
        let checked = results
            .iter()
            .filter(|r| matches!(r, Err(AuthError::BadCredentials)))
            .count();
        let limited = results
            .iter()
            .filter(|r| matches!(r, Err(AuthError::RateLimited { .. })))
            .count();
        assert_eq!((checked, limited), (5, 35));
        assert_eq!(accounts.logins.password_checks(), 5);
        let right = accounts
            .check_password("alice", "alice-password".into(), PEER)
            .await;
        assert!(matches!(right, Err(AuthError::RateLimited { .. })));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_correct_logins_check_once_until_the_password_changes() {
        let (dir, accounts) = accounts().await;
        let results = burst(&accounts, 150, "alice-password").await;
        assert!(results
            .iter()
            .all(|r| r.as_ref().is_ok_and(|u| u.name == "alice")));
        let logins = &accounts.logins;
        assert_eq!(logins.password_checks(), 1, "the rest were remembered");
        assert_eq!(logins.cached(), 1);
        // Changed elsewhere (another process, with a pool of its own): the remembered
        // password stops working.
        let elsewhere = crate::Accounts::connect(&testing::url(&dir)).await.unwrap();
        elsewhere
            .set_password("alice", "new-password".into())
            .await
            .unwrap();
        let old = accounts
            .check_password("alice", "alice-password".into(), PEER)
            .await;
        assert!(matches!(old, Err(AuthError::BadCredentials)));
        assert_eq!(logins.password_checks(), 2);
        accounts
            .check_password("alice", "new-password".into(), PEER)
            .await
            .unwrap();
        // Removed: the remembered password is refused too.
        elsewhere.remove_user("alice").await.unwrap();
        let gone = accounts
            .check_password("alice", "new-password".into(), PEER)
            .await;
        assert!(matches!(gone, Err(AuthError::BadCredentials)));
    }
}
