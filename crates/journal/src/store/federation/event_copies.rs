//! `fed_outbox_events`: where the outbox holds copies of each journal event.
//!
//! Redaction must rewrite every outbox copy of an erased event, and plan
//! deletion must forget every copy of the plan's events, in their own
//! transaction on the writer thread. Outbox rows are keyed by peer and
//! name no plan, and delivered rows stay for `keep_days`: without this
//! index each redaction batch read the whole outbox, so a retention pass
//! over a federating store stalled appends for as long as the outbox was
//! large. With it, a batch reads only the copies it changes.
//!
//! Key: plan id (16) ‖ seq (u64 BE) ‖ `fed_outbox` key; empty value.
//!
//! The index may name more than the outbox holds (a row removed without
//! its entry, a key given again to another event): every reader checks the
//! row's own event before acting on it. It must never name less: a copy
//! missing here would keep a redacted payload. So rows are added to it in
//! the transaction that queues them, and removed from it only with them.
//!
//! A build from before the index queues copies without it, and may run on
//! this store (after a downgrade, or on a restored older backup). So the
//! empty key holds the journal position up to which the index is known
//! complete, written at a clean stop of the writer. Only appends queue
//! copies, and each takes a new position, above the highest in the store
//! (a plan deletion removes positions but appends its tombstone above
//! them in the same transaction, so the highest never goes down): at
//! open, a store whose last position is past that mark (or that has none)
//! is indexed again from the whole outbox ([`index_outbox`]). So is one
//! after a crash, or restored from a backup taken while it ran.

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use uuid::Uuid;

use super::OutboxRecord;
use crate::store::{StoreError, decode};

pub(in crate::store) const FED_OUTBOX_EVENTS: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("fed_outbox_events");

pub(super) type IndexTable<'txn> = redb::Table<'txn, &'static [u8], &'static [u8]>;

/// The mark's key: its value is the position (u64 BE) up to which the
/// index holds every copy.
const COMPLETE: &[u8] = &[];

/// The index key of `event`'s copy at `outbox_key`.
pub(super) fn copy_key(plan: &Uuid, seq: u64, outbox_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(24 + outbox_key.len());
    key.extend_from_slice(plan.as_bytes());
    key.extend_from_slice(&seq.to_be_bytes());
    key.extend_from_slice(outbox_key);
    key
}

/// The index keys starting with `prefix` (a plan id, or a plan id and a
/// seq); the outbox key of each is what follows its first 24 bytes.
pub(super) fn keys_with_prefix(
    index: &IndexTable<'_>,
    prefix: &[u8],
) -> Result<Vec<Vec<u8>>, StoreError> {
    debug_assert!(
        !prefix.is_empty(),
        "the empty prefix is every row and the mark"
    );
    let mut keys = Vec::new();
    for entry in index.range(prefix..)? {
        let (k, _) = entry?;
        if !k.value().starts_with(prefix) {
            break;
        }
        keys.push(k.value().to_vec());
    }
    Ok(keys)
}

/// The outbox row at `key`, if there is one.
pub(super) fn read_row(
    outbox: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &[u8],
) -> Result<Option<OutboxRecord>, StoreError> {
    outbox
        .get(key)?
        .map(|v| decode::<OutboxRecord>(v.value()))
        .transpose()
}

/// The outbox key inside an index key.
pub(super) fn outbox_key_of(index_key: &[u8]) -> &[u8] {
    &index_key[24..]
}

/// The index row of the outbox row `outbox_key` holding `record`, if its
/// payload is a journal event: whatever removes the row removes this one
/// in the same transaction. Reads only the plan and seq of the payload.
pub(in crate::store) fn index_key_of(outbox_key: &[u8], record: &OutboxRecord) -> Option<Vec<u8>> {
    #[derive(serde::Deserialize)]
    struct Id {
        plan_id: Uuid,
        seq: u64,
    }
    let id = serde_json::from_str::<Id>(&record.payload).ok()?;
    Some(copy_key(&id.plan_id, id.seq, outbox_key))
}

/// What [`index_outbox`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(in crate::store) struct Indexed {
    /// Outbox rows read (0: the index was complete).
    pub(in crate::store) scanned: usize,
    /// Entries that were missing and are now in the index (usually all
    /// or none: a store from before it, or an older build's run).
    pub(in crate::store) added: usize,
    /// Rows that do not decode: their copies cannot be sent either.
    pub(in crate::store) unreadable: usize,
}

