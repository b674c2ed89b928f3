//! The heads log (issue 11): one more transparency log per instance, with
//! origin `{origin_prefix}`, whose entries record plan checkpoints. Its
//! entry `i` is `UTF-8(JCS({"plan_id", "size", "root"}))` (root in base64),
//! with `"deleted": true` for a deletion. Witnesses cosign this one log
//! instead of every plan.
//!
//! Tables:
//! - `heads_log_entries`: leaf index (u64) → entry record (the entry bytes)
//! - `heads_log_plans`: plan id → its last entry (index, size, root, deleted)
//! - `heads_log_hashes`: the tree's hashes, keyed like `tree_hashes` under
//!   the nil id (`tree.rs`, [`LogId::Heads`])
//! - `heads_log_cursor`: the store-wide position the passes have read up to
//!   (a pass reads the `positions` after it to find the plans that moved)
//!
//! Invariant: the tree holds every hash of the entries, written in the
//! entry's own transaction, so the heads log's proofs cost what a plan's do.
//!
//! A witnessed bundle proves that its entry is the plan's latest by
//! carrying every entry after it (a reader checks that none names the
//! plan). So that this stays short for a plan that has not moved for a
//! while, a bundle whose entry has more than [`REENTER_AFTER`] entries
//! after it asks the next pass to enter the plan again, unchanged. Each
//! re-entry is paid for by an entry of a moved head (a credit), so that
//! reading bundles cannot grow the log by itself.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use logbook_base::canonical::canonical_json;
use logbook_tlog::merkle::{self, Hash};
use logbook_tlog::tile::{EntryTooLong, push_bundle_entry};
use redb::{Durability, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::head::{HeadRow, TreeReader};
use super::tree::{self, LogId, TREE_HASHES, TreeKey};
use super::{HEADS, POSITIONS, Store, StoreError, decode, encode};

pub(super) const HEADS_LOG_ENTRIES: TableDefinition<u64, &[u8]> =
    TableDefinition::new("heads_log_entries");
pub(super) const HEADS_LOG_PLANS: TableDefinition<&[u8; 16], &[u8]> =
    TableDefinition::new("heads_log_plans");
pub(super) const HEADS_LOG_HASHES: TableDefinition<&TreeKey, &[u8; 32]> =
    TableDefinition::new("heads_log_hashes");
/// Key 0: the store-wide position up to which the passes have looked.
pub(super) const HEADS_LOG_CURSOR: TableDefinition<u8, u64> =
    TableDefinition::new("heads_log_cursor");

/// Positions (events) one pass reads at most, to find the moved plans.
const SCAN_LIMIT: usize = 65_536;

/// Entries one background pass appends at most: a bound on the length of
/// its write transaction (the plans left over wait for the next pass).
pub const PASS_LIMIT: usize = 1024;

/// Entries after a plan's last one that a bundle carries at most (about
/// 140 bytes each); beyond, the bundle waits for the plan's next entry.
pub const MAX_LATER_ENTRIES: u64 = 2048;

/// A bundle whose entry has more entries than this after it asks for the
/// plan to be entered again ([`Store::request_reentry`]).
pub const REENTER_AFTER: u64 = 256;

/// Re-entries one pass may make beyond the moves paid for them: what a
/// start may add with no event written. After it, re-entries are paid by
/// entries of moved heads, one for one, so reads alone cannot grow the log.
const REENTRY_CREDIT: u64 = PASS_LIMIT as u64;
/// Most credit kept: a long burst of writes buys at most this many.
const MAX_REENTRY_CREDIT: u64 = 4 * PASS_LIMIT as u64;

/// The plans a bundle asked to have entered again, and the re-entries
/// left to make ([`Store::request_reentry`]).
#[derive(Debug)]
pub(super) struct Reentries {
    wanted: Vec<Uuid>,
    credit: u64,
}

impl Default for Reentries {
    fn default() -> Reentries {
        Reentries {
            wanted: Vec::new(),
            credit: REENTRY_CREDIT,
        }
    }
}

/// A plan's last entry in the heads log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadsEntry {
    /// Its leaf index in the heads log.
    pub index: u64,
    /// The plan's tree size and root it records.
    pub size: u64,
    pub root: Hash,
    pub deleted: bool,
}

