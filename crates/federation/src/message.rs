//! The wire messages (`EventMessage`, `EventAck`) and their signatures:
//! base64 RSASSA-PSS-SHA256 (MGF1-SHA256, 32-byte salt) over the RFC 8785
//! canonical JSON of the message without its `signature` member.
//! `docs/federation-protocol.md` is the normative description.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rsa::sha2::Sha256;
use rsa::traits::PublicKeyParts;
use rsa::{PrivateKey, PublicKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use logbook_base::canonical::{canonical_json, sha256};

use crate::identity::OwnKey;

/// Signing a message failed: encoding it, or the RSA operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignError {
    Encode(String),
    Sign(String),
}

impl std::fmt::Display for SignError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignError::Encode(e) => write!(f, "encoding a message: {e}"),
            SignError::Sign(e) => write!(f, "signing: {e}"),
        }
    }
}

impl std::error::Error for SignError {}

/// Protocol version served at `/instance`. Version 2 added `recipientId`.
pub const PROTOCOL_VERSION: &str = "logbook-federation/2";
/// The previous version: messages and acks without `recipientId`, accepted
/// only with `[federation] accept_protocol_v1`.
pub(crate) const PROTOCOL_V1: &str = "logbook-federation/1";
/// Event type of a subscription request (payload `{"eventType": pattern}`).
pub const SUBSCRIBE_TYPE: &str = "federation.subscribe";
/// Event type of an unsubscription request.
pub const UNSUBSCRIBE_TYPE: &str = "federation.unsubscribe";
/// Event type of a key-rotation announcement (payload `{"publicKey": SPKI
/// PEM, "keyId": id}`), signed with the key being replaced.
pub const KEY_ROTATED_TYPE: &str = "federation.key_rotated";

/// A federated event, or a control request (subscribe, unsubscribe).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventMessage {
    pub message_id: Uuid,
    pub instance_id: String,
    /// The instance the message is for (signed, so a message captured by
    /// one peer cannot be replayed to another). None only in protocol v1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient_id: Option<String>,
    pub event_type: String,
    pub payload: Value,
    /// Unix ms when the message was signed.
    pub timestamp: i64,
    pub key_id: String,
    pub signature: String,
}

/// The receiver's signed acknowledgement of an `EventMessage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventAck {
    pub message_id: Uuid,
    /// The `messageId` of the acknowledged message.
    pub correlation_id: Uuid,
    pub instance_id: String,
    /// The sender of the acknowledged message, which alone may use this
    /// ack. None only in protocol v1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient_id: Option<String>,
    pub received: bool,
    pub timestamp: i64,
    pub key_id: String,
    pub signature: String,
}

/// The exact bytes a signature covers: JCS of `value` without `signature`.
pub fn signing_input(value: &Value) -> String {
    match value {
        // Serialized in place: a received message is never copied to drop one member.
        Value::Object(map) => serde_json_canonicalizer::to_string(&WithoutSignature(map))
            .expect("a serde_json::Value always canonicalizes"),
        other => canonical_json(other),
    }
}

/// An object seen without its `signature` member.
struct WithoutSignature<'a>(&'a serde_json::Map<String, Value>);

impl Serialize for WithoutSignature<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in self.0.iter().filter(|(k, _)| *k != "signature") {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// What [`EventMessage::content_digest`] hashes, borrowed from the message.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Content<'a> {
    message_id: &'a Uuid,
    instance_id: &'a str,
    event_type: &'a str,
    payload: &'a Value,
}

/// A key that makes RSASSA-PSS signatures (SHA-256, MGF1-SHA256, salt 32).
/// The daemon signs with its [`OwnKey`]s (`ring`, constant time); a bare
/// `rsa` key signs the same way, slower (tests, tools).
pub trait PssSigner {
    /// The raw signature of `input`.
    fn sign_pss(&self, input: &[u8]) -> Result<Vec<u8>, SignError>;
}

