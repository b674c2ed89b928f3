//! The `plan_heads` row: a [`PlanHead`] plus the tail of the plan's Merkle
//! tree that is not in `tree_hashes` yet.
//!
//! Writing each append's hashes to `tree_hashes` dirtied a second B-tree
//! per commit and cost 13–16 % of append throughput. The head row is
//! written on every append anyway, so the leaf hashes of the last
//! (fewer than [`FLUSH_LEAVES`]) appends ride along in it, and the hashes
//! they complete are written to `tree_hashes` once per [`FLUSH_LEAVES`]
//! leaves. Readers take the head row and the table from one snapshot and
//! compute a hash over the buffered leaves on demand ([`TreeReader`]).
//!
//! Row versions (the first byte):
//! - 1: [`PlanHead`] only, written before this buffer existed. Its tree is
//!   wholly in `tree_hashes`, or incomplete (a store older than trees, or a
//!   damaged one): an append checks the last leaf once, then writes 2.
//! - 2: [`PlanHead`], `flushed` (u64) and the hashes of leaves
//!   `flushed..last_seq` (a postcard sequence of 32-byte arrays). Every
//!   hash completed by a leaf below `flushed` is in `tree_hashes`.

use logbook_tlog::merkle::{self, Hash, NodeId};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::lazy_table::LazyTable;
use super::tree::{TreeKey, has_leaf, read_node, tree_key};
use super::{PlanHead, StoreError};

/// Leaves buffered in a head row before their hashes go to `tree_hashes`:
/// 32 hashes (1 KiB) keep the row small while sparing 31 of 32 appends
/// the second table.
pub(super) const FLUSH_LEAVES: usize = 32;

const HEAD_V1: u8 = 1;
const HEAD_V2: u8 = 2;

/// Where a plan's tree hashes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TreeTail {
    /// A version-1 row: every hash is in the table, as far as it goes.
    InTable,
    /// Leaves `flushed..` are buffered here; earlier ones are in the table.
    Buffered { flushed: u64, pending: Vec<Hash> },
}

/// One decoded `plan_heads` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HeadRow {
    pub(super) head: PlanHead,
    pub(super) tail: TreeTail,
}

#[derive(Serialize)]
struct V2Ref<'a> {
    head: &'a PlanHead,
    flushed: u64,
    pending: &'a [Hash],
}

#[derive(Deserialize)]
struct V2 {
    head: PlanHead,
    flushed: u64,
    pending: Vec<Hash>,
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("corrupt plan head record: {e}"))
}

impl HeadRow {
    /// A new plan's row, before its first event.
    pub(super) fn empty_tail() -> TreeTail {
        TreeTail::Buffered {
            flushed: 0,
            pending: Vec::new(),
        }
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        // postcard only fails on types it cannot represent; these are plain.
        match &self.tail {
            TreeTail::InTable => {
                let mut out = vec![HEAD_V1];
                out.extend(postcard::to_stdvec(&self.head).expect("heads always encode"));
                out
            }
            TreeTail::Buffered { flushed, pending } => {
                let row = V2Ref {
                    head: &self.head,
                    flushed: *flushed,
                    pending,
                };
                let mut out = Vec::with_capacity(80 + 32 * pending.len());
                out.push(HEAD_V2);
                out.extend(postcard::to_stdvec(&row).expect("heads always encode"));
                out
            }
        }
    }

    /// Decodes a row and checks its invariant (the buffer ends at the head
    /// and holds fewer than [`FLUSH_LEAVES`] leaves).
    pub(super) fn decode(bytes: &[u8]) -> Result<HeadRow, StoreError> {
        match bytes.split_first() {
            Some((&HEAD_V1, body)) => Ok(HeadRow {
                head: postcard::from_bytes(body).map_err(corrupt)?,
                tail: TreeTail::InTable,
            }),
            Some((&HEAD_V2, body)) => {
                let row: V2 = postcard::from_bytes(body).map_err(corrupt)?;
                if row.pending.len() >= FLUSH_LEAVES
                    || row.flushed.checked_add(row.pending.len() as u64) != Some(row.head.last_seq)
                {
                    return Err(corrupt(format!(
                        "{} buffered leaves from {} do not end at seq {}",
                        row.pending.len(),
                        row.flushed,
                        row.head.last_seq
                    )));
                }
                Ok(HeadRow {
                    head: row.head,
                    tail: TreeTail::Buffered {
                        flushed: row.flushed,
                        pending: row.pending,
                    },
                })
            }
            Some((v, _)) => Err(StoreError(format!(
                "plan head format version {v} is not known to this build (it knows {HEAD_V1} and {HEAD_V2})"
            ))),
            None => Err(StoreError("empty plan head record".into())),
        }
    }
}

