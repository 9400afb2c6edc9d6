//! An in-process cache of the pull path's metadata (manifest lookups, blob lookups,
//! tag lists), so a pull is a hash-map read rather than a database query.
//!
//! Entries are grouped by repository; any write to a repository's manifests, tags or
//! blob links drops that repository's entries and bumps its generation. A reader
//! notes the generation before querying the database and stores its result only if
//! no write happened meanwhile, so a stale answer can never be cached.
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

pub struct MetaCache {
    inner: Mutex<Inner>,
    enabled: bool,
}

impl Default for MetaCache {
    fn default() -> MetaCache {
        MetaCache {
            inner: Mutex::default(),
            enabled: true,
        }
    }
}

impl MetaCache {
    /// A cache that never holds anything: every lookup goes to the database.
    pub fn disabled() -> MetaCache {
        MetaCache {
            enabled: false,
            ..MetaCache::default()
        }
    }

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
            r.manifests.insert(reference.to_owned(), m).is_none()
        });
    }

    pub fn put_blob(&self, repo: &str, ticket: Ticket, blob: BlobInfo) {
        self.fill(repo, ticket, 0, |r| {
            r.blobs.insert(blob.digest.to_string(), blob).is_none()
        });
    }

    pub fn put_tags(&self, repo: &str, ticket: Ticket, tags: Arc<Vec<String>>) {
        let size = tags.iter().map(String::len).sum();
        self.fill(repo, ticket, size, |r| r.tags.replace(tags).is_none());
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
        entry.generation += 1;
        let dropped_entries =
            entry.manifests.len() + entry.blobs.len() + usize::from(entry.tags.is_some());
        let dropped_bytes: usize = entry
            .manifests
            .values()
            .map(|m| m.content.len())
            .sum::<usize>()
            + entry
                .tags
                .as_ref()
                .map_or(0, |t| t.iter().map(String::len).sum());
        entry.manifests.clear();
        entry.blobs.clear();
        entry.tags = None;
        inner.entries -= dropped_entries;
        inner.manifest_bytes -= dropped_bytes;
    }

    fn fill(
        &self,
        repo: &str,
        ticket: Ticket,
        bytes: usize,
        insert: impl FnOnce(&mut RepoEntries) -> bool,
    ) {
        if !self.enabled {
            return;
        }
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
        if insert(entry) {
            inner.entries += 1;
            inner.manifest_bytes += bytes;
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
        let other = cache.ticket("other");
        cache.put_tags("other", other, Arc::new(vec!["a".into()]));
        assert_eq!(cache.tags("other").unwrap().as_slice(), ["a".to_string()]);
    }

    #[test]
    fn a_disabled_cache_holds_nothing() {
        let cache = MetaCache::disabled();
        let ticket = cache.ticket("r");
        cache.put_manifest("r", ticket, "latest", manifest(b"m"));
        cache.put_tags("r", ticket, Arc::new(vec!["a".into()]));
        assert!(cache.manifest("r", "latest").is_none());
        assert!(cache.tags("r").is_none());
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
