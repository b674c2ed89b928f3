//! Read paths: plan heads, event pages, store-wide positions (the whole-chain
//! verification is in `plan_verify.rs`).

use redb::ReadableTable;
use uuid::Uuid;

use super::head::decode_head;
use super::records::decode_event_view;
use super::{
    Db, EVENTS, HEADS, Health, POSITIONS, PlanHead, Store, StoreError, decode_event,
    event_from_record, event_key,
};
use crate::event::Event;
use crate::registry::TypeFilter;

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
        Ok(self.plan_events_page(plan_id, after, limit, usize::MAX)?.0)
    }

    /// Like [`Store::plan_events_after`], ending the page early once its
    /// stored records reach `max_bytes` (after at least one event). The flag
    /// says whether the page ended at a limit, so that more may follow.
    pub fn plan_events_page(
        &self,
        plan_id: &Uuid,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<Event>, bool), StoreError> {
        let txn = self.db.begin_read()?;
        plan_events_page(&txn, plan_id, after, limit, max_bytes)
    }

    /// Like [`Store::plan_events_page`], or `None` when the plan has no
    /// head (no events, or deleted), from one snapshot: an empty page then
    /// never passes for a plan that ends where the page starts.
    pub fn live_plan_events_page(
        &self,
        plan_id: &Uuid,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Option<(Vec<Event>, bool)>, StoreError> {
        let txn = self.db.begin_read()?;
        if txn.open_table(HEADS)?.get(&plan_id.into_bytes())?.is_none() {
            return Ok(None);
        }
        plan_events_page(&txn, plan_id, after, limit, max_bytes).map(Some)
    }

    /// Like [`Store::plan_events_page`], going on after the event with seq
    /// `after` and signature `signature`: `None` when that event is no longer
    /// there (the plan was deleted, or deleted and begun again), so that a
    /// response read in several runs never ends early in silence or joins
    /// two histories. A redaction keeps the signature.
    pub fn plan_events_page_after(
        &self,
        plan_id: &Uuid,
        after: u64,
        signature: &[u8; 32],
        limit: usize,
        max_bytes: usize,
    ) -> Result<Option<(Vec<Event>, bool)>, StoreError> {
        let txn = self.db.begin_read()?;
        let key = event_key(plan_id, after);
        let same = match txn.open_table(EVENTS)?.get(&key)? {
            Some(record) => decode_event(record.value())?.signature == *signature,
            None => false,
        };
        if !same {
            return Ok(None);
        }
        plan_events_page(&txn, plan_id, after, limit, max_bytes).map(Some)
    }

    /// Events of every plan with store-wide position > `after`, in position
    /// order, at most `limit`, with [`Store::plan_events_page`]'s byte limit
    /// and flag.
    pub(crate) fn events_page(
        &self,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<Event>, bool), StoreError> {
        let (page, more, _) = self.position_page(after, None, limit, max_bytes, usize::MAX)?;
        Ok((page, more))
    }

    /// Like [`Store::events_page`], for a follower filtered by type: only
    /// events whose type `filter` matches are decoded whole and returned,
    /// the others only as far as their type, and at most `max_scanned` rows
    /// are read in all. Returns the page, whether more may follow, and the
    /// position read up to, where the next page starts: a filter that
    /// matches little moves on in bounded reads, each cheap per row.
    pub(crate) fn matching_events_page(
        &self,
        after: u64,
        filter: &TypeFilter,
        limit: usize,
        max_bytes: usize,
        max_scanned: usize,
    ) -> Result<(Vec<Event>, bool, u64), StoreError> {
        self.position_page(after, Some(filter), limit, max_bytes, max_scanned)
    }

    /// The page both of the above read, in position order.
    fn position_page(
        &self,
        after: u64,
        filter: Option<&TypeFilter>,
        limit: usize,
        max_bytes: usize,
        max_scanned: usize,
    ) -> Result<(Vec<Event>, bool, u64), StoreError> {
        assert!(max_scanned > 0);
        let Some(first) = after.checked_add(1) else {
            return Ok((Vec::new(), false, after));
        };
        let txn = self.db.begin_read()?;
        let positions = txn.open_table(POSITIONS)?;
        let events = txn.open_table(EVENTS)?;
        let mut page = PageBuilder::new(limit, max_bytes);
        let (mut read_to, mut scanned) = (after, 0);
        for entry in positions.range(first..)? {
            if page.full() || scanned == max_scanned {
                return Ok((page.finish().0, true, read_to));
            }
            let (position, key) = entry?;
            let key = key.value();
            let record = events
                .get(key)?
                .ok_or_else(|| StoreError("position index points at a missing event".into()))?;
            let record = record.value();
            scanned += 1;
            read_to = position.value();
            if let Some(filter) = filter
                && !filter.matches(decode_event_view(record)?.event_type)
            {
                continue;
            }
            page.push(event_from_record(key, decode_event(record)?)?, record.len());
        }
        let (rows, full) = page.finish();
        Ok((rows, full, read_to))
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

/// [`Store::plan_events_page`] in `txn`.
fn plan_events_page(
    txn: &redb::ReadTransaction,
    plan_id: &Uuid,
    after: u64,
    limit: usize,
    max_bytes: usize,
) -> Result<(Vec<Event>, bool), StoreError> {
    let Some(first) = after.checked_add(1) else {
        return Ok((Vec::new(), false));
    };
    let events = txn.open_table(EVENTS)?;
    let mut page = PageBuilder::new(limit, max_bytes);
    for entry in
        events.range::<&[u8; 24]>(&event_key(plan_id, first)..=&event_key(plan_id, u64::MAX))?
    {
        if page.full() {
            break;
        }
        let (k, v) = entry?;
        let record = v.value();
        page.push(
            event_from_record(k.value(), decode_event(record)?)?,
            record.len(),
        );
    }
    Ok(page.finish())
}

pub(super) fn last_position(db: &Db) -> Result<u64, StoreError> {
    let txn = db.begin_read()?;
    let positions = txn.open_table(POSITIONS)?;
    Ok(positions.last()?.map_or(0, |(k, _)| k.value()))
}

/// A page of rows bounded by a count and by the bytes of their stored
/// records (after at least one row).
pub(super) struct PageBuilder<T> {
    rows: Vec<T>,
    limit: usize,
    bytes: usize,
    max_bytes: usize,
}

impl<T> PageBuilder<T> {
    pub(super) fn new(limit: usize, max_bytes: usize) -> PageBuilder<T> {
        PageBuilder {
            rows: Vec::new(),
            limit,
            bytes: 0,
            max_bytes,
        }
    }

    pub(super) fn push(&mut self, row: T, stored_len: usize) {
        self.rows.push(row);
        self.bytes = self.bytes.saturating_add(stored_len);
    }

    pub(super) fn full(&self) -> bool {
        self.rows.len() >= self.limit || self.bytes >= self.max_bytes
    }

    /// The rows, and whether the page ended at a limit.
    pub(super) fn finish(self) -> (Vec<T>, bool) {
        let full = self.full();
        (self.rows, full)
    }
}
