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
            let plan = uuid::Uuid::from_bytes(plan.value());
            let head = decode_head(head.value())?;
            for seq in [1, head.last_seq] {
                if let Some(record) = events.get(event_key(&plan, seq))? {
                    ids.insert(decode_event(record.value())?.key_id);
                }
            }
        }
        Ok(ids)
    }
}
