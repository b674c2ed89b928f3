//! The inbox: verified messages stored before they are acknowledged, the
//! subscribe requests applied at most once, and the inbox's paged reads.
//! Reached through [`Store::inbox`]; the per-peer quota and the pruning of
//! old records are in `retention`.

use std::sync::atomic::AtomicU64;

use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use uuid::Uuid;

use super::continuity::{Continuity, JournalLink, check_continuity};
use super::peers::{Direction, SubscriptionRecord, sub_key};
use super::rotation::{Rekey, repin};
use super::{FED_INBOX, FED_INBOX_POSITIONS, FED_ORIGIN_EVENTS, FED_ORIGIN_HEADS, FED_SUBS};
use crate::event::Timestamp;
use crate::store::reads::PageBuilder;
use crate::store::{Store, StoreError, decode, encode};

/// A received message, stored before it is acknowledged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InboxRecord {
    pub position: u64,
    pub peer: String,
    pub event_type: String,
    /// Canonical JSON of the payload.
    pub payload: String,
    /// The sender's timestamp (Unix ms).
    pub timestamp: i64,
    pub received_at: i64,
    /// SHA-256 of what identifies the message's content, to tell a
    /// redelivery from a different message reusing the id.
    pub digest: [u8; 32],
    pub continuity: Option<Continuity>,
}

impl InboxRecord {
    /// The record of `m` received at `now`; `position` 0 for control
    /// requests and key announcements, which take no stream position.
    fn of(m: &Incoming, position: u64, now: i64, continuity: Option<Continuity>) -> InboxRecord {
        InboxRecord {
            position,
            peer: m.peer.clone(),
            event_type: m.event_type.clone(),
            payload: m.payload.clone(),
            timestamp: m.timestamp,
            received_at: now,
            digest: m.digest,
            continuity,
        }
    }
}

#[derive(Debug, Clone)]
pub struct InboxEntry {
    pub message_id: Uuid,
    pub record: InboxRecord,
}

/// A verified message to store.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub message_id: Uuid,
    pub peer: String,
    pub event_type: String,
    pub payload: String,
    pub timestamp: i64,
    pub digest: [u8; 32],
    pub journal: Option<JournalLink>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiveOutcome {
    /// Stored now.
    Stored,
    /// Stored before with the same content: acknowledge again, store nothing.
    Redelivered,
}

#[derive(Debug, Clone)]
pub enum ReceiveError {
    /// The message id was already used for a different message.
    IdReused(Uuid),
    /// A subscribe would take the peer over its number of inbound
    /// subscriptions (the limit given).
    SubscriptionCap(usize),
    /// Storing the messages would take the peer over its quota (see
    /// [`crate::store::AsyncStore::set_peer_quota`]); nothing was stored.
    OverQuota {
        used: u64,
        quota: u64,
    },
    Storage(StoreError),
}

impl From<StoreError> for ReceiveError {
    fn from(e: StoreError) -> Self {
        ReceiveError::Storage(e)
    }
}

/// The inbox's in-memory state: its notification and the per-peer quota.
#[derive(Debug)]
pub(in crate::store) struct InboxShared {
    changed: watch::Sender<u64>,
    /// Most bytes of inbox records stored per peer (see `retention`).
    pub(in crate::store) peer_quota: AtomicU64,
}

impl Default for InboxShared {
    fn default() -> Self {
        InboxShared {
            changed: watch::channel(0).0,
            peer_quota: AtomicU64::new(u64::MAX),
        }
    }
}

/// The view of the store for received messages.
#[derive(Clone, Copy)]
pub struct Inbox<'a> {
    pub(in crate::store) store: &'a Store,
}

impl Store {
    /// Received messages, their paged reads and the per-peer quota.
    pub fn inbox(&self) -> Inbox<'_> {
        Inbox { store: self }
    }
}

