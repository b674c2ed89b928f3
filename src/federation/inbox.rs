//! Receiving: checks every message from a peer (active peer, pinned key,
//! signature, timestamp window, rate limit), stores it durably with its
//! chain-continuity verdict, and only then answers with signed acks.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use axum::http::StatusCode;
use rsa::PublicKey;
use serde_json::Value;
use serde_json::value::RawValue;

use super::Federation;
use super::identity::{self, key_id};
use super::message::{
    EventAck, EventMessage, KEY_ROTATED_TYPE, PROTOCOL_V1, PROTOCOL_VERSION, now_ms, verify_value,
};
use crate::http::problem::Problem;
use logbook_base::canonical::canonical_json;
use logbook_journal::Event;
use logbook_journal::store::{
    Incoming, JournalLink, PeerRecord, PeerStatus, ReceiveError, ReceiveOutcome, Rekey, Store,
};

/// Most messages accepted in one request.
pub const MAX_BATCH: usize = 1000;

/// Per-peer token buckets: `rate` tokens (messages, or bytes) per second,
/// up to `burst` saved.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(rate: u32, burst: u32) -> RateLimiter {
        RateLimiter::with_rates(f64::from(rate), f64::from(burst))
    }

    /// A limiter: `rate` per second, `burst` saved. A single request costing
    /// more than the burst is let through only when the bucket is full, and
    /// is charged in full: the bucket goes into debt, so the peer waits as
    /// long as if it had sent the same in small requests.
    pub fn with_rates(rate: f64, burst: f64) -> RateLimiter {
        RateLimiter {
            rate,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `cost` tokens for `peer`, or says in how many seconds to retry.
    pub fn take(&self, peer: &str, cost: usize) -> Result<(), u64> {
        let cost = cost as f64;
        // What must be saved up before this request may pass.
        let needed = cost.min(self.burst);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = buckets.entry(peer.to_string()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.burst);
        *last = now;
        if *tokens >= needed {
            *tokens -= cost;
            Ok(())
        } else {
            Err(((needed - *tokens) / self.rate).ceil().max(1.0) as u64)
        }
    }
}

fn forbidden(detail: String) -> Problem {
    Problem::new(
        StatusCode::FORBIDDEN,
        "unknown-peer",
        "Unknown or inactive peer",
        detail,
    )
}

fn unauthorized(kind: &'static str, title: &'static str, detail: String) -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, kind, title, detail)
}

/// The active peer `instance_id` and its pinned key, or 403.
pub fn active_peer(store: &Store, instance_id: &str) -> Result<(PeerRecord, PublicKey), Problem> {
    let peer = store
        .peers()
        .get(instance_id)?
        .ok_or_else(|| forbidden(format!("{instance_id:?} is not a peer of this instance")))?;
    if peer.status != PeerStatus::Active {
        return Err(forbidden(format!(
            "peer {instance_id:?} is {}",
            peer.status.as_str()
        )));
    }
    let key = identity::public_key_from_der(&peer.public_key_der).map_err(Problem::internal)?;
    Ok((peer, key))
}

/// Checks the signature of a message as received (`value`) against the
/// peer's pinned key, and its timestamp against the window.
pub fn check_signed(
    fed: &Federation,
    peer: &PeerRecord,
    key: &PublicKey,
    value: &Value,
    key_id_claimed: &str,
    timestamp: i64,
) -> Result<(), Problem> {
    let pinned = key_id(&peer.public_key_der);
    if key_id_claimed != pinned {
        return Err(unauthorized(
            "bad-signature",
            "Bad signature",
            format!(
                "keyId {key_id_claimed:?} is not the key pinned for {:?} ({pinned})",
                peer.instance_id
            ),
        ));
    }
    if !verify_value(value, key) {
        return Err(unauthorized(
            "bad-signature",
            "Bad signature",
            "the signature does not verify against the peer's pinned key".into(),
        ));
    }
    let window = fed.config.timestamp_window_secs.saturating_mul(1000);
    let skew = now_ms().saturating_sub(timestamp);
    if skew.unsigned_abs() > window {
        return Err(unauthorized(
            "stale-timestamp",
            "Timestamp outside the window",
            format!(
                "the message timestamp is {}s away from this instance's clock; at most {}s is accepted",
                skew / 1000,
                fed.config.timestamp_window_secs
            ),
        ));
    }
    Ok(())
}

