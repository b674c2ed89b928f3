//! What the log key has signed, and the witnesses' cosignatures.
//!
//! A log must never sign two inconsistent checkpoints under one origin
//! (C2SP tlog-checkpoint). Before the daemon signs a checkpoint, plan's or
//! heads log's, [`Store::check_signing`] compares it with the last one
//! signed for that origin: the tree must still have the last signed root
//! at its size (so the new checkpoint extends it, or is a prefix of it).
//! A store rolled back or edited under a kept `signed_checkpoints` row is
//! refused instead of signed.
//!
//! Tables:
//! - `signed_checkpoints`: log (0 = heads log, 1 ‖ plan id) → largest
//!   (size, root) signed
//! - `heads_cosignatures`: heads log size → root and the cosignature lines
//!   collected for that checkpoint (a later step's sender adds them)

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use logbook_tlog::merkle::Hash;
use logbook_tlog::note::valid_key_name;
use redb::{Durability, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use super::tree::LogId;
use super::{Store, StoreError, decode, encode};
use crate::checkpoint::CheckpointSigner;

pub(super) const SIGNED_CHECKPOINTS: TableDefinition<&[u8; 17], &[u8]> =
    TableDefinition::new("signed_checkpoints");
pub(super) const HEADS_COSIGNATURES: TableDefinition<u64, &[u8]> =
    TableDefinition::new("heads_cosignatures");

/// Cosignature lines kept per checkpoint (one per witness key).
pub const MAX_COSIGNATURES: usize = 32;
/// Cosigned heads checkpoints kept: the newest include every older entry,
/// so older ones are only history.
pub const COSIGNED_KEPT: usize = 16;
/// Longest cosignature line taken (cosignature/v1 lines are ~130 bytes).
const MAX_LINE: usize = 512;

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct SignedRecord {
    size: u64,
    root: Hash,
}

/// A heads checkpoint with the cosignature lines collected for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cosigned {
    pub size: u64,
    pub root: Hash,
    /// Signature lines (`— name base64`), one per witness key.
    pub lines: Vec<String>,
}

/// Why a checkpoint was not signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigningRefused {
    pub log: LogId,
    /// The largest checkpoint signed before for this origin.
    pub last_size: u64,
    /// The one refused.
    pub size: u64,
}

impl std::fmt::Display for SigningRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "refusing to sign a checkpoint of size {} for {:?}: it is inconsistent with the checkpoint of size {} signed before (rolled back or forked store)",
            self.size, self.log, self.last_size
        )
    }
}

impl std::error::Error for SigningRefused {}

/// Why a cosignature line was not kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CosignatureRefused {
    /// Not a signature line `— name base64`.
    Malformed(String),
    /// The heads log has no checkpoint of that size and root.
    NotOurCheckpoint,
}

impl std::fmt::Display for CosignatureRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CosignatureRefused::Malformed(why) => write!(f, "malformed cosignature line: {why}"),
            CosignatureRefused::NotOurCheckpoint => {
                write!(f, "the heads log has no checkpoint of that size and root")
            }
        }
    }
}

impl std::error::Error for CosignatureRefused {}

/// A refusal to sign, loud wherever it happens: a metric and an ERROR line.
pub(super) fn refused(log: LogId, last_size: u64, size: u64) -> SigningRefused {
    logbook_base::metrics::observe_signing_refused(match log {
        LogId::Plan(_) => "plan",
        LogId::Heads => "heads",
    });
    tracing::error!(log = ?log, size, last_size, "refused to sign a checkpoint inconsistent with one signed before: the store was edited, damaged or forked in place");
    SigningRefused {
        log,
        last_size,
        size,
    }
}

