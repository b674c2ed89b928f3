//! The per-peer outbox: queueing, the delivery worker's view of what is
//! due, delivery outcomes, acks, dead messages and listings. Reached
//! through [`Store::outbox`].

use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use uuid::Uuid;

use super::{BytesTable, FED_OUTBOX, FED_OUTBOX_IDS, FED_PENDING_ROTATIONS, IdTable, inert_text};
use crate::event::Timestamp;
use crate::store::reads::PageBuilder;
use crate::store::{Store, StoreError, decode, encode};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Retrying,
    Dead,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Retrying => "retrying",
            DeliveryStatus::Dead => "dead",
        }
    }

    pub fn parse(text: &str) -> Option<DeliveryStatus> {
        match text {
            "pending" => Some(DeliveryStatus::Pending),
            "delivered" => Some(DeliveryStatus::Delivered),
            "retrying" => Some(DeliveryStatus::Retrying),
            "dead" => Some(DeliveryStatus::Dead),
            _ => None,
        }
    }

    fn is_open(self) -> bool {
        matches!(self, DeliveryStatus::Pending | DeliveryStatus::Retrying)
    }
}

/// One message queued for one peer. It is signed only when sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxRecord {
    pub message_id: [u8; 16],
    pub event_type: String,
    /// Canonical JSON of the payload.
    pub payload: String,
    pub created_at: i64,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// Unix ms before which the message is not sent again.
    pub next_attempt_at: i64,
    pub updated_at: i64,
}

/// A peer's outbox rows not delivered ([`Outbox::counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// Pending or retrying.
    pub waiting: u64,
    pub dead: u64,
}

#[derive(Debug, Clone)]
pub struct OutboxEntry {
    pub peer: String,
    pub seq: u64,
    pub record: OutboxRecord,
}