/// Checks that a message or ack is addressed to this instance: its signed
/// `recipientId` must be our instance id, so one captured on its way to
/// another instance that trusts the same sender is refused (401). Without
/// `recipientId` (protocol v1) it is accepted only while
/// `[federation] accept_protocol_v1` is on.
pub fn check_recipient(fed: &Federation, recipient: Option<&str>) -> Result<(), Problem> {
    match recipient {
        Some(id) if id == fed.identity.instance_id => Ok(()),
        Some(other) => Err(unauthorized(
            "wrong-recipient",
            "Addressed to another instance",
            format!(
                "recipientId is {:?}, not this instance ({:?})",
                other.chars().take(128).collect::<String>(),
                fed.identity.instance_id
            ),
        )),
        None if fed.config.accept_protocol_v1 => Ok(()),
        None => Err(unauthorized(
            "recipient-missing",
            "No recipientId",
            format!(
                "this instance speaks {PROTOCOL_VERSION} and requires a signed recipientId ({PROTOCOL_V1} is not accepted)"
            ),
        )),
    }
}

/// A request body as one message or a batch: (each message's text, borrowed
/// from the body, and whether it was a batch).
pub fn split_batch(text: &str) -> Result<(Vec<&RawValue>, bool), Problem> {
    let malformed = |e: serde_json::Error| {
        Problem::bad_request("invalid-json", "Malformed JSON", e.to_string())
    };
    if !super::intake::is_batch(text) {
        return Ok((vec![serde_json::from_str(text).map_err(malformed)?], false));
    }
    let items: Vec<&RawValue> = serde_json::from_str(text).map_err(malformed)?;
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(Problem::bad_request(
            "invalid-batch",
            "Invalid batch",
            format!("a batch holds 1 to {MAX_BATCH} messages"),
        ));
    }
    Ok((items, true))
}

/// A message's text as JSON, to check its signature over what was sent.
fn parse_value(raw: &RawValue) -> Result<Value, Problem> {
    serde_json::from_str(raw.get())
        .map_err(|e| Problem::bad_request("invalid-json", "Malformed JSON", e.to_string()))
}

/// The members of a message checked before the message itself is built,
/// borrowed from its parsed tree. It has the members of `EventMessage`
/// (the others are only looked at, not built), so a message of the wrong
/// shape is refused (400) before its signature is checked, as before.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)] // The ignored members are there to be required.
struct Head<'a> {
    message_id: serde::de::IgnoredAny,
    instance_id: &'a str,
    #[serde(default)]
    recipient_id: Option<&'a str>,
    event_type: serde::de::IgnoredAny,
    payload: serde::de::IgnoredAny,
    timestamp: i64,
    key_id: &'a str,
    signature: serde::de::IgnoredAny,
}

fn invalid_message(e: impl std::fmt::Display) -> Problem {
    Problem::bad_request(
        "invalid-message",
        "Invalid EventMessage",
        format!(
            "{e}; expected {{messageId, instanceId, recipientId, eventType, payload, timestamp, keyId, signature}}"
        ),
    )
}

/// A message's text as an `EventMessage` (an object with exactly its
/// members), or 400.
pub fn parse_message(raw: &RawValue) -> Result<EventMessage, Problem> {
    // serde fills a struct from an array in field order: a message is an
    // object, whatever else would deserialize.
    if !raw.get().starts_with('{') {
        return Err(Problem::bad_request(
            "invalid-message",
            "Invalid EventMessage",
            "a message is a JSON object",
        ));
    }
    serde_json::from_str(raw.get()).map_err(invalid_message)
}

