//! Federation tables: peers, subscriptions, the per-peer outbox, the inbox of
//! received messages and the chain-continuity records of federated journal
//! events. Like the rest of the store, this is the only federation code that
//! touches redb.
//!
//! Tables (string ids never contain a NUL byte, so NUL separates them):
//! - `fed_peers`: peer instance id → peer record
//! - `fed_subscriptions`: direction ‖ peer ‖ NUL ‖ pattern → subscription record
//! - `fed_outbox`: peer ‖ NUL ‖ seq (u64 BE) → outbox record (per-peer order)
//! - `fed_outbox_ids`: message id → `fed_outbox` key
//! - `fed_outbox_events`: plan id ‖ seq ‖ `fed_outbox` key → empty, for
//!   each copy of a journal event; the empty key → the position (u64 BE)
//!   the index is complete up to (`event_copies.rs`)
//! - `fed_inbox`: message id → inbox record
//! - `fed_inbox_positions`: inbox position (u64) → message id
//! - `fed_origin_events`: origin ‖ NUL ‖ plan id ‖ seq → journal event seen
//! - `fed_origin_heads`: origin ‖ NUL ‖ plan id → last journal event seen
//! - `fed_pending_rotations`: `fed_outbox` key of a key-rotation message the
//!   peer has not acknowledged yet → the key id it is signed with (our old key)
//! - `fed_key_rotations`: our new key id → rotation record (the commit point
//!   of a rotation; see `federation::rotation`)
//! - `fed_retired_peer_keys`: peer ‖ NUL ‖ key id → a key the peer rotated away from
//!
//! The journal writer adds outbox rows inside the append's own transaction
//! (see [`FedTables::copies_for`]), routed by an in-memory snapshot of the
//! inbound subscriptions of active peers (held by [`FedShared`]).
//!
//! The code is split by aggregate, and each aggregate is reached through a
//! narrow view borrowed from the [`Store`], never through methods on the
//! store itself: [`Store::peers`] ([`Peers`]: peers, their grants, the
//! subscriptions and the routing snapshot), [`Store::outbox`] ([`Outbox`]),
//! [`Store::inbox`] ([`Inbox`]: the receive path and the per-peer quota) and
//! [`Store::rotations`] ([`Rotations`]: key-rotation records and the keys
//! peers rotated away from). `continuity` (the chain-continuity records of
//! received journal events) has no view: only the receive transaction uses
//! it. Each aggregate also owns its in-memory part (watches, quota, routes)
//! inside [`FedShared`]. This file holds the tables, that shared state and
//! the writer's part of an append.

use std::sync::Arc;

use redb::{TableDefinition, WriteTransaction};
use uuid::Uuid;

use super::lazy_table::LazyTable;
use super::{Store, StoreError, encode};
use crate::event::Event;
use crate::event_wire::WireEvent;
use crate::registry::TypePattern;

mod continuity;
mod dead;
mod event_copies;
mod inbox;
mod outbox;
mod peers;
mod rotation;

pub use continuity::{Continuity, ContinuityKind, JournalLink};
pub(super) use event_copies::{FED_OUTBOX_EVENTS, index_key_of, index_outbox, mark_complete};
pub use inbox::{Inbox, InboxEntry, InboxRecord, Incoming, ReceiveError, ReceiveOutcome};
pub use outbox::{DeliveryStatus, Outbox, OutboxEntry, OutboxRecord, QueueCounts, SentRow};
pub(super) use outbox::{outbox_key, split_outbox_key};
pub(super) use peers::decode_peer;
pub use peers::{Direction, PeerRecord, PeerStatus, Peers, RetiredKeys, Subscription};
pub use rotation::{Rekey, Rotations};

pub(super) const FED_PEERS: TableDefinition<&str, &[u8]> = TableDefinition::new("fed_peers");
pub(super) const FED_SUBS: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("fed_subscriptions");
pub(super) const FED_OUTBOX: TableDefinition<&[u8], &[u8]> = TableDefinition::new("fed_outbox");
pub(super) const FED_OUTBOX_IDS: TableDefinition<&[u8; 16], &[u8]> =
    TableDefinition::new("fed_outbox_ids");
