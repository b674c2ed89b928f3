//! Delivery, without the network: what is due for a peer, the signed body
//! of a batch, which of the peer's acks count, and recording the outcome
//! (delivered, or a failed attempt with exponential backoff and jitter
//! until the configured attempts or age, then `dead` until an admin retries
//! it). The daemon's delivery worker sends the bodies over HTTP.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use logbook_journal::store::{OutboxRecord, PeerRecord, SentRow, Store, StoreError};
use serde_json::Value;
use uuid::Uuid;

use crate::batch::{self, BatchAck};
use crate::config::FederationConfig;
use crate::identity::{self, KeyError, OwnKey};
use crate::inbox::{check_recipient, check_signed};
use crate::instance::Instance;
use crate::message::{EventAck, EventMessage, SignError, now_ms};

/// Path messages are delivered to on the peer.
pub const EVENT_PATH: &str = "/api/v1/federation/incoming/event";

/// Outbox rows by seq, in order.
pub type Rows = Vec<(u64, OutboxRecord)>;

/// What is due for a peer.
pub struct Due {
    /// None: the peer is gone.
    pub peer: Option<PeerRecord>,
    /// Up to `limit` rows due now (and about `max_bytes` of them), from the
    /// first open one at or after the cursor.
    pub rows: Rows,
    /// Where the next look starts.
    pub cursor: u64,
    /// When the earliest row not yet due becomes due.
    pub wait_until: Option<i64>,
}

/// The peer and its due rows, from `cursor`: the store reads no more than
/// about `max_bytes` of them, since the caller sends no more at once.
pub fn due(
    store: &Store,
    peer: &str,
    cursor: u64,
    limit: usize,
    max_bytes: usize,
) -> Result<Due, StoreError> {
    let record = store.peers().get(peer)?;
    // A peer that is not active is sent nothing: its rows (a suspended
    // peer's backlog) are not read until it is.
    if record
        .as_ref()
        .is_none_or(|p| p.status != logbook_journal::store::PeerStatus::Active)
    {
        return Ok(Due {
            peer: record,
            rows: Vec::new(),
            cursor,
            wait_until: None,
        });
    }
    let (rows, cursor, wait_until) =
        store
            .outbox()
            .due(peer, cursor, limit, max_bytes, now_ms())?;
    Ok(Due {
        peer: record,
        rows,
        cursor,
        wait_until,
    })
}

/// Why a delivery attempt failed, and when to try again at the earliest.
#[derive(Debug, Clone)]
pub struct Failure {
    pub error: String,
    pub retry_after: Option<Duration>,
    /// The peer answered with an error status other than busy: it refused
    /// this request, maybe for one message in it.
    pub refused: bool,
    /// The peer refused it for its content: sending the same message again
    /// gets the same answer, so a message refused alone is dead at once
    /// rather than blocking the queue until it dies of age.
    pub permanent: bool,
    /// The peer answered 400 `invalid-message`: it could not read the body
    /// as messages, as a peer without signed batches reads one.
    pub not_messages: bool,
    /// The peer answered 413: the request is larger than it takes.
    pub too_large: bool,
}

impl Failure {
    /// A failure that says nothing about the messages (network, timeout).
    pub fn passing(error: String) -> Failure {
        Failure {
            error,
            retry_after: None,
            refused: false,
            permanent: false,
            not_messages: false,
            too_large: false,
        }
    }
}