/// Verifies a batch of messages from one sender. Returns the sender.
///
/// Each message is parsed once, into the tree its signature is checked
/// over; its sender, key, signature, recipient and timestamp are checked
/// on that tree, and only then is the message built from it. The first
/// failure ends the batch: nothing after it is parsed.
pub fn verify_batch(
    fed: &Federation,
    store: &Store,
    items: &[&RawValue],
) -> Result<(PeerRecord, Vec<EventMessage>), Problem> {
    let mut sender: Option<(PeerRecord, PublicKey, String)> = None;
    let mut messages = Vec::with_capacity(items.len());
    for raw in items {
        // serde fills a struct from an array in field order: a message is an
        // object, whatever else would deserialize.
        if !raw.get().trim_start().starts_with('{') {
            return Err(Problem::bad_request(
                "invalid-message",
                "Invalid EventMessage",
                "a message is a JSON object",
            ));
        }
        let value = parse_value(raw)?;
        let head = <Head as serde::Deserialize>::deserialize(&value).map_err(invalid_message)?;
        let (peer, key, pinned) = match &sender {
            Some((peer, _, _)) if peer.instance_id != head.instance_id => {
                return Err(Problem::bad_request(
                    "invalid-batch",
                    "Invalid batch",
                    "all messages of a batch must come from one instance",
                ));
            }
            Some(known) => known,
            None => {
                let (peer, key) = active_peer(store, head.instance_id)?;
                let pinned = key_id(&peer.public_key_der);
                sender.insert((peer, key, pinned))
            }
        };
        let retired = if head.key_id != pinned.as_str() {
            store
                .rotations()
                .retired_peer_key(&peer.instance_id, head.key_id)?
        } else {
            None
        };
        let is_retired = retired.is_some();
        match retired {
            Some(der) => {
                let retired_peer = PeerRecord {
                    public_key_der: der,
                    ..peer.clone()
                };
                let old = identity::public_key_from_der(&retired_peer.public_key_der)
                    .map_err(Problem::internal)?;
                check_signed(
                    fed,
                    &retired_peer,
                    &old,
                    &value,
                    head.key_id,
                    head.timestamp,
                )?;
            }
            None => check_signed(fed, peer, key, &value, head.key_id, head.timestamp)?,
        }
        check_recipient(fed, head.recipient_id)?;
        // Checked: now the message, from the same tree.
        let m: EventMessage = serde_json::from_value(value).map_err(invalid_message)?;
        if is_retired {
            check_retired_redelivery(store, peer, &m)?;
        }
        messages.push(m);
    }
    let (peer, _, _) = sender.expect("a batch holds at least one message");
    Ok((peer, messages))
}

/// A message signed with a key the peer rotated away from (its signature
/// checked against that key) is accepted only as a redelivery of a message
/// already stored (same id and content): the sender had not yet seen our
/// ack of its key announcement. It is acked again and changes nothing.
/// Anything new signed with the old key is refused, so a leaked old key
/// cannot inject messages.
fn check_retired_redelivery(
    store: &Store,
    peer: &PeerRecord,
    m: &EventMessage,
) -> Result<(), Problem> {
    let stored = store.inbox().get(&m.message_id)?;
    if stored.is_some_and(|r| r.peer == peer.instance_id && r.digest == m.content_digest()) {
        return Ok(());
    }
    Err(unauthorized(
        "retired-key",
        "Signed with a retired key",
        format!(
            "keyId {:?} is a key {:?} rotated away from; it is accepted only for redeliveries of messages already received",
            m.key_id, peer.instance_id
        ),
    ))
}

