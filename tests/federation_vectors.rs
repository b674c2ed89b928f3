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

use std::collections::HashMap;
use std::path::PathBuf;

use federation_common::{key_fingerprint, key_id, public_pem, test_key};
use logbook_federation::batch::{self, BatchAck, Item, Manifest};
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

// Signed batches (capability `batch-signature`): docs/vectors/federation-batch-v1.json.
// `LOGBOOK_WRITE_VECTORS=1` rewrites it too.

fn batch_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/vectors/federation-batch-v1.json")
}

const BATCH_TIME: i64 = 1_767_323_047_000;

fn batch_items() -> Vec<Item<'static>> {
    [
        (
            "7d2e4f60-1a3b-4c5d-8e9f-a0b1c2d3e4f5",
            "step.completed",
            json!({"step": 1, "note": "é€😀"}),
        ),
        (
            "8e3f5071-2b4c-4d6e-9fa0-b1c2d3e4f506",
            "step.completed",
            json!({"step": 2, "z": [1e21, 0.1, -0.0]}),
        ),
        (
            "9f406182-3c5d-4e7f-a0b1-c2d3e4f50617",
            "audit.note",
            json!({"text": "line\n\"quoted\""}),
        ),
    ]
    .into_iter()
    .map(|(id, event_type, payload)| Item {
        message_id: Uuid::parse_str(id).unwrap(),
        event_type,
        // serde_json's spelling: canonical for some, not for `1e21` (JCS
        // writes `1e+21`), which the signer canonicalizes first.
        payload: payload.to_string().into(),
    })
    .collect()
}

/// Signs `value` (its `signature` member is replaced) with `key`.
fn resign(key: &rsa::PrivateKey, value: &mut Value) {
    let signature =
        logbook_federation::message::sign_bytes(key, signing_input(value).as_bytes()).unwrap();
    value["signature"] = json!(signature);
}

