//! Group commit for flushes: many writers wait on one flush instead of one each.
//!
//! A writer takes a ticket after its write; a flush that starts after the ticket was
//! taken covers that write. While one flush runs, later writers queue, and the next
//! flush covers all of them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Mutex;

type Flush = dyn Fn() -> std::io::Result<()> + Send + Sync;

pub struct GroupSync {
    flush: Arc<Flush>,
    requested: AtomicU64,
    /// The highest ticket known durable; held while a flush runs.
    flushed: Mutex<u64>,
}

impl GroupSync {
    /// `flush` is a blocking call (an fsync) run on the blocking thread pool.
    pub fn new(flush: impl Fn() -> std::io::Result<()> + Send + Sync + 'static) -> GroupSync {
        GroupSync {
            flush: Arc::new(flush),
            requested: AtomicU64::new(0),
            flushed: Mutex::new(0),
        }
    }

    /// Returns once everything written before this call is on stable storage.
    pub async fn sync(&self) -> std::io::Result<()> {
        let ticket = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let mut flushed = self.flushed.lock().await;
        if *flushed >= ticket {
            return Ok(());
        }
        let covers = self.requested.load(Ordering::SeqCst);
        let flush = self.flush.clone();
        tokio::task::spawn_blocking(move || flush())
            .await
            .map_err(std::io::Error::other)??;
        *flushed = covers;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_share_flushes() {
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        let sync = Arc::new(GroupSync::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(20));
            Ok(())
        }));
        let waiters: Vec<_> = (0..50)
            .map(|_| {
                let s = sync.clone();
                tokio::spawn(async move { s.sync().await })
            })
            .collect();
        for w in waiters {
            w.await.unwrap().unwrap();
        }
        let flushes = count.load(Ordering::SeqCst);
        assert!(
            (1..50).contains(&flushes),
            "{flushes} flushes for 50 writers"
        );
        // A write after every flush so far still gets a flush of its own.
        sync.sync().await.unwrap();
        assert_eq!(count.load(Ordering::SeqCst), flushes + 1);
    }
}