pub(super) const FED_INBOX: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("fed_inbox");
pub(super) const FED_INBOX_POSITIONS: TableDefinition<u64, &[u8; 16]> =
    TableDefinition::new("fed_inbox_positions");
pub(super) const FED_ORIGIN_EVENTS: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("fed_origin_events");
pub(super) const FED_ORIGIN_HEADS: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("fed_origin_heads");
pub(super) const FED_PENDING_ROTATIONS: TableDefinition<&[u8], &str> =
    TableDefinition::new("fed_pending_rotations");
pub(super) const FED_KEY_ROTATIONS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("fed_key_rotations");
pub(super) const FED_RETIRED_PEER_KEYS: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("fed_retired_peer_keys");

/// Where a journal event goes: a peer and the pattern it subscribed with.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub peer: String,
    pub pattern: TypePattern,
}

/// State shared by the store handle, the journal writer and the federation
/// layer, one part per aggregate: the routing snapshot (peers), the outbox's
/// change notifications, and the inbox's notification and quota.
#[derive(Debug, Default)]
pub(crate) struct FedShared {
    pub(super) peers: peers::PeersShared,
    pub(super) outbox: outbox::OutboxShared,
    pub(super) inbox: inbox::InboxShared,
}

impl FedShared {
    /// Wakes the outbox workers: rows were added, or a peer changed.
    pub(super) fn outbox_grew(&self) {
        self.outbox.grew();
    }
}

/// The outbox copies of one event: (peer, message id) each.
pub(super) type OutboxCopies = Vec<(String, [u8; 16])>;

type BytesTable<'txn> = redb::Table<'txn, &'static [u8], &'static [u8]>;
type IdTable<'txn> = redb::Table<'txn, &'static [u8; 16], &'static [u8]>;

/// The federation part of the journal writer's transaction. Its tables
/// are opened when first used: appends to a store without peers never
/// open them (a redaction or deletion looks in `fed_outbox_events`).
pub(super) struct FedTables<'txn> {
    outbox: LazyTable<'txn, &'static [u8], &'static [u8]>,
    ids: LazyTable<'txn, &'static [u8; 16], &'static [u8]>,
    /// `fed_outbox_events`.
    index: LazyTable<'txn, &'static [u8], &'static [u8]>,
    routes: Arc<Vec<Route>>,
    /// Rows added in this transaction.
    pub(super) enqueued: usize,
}

impl<'txn> FedTables<'txn> {
    pub(super) fn open(txn: &'txn WriteTransaction, shared: &FedShared) -> Self {
        FedTables {
            outbox: LazyTable::new(txn, FED_OUTBOX),
            ids: LazyTable::new(txn, FED_OUTBOX_IDS),
            index: LazyTable::new(txn, FED_OUTBOX_EVENTS),
            routes: shared.peers.routes.current(),
            enqueued: 0,
        }
    }

    /// The outbox copies a just-appended journal event gets: one for every
    /// active or suspended peer subscribed to its type (once per peer,
    /// however many patterns match), each with a new message id. Queued by
    /// [`FedTables::enqueue_copies`].
    pub(super) fn copies_for(&self, event: &Event) -> OutboxCopies {
        // The system journal (tombstones naming the admin, key rotations) is
        // never sent to a peer, whatever it subscribed to.
        if self.routes.is_empty() || event.plan_id == super::admin::SYSTEM_PLAN {
            return Vec::new();
        }
        let mut peers: Vec<&str> = self
            .routes
            .iter()
            .filter(|r| r.pattern.matches(&event.event_type))
            .map(|r| r.peer.as_str())
            .collect();
        peers.sort_unstable();
        peers.dedup();
        peers
            .into_iter()
            .map(|peer| (peer.to_string(), outbox::new_message_id().into_bytes()))
            .collect()
    }

