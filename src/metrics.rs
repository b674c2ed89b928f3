//! Prometheus metrics: the process-wide instruments, the append timing
//! middleware, and the `GET /metrics` and `GET /readyz` handlers.
//!
//! Instruments that are observed at the moment something happens (append
//! latency, commit batch size and fsync time, verify runs) live in one
//! process-wide set, because the writer thread and the handlers record into
//! them. Values that already exist as counters elsewhere (SSE clients and
//! catch-ups, the writer queue) are read at scrape time instead of copied.

use std::sync::LazyLock;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::http::AppState;

/// Content type of the OpenMetrics text format, which Prometheus scrapes natively.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;

struct Instruments {
    registry: Registry,
    appends: Family<Labels, Counter>,
    append_seconds: Histogram,
    batch_size: Histogram,
    fsync_seconds: Histogram,
    verify_runs: Counter,
    verify_failures: Counter,
    deliveries: Family<Labels, Counter>,
    delivery_failures: Family<Labels, Counter>,
    dead_letters: Family<Labels, Counter>,
    refused_subscriptions: Family<Labels, Counter>,
}

static INSTRUMENTS: LazyLock<Instruments> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("logbook");
    let appends = Family::<Labels, Counter>::default();
    registry.register(
        "appends",
        "Append requests answered, by outcome (created, replayed, rejected, error)",
        appends.clone(),
    );
    // 100 µs .. ~3.3 s: fsync dominates, and slow disks are what we look for.
    let append_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
    registry.register(
        "append_duration_seconds",
        "Time from receiving an append request to answering it (includes the fsync)",
        append_seconds.clone(),
    );
    let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 11));
    registry.register(
        "commit_batch_size",
        "Appends committed together in one group-commit transaction",
        batch_size.clone(),
    );
    let fsync_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
    registry.register(
        "commit_duration_seconds",
        "Time to write and fsync one group-commit transaction",
        fsync_seconds.clone(),
    );
    let verify_runs = Counter::default();
    registry.register(
        "verify_runs",
        "Whole-chain verifications run",
        verify_runs.clone(),
    );
    let verify_failures = Counter::default();
    registry.register(
        "verify_failures",
        "Whole-chain verifications that found a broken chain or failed to read it",
        verify_failures.clone(),
    );
    let deliveries = Family::<Labels, Counter>::default();
    registry.register(
        "federation_delivery_attempts",
        "Messages sent to a peer (each attempt counts), by peer",
        deliveries.clone(),
    );
    let delivery_failures = Family::<Labels, Counter>::default();
    registry.register(
        "federation_delivery_failures",
        "Message deliveries that failed and will be retried or given up, by peer",
        delivery_failures.clone(),
    );
    let dead_letters = Family::<Labels, Counter>::default();
    registry.register(
        "federation_dead_letters",
        "Messages given up on (marked dead) after too many attempts or too long, by peer",
        dead_letters.clone(),
    );
    let refused_subscriptions = Family::<Labels, Counter>::default();
    registry.register(
        "federation_subscriptions_refused",
        "Subscribe requests from peers refused, by peer and reason (not_granted, limit)",
        refused_subscriptions.clone(),
    );
    Instruments {
        refused_subscriptions,
        deliveries,
        delivery_failures,
        dead_letters,
        registry,
        appends,
        append_seconds,
        batch_size,
        fsync_seconds,
        verify_runs,
        verify_failures,
    }
});

/// Called by the writer after each committed batch.
pub fn observe_commit(batch_size: usize, micros: u64) {
    let m = &*INSTRUMENTS;
    m.batch_size.observe(batch_size as f64);
    m.fsync_seconds.observe(micros as f64 / 1e6);
}

/// Called after each whole-chain verification.
pub fn observe_verify(valid: bool) {
    let m = &*INSTRUMENTS;
    m.verify_runs.inc();
    if !valid {
        m.verify_failures.inc();
    }
}

/// Called by a federation delivery worker after each attempt at a batch:
/// `sent` messages were attempted, `failed` of them failed, `dead` of those
/// were given up on.
pub fn observe_delivery(peer: &str, sent: usize, failed: usize, dead: usize) {
    let m = &*INSTRUMENTS;
    let labels = vec![("peer".to_string(), peer.to_string())];
    m.deliveries.get_or_create(&labels).inc_by(sent as u64);
    m.delivery_failures
        .get_or_create(&labels)
        .inc_by(failed as u64);
    m.dead_letters.get_or_create(&labels).inc_by(dead as u64);
}

/// Called when a peer's subscribe request is refused: not covered by its
/// grants (`not_granted`) or over its subscription limit (`limit`).
pub fn observe_refused_subscription(peer: &str, reason: &str) {
    let labels = vec![
        ("peer".to_string(), peer.to_string()),
        ("reason".to_string(), reason.to_string()),
    ];
    INSTRUMENTS
        .refused_subscriptions
        .get_or_create(&labels)
        .inc();
}

