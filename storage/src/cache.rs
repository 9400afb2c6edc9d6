//! An in-process cache of the pull path's metadata (manifest lookups, blob lookups,
//! tag lists), so a pull is a hash-map read rather than a database query.
//!
//! Entries are grouped by repository; any write to a repository's manifests, tags or
//! blob links drops that repository's entries and bumps its generation. A reader
//! notes the generation before querying the database and stores its result only if
//! no write happened meanwhile, so a stale answer can never be cached. Replicas
//! sharing a database also drop what other replicas change (`change_feed`, else a
//! check of the repository's generation per read, `generations`), so another
//! replica's writes are seen at once.
//! Size is bounded: when the cached manifest bytes or entry count pass the limits,
//! everything is dropped and refilled on demand.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::blobs::BlobInfo;
use crate::manifests::StoredManifest;

const MAX_MANIFEST_BYTES: usize = 32 * 1024 * 1024;
const MAX_ENTRIES: usize = 200_000;

#[derive(Default)]
struct RepoEntries {
    generation: u64,
    manifests: HashMap<String, Arc<StoredManifest>>,
    blobs: HashMap<String, BlobInfo>,
    tags: Option<Arc<Vec<String>>>,
    /// The repository's generation in a shared database these entries are current at.
    db_generation: i64,
}

impl RepoEntries {
    /// Drops the entries and bumps the generation, so in-flight reads do not refill
    /// them; returns the entries and manifest bytes dropped.
    fn clear(&mut self) -> (usize, usize) {
        self.generation += 1;
        let entries = self.manifests.len() + self.blobs.len() + usize::from(self.tags.is_some());
        let bytes = self
            .manifests
            .values()
            .map(|m| m.content.len())
            .sum::<usize>()
            + self
                .tags
                .as_ref()
                .map_or(0, |t| t.iter().map(String::len).sum());
        self.manifests.clear();
        self.blobs.clear();
        self.tags = None;
        (entries, bytes)
    }
}

#[derive(Default)]
struct Inner {
    repos: HashMap<String, RepoEntries>,
    manifest_bytes: usize,
    entries: usize,
    /// Bumped when everything is dropped, so in-flight readers do not refill stale data.
    epoch: u64,
}

/// A reader's ticket: where the repository's data stood before it queried the database.
#[derive(Clone, Copy, PartialEq)]
pub struct Ticket {
    epoch: u64,
    generation: u64,
}

#[derive(Default)]
pub struct MetaCache {
    inner: Mutex<Inner>,
}

impl MetaCache {
    pub fn ticket(&self, repo: &str) -> Ticket {
        let inner = self.inner.lock().unwrap();
        Ticket {
            epoch: inner.epoch,
            generation: inner.repos.get(repo).map_or(0, |r| r.generation),
        }
    }

    pub fn manifest(&self, repo: &str, reference: &str) -> Option<Arc<StoredManifest>> {
        let inner = self.inner.lock().unwrap();
        inner.repos.get(repo)?.manifests.get(reference).cloned()
    }

    pub fn blob(&self, repo: &str, digest: &str) -> Option<BlobInfo> {
        let inner = self.inner.lock().unwrap();
        inner.repos.get(repo)?.blobs.get(digest).cloned()
    }

    pub fn tags(&self, repo: &str) -> Option<Arc<Vec<String>>> {
        let inner = self.inner.lock().unwrap();
        inner.repos.get(repo)?.tags.clone()
    }

    pub fn put_manifest(
        &self,
        repo: &str,
        ticket: Ticket,
        reference: &str,
        m: Arc<StoredManifest>,
    ) {
        let size = m.content.len();
        self.fill(repo, ticket, size, |r| {
            r.manifests
                .insert(reference.to_owned(), m)
                .map(|old| old.content.len())
        });
    }

    pub fn put_blob(&self, repo: &str, ticket: Ticket, blob: BlobInfo) {
        self.fill(repo, ticket, 0, |r| {
            r.blobs.insert(blob.digest.to_string(), blob).map(|_| 0)
        });
    }

    pub fn put_tags(&self, repo: &str, ticket: Ticket, tags: Arc<Vec<String>>) {
        let size = tags.iter().map(String::len).sum();
        self.fill(repo, ticket, size, |r| {
            r.tags
                .replace(tags)
                .map(|old| old.iter().map(String::len).sum())
        });
    }

    /// Drops everything cached (garbage collection deletes across repositories).
    pub fn invalidate_all(&self) {
        let mut inner = self.inner.lock().unwrap();
        inner.repos.clear();
        inner.manifest_bytes = 0;
        inner.entries = 0;
        inner.epoch += 1;
    }

    /// Drops everything cached for `repo`: call after (or instead of) any write to it.
    pub fn invalidate(&self, repo: &str) {
        let mut inner = self.inner.lock().unwrap();
        let entry = inner.repos.entry(repo.to_owned()).or_default();
        let (entries, bytes) = entry.clear();
        inner.entries -= entries;
        inner.manifest_bytes -= bytes;
    }

