//! Delivery: one worker per peer sends that peer's outbox in order, in
//! batches, signing each message at send time. A message is `delivered` only
//! on a verified ack; failures are retried with exponential backoff and
//! jitter (honouring `Retry-After` on 429, 503 and 507) until the configured
//! attempts or age, then the message is `dead` until retried by an admin.
//! What needs no network (what is due, signing, acks, recording) is
//! `logbook_federation::outbox`; this is the worker and the HTTP send.

use std::sync::Arc;
use std::time::{Duration, Instant};

use logbook_federation::identity::OwnKey;
use logbook_federation::message::now_ms;
use logbook_federation::outbox::{self, EVENT_PATH, Failure};
use logbook_journal::store::{OutboxRecord, PeerRecord, PeerStatus, inert_text};
use reqwest::StatusCode;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{Federation, WorkError, read_peer_json};

/// Longest a worker sleeps without looking at the outbox again.
const IDLE_RECHECK: Duration = Duration::from_secs(30);

/// Most payload bytes in one request (a row larger than this goes alone):
/// half the peer's default `incoming_max_body_bytes`, with room for the
/// envelopes, so a batch of large events is not refused whole (413) and
/// split into separately signed messages. A peer that takes less gets less
/// ([`BatchBytes`]).
const BATCH_BYTES: usize = 512 * 1024;
/// What each message adds around its payload in a request, at most
/// (members, ids, the digest in the manifest).
const ENVELOPE_BYTES: usize = 512;

/// How long a worker sends separately signed messages to a peer that
/// refused a signed batch before it tries a batch again.
const BATCH_RETRY: Duration = Duration::from_secs(10 * 60);

/// Whether a worker sends signed batches: yes, except for [`BATCH_RETRY`]
/// after the peer last refused one.
#[derive(Debug, Default)]
struct BatchMode {
    refused_at: Option<Instant>,
}

impl BatchMode {
    fn on(&self, now: Instant) -> bool {
        self.refused_at
            .is_none_or(|at| now.saturating_duration_since(at) >= BATCH_RETRY)
    }

    fn refused(&mut self, now: Instant) {
        self.refused_at = Some(now);
    }
}

/// The most payload bytes a worker puts in one request now: [`BATCH_BYTES`],
/// halved each time the peer refuses a batch as too large (413: it was
/// configured with a smaller `incoming_max_body_bytes`), down to one
/// message, so that not every batch is refused; doubled again (up to
/// [`BATCH_BYTES`]) after each [`BATCH_RETRY`] without a refusal, in case
/// the peer's limit was raised.
#[derive(Debug)]
struct BatchBytes {
    limit: usize,
    lowered_at: Option<Instant>,
}

impl Default for BatchBytes {
    fn default() -> BatchBytes {
        BatchBytes {
            limit: BATCH_BYTES,
            lowered_at: None,
        }
    }
}

impl BatchBytes {
    fn limit(&mut self, now: Instant) -> usize {
        if self
            .lowered_at
            .is_some_and(|at| now.saturating_duration_since(at) >= BATCH_RETRY)
        {
            self.limit = self.limit.saturating_mul(2).min(BATCH_BYTES);
            self.lowered_at = (self.limit < BATCH_BYTES).then_some(now);
        }
        self.limit
    }

    /// The peer refused a request of `sent` bytes as too large.
    fn too_large(&mut self, sent: usize, now: Instant) {
        self.limit = self.limit.min(sent / 2).max(1);
        self.lowered_at = Some(now);
    }
}

/// The record of a batch the peer acknowledged whole, written while the
/// next batch is read, signed and sent: at most one at a time.
type Recording = tokio::task::JoinHandle<Result<(), WorkError>>;

/// How long a worker waits after a step failed (the store, a task): the
/// first pause, doubled after each failure in a row up to the last.
const ERROR_PAUSE: Duration = Duration::from_secs(5);
const MAX_ERROR_PAUSE: Duration = Duration::from_secs(60);