pub(in crate::store) fn outbox_key(peer: &str, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(peer.len() + 9);
    key.extend_from_slice(peer.as_bytes());
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

pub(in crate::store) fn split_outbox_key(key: &[u8]) -> Result<(String, u64), StoreError> {
    let bad = || StoreError("corrupt outbox key".into());
    if key.len() < 9 || key[key.len() - 9] != 0 {
        return Err(bad());
    }
    let (peer, seq) = key.split_at(key.len() - 9);
    let peer = String::from_utf8(peer.to_vec()).map_err(|_| bad())?;
    Ok((
        peer,
        u64::from_be_bytes(seq[1..].try_into().expect("8 bytes")),
    ))
}

/// A new message id: UUID v7, ordered by time. Both ends index messages by
/// id (our outbox ids, the peer's inbox), and ids in the order they are
/// made land at the end of those B-trees instead of on a random page each
/// (the receiver's durable commit of a batch rewrote a leaf per message).
/// The id says when it was made, as the message's timestamp does anyway.
pub(in crate::store) fn new_message_id() -> Uuid {
    Uuid::now_v7()
}

/// An outbox row as a delivery worker sent it: its seq and message id.
pub type SentRow = (u64, [u8; 16]);

/// Appends one row to `peer`'s outbox at the next per-peer seq; returns
/// its key.
pub(super) fn enqueue(
    outbox: &mut BytesTable<'_>,
    ids: &mut IdTable<'_>,
    peer: &str,
    message_id: Uuid,
    event_type: &str,
    payload: &str,
    now: i64,
) -> Result<Vec<u8>, StoreError> {
    let last = outbox
        .range(outbox_key(peer, 0).as_slice()..=outbox_key(peer, u64::MAX).as_slice())?
        .next_back()
        .transpose()?
        .map(|(k, _)| split_outbox_key(k.value()).map(|(_, seq)| seq))
        .transpose()?
        .unwrap_or(0);
    let record = OutboxRecord {
        message_id: message_id.into_bytes(),
        event_type: event_type.to_string(),
        payload: payload.to_string(),
        created_at: now,
        status: DeliveryStatus::Pending,
        attempts: 0,
        last_error: None,
        next_attempt_at: 0,
        updated_at: now,
    };
    let key = outbox_key(peer, last + 1);
    outbox.insert(key.as_slice(), encode(&record).as_slice())?;
    ids.insert(&message_id.into_bytes(), key.as_slice())?;
    Ok(key)
}

/// The outbox's in-memory state: the notifications its workers wait on.
#[derive(Debug)]
pub(in crate::store) struct OutboxShared {
    changed: watch::Sender<u64>,
    /// Bumped when dead messages are put back in the queue, so workers rescan.
    requeued: watch::Sender<u64>,
    /// Bumped after a redaction that rewrote rows, or a plan deletion that
    /// removed some, has committed, before it is answered: a worker holding
    /// rows read earlier reads them again before it signs them
    /// (`Outbox::sign_as_stored`).
    rewritten: std::sync::atomic::AtomicU64,
    /// Held shared while a worker checks the count, reads its rows again
    /// if it moved, and signs them; taken exclusive after a bump and before
    /// the change is answered (`Store::wait_for_signers`). So no body is
    /// built from rows read before a change once it is answered; one built
    /// just before may still be posted after (it is already on its way).
    signing: std::sync::RwLock<()>,
}

impl Default for OutboxShared {
    fn default() -> Self {
        OutboxShared {
            changed: watch::channel(0).0,
            requeued: watch::channel(0).0,
            rewritten: std::sync::atomic::AtomicU64::new(0),
            signing: std::sync::RwLock::new(()),
        }
    }
}

impl OutboxShared {
    pub(super) fn grew(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    pub(in crate::store) fn requeued(&self) {
        self.requeued.send_modify(|n| *n += 1);
    }

    pub(in crate::store) fn rewritten(&self) {
        self.rewritten
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    fn rewrites(&self) -> u64 {
        self.rewritten.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl Store {
    /// After a redaction or a plan deletion, before it is answered: waits
    /// until every worker that was signing rows when it committed is done,
    /// off the async threads. Always, not only when this job moved the
    /// count: an answer that changed nothing (409, 404) may follow a job
    /// that did, whose caller left before its own wait.
    pub(in crate::store) async fn wait_for_signers(&self) {
        let fed = self.fed.clone();
        let _ = tokio::task::spawn_blocking(move || {
            drop(
                fed.outbox
                    .signing
                    .write()
                    .unwrap_or_else(|e| e.into_inner()),
            );
        })
        .await;
    }
}

/// The view of the store for the per-peer outbox.
#[derive(Clone, Copy)]
pub struct Outbox<'a> {
    pub(in crate::store) store: &'a Store,
}

impl Store {
    /// The per-peer outbox of messages to send.
    pub fn outbox(&self) -> Outbox<'_> {
        Outbox { store: self }
    }
}

impl Outbox<'_> {
    /// Queues a published message for every active or suspended peer whose
    /// subscription matches, in one durable transaction. Returns (peer,
    /// message id) pairs.
    pub fn publish(
        &self,
        event_type: &str,
        payload: &str,
    ) -> Result<Vec<(String, Uuid)>, StoreError> {
        let routes = self.store.peers().routes();
        let mut peers: Vec<&str> = routes
            .iter()
            .filter(|r| r.pattern.matches(event_type))
            .map(|r| r.peer.as_str())
            .collect();
        peers.sort_unstable();
        peers.dedup();
        if peers.is_empty() {
            return Ok(Vec::new());
        }
        let now = Timestamp::now().millis();
        let queued = self.store.write_durable(|txn| {
            let mut outbox = txn.open_table(FED_OUTBOX)?;
            let mut ids = txn.open_table(FED_OUTBOX_IDS)?;
            peers
                .iter()
                .map(|peer| {
                    let id = new_message_id();
                    enqueue(&mut outbox, &mut ids, peer, id, event_type, payload, now)?;
                    Ok((peer.to_string(), id))
                })
                .collect::<Result<Vec<_>, StoreError>>()
        })?;
        self.store.fed.outbox_grew();
        Ok(queued)
    }

    /// Wakes when rows are added to any outbox, or a peer changes.
    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        self.store.fed.outbox.changed.subscribe()
    }

    /// Wakes when dead messages are requeued.
    pub(crate) fn requeue_watch(&self) -> watch::Receiver<u64> {
        self.store.fed.outbox.requeued.subscribe()
    }

    /// How many redactions and plan deletions have changed open outbox
    /// rows since the start. Read it before reading rows, and give it to
    /// [`Outbox::sign_as_stored`].
    pub fn rewrites(&self) -> u64 {
        self.store.fed.outbox.rewrites()
    }

    /// Calls `sign` with `rows` of `peer`, read at count `read_at`, as they
    /// are stored now if the count has moved since ([`Outbox::as_stored`]):
    /// a redaction may have taken a payload out, a plan deletion may have
    /// removed rows. Returns those rows, the count they are current at, and
    /// what `sign` made. A redaction or deletion is not answered while
    /// `sign` runs, so none answered before this call is missed.
    #[allow(clippy::type_complexity)]
    pub fn sign_as_stored<T>(
        &self,
        peer: &str,
        rows: Vec<(u64, OutboxRecord)>,
        read_at: u64,
        sign: impl FnOnce(&[(u64, OutboxRecord)]) -> T,
    ) -> Result<(Vec<(u64, OutboxRecord)>, u64, T), StoreError> {
        let shared = &self.store.fed.outbox;
        let _signing = shared.signing.read().unwrap_or_else(|e| e.into_inner());
        let now = shared.rewrites();
        let rows = if now == read_at {
            rows
        } else {
            self.as_stored(peer, rows)?
        };
        let signed = sign(&rows);
        Ok((rows, now, signed))
    }

    /// The rows `rows` of `peer` as stored now: each that is still open
    /// under the same message id, with its current record (a redaction may
    /// have taken its payload out). Rows removed or closed since are left
    /// out.
    #[allow(clippy::type_complexity)]
    fn as_stored(
        &self,
        peer: &str,
        rows: Vec<(u64, OutboxRecord)>,
    ) -> Result<Vec<(u64, OutboxRecord)>, StoreError> {
        let txn = self.store.db.begin_read()?;
        let table = txn.open_table(FED_OUTBOX)?;
        let mut now = Vec::with_capacity(rows.len());
        for (seq, row) in rows {
            let Some(stored) = table
                .get(outbox_key(peer, seq).as_slice())?
                .map(|v| decode::<OutboxRecord>(v.value()))
                .transpose()?
            else {
                continue;
            };
            if stored.message_id == row.message_id && stored.status.is_open() {
                now.push((seq, stored));
            }
        }
        Ok(now)
    }

    /// The next messages due for `peer`, in order, starting after `cursor`:
    /// the open (pending or retrying) rows from the first open one on, at
    /// most `limit` and ending once their stored records reach `max_bytes`
    /// (after at least one), all due by `now`. Returns the rows, the new
    /// cursor (all rows up to it are delivered or dead) and, when nothing
    /// is due yet, when the first open row will be.
    #[allow(clippy::type_complexity)]
    pub fn due(
        &self,
        peer: &str,
        cursor: u64,
        limit: usize,
        max_bytes: usize,
        now: i64,
    ) -> Result<(Vec<(u64, OutboxRecord)>, u64, Option<i64>), StoreError> {
        let txn = self.store.db.begin_read()?;
        let table = txn.open_table(FED_OUTBOX)?;
        let mut rows = Vec::new();
        let mut bytes = 0usize;
        let mut new_cursor = cursor;
        let mut wait_until = None;
        let from = outbox_key(peer, cursor.saturating_add(1));
        let to = outbox_key(peer, u64::MAX);
        for entry in table.range(from.as_slice()..=to.as_slice())? {
            let (k, v) = entry?;
            let (_, seq) = split_outbox_key(k.value())?;
            let record: OutboxRecord = decode(v.value())?;
            if !record.status.is_open() {
                if rows.is_empty() {
                    new_cursor = seq;
                }
                continue;
            }
            if record.next_attempt_at > now {
                if rows.is_empty() {
                    wait_until = Some(record.next_attempt_at);
                }
                break;
            }
            rows.push((seq, record));
            bytes = bytes.saturating_add(v.value().len());
            if rows.len() >= limit || bytes >= max_bytes {
                break;
            }
        }
        Ok((rows, new_cursor, wait_until))
    }

    /// Applies `update` to the rows `sent` (seq and message id) of `peer`.
    /// A row whose seq now holds another message is left alone: a plan
    /// deletion or a dead-letter drop removes rows, and the seq of a
    /// removed newest row is given again, so a seq alone may name a message
    /// enqueued after the one sent. With `delivered`, a key-rotation message
    /// among them no longer counts as pending: the peer knows our new key.
    fn update(
        &self,
        peer: &str,
        sent: &[SentRow],
        delivered: bool,
        mut update: impl FnMut(&mut OutboxRecord),
    ) -> Result<(), StoreError> {
        self.store.write_durable(|txn| {
            let mut table = txn.open_table(FED_OUTBOX)?;
            let mut pending = txn.open_table(FED_PENDING_ROTATIONS)?;
            for &(seq, message_id) in sent {
                let key = outbox_key(peer, seq);
                let Some(stored) = table
                    .get(key.as_slice())?
                    .map(|v| decode::<OutboxRecord>(v.value()))
                    .transpose()?
                else {
                    if delivered {
                        pending.remove(key.as_slice())?;
                    }
                    continue;
                };
                if stored.message_id != message_id {
                    continue;
                }
                if delivered {
                    pending.remove(key.as_slice())?;
                }
                let mut record = stored;
                update(&mut record);
                table.insert(key.as_slice(), encode(&record).as_slice())?;
            }
            Ok(())
        })
    }

    /// Marks the rows `sent` delivered. A seq that holds another message
    /// now (the one sent was removed and its seq given again) is left
    /// alone: that message was never sent.
    pub fn mark_delivered(&self, peer: &str, sent: &[SentRow]) -> Result<(), StoreError> {
        let now = Timestamp::now().millis();
        self.update(peer, sent, true, |r| {
            r.status = DeliveryStatus::Delivered;
            r.attempts = r.attempts.saturating_add(1);
            r.last_error = None;
            r.updated_at = now;
        })
    }

    /// Records a failed attempt: `retrying` until `max_attempts` or
    /// `max_age_ms`, then `dead`. Returns how many went dead.
    pub fn mark_failed(
        &self,
        peer: &str,
        sent: &[SentRow],
        error: &str,
        next_attempt_at: i64,
        max_attempts: u32,
        max_age_ms: i64,
    ) -> Result<usize, StoreError> {
        let now = Timestamp::now().millis();
        let mut dead = 0;
        // The error quotes what the peer answered: stored inert.
        let error = inert_text(error);
        self.update(peer, sent, false, |r| {
            if !r.status.is_open() {
                return;
            }
            r.attempts = r.attempts.saturating_add(1);
            r.last_error = Some(error.clone());
            r.updated_at = now;
            r.next_attempt_at = next_attempt_at;
            if r.attempts >= max_attempts || now - r.created_at >= max_age_ms {
                r.status = DeliveryStatus::Dead;
                dead += 1;
            } else {
                r.status = DeliveryStatus::Retrying;
            }
        })?;
        Ok(dead)
    }

    /// Marks the message `message_id` sent to `peer` delivered (a verified
    /// ack arrived separately). Returns false if no such message was sent to
    /// that peer.
    pub fn ack(&self, peer: &str, message_id: &Uuid) -> Result<bool, StoreError> {
        let key = {
            let txn = self.store.db.begin_read()?;
            let ids = txn.open_table(FED_OUTBOX_IDS)?;
            match ids.get(&message_id.into_bytes())? {
                Some(k) => k.value().to_vec(),
                None => return Ok(false),
            }
        };
        let (owner, seq) = split_outbox_key(&key)?;
        if owner != peer {
            return Ok(false);
        }
        let now = Timestamp::now().millis();
        self.update(peer, &[(seq, message_id.into_bytes())], true, |r| {
            if r.status != DeliveryStatus::Delivered {
                r.status = DeliveryStatus::Delivered;
                r.last_error = None;
                r.updated_at = now;
            }
        })?;
        Ok(true)
    }

    /// A page of outbox rows in (peer, seq) order, after the row `after`
    /// (peer, seq) if given (from the start if not), optionally of one
    /// peer: at most `limit`, and ending early once their stored records
    /// reach `max_bytes` (after at least one). The flag says whether the
    /// page ended at a limit, so that more may follow.
    pub fn after(
        &self,
        peer: Option<&str>,
        after: Option<(&str, u64)>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<OutboxEntry>, bool), StoreError> {
        let mut page = PageBuilder::new(limit, max_bytes);
        self.scan(peer, after, |peer, seq, stored| {
            page.push(
                OutboxEntry {
                    peer,
                    seq,
                    record: decode(stored)?,
                },
                stored.len(),
            );
            Ok(!page.full())
        })?;
        Ok(page.finish())
    }

    /// How many of `peer`'s rows are waiting (pending or retrying) and
    /// dead, from one pass that stops once both reach `cap` (a bound on a
    /// metrics scrape's work when the queue is long). Delivered rows kept
    /// for retention are passed over, not counted. Holds no row.
    pub fn counts(&self, peer: &str, cap: u64) -> Result<QueueCounts, StoreError> {
        let mut counts = QueueCounts::default();
        self.scan(Some(peer), None, |_, _, stored| {
            let record: OutboxRecord = decode(stored)?;
            match record.status {
                DeliveryStatus::Pending | DeliveryStatus::Retrying => counts.waiting += 1,
                DeliveryStatus::Dead => counts.dead += 1,
                DeliveryStatus::Delivered => {}
            }
            Ok(counts.waiting < cap || counts.dead < cap)
        })?;
        counts.waiting = counts.waiting.min(cap);
        counts.dead = counts.dead.min(cap);
        Ok(counts)
    }

    /// Calls `row` with each row's (peer, seq, stored record) in order,
    /// from after `after` and within `peer` if given, while it says go on.
    fn scan(
        &self,
        peer: Option<&str>,
        after: Option<(&str, u64)>,
        mut row: impl FnMut(String, u64, &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let lower = match (peer, after) {
            // A cursor past the peer's rows: nothing left of that peer.
            (Some(p), Some((ap, _))) if ap > p => return Ok(()),
            (Some(p), Some((ap, seq))) if ap == p => Excluded(outbox_key(p, seq)),
            (Some(p), _) => Included(outbox_key(p, 0)),
            (None, Some((ap, seq))) => Excluded(outbox_key(ap, seq)),
            (None, None) => Unbounded,
        };
        let upper = peer.map(|p| outbox_key(p, u64::MAX));
        let txn = self.store.db.begin_read()?;
        let table = txn.open_table(FED_OUTBOX)?;
        let bounds = (
            match &lower {
                Included(k) => Included(k.as_slice()),
                Excluded(k) => Excluded(k.as_slice()),
                Unbounded => Unbounded,
            },
            match &upper {
                Some(k) => Included(k.as_slice()),
                None => Unbounded,
            },
        );
        for entry in table.range::<&[u8]>(bounds)? {
            let (k, v) = entry?;
            let (peer, seq) = split_outbox_key(k.value())?;
            if !row(peer, seq, v.value())? {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_keys_round_trip_and_sort_per_peer() {
        let (peer, seq) = split_outbox_key(&outbox_key("beta", 300)).unwrap();
        assert_eq!((peer.as_str(), seq), ("beta", 300));
        assert!(outbox_key("beta", 2) < outbox_key("beta", 256));
        // A peer whose id extends another's never falls inside its range.
        let range = outbox_key("beta", 0)..=outbox_key("beta", u64::MAX);
        assert!(!range.contains(&outbox_key("beta2", 1)));
    }
}
