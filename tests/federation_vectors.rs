//! The federation protocol's test vectors: `docs/vectors/federation-v2.json`
//! (the current protocol, with `recipientId`) and `federation-v1.json`
//! (kept, frozen: what `accept_protocol_v1` still accepts).
//!
//! Every signature in the files must verify with the library exactly as
//! documented (JCS signing input, RSASSA-PSS-SHA256), and every negative
//! vector must fail. `docs/vectors/verify_federation_vectors.py` checks the
//! same files with an independent, standard-library-only implementation.
//!
//! `LOGBOOK_WRITE_VECTORS=1 cargo test --test federation_vectors` rewrites
//! the v2 file with fresh signatures (PSS is randomized); review the diff.

mod federation_common;

use std::path::PathBuf;

use federation_common::{key_fingerprint, key_id, public_pem, test_key};
use logbook_federation::identity::{self, OwnKey};
use logbook_federation::message::{
    EventAck, EventMessage, KEY_ROTATED_TYPE, signing_input, verify_value,
};
use logbook_federation::rotation;
use serde_json::{Value, json};
use uuid::Uuid;

fn path(version: u8) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("docs/vectors/federation-v{version}.json"))
}

fn generate() -> Value {
    let key = test_key("vectors");
    let kid = key_id(&key);
    let message = EventMessage::signed(
        &key,
        &kid,
        "alpha",
        "beta",
        Uuid::parse_str("6f1c2d3e-4b5a-4c6d-8e7f-901a2b3c4d5e").unwrap(),
        "step.completed",
        json!({"z": [3, 2.5, -1, 1e21, null, true], "a": "é€😀\n\"", "m": {"b": 1, "a": 0.1}}),
        1_767_323_045_678,
    )
    .unwrap();
    let ack = EventAck {
        message_id: Uuid::parse_str("0c8d7e6f-5a4b-4c3d-9e2f-1a0b9c8d7e6f").unwrap(),
        correlation_id: message.message_id,
        instance_id: "beta".into(),
        recipient_id: Some("alpha".into()),
        received: true,
        timestamp: 1_767_323_045_912,
        key_id: kid.clone(),
        signature: String::new(),
    };
    let ack_value = json!(ack);
    let ack_signature =
        logbook_federation::message::sign_bytes(&key, signing_input(&ack_value).as_bytes())
            .unwrap();
    let mut ack_value = ack_value;
    ack_value["signature"] = json!(ack_signature);
    let message_value = json!(message);
    let mut tampered_payload = message_value.clone();
    tampered_payload["payload"]["m"]["a"] = json!(0.2);
    let mut tampered_time = message_value.clone();
    tampered_time["timestamp"] = json!(1_767_323_045_679_i64);
    let mut readdressed = message_value.clone();
    readdressed["recipientId"] = json!("gamma");
    let mut tampered_ack = ack_value.clone();
    tampered_ack["received"] = json!(false);
    let mut readdressed_ack = ack_value.clone();
    readdressed_ack["recipientId"] = json!("mallory");
    // A key rotation: the new key announced, signed with the old one.
    let new_key = OwnKey::new(test_key("vectors-new")).unwrap();
    let announcement = EventMessage::signed(
        &key,
        &kid,
        "alpha",
        "beta",
        Uuid::parse_str("3b9e4f2a-1c7d-4e8b-a5f6-0d2c9b8a7e61").unwrap(),
        KEY_ROTATED_TYPE,
        rotation::announcement(&new_key),
        1_767_323_046_001,
    )
    .unwrap();
    let announcement_value = json!(announcement);
    let mut swapped_key = announcement_value.clone();
    swapped_key["payload"] = rotation::announcement(&OwnKey::new(test_key("mallory")).unwrap());
    json!({
        "description": "logbook federation v2 (logbook-federation/2) test vectors: RSASSA-PSS (SHA-256, MGF1-SHA-256, 32-byte salt) over the RFC 8785 canonical JSON of each message without its signature member. Every message and ack carries a signed recipientId: the EventMessage is from alpha to beta, the EventAck from beta back to alpha. PSS signatures are randomized: verify them, do not expect to reproduce them. Every valid message is signed with `key`; the federation.key_rotated announcement is signed with it as the OLD key and carries the new key (`newKey`) in its payload. See docs/federation-protocol.md.",
        "protocolVersion": "logbook-federation/2",
        "key": {
            "publicKey": public_pem(&key),
            "fingerprint": key_fingerprint(&key),
            "keyId": kid,
        },
        "valid": [
            {"name": "EventMessage", "message": message_value, "signingInput": signing_input(&message_value)},
            {"name": "EventAck", "message": ack_value, "signingInput": signing_input(&ack_value)},
            {
                "name": "federation.key_rotated announcement (signed with the old key, the file's key)",
                "message": announcement_value,
                "signingInput": signing_input(&announcement_value),
                "newKey": {
                    "publicKey": new_key.public_key_pem,
                    "fingerprint": new_key.fingerprint,
                    "keyId": new_key.key_id,
                },
            },
        ],
        "invalid": [
            {"name": "EventMessage with its payload changed after signing", "message": tampered_payload},
            {"name": "EventMessage with its timestamp changed after signing", "message": tampered_time},
            {"name": "EventMessage readdressed (recipientId changed) after signing", "message": readdressed},
            {"name": "EventAck with received changed after signing", "message": tampered_ack},
            {"name": "EventAck readdressed (recipientId changed) after signing", "message": readdressed_ack},
            {"name": "federation.key_rotated with another new key put in after signing", "message": swapped_key},
        ],
    })
}

