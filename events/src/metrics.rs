//! `/metrics` for event delivery, per endpoint: configured endpoints by name (a set
//! the config bounds) and all webhooks together as `webhooks` (users add those, so
//! they never become labels).

use std::sync::LazyLock;

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};

struct Metrics {
    queued: IntGaugeVec,
    oldest: IntGaugeVec,
    delivered: IntCounterVec,
    failed: IntCounterVec,
    dropped: IntCounterVec,
    buffer_dropped: IntCounter,
    outbox: IntGauge,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let counter = |name: &str, help: &str| {
        IntCounterVec::new(Opts::new(name, help), &["endpoint"]).expect("valid metric")
    };
    let gauge = |name: &str, help: &str| {
        IntGaugeVec::new(Opts::new(name, help), &["endpoint"]).expect("valid metric")
    };
    Metrics {
        queued: gauge(
            "berth_events_queued",
            "Events waiting to be delivered, per endpoint.",
        ),
        oldest: gauge(
            "berth_events_oldest_pending_seconds",
            "Age of the oldest event waiting to be delivered, per endpoint.",
        ),
        delivered: counter(
            "berth_events_delivered_total",
            "Events delivered (by this instance), per endpoint.",
        ),
        failed: counter(
            "berth_events_failed_total",
            "Failed delivery attempts (by this instance), per endpoint; each is retried.",
        ),
        dropped: counter(
            "berth_events_dropped_total",
            "Events given up because the endpoint's backlog was full, per endpoint.",
        ),
        buffer_dropped: IntCounter::new(
            "berth_events_buffer_dropped_total",
            "Events of requests that changed nothing (pulls, repeated pushes) dropped because the database refused to store them while 100,000 waited.",
        )
        .expect("valid metric"),
        outbox: IntGauge::new(
            "berth_events_outbox",
            "Events committed but not yet fanned out to their endpoints (all replicas').",
        )
        .expect("valid metric"),
    }
});

/// The collectors to register with the server's registry.
pub fn collectors() -> Vec<Box<dyn prometheus::core::Collector>> {
    let m = &*METRICS;
    vec![
        Box::new(m.queued.clone()),
        Box::new(m.oldest.clone()),
        Box::new(m.delivered.clone()),
        Box::new(m.failed.clone()),
        Box::new(m.dropped.clone()),
        Box::new(m.buffer_dropped.clone()),
        Box::new(m.outbox.clone()),
    ]
}

/// The label all webhooks share (see the module's doc).
pub(crate) const WEBHOOKS: &str = "webhooks";

/// The label of a delivery key (`notification:<name>` or `webhook:<id>`).
pub(crate) fn label(endpoint: &str) -> &str {
    match endpoint.strip_prefix("notification:") {
        Some(name) => name,
        None => WEBHOOKS,
    }
}

/// Shows a configured endpoint (at 0) from the start.
pub(crate) fn register(label: &str) {
    let m = &*METRICS;
    m.queued.with_label_values(&[label]);
    m.oldest.with_label_values(&[label]);
    m.delivered.with_label_values(&[label]);
    m.failed.with_label_values(&[label]);
    m.dropped.with_label_values(&[label]);
}

pub(crate) fn delivered(endpoint: &str, n: usize) {
    METRICS
        .delivered
        .with_label_values(&[label(endpoint)])
        .inc_by(n as u64);
}

pub(crate) fn failed(endpoint: &str) {
    METRICS.failed.with_label_values(&[label(endpoint)]).inc();
}

pub(crate) fn dropped(endpoint: &str, n: u64) {
    METRICS
        .dropped
        .with_label_values(&[label(endpoint)])
        .inc_by(n);
}

/// Sets the queue gauges from per-endpoint (pending, oldest age in seconds) figures,
/// summed per label; labels without figures are set to 0.
pub(crate) fn queues(figures: impl IntoIterator<Item = (String, i64, i64)>, labels: &[String]) {
    let m = &*METRICS;
    let mut sums: std::collections::BTreeMap<String, (i64, i64)> =
        labels.iter().map(|l| (l.clone(), (0, 0))).collect();
    for (endpoint, pending, age) in figures {
        let entry = sums.entry(label(&endpoint).to_owned()).or_default();
        entry.0 += pending;
        entry.1 = entry.1.max(age);
    }
    for (label, (pending, age)) in sums {
        m.queued.with_label_values(&[label.as_str()]).set(pending);
        m.oldest.with_label_values(&[label.as_str()]).set(age);
    }
}

/// Brings the webhooks' drop counter up to `total`, the events storage trimmed from
/// their backlogs (the only drops counted under that label: housekeeping caps
/// notification endpoints alone); returns how many were new.
pub(crate) fn webhooks_trimmed(total: u64) -> u64 {
    let counter = METRICS.dropped.with_label_values(&[WEBHOOKS]);
    let new = total.saturating_sub(counter.get());
    counter.inc_by(new);
    new
}

/// Brings the buffer's drop counter up to `total` (storage counts them).
pub(crate) fn buffer_dropped(total: u64) {
    let counter = &METRICS.buffer_dropped;
    counter.inc_by(total.saturating_sub(counter.get()));
}

pub(crate) fn outbox(events: u64) {
    METRICS.outbox.set(events as i64);
}