#[derive(Serialize, Deserialize)]
struct EntryRecord {
    entry: Vec<u8>,
}

/// The entry bytes recording `plan` at `size` with `root`.
pub fn entry_bytes(plan: &Uuid, size: u64, root: &Hash, deleted: bool) -> Vec<u8> {
    let mut value = serde_json::json!({
        "plan_id": plan.to_string(),
        "size": size,
        "root": BASE64.encode(root),
    });
    if deleted {
        value["deleted"] = serde_json::Value::Bool(true);
    }
    canonical_json(&value).into_bytes()
}

/// The heads log's size: one past its last index.
pub(super) fn size(entries: &impl ReadableTable<u64, &'static [u8]>) -> Result<u64, StoreError> {
    Ok(entries.last()?.map_or(0, |(k, _)| k.value() + 1))
}

/// Appends the entry recording `plan` at (`size`, `root`) inside `txn`:
/// the entry, its tree hashes and the plan's last-entry row.
pub(super) fn append(
    txn: &redb::WriteTransaction,
    plan: &Uuid,
    size_: u64,
    root: Hash,
    deleted: bool,
) -> Result<HeadsEntry, StoreError> {
    let mut entries = txn.open_table(HEADS_LOG_ENTRIES)?;
    let mut hashes = txn.open_table(HEADS_LOG_HASHES)?;
    let mut plans = txn.open_table(HEADS_LOG_PLANS)?;
    let index = size(&entries)?;
    let entry = entry_bytes(plan, size_, &root, deleted);
    let leaf = merkle::leaf_hash(&entry);
    let id = Uuid::nil();
    let new =
        merkle::hashes_to_store(index, leaf, &mut |node| tree::read_node(&hashes, &id, node))?;
    for (node, hash) in new {
        hashes.insert(&tree::tree_key(&id, node), &hash)?;
    }
    entries.insert(index, encode(&EntryRecord { entry }).as_slice())?;
    let last = HeadsEntry {
        index,
        size: size_,
        root,
        deleted,
    };
    plans.insert(&plan.into_bytes(), encode(&last).as_slice())?;
    Ok(last)
}

/// The entry bundle of leaves `[first, first + count)` into `out`; the
/// caller checked that they are in the log.
pub(super) fn bundle(
    txn: &redb::ReadTransaction,
    first: u64,
    count: u64,
    out: &mut Vec<u8>,
) -> Result<(), StoreError> {
    each_entry(txn, first, first + count, |index, entry| {
        // Entries are ~120 bytes by construction.
        push_bundle_entry(out, &entry).map_err(|EntryTooLong(len)| {
            StoreError(format!("heads log entry {index} is {len} bytes"))
        })
    })
}

