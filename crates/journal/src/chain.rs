//! The hash chain: canonical forms, hashing, signing and verifying.
//!
//! Each event is signed with HMAC-SHA256 over the RFC 8785 (JCS) canonical
//! JSON of all of its fields plus the previous event's signature
//! (`prev_hash`). `docs/journal-format.md` is the normative description and
//! carries test vectors; this module must agree with it byte for byte.

use hmac::{Hmac, KeyInit, Mac};
use logbook_base::canonical::{canonical_json, sha256};
use logbook_base::canonical_check::SurelyCanonical;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::Sha256;
use uuid::Uuid;

use super::event::{Event, Timestamp};
use super::keys::Keyring;
pub use crate::chain_window::PayloadVerdict;

/// Version of the signed object (`"v"`). Bump it, never reinterpret it.
pub(crate) const SIGNATURE_VERSION: u8 = 1;

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

    /// A payload received as text that is already canonical: stored as it
    /// came, with no value built and serialized again.
    pub fn from_canonical(text: SurelyCanonical<'_>) -> CanonicalPayload {
        let text = text.text();
        let hash = sha256(text.as_bytes());
        let json = RawValue::from_string(text.to_owned()).expect("canonical JSON is JSON");
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
    #[serde(with = "logbook_base::hex::hash")]
    pub payload_hash: &'a [u8; 32],
    #[serde(with = "logbook_base::hex::opt_hash")]
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
        crate::chain_canonical::write(self).unwrap_or_else(|| {
            serde_json_canonicalizer::to_string(self)
                .expect("the signed object always canonicalizes")
        })
    }

    pub fn sign(&self, key: &[u8]) -> [u8; 32] {
        sign_canonical(&self.canonical(), key)
    }

    /// Constant-time comparison against a claimed signature.
    pub fn verify(&self, key: &[u8], signature: &[u8; 32]) -> bool {
        self.verify_reusing(key, signature, &mut SignatureScratch::default())
    }

    /// [`Signable::verify`] for a thread that checks many signatures in a
    /// row, reusing `scratch` (see [`SignatureScratch`]).
    pub(crate) fn verify_reusing<'k>(
        &self,
        key: &'k [u8],
        signature: &[u8; 32],
        scratch: &mut SignatureScratch<'k>,
    ) -> bool {
        scratch.text.clear();
        if !crate::chain_canonical::write_into(self, &mut scratch.text) {
            scratch.text = self.canonical();
        }
        let mut mac = match &scratch.keyed {
            Some((keyed, mac)) if *keyed == key => mac.clone(),
            _ => {
                let mac = hmac(key);
                scratch.keyed = Some((key, mac.clone()));
                mac
            }
        };
        mac.update(scratch.text.as_bytes());
        mac.verify_slice(signature).is_ok()
    }
}

/// What a thread checking many signatures in a row reuses: the buffer the
/// signed text is written into, and the HMAC of the last key it used,
/// already keyed (keying hashes two SHA-256 blocks, of the 26 or so that
/// checking an event costs). It borrows the key from the keyring, and is
/// dropped with the batch of events it served.
#[derive(Default)]
pub struct SignatureScratch<'k> {
    text: String,
    keyed: Option<(&'k [u8], Hmac<Sha256>)>,
}

/// The entry of an event in its plan's transparency log: the signed object
/// plus its `signature`, as RFC 8785 canonical JSON (UTF-8). The payload is
/// in it only through `payload_hash`, so erasing a payload later leaves the
/// leaf, and every checkpoint over it, unchanged.
/// `docs/verifiable-logs.md` is the spec; its vectors pin the bytes.
pub fn log_entry(event: &Event) -> String {
    log_entry_of(&Signable::of(event).canonical(), &event.signature)
}

/// The signature over [`Signable::canonical`]'s text, for a caller that
/// also needs the text ([`log_entry_of`]): the writer canonicalizes once.
pub(crate) fn sign_canonical(canonical: &str, key: &[u8]) -> [u8; 32] {
    let mut mac = hmac(key);
    mac.update(canonical.as_bytes());
    mac.finalize().into_bytes().into()
}

