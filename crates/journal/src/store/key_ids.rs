//! The HMAC key ids a store's events name, cheaply: the first and the last
//! event of every plan (two point reads per plan, no scan of the events).
//! A start compares them with the keyring, so a data dir restored without
//! `hmac.key` or `hmac-retired/` is named at once instead of looking like
//! tampering at the next verify. An id used only in the middle of a plan
//! (two rotations during its life) is left to verify (`missing-key`).

use std::collections::BTreeSet;

use redb::ReadableTable;

use super::head::decode_head;
use super::records::{decode_event, event_key};
use super::{EVENTS, HEADS, Store, StoreError};

impl Store {
    /// The key ids of the first and the last event of every plan.
    pub fn key_ids_in_use(&self) -> Result<BTreeSet<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let heads = txn.open_table(HEADS)?;
        let events = txn.open_table(EVENTS)?;
        let mut ids = BTreeSet::new();
        for entry in heads.iter()? {
            let (plan, head) = entry?;
            let plan = uuid::Uuid::from_bytes(*plan.value());
            let head = decode_head(head.value())?;
            for seq in [1, head.last_seq] {
                if let Some(record) = events.get(&event_key(&plan, seq))? {
                    ids.insert(decode_event(record.value())?.key_id);
                }
            }
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use uuid::Uuid;

    use super::super::{AppendRequest, AsyncStore, Store};
    use crate::chain::CanonicalPayload;
    use crate::keys::Keyring;

    fn request(plan_id: Uuid) -> AppendRequest {
        AppendRequest {
            plan_id,
            event_type: "step.done".into(),
            actor: None,
            payload: CanonicalPayload::new(&serde_json::json!({})),
            expected_seq: None,
            idempotency: None,
        }
    }

    /// A plan begun under one key and continued under the next names both;
    /// a plan of one event names its key once.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_first_and_last_key_of_every_plan() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (
            Keyring::from_secret(b"old-key".to_vec()),
            Keyring::from_secret(b"new-key".to_vec()),
        );
        let fanout = crate::fanout::fanout();
        let (store, writer) =
            Store::open(&dir.path().join("j.redb"), Arc::new(old.clone()), fanout).unwrap();
        let store = AsyncStore::new(store);
        let (long, short) = (Uuid::new_v4(), Uuid::new_v4());
        for _ in 0..3 {
            store.append(request(long)).await.unwrap();
        }
        store.replace_keyring(new.clone());
        store.append(request(long)).await.unwrap();
        store.append(request(short)).await.unwrap();
        let ids = store.run(|s| s.key_ids_in_use()).await.unwrap();
        let expected: Vec<String> = vec![old.current_id().into(), new.current_id().into()];
        let mut expected = expected;
        expected.sort();
        assert_eq!(ids.into_iter().collect::<Vec<_>>(), expected);
        drop(store);
        tokio::task::spawn_blocking(move || writer.shutdown())
            .await
            .unwrap();
    }

    /// The cost grows with the number of plans, not of events: run with
    /// `cargo test -p logbook-journal --lib key_ids -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread")]
    #[ignore = "a measurement, not a check"]
    async fn cost_per_plan() {
        let dir = tempfile::tempdir().unwrap();
        let fanout = crate::fanout::fanout();
        let keyring = Arc::new(Keyring::from_secret(b"key".to_vec()));
        let (store, writer) = Store::open(&dir.path().join("j.redb"), keyring, fanout).unwrap();
        let store = AsyncStore::new(store);
        let plans = 10_000;
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    for _ in 0..plans / 64 {
                        let plan = Uuid::new_v4();
                        store.append(request(plan)).await.unwrap();
                        store.append(request(plan)).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let started = std::time::Instant::now();
        let ids = store.run(|s| s.key_ids_in_use()).await.unwrap();
        println!(
            "{} plans: {:?} ({} ids)",
            plans / 64 * 64,
            started.elapsed(),
            ids.len()
        );
        drop(store);
        tokio::task::spawn_blocking(move || writer.shutdown())
            .await
            .unwrap();
    }
}
