//! Bounded storage: the per-peer quota on received messages, and the
//! retention passes that prune old delivered outbox rows, old inbox
//! (dedupe) records and old idempotency records.
//!
//! Table:
//! - `fed_peer_usage`: peer instance id → bytes of inbox records stored for it
//!
//! Every pruning call is one bounded write transaction: it looks at no more
//! than `max_scan` rows after a cursor and returns the cursor to go on from,
//! so the journal writer never waits long behind it. Only delivered outbox
//! rows are pruned, never pending, retrying or dead ones. The newest outbox
//! row of each peer and the newest positioned inbox record are always kept:
//! the next seq and the next inbox position are counted on from them, and a
//! follower's cursor must never be handed out twice.

use std::sync::atomic::Ordering;

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::Db;
use super::federation::{
    DeliveryStatus, FED_INBOX, FED_INBOX_POSITIONS, FED_OUTBOX, FED_OUTBOX_EVENTS, FED_OUTBOX_IDS,
    Inbox, InboxRecord, Outbox, OutboxRecord, ReceiveError, index_key_of, outbox_key,
    split_outbox_key,
};
use super::{EVENTS, IDEMPOTENCY, IdempotencyRecord, Store, StoreError, decode, encode, event_key};

pub(super) const FED_PEER_USAGE: TableDefinition<&str, &[u8]> =
    TableDefinition::new("fed_peer_usage");

/// Bytes accounted for one stored inbox record: its key and encoded value.
pub(super) fn inbox_record_bytes(record: &InboxRecord) -> u64 {
    (16 + encode(record).len()) as u64
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Usage {
    bytes: u64,
}

fn usage_of(txn: &WriteTransaction, peer: &str) -> Result<Usage, StoreError> {
    let table = txn.open_table(FED_PEER_USAGE)?;
    let usage = table
        .get(peer)?
        .map(|v| decode::<Usage>(v.value()))
        .transpose()?;
    Ok(usage.unwrap_or_default())
}

fn set_usage(txn: &WriteTransaction, peer: &str, usage: Usage) -> Result<(), StoreError> {
    let mut table = txn.open_table(FED_PEER_USAGE)?;
    table.insert(peer, encode(&usage).as_slice())?;
    Ok(())
}

/// Adds `bytes` to `peer`'s usage inside `txn`, or refuses (the caller
/// drops the transaction, so nothing of the request is stored) when that
/// would go over the quota.
pub(super) fn charge(
    store: &Store,
    txn: &WriteTransaction,
    peer: &str,
    bytes: u64,
) -> Result<(), ReceiveError> {
    if bytes == 0 {
        return Ok(());
    }
    let mut usage = usage_of(txn, peer)?;
    let quota = store.fed.inbox.peer_quota.load(Ordering::Relaxed);
    let after = usage.bytes.saturating_add(bytes);
    if after > quota {
        return Err(ReceiveError::OverQuota {
            used: usage.bytes,
            quota,
        });
    }
    usage.bytes = after;
    set_usage(txn, peer, usage)?;
    Ok(())
}

/// Commits a pruning step, or drops it when it removed nothing: a pass
/// over a table with nothing to prune costs no fsync.
/// Commits through the shared handle, so that an I/O fault takes it down
/// for the writer to reopen, as for any write outside the writer.
fn finish(db: &Db, txn: WriteTransaction, step: &PruneStep) -> Result<(), StoreError> {
    if step.removed == 0 {
        txn.abort()?;
    } else {
        db.commit(txn)?;
    }
    Ok(())
}

/// The bounded walk every pruning step makes: it visits at most `max_scan`
/// entries of `range`, keeps what `visit` picks, and, when it stopped
/// before the end, records in `step.next` the cursor `visit` gave for the
/// last entry seen. Removal happens after the walk, as redb forbids
/// changing a table while a range over it is open.
fn scan<K: redb::Key + 'static, V: redb::Value + 'static, T>(
    range: redb::Range<'_, K, V>,
    max_scan: usize,
    step: &mut PruneStep,
    mut visit: impl FnMut(K::SelfType<'_>, V::SelfType<'_>) -> Result<(Vec<u8>, Option<T>), StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut doomed = Vec::new();
    for (scanned, entry) in (1..).zip(range) {
        let (k, v) = entry?;
        let (cursor, pick) = visit(k.value(), v.value())?;
        doomed.extend(pick);
        if scanned >= max_scan {
            step.next = Some(cursor);
            break;
        }
    }
    Ok(doomed)
}

/// What one pruning call did, and where the next one goes on.
#[derive(Debug, Default)]
pub struct PruneStep {
    pub removed: usize,
    /// The key to continue after; `None` when the table was scanned to its end.
    pub next: Option<Vec<u8>>,
}

impl Outbox<'_> {
    /// Removes delivered outbox rows last updated before `cutoff_ms`,
    /// looking at up to `max_scan` rows after `after`.
    pub fn prune(
        &self,
        after: Option<&[u8]>,
        cutoff_ms: i64,
        max_scan: usize,
    ) -> Result<PruneStep, StoreError> {
        let txn = self.store.db.begin_write()?;
        let mut step = PruneStep::default();
        {
            let mut outbox = txn.open_table(FED_OUTBOX)?;
            let mut ids = txn.open_table(FED_OUTBOX_IDS)?;
            let mut copies = txn.open_table(FED_OUTBOX_EVENTS)?;
            let range = match after {
                Some(key) => outbox
                    .range::<&[u8]>((std::ops::Bound::Excluded(key), std::ops::Bound::Unbounded))?,
                None => outbox.range::<&[u8]>(..)?,
            };
            let doomed = scan(range, max_scan, &mut step, |key, value| {
                let record: OutboxRecord = decode(value)?;
                let old =
                    record.status == DeliveryStatus::Delivered && record.updated_at < cutoff_ms;
                Ok((
                    key.to_vec(),
                    old.then(|| (key.to_vec(), record.message_id, index_key_of(key, &record))),
                ))
            })?;
            for (key, message_id, copy) in doomed {
                let (peer, _) = split_outbox_key(&key)?;
                let last = outbox
                    .range(
                        outbox_key(&peer, 0).as_slice()..=outbox_key(&peer, u64::MAX).as_slice(),
                    )?
                    .next_back()
                    .transpose()?
                    .map(|(k, _)| k.value().to_vec());
                if last.as_deref() == Some(key.as_slice()) {
                    continue;
                }
                outbox.remove(key.as_slice())?;
                ids.remove(&message_id)?;
                if let Some(copy) = copy {
                    copies.remove(copy.as_slice())?;
                }
                step.removed += 1;
            }
        }
        finish(&self.store.db, txn, &step)?;
        Ok(step)
    }
}