/// [`log_entry`] from the signed object's canonical text and its signature.
pub(crate) fn log_entry_of(signed: &str, signature: &[u8; 32]) -> String {
    // JCS sorts members by UTF-16 code units, so `signature` goes right
    // between `seq` and `type`, the last two members of the signed object.
    // The text `,"type":` cannot occur inside a value (JCS escapes `"` in
    // strings), so its first occurrence is the member. This spares the
    // writer a second canonicalization per append; the vectors pin the bytes.
    let at = signed
        .find(",\"type\":")
        .expect("the signed object has a type member");
    let signature = logbook_base::hex::encode(signature);
    let mut entry = String::with_capacity(signed.len() + 80);
    entry.push_str(&signed[..at]);
    entry.push_str(",\"signature\":\"");
    entry.push_str(&signature);
    entry.push('"');
    entry.push_str(&signed[at..]);
    entry
}

/// The payload's text is canonical and hashes to `payload_hash` (or, for a
/// redacted event, is exactly `null`). The hash
/// covers JCS(parse(text)), but a reader of the served text may parse it
/// differently (which of two duplicate members wins, for one). So only the
/// canonical text itself is accepted; JCS output never repeats a member
/// name, so this also refuses duplicates.
pub(crate) fn payload_check(event: &Event) -> Result<(), BrokenReason> {
    payload_text_check(event.payload.get(), event.redacted, &event.payload_hash)
}

/// [`payload_check`] on the parts it reads: the payload's stored text
/// (`null` for a redacted event), whether it was redacted, and its hash.
/// A whole-chain walk calls it on text borrowed from the stored record.
pub(crate) fn payload_text_check(
    text: &str,
    redacted: bool,
    payload_hash: &[u8; 32],
) -> Result<(), BrokenReason> {
    if redacted {
        // The payload is gone by design; `payload_hash` stays under the
        // signature (and the leaf), so only the spelling of the gap is
        // checked: anything but `null` is a payload that claims to be erased.
        if text != "null" {
            return Err(BrokenReason::PayloadNotCanonical);
        }
        return Ok(());
    }
    // Compares the stored bytes with their canonical spelling, without
    // rebuilding the canonical text for the usual payload.
    if !logbook_base::canonical_check::is_canonical(text) {
        return Err(BrokenReason::PayloadNotCanonical);
    }
    if sha256(text.as_bytes()) != *payload_hash {
        return Err(BrokenReason::PayloadHash);
    }
    Ok(())
}

/// The event's signature verifies under the key its `key_id` names, valid
/// at `signed_at`. A key id the keyring does not hold at all is
/// [`BrokenReason::MissingKey`]: a key left behind in a restore, not
/// evidence of tampering (a forger cannot make a signature verify either).
pub(crate) fn signature_check(
    event: &Event,
    signed_at: Timestamp,
    keyring: &Keyring,
) -> Result<(), BrokenReason> {
    signature_check_reusing(event, signed_at, keyring, &mut SignatureScratch::default())
}

/// Whether `event` is what its signer signed: its payload hashes to its
/// `payload_hash` (the signature covers the hash, not the text), and its
/// signature verifies, at its own date, under a key of `keyring` that was
/// not retired before that date.
pub fn verifies_at_its_date(event: &Event, keyring: &Keyring) -> bool {
    payload_check(event).is_ok() && signature_check(event, event.created_at, keyring).is_ok()
}

/// [`signature_check`] reusing `scratch` from one event to the next.
pub(crate) fn signature_check_reusing<'k>(
    event: &Event,
    signed_at: Timestamp,
    keyring: &'k Keyring,
    scratch: &mut SignatureScratch<'k>,
) -> Result<(), BrokenReason> {
    let signable = Signable::of(event);
    signable_check(&signable, &event.signature, signed_at, keyring, scratch)
}