impl PssSigner for PrivateKey {
    fn sign_pss(&self, input: &[u8]) -> Result<Vec<u8>, SignError> {
        self.pss_sign::<Sha256>(input)
            .map_err(|e| SignError::Sign(e.to_string()))
    }
}

impl PssSigner for OwnKey {
    fn sign_pss(&self, input: &[u8]) -> Result<Vec<u8>, SignError> {
        // ring's RSA_PSS_SHA256 is EMSA-PSS with SHA-256, MGF1-SHA256 and
        // a salt as long as the digest (32 bytes): the protocol's scheme.
        let mut signature = vec![0; self.signer.public().modulus_len()];
        self.signer
            .sign(
                &ring::signature::RSA_PSS_SHA256,
                &ring::rand::SystemRandom::new(),
                input,
                &mut signature,
            )
            .map_err(|_| SignError::Sign("ring refused to sign".into()))?;
        Ok(signature)
    }
}

/// Signs `input` (RSASSA-PSS, SHA-256, salt 32) and returns base64.
pub fn sign_bytes<K: PssSigner + ?Sized>(key: &K, input: &[u8]) -> Result<String, SignError> {
    key.sign_pss(input).map(|sig| BASE64.encode(sig))
}

/// Verifies a base64 RSASSA-PSS-SHA256 signature over `input` (salt 32,
/// as the signer must use; `ring` checks the salt length).
pub(crate) fn verify_bytes(key: &PublicKey, input: &[u8], signature_b64: &str) -> bool {
    let Ok(signature) = BASE64.decode(signature_b64) else {
        return false;
    };
    // `ring` verifies about ten times faster than `rsa`; it takes the
    // modulus and exponent as minimal big-endian integers.
    let (n, e) = (key.n().to_be_bytes(), key.e().to_be_bytes());
    let components = ring::signature::RsaPublicKeyComponents {
        n: trim_zeros(&n),
        e: trim_zeros(&e),
    };
    components
        .verify(
            &ring::signature::RSA_PSS_2048_8192_SHA256,
            input,
            &signature,
        )
        .is_ok()
}

/// A big-endian integer without its leading zero bytes.
fn trim_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// Verifies a received message (any shape) as the JSON value it arrived as.
pub fn verify_value(value: &Value, key: &PublicKey) -> bool {
    match value.get("signature").and_then(Value::as_str) {
        Some(signature) => verify_bytes(key, signing_input(value).as_bytes(), signature),
        None => false,
    }
}

/// Fills in `signature` for any message serialized as a JSON object.
fn sign_value<T: Serialize, K: PssSigner + ?Sized>(
    message: &T,
    key: &K,
) -> Result<String, SignError> {
    let value = serde_json::to_value(message).map_err(|e| SignError::Encode(e.to_string()))?;
    sign_bytes(key, signing_input(&value).as_bytes())
}

impl EventMessage {
    /// A message from `instance_id` for `recipient_id`, signed now.
    #[allow(clippy::too_many_arguments)]
    pub fn signed<K: PssSigner + ?Sized>(
        key: &K,
        key_id: &str,
        instance_id: &str,
        recipient_id: &str,
        message_id: Uuid,
        event_type: &str,
        payload: Value,
        timestamp: i64,
    ) -> Result<EventMessage, SignError> {
        let mut message = EventMessage {
            message_id,
            instance_id: instance_id.to_string(),
            recipient_id: Some(recipient_id.to_string()),
            event_type: event_type.to_string(),
            payload,
            timestamp,
            key_id: key_id.to_string(),
            signature: String::new(),
        };
        message.signature = sign_value(&message, key)?;
        Ok(message)
    }

    /// Whether `signature` is valid under `key`. A receiver should rather
    /// use [`verify_value`] on the JSON exactly as received.
    pub fn verify(&self, key: &PublicKey) -> bool {
        match serde_json::to_value(self) {
            Ok(value) => verify_bytes(key, signing_input(&value).as_bytes(), &self.signature),
            Err(_) => false,
        }
    }

