//! The hash chain: canonical forms, hashing, signing and verifying.
//!
//! Each event is signed with HMAC-SHA256 over the RFC 8785 (JCS) canonical
//! JSON of all of its fields plus the previous event's signature
//! (`prev_hash`). `docs/journal-format.md` is the normative description and
//! carries test vectors; this module must agree with it byte for byte.

use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::event::{Event, Timestamp};
use super::keys::Keyring;

/// Version of the signed object (`"v"`). Bump it, never reinterpret it.
pub const SIGNATURE_VERSION: u8 = 1;

/// Largest integer magnitude a payload may carry: RFC 8785 canonicalizes
/// numbers as IEEE-754 doubles, so larger integers would hash differently in
/// other languages' verifiers.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// RFC 8785 canonical JSON of a value.
pub fn canonical_json(value: &Value) -> String {
    // Serializing a `Value` cannot fail: keys are strings, and serde_json
    // never holds NaN or infinities.
    serde_json_canonicalizer::to_string(value).expect("a serde_json::Value always canonicalizes")
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// A payload in the form the journal stores and hashes it. Built by the
/// request handler, so the single writer thread only copies it.
#[derive(Debug, Clone)]
pub struct CanonicalPayload {
    pub json: Box<RawValue>,
    pub hash: [u8; 32],
}

impl CanonicalPayload {
    pub fn new(value: &Value) -> CanonicalPayload {
        let json = canonical_json(value);
        let hash = sha256(json.as_bytes());
        let json = RawValue::from_string(json).expect("canonical JSON is JSON");
        CanonicalPayload { json, hash }
    }
}

/// The object whose canonical JSON is signed. Field names are the wire
/// contract; JCS sorts them, so their order here does not matter.
#[derive(Serialize)]
pub struct Signable<'a> {
    pub v: u8,
    pub plan_id: &'a Uuid,
    pub seq: u64,
    pub id: &'a Uuid,
    #[serde(rename = "type")]
    pub event_type: &'a str,
    pub actor: Option<&'a str>,
    pub created_at: Timestamp,
    #[serde(with = "crate::hex::hash")]
    pub payload_hash: &'a [u8; 32],
    #[serde(with = "crate::hex::opt_hash")]
    pub prev_hash: &'a Option<[u8; 32]>,
    pub key_id: &'a str,
}

impl<'a> Signable<'a> {
    pub fn of(event: &'a Event) -> Signable<'a> {
        Signable {
            v: SIGNATURE_VERSION,
            plan_id: &event.plan_id,
            seq: event.seq,
            id: &event.id,
            event_type: &event.event_type,
            actor: event.actor.as_deref(),
            created_at: event.created_at,
            payload_hash: &event.payload_hash,
            prev_hash: &event.prev_hash,
            key_id: &event.key_id,
        }
    }

    /// The exact bytes the HMAC covers.
    pub fn canonical(&self) -> String {
        serde_json_canonicalizer::to_string(self).expect("the signed object always canonicalizes")
    }

    pub fn sign(&self, key: &[u8]) -> [u8; 32] {
        let mut mac = hmac(key);
        mac.update(self.canonical().as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Constant-time comparison against a claimed signature.
    pub fn verify(&self, key: &[u8], signature: &[u8; 32]) -> bool {
        let mut mac = hmac(key);
        mac.update(self.canonical().as_bytes());
        mac.verify_slice(signature).is_ok()
    }
}

fn hmac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length.
    <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length")
}

/// Why a chain failed verification; the names are part of the HTTP API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BrokenReason {
    /// The payload does not hash to `payload_hash`.
    PayloadHash,
    /// The HMAC does not match, or was made with a key this keyring lacks,
    /// or with a retired key for an event dated after its retirement.
    Signature,
    /// `prev_hash` is not the previous event's signature.
    PrevHash,
    /// The event is not the next sequence number.
    SeqGap,
    /// The stored payload text is not exactly `JCS(parse(text))`: not JSON,
    /// members out of order or repeated, or any other spelling.
    PayloadNotCanonical,
}

impl BrokenReason {
    pub fn as_str(self) -> &'static str {
        match self {
            BrokenReason::PayloadHash => "payload_hash",
            BrokenReason::Signature => "signature",
            BrokenReason::PrevHash => "prev_hash",
            BrokenReason::SeqGap => "seq_gap",
            BrokenReason::PayloadNotCanonical => "payload_not_canonical",
        }
    }
}

