//! What the witnessing sender needs from the rest of the daemon: the heads
//! checkpoint (signed by the log key, which the HTTP layer holds, so it is
//! handed down as a [`HeadsSigner`]), its consistency proofs, the witness
//! keys, and the tlog-witness wire format.

use std::sync::Arc;

use base64::Engine;
use logbook_journal::store::{SigningRefused, Store, StoreError};
use logbook_tlog::cosignature::CosignatureVerifier;
use logbook_tlog::merkle::Hash;
use logbook_tlog::note::Note;
use tokio::sync::watch;

use super::Federation;
use super::witnessing::KeySource;

/// Where a peer's witness listens: `{base_url}{PEER_WITNESS_PREFIX}/add-checkpoint`.
pub(crate) const PEER_WITNESS_PREFIX: &str = "/api/v1/witness";

/// Signs the heads checkpoint with the current log key. The key lives in
/// the HTTP layer (`http::log::LogState`, which `keys rotate-log` swaps),
/// above this one; the composition root hands it down.
pub(crate) trait HeadsSigner: Send + Sync {
    /// The signed heads checkpoint at (`size`, `root`) with the stored
    /// cosignature lines, once the store agreed it is consistent with every
    /// heads checkpoint signed before.
    fn heads_checkpoint(
        &self,
        store: &Store,
        size: u64,
        root: Hash,
    ) -> Result<Result<String, SigningRefused>, StoreError>;
}

/// What the sender reads from the heads log: the signer, and a watch that
/// changes when a pass grew the log.
#[derive(Clone)]
pub(crate) struct HeadsLog {
    pub(crate) signer: Arc<dyn HeadsSigner>,
    pub(crate) grown: watch::Receiver<u64>,
}

/// The heads checkpoint a witness is asked to cosign.
pub(crate) struct HeadsCheckpoint {
    /// The signed note as served (log signature, then cosignatures).
    pub(crate) note: String,
    /// The checkpoint text the signatures cover.
    pub(crate) text: String,
    pub(crate) size: u64,
    pub(crate) root: Hash,
}

/// The current heads checkpoint; `None` while the heads log is empty.
pub(crate) fn heads_checkpoint(
    store: &Store,
    signer: &dyn HeadsSigner,
) -> Result<Option<HeadsCheckpoint>, String> {
    let (size, root) = store
        .heads_tree()
        .root(None)
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if size == 0 {
        return Ok(None);
    }
    let note = signer
        .heads_checkpoint(store, size, root)
        .map_err(|e| e.to_string())?
        .map_err(|refused| format!("the log key refused to sign: {refused}"))?;
    let text = Note::parse(note.as_bytes())
        .map_err(|e| format!("our own heads checkpoint does not parse: {e}"))?
        .text;
    Ok(Some(HeadsCheckpoint {
        note,
        text,
        size,
        root,
    }))
}

/// The RFC 9162 consistency proof of the heads log from `from` to `to`.
pub(crate) fn heads_consistency(store: &Store, from: u64, to: u64) -> Result<Vec<Hash>, String> {
    Ok(store
        .heads_tree()
        .consistency(from, to)
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?
        .proof)
}

/// A tlog-witness add-checkpoint body: `old N`, the proof lines, a blank
/// line, then the signed note.
pub(crate) fn add_checkpoint_body(old: u64, proof: &[Hash], note: &str) -> String {
    let mut body = format!("old {old}\n");
    for hash in proof {
        body.push_str(&base64::engine::general_purpose::STANDARD.encode(hash));
        body.push('\n');
    }
    body.push('\n');
    body.push_str(note);
    body
}

/// Finds `key`'s cosignature in a witness's 200 answer (note signature
/// lines), verifies it over `checkpoint`, and returns the line with its
/// timestamp. Lines of other keys are ignored, as tlog-witness asks.
pub(crate) fn verify_cosignatures(
    key: &CosignatureVerifier,
    checkpoint: &HeadsCheckpoint,
    answer: &str,
) -> Result<(String, u64), String> {
    // The answer's lines appended to the bare checkpoint make a note that
    // the signed-note parser checks line by line.
    let note = Note::parse(format!("{}\n{answer}", checkpoint.text).as_bytes())
        .map_err(|e| format!("the answer is not note signature lines: {e}"))?;
    // Every line by the key must verify (c2sp.org/signed-note: a failing
    // signature from a known key rejects the note); the last one is kept.
    let mut verified = None;
    for signature in note.signatures.iter().filter(|s| key.is_mine(s)) {
        let time = key
            .verify(&checkpoint.text, signature)
            .map_err(|e| format!("its cosignature does not verify: {e}"))?;
        verified = Some((signature.to_line(), time));
    }
    verified.ok_or_else(|| format!("no cosignature by the witness key {}", key.to_vkey()))
}

/// The cosignature key of a witness: from `[[witnesses]]`, or the peer's
/// `witnessKey` as its pinned instance document binds it.
pub(crate) async fn witness_key(
    fed: &Federation,
    source: &KeySource,
) -> Result<CosignatureVerifier, String> {
    match source {
        KeySource::Fixed(vkey) => CosignatureVerifier::parse(vkey).map_err(|e| e.to_string()),
        KeySource::Peer { instance_id } => {
            let id = instance_id.clone();
            let peer = fed
                .store
                .run(move |s| s.peers().get(&id))
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no peer {instance_id:?}"))?;
            let doc = super::peer_logs::instance_document(fed, &peer).await?;
            logbook_federation::peer_keys::peer_witness_key(&peer, &doc).map_err(|e| e.to_string())
        }
    }
}