fn generate_batch() -> Value {
    let key = test_key("vectors");
    let kid = key_id(&key);
    let (body, _) = batch::sign(&key, &kid, "alpha", "beta", batch_items(), BATCH_TIME).unwrap();
    let body: Value = serde_json::from_str(&body).unwrap();
    // A fixed batch id, so the file says the same on every rewrite but the
    // (randomized) signatures.
    let mut manifest = body["batch"].clone();
    manifest["batchId"] = json!("5c1d2e3f-4a5b-4c6d-8e7f-90a1b2c3d4e5");
    resign(&key, &mut manifest);
    let messages = body["messages"].clone();
    let ids: Vec<Value> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["messageId"].clone())
        .collect();
    let mut ack = json!({
        "messageId": "4b0c1d2e-3f4a-4b5c-9d6e-7f8091a2b3c4",
        "correlationId": manifest["batchId"],
        "instanceId": "beta",
        "recipientId": "alpha",
        "received": true,
        "messages": ids,
        "timestamp": BATCH_TIME + 234,
        "keyId": kid,
    });
    resign(&key, &mut ack);
    let valid = json!({"batch": manifest, "messages": messages});

    let mut tampered = valid.clone();
    tampered["messages"][1]["payload"]["step"] = json!(3);
    let mut reordered = valid.clone();
    reordered["messages"].as_array_mut().unwrap().swap(0, 2);
    let mut missing_message = valid.clone();
    missing_message["messages"]
        .as_array_mut()
        .unwrap()
        .remove(1);
    let mut dropped_entry = valid.clone();
    dropped_entry["batch"]["messages"]
        .as_array_mut()
        .unwrap()
        .remove(1);
    dropped_entry["messages"].as_array_mut().unwrap().remove(1);
    let mut reordered_manifest = valid.clone();
    reordered_manifest["batch"]["messages"]
        .as_array_mut()
        .unwrap()
        .swap(0, 1);
    let mut readdressed = valid.clone();
    readdressed["batch"]["recipientId"] = json!("gamma");
    for m in readdressed["messages"].as_array_mut().unwrap() {
        m["recipientId"] = json!("gamma");
    }
    // A message sent to another instance, though the manifest (validly
    // signed over its digest) names beta: the members must agree.
    let mut stray = valid.clone();
    stray["messages"][2]["recipientId"] = json!("gamma");
    let stray_digest = batch::digest(&stray["messages"][2]);
    stray["batch"]["messages"][2] = json!(stray_digest);
    resign(&key, &mut stray["batch"]);

    let mut ack_unreceived = ack.clone();
    ack_unreceived["received"] = json!(false);
    let mut ack_readdressed = ack.clone();
    ack_readdressed["recipientId"] = json!("mallory");
    let mut ack_missing = ack.clone();
    ack_missing["messages"].as_array_mut().unwrap().remove(1);

    json!({
        "description": "logbook signed batches (capability batch-signature, logbook-federation/2) test vectors. A batch is {\"batch\": manifest, \"messages\": [...]}: each message is an EventMessage without signature; manifest.messages[i] is the lowercase hex SHA-256 of the UTF-8 RFC 8785 (JCS) bytes of message i; manifest.signature is RSASSA-PSS (SHA-256, MGF1-SHA-256, 32-byte salt) over the JCS of the manifest without signature. Every message must carry the manifest's instanceId, recipientId, timestamp and keyId. The BatchAck (from beta back to alpha) is signed like an EventAck; correlationId is the batchId and messages lists the acknowledged messageIds in order. PSS signatures are randomized: verify them, do not expect to reproduce them. Invalid batches are refused whole; invalid acks are not taken. See docs/federation-protocol.md#signed-batches.",
        "protocolVersion": "logbook-federation/2",
        "capability": batch::CAPABILITY,
        "key": {
            "publicKey": public_pem(&key),
            "fingerprint": key_fingerprint(&key),
            "keyId": kid,
        },
        "batch": {
            "body": valid,
            "manifestSigningInput": signing_input(&valid["batch"]),
            "messageSigningInputs": valid["messages"].as_array().unwrap().iter().map(signing_input).collect::<Vec<_>>(),
        },
        "ack": {"ack": ack, "signingInput": signing_input(&ack)},
        "invalidBatches": [
            {"name": "a message's payload changed after signing", "body": tampered},
            {"name": "messages reordered (the manifest keeps its order)", "body": reordered},
            {"name": "a message missing (the manifest lists three)", "body": missing_message},
            {"name": "a manifest entry and its message removed after signing", "body": dropped_entry},
            {"name": "manifest entries reordered after signing", "body": reordered_manifest},
            {"name": "readdressed (manifest and messages recipientId changed) after signing", "body": readdressed},
            {"name": "a message with another recipientId than its validly signed manifest", "body": stray},
        ],
        "invalidAcks": [
            {"name": "BatchAck with received changed after signing", "ack": ack_unreceived},
            {"name": "BatchAck readdressed (recipientId changed) after signing", "ack": ack_readdressed},
            {"name": "BatchAck with a message id removed after signing", "ack": ack_missing},
        ],
    })
}

/// Why a batch body is refused, checked as the receiver does
/// (`inbox::batch`) without a store: the manifest parses strictly and
/// verifies with the key, it counts the messages, and each message agrees
/// with it and hashes to its entry.
fn refuse_batch(body: &Value, key: &rsa::PublicKey) -> Option<String> {
    let manifest: Manifest = match serde_json::from_value(body["batch"].clone()) {
        Ok(m) => m,
        Err(e) => return Some(format!("manifest: {e}")),
    };
    if !verify_value(&body["batch"], key) {
        return Some("manifest signature".into());
    }
    let messages = body["messages"].as_array().unwrap();
    if messages.len() != manifest.messages.len() {
        return Some("count".into());
    }
    for (m, listed) in messages.iter().zip(&manifest.messages) {
        if m.get("signature").is_some()
            || m["instanceId"] != manifest.instance_id.as_str()
            || m["recipientId"] != manifest.recipient_id.as_str()
            || m["timestamp"] != manifest.timestamp
            || m["keyId"] != manifest.key_id.as_str()
        {
            return Some("members differ from the manifest".into());
        }
        if batch::digest(m) != *listed {
            return Some("digest".into());
        }
    }
    None
}

