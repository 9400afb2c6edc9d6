//! Password hashing with argon2id, off the async executor (it is deliberately slow)
//! and bounded: each computation takes ~19 MiB (argon2's default parameters), so at
//! most [`MAX_CONCURRENT`] run at once in the whole process, at most [`MAX_WAITING`]
//! more wait their turn, and beyond that a check fails at once with
//! [`AuthError::Overloaded`] instead of piling up memory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::LazyLock;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use tokio::sync::Semaphore;

use crate::error::AuthError;

pub const MIN_PASSWORD_LEN: usize = 8;

/// argon2 computations (hash or verify) running at once, process-wide.
pub const MAX_CONCURRENT: usize = 4;
/// Computations waiting for a turn before new ones are refused.
pub const MAX_WAITING: usize = 1024;

/// Runs CPU- and memory-heavy jobs on blocking threads, a few at a time.
pub struct Bounded {
    slots: Semaphore,
    /// Jobs waiting or running.
    queued: AtomicUsize,
    limit: usize,
}

/// Decrements the queue count however the job ends (done, or its caller went away).
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Bounded {
    pub fn new(concurrent: usize, waiting: usize) -> Bounded {
        Bounded {
            slots: Semaphore::new(concurrent),
            queued: AtomicUsize::new(0),
            limit: concurrent + waiting,
        }
    }

    /// Runs `job` on a blocking thread once a slot is free; fails at once when the
    /// queue is full. The slot is held by the job itself, so a caller that stops
    /// waiting (a client that disconnects) does not let more jobs run than allowed.
    pub async fn run<T, F>(&'static self, job: F) -> Result<T, AuthError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(AuthError::Overloaded {
                retry_after_secs: 1,
            });
        }
        let queued = Queued(&self.queued);
        let permit = self
            .slots
            .acquire()
            .await
            .map_err(|e| AuthError::Hashing(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            let _turn = (permit, queued);
            job()
        })
        .await
        .map_err(|e| AuthError::Hashing(e.to_string()))
    }
}

/// The process's argon2 computations.
static HASHING: LazyLock<Bounded> = LazyLock::new(|| Bounded::new(MAX_CONCURRENT, MAX_WAITING));

pub async fn hash(password: String) -> Result<String, AuthError> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(AuthError::PasswordTooShort);
    }
    HASHING
        .run(move || {
            Argon2::default()
                .hash_password(password.as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| AuthError::Hashing(e.to_string()))
        })
        .await?
}

/// Checks `password` against a stored hash; with no hash (unknown user) it still does
/// the same work against a fixed dummy, so timing does not reveal which users exist.
/// Fails only when the check could not run (too many waiting: [`AuthError::Overloaded`]).
pub async fn verify(password: String, stored: Option<String>) -> Result<bool, AuthError> {
    let known = stored.is_some();
    let hash = stored.unwrap_or_else(|| DUMMY_HASH.to_owned());
    HASHING
        .run(move || {
            let ok = Argon2::default()
                .verify_password(password.as_bytes(), hash.as_str())
                .is_ok();
            ok && known
        })
        .await
}

/// argon2id (default parameters) of a random password nobody knows.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$1iN1dTwoeu+ZkYqCHJ0emJ3L2QkRPzpHvRnoHfTUD3k";

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn hashes_verify_and_never_contain_the_password() {
        let h = hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(!h.contains("correct horse"));
        assert!(verify("correct horse".into(), Some(h.clone()))
            .await
            .unwrap());
        assert!(!verify("wrong horse!".into(), Some(h)).await.unwrap());
        assert!(!verify("anything at all".into(), None).await.unwrap());
        assert!(matches!(
            hash("short".into()).await,
            Err(AuthError::PasswordTooShort)
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn at_most_a_few_run_at_once_and_a_full_queue_refuses() {
        static POOL: LazyLock<Bounded> = LazyLock::new(|| Bounded::new(2, 3));
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let jobs: Vec<_> = (0..8)
            .map(|_| {
                let (running, peak) = (running.clone(), peak.clone());
                tokio::spawn(async move {
                    POOL.run(move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(100));
                        running.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
                })
            })
            .collect();
        let mut done = 0;
        let mut refused = 0;
        for j in jobs {
            match j.await.unwrap() {
                Ok(()) => done += 1,
                Err(AuthError::Overloaded { .. }) => refused += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2, "two slots");
        assert_eq!(
            (done, refused),
            (5, 3),
            "2 running + 3 waiting; the rest refused"
        );
        // Once drained, the pool takes work again.
        POOL.run(|| ()).await.unwrap();
        assert_eq!(POOL.queued.load(Ordering::SeqCst), 0);
    }
}
