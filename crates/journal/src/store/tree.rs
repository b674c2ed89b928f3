//! Each plan is a transparency log: an RFC 9162 Merkle tree whose leaf `i`
//! is the event with seq `i + 1` (entry bytes: [`crate::chain::log_entry`]).
//!
//! Table:
//! - `tree_hashes`: plan id (16) ‖ completing leaf index (u64) ‖ level (u8) → SHA-256
//!
//! Invariant: for a plan whose head is seq `n`, every perfect-subtree hash
//! of the first `n` leaves (`logbook_tlog::merkle`) is in the table or
//! computable from the leaves buffered in the plan's head row
//! ([`super::head`]), written in the transaction of the event that
//! completes it. A root, an inclusion proof or a consistency proof at any
//! size costs O(log n) reads; nothing rescans a plan. Stores written
//! before trees existed gain theirs in a one-time pass at open
//! ([`super::tree_build`]).

use logbook_tlog::merkle::{self, Hash, NodeId, ProofRequestError};
use redb::{ReadableTable, TableDefinition};
use uuid::Uuid;

use super::head::{HeadRow, TreeReader, TreeTail};
use super::{HEADS, PlanHead, Store, StoreError};

pub(super) type TreeKey = [u8; 25];

pub(super) const TREE_HASHES: TableDefinition<&TreeKey, &[u8; 32]> =
    TableDefinition::new("tree_hashes");

/// The key of a stored hash: plan ‖ the leaf index that completed it ‖
/// level. The hashes one append stores are adjacent, and appends follow
/// each other, so an append touches one leaf page of the table, not one
/// per level.
pub(super) fn tree_key(plan: &Uuid, node: NodeId) -> TreeKey {
    // Node (level, index) covers leaves [index << level, (index + 1) << level).
    let completed_by = ((node.index.wrapping_add(1)) << node.level).wrapping_sub(1);
    let mut key = [0u8; 25];
    key[..16].copy_from_slice(plan.as_bytes());
    key[16..24].copy_from_slice(&completed_by.to_be_bytes());
    key[24] = node.level;
    key
}

/// One stored hash of `plan`, from any table handle (a write transaction's
/// included, which sees its own earlier writes).
pub(super) fn read_node(
    table: &impl ReadableTable<&'static TreeKey, &'static [u8; 32]>,
    plan: &Uuid,
    node: NodeId,
) -> Result<Hash, StoreError> {
    table
        .get(&tree_key(plan, node))?
        .map(|v| *v.value())
        .ok_or_else(|| {
            StoreError(format!(
                "tree of plan {plan} lacks the hash at level {} index {}",
                node.level, node.index
            ))
        })
}

/// Whether the first `leaves` leaves of `plan` are in the tree: its last
/// leaf is stored (trees grow with their events, in one transaction).
pub(super) fn has_leaf(
    table: &redb::Table<'_, &'static TreeKey, &'static [u8; 32]>,
    plan: &Uuid,
    leaves: u64,
) -> Result<bool, StoreError> {
    Ok(leaves == 0
        || table
            .get(&tree_key(plan, NodeId::new(0, leaves - 1)))?
            .is_some())
}

/// Stores leaf `n` of `plan` and the hashes it completes, reading their
/// left siblings from the table (which must hold every earlier hash).
pub(super) fn store_hashes(
    table: &mut redb::Table<'_, &'static TreeKey, &'static [u8; 32]>,
    plan: &Uuid,
    n: u64,
    leaf: Hash,
) -> Result<(), StoreError> {
    let new = merkle::hashes_to_store(n, leaf, &mut |node| read_node(&*table, plan, node))?;
    for (node, hash) in new {
        table.insert(&tree_key(plan, node), &hash)?;
    }
    Ok(())
}

/// The root of `plan`'s tree at `size`, read through a write transaction's
/// table and the plan's head row.
pub(super) fn root_in(
    table: &redb::Table<'_, &'static TreeKey, &'static [u8; 32]>,
    plan: &Uuid,
    tail: &TreeTail,
    size: u64,
) -> Result<Hash, StoreError> {
    let reader = TreeReader { table, plan, tail };
    merkle::root(size, &mut |node| reader.read(node))
}

