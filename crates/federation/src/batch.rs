//! Signed batches (capability `batch-signature`): one RSA signature for a
//! whole delivery request instead of one per message, and one signed ack
//! for all of it. An RSA-3072 signature costs milliseconds, so signing each
//! message (and each ack) capped delivery at a few hundred messages a
//! second; a batch of `batch_size` pays two signatures in all.
//!
//! Each message of a batch is an `EventMessage` without its `signature`
//! member. The manifest lists, in order, the SHA-256 of each message's JCS
//! bytes: exactly the bytes a per-message signature would cover. So one
//! message is still verifiable on its own later, with the manifest kept
//! beside it: hash it, find the digest, check the manifest's signature.
//! `docs/federation-protocol.md#signed-batches` is the normative text.

use std::borrow::Cow;
use std::collections::HashMap;

use logbook_base::canonical::{canonical_json, sha256};
use logbook_base::canonical_check::is_canonical;
use logbook_base::hex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::identity::OwnKey;
use crate::message::{PssSigner, SignError, sign_bytes, signing_input};
use crate::message_text::{self, BatchMessage};

/// Named in `/instance` `capabilities` by instances that take signed batches.
pub const CAPABILITY: &str = "batch-signature";

/// The signed part of a batch: who sends it to whom, when, with which key,
/// and the digest of every message in it, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    pub batch_id: Uuid,
    pub instance_id: String,
    pub recipient_id: String,
    /// Unix ms when the batch was signed; every message carries it too.
    pub timestamp: i64,
    pub key_id: String,
    /// Lowercase hex SHA-256 of each message's JCS bytes (the message
    /// without `signature`), in the order of `messages`.
    pub messages: Vec<String>,
    pub signature: String,
}

/// The receiver's one signed answer to a batch: every message id it
/// stored (or already had), in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchAck {
    pub message_id: Uuid,
    /// The `batchId` acknowledged.
    pub correlation_id: Uuid,
    pub instance_id: String,
    /// The sender of the batch, which alone may use this ack.
    pub recipient_id: String,
    pub received: bool,
    /// The `messageId`s acknowledged, in the batch's order.
    pub messages: Vec<Uuid>,
    pub timestamp: i64,
    pub key_id: String,
    pub signature: String,
}

/// One message to put in a batch.
pub struct Item<'a> {
    pub message_id: Uuid,
    pub event_type: &'a str,
    /// The payload's JSON text. Canonical text (what the outbox stores) is
    /// used as it is; any other is parsed and canonicalized first.
    pub payload: Cow<'a, str>,
}

/// The hex digest a manifest lists for a message given as its JSON object
/// without `signature`.
pub fn digest(message: &Value) -> String {
    hex::encode(&sha256(signing_input(message).as_bytes()))
}

/// The hex digest of a message whose JSON text is already canonical (and
/// holds no `signature`): the bytes themselves are the signing input.
pub fn digest_of_canonical(text: &str) -> String {
    hex::encode(&sha256(text.as_bytes()))
}