pub(crate) async fn run(fed: Arc<Federation>, peer_id: String, shutdown: CancellationToken) {
    let mut changed = fed.store.outbox_watch();
    let mut requeued = fed.store.requeue_watch();
    let mut cursor = 0u64;
    // Signed batches unless the peer showed lately that it does not take them.
    let mut signed_batches = BatchMode::default();
    let mut batch_bytes = BatchBytes::default();
    let mut recording: Option<Recording> = None;
    let mut pause = ERROR_PAUSE;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        // A step cut short by shutdown loses nothing: what was not marked
        // delivered is sent again on the next start, and the peer deduplicates.
        let stepped = tokio::select! {
            () = shutdown.cancelled() => return,
            stepped = step(&fed, &peer_id, &mut cursor, &mut signed_batches, &mut batch_bytes, &mut recording) => stepped,
        };
        if stepped.is_ok() {
            pause = ERROR_PAUSE;
        }
        let wait = match stepped {
            Ok(Step::Removed) => return,
            Ok(Step::Sent) => continue,
            Ok(Step::Idle(until)) => until,
            Err(e) => {
                tracing::error!(peer = %peer_id, error = %e, retry_in_s = pause.as_secs(), "federation delivery failed");
                // The whole pause: new rows arriving must not make a
                // failing store be retried (and logged) at their pace. A
                // requeue meanwhile still resets the cursor at the next wait.
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(MAX_ERROR_PAUSE);
                continue;
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
    /// A batch was attempted, or its rows were gone before they were
    /// signed; look again at once.
    Sent,
    /// Nothing to send now; wait until then (or a change).
    Idle(Option<i64>),
}

async fn step(
    fed: &Arc<Federation>,
    peer_id: &str,
    cursor: &mut u64,
    signed_batches: &mut BatchMode,
    batch_bytes: &mut BatchBytes,
    recording: &mut Option<Recording>,
) -> Result<Step, WorkError> {
    let id = peer_id.to_string();
    let limit = fed.config().batch_size;
    let from = *cursor;
    // Read before the rows: a redaction or deletion answered after this
    // has moved it.
    let read_at = fed.store.outbox_rewrites();
    let due = fed
        .store
        .run(move |store| outbox::due(store, &id, from, limit, BATCH_BYTES))
        .await?;
    let Some(peer) = due.peer else {
        return Ok(Step::Removed);
    };
    // A removed peer's worker idles rather than ends: if the peer were
    // re-activated just as the worker ended, `ensure_worker` could see it
    // still running and start none, leaving the peer's outbox unsent.
    if peer.status != PeerStatus::Active {
        return Ok(Step::Idle(None));
    }
    let mut rows = due.rows;
    *cursor = due.cursor;
    if rows.is_empty() {
        finish(recording, cursor).await?;
        return Ok(Step::Idle(due.wait_until));
    }
    rows.truncate(within_bytes(&rows, batch_bytes.limit(Instant::now())));
    // Sign with the key the peer pins for us. A batch ends at an undelivered
    // announcement of our new key: what follows it is signed with the new
    // key, which the peer accepts only once it has the announcement.
    let (fed2, id) = (fed.clone(), peer_id.to_string());
    let (key, announcement) = fed
        .store
        .run(move |store| -> Result<_, WorkError> {
            Ok(fed2.instance.signing_key_for(store, &id)?)
        })
        .await?;
    // The rows start at the first open one. If they all come after the
    // announcement, it is dead: the peer still pins the old key, so the
    // later messages proceed (like after any dead message), signed with it.
    if let Some(seq) = announcement
        && rows.first().is_some_and(|(s, _)| *s <= seq)
    {
        rows.retain(|(s, _)| *s <= seq);
    }
    let batches = signed_batches.on(Instant::now());
    let (mut rows, mut read_at, answer) = send(fed, &peer, &key, rows, read_at, batches).await?;
    // The previous batch's record ran during this send; it ends before
    // anything else is recorded.
    finish(recording, cursor).await?;
    // None: every row was removed or closed before it was signed.
    let Some(mut outcome) = answer else {
        return Ok(Step::Sent);
    };
    if batches && rows.len() > 1 && outcome.as_ref().is_err_and(|failure| failure.not_messages) {
        // A peer without the `batch-signature` capability reads a signed
        // batch as a message without its members (400 invalid-message):
        // send it separately signed ones for a while, then try a batch
        // again, so a peer upgraded meanwhile gets batches without our restart.
        tracing::warn!(peer = %peer_id, retry_in_s = BATCH_RETRY.as_secs(), "the peer refused a signed batch; sending it separately signed messages for now");
        signed_batches.refused(Instant::now());
        let answer;
        (rows, read_at, answer) = send(fed, &peer, &key, rows, read_at, false).await?;
        let Some(again) = answer else {
            return Ok(Step::Sent);
        };
        outcome = again;
    }
    if rows.len() > 1 && outcome.as_ref().is_err_and(|failure| failure.too_large) {
        // The request's size, not any message's: the same rows go again at
        // once, in smaller batches, with no attempt counted against them.
        let sent = request_bytes(&rows);
        batch_bytes.too_large(sent, Instant::now());
        logbook_base::metrics::observe_delivery(peer_id, rows.len(), rows.len(), 0);
        tracing::warn!(peer = %peer_id, refused_bytes = sent, now_bytes = batch_bytes.limit, "the peer refused a batch as too large; sending it smaller batches");
        return Ok(Step::Sent);
    }
    match outcome {
        // The peer refused the batch as a whole: maybe one message in it is
        // one it cannot take (too large, too deep, an id it saw with other
        // content). Send them one by one, in order, so that one message
        // cannot hold back or kill its batch-mates; stop at the first that
        // fails for a passing reason, so later ones still wait behind it. One
        // refused for its content is dead at once (see `record`): go on.
        Err(failure) if failure.refused && rows.len() > 1 => {
            // The refused request was an attempt at every message in it.
            logbook_base::metrics::observe_delivery(peer_id, rows.len(), rows.len(), 0);
            for row in rows {
                // Each row as of when the batch was read: the count may
                // move during any of these requests.
                let (one, _, answer) = send(fed, &peer, &key, vec![row], read_at, false).await?;
                let Some(outcome) = answer else {
                    continue;
                };
                let go_on = match &outcome {
                    Ok(acked) => !acked.is_empty(),
                    Err(failure) => failure.permanent,
                };
                record(fed, peer_id, &one, outcome).await?;
                if !go_on {
                    break;
                }
            }
        }
        // Every message acknowledged: the next batch starts after this one
        // and goes out while this one is recorded (the mark is a durable
        // write; the peer keeps what it acknowledged whatever we do). Not
        // when it carried our key announcement: marking that delivered is
        // what makes the next batch signed with the new key, which the peer
        // now pins (signed with the old one, it would be refused).
        Ok(acked)
            if rows.iter().all(|(seq, _)| acked.contains(seq))
                && !rows.iter().any(|(seq, _)| Some(*seq) == announcement) =>
        {
            *cursor = rows.last().map_or(*cursor, |(seq, _)| *seq);
            let (fed, peer_id) = (fed.clone(), peer_id.to_string());
            *recording = Some(tokio::spawn(async move {
                record(&fed, &peer_id, &rows, Ok(acked)).await
            }));
        }
        outcome => record(fed, peer_id, &rows, outcome).await?,
    }
    Ok(Step::Sent)
}

/// Waits for the record of the last batch acknowledged whole. If it failed,
/// its rows are still open behind the cursor: scan from the start again.
async fn finish(recording: &mut Option<Recording>, cursor: &mut u64) -> Result<(), WorkError> {
    let Some(task) = recording.take() else {
        return Ok(());
    };
    let recorded = task.await.map_err(WorkError::Task).and_then(|r| r);
    if recorded.is_err() {
        *cursor = 0;
    }
    recorded
}

/// What one row adds to a request, at most.
fn row_bytes(row: &OutboxRecord) -> usize {
    row.payload.len() + ENVELOPE_BYTES
}

/// How many of `rows`, from the first, fit in `limit` bytes (at least one).
fn within_bytes(rows: &[(u64, OutboxRecord)], limit: usize) -> usize {
    let mut bytes = 0usize;
    let fit = rows
        .iter()
        .take_while(|(_, row)| {
            bytes = bytes.saturating_add(row_bytes(row));
            bytes <= limit
        })
        .count();
    fit.max(1)
}

/// What `rows` add to a request, as [`within_bytes`] counts it.
fn request_bytes(rows: &[(u64, OutboxRecord)]) -> usize {
    rows.iter()
        .map(|(_, row)| row_bytes(row))
        .fold(0, usize::saturating_add)
}

/// Records the outcome of sending `rows` (`logbook_federation::outbox::record`).
async fn record(
    fed: &Arc<Federation>,
    peer_id: &str,
    rows: &[(u64, OutboxRecord)],
    outcome: Result<Vec<u64>, Failure>,
) -> Result<(), WorkError> {
    let (fed2, id, rows) = (fed.clone(), peer_id.to_string(), rows.to_vec());
    Ok(fed
        .store
        .run(move |store| outbox::record(store, fed2.config(), &id, &rows, outcome))
        .await?)
}

/// Signs `rows`, read at the outbox's change count `read_at`, as they are
/// stored now (a redaction or plan deletion answered since has changed
/// them), and sends them as one request. Returns the rows signed, the count
/// they are current at, and the seqs acknowledged with a valid ack from
/// this peer: no answer when none of the rows was left to send.
async fn send(
    fed: &Arc<Federation>,
    peer: &PeerRecord,
    key: &Arc<OwnKey>,
    rows: outbox::Rows,
    read_at: u64,
    signed_batch: bool,
) -> Result<(outbox::Rows, u64, Option<Result<Vec<u64>, Failure>>), WorkError> {
    // Sign now, so a retry never carries an old timestamp.
    let (fed2, key2) = (fed.clone(), key.clone());
    let peer_id = peer.instance_id.clone();
    let (rows, current_at, signed) = fed
        .store
        .run(move |store| {
            store
                .outbox()
                .sign_as_stored(&peer_id, rows, read_at, |rows| {
                    (!rows.is_empty()).then(|| {
                        // A panic here is a failed attempt of these rows
                        // (backoff, then dead), not a store error that
                        // would retry them forever ahead of the rest.
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            outbox::sign_batch(&fed2.instance, &key2, &peer_id, rows, signed_batch)
                                .map_err(unsigned)
                        }))
                        .unwrap_or_else(|_| {
                            Err(Failure {
                                // Maybe one message's doing: split the batch.
                                refused: true,
                                ..Failure::passing("signing the messages panicked".into())
                            })
                        })
                    })
                })
        })
        .await?;
    let answer = match signed {
        None => None,
        Some(Err(failure)) => Some(Err(failure)),
        Some(Ok((body, sent))) => Some(post(fed, peer, body, &sent).await),
    };
    Ok((rows, current_at, answer))
}