/// Verifies, rate-limits, stores and acknowledges `/incoming/event`.
pub fn receive_events(fed: &Federation, store: &Store, body: &str) -> Result<Value, Problem> {
    let (items, batch) = split_batch(body)?;
    let (peer, messages) = verify_batch(fed, store, &items)?;
    let mut incoming = Vec::with_capacity(messages.len());
    let mut rekey = None;
    for m in &messages {
        if m.event_type == KEY_ROTATED_TYPE {
            if rekey.is_some() {
                return Err(Problem::unprocessable(
                    "invalid-batch",
                    "Invalid batch",
                    "a request carries at most one key announcement",
                ));
            }
            let (new_der, _) = super::rotation::parse_announcement(&m.payload).map_err(|e| {
                Problem::unprocessable(
                    "invalid-payload",
                    "Invalid key announcement",
                    format!("{KEY_ROTATED_TYPE}: {e}"),
                )
            })?;
            rekey = Some(Rekey {
                message_id: m.message_id,
                old_key_id: key_id(&peer.public_key_der),
                old_der: peer.public_key_der.clone(),
                new_der,
            });
            incoming.push(Incoming {
                message_id: m.message_id,
                peer: peer.instance_id.clone(),
                event_type: m.event_type.clone(),
                journal: None,
                payload: canonical_json(&m.payload),
                timestamp: m.timestamp,
                digest: m.content_digest(),
            });
            continue;
        }
        if m.event_type.starts_with("federation.") {
            return Err(Problem::unprocessable(
                "invalid-type",
                "Invalid event type",
                format!(
                    "{:?} is a control message; send it to its own route",
                    m.event_type
                ),
            ));
        }
        use logbook_journal::validate::{InvalidEvent, validate_event};
        let payload = validate_event(
            &m.event_type,
            &m.payload,
            logbook_journal::registry::MAX_TYPE_LEN,
        )
        .map_err(|e| match e {
            InvalidEvent::Type(e) => Problem::unprocessable(
                "invalid-type",
                "Invalid event type",
                format!("eventType {:?} {e}", m.event_type),
            ),
            InvalidEvent::Payload(e) => {
                Problem::unprocessable("invalid-payload", "Invalid payload", e.to_string())
            }
        })?
        .json
        .get()
        .to_string();
        incoming.push(Incoming {
            message_id: m.message_id,
            peer: peer.instance_id.clone(),
            event_type: m.event_type.clone(),
            journal: journal_link(&payload),
            payload,
            timestamp: m.timestamp,
            digest: m.content_digest(),
        });
    }
    let bytes = incoming.iter().map(|m| m.payload.len()).sum();
    rate_limit_bytes(fed, &peer.instance_id, bytes)?;
    rate_limit(fed, &peer.instance_id, messages.len())?;
    match store.inbox().receive(&incoming, rekey.as_ref()) {
        Ok(outcomes) => {
            if let Some(rekey) = &rekey {
                let applied = incoming
                    .iter()
                    .zip(&outcomes)
                    .any(|(m, o)| m.message_id == rekey.message_id && *o == ReceiveOutcome::Stored);
                if applied {
                    tracing::warn!(peer = %peer.instance_id, old_key_id = %rekey.old_key_id, new_key_id = %key_id(&rekey.new_der), "peer rotated its key; pinned the new key");
                }
            }
        }
        Err(e) => return Err(receive_error(&peer.instance_id, e)),
    }
    // Stored (fsynced): now acknowledge.
    let acks = messages
        .iter()
        .map(|m| sign_ack(fed, store, &peer.instance_id, m))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(if batch {
        Value::Array(acks)
    } else {
        acks.into_iter().next().expect("one message")
    })
}

pub fn id_reused(id: uuid::Uuid) -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "message-id-reused",
        "Message id reused",
        format!("messageId {id} was already received with different content"),
    )
}

/// A refusal from the store as the peer sees it.
pub fn receive_error(peer: &str, e: ReceiveError) -> Problem {
    match e {
        ReceiveError::IdReused(id) => id_reused(id),
        ReceiveError::OverQuota { used, quota } => Problem::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "peer-quota-exceeded",
            "Peer storage quota exceeded",
            format!(
                "peer {peer:?} has {used} bytes of messages stored here, and its quota is {quota}; retry after old messages are pruned"
            ),
        )
        .with("retryAfter", QUOTA_RETRY_AFTER_SECS),
        ReceiveError::SubscriptionCap(cap) => Problem::new(
            StatusCode::CONFLICT,
            "subscription-limit",
            "Too many subscriptions",
            format!("a peer may hold at most {cap} subscriptions here; unsubscribe from one first"),
        ),
        ReceiveError::Storage(e) => e.into(),
    }
}

/// What a peer over its quota is told to wait: room comes back when the
/// hourly retention pass prunes old messages.
const QUOTA_RETRY_AFTER_SECS: u64 = 3600;

/// Takes `bytes` (of payload) from `peer`'s byte rate limit, or answers 429.
pub fn rate_limit_bytes(fed: &Federation, peer: &str, bytes: usize) -> Result<(), Problem> {
    fed.byte_limiter.take(peer, bytes).map_err(|retry_after| {
        Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many bytes",
            format!("peer {peer:?} is over its byte rate limit; retry in {retry_after}s"),
        )
        .with("retryAfter", retry_after)
    })
}