/// The head row of `plan` in a read snapshot (a missing plan: size 0).
fn head_row(txn: &redb::ReadTransaction, plan: &Uuid) -> Result<HeadRow, StoreError> {
    Ok(txn
        .open_table(HEADS)?
        .get(&plan.into_bytes())?
        .map(|v| HeadRow::decode(v.value()))
        .transpose()?
        .unwrap_or(HeadRow {
            head: PlanHead {
                last_seq: 0,
                last_signature: [0; 32],
                count: 0,
                first_at: 0,
                last_at: 0,
            },
            tail: HeadRow::empty_tail(),
        }))
}

/// Removes every stored hash of `plan` (its deletion).
pub(super) fn remove_plan(
    table: &mut redb::Table<'_, &'static TreeKey, &'static [u8; 32]>,
    plan: &Uuid,
) -> Result<(), StoreError> {
    let mut from = [0u8; 25];
    from[..16].copy_from_slice(plan.as_bytes());
    let mut to = [0xffu8; 25];
    to[..16].copy_from_slice(plan.as_bytes());
    table.retain_in::<&TreeKey, _>(&from..=&to, |_, _| false)?;
    Ok(())
}

/// Why a proof was not made: the arguments are outside the plan's tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeRequestError {
    /// The requested size is beyond the plan's head.
    BeyondHead { size: u64, head: u64 },
    /// A leaf index at or beyond the tree size, or `from > to`.
    Proof(ProofRequestError),
}

impl std::fmt::Display for TreeRequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TreeRequestError::BeyondHead { size, head } => {
                write!(f, "tree size {size} is beyond the log's head ({head})")
            }
            TreeRequestError::Proof(ProofRequestError::IndexOutOfRange { index, size }) => {
                write!(f, "seq {} is beyond tree size {size}", index + 1)
            }
            TreeRequestError::Proof(ProofRequestError::FromAfterTo { from, to }) => {
                write!(f, "from ({from}) is after to ({to})")
            }
        }
    }
}

impl std::error::Error for TreeRequestError {}

/// Which log a tree is: a plan's, or the instance's heads log
/// (`heads_log.rs`), whose hashes live in a table of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogId {
    Plan(Uuid),
    Heads,
}

impl LogId {
    /// The hash table and the id its keys start with.
    pub(super) fn hashes(
        self,
    ) -> (
        TableDefinition<'static, &'static TreeKey, &'static [u8; 32]>,
        Uuid,
    ) {
        match self {
            LogId::Plan(plan) => (TREE_HASHES, plan),
            LogId::Heads => (super::heads_log::HEADS_LOG_HASHES, Uuid::nil()),
        }
    }

    /// The log's size (its leaf count) in `txn`, and where the hashes
    /// not in its table are: a plan's last leaves ride in its head row
    /// (`head.rs`); the heads log has no such buffer, all of it is in
    /// its table.
    pub(super) fn snapshot(
        self,
        txn: &redb::ReadTransaction,
    ) -> Result<(u64, TreeTail), StoreError> {
        match self {
            LogId::Plan(plan) => {
                let row = head_row(txn, &plan)?;
                Ok((row.head.last_seq, row.tail))
            }
            LogId::Heads => {
                let size =
                    super::heads_log::size(&txn.open_table(super::heads_log::HEADS_LOG_ENTRIES)?)?;
                Ok((size, TreeTail::InTable))
            }
        }
    }
}

/// A log's tree, read from one snapshot: `store.tree(&plan)`,
/// `store.heads_tree()`.
pub struct Tree<'a> {
    pub(super) store: &'a Store,
    pub(super) log: LogId,
}

impl Store {
    /// The Merkle tree of `plan`'s log.
    pub fn tree(&self, plan: &Uuid) -> Tree<'_> {
        self.log_tree(LogId::Plan(*plan))
    }

    /// The Merkle tree of `log`.
    pub fn log_tree(&self, log: LogId) -> Tree<'_> {
        Tree { store: self, log }
    }
}

