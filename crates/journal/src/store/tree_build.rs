//! The one-time pass that gives plans written before trees existed their
//! Merkle trees (head rows of version 1, `TreeTail::InTable`).

use logbook_tlog::merkle::{self, NodeId};
use redb::ReadableTable;
use uuid::Uuid;

use super::head::{HeadRow, TreeTail};
use super::tree::{TREE_HASHES, TreeKey, store_hashes, tree_key};
use super::{HEADS, Store, StoreError};
use crate::chain::log_entry;
use crate::event::Event;

/// Events hashed per transaction while the upgrade pass builds a tree.
const BUILD_BATCH: usize = 4096;

/// Stores the hashes that appending `event` (leaf `seq - 1`) completes
/// (the upgrade pass, whose plans have version-1 head rows).
fn append_leaf(
    table: &mut redb::Table<'_, &'static TreeKey, &'static [u8; 32]>,
    event: &Event,
) -> Result<(), StoreError> {
    let leaf = merkle::leaf_hash(log_entry(event).as_bytes());
    store_hashes(table, &event.plan_id, event.seq - 1, leaf)
}

impl Store {
    /// The one-time pass for stores written before plans had trees: builds
    /// each plan's missing hashes from its events, in bounded transactions
    /// (so a crash resumes where it stopped), logging progress. A plan
    /// whose last leaf is stored is complete, as trees grow with their
    /// events in one transaction. Runs at open, before the writer starts.
    pub(super) fn build_missing_trees(&self) -> Result<(), StoreError> {
        let mut plans = Vec::new();
        {
            let txn = self.db.begin_read()?;
            let heads = txn.open_table(HEADS)?;
            let tree = txn.open_table(TREE_HASHES)?;
            for entry in heads.iter()? {
                let (k, v) = entry?;
                let plan = Uuid::from_bytes(*k.value());
                let HeadRow { head, tail } = HeadRow::decode(v.value())?;
                if tail != TreeTail::InTable {
                    // Version 2: written by a writer that keeps trees whole.
                    continue;
                }
                let built = leaves_built(&tree, &plan, head.last_seq)?;
                if built < head.last_seq {
                    plans.push((plan, built, head.last_seq));
                }
            }
        }
        if plans.is_empty() {
            return Ok(());
        }
        let total: u64 = plans.iter().map(|(_, built, head)| head - built).sum();
        tracing::info!(
            plans = plans.len(),
            events = total,
            "building the Merkle trees of plans written before trees existed (one-time pass)"
        );
        let mut done = 0u64;
        'plans: for (plan, mut built, head) in plans {
            while built < head {
                let events = self.plan_events_after(&plan, built, BUILD_BATCH)?;
                // A damaged store (an event missing) must not stop the
                // daemon: that plan keeps a partial tree, its proofs and
                // appends fail, and `verify=full` names the gap.
                let contiguous = events
                    .iter()
                    .zip(built + 1..)
                    .take_while(|(e, seq)| e.seq == *seq)
                    .count();
                if contiguous == 0 {
                    tracing::error!(%plan, missing = built + 1, head, "a plan's events have a gap; its tree stops before it (verify the plan)");
                    continue 'plans;
                }
                let txn = self.db.begin_write()?;
                {
                    let mut table = txn.open_table(TREE_HASHES)?;
                    for event in &events[..contiguous] {
                        append_leaf(&mut table, event)?;
                    }
                }
                self.db.commit(txn)?;
                built += contiguous as u64;
                done += contiguous as u64;
                tracing::info!(%plan, built, head, done, total, "tree build progress");
            }
        }
        tracing::info!(events = total, "plan trees built");
        Ok(())
    }
}

/// How many leading leaves of `plan` have their leaf hash stored (a prefix,
/// so a binary search finds it in O(log n) reads).
fn leaves_built(
    tree: &impl ReadableTable<&'static TreeKey, &'static [u8; 32]>,
    plan: &Uuid,
    head: u64,
) -> Result<u64, StoreError> {
    let (mut lo, mut hi) = (0u64, head);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if tree.get(&tree_key(plan, NodeId::new(0, mid)))?.is_some() {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}