/// Takes `count` messages from `peer`'s rate limit, or answers 429 (the
/// route turns `retryAfter` into a `Retry-After` header).
pub fn rate_limit(fed: &Federation, peer: &str, count: usize) -> Result<(), Problem> {
    fed.limiter.take(peer, count).map_err(|retry_after| {
        Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many messages",
            format!("peer {peer:?} is over its rate limit; retry in {retry_after}s"),
        )
        .with("retryAfter", retry_after)
    })
}

fn count_by_peer<'a>(peers: impl Iterator<Item = &'a str>) -> HashMap<&'a str, usize> {
    let mut counts = HashMap::new();
    for peer in peers {
        *counts.entry(peer).or_insert(0) += 1;
    }
    counts
}

/// An ack of `message` for `peer`, signed with the key that peer pins for
/// us. It names the peer as its recipient, unless the message is a
/// protocol v1 one (accepted under `accept_protocol_v1`): then the ack is
/// v1 too, so that the peer can read it.
pub fn sign_ack(
    fed: &Federation,
    store: &Store,
    peer: &str,
    message: &EventMessage,
) -> Result<Value, Problem> {
    let (key, _) = fed
        .signing_key_for(store, peer)
        .map_err(Problem::internal)?;
    let recipient = message.recipient_id.is_some().then_some(peer);
    let ack = EventAck::signed(
        &key.private_key,
        &key.key_id,
        &fed.identity.instance_id,
        recipient,
        message.message_id,
        now_ms(),
    )
    .map_err(Problem::internal)?;
    serde_json::to_value(ack).map_err(|e| Problem::internal(e.to_string()))
}

/// The chain link of a payload that is a whole journal event.
fn journal_link(payload: &str) -> Option<JournalLink> {
    let event: Event = serde_json::from_str(payload).ok()?;
    Some(JournalLink {
        plan_id: event.plan_id,
        seq: event.seq,
        prev_hash: event.prev_hash,
        signature: event.signature,
    })
}

/// Verifies acks sent separately (`/incoming/event/ack`) and marks the
/// acknowledged messages delivered. Returns how many were known.
pub fn receive_acks(fed: &Federation, store: &Store, body: &str) -> Result<Value, Problem> {
    let (items, _) = split_batch(body)?;
    let acks = items
        .iter()
        .map(|raw| {
            serde_json::from_str::<EventAck>(raw.get()).map_err(|e| {
                Problem::bad_request(
                    "invalid-ack",
                    "Invalid EventAck",
                    format!("{e}; expected {{messageId, correlationId, instanceId, recipientId, received, timestamp, keyId, signature}}"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Verify every ack before acting on any: a rejected request changes nothing.
    let mut verified = Vec::with_capacity(acks.len());
    for (raw, ack) in items.iter().zip(&acks) {
        let (peer, key) = active_peer(store, &ack.instance_id)?;
        check_signed(
            fed,
            &peer,
            &key,
            &parse_value(raw)?,
            &ack.key_id,
            ack.timestamp,
        )?;
        check_recipient(fed, ack.recipient_id.as_deref())?;
        verified.push((peer.instance_id, ack));
    }
    for (peer, n) in count_by_peer(verified.iter().map(|(p, _)| p.as_str())) {
        rate_limit(fed, peer, n)?;
    }
    let mut acknowledged = 0;
    for (peer, ack) in verified {
        if ack.received && store.outbox().ack(&peer, &ack.correlation_id)? {
            acknowledged += 1;
        }
    }
    Ok(serde_json::json!({"acknowledged": acknowledged}))
}

#[cfg(test)]
mod limiter_tests {
    use super::RateLimiter;

    #[test]
    fn a_request_above_the_burst_is_charged_in_full() {
        let limiter = RateLimiter::new(1, 10);
        // A full bucket lets one large request through...
        assert!(limiter.take("p", 1000).is_ok());
        // ...which leaves it ~990 in debt: the next waits that long.
        let wait = limiter.take("p", 1).unwrap_err();
        assert!(wait >= 900, "{wait}");
        // Another peer has its own bucket.
        assert!(limiter.take("q", 10).is_ok());
        assert!(limiter.take("q", 1).is_err());
    }
}
