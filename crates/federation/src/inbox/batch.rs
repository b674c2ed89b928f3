//! Verifying a signed batch (`{"batch": manifest, "messages": [...]}`, see
//! `crate::batch`): the manifest's sender, key, signature, timestamp and
//! recipient are checked as a message's would be, once; then each message
//! must carry the manifest's sender, recipient, timestamp and key, and hash
//! to the digest the manifest lists at its place. The first failure ends
//! the request, as for a batch of separately signed messages.

use logbook_base::canonical_check::is_canonical;
use logbook_journal::store::{PeerRecord, Store};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::InboxError;
use super::MAX_BATCH;
use super::check::{
    active_peer, check_recipient, check_retired_redelivery, check_signed, invalid_message,
    not_an_object, parse_value,
};
use crate::batch::{Manifest, digest, digest_of_canonical};
use crate::identity::{self, key_id};
use crate::instance::Instance;
use crate::message::EventMessage;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body<'a> {
    #[serde(borrow)]
    batch: &'a RawValue,
    #[serde(borrow)]
    messages: Vec<&'a RawValue>,
}

/// A message of a signed batch: an `EventMessage` without `signature`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)] // The ignored members are there to be required.
struct Head<'a> {
    message_id: serde::de::IgnoredAny,
    instance_id: &'a str,
    recipient_id: &'a str,
    event_type: serde::de::IgnoredAny,
    payload: serde::de::IgnoredAny,
    timestamp: i64,
    key_id: &'a str,
}

/// A signed batch, verified: the sender, the manifest, and the messages,
/// each with an empty `signature` (the manifest's signature covers it).
pub(super) struct VerifiedBatch<'a> {
    pub(super) peer: PeerRecord,
    pub(super) manifest: Manifest,
    pub(super) messages: Vec<EventMessage>,
    /// For each message, its payload's text in the body when the message
    /// came canonical (so the payload is too), for `store_events` to take
    /// as it is.
    pub(super) canonical_payloads: Vec<Option<&'a str>>,
}

/// Only the payload's text of a message, borrowed from the body.
#[derive(Deserialize)]
struct PayloadText<'a> {
    #[serde(borrow)]
    payload: &'a RawValue,
}

/// The sender, the manifest and the messages of a signed batch, verified.
pub(super) fn verify_signed_batch<'a>(
    instance: &Instance,
    store: &Store,
    text: &'a str,
) -> Result<VerifiedBatch<'a>, InboxError> {
    let body: Body<'_> = serde_json::from_str(text).map_err(|e| {
        InboxError::InvalidMessage(format!(
            "{e}; a signed batch is {{\"batch\": manifest, \"messages\": [message…]}}"
        ))
    })?;
    if body.messages.is_empty() || body.messages.len() > MAX_BATCH {
        return Err(InboxError::BatchSize);
    }
    if !body.batch.get().trim_start().starts_with('{') {
        return Err(invalid_manifest("the manifest is a JSON object"));
    }
    let manifest_value = parse_value(body.batch)?;
    let manifest = Manifest::deserialize(&manifest_value).map_err(invalid_manifest)?;
    if manifest.messages.len() != body.messages.len() {
        return Err(invalid_manifest(format!(
            "the manifest lists {} messages, the batch holds {}",
            manifest.messages.len(),
            body.messages.len()
        )));
    }
    let (peer, key) = active_peer(store, &manifest.instance_id)?;
    // Signed with a key the peer rotated away from: only redeliveries pass.
    let retired = if manifest.key_id != key_id(&peer.public_key_der) {
        store
            .rotations()
            .retired_peer_key(&peer.instance_id, &manifest.key_id)?
    } else {
        None
    };
    let is_retired = retired.is_some();
    match retired {
        Some(der) => {
            let old = identity::public_key_from_der(&der)
                .map_err(|e| InboxError::Internal(e.to_string()))?;
            let retired_peer = PeerRecord {
                public_key_der: der,
                ..peer.clone()
            };
            check_signed(
                instance,
                &retired_peer,
                &old,
                &manifest_value,
                &manifest.key_id,
                manifest.timestamp,
            )?;
        }
        None => check_signed(
            instance,
            &peer,
            &key,
            &manifest_value,
            &manifest.key_id,
            manifest.timestamp,
        )?,
    }
    check_recipient(instance, Some(&manifest.recipient_id))?;
    let mut messages = Vec::with_capacity(body.messages.len());
    let mut canonical_payloads = Vec::with_capacity(body.messages.len());
    for (i, (raw, listed)) in body.messages.iter().zip(&manifest.messages).enumerate() {
        if !raw.get().trim_start().starts_with('{') {
            return Err(not_an_object());
        }
        let mut value = parse_value(raw)?;
        let head = Head::deserialize(&value).map_err(invalid_message)?;
        if head.instance_id != manifest.instance_id {
            return Err(InboxError::MixedSenders);
        }
        if head.recipient_id != manifest.recipient_id
            || head.timestamp != manifest.timestamp
            || head.key_id != manifest.key_id
        {
            return Err(InboxError::BadSignature(format!(
                "message {i} of the batch names another recipient, timestamp or key than its manifest"
            )));
        }
        let (hashed, canonical_payload) = digest_and_payload(raw.get(), &value)?;
        if hashed != *listed {
            return Err(InboxError::BadSignature(format!(
                "message {i} of the batch is not the one its manifest's signature covers"
            )));
        }
        // Checked: now the message, from the same tree.
        if let Value::Object(map) = &mut value {
            map.insert("signature".into(), Value::String(String::new()));
        }
        let m: EventMessage = serde_json::from_value(value).map_err(invalid_message)?;
        if is_retired {
            check_retired_redelivery(store, &peer, &m)?;
        }
        messages.push(m);
        canonical_payloads.push(canonical_payload);
    }
    Ok(VerifiedBatch {
        peer,
        manifest,
        messages,
        canonical_payloads,
    })
}

/// The digest of a batch message (`text`, parsed as `value`), and its
/// payload's text when the message came canonical (so the payload is too).
/// A canonical text is its own signing input (a batch's messages have no
/// `signature`, `Head` refuses one): its bytes are hashed as they came
/// rather than the tree canonicalized again.
pub(super) fn digest_and_payload<'a>(
    text: &'a str,
    value: &Value,
) -> Result<(String, Option<&'a str>), InboxError> {
    if !is_canonical(text) {
        return Ok((digest(value), None));
    }
    let only: PayloadText<'a> = serde_json::from_str(text).map_err(invalid_message)?;
    Ok((digest_of_canonical(text), Some(only.payload.get())))
}

fn invalid_manifest(e: impl std::fmt::Display) -> InboxError {
    InboxError::InvalidMessage(format!(
        "{e}; expected a manifest {{batchId, instanceId, recipientId, timestamp, keyId, messages, signature}}"
    ))
}
