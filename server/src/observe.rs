//! What operators see: a request id on every log line of a request (and in the
//! `X-Request-Id` response header), one access log line per request, and Prometheus
//! metrics served at `/metrics`.

use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::HttpMessage;
use actix_web::HttpResponse;
use bytes::Bytes;
use futures::TryStreamExt;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use tracing::Instrument;

use crate::authz::RouteLabel;

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    bytes_in: IntCounter,
    bytes_out: IntCounter,
    uploads_in_progress: IntGauge,
    backend_errors: IntCounterVec,
    free_bytes: IntGauge,
    min_free_bytes: IntGauge,
    gc_runs: IntCounterVec,
    gc_deleted: IntCounterVec,
    gc_freed_bytes: IntCounter,
    gc_duration: Histogram,
    gc_last_success: IntGauge,
    usage: UsageGauges,
}

/// Storage use, measured at most once a minute (the sums read whole tables).
struct UsageGauges {
    measured: std::sync::Mutex<Option<Instant>>,
    blobs: IntGauge,
    stored_bytes: IntGauge,
    logical_bytes: IntGauge,
    /// Namespaces with a quota of their own only: an operator sets each, so the label
    /// set stays as small as their list (the default quota would make it unbounded).
    quota_used: IntGaugeVec,
    quota_limit: IntGaugeVec,
}

