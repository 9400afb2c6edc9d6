//! `/metrics` for proxies: per upstream (labelled by prefix, a set the config bounds).

use std::sync::LazyLock;

use prometheus::{IntCounterVec, Opts};

use crate::error::ProxyError;

struct Counters {
    hits: IntCounterVec,
    misses: IntCounterVec,
    stale: IntCounterVec,
    upstream_bytes: IntCounterVec,
    upstream_errors: IntCounterVec,
}

static COUNTERS: LazyLock<Counters> = LazyLock::new(|| {
    let vec = |name: &str, help: &str, labels: &[&str]| {
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
    };
    Counters {
        hits: vec(
            "berth_proxy_hits_total",
            "Manifests and blobs a proxy served from its cache.",
            &["proxy"],
        ),
        misses: vec(
            "berth_proxy_misses_total",
            "Manifests and blobs a proxy fetched from its upstream.",
            &["proxy"],
        ),
        stale: vec(
            "berth_proxy_stale_total",
            "Cached tags served while the upstream could not confirm them.",
            &["proxy"],
        ),
        upstream_bytes: vec(
            "berth_proxy_upstream_bytes_total",
            "Blob bytes received from upstreams.",
            &["proxy"],
        ),
        upstream_errors: vec(
            "berth_proxy_upstream_errors_total",
            "Failed upstream requests, by kind.",
            &["proxy", "kind"],
        ),
    }
});

/// The collectors to register with the server's registry.
pub fn collectors() -> Vec<Box<dyn prometheus::core::Collector>> {
    let c = &*COUNTERS;
    vec![
        Box::new(c.hits.clone()),
        Box::new(c.misses.clone()),
        Box::new(c.stale.clone()),
        Box::new(c.upstream_bytes.clone()),
        Box::new(c.upstream_errors.clone()),
    ]
}

/// One proxy's counters.
#[derive(Clone)]
pub struct ProxyMetrics {
    prefix: String,
}

impl ProxyMetrics {
    /// A proxy's counters, shown (at 0) from the start.
    pub fn new(prefix: &str) -> ProxyMetrics {
        let c = &*COUNTERS;
        for counter in [&c.hits, &c.misses, &c.stale, &c.upstream_bytes] {
            counter.with_label_values(&[prefix]);
        }
        ProxyMetrics {
            prefix: prefix.to_owned(),
        }
    }

    pub fn hit(&self) {
        COUNTERS.hits.with_label_values(&[&self.prefix]).inc();
    }

    pub fn miss(&self) {
        COUNTERS.misses.with_label_values(&[&self.prefix]).inc();
    }

    pub fn stale(&self) {
        COUNTERS.stale.with_label_values(&[&self.prefix]).inc();
    }

    pub fn upstream_bytes(&self, n: u64) {
        COUNTERS
            .upstream_bytes
            .with_label_values(&[&self.prefix])
            .inc_by(n);
    }

    pub fn upstream_error(&self, e: &ProxyError) {
        if let Some(kind) = e.kind() {
            COUNTERS
                .upstream_errors
                .with_label_values(&[&self.prefix, kind])
                .inc();
        }
    }

    /// The counts so far, for the web UI: (hits, misses, stale, upstream bytes).
    pub fn totals(&self) -> (u64, u64, u64, u64) {
        let get = |v: &IntCounterVec| v.with_label_values(&[&self.prefix]).get();
        let c = &*COUNTERS;
        (
            get(&c.hits),
            get(&c.misses),
            get(&c.stale),
            get(&c.upstream_bytes),
        )
    }
}