/// Walks a plan's events in order and reports the first one that breaks the
/// chain. Feed it every event from seq 1, or resume it from a known head.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    next_seq: u64,
    prev_signature: Option<[u8; 32]>,
    /// The latest `created_at` accepted so far. The daemon never dates an
    /// event before its predecessor, so a retired key must not have signed
    /// after this either: that stops a forgery backdated behind newer events.
    latest: Option<Timestamp>,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier {
            next_seq: 1,
            prev_signature: None,
            latest: None,
        }
    }
}

impl ChainVerifier {
    /// Continues a chain whose last verified event had `seq` and `signature`.
    pub fn resume(seq: u64, signature: [u8; 32]) -> ChainVerifier {
        ChainVerifier {
            next_seq: seq + 1,
            prev_signature: Some(signature),
            latest: None,
        }
    }

    /// Checks one event. On success the verifier moves past it.
    pub fn check(&mut self, event: &Event, keyring: &Keyring) -> Result<(), BrokenReason> {
        if event.seq != self.next_seq {
            return Err(BrokenReason::SeqGap);
        }
        // The hash covers JCS(parse(text)), but a reader of the served text
        // may parse it differently (which of two duplicate members wins, for
        // one). So only the canonical text itself is accepted; JCS output
        // never repeats a member name, so this also refuses duplicates.
        let text = event.payload.get();
        let canonical = serde_json::from_str::<Value>(text).map(|v| canonical_json(&v));
        if canonical.ok().as_deref() != Some(text) {
            return Err(BrokenReason::PayloadNotCanonical);
        }
        if sha256(text.as_bytes()) != event.payload_hash {
            return Err(BrokenReason::PayloadHash);
        }
        if event.prev_hash != self.prev_signature {
            return Err(BrokenReason::PrevHash);
        }
        // A retired key verifies only events dated up to its retirement.
        let signed_at = self
            .latest
            .unwrap_or(event.created_at)
            .max(event.created_at);
        let key = keyring
            .verification_key(&event.key_id, signed_at)
            .ok_or(BrokenReason::Signature)?;
        if !Signable::of(event).verify(key, &event.signature) {
            return Err(BrokenReason::Signature);
        }
        self.next_seq += 1;
        self.prev_signature = Some(event.signature);
        self.latest = Some(signed_at);
        Ok(())
    }

    /// Seq of the last event accepted so far (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    pub fn last_signature(&self) -> Option<[u8; 32]> {
        self.prev_signature
    }
}

/// Outcome of verifying a whole chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// Events that verified before the first break (all of them when valid).
    pub verified: u64,
    pub broken: Option<(u64, BrokenReason)>,
    pub head_signature: Option<[u8; 32]>,
}

impl ChainReport {
    pub fn is_valid(&self) -> bool {
        self.broken.is_none()
    }
}

/// Verifies events in order from seq 1, stopping at the first break.
pub fn verify_all<'a>(
    events: impl IntoIterator<Item = &'a Event>,
    keyring: &Keyring,
) -> ChainReport {
    let mut verifier = ChainVerifier::default();
    for event in events {
        if let Err(reason) = verifier.check(event, keyring) {
            return ChainReport {
                verified: verifier.last_seq(),
                broken: Some((event.seq, reason)),
                head_signature: verifier.last_signature(),
            };
        }
    }
    ChainReport {
        verified: verifier.last_seq(),
        broken: None,
        head_signature: verifier.last_signature(),
    }
}

