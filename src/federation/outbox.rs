//! Delivery: one worker per peer sends that peer's outbox in order, in
//! batches, signing each message at send time. A message is `delivered` only
//! on a verified ack; failures are retried with exponential backoff and
//! jitter (honouring `Retry-After` on 429, 503 and 507) until the configured
//! attempts or age, then the message is `dead` until retried by an admin.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::identity::{self, OwnKey};
use super::inbox;
use super::message::{EventAck, EventMessage, now_ms};
use super::{FedError, Federation, read_peer_json};
use logbook_journal::store::{OutboxRecord, PeerRecord, PeerStatus, inert_text};

/// Path messages are delivered to on the peer.
pub const EVENT_PATH: &str = "/api/v1/federation/incoming/event";
/// Longest a worker sleeps without looking at the outbox again.
const IDLE_RECHECK: Duration = Duration::from_secs(30);

/// Why a delivery attempt failed, and when to try again at the earliest.
struct Failure {
    error: String,
    retry_after: Option<Duration>,
    /// The peer answered with an error status other than 429 or 503: it
    /// refused this request, maybe for one message in it.
    refused: bool,
    /// The peer refused it for its content (400, 413, 422): sending the
    /// same message again gets the same answer, so a message refused alone
    /// is dead at once rather than blocking the queue until it dies of age.
    permanent: bool,
}

pub async fn run(fed: Arc<Federation>, peer_id: String, shutdown: CancellationToken) {
    let mut changed = fed.store.outbox_watch();
    let mut requeued = fed.store.requeue_watch();
    let mut cursor = 0u64;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        // A step cut short by shutdown loses nothing: what was not marked
        // delivered is sent again on the next start, and the peer deduplicates.
        let stepped = tokio::select! {
            () = shutdown.cancelled() => return,
            stepped = step(&fed, &peer_id, &mut cursor) => stepped,
        };
        let wait = match stepped {
            Ok(Step::Removed) => return,
            Ok(Step::Sent) => continue,
            Ok(Step::Idle(until)) => until,
            Err(e) => {
                tracing::error!(peer = %peer_id, error = %e, "federation delivery failed");
                Some(now_ms() + 5000)
            }
        };
        let sleep = wait.map_or(IDLE_RECHECK, |until| {
            Duration::from_millis(u64::try_from(until - now_ms()).unwrap_or(0))
        });
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = changed.changed() => {}
            _ = requeued.changed() => cursor = 0,
            () = tokio::time::sleep(sleep.min(IDLE_RECHECK)) => {}
        }
    }
}

enum Step {
    /// The peer is gone: stop the worker.
    Removed,
    /// A batch was attempted; look again at once.
    Sent,
    /// Nothing to send now; wait until then (or a change).
    Idle(Option<i64>),
}

async fn step(fed: &Arc<Federation>, peer_id: &str, cursor: &mut u64) -> Result<Step, String> {
    let id = peer_id.to_string();
    let limit = fed.config.batch_size;
    let from = *cursor;
    let (peer, due) = fed
        .store
        .run(move |store| -> Result<_, FedError> {
            let peer = store.peers().get(&id)?;
            let due = store.outbox().due(&id, from, limit, now_ms())?;
            Ok((peer, due))
        })
        .await?;
    let Some(peer) = peer else {
        return Ok(Step::Removed);
    };
    // A removed peer's worker idles rather than ends: if the peer were
    // re-activated just as the worker ended, `ensure_worker` could see it
    // still running and start none, leaving the peer's outbox unsent.
    if peer.status != PeerStatus::Active {
        return Ok(Step::Idle(None));
    }
    let (mut rows, new_cursor, wait_until) = due;
    *cursor = new_cursor;
    if rows.is_empty() {
        return Ok(Step::Idle(wait_until));
    }
    // Sign with the key the peer pins for us. A batch ends at an undelivered
    // announcement of our new key: what follows it is signed with the new
    // key, which the peer accepts only once it has the announcement.
    let (fed2, id) = (fed.clone(), peer_id.to_string());
    let (key, announcement) = fed
        .store
        .run(move |store| -> Result<_, FedError> { Ok(fed2.signing_key_for(store, &id)?) })
        .await?;
    // The rows start at the first open one. If they all come after the
    // announcement, it is dead: the peer still pins the old key, so the
    // later messages proceed (like after any dead message), signed with it.
    if let Some(seq) = announcement
        && rows.first().is_some_and(|(s, _)| *s <= seq)
    {
        rows.retain(|(s, _)| *s <= seq);
    }
    match send(fed, &peer, &key, &rows).await {
        // The peer refused the batch as a whole: maybe one message in it is
        // one it cannot take (too large, too deep, an id it saw with other
        // content). Send them one by one, in order, so that one message
        // cannot hold back or kill its batch-mates; stop at the first that
        // fails for a passing reason, so later ones still wait behind it. One
        // refused for its content is dead at once (see `record`): go on.
        Err(failure) if failure.refused && rows.len() > 1 => {
            // The refused request was an attempt at every message in it.
            logbook_base::metrics::observe_delivery(peer_id, rows.len(), rows.len(), 0);
            for row in &rows {
                let one = std::slice::from_ref(row);
                let outcome = send(fed, &peer, &key, one).await;
                let go_on = match &outcome {
                    Ok(acked) => !acked.is_empty(),
                    Err(failure) => failure.permanent,
                };
                record(fed, peer_id, one, outcome).await?;
                if !go_on {
                    break;
                }
            }
        }
        outcome => record(fed, peer_id, &rows, outcome).await?,
    }
    Ok(Step::Sent)
}

