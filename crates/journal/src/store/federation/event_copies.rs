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
//! Key: plan id (16) ‖ seq (u64 BE) ‖ `fed_outbox` key; no value. The empty
//! key marks the index complete: a store from before it (or restored from
//! such a backup) is indexed once when opened ([`index_outbox`]).
//!
//! The index may name more than the outbox holds (a row removed without
//! its entry, a key given again to another event): every reader checks the
//! row's own event before acting on it. It must never name less: a copy
//! missing here would keep a redacted payload. So rows are added to it in
//! the transaction that queues them, and removed from it only with them.

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use uuid::Uuid;

use super::OutboxRecord;
use crate::event::Event;
use crate::store::{StoreError, decode};

pub(in crate::store) const FED_OUTBOX_EVENTS: TableDefinition<&[u8], ()> =
    TableDefinition::new("fed_outbox_events");

pub(super) type IndexTable<'txn> = redb::Table<'txn, &'static [u8], ()>;

/// The marker row: the index holds every journal event in the outbox.
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
        "the empty prefix is every row and the marker"
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

/// Indexes every journal event the outbox holds, unless the index is
/// complete already; returns how many rows were indexed. Runs in the
/// transaction that opens the store, before any write can queue a row.
pub(in crate::store) fn index_outbox(txn: &WriteTransaction) -> Result<usize, StoreError> {
    let mut index = txn.open_table(FED_OUTBOX_EVENTS)?;
    if index.get(COMPLETE)?.is_some() {
        return Ok(0);
    }
    let outbox = txn.open_table(super::FED_OUTBOX)?;
    let mut indexed = 0;
    for entry in outbox.iter()? {
        let (k, v) = entry?;
        let record: OutboxRecord = decode(v.value())?;
        // What redaction and deletion looked at before the index: rows
        // whose payload is a whole journal event.
        if let Ok(event) = serde_json::from_str::<Event>(&record.payload) {
            index.insert(
                copy_key(&event.plan_id, event.seq, k.value()).as_slice(),
                (),
            )?;
            indexed += 1;
        }
    }
    index.insert(COMPLETE, ())?;
    Ok(indexed)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::chain::CanonicalPayload;
    use crate::store::federation::{Direction, test_peer, test_sent};
    use crate::store::redact::{RedactedBy, Redaction};
    use crate::store::{AppendRequest, Store, Writer};

    const PEERS: [&str; 2] = ["beta", "gamma"];

    fn open(dir: &Path) -> (Store, Writer) {
        let keyring = Arc::new(crate::keys::Keyring::from_secret(b"k".to_vec()));
        let (store, writer) =
            Store::open(&dir.join("s.redb"), keyring, crate::fanout::fanout()).unwrap();
        for peer in PEERS {
            store.peers().put(&test_peer(peer)).unwrap();
            store
                .peers()
                .subscribe(Direction::Inbound, peer, "t.>")
                .unwrap();
        }
        (store, writer)
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

    /// Every index key, the marker included.
    fn index(store: &Store) -> Vec<Vec<u8>> {
        let txn = store.db.begin_read().unwrap();
        let table = txn.open_table(FED_OUTBOX_EVENTS).unwrap();
        table
            .iter()
            .unwrap()
            .map(|e| e.unwrap().0.value().to_vec())
            .collect()
    }

    /// `peer`'s outbox rows that still hold a payload secret.
    fn secrets(store: &Store, peer: &str) -> usize {
        let (rows, _) = store
            .outbox()
            .after(Some(peer), None, 100, usize::MAX)
            .unwrap();
        rows.iter()
            .filter(|r| r.record.payload.contains("\"secret\""))
            .count()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn copies_are_indexed_found_and_forgotten_with_their_rows() {
        let dir = tempfile::tempdir().unwrap();
        let (store, writer) = open(dir.path());
        let (p, q) = (Uuid::from_u128(1), Uuid::from_u128(2));
        for plan in [p, p, p, q] {
            store.append(step(plan)).await.unwrap();
        }
        // Two peers, four events: eight copies, and the marker first.
        let keys = index(&store);
        assert_eq!((keys.len(), keys[0].as_slice()), (9, COMPLETE));
        // A published message is no journal event.
        store.outbox().publish("t.x", "{\"secret\":1}").unwrap();
        assert_eq!(index(&store).len(), 9);

        // Redaction rewrites both copies of p/2 found through the index.
        let outcomes = store
            .redact(vec![Redaction {
                plan_id: p,
                seq: 2,
                reason: "test".into(),
                by: RedactedBy::Retention,
            }])
            .await
            .unwrap();
        assert!(outcomes[0].is_ok());
        assert_eq!(PEERS.map(|peer| secrets(&store, peer)), [4, 4]);

        // Their rows' removal takes the index rows: a delivered one pruned,
        // a dead one dropped.
        store
            .outbox()
            .mark_delivered("beta", &test_sent(&store, "beta", &[1]))
            .unwrap();
        assert_eq!(
            store.outbox().prune(None, i64::MAX, 100).unwrap().removed,
            1
        );
        let dead = test_sent(&store, "gamma", &[4]);
        store
            .outbox()
            .mark_failed("gamma", &dead, "no", 0, 1, i64::MAX)
            .unwrap();
        assert_eq!(store.outbox().drop_dead(None, Some("gamma")).unwrap(), 1);
        let kept = index(&store);
        assert_eq!(kept.len(), 7);
        assert!(!kept.contains(&copy_key(&p, 1, &super::super::outbox_key("beta", 1))));
        assert!(!kept.contains(&copy_key(&q, 1, &super::super::outbox_key("gamma", 4))));

        // A store from before the index is indexed when opened.
        let txn = store.db.begin_write().unwrap();
        txn.open_table(FED_OUTBOX_EVENTS)
            .unwrap()
            .retain(|_, _| false)
            .unwrap();
        txn.commit().unwrap();
        drop(store);
        tokio::task::spawn_blocking(move || writer.shutdown())
            .await
            .unwrap();
        let (store, writer) = open(dir.path());
        assert_eq!(index(&store), kept);

        // Deleting p forgets its copies (and their index rows); q's stay.
        store.delete_plan(p, json!({})).await.unwrap();
        assert_eq!(index(&store).len(), 1 + 1);
        assert_eq!(PEERS.map(|peer| secrets(&store, peer)), [2, 1]);
        tokio::task::spawn_blocking(move || writer.shutdown())
            .await
            .unwrap();
    }
}