    /// What identifies the content of a message independent of when it was
    /// signed, so that a redelivery (new timestamp and signature) is
    /// recognised and a different message reusing the id is not.
    pub(crate) fn content_digest(&self) -> [u8; 32] {
        let content = Content {
            message_id: &self.message_id,
            instance_id: &self.instance_id,
            event_type: &self.event_type,
            payload: &self.payload,
        };
        let text = serde_json_canonicalizer::to_string(&content)
            .expect("a serde_json::Value always canonicalizes");
        sha256(text.as_bytes())
    }

    /// [`Self::content_digest`] given the payload's canonical text, which
    /// the caller has at hand: written directly (`message_text`), without
    /// canonicalizing the payload again.
    pub(crate) fn content_digest_of_canonical(&self, payload: &str) -> [u8; 32] {
        let text = crate::message_text::content(
            &self.message_id,
            &self.instance_id,
            &self.event_type,
            payload,
        );
        let digest = sha256(text.as_bytes());
        debug_assert_eq!(digest, self.content_digest(), "payload {payload}");
        digest
    }
}

impl EventAck {
    /// An ack from `instance_id` of the message `correlation_id`, for that
    /// message's sender `recipient_id` (None: a protocol v1 ack, the answer
    /// to a v1 message).
    pub fn signed<K: PssSigner + ?Sized>(
        key: &K,
        key_id: &str,
        instance_id: &str,
        recipient_id: Option<&str>,
        correlation_id: Uuid,
        timestamp: i64,
    ) -> Result<EventAck, SignError> {
        let mut ack = EventAck {
            message_id: Uuid::new_v4(),
            correlation_id,
            instance_id: instance_id.to_string(),
            recipient_id: recipient_id.map(str::to_string),
            received: true,
            timestamp,
            key_id: key_id.to_string(),
            signature: String::new(),
        };
        ack.signature = sign_value(&ack, key)?;
        Ok(ack)
    }

    pub fn verify(&self, key: &PublicKey) -> bool {
        match serde_json::to_value(self) {
            Ok(value) => verify_bytes(key, signing_input(&value).as_bytes(), &self.signature),
            Err(_) => false,
        }
    }
}

/// Unix ms now.
pub fn now_ms() -> i64 {
    logbook_journal::event::Timestamp::now().millis()
}

/// A public key the instance document binds to the federation identity
/// with an RSA signature: the member it is published under decides the
/// signed member name, so one signature can never stand for the other key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoundKey {
    /// `logKey`, signed as `logKeySignature`: the vkey of plan and heads
    /// checkpoints.
    Log,
    /// `witnessKey`, signed as `witnessKeySignature`: the cosignature/v1
    /// vkey the instance witnesses its peers with.
    Witness,
}

impl BoundKey {
    /// The instance document member holding the vkey.
    pub fn member(self) -> &'static str {
        match self {
            BoundKey::Log => "logKey",
            BoundKey::Witness => "witnessKey",
        }
    }

    /// The member holding its signature.
    pub fn signature_member(self) -> &'static str {
        match self {
            BoundKey::Log => "logKeySignature",
            BoundKey::Witness => "witnessKeySignature",
        }
    }
}

/// The bytes a key binding signature covers:
/// `UTF-8(JCS({"instanceId", <member>}))`, e.g. `{"instanceId", "logKey"}`.
/// It binds the vkey to the instance's federation identity: a peer that
/// pinned the RSA key trusts the bound key too.
pub fn key_binding_signing_input(kind: BoundKey, instance_id: &str, vkey: &str) -> String {
    let mut object = serde_json::Map::new();
    object.insert("instanceId".into(), instance_id.into());
    object.insert(kind.member().into(), vkey.into());
    canonical_json(&serde_json::Value::Object(object))
}

