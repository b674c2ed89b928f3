//! Deleted plans stay deleted: their ids are never used again.
//!
//! A plan is a transparency log whose origin is derived from its id, and a
//! log must never sign two inconsistent checkpoints under one origin
//! (C2SP tlog-checkpoint). A new chain under a deleted plan's id would be
//! exactly that, so an append to a deleted plan is refused (HTTP 410).
//!
//! Table:
//! - `deleted_plans`: plan id → the tombstone's seq in the system journal
//!   and the plan's final tree size and root (the root is unknown for plans
//!   deleted before trees existed).
//!
//! The row under the system plan's id (which is never deleted) marks that
//! the tombstones written before this table existed have been read into it.

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::admin::{SYSTEM_PLAN, TOMBSTONE_TYPE};
use super::{HEADS, READ_PAGE, Store, StoreError, decode, encode};

pub(super) const DELETED_PLANS: TableDefinition<&[u8; 16], &[u8]> =
    TableDefinition::new("deleted_plans");

/// What remains of a deleted plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedPlan {
    /// Seq of its tombstone in the system journal.
    pub tombstone_seq: u64,
    /// Its head seq when it was deleted: the final tree size.
    pub tree_size: u64,
    /// The root of its final tree, when it had one.
    pub tree_root: Option<[u8; 32]>,
}

/// The deletion record of `plan`, if it was deleted.
pub(super) fn deleted(
    table: &impl ReadableTable<&'static [u8; 16], &'static [u8]>,
    plan: &Uuid,
) -> Result<Option<DeletedPlan>, StoreError> {
    table
        .get(&plan.into_bytes())?
        .map(|v| decode(v.value()))
        .transpose()
}

/// Records the deletion of `plan` (inside the deletion's transaction).
pub(super) fn record(
    table: &mut redb::Table<'_, &'static [u8; 16], &'static [u8]>,
    plan: &Uuid,
    record: &DeletedPlan,
) -> Result<(), StoreError> {
    table.insert(&plan.into_bytes(), encode(record).as_slice())?;
    Ok(())
}

impl Store {
    /// The deletion record of `plan`, if it was deleted.
    pub fn deleted_plan(&self, plan: &Uuid) -> Result<Option<DeletedPlan>, StoreError> {
        let txn = self.db.begin_read()?;
        deleted(&txn.open_table(DELETED_PLANS)?, plan)
    }