impl HeadRow {
    /// Whether the plan's last leaf can be read: it is buffered, or stored
    /// (a version-1 row of a store older than trees, or a damaged store,
    /// may lack it; earlier leaves are there when the last one is).
    pub(super) fn last_leaf_readable(
        &self,
        table: &redb::Table<'_, &'static TreeKey, &'static [u8; 32]>,
        plan: &Uuid,
    ) -> Result<bool, StoreError> {
        match &self.tail {
            TreeTail::InTable => has_leaf(table, plan, self.head.last_seq),
            TreeTail::Buffered { pending, .. } if !pending.is_empty() => Ok(true),
            TreeTail::Buffered { flushed, .. } => has_leaf(table, plan, *flushed),
        }
    }
}

/// The [`PlanHead`] of a `plan_heads` row (every version).
pub(super) fn decode_head(bytes: &[u8]) -> Result<PlanHead, StoreError> {
    HeadRow::decode(bytes).map(|row| row.head)
}

/// Appends leaf `tail`'s next leaf; when the buffer is full, stores every
/// hash its leaves complete and empties it. Called by the writer in the
/// event's own transaction.
pub(super) fn push_leaf(
    table: &mut LazyTable<'_, &'static TreeKey, &'static [u8; 32]>,
    plan: &Uuid,
    tail: &mut TreeTail,
    leaf: Hash,
) -> Result<(), StoreError> {
    let TreeTail::Buffered { flushed, pending } = tail else {
        return Err(StoreError(format!(
            "invariant broken: plan {plan}'s version-1 head row was not converted before an append"
        )));
    };
    pending.push(leaf);
    if pending.len() == FLUSH_LEAVES {
        let table = table.table()?;
        let mut stored = Vec::with_capacity(2 * FLUSH_LEAVES);
        for (n, leaf) in (*flushed..).zip(pending.iter()) {
            store_hashes_after(table, plan, n, *leaf, &mut stored)?;
        }
        *flushed += FLUSH_LEAVES as u64;
        pending.clear();
    }
    Ok(())
}

/// `tree::store_hashes` for a run of consecutive leaves: `stored` holds
/// the hashes this run stored so far, and a left sibling among them is
/// taken from there instead of looked up in the table again. A flush of
/// [`FLUSH_LEAVES`] leaves reads about as many siblings, all but the last
/// few stored by the same flush.
fn store_hashes_after(
    table: &mut redb::Table<'_, &'static TreeKey, &'static [u8; 32]>,
    plan: &Uuid,
    n: u64,
    leaf: Hash,
    stored: &mut Vec<(NodeId, Hash)>,
) -> Result<(), StoreError> {
    let new = merkle::hashes_to_store(n, leaf, &mut |node| match stored
        .iter()
        .rev()
        .find(|(made, _)| *made == node)
    {
        Some((_, hash)) => Ok(*hash),
        None => read_node(&*table, plan, node),
    })?;
    for (node, hash) in new {
        table.insert(&tree_key(plan, node), &hash)?;
        stored.push((node, hash));
    }
    Ok(())
}

/// Reads a plan's tree hashes from the table and the head row's buffer of
/// one snapshot (or one write transaction).
pub(super) struct TreeReader<'a, T> {
    pub(super) table: &'a T,
    pub(super) plan: &'a Uuid,
    pub(super) tail: &'a TreeTail,
}

