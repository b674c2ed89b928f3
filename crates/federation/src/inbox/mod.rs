//! Receiving: checks every message from a peer (active peer, pinned key,
//! signature, timestamp window, rate limit), stores it durably with its
//! chain-continuity verdict, and only then answers with signed acks.
//! Refusals are [`InboxError`]s; the HTTP edge turns them into answers.

mod batch;
mod check;
#[cfg(test)]
mod differential;
mod error;
mod limiter;

use std::collections::HashMap;

use logbook_base::canonical::canonical_json;
use logbook_base::canonical_check::SurelyCanonical;
use logbook_journal::Event;
use logbook_journal::registry::MAX_TYPE_LEN;
use logbook_journal::registry::TypePattern;
use logbook_journal::store::{
    Incoming, JournalLink, PeerRecord, ReceiveError, ReceiveOutcome, Rekey, Store,
};
use logbook_journal::validate::{InvalidEvent, validate_canonical_event, validate_event};
use serde_json::Value;
use serde_json::value::RawValue;

use check::verify_batch;
pub use check::{active_peer, check_recipient, check_signed, parse_message};
pub use error::InboxError;
pub use limiter::RateLimiter;

use crate::identity::key_id;
use crate::instance::Instance;
use crate::message::{EventAck, EventMessage, KEY_ROTATED_TYPE, SUBSCRIBE_TYPE, now_ms};

/// Most messages accepted in one request.
pub const MAX_BATCH: usize = 1000;

/// Whether the body is a batch (an array), from its first significant byte.
pub fn is_batch(text: &str) -> bool {
    text.trim_start().starts_with('[')
}

/// A request body as one message or a batch: (each message's text, borrowed
/// from the body, and whether it was a batch).
fn split_batch(text: &str) -> Result<(Vec<&RawValue>, bool), InboxError> {
    let malformed = |e: serde_json::Error| InboxError::MalformedJson(e.to_string());
    if !is_batch(text) {
        return Ok((vec![serde_json::from_str(text).map_err(malformed)?], false));
    }
    let items: Vec<&RawValue> = serde_json::from_str(text).map_err(malformed)?;
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(InboxError::BatchSize);
    }
    Ok((items, true))
}

/// Verifies, rate-limits, stores and acknowledges `/incoming/event`: one
/// message, an array of them (each signed), or a signed batch (one
/// signature, one ack; `crate::batch`).
pub fn receive_events(instance: &Instance, store: &Store, body: &str) -> Result<Value, InboxError> {
    if crate::batch::is_signed_batch(body) {
        let batch::VerifiedBatch {
            peer,
            manifest,
            messages,
            canonical_payloads,
        } = batch::verify_signed_batch(instance, store, body)?;
        store_events(instance, store, &peer, &messages, &canonical_payloads)?;
        // Stored (fsynced): now acknowledge, all at once.
        let (key, _) = instance.signing_key_for(store, &peer.instance_id)?;
        let ids = messages.iter().map(|m| m.message_id).collect();
        return crate::batch::sign_ack(
            &key,
            &instance.identity.instance_id,
            &manifest,
            ids,
            now_ms(),
        )
        .map_err(|e| InboxError::Internal(e.to_string()));
    }
    let (items, batch) = split_batch(body)?;
    let (peer, messages) = verify_batch(instance, store, &items)?;
    store_events(instance, store, &peer, &messages, &[])?;
    // Stored (fsynced): now acknowledge.
    let acks = messages
        .iter()
        .map(|m| sign_ack(instance, store, &peer.instance_id, m))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(if batch {
        Value::Array(acks)
    } else {
        acks.into_iter().next().expect("one message")
    })
}