/// [`signature_check`] on the signed object and the claimed signature,
/// for a caller that holds the event's fields but not an [`Event`].
pub(crate) fn signable_check<'k>(
    signable: &Signable<'_>,
    signature: &[u8; 32],
    signed_at: Timestamp,
    keyring: &'k Keyring,
    scratch: &mut SignatureScratch<'k>,
) -> Result<(), BrokenReason> {
    let key_id = signable.key_id;
    if keyring.get(key_id).is_none() {
        // Only an id a key could have names a missing key.
        return Err(KeyId::parse(key_id).map_or(BrokenReason::Signature, BrokenReason::MissingKey));
    }
    let valid = keyring
        .verification_key(key_id, signed_at)
        .is_some_and(|key| signable.verify_reusing(key, signature, scratch));
    if valid {
        Ok(())
    } else {
        Err(BrokenReason::Signature)
    }
}

/// A key id as events carry it: 8 lowercase hex digits (see
/// [`crate::keys::key_id`]). Fixed size, so a [`BrokenReason`] stays `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; 8]);

impl KeyId {
    pub fn parse(id: &str) -> Option<KeyId> {
        let bytes: [u8; 8] = id.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            .then_some(KeyId(bytes))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("parse admits only ASCII hex")
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyId({})", self.as_str())
    }
}

fn hmac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length.
    <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length")
}

/// Why a chain failed verification; the names ([`BrokenReason::as_str`],
/// also the serialized form) are part of the HTTP API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokenReason {
    /// The payload does not hash to `payload_hash`.
    PayloadHash,
    /// The HMAC does not match, or was made with a retired key for an
    /// event dated after its retirement, or names no valid key id.
    Signature,
    /// The event's `key_id` names a key this keyring lacks (a data dir
    /// restored without its `hmac.key` or `hmac-retired/`): the signature
    /// cannot be checked, which is not the same as failing the check.
    MissingKey(KeyId),
    /// `prev_hash` is not the previous event's signature.
    PrevHash,
    /// The event is not the next sequence number.
    SeqGap,
    /// The stored payload text is not exactly `JCS(parse(text))`: not JSON,
    /// members out of order or repeated, or any other spelling.
    PayloadNotCanonical,
    /// The event's leaf is not in the plan's Merkle tree: with the other
    /// stored subtrees it does not rebuild the tree's root.
    RootMismatch,
}

impl BrokenReason {
    pub fn as_str(self) -> &'static str {
        match self {
            BrokenReason::PayloadHash => "payload_hash",
            BrokenReason::Signature => "signature",
            BrokenReason::MissingKey(_) => "missing-key",
            BrokenReason::PrevHash => "prev_hash",
            BrokenReason::SeqGap => "seq_gap",
            BrokenReason::PayloadNotCanonical => "payload_not_canonical",
            BrokenReason::RootMismatch => "root_mismatch",
        }
    }

    /// The key id a [`BrokenReason::MissingKey`] names.
    pub fn missing_key(self) -> Option<KeyId> {
        match self {
            BrokenReason::MissingKey(id) => Some(id),
            _ => None,
        }
    }
}

impl Serialize for BrokenReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The name, and for a missing key its id: `missing-key 0a1b2c3d`.
impl std::fmt::Display for BrokenReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BrokenReason::MissingKey(id) => write!(f, "missing-key {id}"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// What [`ChainVerifier`]'s in-order rules read of an event: its place in
/// the chain, its link to the previous signature, its date, and whether
/// its payload was erased. [`ChainLink::of`] takes them from an
/// [`Event`]; a whole-chain walk takes them from the stored record where
/// it lies, so no event is built, with the checks that need no earlier
/// event made ahead ([`PayloadVerdict`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainLink {
    pub seq: u64,
    pub prev_hash: Option<[u8; 32]>,
    pub signature: [u8; 32],
    pub created_at: Timestamp,
    pub redacted: bool,
    /// Not read by the rules: it ties a [`PayloadVerdict`] to its event.
    pub payload_hash: [u8; 32],
}