/// Checks one vectors file; returns its valid messages and its key.
fn check_file(version: u8) -> (Vec<Value>, rsa::PublicKey, Vec<u8>) {
    let vectors: Value =
        serde_json::from_str(&std::fs::read_to_string(path(version)).unwrap()).unwrap();
    let pem = vectors["key"]["publicKey"].as_str().unwrap();
    let key = identity::public_key_from_pem(pem).unwrap();
    let der = identity::spki_der(&key).unwrap();
    assert_eq!(vectors["key"]["fingerprint"], identity::fingerprint(&der));
    assert_eq!(vectors["key"]["keyId"], identity::key_id(&der));
    let valid = vectors["valid"].as_array().unwrap().clone();
    assert_eq!(valid.len(), 3);
    for v in &valid {
        let message = &v["message"];
        assert_eq!(v["signingInput"], signing_input(message), "{}", v["name"]);
        assert!(verify_value(message, &key), "{}", v["name"]);
    }
    for v in vectors["invalid"].as_array().unwrap() {
        assert!(!verify_value(&v["message"], &key), "{}", v["name"]);
    }
    (valid, key, der)
}

#[test]
fn vectors_verify_with_the_library() {
    if std::env::var("LOGBOOK_WRITE_VECTORS").is_ok() {
        let text = serde_json::to_string_pretty(&generate()).unwrap() + "\n";
        std::fs::write(path(2), text).unwrap();
    }
    let (valid, key, der) = check_file(2);
    // The shapes parse strictly, and name their recipients.
    let m: EventMessage = serde_json::from_value(valid[0]["message"].clone()).unwrap();
    assert!(m.verify(&key));
    assert_eq!(
        (m.instance_id.as_str(), m.recipient_id.as_deref()),
        ("alpha", Some("beta"))
    );
    let a: EventAck = serde_json::from_value(valid[1]["message"].clone()).unwrap();
    assert!(a.verify(&key));
    assert_eq!(a.correlation_id, m.message_id);
    assert_eq!(
        (a.instance_id.as_str(), a.recipient_id.as_deref()),
        ("beta", Some("alpha"))
    );
    // The announcement: signed with the old key (the file's), its payload
    // naming the new key exactly as a receiver reads it.
    let r: EventMessage = serde_json::from_value(valid[2]["message"].clone()).unwrap();
    assert_eq!(r.event_type, KEY_ROTATED_TYPE);
    assert_eq!(r.recipient_id.as_deref(), Some("beta"));
    assert_eq!(r.key_id, identity::key_id(&der));
    assert!(r.verify(&key));
    let (new_der, new_key_id) = rotation::parse_announcement(&r.payload).unwrap();
    let new_key = &valid[2]["newKey"];
    assert_eq!(new_key["keyId"], new_key_id.as_str());
    assert_eq!(new_key["fingerprint"], identity::fingerprint(&new_der));
    let new_public = identity::public_key_from_pem(new_key["publicKey"].as_str().unwrap()).unwrap();
    assert_eq!(identity::spki_der(&new_public).unwrap(), new_der);
    assert_ne!(new_der, der, "a rotation announces another key");
    assert!(!r.verify(&new_public), "not signed with the new key");
}

/// The v1 vectors still parse and verify: under `accept_protocol_v1` a
/// receiver takes messages and acks without `recipientId`.
#[test]
fn v1_vectors_still_parse_without_a_recipient() {
    let (valid, key, _) = check_file(1);
    let m: EventMessage = serde_json::from_value(valid[0]["message"].clone()).unwrap();
    assert_eq!(m.recipient_id, None);
    assert!(m.verify(&key));
    let a: EventAck = serde_json::from_value(valid[1]["message"].clone()).unwrap();
    assert_eq!(a.recipient_id, None);
    assert!(a.verify(&key));
}