/// Calls `each` with every entry at `[first, end)`, in order; an error if
/// the log lacks one of them.
fn each_entry(
    txn: &redb::ReadTransaction,
    first: u64,
    end: u64,
    mut each: impl FnMut(u64, Vec<u8>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let entries = txn.open_table(HEADS_LOG_ENTRIES)?;
    let mut next = first;
    for row in entries.range(first..end)? {
        let (k, v) = row?;
        if k.value() != next {
            break;
        }
        each(next, decode::<EntryRecord>(v.value())?.entry)?;
        next += 1;
    }
    if next < end {
        return Err(StoreError(format!(
            "the heads log lacks entry {next} below {end}"
        )));
    }
    Ok(())
}

impl Store {
    /// The heads log's tree.
    pub fn heads_tree(&self) -> tree::Tree<'_> {
        self.log_tree(LogId::Heads)
    }

    /// The heads log's size.
    pub fn heads_size(&self) -> Result<u64, StoreError> {
        size(&self.db.begin_read()?.open_table(HEADS_LOG_ENTRIES)?)
    }

    /// `plan`'s last entry in the heads log, if it has one.
    pub fn heads_entry(&self, plan: &Uuid) -> Result<Option<HeadsEntry>, StoreError> {
        let txn = self.db.begin_read()?;
        txn.open_table(HEADS_LOG_PLANS)?
            .get(&plan.into_bytes())?
            .map(|v| decode(v.value()))
            .transpose()
    }

    /// The entry bytes at `index`, if the log has it.
    pub fn heads_log_entry(&self, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read()?;
        txn.open_table(HEADS_LOG_ENTRIES)?
            .get(index)?
            .map(|v| decode::<EntryRecord>(v.value()).map(|r| r.entry))
            .transpose()
    }

    /// Asks the next pass to enter `plan` again even if its head has not
    /// moved, because its last entry is far behind the log's end. At most
    /// [`PASS_LIMIT`] wait at once; one asked beyond, or beyond the credit
    /// of a pass, is asked again by the next bundle of it.
    pub fn request_reentry(&self, plan: Uuid) {
        let mut reentries = self.reentries();
        if reentries.wanted.len() < PASS_LIMIT && !reentries.wanted.contains(&plan) {
            reentries.wanted.push(plan);
        }
    }

    fn reentries(&self) -> std::sync::MutexGuard<'_, Reentries> {
        self.reenter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[cfg(test)]
    fn set_reentry_credit(&self, credit: u64) {
        self.reentries().credit = credit;
    }

    /// `plan`'s last entry below index `end`, looked for in at most `scan`
    /// entries back from there; None if none of those records it.
    pub fn heads_entry_before(
        &self,
        plan: &Uuid,
        end: u64,
        scan: u64,
    ) -> Result<Option<HeadsEntry>, StoreError> {
        #[derive(Deserialize)]
        struct Fields {
            plan_id: Uuid,
            size: u64,
            root: String,
            #[serde(default)]
            deleted: bool,
        }
        let txn = self.db.begin_read()?;
        let table = txn.open_table(HEADS_LOG_ENTRIES)?;
        for row in table.range(end.saturating_sub(scan)..end)?.rev() {
            let (index, value) = row?;
            let entry = decode::<EntryRecord>(value.value())?.entry;
            let fields: Fields = serde_json::from_slice(&entry).map_err(|e| {
                StoreError(format!("heads log entry {} is not one: {e}", index.value()))
            })?;
            if fields.plan_id != *plan {
                continue;
            }
            let root = BASE64
                .decode(&fields.root)
                .ok()
                .and_then(|r| Hash::try_from(r.as_slice()).ok())
                .ok_or_else(|| {
                    StoreError(format!("heads log entry {} has a bad root", index.value()))
                })?;
            return Ok(Some(HeadsEntry {
                index: index.value(),
                size: fields.size,
                root,
                deleted: fields.deleted,
            }));
        }
        Ok(None)
    }

    /// The entry bytes at `[first, end)`, which the log must hold.
    pub fn heads_log_entries(&self, first: u64, end: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut entries = Vec::new();
        each_entry(&self.db.begin_read()?, first, end, |_, entry| {
            entries.push(entry);
            Ok(())
        })?;
        Ok(entries)
    }

    /// One background pass: appends, in one durable transaction, an entry
    /// for each plan whose head moved since its last entry (at most
    /// `limit`), and for each plan asked for by [`Store::request_reentry`]
    /// whose last entry is still more than [`REENTER_AFTER`] behind.
    /// Returns the number appended. A plan whose tree is incomplete (a
    /// damaged store) is skipped with an error log.
    pub fn append_heads(&self, limit: usize) -> Result<usize, StoreError> {
        let (moved, reached) = self.moved_plans(limit)?;
        let (reenter, credit) = {
            let mut reentries = self.reentries();
            (std::mem::take(&mut reentries.wanted), reentries.credit)
        };
        if moved.is_empty() && reenter.is_empty() {
            return Ok(0);
        }
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let mut appended = 0;
        let (mut moves, mut reentered) = (0u64, 0u64);
        {
            let heads = txn.open_table(HEADS)?;
            let hashes = txn.open_table(TREE_HASHES)?;
            let plans = txn.open_table(HEADS_LOG_PLANS)?;
            let log_size = size(&txn.open_table(HEADS_LOG_ENTRIES)?)?;
            let behind = |last: &HeadsEntry| log_size - last.index - 1 > REENTER_AFTER;
            let mut todo = Vec::with_capacity(moved.len());
            let mut deleted_again = Vec::new();
            let asked = reenter.into_iter().filter(|p| !moved.contains(p));
            // Read again under the write lock: the writer may have moved on.
            for (plan, again) in moved
                .iter()
                .map(|p| (*p, false))
                .chain(asked.map(|p| (p, true)))
            {
                let last: Option<HeadsEntry> = plans
                    .get(&plan.into_bytes())?
                    .map(|v| decode(v.value()))
                    .transpose()?;
                let Some(head) = heads.get(&plan.into_bytes())? else {
                    // Deleted since; its deletion wrote its entry, which a
                    // bundle may ask to have entered again.
                    if let Some(last) = last.filter(|l| again && l.deleted && behind(l))
                        && reentered < credit
                    {
                        deleted_again.push((plan, last));
                        reentered += 1;
                    }
                    continue;
                };
                let row = HeadRow::decode(head.value())?;
                let head = row.head;
                if head.last_seq == 0 {
                    continue;
                }
                let unchanged = last.is_some_and(|l| l.size == head.last_seq);
                if unchanged && !(again && last.is_some_and(|l| behind(&l)) && reentered < credit) {
                    continue;
                }
                if !row.last_leaf_readable(&hashes, &plan)? {
                    tracing::error!(%plan, head = head.last_seq, "a plan's tree is incomplete; the heads log skips it (verify the plan)");
                    continue;
                }
                // A plan's last leaves may still be in its head row.
                let reader = TreeReader {
                    table: &hashes,
                    plan: &plan,
                    tail: &row.tail,
                };
                let root = merkle::root(head.last_seq, &mut |node| reader.read(node))?;
                todo.push((plan, head.last_seq, root));
                if unchanged {
                    reentered += 1;
                } else {
                    moves += 1;
                }
            }
            drop((heads, hashes, plans));
            for (plan, size, root) in todo {
                append(&txn, &plan, size, root, false)?;
                appended += 1;
            }
            for (plan, last) in deleted_again {
                append(&txn, &plan, last.size, last.root, true)?;
                appended += 1;
            }
            txn.open_table(HEADS_LOG_CURSOR)?.insert(0, reached)?;
        }
        self.db.commit(txn)?;
        let mut reentries = self.reentries();
        reentries.credit =
            (reentries.credit.saturating_sub(reentered) + moves).min(MAX_REENTRY_CREDIT);
        Ok(appended)
    }

    /// The plans with events after the pass cursor (a store-wide
    /// position), at most `limit` of them and [`SCAN_LIMIT`] positions, and
    /// the position the scan reached. So a pass costs what was appended
    /// since the last one, not the number of plans.
    fn moved_plans(&self, limit: usize) -> Result<(Vec<Uuid>, u64), StoreError> {
        let txn = self.db.begin_read()?;
        let cursor = txn
            .open_table(HEADS_LOG_CURSOR)?
            .get(0)?
            .map_or(0, |v| v.value());
        let positions = txn.open_table(POSITIONS)?;
        let mut moved: Vec<Uuid> = Vec::new();
        let mut seen: std::collections::HashSet<Uuid> = std::collections::HashSet::new();
        let mut reached = cursor;
        for row in positions
            .range(cursor.saturating_add(1)..)?
            .take(SCAN_LIMIT)
        {
            let (position, key) = row?;
            let key = key.value();
            let plan = Uuid::from_bytes(key[..16].try_into().expect("16 bytes"));
            if !seen.contains(&plan) {
                if moved.len() == limit {
                    break;
                }
                seen.insert(plan);
                moved.push(plan);
            }
            reached = position.value();
        }
        Ok((moved, reached))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::keys::Keyring;
    use crate::store::AppendRequest;

    fn request(plan: Uuid) -> AppendRequest {
        AppendRequest::empty(plan)
    }

    /// A pass takes at most `limit` plans, resumes after them, and records
    /// each plan's latest head once however many events it had.
    #[tokio::test(flavor = "multi_thread")]
    async fn passes_are_bounded_and_resume_where_they_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = Arc::new(Keyring::from_secret(b"heads".to_vec()));
        let fanout = crate::fanout::fanout();
        let (store, writer) = Store::open(&dir.path().join("j.redb"), keyring, fanout).unwrap();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        for plan in [a, a, b, a] {
            store.append(request(plan)).await.unwrap();
        }
        assert_eq!(store.append_heads(1).unwrap(), 1);
        assert_eq!(store.append_heads(1).unwrap(), 1);
        assert_eq!(store.append_heads(1).unwrap(), 0);
        let (ea, eb) = (
            store.heads_entry(&a).unwrap().unwrap(),
            store.heads_entry(&b).unwrap().unwrap(),
        );
        assert_eq!((ea.index, ea.size), (0, 3), "a's latest head, once");
        assert_eq!((eb.index, eb.size), (1, 1));
        assert_eq!(ea.root, store.tree(&a).root(None).unwrap().unwrap().1);
        assert_eq!(
            store.heads_log_entry(1).unwrap().unwrap(),
            entry_bytes(&b, 1, &eb.root, false)
        );
        // One more event of b: only b moves.
        store.append(request(b)).await.unwrap();
        assert_eq!(store.append_heads(10).unwrap(), 1);
        assert_eq!(store.heads_entry(&b).unwrap().unwrap().index, 2);
        assert_eq!(store.heads_size().unwrap(), 3);
        drop(store);
        tokio::task::spawn_blocking(move || writer.shutdown())
            .await
            .unwrap();
    }

    /// A plan asked for again is entered again, unchanged, only once its
    /// last entry is more than REENTER_AFTER behind the log's end.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_plan_far_behind_is_entered_again_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = Arc::new(Keyring::from_secret(b"heads".to_vec()));
        let fanout = crate::fanout::fanout();
        let (store, writer) = Store::open(&dir.path().join("j.redb"), keyring, fanout).unwrap();
        let (idle, busy) = (Uuid::new_v4(), Uuid::new_v4());
        store.append(request(idle)).await.unwrap();
        assert_eq!(store.append_heads(10).unwrap(), 1);
        let first = store.heads_entry(&idle).unwrap().unwrap();
        for _ in 0..REENTER_AFTER {
            store.append(request(busy)).await.unwrap();
            assert_eq!(store.append_heads(10).unwrap(), 1);
        }
        // REENTER_AFTER entries after it: not yet behind.
        store.request_reentry(idle);
        assert_eq!(store.append_heads(10).unwrap(), 0);
        store.append(request(busy)).await.unwrap();
        assert_eq!(store.append_heads(10).unwrap(), 1);
        // Behind now, but with no credit left reads alone grow nothing.
        store.set_reentry_credit(0);
        store.request_reentry(idle);
        assert_eq!(store.append_heads(10).unwrap(), 0, "no credit");
        // A moved head pays for one re-entry.
        store.append(request(busy)).await.unwrap();
        assert_eq!(store.append_heads(10).unwrap(), 1);
        store.request_reentry(idle);
        store.request_reentry(idle);
        assert_eq!(store.append_heads(10).unwrap(), 1, "entered again, once");
        store.request_reentry(idle);
        assert_eq!(store.append_heads(10).unwrap(), 0, "not behind any more");
        let again = store.heads_entry(&idle).unwrap().unwrap();
        assert_eq!(again.index, REENTER_AFTER + 3);
        assert_eq!((again.size, again.root), (first.size, first.root));
        assert_eq!(
            store.heads_log_entry(again.index).unwrap().unwrap(),
            entry_bytes(&idle, first.size, &first.root, false)
        );
        assert_eq!(store.append_heads(10).unwrap(), 0, "asked once, done once");
        let later = store.heads_log_entries(1, again.index).unwrap();
        assert_eq!(later.len() as u64, REENTER_AFTER + 2);
        assert!(store.heads_log_entries(1, again.index + 2).is_err());
        drop(store);
        tokio::task::spawn_blocking(move || writer.shutdown())
            .await
            .unwrap();
    }
}