impl ChainLink {
    pub fn of(event: &Event) -> ChainLink {
        ChainLink {
            seq: event.seq,
            prev_hash: event.prev_hash,
            signature: event.signature,
            created_at: event.created_at,
            redacted: event.redacted,
            payload_hash: event.payload_hash,
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
    /// Accepted events whose payload was erased (see [`Event::redacted`]).
    redacted: u64,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier {
            next_seq: 1,
            prev_signature: None,
            latest: None,
            redacted: 0,
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
            redacted: 0,
        }
    }

    /// Continues a chain after `before`, which was verified: also its date
    /// bounds the next event's, as in a walk from seq 1.
    pub fn resume_after(before: &Event) -> ChainVerifier {
        ChainVerifier {
            next_seq: before.seq + 1,
            prev_signature: Some(before.signature),
            latest: Some(before.created_at),
            redacted: 0,
        }
    }

    /// Every check of [`ChainVerifier::check`] except the HMAC signature:
    /// for a reader without the key, whose events a signed checkpoint
    /// vouches for (the payload is outside the log's leaves, so its hash
    /// and spelling must still be checked here).
    pub fn check_without_key(&mut self, event: &Event) -> Result<(), BrokenReason> {
        self.check_without_key_with(&ChainLink::of(event), || payload_check(event))
    }

    /// [`ChainVerifier::check_without_key`] with the payload's check
    /// supplied by the caller (computed ahead on another core).
    pub(crate) fn check_without_key_with(
        &mut self,
        link: &ChainLink,
        payload: impl FnOnce() -> Result<(), BrokenReason>,
    ) -> Result<(), BrokenReason> {
        self.check_in_order(link, payload)?;
        self.accept(link, link.created_at);
        Ok(())
    }

    /// The unsigned checks in their order, with the payload's (the one
    /// that does not depend on earlier events) supplied by the caller:
    /// computed here, or ahead on another core ([`crate::chain_window`]).
    fn check_in_order(
        &self,
        link: &ChainLink,
        payload: impl FnOnce() -> Result<(), BrokenReason>,
    ) -> Result<(), BrokenReason> {
        if link.seq != self.next_seq {
            return Err(BrokenReason::SeqGap);
        }
        payload()?;
        if link.prev_hash != self.prev_signature {
            return Err(BrokenReason::PrevHash);
        }
        Ok(())
    }

    fn accept(&mut self, link: &ChainLink, signed_at: Timestamp) {
        self.redacted += u64::from(link.redacted);
        self.next_seq += 1;
        self.prev_signature = Some(link.signature);
        self.latest = Some(self.latest.map_or(signed_at, |l| l.max(signed_at)));
    }

    /// The time `event`'s key must have been valid at: a retired key
    /// verifies only events dated up to its retirement, and an event is
    /// never dated before one accepted earlier.
    pub(crate) fn signed_at(&self, link: &ChainLink) -> Timestamp {
        self.latest.unwrap_or(link.created_at).max(link.created_at)
    }

    /// Checks one event. On success the verifier moves past it.
    pub fn check(&mut self, event: &Event, keyring: &Keyring) -> Result<(), BrokenReason> {
        self.check_with(
            &ChainLink::of(event),
            || payload_check(event),
            |signed_at| signature_check(event, signed_at, keyring),
        )
    }

    /// [`ChainVerifier::check`] with the two checks that need no earlier
    /// event supplied by the caller; the rules and their order stay here.
    pub(crate) fn check_with(
        &mut self,
        link: &ChainLink,
        payload: impl FnOnce() -> Result<(), BrokenReason>,
        signature: impl FnOnce(Timestamp) -> Result<(), BrokenReason>,
    ) -> Result<(), BrokenReason> {
        self.check_in_order(link, payload)?;
        let signed_at = self.signed_at(link);
        signature(signed_at)?;
        self.accept(link, signed_at);
        Ok(())
    }

    /// Seq of the last event accepted so far (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    pub fn last_signature(&self) -> Option<[u8; 32]> {
        self.prev_signature
    }

    /// How many of the accepted events were redacted: reported, never broken.
    pub fn redacted(&self) -> u64 {
        self.redacted
    }
}

/// Outcome of verifying a whole chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// Events that verified before the first break (all of them when valid).
    pub verified: u64,
    pub broken: Option<(u64, BrokenReason)>,
    pub head_signature: Option<[u8; 32]>,
    /// Verified events whose payload was erased.
    pub redacted: u64,
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
                redacted: verifier.redacted(),
            };
        }
    }
    ChainReport {
        verified: verifier.last_seq(),
        broken: None,
        head_signature: verifier.last_signature(),
        redacted: verifier.redacted(),
    }
}

#[cfg(test)]
mod tests;
