//! Dead messages: put back in the queue, or dropped for good; and a removed
//! peer's whole queue dropped when it is added again.
//!
//! One message is changed in one transaction. Every dead one (of a peer)
//! is changed in batches of at most [`DEAD_BATCH`] rows, each its own
//! durable transaction that reads at most [`SCAN_BATCH`] rows and about
//! [`SCAN_BYTES`] bytes: an outbox keeps delivered rows for days and can
//! hold millions, and one transaction over them all would hold every key it
//! changes, and the write lock every append waits for. A batch
//! holds keys and message ids, never payloads (a dead message can be as
//! large as a request body). A crash between batches leaves some changed
//! and the rest as they were; asking again finishes the job, and the
//! delivery workers are told of the batches that committed either way.

use std::ops::Bound;

use redb::{ReadableTable, WriteTransaction};
use uuid::Uuid;

use super::outbox::{DeliveryStatus, Outbox, OutboxRecord, outbox_key, split_outbox_key};
use super::{FED_OUTBOX, FED_OUTBOX_EVENTS, FED_OUTBOX_IDS, FED_PENDING_ROTATIONS, index_key_of};
use crate::event::Timestamp;
use crate::store::{StoreError, decode, encode};

/// Most dead rows changed in one transaction (tiny in unit tests, so that
/// they cross batches).
const DEAD_BATCH: usize = if cfg!(test) { 2 } else { 4096 };
/// Most outbox rows read in one transaction while looking for dead ones.
const SCAN_BATCH: usize = if cfg!(test) { 3 } else { 65_536 };
/// Most bytes of outbox rows read in one transaction while looking for dead
/// ones: each row is decoded whole, payload included, and 65,536 rows of
/// 1 MiB would hold the write lock (and so every append) while 64 GiB are
/// read. At least one row is read per transaction, so a scan moves on.
const SCAN_BYTES: usize = if cfg!(test) { 4096 } else { 32 << 20 };

/// A dead row: its outbox key and message id (not its payload: a batch
/// holds only these).
type DeadRow = (Vec<u8>, [u8; 16]);

impl Outbox<'_> {
    /// Puts dead messages back in the queue: one by id, or every dead one
    /// (of one peer, if given). Returns how many.
    pub fn retry_dead(
        &self,
        message_id: Option<&Uuid>,
        peer: Option<&str>,
    ) -> Result<usize, StoreError> {
        let now = Timestamp::now().millis();
        let mut count = 0;
        let done = self.each_row(message_id, peer, is_dead, &mut count, |txn, rows| {
            let mut table = txn.open_table(FED_OUTBOX)?;
            // One record at a time: a batch holds keys, not payloads.
            for (key, _) in rows {
                let Some(stored) = table.get(key.as_slice())? else {
                    continue;
                };
                let mut record: OutboxRecord = decode(stored.value())?;
                drop(stored);
                record.status = DeliveryStatus::Pending;
                record.attempts = 0;
                record.next_attempt_at = 0;
                record.created_at = now; // the age limit restarts
                record.updated_at = now;
                table.insert(key.as_slice(), encode(&record).as_slice())?;
            }
            Ok(())
        });
        // Batches that committed before a failure count too.
        self.rescan(count);
        done.map(|()| count)
    }

    /// Deletes dead messages: one by id (if it is dead, and of `peer` when
    /// given), or every dead one of `peer`, or with neither every dead one.
    /// Returns how many. They are gone for good: a late ack for one is ignored.
    pub fn drop_dead(
        &self,
        message_id: Option<&Uuid>,
        peer: Option<&str>,
    ) -> Result<usize, StoreError> {
        self.drop_rows(message_id, peer, is_dead)
    }

    /// Deletes every message still meant for `peer` (pending, retrying or
    /// dead; delivered ones stay as the record of what it got), for a
    /// removed peer added again: what was queued for its earlier life, and
    /// granted under its earlier grants, must not go to whoever holds its
    /// key now. Returns how many.
    pub fn forget_queued(&self, peer: &str) -> Result<usize, StoreError> {
        self.drop_rows(None, Some(peer), |status| {
            status != DeliveryStatus::Delivered
        })
    }

    /// Deletes the rows named (as [`Outbox::each_row`] finds them) whose
    /// status `wanted` takes, with their id, index and announcement rows.
    fn drop_rows(
        &self,
        message_id: Option<&Uuid>,
        peer: Option<&str>,
        wanted: fn(DeliveryStatus) -> bool,
    ) -> Result<usize, StoreError> {
        let mut count = 0;
        let done = self.each_row(message_id, peer, wanted, &mut count, |txn, rows| {
            let mut table = txn.open_table(FED_OUTBOX)?;
            let mut ids = txn.open_table(FED_OUTBOX_IDS)?;
            let mut pending = txn.open_table(FED_PENDING_ROTATIONS)?;
            let mut copies = txn.open_table(FED_OUTBOX_EVENTS)?;
            for (key, message_id) in rows {
                let record = super::event_copies::read_row(&table, &key)?;
                if let Some(copy) = record.and_then(|r| index_key_of(&key, &r)) {
                    copies.remove(copy.as_slice())?;
                }
                table.remove(key.as_slice())?;
                ids.remove(&message_id)?;
                // A dropped key announcement will never reach the peer
                // (typically it was re-pinned by hand): stop signing for it
                // with the old key.
                pending.remove(key.as_slice())?;
            }
            Ok(())
        });
        // Batches that committed before a failure count too.
        self.rescan(count);
        done.map(|()| count)
    }

    /// Once `count` rows changed, the workers rescan from the start: a
    /// requeued row is due again, and a dropped row's seq may be reused.
    fn rescan(&self, count: usize) {
        if count > 0 {
            self.store.fed.outbox.requeued();
            self.store.fed.outbox_grew();
        }
    }

    /// Calls `change` with the rows named whose status `wanted` takes: the
    /// one with `message_id` (if it is `peer`'s, when given), or every one
    /// of `peer` (of every peer without one), batch by batch. Adds to
    /// `count` how many rows each committed batch held.
    fn each_row(
        &self,
        message_id: Option<&Uuid>,
        peer: Option<&str>,
        wanted: fn(DeliveryStatus) -> bool,
        count: &mut usize,
        mut change: impl FnMut(&WriteTransaction, Vec<DeadRow>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if let Some(id) = message_id {
            *count += self.store.write_durable(|txn| {
                let rows = one_row(txn, id, peer, wanted)?;
                let changed = rows.len();
                change(txn, rows)?;
                Ok(changed)
            })?;
            return Ok(());
        }
        let (mut lower, upper) = match peer {
            Some(p) => (
                Bound::Included(outbox_key(p, 0)),
                Bound::Included(outbox_key(p, u64::MAX)),
            ),
            None => (Bound::Unbounded, Bound::Unbounded),
        };
        loop {
            let (changed, next) = self.store.write_durable(|txn| {
                let (rows, next) = rows_in(txn, (lower.as_ref(), upper.as_ref()), wanted)?;
                let changed = rows.len();
                change(txn, rows)?;
                Ok((changed, next))
            })?;
            *count += changed;
            match next {
                Some(last) => lower = Bound::Excluded(last),
                None => return Ok(()),
            }
        }
    }
}

