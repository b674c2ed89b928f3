//! Tests of the chain's signing and verification rules.

use super::*;
use serde_json::json;
use serde_json::value::RawValue;

fn keyring() -> Keyring {
    Keyring::from_secret(b"test-secret".to_vec())
}

fn chain(keyring: &Keyring, n: u64) -> Vec<Event> {
    let plan_id = Uuid::parse_str("0192f3a4-5b6c-7d8e-9f00-112233445566").unwrap();
    let mut prev = None;
    (1..=n)
        .map(|seq| {
            let payload = CanonicalPayload::new(&json!({"n": seq, "note": "é"}));
            let mut event = Event {
                id: Uuid::from_u128(u128::from(seq)),
                plan_id,
                seq,
                event_type: "step.completed".into(),
                actor: Some("alice".into()),
                payload: payload.json,
                payload_hash: payload.hash,
                prev_hash: prev,
                signature: [0; 32],
                key_id: keyring.current_id().to_string(),
                created_at: Timestamp(1_700_000_000_000 + seq as i64),
                position: seq,
                redacted: false,
            };
            let key = keyring.current_secret();
            event.signature = Signable::of(&event).sign(key);
            prev = Some(event.signature);
            event
        })
        .collect()
}

#[test]
fn untampered_chain_verifies() {
    let k = keyring();
    let events = chain(&k, 5);
    assert_eq!(events[0].prev_hash, None);
    let report = verify_all(&events, &k);
    assert!(report.is_valid());
    assert_eq!(report.verified, 5);
    assert_eq!(report.head_signature, Some(events[4].signature));
}