impl Inbox<'_> {
    /// Sets the per-peer quota on stored received messages, in bytes.
    pub(crate) fn set_peer_quota(&self, bytes: u64) {
        self.store
            .fed
            .inbox
            .peer_quota
            .store(bytes, Ordering::Relaxed);
    }

    /// Removes inbox records (the dedupe records of received messages and
    /// control requests) received before `cutoff_ms`, looking at up to
    /// `max_scan` records after the message id `after`, and gives their
    /// bytes back to their peer's quota.
    pub fn prune(
        &self,
        after: Option<&[u8]>,
        cutoff_ms: i64,
        max_scan: usize,
    ) -> Result<PruneStep, StoreError> {
        let txn = self.store.db.begin_write()?;
        let mut step = PruneStep::default();
        let mut freed: std::collections::HashMap<String, u64> = Default::default();
        {
            let mut inbox = txn.open_table(FED_INBOX)?;
            let mut positions = txn.open_table(FED_INBOX_POSITIONS)?;
            let last_position = positions.last()?.map_or(0, |(k, _)| k.value());
            let start: [u8; 16] = match after {
                Some(key) => key
                    .try_into()
                    .map_err(|_| StoreError("corrupt inbox cursor".into()))?,
                None => [0; 16],
            };
            let range = match after {
                Some(_) => inbox.range::<&[u8; 16]>((
                    std::ops::Bound::Excluded(&start),
                    std::ops::Bound::Unbounded,
                ))?,
                None => inbox.range::<&[u8; 16]>(..)?,
            };
            let doomed = scan(range, max_scan, &mut step, |id, value| {
                let record: InboxRecord = decode(value)?;
                let newest = record.position != 0 && record.position == last_position;
                let old = record.received_at < cutoff_ms && !newest;
                Ok((id.to_vec(), old.then_some((*id, record))))
            })?;
            for (id, record) in doomed {
                inbox.remove(&id)?;
                if record.position != 0 {
                    positions.remove(record.position)?;
                }
                *freed.entry(record.peer.clone()).or_default() += inbox_record_bytes(&record);
                step.removed += 1;
            }
        }
        for (peer, bytes) in freed {
            let mut usage = usage_of(&txn, &peer)?;
            usage.bytes = usage.bytes.saturating_sub(bytes);
            set_usage(&txn, &peer, usage)?;
        }
        finish(&self.store.db, txn, &step)?;
        Ok(step)
    }
}