/// The body `{"batch": manifest, "messages": [...]}` of `items` from
/// `instance_id` to `recipient_id`, signed now with `key`, and its id. Each
/// message is written as its canonical text, which is what its digest
/// covers (`message_text`), without building a JSON value.
pub fn sign<K: PssSigner + ?Sized>(
    key: &K,
    key_id: &str,
    instance_id: &str,
    recipient_id: &str,
    items: Vec<Item<'_>>,
    timestamp: i64,
) -> Result<(String, Uuid), SignError> {
    let encode = |e: serde_json::Error| SignError::Encode(e.to_string());
    let mut messages = String::with_capacity(
        items
            .iter()
            .map(|item| item.payload.len() + 256)
            .sum::<usize>(),
    );
    let mut digests = Vec::with_capacity(items.len());
    for item in &items {
        let canonical: Cow<'_, str> = if is_canonical(&item.payload) {
            Cow::Borrowed(&item.payload)
        } else {
            let value: Value = serde_json::from_str(&item.payload)
                .map_err(|e| SignError::Encode(format!("payload: {e}")))?;
            Cow::Owned(canonical_json(&value))
        };
        if !messages.is_empty() {
            messages.push(',');
        }
        let start = messages.len();
        let written = message_text::batch_message(
            &BatchMessage {
                message_id: item.message_id,
                instance_id,
                recipient_id,
                event_type: item.event_type,
                payload: &canonical,
                timestamp,
                key_id,
            },
            &mut messages,
        );
        if !written {
            return Err(SignError::Encode(format!(
                "timestamp {timestamp} is beyond 2^53"
            )));
        }
        digests.push(digest_of_canonical(&messages[start..]));
    }
    let mut manifest = Manifest {
        batch_id: Uuid::new_v4(),
        instance_id: instance_id.to_string(),
        recipient_id: recipient_id.to_string(),
        timestamp,
        key_id: key_id.to_string(),
        messages: digests,
        signature: String::new(),
    };
    manifest.signature = sign_bytes(
        key,
        signing_input(&serde_json::to_value(&manifest).map_err(encode)?).as_bytes(),
    )?;
    let id = manifest.batch_id;
    let manifest = serde_json::to_string(&manifest).map_err(encode)?;
    let mut body = String::with_capacity(manifest.len() + messages.len() + 32);
    body.push_str("{\"batch\":");
    body.push_str(&manifest);
    body.push_str(",\"messages\":[");
    body.push_str(&messages);
    body.push_str("]}");
    Ok((body, id))
}

/// The signed ack of `manifest`, whose messages `ids` were stored.
pub fn sign_ack(
    key: &OwnKey,
    instance_id: &str,
    manifest: &Manifest,
    ids: Vec<Uuid>,
    timestamp: i64,
) -> Result<Value, SignError> {
    let mut ack = BatchAck {
        message_id: Uuid::new_v4(),
        correlation_id: manifest.batch_id,
        instance_id: instance_id.to_string(),
        recipient_id: manifest.instance_id.clone(),
        received: true,
        messages: ids,
        timestamp,
        key_id: key.key_id.clone(),
        signature: String::new(),
    };
    let encode = |e: serde_json::Error| SignError::Encode(e.to_string());
    ack.signature = sign_bytes(
        key,
        signing_input(&serde_json::to_value(&ack).map_err(encode)?).as_bytes(),
    )?;
    serde_json::to_value(ack).map_err(encode)
}

/// Whether a request body is a signed batch: an object with a `batch`
/// member (a single `EventMessage` has none, and no other member may ride
/// along in one).
pub fn is_signed_batch(text: &str) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        batch: Option<serde::de::IgnoredAny>,
    }
    text.trim_start().starts_with('{')
        && serde_json::from_str::<Probe>(text).is_ok_and(|p| p.batch.is_some())
}

/// The seq of each message id acknowledged by a verified `ack` of the batch
/// `batch_id` (the caller checked its signature and recipient).
pub fn acked_by(ack: &BatchAck, batch_id: Uuid, ids: &HashMap<Uuid, u64>) -> Vec<u64> {
    if ack.correlation_id != batch_id || !ack.received {
        return Vec::new();
    }
    ack.messages
        .iter()
        .filter_map(|id| ids.get(id).copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_covers_the_bytes_a_message_signature_would() {
        let m = serde_json::json!({"b": 1, "a": "é", "signature": "x"});
        assert_eq!(
            digest(&m),
            hex::encode(&sha256(r#"{"a":"é","b":1}"#.as_bytes()))
        );
    }

    #[test]
    fn a_single_message_is_not_a_signed_batch() {
        assert!(!is_signed_batch(
            r#"{"messageId":"x","payload":{"batch":1}}"#
        ));
        assert!(!is_signed_batch(r#"[{"batch":1}]"#));
        assert!(is_signed_batch(r#" {"batch":{},"messages":[]}"#));
    }
}