#[test]
fn batch_vectors_verify_with_the_library() {
    if std::env::var("LOGBOOK_WRITE_VECTORS").is_ok() {
        let text = serde_json::to_string_pretty(&generate_batch()).unwrap() + "\n";
        std::fs::write(batch_path(), text).unwrap();
    }
    let vectors: Value =
        serde_json::from_str(&std::fs::read_to_string(batch_path()).unwrap()).unwrap();
    assert_eq!(vectors["capability"], batch::CAPABILITY);
    let key = identity::public_key_from_pem(vectors["key"]["publicKey"].as_str().unwrap()).unwrap();
    let der = identity::spki_der(&key).unwrap();
    assert_eq!(vectors["key"]["keyId"], identity::key_id(&der));
    let kid = vectors["key"]["keyId"].as_str().unwrap();

    // The batch: its signing inputs, and the receiver's checks pass.
    let body = &vectors["batch"]["body"];
    assert!(batch::is_signed_batch(&body.to_string()));
    assert_eq!(
        vectors["batch"]["manifestSigningInput"],
        signing_input(&body["batch"])
    );
    let messages = body["messages"].as_array().unwrap();
    for (m, input) in messages
        .iter()
        .zip(vectors["batch"]["messageSigningInputs"].as_array().unwrap())
    {
        assert_eq!(*input, signing_input(m));
    }
    assert_eq!(refuse_batch(body, &key), None);
    // The sender reproduces every message and digest (all but the random
    // batch id and the randomized signature).
    let (ours, _) = batch::sign(
        &test_key("vectors"),
        kid,
        "alpha",
        "beta",
        batch_items(),
        BATCH_TIME,
    )
    .unwrap();
    // Each message is sent as its signing input, byte for byte.
    let inputs: Vec<&str> = vectors["batch"]["messageSigningInputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let sent = ours.split_once("\"},\"messages\":[").unwrap().1;
    assert_eq!(sent.strip_suffix("]}").unwrap(), inputs.join(","));
    // (The file's body spells `1e21` and `-0.0` as serde_json does, as
    // another sender may: the receiver hashes those messages' JCS.)
    let ours: Value = serde_json::from_str(&ours).unwrap();
    assert_eq!(ours["batch"]["messages"], body["batch"]["messages"]);
    for member in ["instanceId", "recipientId", "timestamp", "keyId"] {
        assert_eq!(ours["batch"][member], body["batch"][member], "{member}");
    }
    let manifest: Manifest = serde_json::from_value(body["batch"].clone()).unwrap();

    // The ack: verifies, parses strictly, and acknowledges every message.
    let ack_value = &vectors["ack"]["ack"];
    assert_eq!(vectors["ack"]["signingInput"], signing_input(ack_value));
    assert!(verify_value(ack_value, &key));
    let ack: BatchAck = serde_json::from_value(ack_value.clone()).unwrap();
    let ids: HashMap<Uuid, u64> = messages
        .iter()
        .zip(1u64..)
        .map(|(m, seq)| {
            (
                Uuid::parse_str(m["messageId"].as_str().unwrap()).unwrap(),
                seq,
            )
        })
        .collect();
    assert_eq!(
        batch::acked_by(&ack, manifest.batch_id, &ids),
        vec![1, 2, 3]
    );
    assert_eq!(
        batch::acked_by(&ack, Uuid::new_v4(), &ids),
        Vec::<u64>::new()
    );
    // The receiver's ack has the same shape (but its id and signature).
    let own = OwnKey::new(test_key("vectors")).unwrap();
    let mut made =
        batch::sign_ack(&own, "beta", &manifest, ack.messages.clone(), ack.timestamp).unwrap();
    for member in ["messageId", "signature", "keyId"] {
        made[member] = ack_value[member].clone();
    }
    assert_eq!(&made, ack_value);

    // Every negative case is refused.
    let invalid = vectors["invalidBatches"].as_array().unwrap();
    assert_eq!(invalid.len(), 7);
    for v in invalid {
        assert!(refuse_batch(&v["body"], &key).is_some(), "{}", v["name"]);
    }
    for v in vectors["invalidAcks"].as_array().unwrap() {
        assert!(!verify_value(&v["ack"], &key), "{}", v["name"]);
    }
}