impl<T: ReadableTable<&'static TreeKey, &'static [u8; 32]>> TreeReader<'_, T> {
    /// The hash of `node`: stored, buffered, or computed from its children
    /// when its last leaf is buffered (at most [`FLUSH_LEAVES`] leaves and
    /// the stored siblings they need).
    pub(super) fn read(&self, node: NodeId) -> Result<Hash, StoreError> {
        let TreeTail::Buffered { flushed, pending } = self.tail else {
            return read_node(self.table, self.plan, node);
        };
        // Node (level, index) covers leaves [index << level, (index + 1) << level).
        let last_leaf = (node.index.wrapping_add(1) << node.level).wrapping_sub(1);
        if last_leaf < *flushed {
            return read_node(self.table, self.plan, node);
        }
        if node.level == 0 {
            return usize::try_from(node.index - flushed)
                .ok()
                .and_then(|i| pending.get(i))
                .copied()
                .ok_or_else(|| {
                    StoreError(format!(
                        "tree of plan {} lacks leaf {}",
                        self.plan, node.index
                    ))
                });
        }
        let left = self.read(NodeId::new(node.level - 1, node.index * 2))?;
        let right = self.read(NodeId::new(node.level - 1, node.index * 2 + 1))?;
        Ok(merkle::node_hash(&left, &right))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(last_seq: u64) -> PlanHead {
        PlanHead {
            last_seq,
            last_signature: [7; 32],
            count: last_seq,
            first_at: 1,
            last_at: 2,
        }
    }

    #[test]
    fn both_versions_round_trip() {
        for row in [
            HeadRow {
                head: head(3),
                tail: TreeTail::InTable,
            },
            HeadRow {
                head: head(35),
                tail: TreeTail::Buffered {
                    flushed: 32,
                    pending: vec![[1; 32], [2; 32], [3; 32]],
                },
            },
            HeadRow {
                head: head(0),
                tail: HeadRow::empty_tail(),
            },
        ] {
            let bytes = row.encode();
            assert_eq!(HeadRow::decode(&bytes).unwrap(), row);
            assert_eq!(decode_head(&bytes).unwrap(), row.head);
        }
    }

    /// Version 1 is the layout every release before the buffer wrote (the
    /// generic record encoding of a `PlanHead`): old stores keep reading.
    #[test]
    fn version_one_is_the_old_record() {
        let old = super::super::encode(&head(9));
        assert_eq!(old[0], HEAD_V1);
        let row = HeadRow::decode(&old).unwrap();
        assert_eq!(row.head, head(9));
        assert_eq!(row.tail, TreeTail::InTable);
    }

    /// docs/vectors/head-record.json (also checked by Python): every row
    /// encodes to its bytes and back; every refused row is refused.
    #[test]
    fn the_vectors_match() {
        use serde_json::Value;
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/vectors/head-record.json"
        );
        let vectors: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let hash =
            |v: &Value| -> Hash { logbook_base::hex::decode_array(v.as_str().unwrap()).unwrap() };
        let unhex = |v: &Value| -> Vec<u8> {
            let text = v.as_str().unwrap();
            (0..text.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
                .collect()
        };
        let rows = vectors["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 4);
        for v in rows {
            let h = &v["head"];
            let head = PlanHead {
                last_seq: h["last_seq"].as_u64().unwrap(),
                last_signature: hash(&h["last_signature"]),
                count: h["count"].as_u64().unwrap(),
                first_at: h["first_at"].as_i64().unwrap(),
                last_at: h["last_at"].as_i64().unwrap(),
            };
            let tail = match v["version"].as_u64().unwrap() {
                1 => TreeTail::InTable,
                _ => TreeTail::Buffered {
                    flushed: v["flushed"].as_u64().unwrap(),
                    pending: v["pending"].as_array().unwrap().iter().map(hash).collect(),
                },
            };
            let row = HeadRow { head, tail };
            let bytes = unhex(&v["hex"]);
            assert_eq!(row.encode(), bytes, "{}", v["name"]);
            assert_eq!(HeadRow::decode(&bytes).unwrap(), row, "{}", v["name"]);
        }
        for v in vectors["refused"].as_array().unwrap() {
            let bytes = unhex(&v["hex"]);
            assert!(HeadRow::decode(&bytes).is_err(), "{}", v["name"]);
        }
    }

    #[test]
    fn a_buffer_not_ending_at_the_head_is_refused() {
        let bad = |flushed, n: usize, last_seq| {
            let row = HeadRow {
                head: head(last_seq),
                tail: TreeTail::Buffered {
                    flushed,
                    pending: vec![[0; 32]; n],
                },
            };
            HeadRow::decode(&row.encode())
        };
        assert!(bad(32, 2, 34).is_ok());
        assert!(bad(32, 2, 35).is_err());
        assert!(
            bad(0, FLUSH_LEAVES, 32).is_err(),
            "a full buffer is flushed"
        );
        assert!(bad(u64::MAX, 1, 0).is_err());
        let mut future = bad(0, 0, 0).map(|r| r.encode()).unwrap();
        future[0] = 3;
        assert!(
            HeadRow::decode(&future)
                .unwrap_err()
                .to_string()
                .contains("version 3")
        );
        assert!(HeadRow::decode(&[]).is_err());
    }
}