/// Checks the content of verified messages from `peer`, charges them to
/// its rate limits and stores them durably (applying a key announcement
/// among them). `canonical_payloads[i]`, where given, is message i's
/// payload text, canonical as it came: it is stored as it is rather than
/// canonicalized again from the parsed value.
fn store_events(
    instance: &Instance,
    store: &Store,
    peer: &PeerRecord,
    messages: &[EventMessage],
    canonical_payloads: &[Option<&str>],
) -> Result<(), InboxError> {
    let mut incoming = Vec::with_capacity(messages.len());
    let mut rekey = None;
    for (i, m) in messages.iter().enumerate() {
        if m.event_type == KEY_ROTATED_TYPE {
            if rekey.is_some() {
                return Err(InboxError::TwoAnnouncements);
            }
            let (new_der, _) = crate::rotation::parse_announcement(&m.payload)
                .map_err(InboxError::InvalidAnnouncement)?;
            rekey = Some(Rekey {
                message_id: m.message_id,
                old_key_id: key_id(&peer.public_key_der),
                old_der: peer.public_key_der.clone(),
                new_der,
            });
            let payload = canonical_json(&m.payload);
            incoming.push(Incoming {
                message_id: m.message_id,
                peer: peer.instance_id.clone(),
                event_type: m.event_type.clone(),
                journal: None,
                digest: m.content_digest_of_canonical(&payload),
                payload,
                timestamp: m.timestamp,
            });
            continue;
        }
        if m.event_type.starts_with("federation.") {
            return Err(InboxError::InvalidType(format!(
                "{:?} is a control message; send it to its own route",
                m.event_type
            )));
        }
        let canonical = canonical_payloads.get(i).copied().flatten();
        let payload = checked_payload(m, canonical).map_err(|e| match e {
            InvalidEvent::Type(e) => {
                InboxError::InvalidType(format!("eventType {:?} {e}", m.event_type))
            }
            InvalidEvent::Payload(e) => InboxError::InvalidPayload(e.to_string()),
        })?;
        debug_assert_eq!(
            payload,
            canonical_json(&m.payload),
            "the stored payload is canonical"
        );
        incoming.push(Incoming {
            message_id: m.message_id,
            peer: peer.instance_id.clone(),
            event_type: m.event_type.clone(),
            journal: journal_link(&payload),
            digest: m.content_digest_of_canonical(&payload),
            payload,
            timestamp: m.timestamp,
        });
    }
    let bytes = incoming.iter().map(|m| m.payload.len()).sum();
    rate_limit_bytes(instance, &peer.instance_id, bytes)?;
    rate_limit(instance, &peer.instance_id, messages.len())?;
    let outcomes = store
        .inbox()
        .receive(&incoming, rekey.as_ref())
        .map_err(|e| InboxError::from_receive(&peer.instance_id, e))?;
    if let Some(rekey) = &rekey {
        let applied = incoming
            .iter()
            .zip(&outcomes)
            .any(|(m, o)| m.message_id == rekey.message_id && *o == ReceiveOutcome::Stored);
        if applied {
            tracing::warn!(peer = %peer.instance_id, old_key_id = %rekey.old_key_id, new_key_id = %key_id(&rekey.new_der), "peer rotated its key; pinned the new key");
        }
    }
    Ok(())
}

/// The checked payload text of an event message to store: `canonical`
/// (its payload's text as it came, when the message came canonical) as it
/// is when the plain scan vouches for it, else the parsed payload checked
/// and canonicalized.
fn checked_payload(m: &EventMessage, canonical: Option<&str>) -> Result<String, InvalidEvent> {
    let checked = match canonical.and_then(SurelyCanonical::scan) {
        Some(text) => validate_canonical_event(&m.event_type, text, MAX_TYPE_LEN),
        None => validate_event(&m.event_type, &m.payload, MAX_TYPE_LEN),
    }?;
    Ok(checked.json.get().to_string())
}

/// A peer asks us (`/incoming/subscribe`, `/incoming/unsubscribe`) to start
/// or stop sending it events matching a pattern: `expected_type` says which.
/// Verified, granted, rate-limited and stored like a message, then acked.
pub fn receive_control(
    instance: &Instance,
    store: &Store,
    body: &str,
    expected_type: &str,
) -> Result<Value, InboxError> {
    if is_batch(body) {
        return Err(InboxError::InvalidMessage(
            "send one subscription request, not a batch".into(),
        ));
    }
    let raw: &RawValue =
        serde_json::from_str(body).map_err(|e| InboxError::MalformedJson(e.to_string()))?;
    let (peer, messages) = verify_batch(instance, store, &[raw])?;
    let message = &messages[0];
    if message.event_type != expected_type {
        return Err(InboxError::InvalidType(format!(
            "this route takes eventType {expected_type:?}"
        )));
    }
    // Exactly {"eventType": pattern}: nothing else rides along into the
    // store on a control request.
    if message.payload.as_object().is_none_or(|o| o.len() != 1) {
        return Err(InboxError::InvalidPayload(
            "expected exactly {\"eventType\": pattern}".into(),
        ));
    }
    let pattern = pattern_of(&message.payload)?;
    let payload = canonical_json(&message.payload);
    // Stored like an event's payload, so charged like one.
    rate_limit_bytes(instance, &peer.instance_id, payload.len())?;
    rate_limit(instance, &peer.instance_id, 1)?;
    let subscribe = expected_type == SUBSCRIBE_TYPE;
    if subscribe {
        check_granted(&peer, &pattern)?;
    }
    let request = Incoming {
        message_id: message.message_id,
        peer: peer.instance_id.clone(),
        event_type: message.event_type.clone(),
        payload,
        timestamp: message.timestamp,
        digest: message.content_digest(),
        journal: None,
    };
    let cap = instance.config.max_subscriptions_per_peer;
    match store
        .inbox()
        .receive_control(&request, &pattern, subscribe, cap)
    {
        Ok(ReceiveOutcome::Stored) => {
            let change = if subscribe {
                "subscribed"
            } else {
                "unsubscribed"
            };
            tracing::info!(peer = %peer.instance_id, pattern, "peer {change}");
        }
        // A replay: acknowledged again, applied once.
        Ok(ReceiveOutcome::Redelivered) => {}
        Err(ReceiveError::SubscriptionCap(cap)) => {
            logbook_base::metrics::observe_refused_subscription(&peer.instance_id, "limit");
            tracing::warn!(peer = %peer.instance_id, pattern, cap, "refused a peer's subscription: over its limit");
            return Err(InboxError::SubscriptionCap(cap));
        }
        Err(e) => return Err(InboxError::from_receive(&peer.instance_id, e)),
    }
    sign_ack(instance, store, &peer.instance_id, message)
}