/// Finds an integer literal in JSON text whose magnitude exceeds
/// [`MAX_SAFE_INTEGER`]. RFC 8785 canonicalizes numbers as IEEE-754 doubles,
/// so such an integer would be stored as a different value than the one
/// sent (and serde_json turns literals beyond 64 bits into doubles before any
/// check on a parsed value could see them). The text must be valid JSON.
pub fn unsafe_integer_literal(json: &[u8]) -> Option<String> {
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'"' => {
                // Skip the string, honouring escapes.
                i += 1;
                while i < json.len() && json[i] != b'"' {
                    i += if json[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                i += 1;
                while i < json.len()
                    && matches!(json[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    i += 1;
                }
                let literal = &json[start..i];
                let is_integer = !literal.iter().any(|c| matches!(c, b'.' | b'e' | b'E'));
                let digits = literal.strip_prefix(b"-").unwrap_or(literal);
                let too_big = digits.len() > 16
                    || std::str::from_utf8(digits)
                        .ok()
                        .and_then(|d| d.parse::<u64>().ok())
                        .is_none_or(|n| n > MAX_SAFE_INTEGER);
                if (is_integer && too_big) || (!is_integer && whole_beyond_safe(literal)) {
                    return Some(String::from_utf8_lossy(literal).into_owned());
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// A number written with a fraction or exponent whose value is a whole
/// number beyond ±(2^53−1) and below 1e21 (`9007199254740993.0`, `1e19`):
/// RFC 8785 writes it as a plain integer (1e21 and above keep an exponent),
/// which is then out of range, and a receiving peer refuses it. Its value
/// is already rounded, so it is refused like the integer it becomes.
fn whole_beyond_safe(literal: &[u8]) -> bool {
    std::str::from_utf8(literal)
        .ok()
        .and_then(|text| text.parse::<f64>().ok())
        .is_some_and(|v| {
            let v = v.abs();
            v > MAX_SAFE_INTEGER as f64 && v < 1e21 && v.fract() == 0.0
        })
}

/// Rejects integers in a parsed value beyond ±(2^53−1). Literals beyond 64
/// bits have already become doubles by then; [`unsafe_integer_literal`] on
/// the raw text catches those too.
pub fn check_numbers(value: &Value) -> Result<(), String> {
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Number(n) => {
                let too_big = match (n.as_u64(), n.as_i64()) {
                    (Some(u), _) => u > MAX_SAFE_INTEGER,
                    (None, Some(i)) => i.unsigned_abs() > MAX_SAFE_INTEGER,
                    (None, None) => false, // a float: canonical form is well defined
                };
                if too_big {
                    return Err(format!(
                        "the integer {n} is outside ±(2^53-1); RFC 8785 cannot represent it exactly, send it as a string"
                    ));
                }
            }
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.values()),
            _ => {}
        }
    }
    Ok(())
}

/// Nesting depth of a JSON value: scalars are 0, `[]` and `{}` are 1.
pub fn json_depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => {
                deepest = deepest.max(depth);
                continue;
            }
        };
        deepest = deepest.max(depth + 1);
        stack.extend(children.map(|c| (c, depth + 1)));
    }
    deepest
}

#[cfg(test)]
mod tests {
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
                    e.payload =
                        RawValue::from_string(r#"{"n":99,"n":2,"note":"é"}"#.into()).unwrap()
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
                    e.payload =
                        RawValue::from_string(r#"{"n":2.0,"note":"\u00e9"}"#.into()).unwrap()
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
        assert_eq!(
            verify_all(&events, &other).broken,
            Some((1, BrokenReason::Signature))
        );
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

    #[test]
    fn canonical_form_sorts_keys_and_normalizes_numbers() {
        let v: Value = serde_json::from_str(r#"{"b":1.0,"a":[1e2,"\u00e9"],"c":null}"#).unwrap();
        assert_eq!(canonical_json(&v), r#"{"a":[100,"é"],"b":1,"c":null}"#);
    }

    #[test]
    fn unsafe_integers_are_found_in_text() {
        let find = |text: &str| unsafe_integer_literal(text.as_bytes());
        assert_eq!(
            find(r#"{"a":[9007199254740991,-9007199254740991,1.5e300,1e21]}"#),
            None
        );
        assert_eq!(
            find(r#"{"a":9007199254740992}"#).as_deref(),
            Some("9007199254740992")
        );
        assert_eq!(
            find("-9007199254740992").as_deref(),
            Some("-9007199254740992")
        );
        assert_eq!(
            find(r#"[18446744073709551616]"#).as_deref(),
            Some("18446744073709551616")
        );
        assert_eq!(
            find(r#"{"s":"123456789012345678901234567890","t":"\"99999999999999999"}"#),
            None
        );
        assert_eq!(find(r#"{"123456789012345678901":0}"#), None);
        // Fractions and exponents that come out as unsafe whole numbers.
        assert_eq!(
            find("[9007199254740993.0]").as_deref(),
            Some("9007199254740993.0")
        );
        assert_eq!(find("[-1e19]").as_deref(), Some("-1e19"));
        assert_eq!(
            find("[9.007199254740992E15]").as_deref(),
            Some("9.007199254740992E15")
        );
        assert_eq!(find("[9007199254740991.0,1.5,1e21,-1e300,1e-300]"), None);
    }

    #[test]
    fn depth_counts_containers() {
        assert_eq!(json_depth(&json!(1)), 0);
        assert_eq!(json_depth(&json!({})), 1);
        assert_eq!(json_depth(&json!({"a": [1, {"b": []}]})), 4);
    }
}