/// `logKeySignature` or `witnessKeySignature`: base64 RSASSA-PSS-SHA256
/// (salt 32) by the instance key.
pub fn sign_key_binding<K: PssSigner + ?Sized>(
    key: &K,
    kind: BoundKey,
    instance_id: &str,
    vkey: &str,
) -> Result<String, SignError> {
    sign_bytes(
        key,
        key_binding_signing_input(kind, instance_id, vkey).as_bytes(),
    )
}

/// Checks a key binding signature with the instance's (pinned) public key.
pub fn verify_key_binding(
    key: &PublicKey,
    kind: BoundKey,
    instance_id: &str,
    vkey: &str,
    signature: &str,
) -> bool {
    verify_bytes(
        key,
        key_binding_signing_input(kind, instance_id, vkey).as_bytes(),
        signature,
    )
}

/// `logKeySignature` (see [`sign_key_binding`]).
pub fn sign_log_key<K: PssSigner + ?Sized>(
    key: &K,
    instance_id: &str,
    log_key: &str,
) -> Result<String, SignError> {
    sign_key_binding(key, BoundKey::Log, instance_id, log_key)
}

/// Checks a `logKeySignature` (see [`verify_key_binding`]).
pub fn verify_log_key(key: &PublicKey, instance_id: &str, log_key: &str, signature: &str) -> bool {
    verify_key_binding(key, BoundKey::Log, instance_id, log_key, signature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_key_binding_signatures_cover_jcs_of_the_two_members() {
        let vkey = "logbook/edge-1+0badc0de+AQ==";
        assert_eq!(
            key_binding_signing_input(BoundKey::Log, "edge-1", vkey),
            r#"{"instanceId":"edge-1","logKey":"logbook/edge-1+0badc0de+AQ=="}"#
        );
        assert_eq!(
            key_binding_signing_input(BoundKey::Witness, "edge-1", vkey),
            r#"{"instanceId":"edge-1","witnessKey":"logbook/edge-1+0badc0de+AQ=="}"#
        );
    }

    #[test]
    fn the_content_digest_is_the_hash_of_the_canonical_content() {
        let m = EventMessage {
            message_id: Uuid::from_u128(7),
            instance_id: "a".into(),
            recipient_id: Some("b".into()),
            event_type: "t.x".into(),
            payload: json!({"z": 1.0, "a": [true, null, "é"]}),
            timestamp: 1,
            key_id: "k".into(),
            signature: "s".into(),
        };
        let expected = json!({
            "messageId": m.message_id,
            "instanceId": m.instance_id,
            "eventType": m.event_type,
            "payload": m.payload,
        });
        assert_eq!(
            m.content_digest(),
            sha256(canonical_json(&expected).as_bytes())
        );
    }

    /// v2 messages carry `recipientId` under the signature; v1 messages
    /// (without it) still parse, and serialize back without it.
    #[test]
    fn recipient_is_signed_and_optional_on_the_wire() {
        let v1 = json!({"messageId": Uuid::nil(), "instanceId": "a", "eventType": "x", "payload": {}, "timestamp": 1, "keyId": "k", "signature": "s"});
        let m: EventMessage = serde_json::from_value(v1.clone()).unwrap();
        assert_eq!(m.recipient_id, None);
        assert_eq!(serde_json::to_value(&m).unwrap(), v1);
        let mut v2 = v1.clone();
        v2["recipientId"] = json!("b");
        let m: EventMessage = serde_json::from_value(v2.clone()).unwrap();
        assert_eq!(m.recipient_id.as_deref(), Some("b"));
        assert!(signing_input(&v2).contains(r#""recipientId":"b""#));
    }

    #[test]
    fn signing_input_drops_only_the_signature_and_sorts_keys() {
        let v = json!({"signature": "x", "b": 1, "a": {"d": 2.0, "c": "é"}});
        assert_eq!(signing_input(&v), r#"{"a":{"c":"é","d":2},"b":1}"#);
    }
}