impl Tree<'_> {
    /// Runs `f` over one read snapshot with the plan's head seq (its tree
    /// size) and a hash reader, after checking `size <= head`.
    fn read<T>(
        &self,
        size: Option<u64>,
        f: impl FnOnce(u64, &mut dyn FnMut(NodeId) -> Result<Hash, StoreError>) -> Result<T, StoreError>,
    ) -> Result<Result<T, TreeRequestError>, StoreError> {
        let txn = self.store.db.begin_read()?;
        let (head, tail) = self.log.snapshot(&txn)?;
        let size = size.unwrap_or(head);
        if size > head {
            return Ok(Err(TreeRequestError::BeyondHead { size, head }));
        }
        let (hashes, id) = self.log.hashes();
        let table = txn.open_table(hashes)?;
        let reader = TreeReader {
            table: &table,
            plan: &id,
            tail: &tail,
        };
        let mut read = |node| reader.read(node);
        f(size, &mut read).map(Ok)
    }

    /// The tree size (the head seq) and root at `size`, or at the head.
    pub fn root(
        &self,
        size: Option<u64>,
    ) -> Result<Result<(u64, Hash), TreeRequestError>, StoreError> {
        self.read(size, |size, read| {
            Ok((size, merkle::root(size, &mut &mut *read)?))
        })
    }

    /// The leaf hash of `seq`, an RFC 9162 inclusion proof of it in the tree
    /// of `size` (default: the head) leaves, that size and its root.
    pub fn inclusion(
        &self,
        seq: u64,
        size: Option<u64>,
    ) -> Result<Result<Inclusion, TreeRequestError>, StoreError> {
        let outcome = self.read(size, |size, read| {
            let mut reader = read;
            let index = seq.saturating_sub(1);
            let proof = match merkle::inclusion_proof(index, size, &mut reader)? {
                Ok(proof) => proof,
                Err(e) => return Ok(Err(TreeRequestError::Proof(e))),
            };
            let leaf = reader(NodeId::new(0, index))?;
            let root = merkle::root(size, &mut reader)?;
            Ok(Ok(Inclusion {
                size,
                leaf,
                proof,
                root,
            }))
        })?;
        Ok(outcome.and_then(|inner| inner))
    }

    /// An RFC 9162 consistency proof from `from` to `to` leaves, with both roots.
    pub fn consistency(
        &self,
        from: u64,
        to: u64,
    ) -> Result<Result<Consistency, TreeRequestError>, StoreError> {
        let outcome = self.read(Some(to), |to, read| {
            let mut reader = read;
            let proof = match merkle::consistency_proof(from, to, &mut reader)? {
                Ok(proof) => proof,
                Err(e) => return Ok(Err(TreeRequestError::Proof(e))),
            };
            Ok(Ok(Consistency {
                from_root: merkle::root(from, &mut reader)?,
                to_root: merkle::root(to, &mut reader)?,
                proof,
            }))
        })?;
        Ok(outcome.and_then(|inner| inner))
    }

    /// The stored hashes at `level` with indexes `[from, from + count)`,
    /// all of which must be complete in the current tree: a hash tile.
    pub fn hashes(&self, level: u8, from: u64, count: u64) -> Result<Vec<Hash>, StoreError> {
        let txn = self.store.db.begin_read()?;
        let (_, tail) = self.log.snapshot(&txn)?;
        let (hashes, id) = self.log.hashes();
        let table = txn.open_table(hashes)?;
        let reader = TreeReader {
            table: &table,
            plan: &id,
            tail: &tail,
        };
        (from..from.saturating_add(count))
            .map(|index| reader.read(NodeId::new(level, index)))
            .collect()
    }
}

/// An inclusion proof with what it is checked against.
#[derive(Debug, Clone)]
pub struct Inclusion {
    pub size: u64,
    pub leaf: Hash,
    pub proof: Vec<Hash>,
    pub root: Hash,
}

/// A consistency proof with both roots.
#[derive(Debug, Clone)]
pub struct Consistency {
    pub from_root: Hash,
    pub to_root: Hash,
    pub proof: Vec<Hash>,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use logbook_tlog::merkle::{verify_consistency, verify_inclusion};
    use logbook_tlog::tile::TilePath;

    use super::*;
    use crate::chain::{CanonicalPayload, log_entry};
    use crate::keys::Keyring;
    use crate::store::{AppendRequest, TileError};