    /// Reads the tombstones of plans deleted before `deleted_plans` existed
    /// into it, once. Runs at open, before the writer takes appends.
    pub(super) fn record_old_deletions(&self) -> Result<(), StoreError> {
        if deleted(
            &self.db.begin_read()?.open_table(DELETED_PLANS)?,
            &SYSTEM_PLAN,
        )?
        .is_some()
        {
            return Ok(());
        }
        #[derive(Deserialize)]
        struct Tombstone {
            plan_id: Uuid,
            head_seq: u64,
        }
        let mut found = Vec::new();
        let mut after = 0;
        loop {
            let page = self.plan_events_after(&SYSTEM_PLAN, after, READ_PAGE)?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for event in page.iter().filter(|e| e.event_type == TOMBSTONE_TYPE) {
                if let Ok(t) = serde_json::from_str::<Tombstone>(event.payload.get()) {
                    found.push((t.plan_id, event.seq, t.head_seq));
                }
            }
        }
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(DELETED_PLANS)?;
            let heads = txn.open_table(HEADS)?;
            for (plan, tombstone_seq, tree_size) in &found {
                // Used again after its deletion (older releases allowed it):
                // the live chain keeps its id.
                if heads.get(&plan.into_bytes())?.is_some() {
                    continue;
                }
                // A plan deleted, used again and deleted again: the last one counts.
                let row = DeletedPlan {
                    tombstone_seq: *tombstone_seq,
                    tree_size: *tree_size,
                    tree_root: None,
                };
                record(&mut table, plan, &row)?;
            }
            let marker = DeletedPlan {
                tombstone_seq: 0,
                tree_size: 0,
                tree_root: None,
            };
            record(&mut table, &SYSTEM_PLAN, &marker)?;
        }
        self.db.commit(txn)?;
        if !found.is_empty() {
            tracing::info!(
                plans = found.len(),
                "recorded the plans deleted before deleted ids were kept; their ids stay unused"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::keys::Keyring;
    use crate::store::{AppendError, AppendRequest, AsyncStore};

    fn request(plan: Uuid) -> AppendRequest {
        AppendRequest::empty(plan)
    }

    fn open(dir: &std::path::Path) -> (AsyncStore, super::super::Writer) {
        let keyring = Arc::new(Keyring::from_secret(b"deleted".to_vec()));
        let fanout = crate::fanout::fanout();
        let (store, writer) = Store::open(&dir.join("j.redb"), keyring, fanout).unwrap();
        (AsyncStore::new(store), writer)
    }

    /// A store from before `deleted_plans` (here: the table emptied) learns
    /// its deleted plans from their tombstones at open, except one whose id
    /// was used again meanwhile, which older releases allowed.
    #[tokio::test(flavor = "multi_thread")]
    async fn old_tombstones_are_read_once_and_live_plans_keep_their_ids() {
        let dir = tempfile::tempdir().unwrap();
        let (gone, reused) = (Uuid::new_v4(), Uuid::new_v4());
        let (store, writer) = open(dir.path());
        for plan in [gone, reused] {
            store.append(request(plan)).await.unwrap();
            store.delete_plan(plan, "test".into()).await.unwrap();
        }
        store
            .run(move |s| -> Result<(), StoreError> {
                let txn = s.db.begin_write()?;
                txn.open_table(DELETED_PLANS)?.retain(|_, _| false)?;
                txn.open_table(super::super::HEADS)?;
                txn.commit()?;
                Ok(())
            })
            .await
            .unwrap();
        // As an older release allowed: the second id used again.
        store.append(request(reused)).await.unwrap();
        drop(store);
        tokio::task::spawn_blocking(move || writer.shutdown())
            .await
            .unwrap();

        let (store, writer) = open(dir.path());
        assert!(matches!(
            store.append(request(gone)).await,
            Err(AppendError::PlanDeleted { .. })
        ));
        assert_eq!(store.append(request(reused)).await.unwrap().event.seq, 2);
        let row = store.run(move |s| s.deleted_plan(&gone)).await.unwrap();
        assert_eq!(row.map(|r| (r.tree_size, r.tree_root)), Some((1, None)));
        tokio::task::spawn_blocking(move || writer.shutdown())
            .await
            .unwrap();
    }
    /// Deleting one of two interleaved plans removes exactly its rows:
    /// every event and every store-wide position of it, none of the other's.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_deletion_removes_its_plans_events_and_positions_only() {
        let dir = tempfile::tempdir().unwrap();
        let (gone, kept) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let (store, writer) = open(dir.path());
        for _ in 0..50 {
            for plan in [gone, kept] {
                store.append(request(plan)).await.unwrap();
            }
        }
        store.delete_plan(gone, "test".into()).await.unwrap();
        let (events, positions) = store
            .run(|s| -> Result<_, StoreError> {
                let txn = s.db.begin_read()?;
                let keys = |t: &redb::ReadOnlyTable<&[u8; 24], &[u8]>| -> Vec<[u8; 24]> {
                    t.iter().unwrap().map(|e| *e.unwrap().0.value()).collect()
                };
                let events = keys(&txn.open_table(super::super::EVENTS)?);
                let positions: Vec<(u64, [u8; 24])> = txn
                    .open_table(super::super::POSITIONS)?
                    .iter()?
                    .map(|e| e.map(|(k, v)| (k.value(), *v.value())))
                    .collect::<Result<_, _>>()?;
                Ok((events, positions))
            })
            .await
            .unwrap();
        let plan_of = |key: &[u8; 24]| Uuid::from_slice(&key[..16]).unwrap();
        assert!(events.iter().all(|k| plan_of(k) != gone));
        assert_eq!(events.iter().filter(|k| plan_of(k) == kept).count(), 50);
        // The kept plan's 50 and the tombstone in the system journal.
        assert_eq!(positions.len(), 51);
        assert!(positions.iter().all(|(_, k)| events.contains(k)));
        tokio::task::spawn_blocking(move || writer.shutdown())
            .await
            .unwrap();
    }
}
