//! A peer's transparency-log keys, read from its instance document and
//! trusted through the RSA key pinned for it: `logKey` (its plan and heads
//! checkpoints, origin `{origin_prefix}` = the vkey's name) with
//! `logKeySignature`, and `witnessKey` (its cosignatures) with
//! `witnessKeySignature`. A document whose binding signature does not
//! verify under the pinned key gives no key at all.

use logbook_journal::store::PeerRecord;
use logbook_tlog::cosignature::CosignatureVerifier;
use logbook_tlog::note::{NoteError, Verifier};
use serde_json::Value;

use crate::identity::public_key_from_der;
use crate::message::{BoundKey, verify_key_binding};

/// Why a peer's document gave no usable key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerKeyError {
    /// The document is another instance's.
    WrongInstance,
    /// The member is absent (an older peer).
    Missing(&'static str),
    /// The vkey does not parse.
    BadKey(NoteError),
    /// The binding signature does not verify under the pinned key.
    BadBinding(&'static str),
}

impl std::fmt::Display for PeerKeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerKeyError::WrongInstance => write!(f, "the document names another instance"),
            PeerKeyError::Missing(m) => write!(f, "the document has no {m}"),
            PeerKeyError::BadKey(e) => write!(f, "{e}"),
            PeerKeyError::BadBinding(m) => {
                write!(f, "{m} does not verify under the pinned key")
            }
        }
    }
}

impl std::error::Error for PeerKeyError {}

/// The vkey under `kind` in `doc`, if its binding verifies for `peer`.
fn bound_vkey<'d>(
    peer: &PeerRecord,
    doc: &'d Value,
    kind: BoundKey,
) -> Result<&'d str, PeerKeyError> {
    if doc.get("instanceId").and_then(Value::as_str) != Some(peer.instance_id.as_str()) {
        return Err(PeerKeyError::WrongInstance);
    }
    let vkey = doc
        .get(kind.member())
        .and_then(Value::as_str)
        .ok_or(PeerKeyError::Missing(kind.member()))?;
    let signature = doc
        .get(kind.signature_member())
        .and_then(Value::as_str)
        .ok_or(PeerKeyError::Missing(kind.signature_member()))?;
    let key = public_key_from_der(&peer.public_key_der)
        .map_err(|_| PeerKeyError::BadBinding(kind.signature_member()))?;
    if !verify_key_binding(&key, kind, &peer.instance_id, vkey, signature) {
        return Err(PeerKeyError::BadBinding(kind.signature_member()));
    }
    Ok(vkey)
}

/// The peer's log vkey; its name is the origin of the peer's heads log.
pub fn peer_log_key(peer: &PeerRecord, doc: &Value) -> Result<Verifier, PeerKeyError> {
    Verifier::parse(bound_vkey(peer, doc, BoundKey::Log)?).map_err(PeerKeyError::BadKey)
}

/// The peer's cosignature/v1 witness vkey.
pub fn peer_witness_key(
    peer: &PeerRecord,
    doc: &Value,
) -> Result<CosignatureVerifier, PeerKeyError> {
    CosignatureVerifier::parse(bound_vkey(peer, doc, BoundKey::Witness)?)
        .map_err(PeerKeyError::BadKey)
}