/// Indexes every journal event the outbox holds, unless the index is
/// complete up to the store's last position. Runs in the transaction that
/// opens the store, before any write can queue a row. Entries already
/// there stay: a stale one is harmless.
pub(in crate::store) fn index_outbox(txn: &WriteTransaction) -> Result<Indexed, StoreError> {
    let last = txn
        .open_table(crate::store::POSITIONS)?
        .last()?
        .map_or(0, |(k, _)| k.value());
    let mut index = txn.open_table(FED_OUTBOX_EVENTS)?;
    let mark = index
        .get(COMPLETE)?
        .and_then(|v| <[u8; 8]>::try_from(v.value()).ok());
    if mark.is_some_and(|mark| u64::from_be_bytes(mark) >= last) {
        return Ok(Indexed::default());
    }
    let outbox = txn.open_table(super::FED_OUTBOX)?;
    let mut done = Indexed::default();
    for entry in outbox.iter()? {
        let (k, v) = entry?;
        done.scanned += 1;
        let Ok(record) = decode::<OutboxRecord>(v.value()) else {
            done.unreadable += 1;
            continue;
        };
        // Every row whose payload names a plan and seq: more than the
        // journal's copies (a published message shaped like one), which
        // readers tell apart by the row's own event. An entry already
        // there is not written again: after a crash the index is usually
        // whole, and the scan then only reads.
        if let Some(copy) = index_key_of(k.value(), &record)
            && index.get(copy.as_slice())?.is_none()
        {
            index.insert(copy.as_slice(), [].as_slice())?;
            done.added += 1;
        }
    }
    index.insert(COMPLETE, last.to_be_bytes().as_slice())?;
    Ok(done)
}