    /// RFC 9162 MTH over the entries, computed from scratch.
    fn reference_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => merkle::empty_root(),
            1 => leaves[0],
            n => {
                let k = 1 << (usize::BITS - 1 - (n - 1).leading_zeros());
                merkle::node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    async fn filled(dir: &std::path::Path, plan: Uuid, n: u64) -> (Store, super::super::Writer) {
        let keyring = Arc::new(Keyring::from_secret(b"tree".to_vec()));
        let fanout = crate::fanout::fanout();
        let (store, writer) = Store::open(&dir.join("j.redb"), keyring, fanout).unwrap();
        for i in 0..n {
            store
                .append(AppendRequest {
                    plan_id: plan,
                    event_type: "step.done".into(),
                    actor: None,
                    payload: CanonicalPayload::new(&serde_json::json!({ "i": i })),
                    expected_seq: None,
                    idempotency: None,
                })
                .await
                .unwrap();
        }
        (store, writer)
    }

    fn leaves(store: &Store, plan: &Uuid) -> Vec<Hash> {
        store
            .plan_events_after(plan, 0, 10_000)
            .unwrap()
            .iter()
            .map(|e| merkle::leaf_hash(log_entry(e).as_bytes()))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn roots_and_proofs_match_the_definition_across_tile_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let plan = Uuid::new_v4();
        let (store, writer) = filled(dir.path(), plan, 300).await;
        let leaves = leaves(&store, &plan);
        let tree = store.tree(&plan);
        for size in [1, 2, 3, 7, 8, 9, 255, 256, 257, 299, 300] {
            let (got, root) = tree.root(Some(size)).unwrap().unwrap();
            assert_eq!(
                (got, root),
                (size, reference_root(&leaves[..size as usize]))
            );
            for seq in [1, size / 2 + 1, size] {
                let p = tree.inclusion(seq, Some(size)).unwrap().unwrap();
                assert_eq!(p.leaf, leaves[seq as usize - 1]);
                assert!(verify_inclusion(seq - 1, size, &p.leaf, &p.proof, &root));
            }
            for from in [0, 1, size / 2, size] {
                let c = tree.consistency(from, size).unwrap().unwrap();
                assert_eq!(c.to_root, root);
                assert!(verify_consistency(
                    from,
                    size,
                    &c.from_root,
                    &root,
                    &c.proof
                ));
            }
        }
        assert_eq!(tree.root(None).unwrap().unwrap().0, 300);
        assert_eq!(
            tree.root(Some(301)).unwrap().unwrap_err(),
            TreeRequestError::BeyondHead {
                size: 301,
                head: 300
            }
        );
        assert!(matches!(
            tree.inclusion(11, Some(10)).unwrap(),
            Err(TreeRequestError::Proof(
                ProofRequestError::IndexOutOfRange { .. }
            ))
        ));
        assert!(matches!(
            tree.consistency(11, 10).unwrap(),
            Err(TreeRequestError::Proof(
                ProofRequestError::FromAfterTo { .. }
            ))
        ));
        // A tile: the 256 leaf hashes of tile 0 at level 0.
        assert_eq!(tree.hashes(0, 0, 256).unwrap(), leaves[..256]);
        tokio::task::spawn_blocking(move || writer.shutdown())
            .await
            .unwrap();
    }

    /// Hash tiles and entry bundles, full and partial, from one snapshot;
    /// nothing beyond the head.
    #[tokio::test(flavor = "multi_thread")]
    async fn tiles_hold_the_stored_hashes_and_the_entries() {
        let dir = tempfile::tempdir().unwrap();
        let plan = Uuid::new_v4();
        let (store, writer) = filled(dir.path(), plan, 257).await;
        let leaves = leaves(&store, &plan);
        let events = store.plan_events_after(&plan, 0, 1000).unwrap();
        let tree = store.tree(&plan);
        let tile = |path: &str| tree.tile(&TilePath::parse(path).unwrap()).unwrap();
        assert_eq!(tile("0/000").unwrap(), leaves[..256].concat());
        assert_eq!(tile("0/001.p/1").unwrap(), leaves[256..].concat());
        assert_eq!(tile("0/000.p/3").unwrap(), leaves[..3].concat());
        let level8 = reference_root(&leaves[..256]);
        assert_eq!(tile("1/000.p/1").unwrap(), level8.to_vec());
        let mut bundle = Vec::new();
        for event in &events[256..] {
            let entry = log_entry(event);
            bundle.extend_from_slice(&(entry.len() as u16).to_be_bytes());
            bundle.extend_from_slice(entry.as_bytes());
        }
        assert_eq!(tile("entries/001.p/1").unwrap(), bundle);
        assert_eq!(tile("entries/000").unwrap().len(), {
            let sum: usize = events[..256].iter().map(|e| 2 + log_entry(e).len()).sum();
            sum
        });
        for beyond in [
            "0/001",
            "0/001.p/2",
            "1/000",
            "1/000.p/2",
            "entries/001.p/2",
            "2/000.p/1",
        ] {
            assert_eq!(tile(beyond), Err(TileError::NotInTree), "{beyond}");
        }
        let unknown = store.tree(&Uuid::new_v4());
        let path = TilePath::parse("0/000.p/1").unwrap();
        assert_eq!(unknown.tile(&path).unwrap(), Err(TileError::NotInTree));
        tokio::task::spawn_blocking(move || writer.shutdown())
            .await
            .unwrap();
    }

    /// Makes `plan` look as a release before trees wrote it: no tree rows,
    /// a version-1 head row.
    fn written_before_trees(store: &Store, plan: &Uuid) {
        let txn = store.db.begin_write().unwrap();
        remove_plan(&mut txn.open_table(TREE_HASHES).unwrap(), plan).unwrap();
        let mut heads = txn.open_table(HEADS).unwrap();
        let head = heads
            .get(&plan.into_bytes())
            .unwrap()
            .map(|v| HeadRow::decode(v.value()).unwrap().head)
            .unwrap();
        let old = HeadRow {
            head,
            tail: TreeTail::InTable,
        };
        heads
            .insert(&plan.into_bytes(), old.encode().as_slice())
            .unwrap();
        drop(heads);
        txn.commit().unwrap();
    }

    /// A store written before trees existed (here: its tree rows removed)
    /// gains the same tree at the next open.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_upgrade_pass_builds_missing_trees() {
        let dir = tempfile::tempdir().unwrap();
        let plan = Uuid::new_v4();
        let (store, writer) = filled(dir.path(), plan, 40).await;
        let before = store.tree(&plan).root(None).unwrap().unwrap();
        written_before_trees(&store, &plan);
        assert!(
            store.tree(&plan).root(None).is_err(),
            "the tree rows are gone"
        );
        drop(store);
        tokio::task::spawn_blocking(move || writer.shutdown())
            .await
            .unwrap();

        let keyring = Arc::new(Keyring::from_secret(b"tree".to_vec()));
        let fanout = crate::fanout::fanout();
        let (store, writer) = Store::open(&dir.path().join("j.redb"), keyring, fanout).unwrap();
        assert_eq!(store.tree(&plan).root(None).unwrap().unwrap(), before);
        assert_eq!(before.1, reference_root(&leaves(&store, &plan)));
        // Appends after the pass buffer from leaf 40, not a multiple of
        // the flush size, and flush across it.
        for i in 0..40 {
            store
                .append(AppendRequest {
                    plan_id: plan,
                    event_type: "step.done".into(),
                    actor: None,
                    payload: CanonicalPayload::new(&serde_json::json!({ "i": i })),
                    expected_seq: None,
                    idempotency: None,
                })
                .await
                .unwrap();
        }
        let leaves = leaves(&store, &plan);
        for size in [40, 41, 71, 72, 73, 80] {
            assert_eq!(
                store.tree(&plan).root(Some(size)).unwrap().unwrap().1,
                reference_root(&leaves[..size as usize])
            );
        }
        tokio::task::spawn_blocking(move || writer.shutdown())
            .await
            .unwrap();
    }