    /// Brings `repo`'s entries up to `generation`, the repository's generation in a
    /// shared database (see `generations`): entries cached at an older one are dropped.
    pub fn confirm(&self, repo: &str, generation: i64) {
        let mut inner = self.inner.lock().unwrap();
        let inner = &mut *inner;
        if !inner.repos.contains_key(repo) {
            inner.repos.insert(repo.to_owned(), RepoEntries::default());
        }
        let entry = inner.repos.get_mut(repo).expect("inserted above");
        if entry.db_generation >= generation {
            return;
        }
        let (entries, bytes) = entry.clear();
        entry.db_generation = generation;
        inner.entries -= entries;
        inner.manifest_bytes -= bytes;
    }

    fn fill(
        &self,
        repo: &str,
        ticket: Ticket,
        bytes: usize,
        // Stores the entry; returns the bytes of the one it replaced, if any.
        insert: impl FnOnce(&mut RepoEntries) -> Option<usize>,
    ) {
        let mut inner = self.inner.lock().unwrap();
        if inner.epoch != ticket.epoch {
            return;
        }
        if inner.manifest_bytes + bytes > MAX_MANIFEST_BYTES || inner.entries >= MAX_ENTRIES {
            // Start over rather than track recency: bounded memory, simple, rare.
            inner.repos.clear();
            inner.manifest_bytes = 0;
            inner.entries = 0;
            inner.epoch += 1;
            return;
        }
        let entry = inner.repos.entry(repo.to_owned()).or_default();
        if entry.generation != ticket.generation {
            return;
        }
        match insert(entry) {
            None => {
                inner.entries += 1;
                inner.manifest_bytes += bytes;
            }
            // Two readers filling one key (it changed between their reads).
            Some(replaced) => inner.manifest_bytes = inner.manifest_bytes + bytes - replaced,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::{Algorithm, Digest};

    fn manifest(body: &[u8]) -> Arc<StoredManifest> {
        Arc::new(StoredManifest {
            digest: Digest::of(Algorithm::Sha256, body),
            media_type: "x".into(),
            content: bytes::Bytes::copy_from_slice(body),
        })
    }

    #[test]
    fn a_write_between_read_and_fill_keeps_the_stale_answer_out() {
        let cache = MetaCache::default();
        let ticket = cache.ticket("r");
        cache.invalidate("r");
        cache.put_manifest("r", ticket, "latest", manifest(b"old"));
        assert!(cache.manifest("r", "latest").is_none());
        let ticket = cache.ticket("r");
        cache.put_manifest("r", ticket, "latest", manifest(b"new"));
        assert_eq!(cache.manifest("r", "latest").unwrap().content, &b"new"[..]);
        cache.invalidate("r");
        assert!(cache.manifest("r", "latest").is_none());
        let ticket = cache.ticket("r");
        cache.confirm("r", 3);
        cache.put_manifest("r", ticket, "latest", manifest(b"read before generation 3"));
        assert!(cache.manifest("r", "latest").is_none());
        let other = cache.ticket("other");
        cache.put_tags("other", other, Arc::new(vec!["a".into()]));
        assert_eq!(cache.tags("other").unwrap().as_slice(), ["a".to_string()]);
    }

    #[test]
    fn a_newer_generation_drops_what_an_older_one_cached() {
        let cache = MetaCache::default();
        cache.confirm("r", 1);
        let ticket = cache.ticket("r");
        cache.put_manifest("r", ticket, "latest", manifest(b"m"));
        // A late answer from an older check changes nothing.
        cache.confirm("r", 0);
        cache.confirm("r", 1);
        assert!(cache.manifest("r", "latest").is_some());
        cache.confirm("r", 2);
        assert!(cache.manifest("r", "latest").is_none());
        assert_eq!(cache.inner.lock().unwrap().entries, 0);
    }

    #[test]
    fn a_replaced_entry_is_counted_once() {
        let cache = MetaCache::default();
        let ticket = cache.ticket("r");
        cache.put_manifest("r", ticket, "latest", manifest(b"short"));
        cache.put_manifest("r", ticket, "latest", manifest(b"a longer manifest"));
        cache.put_tags("r", ticket, Arc::new(vec!["a".into()]));
        cache.put_tags("r", ticket, Arc::new(vec!["abc".into(), "d".into()]));
        {
            let inner = cache.inner.lock().unwrap();
            assert_eq!((inner.entries, inner.manifest_bytes), (2, 17 + 4));
        }
        // Dropping them takes back exactly what was counted (no underflow).
        cache.invalidate("r");
        let inner = cache.inner.lock().unwrap();
        assert_eq!((inner.entries, inner.manifest_bytes), (0, 0));
    }

    #[test]
    fn memory_stays_bounded() {
        let cache = MetaCache::default();
        let big = vec![b'x'; MAX_MANIFEST_BYTES / 4 + 1];
        for i in 0..10 {
            let t = cache.ticket("r");
            cache.put_manifest("r", t, &i.to_string(), manifest(&big));
        }
        let inner = cache.inner.lock().unwrap();
        assert!(inner.manifest_bytes <= MAX_MANIFEST_BYTES);
    }
}
