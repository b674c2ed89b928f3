//! The process-wide Prometheus instruments.
//!
//! Instruments observed at the moment something happens (append latency,
//! commit batch size and fsync time, verify runs, federation deliveries)
//! live in one process-wide set, because the writer thread, the federation
//! workers and the HTTP handlers all record into them. Values that already
//! exist as counters elsewhere are read at scrape time by the HTTP layer
//! (`src/http/metrics.rs`), which adds them with [`render`].

use std::sync::LazyLock;

use prometheus_client::collector::Collector;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// The label values each family is created with at zero, so that its
/// series exist before the first event: an alert on `increase()` of a
/// series that does not exist yet sees no data, never a rise.
const APPEND_OUTCOMES: [&str; 4] = ["created", "replayed", "rejected", "error"];
const CONNECTION_LIMITS: [&str; 2] = ["max_connections", "max_connections_per_ip"];
const SIGNING_LOGS: [&str; 2] = ["plan", "heads"];
const SUBSCRIPTION_REFUSALS: [&str; 2] = ["not_granted", "limit"];
/// Why a witness did not cosign (`src/federation/witnessing.rs`).
pub const WITNESS_FAILURES: [&str; 8] = [
    "transport",
    "status",
    "key",
    "cosignature",
    "conflict",
    "signing",
    "storage",
    "refused",
];

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

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
    witness_failures: Family<Labels, Counter>,
    signing_refused: Family<Labels, Counter>,
    witness_evidence: Family<Labels, Counter>,
    send_timeouts: Counter,
    connections_refused: Family<Labels, Counter>,
    bodies_refused: Counter,
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
        "Chain verifications run: a page (?verify=1) or a whole chain (?verify=full, admin verify) each count once",
        verify_runs.clone(),
    );
    let verify_failures = Counter::default();
    registry.register(
        "verify_failures",
        "Chain verifications (pages or whole chains) that found a break or failed to read",
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
    let witness_failures = Family::<Labels, Counter>::default();
    registry.register(
        "witness_send_failures",
        "Heads checkpoints a witness did not cosign, by witness and reason (refused: it has seen another history of ours, a rollback or fork)",
        witness_failures.clone(),
    );
    let signing_refused = Family::<Labels, Counter>::default();
    registry.register(
        "checkpoint_signing_refused",
        "Checkpoints the log key refused to sign because they were inconsistent with one signed before (a rolled back or forked store), by log (plan, heads)",
        signing_refused.clone(),
    );
    let witness_evidence = Family::<Labels, Counter>::default();
    registry.register(
        "witness_evidence",
        "Checkpoints refused as evidence against a witnessed log, by origin and reason (rollback, fork, bad_proof)",
        witness_evidence.clone(),
    );
    let send_timeouts = Counter::default();
    registry.register(
        "http_send_timeouts",
        "HTTP connections reset because the client took no byte for server.send_timeout_secs while a response waited",
        send_timeouts.clone(),
    );
    let connections_refused = Family::<Labels, Counter>::default();
    registry.register(
        "http_connections_refused",
        "TCP connections answered 503 and closed at accept, by limit (max_connections, max_connections_per_ip)",
        connections_refused.clone(),
    );
    let bodies_refused = Counter::default();
    registry.register(
        "http_bodies_refused",
        "Requests answered 503 because the bodies being received held limits.max_buffered_body_bytes",
        bodies_refused.clone(),
    );
    for outcome in APPEND_OUTCOMES {
        drop(appends.get_or_create(&labels(&[("outcome", outcome)])));
    }
    for limit in CONNECTION_LIMITS {
        drop(connections_refused.get_or_create(&labels(&[("limit", limit)])));
    }
    for log in SIGNING_LOGS {
        drop(signing_refused.get_or_create(&labels(&[("log", log)])));
    }
    Instruments {
        send_timeouts,
        connections_refused,
        bodies_refused,
        witness_failures,
        signing_refused,
        refused_subscriptions,
        witness_evidence,
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

/// Creates a configured peer's series at zero (called at each scrape).
pub fn known_peer(peer: &str) {
    let m = &*INSTRUMENTS;
    let by_peer = labels(&[("peer", peer)]);
    drop(m.deliveries.get_or_create(&by_peer));
    drop(m.delivery_failures.get_or_create(&by_peer));
    drop(m.dead_letters.get_or_create(&by_peer));
    for reason in SUBSCRIPTION_REFUSALS {
        let by_reason = labels(&[("peer", peer), ("reason", reason)]);
        drop(m.refused_subscriptions.get_or_create(&by_reason));
    }
}

/// Creates a configured witness's series at zero (called at each scrape).
pub fn known_witness(witness: &str) {
    for reason in WITNESS_FAILURES {
        let by_reason = labels(&[("witness", witness), ("reason", reason)]);
        drop(INSTRUMENTS.witness_failures.get_or_create(&by_reason));
    }
}

/// Called when a connection is closed because its client stopped reading.
pub fn observe_send_timeout() {
    INSTRUMENTS.send_timeouts.inc();
}

/// Called when a request's body found no room in
/// `limits.max_buffered_body_bytes`.
pub fn observe_body_refused() {
    INSTRUMENTS.bodies_refused.inc();
}

/// Called when a connection is refused at accept; `limit` names the
/// `[server]` key that refused it.
pub fn observe_connection_refused(limit: &str) {
    debug_assert!(CONNECTION_LIMITS.contains(&limit), "{limit}");
    INSTRUMENTS
        .connections_refused
        .get_or_create(&vec![("limit".to_string(), limit.to_string())])
        .inc();
}

/// Called when a checkpoint inconsistent with an earlier one was not signed.
pub fn observe_signing_refused(log: &str) {
    debug_assert!(SIGNING_LOGS.contains(&log), "{log}");
    INSTRUMENTS
        .signing_refused
        .get_or_create(&vec![("log".into(), log.into())])
        .inc();
}

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
    debug_assert!(SUBSCRIPTION_REFUSALS.contains(&reason), "{reason}");
    let labels = vec![
        ("peer".to_string(), peer.to_string()),
        ("reason".to_string(), reason.to_string()),
    ];
    INSTRUMENTS
        .refused_subscriptions
        .get_or_create(&labels)
        .inc();
}

/// Called when a witness did not cosign our heads checkpoint: `reason` is
/// one of [`WITNESS_FAILURES`].
pub fn observe_witness_failure(witness: &str, reason: &str) {
    debug_assert!(WITNESS_FAILURES.contains(&reason), "{reason}");
    let labels = vec![
        ("witness".to_string(), witness.to_string()),
        ("reason".to_string(), reason.to_string()),
    ];
    INSTRUMENTS.witness_failures.get_or_create(&labels).inc();
}

/// Called when a witnessed log's signed checkpoint contradicts the one
/// cosigned before (`rollback`, `fork`, `bad_proof`).
pub fn observe_witness_evidence(origin: &str, reason: &str) {
    let labels = vec![
        ("origin".to_string(), origin.to_string()),
        ("reason".to_string(), reason.to_string()),
    ];
    INSTRUMENTS.witness_evidence.get_or_create(&labels).inc();
}

/// Called after each append request is answered: its outcome (`created`,
/// `replayed`, `rejected`, `error`) and how long it took, fsync included.
pub fn observe_append(outcome: &str, seconds: f64) {
    debug_assert!(APPEND_OUTCOMES.contains(&outcome), "{outcome}");
    let m = &*INSTRUMENTS;
    m.append_seconds.observe(seconds);
    m.appends
        .get_or_create(&vec![("outcome".to_string(), outcome.to_string())])
        .inc();
}

/// The whole exposition: the process-wide instruments, then `live`, the
/// values the caller reads at scrape time.
pub fn render(live: Box<dyn Collector>) -> String {
    let mut registry = Registry::with_prefix("logbook");
    registry.register_collector(live);
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode_registry(&mut out, &INSTRUMENTS.registry);
    let _ = prometheus_client::encoding::text::encode_registry(&mut out, &registry);
    let _ = prometheus_client::encoding::text::encode_eof(&mut out);
    out
}