/// Middleware on the append route: counts outcomes and times each request.
pub async fn time_append(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let response = next.run(req).await;
    let m = &*INSTRUMENTS;
    m.append_seconds.observe(started.elapsed().as_secs_f64());
    let outcome = match response.status() {
        StatusCode::CREATED => "created",
        s if s.is_success() => "replayed",
        s if s.is_client_error() => "rejected",
        _ => "error",
    };
    m.appends
        .get_or_create(&vec![("outcome".to_string(), outcome.to_string())])
        .inc();
    response
}

/// Values read from the running daemon at scrape time.
#[derive(Debug)]
struct Snapshot {
    sse_clients: u64,
    sse_catch_ups: u64,
    queue_depth: u64,
    commits: u64,
    last_commit_micros: u64,
    /// Per peer: messages waiting (pending or retrying), and dead ones.
    peer_queues: Vec<PeerQueue>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PeerQueue {
    pub peer: String,
    pub status: String,
    pub queued: u64,
    pub dead: u64,
}

/// Most outbox rows counted per peer and status; a bound on scrape cost.
const QUEUE_COUNT_CAP: usize = 100_000;

/// Outbox depth per federation peer, counted from the store.
pub fn peer_queues(
    store: &crate::journal::store::Store,
) -> Result<Vec<PeerQueue>, crate::journal::store::StoreError> {
    use crate::journal::store::DeliveryStatus;
    let mut out = Vec::new();
    for peer in store.fed_peers()? {
        let count = |status| -> Result<u64, crate::journal::store::StoreError> {
            Ok(store
                .fed_outbox_list(Some(&peer.instance_id), Some(status), QUEUE_COUNT_CAP)?
                .len() as u64)
        };
        out.push(PeerQueue {
            queued: count(DeliveryStatus::Pending)? + count(DeliveryStatus::Retrying)?,
            dead: count(DeliveryStatus::Dead)?,
            status: peer.status.as_str().to_string(),
            peer: peer.instance_id,
        });
    }
    Ok(out)
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauge = |encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64| {
            let metric = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            let e = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
            metric.encode(e)
        };
        let counter = |encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64| {
            let metric = ConstCounter::new(value);
            let e = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
            metric.encode(e)
        };
        gauge(
            &mut encoder,
            "sse_clients",
            "SSE streams connected now",
            self.sse_clients,
        )?;
        counter(
            &mut encoder,
            "sse_catch_ups",
            "Times an SSE stream fell behind the live feed and caught up from storage",
            self.sse_catch_ups,
        )?;
        gauge(
            &mut encoder,
            "writer_queue_depth",
            "Appends waiting for the writer",
            self.queue_depth,
        )?;
        counter(
            &mut encoder,
            "commits",
            "Group-commit transactions committed",
            self.commits,
        )?;
        gauge(
            &mut encoder,
            "last_commit_microseconds",
            "Write and fsync time of the most recent commit",
            self.last_commit_micros,
        )?;
        for (name, help, pick) in [
            (
                "federation_queue_depth",
                "Messages waiting to be delivered to a peer (pending or retrying)",
                (|q: &PeerQueue| q.queued) as fn(&PeerQueue) -> u64,
            ),
            (
                "federation_dead_messages",
                "Messages to a peer given up on and kept as dead",
                |q: &PeerQueue| q.dead,
            ),
        ] {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for q in &self.peer_queues {
                let labels = [("peer", q.peer.as_str())];
                let metric = ConstGauge::new(i64::try_from(pick(q)).unwrap_or(i64::MAX));
                metric.encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The whole exposition: process-wide instruments, then the live snapshot.
pub fn render(state: &AppState) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let mut live = Registry::with_prefix("logbook");
    live.register_collector(Box::new(Snapshot {
        sse_clients: state.stream_stats.connected.load(Relaxed),
        sse_catch_ups: state.stream_stats.catch_ups.load(Relaxed),
        queue_depth: state.store.queue_depth() as u64,
        commits: state.store.stats.commits.load(Relaxed),
        last_commit_micros: state.store.stats.last_commit_micros.load(Relaxed),
        peer_queues: peer_queues(&state.store).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "metrics: reading the federation outbox");
            Vec::new()
        }),
    }));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode_registry(&mut out, &INSTRUMENTS.registry);
    let _ = prometheus_client::encoding::text::encode_registry(&mut out, &live);
    let _ = prometheus_client::encoding::text::encode_eof(&mut out);
    out
}

/// `GET /metrics`.
pub async fn scrape(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], render(&state)).into_response()
}

/// `GET /readyz`: ready once the store is open (the HTTP listener is only
/// bound after that) and until shutdown begins, except while appends cannot
/// commit (a full disk, or the database reopening after an I/O error).
pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.shutdown.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": "stopping"})),
        )
            .into_response();
    }
    let storage = match state.store.health() {
        crate::journal::store::Health::Ready => None,
        crate::journal::store::Health::Full => Some("storage-full"),
        crate::journal::store::Health::Failed => Some("storage-failed"),
    };
    if let Some(status) = storage {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            axum::Json(serde_json::json!({"status": status})),
        )
            .into_response();
    }
    axum::Json(serde_json::json!({"status": "ready"})).into_response()
}