    /// Queues `event` for each (peer, message id) of `copies`: for a new
    /// event, and again when the write-ahead segment re-creates the rows of
    /// an event redb lost, with the same message ids, so a receiver that
    /// got a copy before the crash recognizes the retry.
    pub(super) fn enqueue_copies(
        &mut self,
        event: &Event,
        copies: &[(String, [u8; 16])],
    ) -> Result<(), StoreError> {
        if copies.is_empty() {
            return Ok(());
        }
        let payload = outbox_payload(event)?;
        // Queued when the event was made: a copy put back by a replay keeps
        // its age, so `max_age_secs` does not start again at the restart.
        let queued_at = event.created_at.millis();
        for (peer, message_id) in copies {
            let key = outbox::enqueue(
                self.outbox.table()?,
                self.ids.table()?,
                peer,
                Uuid::from_bytes(*message_id),
                &event.event_type,
                &payload,
                queued_at,
            )?;
            let copy = event_copies::copy_key(&event.plan_id, event.seq, &key);
            self.index.table()?.insert(copy.as_slice(), [].as_slice())?;
            self.enqueued += 1;
        }
        Ok(())
    }

    /// Rewrites the outbox copies of just-redacted events without their
    /// payload, in the redaction's transaction: an undelivered copy then
    /// leaves as the redacted event (which still verifies at the peer), a
    /// delivered one keeps no trace of the payload. The copies are found
    /// in `fed_outbox_events`: the batch reads only the rows it rewrites.
    pub(super) fn redact_events(&mut self, erased: &[(Uuid, u64)]) -> Result<usize, StoreError> {
        // The outbox keys, each once (a stale entry may name a key twice).
        let mut candidates = std::collections::BTreeSet::new();
        for (plan, seq) in erased {
            let prefix = event_copies::copy_key(plan, *seq, &[]);
            for copy in event_copies::keys_with_prefix(self.index.table()?, &prefix)? {
                candidates.insert(event_copies::outbox_key_of(&copy).to_vec());
            }
        }
        // An instance without peers has no copies: the outbox is not opened.
        if candidates.is_empty() {
            return Ok(0);
        }
        let outbox = self.outbox.table()?;
        let mut rewritten = Vec::new();
        for key in &candidates {
            let Some(mut record) = event_copies::read_row(outbox, key)? else {
                continue;
            };
            // The row's own event decides: an index row may be stale.
            let Ok(mut event) = serde_json::from_str::<Event>(&record.payload) else {
                continue;
            };
            if event.redacted || !erased.contains(&(event.plan_id, event.seq)) {
                continue;
            }
            event.payload =
                serde_json::value::RawValue::from_string("null".into()).expect("null is JSON");
            event.redacted = true;
            record.payload = outbox_payload(&event)?;
            rewritten.push((key.to_vec(), record));
        }
        for (key, record) in &rewritten {
            outbox.insert(key.as_slice(), encode(record).as_slice())?;
        }
        Ok(rewritten.len())
    }

    /// Forgets what the outbox holds of a deleted plan, in the deletion's
    /// transaction: its undelivered messages (pending, retrying, dead) are
    /// removed, so they never leave after the plan is gone, and delivered
    /// ones keep their row (the peer has it; listings show the delivery)
    /// with the payload blanked to `null`. Returns (removed, blanked).
    ///
    /// The copies are found in `fed_outbox_events`, whose rows of the plan
    /// all go: a blanked row holds no event any more. Only rows that are
    /// whole journal events of that plan match: a published message (any
    /// payload) never does.
    pub(super) fn forget_plan(&mut self, plan_id: &Uuid) -> Result<(usize, usize), StoreError> {
        let copies = event_copies::keys_with_prefix(self.index.table()?, plan_id.as_bytes())?;
        if copies.is_empty() {
            return Ok((0, 0));
        }
        let mut doomed = Vec::new();
        let mut blanked = Vec::new();
        let outbox = self.outbox.table()?;
        for copy in &copies {
            let key = event_copies::outbox_key_of(copy);
            let Some(mut record) = event_copies::read_row(outbox, key)? else {
                continue;
            };
            let of_plan = serde_json::from_str::<Event>(&record.payload)
                .is_ok_and(|event| event.plan_id == *plan_id);
            if !of_plan {
                continue;
            }
            if record.status == DeliveryStatus::Delivered {
                record.payload = "null".into();
                blanked.push((key.to_vec(), record));
            } else {
                doomed.push((key.to_vec(), record.message_id));
            }
        }
        let index = self.index.table()?;
        for copy in &copies {
            index.remove(copy.as_slice())?;
        }
        let outbox = self.outbox.table()?;
        let ids = self.ids.table()?;
        for (key, message_id) in &doomed {
            outbox.remove(key.as_slice())?;
            ids.remove(message_id)?;
        }
        for (key, record) in &blanked {
            outbox.insert(key.as_slice(), encode(record).as_slice())?;
        }
        Ok((doomed.len(), blanked.len()))
    }
}

