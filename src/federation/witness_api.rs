//! MERGE: adapters the sender needs from the heads log (branch headslog)
//! and the cosignature code (branch witproto). Replaced at merge.

use logbook_journal::store::{Store, StoreError};

use super::Federation;
use super::witnessing::KeySource;

/// Where a peer's witness listens: `{base_url}{PEER_WITNESS_PREFIX}/add-checkpoint`.
pub(crate) const PEER_WITNESS_PREFIX: &str = "/api/v1/witness";

pub(crate) struct HeadsCheckpoint {
    pub(crate) note: String,
    pub(crate) size: u64,
    pub(crate) root: [u8; 32],
}

pub(crate) struct WitnessKey;

pub(crate) fn heads_checkpoint(_: &Store) -> Result<Option<HeadsCheckpoint>, StoreError> {
    Ok(None)
}

pub(crate) fn heads_consistency(_: &Store, _: u64, _: u64) -> Result<Vec<[u8; 32]>, StoreError> {
    Ok(Vec::new())
}

pub(crate) fn add_heads_cosignature(
    _: &Store,
    _: u64,
    _: [u8; 32],
    _: &str,
) -> Result<(), StoreError> {
    Ok(())
}

pub(crate) async fn witness_key(_: &Federation, _: &KeySource) -> Result<WitnessKey, String> {
    Err("MERGE".into())
}

pub(crate) fn verify_cosignatures(
    _: &WitnessKey,
    _: &HeadsCheckpoint,
    _: &str,
) -> Result<(String, u64), String> {
    Err("MERGE".into())
}

/// A tlog-witness add-checkpoint body: `old N`, the proof lines, a blank
/// line, then the signed note.
pub(crate) fn add_checkpoint_body(old: u64, proof: &[[u8; 32]], note: &str) -> String {
    use base64::Engine;
    let mut body = format!("old {old}\n");
    for hash in proof {
        body.push_str(&base64::engine::general_purpose::STANDARD.encode(hash));
        body.push('\n');
    }
    body.push('\n');
    body.push_str(note);
    body
}
