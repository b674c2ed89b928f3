//! The checks every message or ack from a peer passes before anything is
//! stored: an active sender, its pinned (or, for redeliveries, retired)
//! key, the signature over the JSON as received, the timestamp window and
//! the recipient.

use logbook_journal::store::{PeerRecord, PeerStatus, Store};
use rsa::PublicKey;
use serde_json::Value;
use serde_json::value::RawValue;

use super::InboxError;
use crate::identity::{self, key_id};
use crate::instance::Instance;
use crate::message::{EventMessage, now_ms, verify_value};

/// The active peer `instance_id` and its pinned key, or [`InboxError::UnknownPeer`].
pub fn active_peer(
    store: &Store,
    instance_id: &str,
) -> Result<(PeerRecord, PublicKey), InboxError> {
    let peer = store.peers().get(instance_id)?.ok_or_else(|| {
        InboxError::UnknownPeer(format!("{instance_id:?} is not a peer of this instance"))
    })?;
    if peer.status != PeerStatus::Active {
        return Err(InboxError::UnknownPeer(format!(
            "peer {instance_id:?} is {}",
            peer.status.as_str()
        )));
    }
    let key = identity::public_key_from_der(&peer.public_key_der)
        .map_err(|e| InboxError::Internal(e.to_string()))?;
    Ok((peer, key))
}

/// Checks the signature of a message as received (`value`) against the
/// peer's pinned key, and its timestamp against the window.
pub fn check_signed(
    instance: &Instance,
    peer: &PeerRecord,
    key: &PublicKey,
    value: &Value,
    key_id_claimed: &str,
    timestamp: i64,
) -> Result<(), InboxError> {
    let pinned = key_id(&peer.public_key_der);
    if key_id_claimed != pinned {
        return Err(InboxError::BadSignature(format!(
            "keyId {key_id_claimed:?} is not the key pinned for {:?} ({pinned})",
            peer.instance_id
        )));
    }
    if !verify_value(value, key) {
        return Err(InboxError::BadSignature(
            "the signature does not verify against the peer's pinned key".into(),
        ));
    }
    let window = instance.config.timestamp_window_secs.saturating_mul(1000);
    let skew = now_ms().saturating_sub(timestamp);
    if skew.unsigned_abs() > window {
        return Err(InboxError::StaleTimestamp {
            skew_secs: skew / 1000,
            window_secs: instance.config.timestamp_window_secs,
        });
    }
    Ok(())
}

/// Checks that a message or ack is addressed to this instance: its signed
/// `recipientId` must be our instance id, so one captured on its way to
/// another instance that trusts the same sender is refused (401). Without
/// `recipientId` (protocol v1) it is accepted only while
/// `[federation] accept_protocol_v1` is on.
pub fn check_recipient(instance: &Instance, recipient: Option<&str>) -> Result<(), InboxError> {
    let ours = &instance.identity.instance_id;
    match recipient {
        Some(id) if id == ours => Ok(()),
        Some(other) => Err(InboxError::WrongRecipient {
            recipient: other.chars().take(128).collect(),
            ours: ours.clone(),
        }),
        None if instance.config.accept_protocol_v1 => Ok(()),
        None => Err(InboxError::RecipientMissing),
    }
}

/// A message's text as JSON, to check its signature over what was sent.
pub(super) fn parse_value(raw: &RawValue) -> Result<Value, InboxError> {
    serde_json::from_str(raw.get()).map_err(|e| InboxError::MalformedJson(e.to_string()))
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

pub(super) fn invalid_message(e: impl std::fmt::Display) -> InboxError {
    InboxError::InvalidMessage(format!(
        "{e}; expected {{messageId, instanceId, recipientId, eventType, payload, timestamp, keyId, signature}}"
    ))
}

pub(super) fn not_an_object() -> InboxError {
    InboxError::InvalidMessage("a message is a JSON object".into())
}

/// A message's text as an `EventMessage` (an object with exactly its
/// members), or [`InboxError::InvalidMessage`].
pub fn parse_message(raw: &RawValue) -> Result<EventMessage, InboxError> {
    // serde fills a struct from an array in field order: a message is an
    // object, whatever else would deserialize.
    if !raw.get().starts_with('{') {
        return Err(not_an_object());
    }
    serde_json::from_str(raw.get()).map_err(invalid_message)
}

/// Verifies a batch of messages from one sender. Returns the sender.
///
/// Each message is parsed once, into the tree its signature is checked
/// over; its sender, key, signature, recipient and timestamp are checked
/// on that tree, and only then is the message built from it. The first
/// failure ends the batch: nothing after it is parsed.
pub(super) fn verify_batch(
    instance: &Instance,
    store: &Store,
    items: &[&RawValue],
) -> Result<(PeerRecord, Vec<EventMessage>), InboxError> {
    let mut sender: Option<(PeerRecord, PublicKey, String)> = None;
    let mut messages = Vec::with_capacity(items.len());
    for raw in items {
        // serde fills a struct from an array in field order: a message is an
        // object, whatever else would deserialize.
        if !raw.get().trim_start().starts_with('{') {
            return Err(not_an_object());
        }
        let value = parse_value(raw)?;
        let head = <Head as serde::Deserialize>::deserialize(&value).map_err(invalid_message)?;
        let (peer, key, pinned) = match &sender {
            Some((peer, _, _)) if peer.instance_id != head.instance_id => {
                return Err(InboxError::MixedSenders);
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
                    .map_err(|e| InboxError::Internal(e.to_string()))?;
                check_signed(
                    instance,
                    &retired_peer,
                    &old,
                    &value,
                    head.key_id,
                    head.timestamp,
                )?;
            }
            None => check_signed(instance, peer, key, &value, head.key_id, head.timestamp)?,
        }
        check_recipient(instance, head.recipient_id)?;
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
pub(super) fn check_retired_redelivery(
    store: &Store,
    peer: &PeerRecord,
    m: &EventMessage,
) -> Result<(), InboxError> {
    let stored = store.inbox().get(&m.message_id)?;
    if stored.is_some_and(|r| r.peer == peer.instance_id && r.digest == m.content_digest()) {
        return Ok(());
    }
    Err(InboxError::RetiredKey {
        key_id: m.key_id.clone(),
        peer: peer.instance_id.clone(),
    })
}