/// A batch that cannot be signed.
#[derive(Debug)]
pub enum BatchError {
    /// A stored payload is not JSON (the parser's words).
    Payload(String),
    Sign(SignError),
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::Payload(e) => write!(f, "stored payload: {e}"),
            BatchError::Sign(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for BatchError {}

/// The body of one request carrying `rows` to `peer`, signed now with `key`
/// (so a retry never carries an old timestamp), and what its answer must
/// acknowledge.
///
/// With `signed_batch` and more than one row: a signed batch (one
/// signature, `crate::batch`); else one message, or an array of
/// separately signed ones (for a peer without the `batch-signature`
/// capability).
pub fn sign_batch(
    instance: &Instance,
    key: &OwnKey,
    peer: &str,
    rows: &[(u64, OutboxRecord)],
    signed_batch: bool,
) -> Result<(String, Sent), BatchError> {
    let mut ids = HashMap::with_capacity(rows.len());
    let now = now_ms();
    if signed_batch && rows.len() > 1 {
        let mut items = Vec::with_capacity(rows.len());
        for (seq, row) in rows {
            let id = Uuid::from_bytes(row.message_id);
            ids.insert(id, *seq);
            items.push(batch::Item {
                message_id: id,
                event_type: &row.event_type,
                payload: Cow::Borrowed(&row.payload),
            });
        }
        let (body, batch_id) = batch::sign(
            key,
            &key.key_id,
            &instance.identity.instance_id,
            peer,
            items,
            now,
        )
        .map_err(BatchError::Sign)?;
        return Ok((
            body,
            Sent {
                ids,
                batch: Some(batch_id),
            },
        ));
    }
    let encode = |e: serde_json::Error| BatchError::Sign(SignError::Encode(e.to_string()));
    let mut messages = Vec::with_capacity(rows.len());
    for (seq, row) in rows {
        let id = Uuid::from_bytes(row.message_id);
        let payload: Value =
            serde_json::from_str(&row.payload).map_err(|e| BatchError::Payload(e.to_string()))?;
        let m = EventMessage::signed(
            key,
            &key.key_id,
            &instance.identity.instance_id,
            peer,
            id,
            &row.event_type,
            payload,
            now,
        )
        .map_err(BatchError::Sign)?;
        messages.push(m);
        ids.insert(id, *seq);
    }
    let body = if messages.len() == 1 {
        serde_json::to_string(&messages[0])
    } else {
        serde_json::to_string(&messages)
    }
    .map_err(encode)?;
    Ok((body, Sent { ids, batch: None }))
}

/// What a request carried: each message id's outbox seq, and the batch id
/// if it was a signed batch.
pub struct Sent {
    pub ids: HashMap<Uuid, u64>,
    pub batch: Option<Uuid>,
}

/// The seqs that the peer's `answer` acknowledges with a valid ack: from
/// this peer, signed by it, and for us. For a signed batch the answer is
/// one `BatchAck` of that batch; else one `EventAck` or an array.
pub fn acked_seqs(
    instance: &Instance,
    peer: &PeerRecord,
    answer: Value,
    sent: &Sent,
) -> Result<Vec<u64>, KeyError> {
    let key = identity::public_key_from_der(&peer.public_key_der)?;
    if let Some(batch_id) = sent.batch {
        let Ok(ack) = serde_json::from_value::<BatchAck>(answer.clone()) else {
            return Ok(Vec::new());
        };
        // Signed by the peer, and for us.
        let valid = ack.instance_id == peer.instance_id
            && check_signed(instance, peer, &key, &answer, &ack.key_id, ack.timestamp).is_ok()
            && check_recipient(instance, Some(&ack.recipient_id)).is_ok();
        return Ok(if valid {
            batch::acked_by(&ack, batch_id, &sent.ids)
        } else {
            Vec::new()
        });
    }
    let acks = match answer {
        Value::Array(items) => items,
        single => vec![single],
    };
    let mut acked = Vec::new();
    for value in acks {
        let Ok(ack) = serde_json::from_value::<EventAck>(value.clone()) else {
            continue;
        };
        if ack.instance_id != peer.instance_id || !ack.received {
            continue;
        }
        let Some(seq) = sent.ids.get(&ack.correlation_id) else {
            continue;
        };
        // Signed by the peer, and for us: an ack the peer gave another
        // instance for a message with the same id does not count here.
        if check_signed(instance, peer, &key, &value, &ack.key_id, ack.timestamp).is_ok()
            && check_recipient(instance, ack.recipient_id.as_deref()).is_ok()
        {
            acked.push(*seq);
        }
    }
    Ok(acked)
}

/// Records the outcome of sending `rows` to `peer`: delivered for the
/// acknowledged ones, a failed attempt (with its backoff) for the others.
pub fn record(
    store: &Store,
    config: &FederationConfig,
    peer: &str,
    rows: &[(u64, OutboxRecord)],
    outcome: Result<Vec<u64>, Failure>,
) -> Result<(), StoreError> {
    // Each row by seq and message id: the store marks only the message
    // sent, never one that took its seq since (`Outbox::mark_delivered`).
    let sent: Vec<SentRow> = rows.iter().map(|(seq, r)| (*seq, r.message_id)).collect();
    let attempts_before = rows.first().map_or(0, |(_, r)| r.attempts);
    let seqs_sent = rows.len();
    let (delivered, failed) = match outcome {
        Ok(acked) => {
            let (ok, not): (Vec<SentRow>, Vec<SentRow>) =
                sent.iter().partition(|(seq, _)| acked.contains(seq));
            let failure = (!not.is_empty()).then(|| {
                Failure::passing("the peer's answer held no valid ack for the message".into())
            });
            (ok, failure.map(|f| (not, f)))
        }
        Err(f) => (Vec::new(), Some((sent, f))),
    };
    if !delivered.is_empty() {
        store.outbox().mark_delivered(peer, &delivered)?;
    }
    let failed_count = failed.as_ref().map_or(0, |(s, _)| s.len());
    let mut dead = 0;
    if let Some((sent, failure)) = failed {
        let delay = failure
            .retry_after
            .map(|d| d.min(Duration::from_secs(config.retry_max_secs)))
            .unwrap_or_else(|| backoff(config, attempts_before.saturating_add(1)));
        let next =
            now_ms().saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2));
        let max_age_ms =
            i64::try_from(config.max_age_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        // Refused alone for its content: no attempt can succeed, so
        // it is dead now (an admin may still retry it). A batch refused
        // as a whole proves nothing about each message: it is split.
        let max_attempts = if failure.permanent && sent.len() == 1 {
            0
        } else {
            config.max_attempts
        };
        dead = store.outbox().mark_failed(
            peer,
            &sent,
            &failure.error,
            next,
            max_attempts,
            max_age_ms,
        )?;
        tracing::warn!(peer = %peer, messages = sent.len(), dead, error = %failure.error, retry_in_ms = delay.as_millis() as u64, "federation delivery failed");
    }
    logbook_base::metrics::observe_delivery(peer, seqs_sent, failed_count, dead);
    Ok(())
}

/// Delay before attempt `attempt + 1`: initial × 2^(attempt-1), capped, ±20 %.
pub fn backoff(config: &FederationConfig, attempt: u32) -> Duration {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_is_capped() {
        let config = FederationConfig {
            retry_initial_ms: 1000,
            retry_max_secs: 10,
            ..FederationConfig::default()
        };
        let first = backoff(&config, 1).as_millis();
        assert!((800..=1200).contains(&first), "{first}");
        let third = backoff(&config, 3).as_millis();
        assert!((3200..=4800).contains(&third), "{third}");
        assert!(backoff(&config, 60).as_millis() <= 10_000);
    }
}