/// At a plan's deletion, in its transaction and while its tree is there:
/// records the final checkpoint (`size`, `root`) as signed when it is
/// consistent with the one signed last (`root_at` gives the tree's root at
/// a size), so that the deletion's bundle may sign it once the tree is
/// gone ([`Store::check_deleted_signing`]). Left as it was otherwise (a
/// store edited in place): that bundle is then refused, and the refusal is
/// returned, for the caller to count ([`refused`]) once the deletion has
/// committed.
pub(super) fn seal_deleted(
    txn: &redb::WriteTransaction,
    plan: &uuid::Uuid,
    size: u64,
    root: Hash,
    root_at: impl FnOnce(u64) -> Result<Hash, StoreError>,
) -> Result<Option<SigningRefused>, StoreError> {
    let key = log_key(LogId::Plan(*plan));
    let mut table = txn.open_table(SIGNED_CHECKPOINTS)?;
    let last: Option<SignedRecord> = table.get(&key)?.map(|v| decode(v.value())).transpose()?;
    // A tree that cannot be read at the signed size proves nothing either
    // way: not sealed, and the deletion goes on (it must not be blocked).
    let consistent = match last {
        None => true,
        Some(last) if last.size > size => false,
        Some(last) => match root_at(last.size) {
            Ok(at) => at == last.root,
            Err(e) => {
                tracing::error!(%plan, size = last.size, error = %e, "reading a deleted plan's tree at the size signed last");
                false
            }
        },
    };
    if consistent {
        table.insert(&key, encode(&SignedRecord { size, root }).as_slice())?;
        return Ok(None);
    }
    Ok(Some(SigningRefused {
        log: LogId::Plan(*plan),
        last_size: last.map_or(0, |l| l.size),
        size,
    }))
}

fn log_key(log: LogId) -> [u8; 17] {
    let mut key = [0u8; 17];
    if let LogId::Plan(plan) = log {
        key[0] = 1;
        key[1..].copy_from_slice(plan.as_bytes());
    }
    key
}

/// The key name and key id of a signature line: one line per witness key.
fn line_key(line: &str) -> Result<(String, [u8; 4]), CosignatureRefused> {
    let bad = |why: &str| CosignatureRefused::Malformed(why.into());
    if line.len() > MAX_LINE {
        return Err(bad("longer than 512 bytes"));
    }
    let rest = line
        .strip_prefix("\u{2014} ")
        .ok_or_else(|| bad("does not start with an em dash and a space"))?;
    let (name, sig) = rest
        .split_once(' ')
        .ok_or_else(|| bad("no space between name and signature"))?;
    if !valid_key_name(name) {
        return Err(bad("invalid key name"));
    }
    let bytes = BASE64
        .decode(sig)
        .map_err(|_| bad("the signature is not base64"))?;
    if bytes.len() < 5 {
        return Err(bad("the signature is shorter than a key id"));
    }
    Ok((name.to_string(), [bytes[0], bytes[1], bytes[2], bytes[3]]))
}

