//! Objects in an S3 bucket.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::signer::{Method, Signer};
use object_store::{BackoffConfig, ObjectStore, RetryConfig};

use super::backend::{Durability, ObjectWriter, UrlSigner};
use super::store_io::{self, StoreWriter};
use crate::error::Result;

/// A multipart upload already overlaps storing with receiving, so a body is one
/// object (which a redirect can point at), capped well below the 10,000 parts that
/// S3 allows an object.
const OBJECT_SIZE: u64 = 32 * 1024 * 1024 * 1024;

/// How requests other than reads are retried: within 5 s of their start. The client's
/// default, three minutes, would leave a push hanging long after the S3 server went
/// away, as its write, its abort and the deletion of what it wrote were each retried
/// that long; registry clients retry a failed push themselves. A write sends what is
/// already in memory (a part, a small object) at S3's pace, not the pusher's.
/// Reads keep the default: the client gives a request 30 s, and a longer download
/// resumes from where it stopped by a retry, which a bound from its start would forbid.
fn short_retries() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            base: 2.0,
        },
        max_retries: 10,
        retry_timeout: Duration::from_secs(5),
    }
}

/// How listing is retried: for up to 30 s, a second or two apart. Only the garbage
/// collector's orphan sweep lists, and no client waits on it; a server may fail a page
/// now and then (s3s-fs does when an object is deleted while it walks its directory,
/// and a busy store deletes objects all the time), and ten retries, within 5 s as for
/// writes or with the client's default backoff, can be spent in a few seconds, failing
/// the whole pass. Bounded to about the collector's lease: one listing request (30 s
/// of retries, then its last attempt's own 30 s) fits in its 120 s, renewed as objects
/// are listed; a renewal that comes late still holds unless another replica took the
/// lease over meanwhile, and two collectors at once are safe.
fn patient_retries() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: 100,
        retry_timeout: Duration::from_secs(30),
    }
}

/// An S3 bucket. Every finished write is durable by itself (S3 acknowledges a PUT or
/// CompleteMultipartUpload once stored).
pub struct S3 {
    /// Writes, lookups, deletes, signing: retried for 5 s (see [`short_retries`]).
    store: Arc<AmazonS3>,
    /// Reads of objects' bytes: the same bucket, with the client's default retries.
    reads: Arc<AmazonS3>,
    /// Listing: the same bucket, retried for 30 s (see [`patient_retries`]).
    lists: Arc<AmazonS3>,
    /// Pre-signed redirects for downloads are on.
    redirect: bool,
}

impl S3 {
    /// The bucket `bucket`, with credentials from the `AWS_*` environment variables.
    pub fn from_env(
        bucket: &str,
        endpoint: Option<&str>,
        region: &str,
        redirect: bool,
    ) -> Result<S3> {
        let builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_region(region);
        S3::new(builder, endpoint, redirect)
    }

    /// The bucket `builder` names; `endpoint` is a self-hosted S3 server's URL.
    pub fn new(builder: AmazonS3Builder, endpoint: Option<&str>, redirect: bool) -> Result<S3> {
        let builder = match endpoint {
            // A self-hosted S3 server: path-style URLs, plain HTTP allowed.
            Some(endpoint) => builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false)
                .with_allow_http(true),
            None => builder,
        };
        Ok(S3 {
            reads: Arc::new(builder.clone().build()?),
            lists: Arc::new(builder.clone().with_retry(patient_retries()).build()?),
            store: Arc::new(builder.with_retry(short_retries()).build()?),
            redirect,
        })
    }

    fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    fn reads(&self) -> Arc<dyn ObjectStore> {
        self.reads.clone()
    }

    fn lists(&self) -> Arc<dyn ObjectStore> {
        self.lists.clone()
    }
}

store_io::object_store_backend!(S3 {
    fn object_sizes(&self, _: Durability) -> (u64, u64) {
        (OBJECT_SIZE, OBJECT_SIZE)
    }

    fn create(&self, key: &str, _: Durability) -> Box<dyn ObjectWriter> {
        Box::new(StoreWriter::new(key, self.store(), self.store(), None))
    }

    fn signer(&self) -> Option<&dyn UrlSigner> {
        self.redirect.then_some(self as &dyn UrlSigner)
    }
});

#[async_trait]
impl UrlSigner for S3 {
    async fn signed_get(&self, key: &str, ttl: Duration) -> Result<String> {
        let url = self
            .store
            .signed_url(Method::GET, &Path::from(key), ttl)
            .await?;
        Ok(url.to_string())
    }
}