impl Inbox<'_> {
    /// Stores verified messages in one durable transaction, checking the
    /// chain continuity of journal events. A message id reused for different
    /// content aborts the whole batch: nothing is stored.
    ///
    /// When `rekey` names a message of the batch that is stored now (not a
    /// redelivery), the sender's pinned key is replaced by the announced one
    /// in the same transaction, and the old key kept as retired. The
    /// announcement gets no inbox position: like other control messages it
    /// is not listed or streamed.
    pub fn receive(
        &self,
        messages: &[Incoming],
        rekey: Option<&Rekey>,
    ) -> Result<Vec<ReceiveOutcome>, ReceiveError> {
        let mut txn = self.store.db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)
            .map_err(StoreError::from)?;
        let mut outcomes = Vec::with_capacity(messages.len());
        let mut stored = 0;
        let mut charged = 0;
        {
            let mut inbox = txn.open_table(FED_INBOX).map_err(StoreError::from)?;
            let mut positions = txn
                .open_table(FED_INBOX_POSITIONS)
                .map_err(StoreError::from)?;
            let mut origin_events = txn
                .open_table(FED_ORIGIN_EVENTS)
                .map_err(StoreError::from)?;
            let mut origin_heads = txn.open_table(FED_ORIGIN_HEADS).map_err(StoreError::from)?;
            let mut position = positions
                .last()
                .map_err(StoreError::from)?
                .map_or(0, |(k, _)| k.value());
            let now = Timestamp::now().millis();
            for m in messages {
                let id = m.message_id.into_bytes();
                let existing = inbox
                    .get(&id)
                    .map_err(StoreError::from)?
                    .map(|v| decode::<InboxRecord>(v.value()))
                    .transpose()?;
                if let Some(existing) = existing {
                    if existing.digest != m.digest {
                        // Dropping the transaction uncommitted discards the batch.
                        return Err(ReceiveError::IdReused(m.message_id));
                    }
                    outcomes.push(ReceiveOutcome::Redelivered);
                    continue;
                }
                if let Some(rekey) = rekey.filter(|r| r.message_id == m.message_id) {
                    repin(&txn, &m.peer, rekey, now)?;
                    let record = InboxRecord::of(m, 0, now, None);
                    inbox
                        .insert(&id, encode(&record).as_slice())
                        .map_err(StoreError::from)?;
                    charged += crate::store::retention::inbox_record_bytes(&record);
                    outcomes.push(ReceiveOutcome::Stored);
                    continue;
                }
                let continuity = match &m.journal {
                    Some(link) => Some(check_continuity(
                        &mut origin_events,
                        &mut origin_heads,
                        &m.peer,
                        link,
                        &id,
                    )?),
                    None => None,
                };
                position += 1;
                let record = InboxRecord::of(m, position, now, continuity);
                inbox
                    .insert(&id, encode(&record).as_slice())
                    .map_err(StoreError::from)?;
                positions.insert(position, &id).map_err(StoreError::from)?;
                charged += crate::store::retention::inbox_record_bytes(&record);
                outcomes.push(ReceiveOutcome::Stored);
                stored += 1;
            }
        }
        // One sender per request (the inbox refuses mixed batches).
        if let Some(m) = messages.first() {
            crate::store::retention::charge(self.store, &txn, &m.peer, charged)?;
        }
        self.store.db.commit(txn)?;
        if stored > 0 {
            self.store.fed.inbox.changed.send_modify(|n| *n += 1);
        }
        Ok(outcomes)
    }

    /// Applies a verified subscribe (or unsubscribe) request from `m.peer`
    /// at most once. The request is recorded in the inbox under its message
    /// id, in the same durable transaction as the subscription change, so a
    /// replay of it is acknowledged again but changes nothing (a replayed
    /// old unsubscribe must not silently end a newer subscription). It gets
    /// no inbox position: control requests are not listed or streamed.
    pub fn receive_control(
        &self,
        m: &Incoming,
        pattern: &str,
        subscribe: bool,
        max_subscriptions: usize,
    ) -> Result<ReceiveOutcome, ReceiveError> {
        let mut txn = self.store.db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)
            .map_err(StoreError::from)?;
        {
            let mut inbox = txn.open_table(FED_INBOX).map_err(StoreError::from)?;
            let id = m.message_id.into_bytes();
            let existing = inbox
                .get(&id)
                .map_err(StoreError::from)?
                .map(|v| decode::<InboxRecord>(v.value()))
                .transpose()?;
            if let Some(existing) = existing {
                if existing.digest != m.digest {
                    return Err(ReceiveError::IdReused(m.message_id));
                }
                return Ok(ReceiveOutcome::Redelivered);
            }
            let now = Timestamp::now().millis();
            let record = InboxRecord::of(m, 0, now, None);
            inbox
                .insert(&id, encode(&record).as_slice())
                .map_err(StoreError::from)?;
            let bytes = crate::store::retention::inbox_record_bytes(&record);
            crate::store::retention::charge(self.store, &txn, &m.peer, bytes)?;
            let mut subs = txn.open_table(FED_SUBS).map_err(StoreError::from)?;
            let key = sub_key(Direction::Inbound, &m.peer, pattern);
            if subscribe {
                if subs
                    .get(key.as_slice())
                    .map_err(StoreError::from)?
                    .is_none()
                {
                    // Counted in the same transaction, so concurrent
                    // requests cannot go over the cap together.
                    let prefix = sub_key(Direction::Inbound, &m.peer, "");
                    let mut held = 0;
                    for entry in subs.range(prefix.as_slice()..).map_err(StoreError::from)? {
                        let (k, _) = entry.map_err(StoreError::from)?;
                        if !k.value().starts_with(&prefix) {
                            break;
                        }
                        held += 1;
                    }
                    if held >= max_subscriptions {
                        return Err(ReceiveError::SubscriptionCap(max_subscriptions));
                    }
                    let record = SubscriptionRecord { created_at: now };
                    subs.insert(key.as_slice(), encode(&record).as_slice())
                        .map_err(StoreError::from)?;
                }
            } else {
                subs.remove(key.as_slice()).map_err(StoreError::from)?;
            }
        }
        self.store.db.commit(txn)?;
        self.store.peers().refresh_routes()?;
        Ok(ReceiveOutcome::Stored)
    }

    /// Wakes when messages are received.
    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        self.store.fed.inbox.changed.subscribe()
    }

    /// Received messages with position > `after`, in order: at most
    /// `limit`, and ending early once their stored records reach
    /// `max_bytes` (after at least one). The flag says whether the page
    /// ended at a limit, so that more may follow.
    pub fn after(
        &self,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<InboxEntry>, bool), StoreError> {
        let Some(first) = after.checked_add(1) else {
            return Ok((Vec::new(), false));
        };
        let txn = self.store.db.begin_read()?;
        let positions = txn.open_table(FED_INBOX_POSITIONS)?;
        let inbox = txn.open_table(FED_INBOX)?;
        let mut page = PageBuilder::new(limit, max_bytes);
        for entry in positions.range(first..)? {
            if page.full() {
                break;
            }
            let (_, id) = entry?;
            let id = *id.value();
            let record = inbox
                .get(&id)?
                .ok_or_else(|| StoreError("inbox position points at a missing message".into()))?;
            let record = record.value();
            page.push(
                InboxEntry {
                    message_id: Uuid::from_bytes(id),
                    record: decode(record)?,
                },
                record.len(),
            );
        }
        Ok(page.finish())
    }

    /// The highest inbox position stored so far.
    pub fn last_position(&self) -> Result<u64, StoreError> {
        let txn = self.store.db.begin_read()?;
        let positions = txn.open_table(FED_INBOX_POSITIONS)?;
        Ok(positions.last()?.map_or(0, |(k, _)| k.value()))
    }

    /// The record of a received message (or control request), by its id.
    pub fn get(&self, message_id: &Uuid) -> Result<Option<InboxRecord>, StoreError> {
        let txn = self.store.db.begin_read()?;
        let inbox = txn.open_table(FED_INBOX)?;
        inbox
            .get(&message_id.into_bytes())?
            .map(|v| decode(v.value()))
            .transpose()
    }
}
