//! Pull-through caches: each `[[proxy]]` makes Berth a caching mirror of one
//! upstream registry under a local namespace (`hub/library/nginx` is Docker Hub's
//! `library/nginx`).
//!
//! What is fetched is stored as any repository's content, under the local name, so
//! pulls count, garbage collection and the web UI see it like the rest. Content by
//! digest never changes, so once cached it is served without asking the upstream. A
//! tag is trusted for the proxy's `tag_ttl`, then confirmed with a `HEAD` (Docker Hub
//! does not count those as pulls) and fetched again only if its digest moved. When
//! the upstream cannot answer (down, limiting, failing), a cached tag is served as
//! it was (stale); what was never cached fails with the upstream's condition. Blob
//! misses stream through (`fetches`); everything from an upstream is verified
//! against its digest before it is stored.

mod destinations;
pub mod error;
mod fetches;
pub mod metrics;
mod spool;
pub mod upstream;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use berth_config::{ProxyAccess, ProxyConfig};
use berth_oci::{Algorithm, Digest, Reference};
use berth_storage::manifests::StoredManifest;
use berth_storage::repos::Page;
use berth_storage::BlobInfo;
use berth_storage::{Storage, StorageError};

pub use error::{Missing, ProxyError, Result};
pub use fetches::Following;
use fetches::{DiskClaims, Fetches, Source};
use metrics::ProxyMetrics;
use upstream::Upstream;

/// Tags whose validation times are remembered at most (per proxy); past it the
/// memory is cleared and tags are confirmed again on their next pull.
const MAX_TRUSTED_TAGS: usize = 65_536;
/// While the upstream cannot confirm a cached tag, it is asked again this often.
const STALE_RETRY: std::time::Duration = std::time::Duration::from_secs(30);
/// Image configurations are fetched with their manifest (for the platform the web UI
/// shows) up to this size; larger ones when a client asks.
const MAX_CONFIG_PREFETCH: u64 = 1024 * 1024;

/// Every configured proxy.
#[derive(Default)]
pub struct Proxies {
    proxies: Vec<Arc<Proxy>>,
}

/// A repository name that belongs to a proxy, resolved.
pub struct Route<'a> {
    pub proxy: &'a Arc<Proxy>,
    /// The upstream's name for the repository.
    pub remote: String,
}

impl Proxies {
    /// The configured proxies over `storage`, their credentials read from the
    /// environment now, their fetches spooled under `data_dir`.
    pub fn open(configs: &[ProxyConfig], storage: &Storage, data_dir: &Path) -> Result<Proxies> {
        let mut proxies = Vec::new();
        let claims = Arc::new(DiskClaims::default());
        for config in configs {
            let setup =
                |what: String| ProxyError::Setup(format!("proxy {}: {what}", config.prefix));
            let credentials = match &config.credentials_env {
                None => None,
                Some((user, password)) => {
                    let var = |name: &str| {
                        std::env::var(name).map_err(|_| {
                            setup(format!(
                                "environment variable {name} (its credentials) is not set"
                            ))
                        })
                    };
                    Some((var(user)?, var(password)?))
                }
            };
            let upstream =
                Upstream::new(&config.upstream, credentials, storage.max_manifest_bytes())?;
            let spool = data_dir.join("proxy-spool").join(&config.prefix);
            let fetches = Fetches::new(spool.clone(), claims.clone())
                .map_err(|e| setup(format!("spool directory {}: {e}", spool.display())))?;
            proxies.push(Arc::new(Proxy {
                config: config.clone(),
                upstream: Arc::new(upstream),
                storage: storage.clone(),
                fetches: Arc::new(fetches),
                metrics: ProxyMetrics::new(&config.prefix),
                trusted: Mutex::default(),
            }));
        }
        Ok(Proxies { proxies })
    }

    /// The proxy a repository name is under (`<prefix>/<upstream name>`), if any.
    pub fn route(&self, name: &str) -> Option<Route<'_>> {
        let (prefix, rest) = name.split_once('/')?;
        let proxy = self.proxies.iter().find(|p| p.config.prefix == prefix)?;
        Some(Route {
            proxy,
            remote: proxy.upstream.repository(rest),
        })
    }

    pub fn by_prefix(&self, prefix: &str) -> Option<&Arc<Proxy>> {
        self.proxies.iter().find(|p| p.config.prefix == prefix)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Proxy>> {
        self.proxies.iter()
    }
}