#[test]
fn every_field_is_covered_by_the_signature() {
    let k = keyring();
    let base = chain(&k, 3);
    type Tamper = Box<dyn Fn(&mut Event)>;
    let tampers: Vec<(&str, Tamper, BrokenReason)> = vec![
        (
            "type",
            Box::new(|e| e.event_type = "step.failed".into()),
            BrokenReason::Signature,
        ),
        (
            "actor",
            Box::new(|e| e.actor = Some("mallory".into())),
            BrokenReason::Signature,
        ),
        (
            "actor null",
            Box::new(|e| e.actor = None),
            BrokenReason::Signature,
        ),
        (
            "time",
            Box::new(|e| e.created_at = Timestamp(e.created_at.0 + 1)),
            BrokenReason::Signature,
        ),
        (
            "id",
            Box::new(|e| e.id = Uuid::from_u128(99)),
            BrokenReason::Signature,
        ),
        (
            "plan",
            Box::new(|e| e.plan_id = Uuid::from_u128(7)),
            BrokenReason::Signature,
        ),
        (
            "key id",
            Box::new(|e| e.key_id = "00000000".into()),
            BrokenReason::MissingKey(KeyId::parse("00000000").unwrap()),
        ),
        (
            "key id not an id",
            Box::new(|e| e.key_id = "0000000".into()),
            BrokenReason::Signature,
        ),
        (
            "signature",
            Box::new(|e| e.signature[0] ^= 1),
            BrokenReason::Signature,
        ),
        (
            "payload",
            Box::new(|e| e.payload = RawValue::from_string(r#"{"n":99}"#.into()).unwrap()),
            BrokenReason::PayloadHash,
        ),
        (
            "prev_hash",
            Box::new(|e| e.prev_hash.as_mut().unwrap()[31] ^= 1),
            BrokenReason::PrevHash,
        ),
        ("seq", Box::new(|e| e.seq = 3), BrokenReason::SeqGap),
        (
            "payload with duplicate members",
            Box::new(|e| {
                e.payload = RawValue::from_string(r#"{"n":99,"n":2,"note":"é"}"#.into()).unwrap()
            }),
            BrokenReason::PayloadNotCanonical,
        ),
        (
            "payload not in canonical order",
            Box::new(|e| {
                e.payload = RawValue::from_string(r#"{"note":"é","n":2}"#.into()).unwrap()
            }),
            BrokenReason::PayloadNotCanonical,
        ),
        (
            "payload spelled differently",
            Box::new(|e| {
                e.payload = RawValue::from_string(r#"{"n":2.0,"note":"\u00e9"}"#.into()).unwrap()
            }),
            BrokenReason::PayloadNotCanonical,
        ),
    ];
    for (what, tamper, reason) in tampers {
        let mut events = base.clone();
        tamper(&mut events[1]);
        let report = verify_all(&events, &k);
        assert_eq!(
            report.broken,
            Some((events[1].seq, reason)),
            "tampering with {what}"
        );
        assert_eq!(report.verified, 1, "{what}");
    }
}

#[test]
fn a_redacted_event_verifies_and_is_counted() {
    let k = keyring();
    let mut events = chain(&k, 3);
    events[1].payload = RawValue::from_string("null".into()).unwrap();
    events[1].redacted = true;
    let report = verify_all(&events, &k);
    assert!(report.is_valid(), "{report:?}");
    assert_eq!(report.redacted, 1);
    // The signature still covers payload_hash: changing it breaks.
    let mut forged = events.clone();
    forged[1].payload_hash[0] ^= 1;
    assert_eq!(
        verify_all(&forged, &k).broken,
        Some((2, BrokenReason::Signature))
    );
    // A "redacted" event that still shows a payload is refused.
    let mut half = chain(&k, 3);
    half[1].redacted = true;
    assert_eq!(
        verify_all(&half, &k).broken,
        Some((2, BrokenReason::PayloadNotCanonical))
    );
    // The leaf does not depend on the payload.
    assert_eq!(log_entry(&events[1]), log_entry(&chain(&k, 3)[1]));
}

#[test]
fn removing_or_reordering_is_detected() {
    let k = keyring();
    let mut events = chain(&k, 4);
    events.remove(1);
    assert_eq!(
        verify_all(&events, &k).broken,
        Some((3, BrokenReason::SeqGap))
    );
    let mut events = chain(&k, 4);
    events.swap(1, 2);
    assert_eq!(
        verify_all(&events, &k).broken,
        Some((3, BrokenReason::SeqGap))
    );
}

#[test]
fn a_different_key_does_not_verify() {
    let events = chain(&keyring(), 2);
    let other = Keyring::from_secret(b"another-secret".to_vec());
    // Not a bad signature: the keyring lacks the key, and says which.
    let id = KeyId::parse(&events[0].key_id).unwrap();
    assert_eq!(
        verify_all(&events, &other).broken,
        Some((1, BrokenReason::MissingKey(id)))
    );
    assert_eq!(
        BrokenReason::MissingKey(id).to_string(),
        format!("missing-key {}", events[0].key_id)
    );
}

/// One scratch reused over events signed by two keys in turn, and
/// over tampered ones: each verdict is the fresh check's.
#[test]
fn a_reused_scratch_verifies_as_a_fresh_check() {
    let (a, b) = (keyring(), Keyring::from_secret(b"another-secret".to_vec()));
    let mut events = chain(&a, 3);
    events.extend(chain(&b, 3));
    events[4].signature[0] ^= 1;
    let mut scratch = SignatureScratch::default();
    let keys = [a.current_secret(), b.current_secret()];
    let mut verified = 0;
    for event in events.iter().chain(events.iter().rev()) {
        for key in keys {
            let signable = Signable::of(event);
            let fresh = signable.verify(key, &event.signature);
            assert_eq!(
                signable.verify_reusing(key, &event.signature, &mut scratch),
                fresh
            );
            verified += usize::from(fresh);
        }
    }
    assert_eq!(verified, 2 * 5, "each untampered event under its own key");
}

#[test]
fn a_retired_key_does_not_verify_events_after_its_retirement() {
    let old = keyring();
    let events = chain(&old, 3); // dated 1_700_000_000_001 ..= _003
    let mut ring = Keyring::from_secret(b"the-new-key".to_vec());
    ring.add_verification_key(old.current_secret().to_vec())
        .unwrap();
    assert!(verify_all(&events, &ring).is_valid(), "no window recorded");
    ring.retire(old.current_id(), Timestamp(1_700_000_000_002));
    assert_eq!(
        verify_all(&events, &ring).broken,
        Some((3, BrokenReason::Signature)),
        "seq 3 is dated after the retirement"
    );
    assert!(verify_all(&events[..2], &ring).is_valid());
    // Backdating does not help once the chain has a later event: seq 2
    // is signed by the new key after the retirement, and seq 3 by the
    // retired key, dated before it.
    let new_key = ring.current_secret().to_vec();
    let mut forged = events.clone();
    forged[1].created_at = Timestamp(1_700_000_000_009);
    forged[1].key_id = ring.current_id().to_string();
    forged[1].signature = Signable::of(&forged[1]).sign(&new_key);
    forged[2].created_at = Timestamp(1_700_000_000_001);
    forged[2].prev_hash = Some(forged[1].signature);
    forged[2].signature = Signable::of(&forged[2]).sign(old.current_secret());
    assert_eq!(
        verify_all(&forged, &ring).broken,
        Some((3, BrokenReason::Signature))
    );
}