/// Marks the index complete up to `position`: the writer's last, at its
/// clean stop.
pub(in crate::store) fn mark_complete(
    txn: &WriteTransaction,
    position: u64,
) -> Result<(), StoreError> {
    txn.open_table(FED_OUTBOX_EVENTS)?
        .insert(COMPLETE, position.to_be_bytes().as_slice())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;
    use crate::chain::CanonicalPayload;
    use crate::store::federation::{outbox_key, test_sent, test_subscribed_store};
    use crate::store::{AppendRequest, Store, Writer};

    const PEERS: [&str; 2] = ["beta", "gamma"];

    fn open(dir: &Path) -> (Store, Writer) {
        test_subscribed_store(dir, &PEERS)
    }

    async fn close(store: Store, writer: Writer) {
        drop(store);
        tokio::task::spawn_blocking(move || writer.shutdown())
            .await
            .unwrap();
    }

    fn step(plan: Uuid) -> AppendRequest {
        AppendRequest {
            plan_id: plan,
            event_type: "t.x".into(),
            actor: None,
            payload: CanonicalPayload::new(&json!({ "secret": "s" })),
            expected_seq: None,
            idempotency: None,
        }
    }

    /// Every index key, the mark's included.
    fn index(store: &Store) -> Vec<Vec<u8>> {
        let txn = store.db.begin_read().unwrap();
        let table = txn.open_table(FED_OUTBOX_EVENTS).unwrap();
        table
            .iter()
            .unwrap()
            .map(|e| e.unwrap().0.value().to_vec())
            .collect()
    }

    /// Runs `f` in a write transaction of `store`, as an older build would.
    fn behind_its_back(store: &Store, f: impl FnOnce(&mut IndexTable<'_>)) {
        let txn = store.db.begin_write().unwrap();
        f(&mut txn.open_table(FED_OUTBOX_EVENTS).unwrap());
        txn.commit().unwrap();
    }

    /// `peer`'s rows, by seq: whether each still holds the secret.
    fn secrets(store: &Store, peer: &str) -> Vec<(u64, bool)> {
        let (rows, _) = store
            .outbox()
            .after(Some(peer), None, 100, usize::MAX)
            .unwrap();
        rows.iter()
            .map(|r| (r.seq, r.record.payload.contains("\"secret\"")))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn copies_are_indexed_found_and_forgotten_with_their_rows() {
        let dir = tempfile::tempdir().unwrap();
        let (store, writer) = open(dir.path());
        let (p, q) = (Uuid::from_u128(1), Uuid::from_u128(2));
        for plan in [p, p, p, q] {
            store.append(step(plan)).await.unwrap();
        }
        // Two peers, four events: eight copies, and the mark first.
        let keys = index(&store);
        assert_eq!((keys.len(), keys[0].as_slice()), (9, COMPLETE));
        // A published message is no journal event.
        store.outbox().publish("t.x", "{\"secret\":1}").unwrap();
        assert_eq!(index(&store).len(), 9);

        // A stale entry (p/3 at gamma's row 1, which holds p/1) changes
        // nothing: the row's own event decides.
        behind_its_back(&store, |t| {
            t.insert(
                copy_key(&p, 3, &outbox_key("gamma", 1)).as_slice(),
                [].as_slice(),
            )
            .unwrap();
        });
        // Redaction rewrites exactly the copies of p/2 (row 2 of each peer).
        store.redact_for_test(p, 2).await;
        let expect = vec![(1, true), (2, false), (3, true), (4, true), (5, true)];
        assert_eq!(secrets(&store, "beta"), expect);
        assert_eq!(secrets(&store, "gamma"), expect);
        store.redact_for_test(p, 3).await;
        assert_eq!(secrets(&store, "gamma")[0], (1, true));

        // Their rows' removal takes the index rows: a delivered one pruned,
        // a dead one dropped.
        store
            .outbox()
            .mark_delivered("beta", &test_sent(&store, "beta", &[1, 2]))
            .unwrap();
        store.outbox().prune(None, i64::MAX, 100).unwrap();
        let dead = test_sent(&store, "gamma", &[4]);
        store
            .outbox()
            .mark_failed("gamma", &dead, "no", 0, 1, i64::MAX)
            .unwrap();
        assert_eq!(store.outbox().drop_dead(None, Some("gamma")).unwrap(), 1);
        let kept = index(&store);
        assert_eq!(kept.len(), 9 + 1 - 3);
        assert!(!kept.contains(&copy_key(&p, 1, &outbox_key("beta", 1))));
        assert!(!kept.contains(&copy_key(&q, 1, &outbox_key("gamma", 4))));

        // A clean stop marks the index complete: the next start trusts it
        // and reads no outbox row (an entry removed here stays missing).
        let q1 = copy_key(&q, 1, &outbox_key("beta", 4));
        behind_its_back(&store, |t| {
            t.remove(q1.as_slice()).unwrap();
        });
        close(store, writer).await;
        let (store, writer) = open(dir.path());
        assert!(!index(&store).contains(&q1));
        behind_its_back(&store, |t| {
            t.insert(q1.as_slice(), [].as_slice()).unwrap();
        });
        assert_eq!(index(&store), kept);

        // An older build appended behind the index's back: its copies are
        // not in the index, and the mark is the one this build left.
        let mark = {
            let txn = store.db.begin_read().unwrap();
            let table = txn.open_table(FED_OUTBOX_EVENTS).unwrap();
            table.get(COMPLETE).unwrap().unwrap().value().to_vec()
        };
        store.append(step(q)).await.unwrap();
        behind_its_back(&store, |t| {
            for peer in PEERS {
                t.remove(copy_key(&q, 2, &outbox_key(peer, 6)).as_slice())
                    .unwrap();
            }
        });
        assert_eq!(index(&store).len(), kept.len());
        close(store, writer).await;
        {
            let db = redb::Database::open(dir.path().join("s.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(FED_OUTBOX_EVENTS)
                .unwrap()
                .insert(COMPLETE, mark.as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let (store, writer) = open(dir.path());
        assert_eq!(index(&store).len(), kept.len() + 2);
        store.redact_for_test(q, 2).await;
        assert_eq!(secrets(&store, "beta").last(), Some(&(6, false)));
        assert_eq!(secrets(&store, "gamma").last(), Some(&(6, false)));

        // Deleting p forgets its copies: undelivered ones go, a delivered
        // one (beta's row 3) stays with its payload blanked.
        store
            .outbox()
            .mark_delivered("beta", &test_sent(&store, "beta", &[3]))
            .unwrap();
        store.delete_plan(p, json!({})).await.unwrap();
        assert!(index(&store).iter().all(|k| !k.starts_with(p.as_bytes())));
        let beta = store
            .outbox()
            .after(Some("beta"), None, 100, usize::MAX)
            .unwrap()
            .0;
        let blanked: Vec<u64> = beta
            .iter()
            .filter(|r| r.record.payload == "null")
            .map(|r| r.seq)
            .collect();
        assert_eq!(blanked, [3]);
        assert!(secrets(&store, "gamma").iter().all(|(seq, _)| *seq >= 4));
        close(store, writer).await;
    }
}