/// A peer may subscribe only to what the local admin granted it
/// (`[[peers]] allow`, `logbook admin peers allow`). A refusal is logged and
/// counted, so an admin sees a peer asking for more than it was given.
fn check_granted(peer: &PeerRecord, pattern: &str) -> Result<(), InboxError> {
    let requested = TypePattern::parse(pattern).map_err(InboxError::InvalidPattern)?;
    if peer.allows(&requested) {
        return Ok(());
    }
    logbook_base::metrics::observe_refused_subscription(&peer.instance_id, "not_granted");
    tracing::warn!(peer = %peer.instance_id, pattern, granted = ?peer.granted(), "refused a peer's subscription: not granted");
    Err(InboxError::NotGranted(pattern.to_string()))
}

/// The normalized pattern of a control request's `{"eventType": pattern}`.
fn pattern_of(payload: &Value) -> Result<String, InboxError> {
    let text = payload
        .get("eventType")
        .and_then(Value::as_str)
        .ok_or_else(|| InboxError::InvalidPayload("expected {\"eventType\": pattern}".into()))?;
    TypePattern::parse(text)
        .map(|p| p.as_string())
        .map_err(InboxError::InvalidPattern)
}

/// Takes `bytes` (of payload) from `peer`'s byte rate limit, or refuses.
fn rate_limit_bytes(instance: &Instance, peer: &str, bytes: usize) -> Result<(), InboxError> {
    instance
        .byte_limiter
        .take(peer, bytes)
        .map_err(|retry_after| InboxError::RateLimited {
            peer: peer.to_string(),
            retry_after,
            bytes: true,
        })
}

/// Takes `count` messages from `peer`'s rate limit, or refuses (the route
/// turns the wait into a `Retry-After` header).
fn rate_limit(instance: &Instance, peer: &str, count: usize) -> Result<(), InboxError> {
    instance
        .limiter
        .take(peer, count)
        .map_err(|retry_after| InboxError::RateLimited {
            peer: peer.to_string(),
            retry_after,
            bytes: false,
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
fn sign_ack(
    instance: &Instance,
    store: &Store,
    peer: &str,
    message: &EventMessage,
) -> Result<Value, InboxError> {
    let (key, _) = instance.signing_key_for(store, peer)?;
    let recipient = message.recipient_id.is_some().then_some(peer);
    let ack = EventAck::signed(
        &*key,
        &key.key_id,
        &instance.identity.instance_id,
        recipient,
        message.message_id,
        now_ms(),
    )
    .map_err(|e| InboxError::Internal(e.to_string()))?;
    serde_json::to_value(ack).map_err(|e| InboxError::Internal(e.to_string()))
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
pub fn receive_acks(instance: &Instance, store: &Store, body: &str) -> Result<Value, InboxError> {
    let (items, _) = split_batch(body)?;
    let acks = items
        .iter()
        .map(|raw| {
            serde_json::from_str::<EventAck>(raw.get()).map_err(|e| {
                InboxError::InvalidAck(format!(
                    "{e}; expected {{messageId, correlationId, instanceId, recipientId, received, timestamp, keyId, signature}}"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Verify every ack before acting on any: a rejected request changes nothing.
    let mut verified = Vec::with_capacity(acks.len());
    for (raw, ack) in items.iter().zip(&acks) {
        let (peer, key) = active_peer(store, &ack.instance_id)?;
        check_signed(
            instance,
            &peer,
            &key,
            &check::parse_value(raw)?,
            &ack.key_id,
            ack.timestamp,
        )?;
        check_recipient(instance, ack.recipient_id.as_deref())?;
        verified.push((peer.instance_id, ack));
    }
    for (peer, n) in count_by_peer(verified.iter().map(|(p, _)| p.as_str())) {
        rate_limit(instance, peer, n)?;
    }
    let mut acknowledged = 0;
    for (peer, ack) in verified {
        if ack.received && store.outbox().ack(&peer, &ack.correlation_id)? {
            acknowledged += 1;
        }
    }
    Ok(serde_json::json!({"acknowledged": acknowledged}))
}