impl Store {
    /// Whether signing `log`'s checkpoint of (`size`, `root`) keeps every
    /// checkpoint signed for its origin consistent; records it (with
    /// fsync) when it is the largest so far. Called before each signing.
    pub fn check_signing(
        &self,
        log: LogId,
        size: u64,
        root: Hash,
    ) -> Result<Result<(), SigningRefused>, StoreError> {
        let last: Option<SignedRecord> = {
            let txn = self.db.begin_read()?;
            txn.open_table(SIGNED_CHECKPOINTS)?
                .get(&log_key(log))?
                .map(|v| decode(v.value()))
                .transpose()?
        };
        let tree = self.log_tree(log);
        let refused = |last_size| refused(log, last_size, size);
        // The checkpoint itself must be the tree's.
        if tree.root(Some(size))?.ok() != Some((size, root)) {
            return Ok(Err(refused(last.map_or(0, |l| l.size))));
        }
        if let Some(last) = last {
            if tree.root(Some(last.size))?.ok() != Some((last.size, last.root)) {
                return Ok(Err(refused(last.size)));
            }
            if size <= last.size {
                return Ok(Ok(()));
            }
        }
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut table = txn.open_table(SIGNED_CHECKPOINTS)?;
            let stored: Option<SignedRecord> = table
                .get(&log_key(log))?
                .map(|v| decode(v.value()))
                .transpose()?;
            // A concurrent signer may have recorded a larger one already.
            if stored.is_none_or(|s| s.size < size) {
                table.insert(
                    &log_key(log),
                    encode(&SignedRecord { size, root }).as_slice(),
                )?;
            }
        }
        self.db.commit(txn)?;
        Ok(Ok(()))
    }

    /// Whether deleted `plan`'s final checkpoint (`size`, `root`) may be
    /// signed (for its deletion's bundle), its tree being gone: it must be
    /// the deletion's record, and either no checkpoint of the plan was ever
    /// signed or the last one signed is this one, which [`seal_deleted`]
    /// records when the deletion found it consistent. The reason otherwise
    /// (nothing is counted or logged per request: the deletion did that).
    pub fn check_deleted_signing(
        &self,
        plan: &uuid::Uuid,
        size: u64,
        root: Hash,
    ) -> Result<Result<(), String>, StoreError> {
        let txn = self.db.begin_read()?;
        let signed: Option<SignedRecord> = txn
            .open_table(SIGNED_CHECKPOINTS)?
            .get(&log_key(LogId::Plan(*plan)))?
            .map(|v| decode(v.value()))
            .transpose()?;
        let deleted =
            super::deleted::deleted(&txn.open_table(super::deleted::DELETED_PLANS)?, plan)?;
        if !deleted.is_some_and(|d| d.tree_size == size && d.tree_root == Some(root)) {
            return Ok(Err(format!(
                "plan {plan} has no deletion record of size {size} with that root"
            )));
        }
        Ok(match signed {
            None => Ok(()),
            Some(s) if s.size == size && s.root == root => Ok(()),
            Some(s) => Err(format!(
                "plan {plan}'s final checkpoint (size {size}) is not signed: one of size {} was signed before, and its deletion did not find the two consistent (or was made by an older build, which did not look); its tree is gone, so nothing can show it now",
                s.size
            )),
        })
    }

    /// The heads checkpoint at (`size`, `root`) signed by `signer`, with
    /// every cosignature line collected for it: what the checkpoint route
    /// serves and what a witness sender sends. Refused, loudly, when it is
    /// inconsistent with one signed before ([`Store::check_signing`]).
    pub fn heads_checkpoint(
        &self,
        signer: &CheckpointSigner,
        size: u64,
        root: Hash,
    ) -> Result<Result<String, SigningRefused>, StoreError> {
        if let Err(refused) = self.check_signing(LogId::Heads, size, root)? {
            return Ok(Err(refused));
        }
        let mut note = signer
            .sign_heads(size, root)
            .map_err(|e| StoreError(format!("signing the heads checkpoint: {e}")))?
            .to_text();
        for line in self.heads_cosignatures(size, root)? {
            note.push_str(&line);
            note.push('\n');
        }
        Ok(Ok(note))
    }

    /// Keeps a witness's cosignature `line` (`— name base64`, a trailing
    /// newline allowed) of the heads checkpoint
    /// (`size`, `root`), replacing an older line of the same witness key;
    /// keeps the newest [`COSIGNED_KEPT`] checkpoints. The caller verified
    /// the cosignature; this checks only that the checkpoint is ours.
    pub fn add_heads_cosignature(
        &self,
        size: u64,
        root: Hash,
        line: &str,
    ) -> Result<Result<(), CosignatureRefused>, StoreError> {
        // As `NoteSignature::to_line` writes it, or without its newline.
        let line = line.strip_suffix('\n').unwrap_or(line);
        let key = match line_key(line) {
            Ok(key) => key,
            Err(e) => return Ok(Err(e)),
        };
        if self.heads_tree().root(Some(size))?.ok() != Some((size, root)) {
            return Ok(Err(CosignatureRefused::NotOurCheckpoint));
        }
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut table = txn.open_table(HEADS_COSIGNATURES)?;
            let fresh = Cosigned {
                size,
                root,
                lines: Vec::new(),
            };
            // Lines kept for another root at this size cosign a history the
            // tree no longer has (a store edited or restored in place; the
            // root was just checked against the tree): they must not be
            // served with this checkpoint.
            let mut cosigned: Cosigned = table
                .get(size)?
                .map(|v| decode::<Cosigned>(v.value()))
                .transpose()?
                .filter(|c| c.root == root)
                .unwrap_or(fresh);
            cosigned
                .lines
                .retain(|l| line_key(l).map_or(true, |k| k != key));
            if cosigned.lines.len() >= MAX_COSIGNATURES {
                cosigned.lines.remove(0);
            }
            cosigned.lines.push(line.to_string());
            table.insert(size, encode(&cosigned).as_slice())?;
            let count = table.len()? as usize;
            if count > COSIGNED_KEPT {
                let old: Vec<u64> = table
                    .iter()?
                    .take(count - COSIGNED_KEPT)
                    .map(|row| row.map(|(k, _)| k.value()))
                    .collect::<Result<_, _>>()?;
                for size in old {
                    table.remove(size)?;
                }
            }
        }
        self.db.commit(txn)?;
        Ok(Ok(()))
    }

    /// The cosignature lines collected for the heads checkpoint (`size`, `root`).
    pub fn heads_cosignatures(&self, size: u64, root: Hash) -> Result<Vec<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let found: Option<Cosigned> = txn
            .open_table(HEADS_COSIGNATURES)?
            .get(size)?
            .map(|v| decode(v.value()))
            .transpose()?;
        Ok(found
            .filter(|c| c.root == root)
            .map(|c| c.lines)
            .unwrap_or_default())
    }

    /// The heads checkpoint a witnessed bundle proves an entry at `index`
    /// against: of those kept that hold the entry (larger than `index`),
    /// the newest cosigned by at least `quorum` witness keys, else the
    /// newest with any cosignature. Witnesses that cosign at different
    /// paces leave the newest one short of a quorum for a while; a reader
    /// asking for that quorum is better served by an older one that has it.
    /// Rows for a root the heads tree no longer has at that size (a store
    /// restored in place) prove nothing about this history: skipped.
    /// Reads at most [`COSIGNED_KEPT`] rows.
    pub fn cosigned_holding(
        &self,
        index: u64,
        quorum: usize,
    ) -> Result<Option<Cosigned>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(HEADS_COSIGNATURES)?;
        let tree = self.heads_tree();
        let mut newest = None;
        for row in table.range(index.saturating_add(1)..)?.rev() {
            let cosigned: Cosigned = decode(row?.1.value())?;
            if tree.root(Some(cosigned.size))?.ok() != Some((cosigned.size, cosigned.root)) {
                continue;
            }
            if cosigned.lines.len() >= quorum {
                return Ok(Some(cosigned));
            }
            newest.get_or_insert(cosigned);
        }
        Ok(newest)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use logbook_tlog::merkle::NodeId;
    use uuid::Uuid;

    use super::*;
    use crate::chain::CanonicalPayload;
    use crate::keys::Keyring;
    use crate::store::AppendRequest;
    use crate::store::tree::{TREE_HASHES, tree_key};

    fn open(dir: &tempfile::TempDir) -> (Store, crate::store::Writer) {
        let keyring = Arc::new(Keyring::from_secret(b"signed".to_vec()));
        Store::open(&dir.path().join("j.redb"), keyring, crate::fanout::fanout()).unwrap()
    }

    fn step(plan_id: Uuid, i: u64) -> AppendRequest {
        AppendRequest {
            plan_id,
            event_type: "step.done".into(),
            actor: None,
            payload: CanonicalPayload::new(&serde_json::json!({ "i": i })),
            expected_seq: None,
            idempotency: None,
        }
    }

    /// A deleted plan's final checkpoint may be signed (for its deletion's
    /// bundle) only as the deletion recorded it, and only if its tree was
    /// consistent with what was signed before: a store edited in place
    /// before the deletion gets no second, inconsistent checkpoint.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_deleted_plan_s_final_checkpoint_is_signed_only_if_it_was_consistent() {
        let dir = tempfile::tempdir().unwrap();
        let (store, writer) = open(&dir);
        let (honest, edited) = (Uuid::new_v4(), Uuid::new_v4());
        for plan in [honest, edited] {
            for i in 0..=crate::store::head::FLUSH_LEAVES {
                store.append(step(plan, i as u64)).await.unwrap();
            }
            let r5 = store.tree(&plan).root(Some(5)).unwrap().unwrap().1;
            assert_eq!(
                store.check_signing(LogId::Plan(plan), 5, r5).unwrap(),
                Ok(())
            );
        }
        // `edited`'s leaves 0..4 changed in place after size 5 was signed.
        let txn = store.db.begin_write().unwrap();
        txn.open_table(TREE_HASHES)
            .unwrap()
            .insert(&tree_key(&edited, NodeId::new(2, 0)), &[7; 32])
            .unwrap();
        txn.commit().unwrap();
        for plan in [honest, edited] {
            let (size, root) = store.tree(&plan).root(None).unwrap().unwrap();
            store
                .delete_plan(plan, serde_json::json!("test"))
                .await
                .unwrap();
            let allowed = store.check_deleted_signing(&plan, size, root).unwrap();
            assert_eq!(allowed.is_ok(), plan == honest, "{allowed:?}");
            // Never another size or root, nor a plan never deleted.
            assert!(
                store
                    .check_deleted_signing(&plan, size - 1, root)
                    .unwrap()
                    .is_err()
            );
            assert!(
                store
                    .check_deleted_signing(&plan, size, [0; 32])
                    .unwrap()
                    .is_err()
            );
        }
        let never = Uuid::new_v4();
        assert!(
            store
                .check_deleted_signing(&never, 0, [0; 32])
                .unwrap()
                .is_err()
        );
        // A plan no checkpoint was ever signed for (or deleted by an older
        // build before any was): its final one contradicts nothing signed.
        let unsigned = Uuid::new_v4();
        store.append(step(unsigned, 0)).await.unwrap();
        let (size, root) = store.tree(&unsigned).root(None).unwrap().unwrap();
        store
            .delete_plan(unsigned, serde_json::json!("test"))
            .await
            .unwrap();
        assert_eq!(
            store.check_deleted_signing(&unsigned, size, root).unwrap(),
            Ok(())
        );
        // As an older build left it: no row sealed at the deletion.
        let txn = store.db.begin_write().unwrap();
        txn.open_table(SIGNED_CHECKPOINTS)
            .unwrap()
            .remove(&log_key(LogId::Plan(unsigned)))
            .unwrap();
        txn.commit().unwrap();
        assert_eq!(
            store.check_deleted_signing(&unsigned, size, root).unwrap(),
            Ok(())
        );
        drop(writer);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_checkpoint_inconsistent_with_one_signed_before_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (store, writer) = open(&dir);
        let plan = Uuid::new_v4();
        // More than a head row buffers (`head.rs`): the first leaves' hashes
        // are in `tree_hashes`, where the edit below can reach them.
        for i in 0..=crate::store::head::FLUSH_LEAVES {
            store.append(step(plan, i as u64)).await.unwrap();
        }
        let log = LogId::Plan(plan);
        let root_at = |size| store.tree(&plan).root(Some(size)).unwrap().unwrap().1;
        let (r3, r5) = (root_at(3), root_at(5));
        assert_eq!(store.check_signing(log, 5, r5).unwrap(), Ok(()));
        // A prefix of what was signed, and the same one again, are consistent.
        assert_eq!(store.check_signing(log, 3, r3).unwrap(), Ok(()));
        assert_eq!(store.check_signing(log, 5, r5).unwrap(), Ok(()));
        // A root that is not the tree's is never signed.
        assert!(store.check_signing(log, 5, [0; 32]).unwrap().is_err());

        // The store edited in place: the hash of leaves 0..4 changed, so the tree no longer
        // has the signed root at size 5. Nothing is signed any more.
        let txn = store.db.begin_write().unwrap();
        txn.open_table(TREE_HASHES)
            .unwrap()
            .insert(&tree_key(&plan, NodeId::new(2, 0)), &[7; 32])
            .unwrap();
        txn.commit().unwrap();
        let forged = store.tree(&plan).root(Some(4)).unwrap().unwrap().1;
        let refused = store.check_signing(log, 4, forged).unwrap().unwrap_err();
        assert_eq!((refused.last_size, refused.size), (5, 4));

        // The heads log: a signed size beyond the log (a rollback) refuses.
        assert_eq!(store.append_heads(10).unwrap(), 1);
        assert_eq!(store.append_heads(10).unwrap(), 0, "nothing moved since");
        let heads = store.heads_tree().root(None).unwrap().unwrap();
        assert_eq!(heads.0, 1);
        assert_eq!(
            store.check_signing(LogId::Heads, heads.0, heads.1).unwrap(),
            Ok(())
        );
        let txn = store.db.begin_write().unwrap();
        let record = encode(&SignedRecord {
            size: 9,
            root: [1; 32],
        });
        txn.open_table(SIGNED_CHECKPOINTS)
            .unwrap()
            .insert(&log_key(LogId::Heads), record.as_slice())
            .unwrap();
        txn.commit().unwrap();
        assert!(
            store
                .check_signing(LogId::Heads, heads.0, heads.1)
                .unwrap()
                .is_err()
        );
        drop(store);
        tokio::task::spawn_blocking(move || writer.shutdown())
            .await
            .unwrap();
    }

    /// A bundle's heads checkpoint: the newest holding the entry with a
    /// quorum of cosignatures, else the newest holding it with any.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_bundle_is_proved_against_the_newest_checkpoint_with_a_quorum() {
        use logbook_tlog::cosignature::Cosigner;
        let dir = tempfile::tempdir().unwrap();
        let (store, writer) = open(&dir);
        // Heads checkpoints at sizes 1, 2 and 3: one plan appended to each time.
        let mut heads = Vec::new();
        for i in 0..3 {
            store.append(step(Uuid::new_v4(), i)).await.unwrap();
            assert_eq!(store.append_heads(100).unwrap(), 1);
            heads.push(store.heads_tree().root(None).unwrap().unwrap());
        }
        let witnesses: Vec<Cosigner> = [1u8, 2]
            .iter()
            .map(|&i| Cosigner::new(&format!("w{i}.example/w"), &[i; 32]).unwrap())
            .collect();
        let cosign = |(size, root): (u64, Hash), by: &[&Cosigner]| {
            for w in by {
                let line = w.cosign("any text\n", 1).unwrap().to_line();
                assert_eq!(
                    store.add_heads_cosignature(size, root, &line).unwrap(),
                    Ok(())
                );
            }
        };
        // Size 2 by both witnesses, size 3 by one.
        cosign(heads[1], &[&witnesses[0], &witnesses[1]]);
        cosign(heads[2], &[&witnesses[0]]);
        let size = |found: Option<Cosigned>| found.map(|c| c.size);
        assert_eq!(size(store.cosigned_holding(0, 2).unwrap()), Some(2));
        assert_eq!(size(store.cosigned_holding(0, 1).unwrap()), Some(3));
        assert_eq!(size(store.cosigned_holding(0, 3).unwrap()), Some(3));
        // An entry at index 2 is only in size 3: short of the quorum, it
        // is the one.
        assert_eq!(size(store.cosigned_holding(2, 2).unwrap()), Some(3));
        assert_eq!(size(store.cosigned_holding(3, 1).unwrap()), None);
        // A row for a root the tree does not have at its size (a store
        // restored in place) is passed over, whatever it holds.
        let stale = Cosigned {
            size: heads[0].0,
            root: [7; 32],
            lines: vec!["a".into(), "b".into(), "c".into()],
        };
        let txn = store.db.begin_write().unwrap();
        txn.open_table(HEADS_COSIGNATURES)
            .unwrap()
            .insert(stale.size, encode(&stale).as_slice())
            .unwrap();
        txn.commit().unwrap();
        assert_eq!(size(store.cosigned_holding(0, 3).unwrap()), Some(3));
        drop(store);
        tokio::task::spawn_blocking(move || writer.shutdown())
            .await
            .unwrap();
    }
}