/// How often `/metrics` re-measures storage use.
const USAGE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// One set per process: the HTTP edge and the error mapping both record into it.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("berth_http_requests_total", "HTTP requests answered"),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        // Manifest and tag requests take well under a millisecond, blob transfers seconds.
        let buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0, 60.0,
        ];
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "berth_http_request_duration_seconds",
                "Time from request to response headers",
            )
            .buckets(buckets),
            &["route", "method"],
        )
        .expect("valid metric");
        let bytes_in = IntCounter::new("berth_http_received_bytes_total", "Request body bytes")
            .expect("valid metric");
        let bytes_out = IntCounter::new("berth_http_sent_bytes_total", "Response body bytes")
            .expect("valid metric");
        let uploads_in_progress = IntGauge::new(
            "berth_uploads_in_progress",
            "Blob upload requests (POST, PATCH, PUT) being received",
        )
        .expect("valid metric");
        let backend_errors = IntCounterVec::new(
            Opts::new(
                "berth_backend_errors_total",
                "Failures of the database or the object store",
            ),
            &["backend"],
        )
        .expect("valid metric");
        let free_bytes = IntGauge::new(
            "berth_storage_free_bytes",
            "Free bytes on the fullest local file system Berth writes (data directory, blob root)",
        )
        .expect("valid metric");
        let min_free_bytes = IntGauge::new(
            "berth_storage_min_free_bytes",
            "The free-space reserve there: below it, pushes are refused (storage.min_free)",
        )
        .expect("valid metric");
        let gc_runs = IntCounterVec::new(
            Opts::new(
                "berth_gc_runs_total",
                "Garbage collection passes, by outcome (ok, failed, busy: another process held the lease)",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let gc_deleted = IntCounterVec::new(
            Opts::new(
                "berth_gc_deleted_total",
                "What garbage collection deleted, by kind (blobs, manifests, orphan_objects)",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let gc_freed_bytes = IntCounter::new(
            "berth_gc_freed_bytes_total",
            "Bytes of blobs and orphan objects garbage collection deleted",
        )
        .expect("valid metric");
        let gc_duration = Histogram::with_opts(
            HistogramOpts::new(
                "berth_gc_duration_seconds",
                "Time a garbage collection pass took",
            )
            .buckets(vec![0.01, 0.1, 1.0, 10.0, 60.0, 600.0, 3600.0]),
        )
        .expect("valid metric");
        let gc_last_success = IntGauge::new(
            "berth_gc_last_success_timestamp_seconds",
            "When the last garbage collection pass of this process finished without error",
        )
        .expect("valid metric");
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        let usage = UsageGauges {
            measured: std::sync::Mutex::new(None),
            blobs: gauge("berth_storage_blobs", "Blobs stored (each once)"),
            stored_bytes: gauge("berth_storage_stored_bytes", "Bytes of the blobs stored"),
            logical_bytes: gauge(
                "berth_storage_logical_bytes",
                "Bytes the repositories reference, each repository's distinct blobs summed (stored_bytes without deduplication)",
            ),
            quota_used: IntGaugeVec::new(
                Opts::new(
                    "berth_quota_used_bytes",
                    "Bytes of distinct blobs a namespace with its own quota references",
                ),
                &["namespace"],
            )
            .expect("valid metric"),
            quota_limit: IntGaugeVec::new(
                Opts::new("berth_quota_limit_bytes", "A namespace's own quota"),
                &["namespace"],
            )
            .expect("valid metric"),
        };
        for m in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(bytes_in.clone()),
            Box::new(bytes_out.clone()),
            Box::new(uploads_in_progress.clone()),
            Box::new(backend_errors.clone()),
            Box::new(free_bytes.clone()),
            Box::new(min_free_bytes.clone()),
            Box::new(gc_runs.clone()),
            Box::new(gc_deleted.clone()),
            Box::new(gc_freed_bytes.clone()),
            Box::new(gc_duration.clone()),
            Box::new(gc_last_success.clone()),
            Box::new(usage.blobs.clone()),
            Box::new(usage.stored_bytes.clone()),
            Box::new(usage.logical_bytes.clone()),
            Box::new(usage.quota_used.clone()),
            Box::new(usage.quota_limit.clone()),
        ]
        .into_iter()
        .chain(berth_proxy::metrics::collectors())
        .chain(berth_events::metrics::collectors())
        {
            registry.register(m).expect("metric names are unique");
        }
        for backend in ["database", "objects"] {
            backend_errors.with_label_values(&[backend]);
        }
        for outcome in ["ok", "failed", "busy"] {
            gc_runs.with_label_values(&[outcome]);
        }
        for kind in ["blobs", "manifests", "orphan_objects", "evicted_manifests"] {
            gc_deleted.with_label_values(&[kind]);
        }
        Metrics {
            registry,
            requests,
            latency,
            bytes_in,
            bytes_out,
            uploads_in_progress,
            backend_errors,
            free_bytes,
            min_free_bytes,
            gc_runs,
            gc_deleted,
            gc_freed_bytes,
            gc_duration,
            gc_last_success,
            usage,
        }
    }

    /// Re-measures storage use when the last measure is older than a minute.
    async fn measure_usage(&self, storage: &berth_storage::Storage) {
        {
            let mut measured = self.usage.measured.lock().expect("usage lock");
            if measured.is_some_and(|at| at.elapsed() < USAGE_EVERY) {
                return;
            }
            *measured = Some(Instant::now());
        }
        let gauge = |bytes: u64| i64::try_from(bytes).unwrap_or(i64::MAX);
        let measure = async {
            let registry = storage.registry_usage().await?;
            self.usage.blobs.set(gauge(registry.blobs));
            self.usage.stored_bytes.set(gauge(registry.stored_bytes));
            self.usage.logical_bytes.set(gauge(registry.logical_bytes));
            let mut quotas = Vec::new();
            for (namespace, limit) in storage.quotas().await? {
                let used = storage.namespace_usage(&namespace).await?.bytes;
                quotas.push((namespace, limit, used));
            }
            self.usage.quota_used.reset();
            self.usage.quota_limit.reset();
            for (namespace, limit, used) in quotas {
                self.usage
                    .quota_used
                    .with_label_values(&[&namespace])
                    .set(gauge(used));
                self.usage
                    .quota_limit
                    .with_label_values(&[&namespace])
                    .set(gauge(limit));
            }
            Ok::<_, berth_storage::StorageError>(())
        };
        if let Err(e) = measure.await {
            tracing::warn!(error = %e, "cannot measure storage use for /metrics");
        }
    }

    /// Records a garbage collection pass (`None`: another process held the lease).
    pub fn gc_pass(&self, outcome: Result<Option<&berth_storage::gc::GcReport>, ()>) {
        let label = match outcome {
            Ok(Some(report)) => {
                self.gc_deleted
                    .with_label_values(&["blobs"])
                    .inc_by(report.blobs);
                self.gc_deleted
                    .with_label_values(&["manifests"])
                    .inc_by(report.manifests);
                self.gc_deleted
                    .with_label_values(&["orphan_objects"])
                    .inc_by(report.orphan_objects);
                self.gc_deleted
                    .with_label_values(&["evicted_manifests"])
                    .inc_by(report.evicted);
                self.gc_freed_bytes.inc_by(report.freed_bytes());
                self.gc_duration.observe(report.duration.as_secs_f64());
                self.gc_last_success.set(chrono::Utc::now().timestamp());
                "ok"
            }
            Ok(None) => "busy",
            Err(()) => "failed",
        };
        self.gc_runs.with_label_values(&[label]).inc();
    }

    /// Counts a failure of `backend` (`database` or `objects`).
    pub fn backend_error(&self, backend: &str) {
        self.backend_errors.with_label_values(&[backend]).inc();
    }

    /// Counts response bytes sent outside actix-web's body path (downloads from files).
    pub fn sent(&self, bytes: u64) {
        self.bytes_out.inc_by(bytes);
    }
}

/// `GET /metrics`: the Prometheus text format.
pub async fn metrics(state: actix_web::web::Data<crate::AppState>) -> HttpResponse {
    // Measured when scraped (one statvfs per file system); both stay 0 when Berth
    // writes no local files (PostgreSQL and S3).
    if let Some(space) = state.storage.free_space() {
        let gauge = |bytes: u64| i64::try_from(bytes).unwrap_or(i64::MAX);
        METRICS.free_bytes.set(gauge(space.free));
        METRICS.min_free_bytes.set(gauge(space.reserve));
    }
    METRICS.measure_usage(&state.storage).await;
    let mut out = Vec::new();
    let encoder = TextEncoder::new();
    match encoder.encode(&METRICS.registry.gather(), &mut out) {
        Ok(()) => HttpResponse::Ok()
            .content_type(encoder.format_type())
            .body(out),
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The caller's request id when it is a plain token (a load balancer's), else a new one.
fn request_id(req: &ServiceRequest) -> String {
    req.headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
}

/// Counts an upload request (POST, PATCH, PUT) while it is being received.
pub struct InProgress;

impl InProgress {
    pub fn start() -> InProgress {
        METRICS.uploads_in_progress.inc();
        InProgress
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        METRICS.uploads_in_progress.dec();
    }
}

/// Middleware around every request: id, span, access log line, metrics.
pub async fn observe(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = request_id(&req);
    req.extensions_mut()
        .insert(berth_events::origin::RequestId(id.clone()));
    let method = req.method().clone();
    // The path only: query strings are the client's business (and never needed here).
    let path = log_path(req.path());
    let payload = req.take_payload();
    let counted = payload.inspect_ok(|chunk| METRICS.bytes_in.inc_by(chunk.len() as u64));
    req.set_payload(Payload::Stream {
        payload: Box::pin(counted),
    });
    let span = tracing::info_span!("request", id = %id);
    let started = Instant::now();
    let mut res = next.call(req).instrument(span.clone()).await?;
    let elapsed = started.elapsed();
    let status = res.status();
    // Labels take bounded values only: route patterns (the gate's for registry
    // requests, actix-web's for the rest) and known methods.
    let route = match res.request().extensions().get::<RouteLabel>() {
        Some(RouteLabel(route)) => (*route).to_owned(),
        None => res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".into()),
    };
    let method_label = method_label(&method);
    METRICS
        .requests
        .with_label_values(&[route.as_str(), method_label, status.as_str()])
        .inc();
    METRICS
        .latency
        .with_label_values(&[route.as_str(), method_label])
        .observe(elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::info!(
            target: "berth::access",
            %method,
            %path,
            status = status.as_u16(),
            ms = %Millis(elapsed),
        )
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID.clone(), value);
    }
    // Pages and the web API say how long they took to make (browsers' dev tools show
    // it; the web benchmark reads it). Registry responses stay as they are.
    if !path.starts_with("/v2") {
        let timing = format!("app;dur={:.2}", elapsed.as_secs_f64() * 1000.0);
        if let Ok(value) = HeaderValue::from_str(&timing) {
            res.headers_mut().insert(
                actix_web::http::header::HeaderName::from_static("server-timing"),
                value,
            );
        }
    }
    Ok(res.map_body(|_, body| Counted { body }))
}

/// The longest path an access log line holds: registry paths are well under it; a
/// client may send one of up to actix-web's header limit (128 KiB), and the log writer
/// queues lines by count.
const LOGGED_PATH_MAX: usize = 1024;

/// The request path as the access log shows it: cut at [`LOGGED_PATH_MAX`] bytes,
/// marked with `…` where it was cut.
fn log_path(path: &str) -> String {
    if path.len() <= LOGGED_PATH_MAX {
        return path.to_owned();
    }
    let mut end = LOGGED_PATH_MAX;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &path[..end])
}