/// Why rows could not be signed, as a delivery failure. A stored payload
/// that is not JSON is that message's own fault, and always will be: the
/// batch is split and the message, alone, is dead at once (later ones go
/// on). A signing error says nothing about the messages.
fn unsigned(e: outbox::BatchError) -> Failure {
    let payload = matches!(e, outbox::BatchError::Payload(_));
    Failure {
        refused: payload,
        permanent: payload,
        ..Failure::passing(e.to_string())
    }
}

/// Posts a signed body to the peer; returns the seqs of `sent` it
/// acknowledged with a valid ack.
async fn post(
    fed: &Arc<Federation>,
    peer: &PeerRecord,
    body: String,
    sent: &outbox::Sent,
) -> Result<Vec<u64>, Failure> {
    let url = format!("{}{EVENT_PATH}", peer.base_url);
    let response = fed
        .client
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| Failure::passing(format!("sending to {url}: {e}")))?;
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
        let problem = read_peer_json(response).await.ok();
        let member = |name: &str| {
            problem
                .as_ref()
                .and_then(|v| v.get(name).and_then(Value::as_str).map(str::to_string))
                .unwrap_or_default()
        };
        let detail = member("detail");
        return Err(Failure {
            // The peer's words are logged and stored: inert.
            error: format!("HTTP {status}: {}", inert_text(&detail)),
            retry_after,
            refused: !busy,
            // Refused for its content (400, 413, 422): the same message gets
            // the same answer.
            permanent: status == StatusCode::BAD_REQUEST
                || status == StatusCode::PAYLOAD_TOO_LARGE
                || status == StatusCode::UNPROCESSABLE_ENTITY,
            not_messages: status == StatusCode::BAD_REQUEST
                && member("type").ends_with("invalid-message"),
            too_large: status == StatusCode::PAYLOAD_TOO_LARGE,
        });
    }
    let answer: Value = read_peer_json(response)
        .await
        .map_err(|e| Failure::passing(format!("reading the ack: {e}")))?;
    outbox::acked_seqs(&fed.instance, peer, answer, sent)
        .map_err(|e| Failure::passing(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A payload that is not JSON kills its own message (alone, at once);
    /// a signing error only delays the rows.
    #[test]
    fn an_unsignable_payload_is_its_messages_fault_alone() {
        let payload = unsigned(outbox::BatchError::Payload("expected value".into()));
        assert!(payload.refused && payload.permanent, "{payload:?}");
        let signing = unsigned(outbox::BatchError::Sign(
            logbook_federation::message::SignError::Encode("no".into()),
        ));
        assert!(!signing.refused && !signing.permanent, "{signing:?}");
    }

    #[test]
    fn a_batch_refused_as_too_large_halves_the_next_ones_for_a_while() {
        let start = Instant::now();
        let mut bytes = BatchBytes::default();
        assert_eq!(bytes.limit(start), BATCH_BYTES);
        bytes.too_large(300_000, start);
        assert_eq!(bytes.limit(start), 150_000);
        // Never above what it was, never below one message.
        bytes.too_large(400_000, start);
        assert_eq!(bytes.limit(start), 150_000);
        bytes.too_large(1, start);
        assert_eq!(bytes.limit(start), 1);
        assert_eq!(within_bytes(&[(1, row(10)), (2, row(10))], 1), 1);
        // Twice as much after each BATCH_RETRY without a refusal, up to
        // the full size.
        assert_eq!(bytes.limit(start + BATCH_RETRY), 2);
        assert_eq!(bytes.limit(start + BATCH_RETRY * 2), 4);
        let mut bytes = BatchBytes::default();
        bytes.too_large(300_000, start);
        assert_eq!(bytes.limit(start + BATCH_RETRY), 300_000);
        assert_eq!(bytes.limit(start + BATCH_RETRY * 2), BATCH_BYTES);
        assert_eq!(bytes.limit(start + BATCH_RETRY * 9), BATCH_BYTES);
    }

    fn row(payload: usize) -> OutboxRecord {
        OutboxRecord {
            message_id: [0; 16],
            event_type: "step.done".into(),
            payload: "x".repeat(payload),
            created_at: 0,
            status: logbook_journal::store::DeliveryStatus::Pending,
            attempts: 0,
            last_error: None,
            next_attempt_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn a_refused_signed_batch_is_tried_again_later() {
        let start = Instant::now();
        let mut mode = BatchMode::default();
        assert!(mode.on(start));
        mode.refused(start);
        assert!(!mode.on(start));
        assert!(!mode.on(start + BATCH_RETRY - Duration::from_secs(1)));
        assert!(mode.on(start + BATCH_RETRY));
        // Refused again: another while of separately signed messages.
        mode.refused(start + BATCH_RETRY);
        assert!(!mode.on(start + BATCH_RETRY + Duration::from_secs(1)));
    }
}