impl Store {
    /// Removes idempotency records whose event was appended before
    /// `cutoff_ms`, looking at up to `max_scan` records after `after`. A
    /// retry with a pruned key appends a new event.
    pub fn prune_idempotency(
        &self,
        after: Option<&[u8]>,
        cutoff_ms: i64,
        max_scan: usize,
    ) -> Result<PruneStep, StoreError> {
        let txn = self.db.begin_write()?;
        let mut step = PruneStep::default();
        {
            let mut table = txn.open_table(IDEMPOTENCY)?;
            let events = txn.open_table(EVENTS)?;
            let range = match after {
                Some(key) => table
                    .range::<&[u8]>((std::ops::Bound::Excluded(key), std::ops::Bound::Unbounded))?,
                None => table.range::<&[u8]>(..)?,
            };
            let doomed = scan(range, max_scan, &mut step, |key, value| {
                let record: IdempotencyRecord = decode(value)?;
                let plan = key
                    .get(..16)
                    .and_then(|id| uuid::Uuid::from_slice(id).ok())
                    .ok_or_else(|| StoreError("corrupt idempotency key".into()))?;
                let created_at = events
                    .get(&event_key(&plan, record.seq))?
                    .map(|v| super::decode_event(v.value()))
                    .transpose()?
                    .map(|e| e.created_at);
                // A record whose event is gone (its plan was deleted) is pruned too.
                let old = created_at.is_none_or(|t| t < cutoff_ms);
                Ok((key.to_vec(), old.then(|| key.to_vec())))
            })?;
            for key in doomed {
                table.remove(key.as_slice())?;
                step.removed += 1;
            }
        }
        finish(&self.db, txn, &step)?;
        Ok(step)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::federation::{Direction, QueueCounts, inert_text, test_peer};
    use super::*;

    #[test]
    fn peer_text_is_escaped_and_capped() {
        assert_eq!(
            inert_text("a\u{1b}[31mb\r\n\u{202e}c é"),
            r"a\u{1b}[31mb\u{d}\u{a}\u{202e}c é"
        );
        let long = inert_text(&"é".repeat(5000));
        assert!(long.len() <= 4096 && long.ends_with('…'), "{}", long.len());
        let escapes = inert_text(&"\u{7}".repeat(2000));
        assert!(escapes.len() <= 4096 && !escapes.contains('\u{7}'));
    }

    #[test]
    fn only_old_delivered_rows_go_and_the_newest_row_stays() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = Arc::new(crate::keys::Keyring::from_secret(b"k".to_vec()));
        let fanout = crate::fanout::fanout();
        let (store, writer) = Store::open(&dir.path().join("store.redb"), keyring, fanout).unwrap();
        store.peers().put(&test_peer("beta")).unwrap();
        store
            .peers()
            .subscribe(Direction::Inbound, "beta", "t.>")
            .unwrap();
        for _ in 0..4 {
            store.outbox().publish("t.x", "{}").unwrap();
        }
        // What a delivery worker reads is bounded in bytes too (at least
        // one row).
        let due = |max_bytes| {
            let (rows, _, _) = store
                .outbox()
                .due("beta", 0, 10, max_bytes, i64::MAX)
                .unwrap();
            rows.iter().map(|(seq, _)| *seq).collect::<Vec<_>>()
        };
        assert_eq!(due(usize::MAX), vec![1, 2, 3, 4]);
        assert_eq!(due(1), vec![1]);
        let sent = crate::store::test_sent(&store, "beta", &[1, 2]);
        store.outbox().mark_delivered("beta", &sent).unwrap();
        store
            .outbox()
            .mark_failed(
                "beta",
                &crate::store::test_sent(&store, "beta", &[3]),
                "no",
                0,
                1,
                i64::MAX,
            )
            .unwrap();
        let seqs = |store: &Store| -> Vec<u64> {
            let (rows, _) = store.outbox().after(None, None, 100, usize::MAX).unwrap();
            rows.iter().map(|e| e.seq).collect()
        };
        // Pages are bounded in bytes (after at least one row) and say
        // whether more may follow; counts hold no row.
        let (one, more) = store.outbox().after(None, None, 100, 1).unwrap();
        assert_eq!((one.len(), more), (1, true));
        let (rest, more) = store
            .outbox()
            .after(Some("beta"), Some(("beta", 1)), 100, usize::MAX)
            .unwrap();
        let rest: Vec<u64> = rest.iter().map(|e| e.seq).collect();
        assert_eq!((rest, more), (vec![2, 3, 4], false));
        // Delivered rows are passed over; each count stops at the cap.
        let counts = |cap| store.outbox().counts("beta", cap).unwrap();
        assert_eq!(
            counts(100),
            QueueCounts {
                waiting: 1,
                dead: 1
            }
        );
        assert_eq!(
            counts(1),
            QueueCounts {
                waiting: 1,
                dead: 1
            }
        );
        // Too recent: nothing goes.
        let step = store.outbox().prune(None, 0, 100).unwrap();
        assert_eq!((step.removed, seqs(&store)), (0, vec![1, 2, 3, 4]));
        // One row per call: the cursor carries on where it stopped.
        let future = i64::MAX;
        let mut after: Option<Vec<u8>> = None;
        let mut removed = 0;
        loop {
            let step = store.outbox().prune(after.as_deref(), future, 1).unwrap();
            removed += step.removed;
            match step.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        // Delivered 1 and 2 go; dead 3 and pending 4 stay.
        assert_eq!((removed, seqs(&store)), (2, vec![3, 4]));
        let sent = crate::store::test_sent(&store, "beta", &[4]);
        store.outbox().mark_delivered("beta", &sent).unwrap();
        store.outbox().prune(None, future, 100).unwrap();
        assert_eq!(seqs(&store), [3, 4], "the newest row keeps the seq");
        store.outbox().publish("t.x", "{}").unwrap();
        assert_eq!(seqs(&store), [3, 4, 5]);
        drop(store);
        writer.shutdown();
    }
}