/// A duration in milliseconds with three decimals, for the access log (formatting it
/// as a float printed every digit of the binary fraction, and cost more).
struct Millis(std::time::Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let micros = self.0.as_micros();
        write!(f, "{}.{:03}", micros / 1000, micros % 1000)
    }
}

/// The `method` label: the methods HTTP defines, anything else `other` (a client
/// may send any token as a method; labels must not grow with them).
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
    ];
    KNOWN
        .into_iter()
        .find(|m| *m == method.as_str())
        .unwrap_or("other")
}

pin_project_lite::pin_project! {
    /// A response body that adds what it sends to the bytes-out counter.
    struct Counted<B> {
        #[pin]
        body: B,
    }
}

impl<B: MessageBody> MessageBody for Counted<B> {
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let polled = self.project().body.poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &polled {
            METRICS.bytes_out.inc_by(chunk.len() as u64);
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_paths_are_cut_in_the_log() {
        assert_eq!(log_path("/v2/a/b/tags/list"), "/v2/a/b/tags/list");
        let long = format!("/v2/{}", "a".repeat(200_000));
        let logged = log_path(&long);
        assert!(logged.len() <= LOGGED_PATH_MAX + '…'.len_utf8());
        assert!(logged.ends_with('…'));
        // Never cut inside a character.
        let wide = "é".repeat(LOGGED_PATH_MAX);
        assert!(log_path(&wide).starts_with("éé"));
    }

    #[test]
    fn durations_log_as_milliseconds() {
        let ms = |micros| Millis(std::time::Duration::from_micros(micros)).to_string();
        assert_eq!(ms(2_609), "2.609");
        assert_eq!(ms(17), "0.017");
        assert_eq!(ms(12_345_678), "12345.678");
    }

    #[test]
    fn method_labels_are_bounded() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        let junk = Method::from_bytes(b"FROBNICATE").unwrap();
        assert_eq!(method_label(&junk), "other");
        let long = Method::from_bytes("X".repeat(10_000).as_bytes()).unwrap();
        assert_eq!(method_label(&long), "other");
    }
}
