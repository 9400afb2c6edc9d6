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
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
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
}

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
        for m in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(bytes_in.clone()),
            Box::new(bytes_out.clone()),
            Box::new(uploads_in_progress.clone()),
            Box::new(backend_errors.clone()),
            Box::new(free_bytes.clone()),
            Box::new(min_free_bytes.clone()),
        ] {
            registry.register(m).expect("metric names are unique");
        }
        for backend in ["database", "objects"] {
            backend_errors.with_label_values(&[backend]);
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
        }
    }

    /// Counts a failure of `backend` (`database` or `objects`).
    pub fn backend_error(&self, backend: &str) {
        self.backend_errors.with_label_values(&[backend]).inc();
    }

    /// Counts response bytes sent outside actix-web's body path (zero-copy downloads).
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
    let method = req.method().clone();
    // The path only: query strings are the client's business (and never needed here).
    let path = req.path().to_owned();
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
            ms = elapsed.as_secs_f64() * 1000.0,
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
    fn method_labels_are_bounded() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        let junk = Method::from_bytes(b"FROBNICATE").unwrap();
        assert_eq!(method_label(&junk), "other");
        let long = Method::from_bytes("X".repeat(10_000).as_bytes()).unwrap();
        assert_eq!(method_label(&long), "other");
    }
}