    /// A damaged store (an event missing, no tree yet) still opens: the
    /// damaged plan's tree stops before the gap and its appends are
    /// refused alone, while other plans append as usual.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_gap_found_by_the_upgrade_pass_stops_only_its_plan() {
        let dir = tempfile::tempdir().unwrap();
        let (plan, other) = (Uuid::new_v4(), Uuid::new_v4());
        let (store, writer) = filled(dir.path(), plan, 5).await;
        store.remove_event_unchecked(&plan, 3).unwrap();
        written_before_trees(&store, &plan);
        drop(store);
        tokio::task::spawn_blocking(move || writer.shutdown())
            .await
            .unwrap();

        let keyring = Arc::new(Keyring::from_secret(b"tree".to_vec()));
        let fanout = crate::fanout::fanout();
        let (store, writer) = Store::open(&dir.path().join("j.redb"), keyring, fanout).unwrap();
        let request = |plan| AppendRequest {
            plan_id: plan,
            event_type: "step.done".into(),
            actor: None,
            payload: CanonicalPayload::new(&serde_json::json!({})),
            expected_seq: None,
            idempotency: None,
        };
        assert!(matches!(
            store.append(request(plan)).await,
            Err(crate::store::AppendError::Storage(_))
        ));
        assert_eq!(store.append(request(other)).await.unwrap().event.seq, 1);
        assert!(
            store.tree(&plan).root(Some(2)).unwrap().is_ok(),
            "the leaves before the gap"
        );
        tokio::task::spawn_blocking(move || writer.shutdown())
            .await
            .unwrap();
    }
}