fn is_dead(status: DeliveryStatus) -> bool {
    status == DeliveryStatus::Dead
}

/// The row of `id`, if `wanted` takes its status (and it is `peer`'s, when
/// given).
fn one_row(
    txn: &WriteTransaction,
    id: &Uuid,
    peer: Option<&str>,
    wanted: fn(DeliveryStatus) -> bool,
) -> Result<Vec<DeadRow>, StoreError> {
    let ids = txn.open_table(FED_OUTBOX_IDS)?;
    let Some(key) = ids.get(&id.into_bytes())?.map(|k| k.value().to_vec()) else {
        return Ok(Vec::new());
    };
    let (owner, _) = split_outbox_key(&key)?;
    if peer.is_some_and(|p| p != owner) {
        return Ok(Vec::new());
    }
    let table = txn.open_table(FED_OUTBOX)?;
    let Some(record) = table.get(key.as_slice())? else {
        return Ok(Vec::new());
    };
    let record: OutboxRecord = decode(record.value())?;
    Ok(if wanted(record.status) {
        vec![(key, record.message_id)]
    } else {
        Vec::new()
    })
}

/// The rows in `range` whose status `wanted` takes, reading at most
/// [`SCAN_BATCH`] rows, and no more once [`SCAN_BYTES`] were read, and
/// keeping at most [`DEAD_BATCH`]; with the last key read when the range
/// goes on past it.
fn rows_in(
    txn: &WriteTransaction,
    range: (Bound<&Vec<u8>>, Bound<&Vec<u8>>),
    wanted: fn(DeliveryStatus) -> bool,
) -> Result<(Vec<DeadRow>, Option<Vec<u8>>), StoreError> {
    let table = txn.open_table(FED_OUTBOX)?;
    let bounds = (range.0.map(Vec::as_slice), range.1.map(Vec::as_slice));
    let mut rows = Vec::new();
    let mut last = Vec::new();
    let mut bytes = 0;
    for (scanned, entry) in table.range::<&[u8]>(bounds)?.enumerate() {
        if scanned == SCAN_BATCH || bytes >= SCAN_BYTES || rows.len() == DEAD_BATCH {
            // More may follow: go on after the last row read.
            return Ok((rows, Some(last)));
        }
        let (k, v) = entry?;
        bytes += k.value().len() + v.value().len();
        let record: OutboxRecord = decode(v.value())?;
        if wanted(record.status) {
            rows.push((k.value().to_vec(), record.message_id));
        }
        last.clear();
        last.extend_from_slice(k.value());
    }
    Ok((rows, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    use super::super::test_subscribed_store as subscribed_store;

    /// Dead rows of two peers, found and changed across many small batches.
    #[test]
    fn every_dead_row_is_changed_once_across_batches() {
        let dir = tempfile::tempdir().unwrap();
        let (store, writer) = subscribed_store(dir.path(), &["beta", "gamma"]);
        for _ in 0..10 {
            store.outbox().publish("t.x", "{}").unwrap();
        }
        let kill = |store: &Store| {
            for peer in ["beta", "gamma"] {
                let dead = crate::store::test_sent(store, peer, &[2, 3, 5, 6, 7, 9]);
                let n = store
                    .outbox()
                    .mark_failed(peer, &dead, "no", 0, 1, i64::MAX)
                    .unwrap();
                assert_eq!(n, dead.len());
            }
        };
        let statuses = |store: &Store, peer: &str| -> Vec<DeliveryStatus> {
            let (rows, _) = store
                .outbox()
                .after(Some(peer), None, 100, usize::MAX)
                .unwrap();
            rows.iter().map(|e| e.record.status).collect()
        };
        kill(&store);
        assert_eq!(store.outbox().retry_dead(None, Some("beta")).unwrap(), 6);
        assert!(!statuses(&store, "beta").contains(&DeliveryStatus::Dead));
        assert_eq!(
            statuses(&store, "gamma")
                .iter()
                .filter(|s| **s == DeliveryStatus::Dead)
                .count(),
            6
        );
        assert_eq!(store.outbox().retry_dead(None, None).unwrap(), 6);

        kill(&store);
        assert_eq!(store.outbox().drop_dead(None, None).unwrap(), 12);
        for peer in ["beta", "gamma"] {
            assert_eq!(statuses(&store, peer), vec![DeliveryStatus::Pending; 4]);
        }
        assert_eq!(store.outbox().drop_dead(None, None).unwrap(), 0);
        drop(store);
        writer.shutdown();
    }

    /// Large rows end a scan's transaction early, after the first one.
    #[test]
    fn a_scan_reads_a_bounded_number_of_bytes_per_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let (store, writer) = subscribed_store(dir.path(), &["beta"]);
        let large = format!("\"{}\"", "a".repeat(SCAN_BYTES * 2));
        for _ in 0..4 {
            store.outbox().publish("t.x", &large).unwrap();
        }
        let dead = crate::store::test_sent(&store, "beta", &[1, 2, 3, 4]);
        store
            .outbox()
            .mark_failed("beta", &dead, "no", 0, 1, i64::MAX)
            .unwrap();
        let (rows, next) = store
            .write_durable(|txn| rows_in(txn, (Bound::Unbounded, Bound::Unbounded), is_dead))
            .unwrap();
        assert_eq!(rows.len(), 1, "one large row, then the transaction ends");
        assert!(next.is_some(), "the scan goes on in the next transaction");
        assert_eq!(store.outbox().retry_dead(None, Some("beta")).unwrap(), 4);
        drop(store);
        writer.shutdown();
    }

    /// The newest row dropped, its seq is given to the next message: an
    /// answer about the dropped one (a worker had sent it) does not mark
    /// the new one, which was never sent.
    #[test]
    fn an_answer_about_a_removed_row_does_not_mark_the_row_that_took_its_seq() {
        let dir = tempfile::tempdir().unwrap();
        let (store, writer) = subscribed_store(dir.path(), &["beta"]);
        store.outbox().publish("t.x", "{}").unwrap();
        store.outbox().publish("t.x", "{}").unwrap();
        let sent = crate::store::test_sent(&store, "beta", &[2]);
        store
            .outbox()
            .mark_failed("beta", &sent, "no", 0, 0, i64::MAX)
            .unwrap();
        assert_eq!(store.outbox().drop_dead(None, Some("beta")).unwrap(), 1);
        store.outbox().publish("t.x", "{}").unwrap();
        let taken = crate::store::test_sent(&store, "beta", &[2]);
        assert_ne!(taken, sent, "the seq is given again, to another message");

        store.outbox().mark_delivered("beta", &sent).unwrap();
        store
            .outbox()
            .mark_failed("beta", &sent, "no", 0, 0, i64::MAX)
            .unwrap();
        let (rows, _) = store
            .outbox()
            .after(Some("beta"), None, 100, usize::MAX)
            .unwrap();
        assert_eq!(rows[1].seq, 2);
        assert_eq!(rows[1].record.status, DeliveryStatus::Pending);
        assert_eq!(rows[1].record.attempts, 0);
        store.outbox().mark_delivered("beta", &taken).unwrap();
        let (rows, _) = store
            .outbox()
            .after(Some("beta"), None, 100, usize::MAX)
            .unwrap();
        assert_eq!(rows[1].record.status, DeliveryStatus::Delivered);
        drop(store);
        writer.shutdown();
    }
}
