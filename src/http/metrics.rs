//! `GET /metrics` and `GET /readyz`, and the append timing middleware.
//!
//! The instruments themselves live in `logbook_base::metrics`; this adds the
//! values read from the running daemon at scrape time (SSE clients and
//! catch-ups, the writer queue, federation queues) instead of copying them.

use std::sync::Arc;
use std::time::Instant;

use crate::federation::witnessing::WitnessStatus;
use axum::extract::{FromRef, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use logbook_base::metrics;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use tokio_util::sync::CancellationToken;

use crate::config::Scope;
use crate::http::AppState;
use crate::http::auth::{self, Tokens};
use logbook_journal::fanout::{Fanout, StreamStats};
use logbook_journal::store::AsyncStore;

/// Content type of the OpenMetrics text format, which Prometheus scrapes natively.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The append route's one middleware layer: checks the append scope
/// (`auth::require`) and times the whole answer, refusals included, by
/// outcome. One layer, not two: each costs every append a boxed future.
pub(crate) async fn time_append(
    State(tokens): State<Arc<Tokens>>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let response = auth::require(Scope::Append, tokens, req, next).await;
    let outcome = match response.status() {
        StatusCode::CREATED => "created",
        s if s.is_success() => "replayed",
        s if s.is_client_error() => "rejected",
        _ => "error",
    };
    metrics::observe_append(outcome, started.elapsed().as_secs_f64());
    response
}

/// Values read from the running daemon at scrape time.
#[derive(Debug)]
struct Snapshot {
    sse_clients: u64,
    sse_catch_ups: u64,
    sse_followed_plans: u64,
    queue_depth: u64,
    commits: u64,
    last_commit_micros: u64,
    /// Per peer: messages waiting (pending or retrying), and dead ones.
    peer_queues: Vec<PeerQueue>,
    witnessing: crate::federation::witness_health::Health,
}

#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct PeerQueue {
    pub(crate) peer: String,
    pub(crate) status: String,
    pub(crate) queued: u64,
    pub(crate) dead: u64,
}

/// Most outbox rows counted per peer as waiting, and as dead; a bound on
/// scrape cost.
const QUEUE_COUNT_CAP: u64 = 100_000;

/// Outbox depth per federation peer, counted from the store.
pub(crate) fn peer_queues(
    store: &logbook_journal::store::Store,
) -> Result<Vec<PeerQueue>, logbook_journal::store::StoreError> {
    let mut out = Vec::new();
    for peer in store.peers().list()? {
        let counts = store.outbox().counts(&peer.instance_id, QUEUE_COUNT_CAP)?;
        out.push(PeerQueue {
            queued: counts.waiting,
            dead: counts.dead,
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
            "sse_followed_plans",
            "Plans with at least one SSE follower now (each has its own channel)",
            self.sse_followed_plans,
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
        self.encode_witnessing(&mut encoder)
    }
}

impl Snapshot {
    /// The quorum's age (-1: no checkpoint has had a quorum yet), and each
    /// witness's cosigned size and refusal (1: it refuses our history).
    fn encode_witnessing(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let w = &self.witnessing;
        let age = w
            .quorum_age_secs
            .map_or(-1, |a| i64::try_from(a).unwrap_or(i64::MAX));
        let metric = ConstGauge::new(age);
        let e = encoder.encode_descriptor(
            "witness_quorum_age_seconds",
            "Seconds since [checkpoints] witness_quorum distinct witnesses had each cosigned a heads checkpoint (the K-th most recent of their latest cosignatures); -1 when never",
            None,
            metric.metric_type(),
        )?;
        metric.encode(e)?;
        for (name, help, pick) in [
            (
                "witness_cosigned_size",
                "Heads-log size each witness last cosigned",
                (|s: &WitnessStatus| i64::try_from(s.size).unwrap_or(i64::MAX))
                    as fn(&WitnessStatus) -> i64,
            ),
            (
                "witness_refused",
                "1 while a witness refuses this instance's heads log (it saw a rollback or fork)",
                |s: &WitnessStatus| i64::from(s.refused.is_some()),
            ),
        ] {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for s in &w.witnesses {
                let labels = [("witness", s.name.as_str())];
                ConstGauge::new(pick(s)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// What `/metrics` and `/readyz` read.
#[derive(Clone)]
pub(crate) struct MetricsState {
    store: AsyncStore,
    federation: Arc<crate::federation::Federation>,
    stream_stats: Arc<StreamStats>,
    fanout: Fanout,
    shutdown: CancellationToken,
}

impl FromRef<AppState> for MetricsState {
    fn from_ref(state: &AppState) -> MetricsState {
        MetricsState {
            store: state.store.clone(),
            federation: state.federation.clone(),
            stream_stats: state.stream_stats.clone(),
            fanout: state.fanout.clone(),
            shutdown: state.shutdown.clone(),
        }
    }
}

/// The whole exposition: process-wide instruments, then the live snapshot.
pub(crate) async fn render(
    store: &AsyncStore,
    stream_stats: &StreamStats,
    fanout: &Fanout,
    federation: &crate::federation::Federation,
) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let peer_queues = store.run(peer_queues).await;
    let witnessing = federation.witness_health();
    for q in peer_queues.iter().flatten() {
        metrics::known_peer(&q.peer);
    }
    for w in &witnessing.witnesses {
        metrics::known_witness(&w.name);
    }
    metrics::render(Box::new(Snapshot {
        sse_clients: stream_stats.connected.load(Relaxed),
        sse_catch_ups: stream_stats.catch_ups.load(Relaxed),
        sse_followed_plans: fanout.plan_channels() as u64,
        queue_depth: store.queue_depth() as u64,
        commits: store.stats().commits.load(Relaxed),
        last_commit_micros: store.stats().last_commit_micros.load(Relaxed),
        peer_queues: peer_queues.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "metrics: reading the federation outbox");
            Vec::new()
        }),
        witnessing,
    }))
}

/// `GET /metrics`.
pub(crate) async fn scrape(State(state): State<MetricsState>) -> Response {
    let body = render(
        &state.store,
        &state.stream_stats,
        &state.fanout,
        &state.federation,
    )
    .await;
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

/// `GET /readyz`: ready once the store is open (no connection is accepted
/// before that, though the port is bound first) and until shutdown begins, except while appends cannot
/// commit (a full disk, or the database reopening after an I/O error).
pub(crate) async fn readyz(State(state): State<MetricsState>) -> Response {
    if state.shutdown.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": "stopping"})),
        )
            .into_response();
    }
    let storage = match state.store.health() {
        logbook_journal::store::Health::Ready => None,
        logbook_journal::store::Health::Full => Some("storage-full"),
        logbook_journal::store::Health::Failed => Some("storage-failed"),
    };
    if let Some(status) = storage {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            axum::Json(serde_json::json!({"status": status})),
        )
            .into_response();
    }
    // Witnessing is a warning here, never a 503: appends do not wait on it.
    let w = state.federation.witness_health();
    axum::Json(serde_json::json!({
        "status": "ready",
        "witnessing": {
            "quorum": w.quorum,
            "quorum_age_secs": w.quorum_age_secs,
            "stale": w.stale && w.quorum > 0,
            "refused": w.refused,
        },
    }))
    .into_response()
}
