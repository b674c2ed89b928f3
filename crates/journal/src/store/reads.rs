//! Read paths: plan heads, event pages, store-wide positions (the whole-chain
//! verification is in `plan_verify.rs`).

use redb::ReadableTable;
use uuid::Uuid;

use super::head::decode_head;
use super::{
    Db, EVENTS, HEADS, Health, POSITIONS, PlanHead, Store, StoreError, decode_event,
    event_from_record, event_key,
};
use crate::event::Event;

impl Store {
    pub fn head(&self, plan_id: &Uuid) -> Result<Option<PlanHead>, StoreError> {
        let txn = self.db.begin_read()?;
        let heads = txn.open_table(HEADS)?;
        heads
            .get(&plan_id.into_bytes())?
            .map(|v| decode_head(v.value()))
            .transpose()
    }

    /// Plans in id order, starting after `after`.
    pub fn plans_after(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<(Uuid, PlanHead)>, StoreError> {
        let txn = self.db.begin_read()?;
        let heads = txn.open_table(HEADS)?;
        let after = after.map(Uuid::into_bytes);
        let range = match &after {
            Some(after) => heads.range::<&[u8; 16]>((
                std::ops::Bound::Excluded(after),
                std::ops::Bound::Unbounded,
            ))?,
            None => heads.range::<&[u8; 16]>(..)?,
        };
        let mut out = Vec::new();
        for entry in range.take(limit) {
            let (k, v) = entry?;
            out.push((Uuid::from_bytes(*k.value()), decode_head(v.value())?));
        }
        Ok(out)
    }

    /// Events of a plan with seq > `after`, in order, at most `limit`.
    pub fn plan_events_after(
        &self,
        plan_id: &Uuid,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let Some(first) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let txn = self.db.begin_read()?;
        let events = txn.open_table(EVENTS)?;
        let mut out = Vec::new();
        for entry in events
            .range::<&[u8; 24]>(&event_key(plan_id, first)..=&event_key(plan_id, u64::MAX))?
            .take(limit)
        {
            let (k, v) = entry?;
            out.push(event_from_record(k.value(), decode_event(v.value())?)?);
        }
        Ok(out)
    }

    /// Events of every plan with store-wide position > `after`, in position order.
    pub(crate) fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let Some(first) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let txn = self.db.begin_read()?;
        let positions = txn.open_table(POSITIONS)?;
        let events = txn.open_table(EVENTS)?;
        let mut out = Vec::new();
        for entry in positions.range(first..)?.take(limit) {
            let (_, key) = entry?;
            let key = key.value();
            let record = events
                .get(key)?
                .ok_or_else(|| StoreError("position index points at a missing event".into()))?;
            out.push(event_from_record(key, decode_event(record.value())?)?);
        }
        Ok(out)
    }

    /// The highest store-wide position committed so far.
    pub fn last_position(&self) -> Result<u64, StoreError> {
        last_position(&self.db)
    }

    /// Whether appends can commit right now (for `/readyz`).
    pub fn health(&self) -> Health {
        self.db.health()
    }
}

pub(super) fn last_position(db: &Db) -> Result<u64, StoreError> {
    let txn = db.begin_read()?;
    let positions = txn.open_table(POSITIONS)?;
    Ok(positions.last()?.map_or(0, |(k, _)| k.value()))
}