/// Whether a blob is known to be listed by a manifest of the repository asked for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Listed {
    /// By the manifest the upstream just served for it, being cached.
    Yes,
    /// If a manifest cached there lists it.
    IfCached,
}

/// A blob to serve.
pub enum Blob {
    Cached(BlobInfo),
    /// Arriving from the upstream now.
    Following(Following),
}

/// One pull-through cache.
pub struct Proxy {
    pub config: ProxyConfig,
    upstream: Arc<Upstream>,
    storage: Storage,
    fetches: Arc<Fetches>,
    metrics: ProxyMetrics,
    /// Until when each cached tag (`repo:tag`) is served without asking the upstream.
    trusted: Mutex<HashMap<String, Instant>>,
}

impl Proxy {
    pub fn metrics(&self) -> &ProxyMetrics {
        &self.metrics
    }

    /// Whether repositories this proxy creates are listed publicly.
    fn public(&self) -> bool {
        self.config.access == ProxyAccess::Anonymous
    }

    /// The manifest `reference` of the local repository `local` (upstream `remote`).
    pub async fn manifest(
        &self,
        local: &str,
        remote: &str,
        reference: &Reference,
    ) -> Result<Arc<StoredManifest>> {
        let cached = match self.storage.manifest(local, reference).await {
            Ok(m) => Some(m),
            Err(StorageError::ManifestUnknown(_) | StorageError::NameUnknown(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let tag = match reference {
            Reference::Digest(digest) => {
                if let Some(m) = cached {
                    self.metrics.hit();
                    return Ok(m);
                }
                self.metrics.miss();
                let fetched = self
                    .fetch_manifest(local, remote, digest.as_str(), None)
                    .await;
                if let Err(e) = &fetched {
                    self.metrics.upstream_error(e);
                }
                return fetched;
            }
            Reference::Tag(tag) => tag,
        };
        let key = format!("{local}:{tag}");
        if let Some(m) = &cached {
            let trusted = self
                .trusted
                .lock()
                .expect("trusted lock")
                .get(&key)
                .is_some_and(|until| Instant::now() < *until);
            if trusted {
                self.metrics.hit();
                return Ok(m.clone());
            }
        }
        let answer = async {
            let upstream_digest = self.upstream.manifest_digest(remote, tag).await?;
            if let (Some(m), Some(d)) = (&cached, &upstream_digest) {
                if m.digest == *d {
                    self.metrics.hit();
                    return Ok(m.clone());
                }
            }
            self.metrics.miss();
            // By digest when the upstream said which (verified), else by tag.
            let reference = upstream_digest
                .as_ref()
                .map_or(tag.as_str(), Digest::as_str);
            self.fetch_manifest(local, remote, reference, Some(tag))
                .await
        }
        .await;
        match (answer, cached) {
            (Ok(m), _) => {
                self.trust(key, self.config.tag_ttl);
                Ok(m)
            }
            (Err(e), Some(m)) if e.serves_stale() => {
                self.metrics.upstream_error(&e);
                self.metrics.stale();
                tracing::warn!(error = %e, repo = local, tag, "serving the cached tag: the upstream could not confirm it");
                // Asked again after a short while, not by every pull of an outage.
                self.trust(key, self.config.tag_ttl.min(STALE_RETRY));
                Ok(m)
            }
            (Err(e), _) => {
                self.metrics.upstream_error(&e);
                Err(e)
            }
        }
    }

    /// Serves the cached `key` (`repo:tag`) without asking for `period`.
    fn trust(&self, key: String, period: std::time::Duration) {
        let mut trusted = self.trusted.lock().expect("trusted lock");
        if trusted.len() >= MAX_TRUSTED_TAGS {
            trusted.clear();
        }
        trusted.insert(key, Instant::now() + period);
    }

    /// Fetches a manifest by `reference` (a digest, or a tag when the upstream named
    /// no digest), verifies and stores it, tagged `tag`.
    async fn fetch_manifest(
        &self,
        local: &str,
        remote: &str,
        reference: &str,
        tag: Option<&str>,
    ) -> Result<Arc<StoredManifest>> {
        let fetched = self.upstream.manifest(remote, reference).await?;
        let expected = reference.parse::<Digest>().ok();
        // Stored under the digest it is asked for by (sha256 when by tag alone).
        let algorithm = expected
            .as_ref()
            .map_or(Algorithm::Sha256, Digest::algorithm);
        if let Some(expected) = expected {
            let actual = Digest::of(expected.algorithm(), &fetched.body);
            if actual != expected {
                return Err(ProxyError::DigestMismatch {
                    upstream: self.upstream.url.clone(),
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                });
            }
        }
        self.prefetch_config(local, remote, &fetched.body).await;
        let stored = self
            .storage
            .cache_manifest(
                local,
                tag,
                fetched.content_type.as_deref(),
                &fetched.body,
                algorithm,
                self.public(),
            )
            .await
            .map_err(|e| match e {
                // What Berth cannot store (Docker's old schema 1, say) is the
                // upstream's answer, not a fault here.
                StorageError::ManifestInvalid(_)
                | StorageError::Oci(_)
                | StorageError::ManifestTooLarge { .. } => ProxyError::BadAnswer {
                    upstream: self.upstream.url.clone(),
                    reason: format!("manifest {reference}: {e}"),
                },
                other => other.into(),
            })?;
        Ok(self
            .storage
            .manifest(local, &Reference::Digest(stored))
            .await?)
    }

    /// Caches an image manifest's configuration before the manifest, so the manifest
    /// is stored with its platform. Best effort: the client asks for it next anyway.
    async fn prefetch_config(&self, local: &str, remote: &str, manifest: &[u8]) {
        let manifest: serde_json::Value = serde_json::from_slice(manifest).unwrap_or_default();
        let config = &manifest["config"];
        let (Some(digest), Some(size)) = (
            config["digest"]
                .as_str()
                .and_then(|d| d.parse::<Digest>().ok()),
            config["size"].as_u64(),
        ) else {
            return;
        };
        let is_image = config["mediaType"]
            .as_str()
            .is_some_and(|t| berth_oci::media_types::IMAGE_CONFIG_TYPES.contains(&t));
        if !is_image || size > MAX_CONFIG_PREFETCH {
            return;
        }
        // Listed by the manifest about to be cached under `local`.
        match self.cached_blob(local, &digest, Listed::Yes).await {
            Ok(None) => {}
            Ok(Some(_)) | Err(_) => return,
        }
        let fetched = async {
            let bytes = self
                .upstream
                .small_blob(remote, digest.as_str(), size)
                .await?;
            self.metrics.upstream_bytes(bytes.len() as u64);
            let body = futures::stream::iter([Ok::<_, std::io::Error>(bytes)]);
            // Stored only if it hashes to its digest.
            self.storage.put_blob(local, &digest, body).await?;
            Ok::<_, ProxyError>(())
        }
        .await;
        if let Err(e) = fetched {
            tracing::debug!(error = %e, repo = local, %digest, "prefetching an image configuration failed");
        }
    }

    /// A blob for a `GET`: from the cache, else following its fetch from the
    /// upstream. Only a blob a manifest cached in `local` lists is fetched (clients
    /// ask for the manifest first), and only at the size it lists.
    pub async fn blob(&self, local: &str, remote: &str, digest: &Digest) -> Result<Blob> {
        // As `cached_blob`, with the listing read once for the link and the fetch.
        if let Some(blob) = self.own_blob(local, digest).await? {
            self.metrics.hit();
            return Ok(Blob::Cached(blob));
        }
        let Some(size) = self.storage.listed_blob_size(local, digest).await? else {
            return Err(StorageError::BlobUnknown(digest.clone()).into());
        };
        if let Some(blob) = self.linked_blob(local, digest).await? {
            self.metrics.hit();
            return Ok(Blob::Cached(blob));
        }
        let source = Source {
            upstream: self.upstream.clone(),
            storage: self.storage.clone(),
            metrics: self.metrics.clone(),
            local: local.to_owned(),
            remote: remote.to_owned(),
        };
        match self.fetches.follow(source, digest, size).await? {
            Some(following) => Ok(Blob::Following(following)),
            // Stored since this request looked.
            None => match self.cached_blob(local, digest, Listed::IfCached).await? {
                Some(blob) => Ok(Blob::Cached(blob)),
                None => Err(StorageError::BlobUnknown(digest.clone()).into()),
            },
        }
    }

    /// A blob's size for a `HEAD`: the cache's, else the upstream's (nothing fetched).
    pub async fn blob_size(&self, local: &str, remote: &str, digest: &Digest) -> Result<u64> {
        if let Some(blob) = self.cached_blob(local, digest, Listed::IfCached).await? {
            return Ok(blob.size);
        }
        let size = self.upstream.blob_size(remote, digest.as_str()).await;
        match size {
            Ok(Some(size)) => Ok(size),
            Ok(None) => Err(ProxyError::BadAnswer {
                upstream: self.upstream.url.clone(),
                reason: format!("no size for blob {digest}"),
            }),
            Err(e) => {
                self.metrics.upstream_error(&e);
                Err(e)
            }
        }
    }

    /// The blob from the cache: `local`'s, or linked from another repository of
    /// this proxy (images share layers) when a manifest of `local` lists it. (Only
    /// then: a link makes `local` a repository, and any name asked for must not.)
    async fn cached_blob(
        &self,
        local: &str,
        digest: &Digest,
        listed: Listed,
    ) -> Result<Option<BlobInfo>> {
        if let Some(blob) = self.own_blob(local, digest).await? {
            return Ok(Some(blob));
        }
        if listed == Listed::IfCached
            && self
                .storage
                .listed_blob_size(local, digest)
                .await?
                .is_none()
        {
            return Ok(None);
        }
        self.linked_blob(local, digest).await
    }

    /// The blob as `local` holds it already.
    async fn own_blob(&self, local: &str, digest: &Digest) -> Result<Option<BlobInfo>> {
        match self.storage.blob(local, digest).await {
            Ok(blob) => Ok(Some(blob)),
            Err(StorageError::BlobUnknown(_) | StorageError::NameUnknown(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The blob linked into `local` from another repository of this proxy that holds
    /// it (the caller knows a manifest of `local` lists it).
    async fn linked_blob(&self, local: &str, digest: &Digest) -> Result<Option<BlobInfo>> {
        let Some(holder) = self
            .storage
            .repository_with_blob(&self.config.prefix, digest)
            .await?
        else {
            return Ok(None);
        };
        if !self.storage.mount_blob(local, &holder, digest).await? {
            return Ok(None);
        }
        Ok(Some(self.storage.blob(local, digest).await?))
    }

    /// The upstream's referrers of `digest` (an image index, and whether it applied
    /// the filter); `None` when the upstream has no referrers API or cannot answer
    /// (then the cache's own are listed).
    pub async fn referrers(
        &self,
        remote: &str,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<(bytes::Bytes, bool)>> {
        match self
            .upstream
            .referrers(remote, digest.as_str(), artifact_type)
            .await
        {
            Ok(answer) => Ok(answer),
            Err(e) if e.serves_stale() => {
                self.metrics.upstream_error(&e);
                self.metrics.stale();
                Ok(None)
            }
            Err(e) => {
                self.metrics.upstream_error(&e);
                Err(e)
            }
        }
    }

    /// The upstream's tags of `remote` (its JSON `tags`, at most `n` after `last`),
    /// and whether it has more; the cached ones when it cannot answer. `page`: the
    /// most one answer lists (`n` is capped to it; the upstream's own answer is read
    /// within its byte limit).
    pub async fn tags(
        &self,
        local: &str,
        remote: &str,
        n: Option<u64>,
        page: u64,
        last: Option<&str>,
    ) -> Result<Page> {
        let n = n.map(|n| n.min(page));
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        if let Some(n) = n {
            query.append_pair("n", &n.to_string());
        }
        if let Some(last) = last {
            query.append_pair("last", last);
        }
        match self.upstream.tags(remote, &query.finish()).await {
            Ok((body, link)) => {
                #[derive(serde::Deserialize)]
                struct Tags {
                    tags: Option<Vec<String>>,
                }
                let tags: Tags =
                    serde_json::from_slice(&body).map_err(|e| ProxyError::BadAnswer {
                        upstream: self.upstream.url.clone(),
                        reason: format!("tag list: {e}"),
                    })?;
                // Only tags by the grammar: they go into Berth's own answer and links.
                let mut items = tags.tags.unwrap_or_default();
                items.retain(|t| berth_oci::names::validate_tag(t).is_ok());
                Ok(Page {
                    items,
                    more: link.is_some(),
                })
            }
            Err(e) if e.serves_stale() => {
                self.metrics.upstream_error(&e);
                self.metrics.stale();
                self.storage
                    .tags(local, n.unwrap_or(page), last)
                    .await
                    .map_err(|_| e)
            }
            Err(e) => {
                self.metrics.upstream_error(&e);
                Err(e)
            }
        }
    }
}