/// An event as an outbox row carries it: its canonical JSON (what the peer
/// hashes), written directly on the append path, so that the delivery
/// worker sends it without parsing or canonicalizing it again.
fn outbox_payload(event: &Event) -> Result<String, StoreError> {
    let mut text = String::with_capacity(event.payload.get().len() + 512);
    if WireEvent::of(event).write_canonical(&mut text) {
        return Ok(text);
    }
    let value =
        serde_json::to_value(event).map_err(|e| StoreError(format!("encoding an event: {e}")))?;
    Ok(logbook_base::canonical::canonical_json(&value))
}

impl Store {
    /// Runs `f` in one durable write transaction outside the writer thread
    /// (federation state changes, each fsynced before it is reported).
    pub(super) fn write_durable<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)?;
        let out = f(&txn)?;
        self.db.commit(txn)?;
        Ok(out)
    }
}

/// Longest peer-supplied text stored, in bytes.
pub(crate) const MAX_PEER_TEXT: usize = 4096;

/// Peer-supplied text made inert before it is stored or shown: control
/// characters (and the bidirectional overrides that reorder a terminal
/// line) become `\u{..}` escapes, and the result is cut to
/// `MAX_PEER_TEXT` bytes. A CLI, a log line or a JSON reader then shows
/// it as written, and it cannot move a cursor, recolour a terminal or
/// forge a log line.
pub fn inert_text(text: &str) -> String {
    const CUT: &str = "…";
    let mut out = String::with_capacity(text.len().min(MAX_PEER_TEXT));
    for c in text.chars() {
        let piece = if logbook_base::terminal::acts_on_terminal(c) {
            format!("\\u{{{:x}}}", u32::from(c))
        } else {
            c.to_string()
        };
        if out.len() + piece.len() > MAX_PEER_TEXT - CUT.len() {
            out.push_str(CUT);
            break;
        }
        out.push_str(&piece);
    }
    out
}

/// `peer`'s rows `seqs` as a delivery worker sent them, for tests.
#[cfg(test)]
pub(crate) fn test_sent(store: &super::Store, peer: &str, seqs: &[u64]) -> Vec<SentRow> {
    let (rows, _) = store
        .outbox()
        .after(Some(peer), None, usize::MAX, usize::MAX)
        .unwrap();
    seqs.iter()
        .map(|seq| {
            let row = rows
                .iter()
                .find(|e| e.seq == *seq)
                .expect("a row of that seq");
            (*seq, row.record.message_id)
        })
        .collect()
}

/// A store in `dir` whose `peers` are subscribed to `t.>`, for tests.
#[cfg(test)]
pub(crate) fn test_subscribed_store(
    dir: &std::path::Path,
    peers: &[&str],
) -> (super::Store, super::Writer) {
    let keyring = Arc::new(crate::keys::Keyring::from_secret(b"k".to_vec()));
    let (store, writer) =
        super::Store::open(&dir.join("s.redb"), keyring, crate::fanout::fanout()).unwrap();
    for peer in peers {
        store.peers().put(&test_peer(peer)).unwrap();
        store
            .peers()
            .subscribe(Direction::Inbound, peer, "t.>")
            .unwrap();
    }
    (store, writer)
}

/// An active peer `id` that may be sent anything, for tests.
#[cfg(test)]
pub(crate) fn test_peer(id: &str) -> PeerRecord {
    PeerRecord {
        instance_id: id.into(),
        base_url: "http://127.0.0.1:9".into(),
        public_key_der: Vec::new(),
        status: PeerStatus::Active,
        added_at: 0,
        updated_at: 0,
        allow: vec![">".into()],
        config_allow: Vec::new(),
    }
}