/// Records the outcome of sending `rows`: delivered for the acknowledged
/// ones, a failed attempt (with its backoff) for the others.
async fn record(
    fed: &Arc<Federation>,
    peer_id: &str,
    rows: &[(u64, OutboxRecord)],
    outcome: Result<Vec<u64>, Failure>,
) -> Result<(), String> {
    let seqs: Vec<u64> = rows.iter().map(|(seq, _)| *seq).collect();
    let id = peer_id.to_string();
    let config = fed.config.clone();
    let attempts_before = rows.first().map_or(0, |(_, r)| r.attempts);
    let seqs_sent = rows.len();
    fed.store.run(move |store| -> Result<(), FedError> {
        let (delivered, failed) = match outcome {
            Ok(acked) => {
                let (ok, not): (Vec<u64>, Vec<u64>) = seqs.iter().partition(|s| acked.contains(s));
                let failure = (!not.is_empty()).then(|| Failure {
                    error: "the peer's answer held no valid ack for the message".into(),
                    retry_after: None,
                    refused: false,
                    permanent: false,
                });
                (ok, failure.map(|f| (not, f)))
            }
            Err(f) => (Vec::new(), Some((seqs, f))),
        };
        if !delivered.is_empty() {
            store.outbox().mark_delivered(&id, &delivered)?;
        }
        let failed_count = failed.as_ref().map_or(0, |(s, _)| s.len());
        let mut dead = 0;
        if let Some((seqs, failure)) = failed {
            let delay = failure
                .retry_after
                .map(|d| d.min(Duration::from_secs(config.retry_max_secs)))
                .unwrap_or_else(|| backoff(&config, attempts_before.saturating_add(1)));
            let next = now_ms().saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2));
            let max_age_ms = i64::try_from(config.max_age_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
            // Refused alone for its content: no attempt can succeed, so
            // it is dead now (an admin may still retry it). A batch refused
            // as a whole proves nothing about each message: it is split.
            let max_attempts = if failure.permanent && seqs.len() == 1 {
                0
            } else {
                config.max_attempts
            };
            dead = store.outbox().mark_failed(&id, &seqs, &failure.error, next, max_attempts, max_age_ms)?;
            tracing::warn!(peer = %id, messages = seqs.len(), dead, error = %failure.error, retry_in_ms = delay.as_millis() as u64, "federation delivery failed");
        }
        logbook_base::metrics::observe_delivery(&id, seqs_sent, failed_count, dead);
        Ok(())
    })
    .await
    .map_err(String::from)
}

/// Delay before attempt `attempt + 1`: initial × 2^(attempt-1), capped, ±20 %.
pub fn backoff(config: &crate::config::FederationConfig, attempt: u32) -> Duration {
    let cap = config.retry_max_secs.saturating_mul(1000);
    let base = config
        .retry_initial_ms
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(40))
        .min(cap);
    let mut byte = [0u8; 2];
    let _ = getrandom::fill(&mut byte);
    let jitter = 0.8 + 0.4 * f64::from(u16::from_le_bytes(byte)) / f64::from(u16::MAX);
    Duration::from_millis(((base as f64 * jitter) as u64).min(cap))
}

/// Sends the rows as one request; returns the seqs that were acknowledged
/// with a valid ack from this peer.
async fn send(
    fed: &Arc<Federation>,
    peer: &PeerRecord,
    key: &Arc<OwnKey>,
    rows: &[(u64, OutboxRecord)],
) -> Result<Vec<u64>, Failure> {
    let fail = |error: String| Failure {
        error,
        retry_after: None,
        refused: false,
        permanent: false,
    };
    // Sign now, so a retry never carries an old timestamp.
    let (fed2, key2) = (fed.clone(), key.clone());
    let rows2 = rows.to_vec();
    let peer_id = peer.instance_id.clone();
    let (body, ids) =
        tokio::task::spawn_blocking(move || -> Result<(Value, HashMap<Uuid, u64>), String> {
            let mut messages = Vec::with_capacity(rows2.len());
            let mut ids = HashMap::new();
            let now = now_ms();
            for (seq, row) in &rows2 {
                let id = Uuid::from_bytes(row.message_id);
                let payload: Value = serde_json::from_str(&row.payload)
                    .map_err(|e| format!("stored payload: {e}"))?;
                let m = EventMessage::signed(
                    &key2.private_key,
                    &key2.key_id,
                    &fed2.identity.instance_id,
                    &peer_id,
                    id,
                    &row.event_type,
                    payload,
                    now,
                )?;
                messages.push(serde_json::to_value(m).map_err(|e| e.to_string())?);
                ids.insert(id, *seq);
            }
            let body = if messages.len() == 1 {
                messages.pop().expect("one")
            } else {
                Value::Array(messages)
            };
            Ok((body, ids))
        })
        .await
        .map_err(|e| fail(e.to_string()))?
        .map_err(fail)?;

    let url = format!("{}{EVENT_PATH}", peer.base_url);
    let response = fed
        .client
        .post(&url)
        .json(&body)
        .send()
        .await
        .map_err(|e| fail(format!("sending to {url}: {e}")))?;
    let status = response.status();
    if !status.is_success() {
        // Busy or full (507: over its quota of our messages): the peer will
        // take the batch later, so wait as it says rather than split it.
        let busy = status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::SERVICE_UNAVAILABLE
            || status == StatusCode::INSUFFICIENT_STORAGE;
        let retry_after = if busy {
            response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs)
        } else {
            None
        };
        let detail = read_peer_json(response)
            .await
            .ok()
            .and_then(|v| v.get("detail").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_default();
        return Err(Failure {
            // The peer's words are logged and stored: inert.
            error: format!("HTTP {status}: {}", inert_text(&detail)),
            retry_after,
            refused: !busy,
            permanent: status == StatusCode::BAD_REQUEST
                || status == StatusCode::PAYLOAD_TOO_LARGE
                || status == StatusCode::UNPROCESSABLE_ENTITY,
        });
    }
    let answer: Value = read_peer_json(response)
        .await
        .map_err(|e| fail(format!("reading the ack: {e}")))?;
    let acks = match answer {
        Value::Array(items) => items,
        single => vec![single],
    };
    let key = identity::public_key_from_der(&peer.public_key_der).map_err(fail)?;
    let mut acked = Vec::new();
    for value in acks {
        let Ok(ack) = serde_json::from_value::<EventAck>(value.clone()) else {
            continue;
        };
        if ack.instance_id != peer.instance_id || !ack.received {
            continue;
        }
        let Some(seq) = ids.get(&ack.correlation_id) else {
            continue;
        };
        // Signed by the peer, and for us: an ack the peer gave another
        // instance for a message with the same id does not count here.
        if inbox::check_signed(fed, peer, &key, &value, &ack.key_id, ack.timestamp).is_ok()
            && inbox::check_recipient(fed, ack.recipient_id.as_deref()).is_ok()
        {
            acked.push(*seq);
        }
    }
    Ok(acked)
}
