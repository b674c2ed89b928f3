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
//! (see [`FedTables::enqueue_event`]), routed by an in-memory snapshot of the
//! inbound subscriptions of active peers ([`FedShared`]).

use std::sync::{Arc, Mutex, RwLock};

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use uuid::Uuid;

use super::{Store, StoreError, decode, encode};
use crate::journal::event::{Event, Timestamp};
use crate::journal::registry::TypePattern;

pub(super) const FED_PEERS: TableDefinition<&str, &[u8]> = TableDefinition::new("fed_peers");
pub(super) const FED_SUBS: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("fed_subscriptions");
pub(super) const FED_OUTBOX: TableDefinition<&[u8], &[u8]> = TableDefinition::new("fed_outbox");
pub(super) const FED_OUTBOX_IDS: TableDefinition<[u8; 16], &[u8]> =
    TableDefinition::new("fed_outbox_ids");
pub(super) const FED_INBOX: TableDefinition<[u8; 16], &[u8]> = TableDefinition::new("fed_inbox");
pub(super) const FED_INBOX_POSITIONS: TableDefinition<u64, [u8; 16]> =
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

/// Creates every federation table, so readers never see a missing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerStatus {
    Active,
    Suspended,
    Removed,
}

impl PeerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerStatus::Active => "active",
            PeerStatus::Suspended => "suspended",
            PeerStatus::Removed => "removed",
        }
    }

    pub fn parse(text: &str) -> Option<PeerStatus> {
        match text {
            "active" => Some(PeerStatus::Active),
            "suspended" => Some(PeerStatus::Suspended),
            "removed" => Some(PeerStatus::Removed),
            _ => None,
        }
    }
}

/// A peer ("connection") and the public key pinned for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerRecord {
    pub instance_id: String,
    pub base_url: String,
    /// SubjectPublicKeyInfo DER of the pinned RSA key.
    pub public_key_der: Vec<u8>,
    pub status: PeerStatus,
    pub added_at: i64,
    pub updated_at: i64,
    /// Patterns the local admin granted with `logbook admin peers allow`
    /// (record version 2). The peer may subscribe to what these, or
    /// `config_allow`, cover; nothing by default.
    pub allow: Vec<String>,
    /// The peer's `[[peers]] allow`, replaced at every start and reload.
    pub config_allow: Vec<String>,
}

impl PeerRecord {
    /// Whether a subscription to `pattern` is within what was granted.
    pub fn allows(&self, pattern: &TypePattern) -> bool {
        self.allow
            .iter()
            .chain(&self.config_allow)
            .filter_map(|g| TypePattern::parse(g).ok())
            .any(|g| g.covers(pattern))
    }

    /// Every pattern granted, admin grants first, without repeats.
    pub fn granted(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for g in self.allow.iter().chain(&self.config_allow) {
            if !out.contains(g) {
                out.push(g.clone());
            }
        }
        out
    }
}

/// Peer records before the allow-lists (record version 1).
#[derive(Serialize, Deserialize)]
struct PeerRecordV1 {
    instance_id: String,
    base_url: String,
    public_key_der: Vec<u8>,
    status: PeerStatus,
    added_at: i64,
    updated_at: i64,
}

/// Version byte of peer records with allow-lists.
const PEER_RECORD_V2: u8 = 2;

/// A peer record as stored: version 2. Other records keep version 1.
fn encode_peer(peer: &PeerRecord) -> Vec<u8> {
    let mut out = vec![PEER_RECORD_V2];
    out.extend(postcard::to_stdvec(peer).expect("records always encode"));
    out
}

/// Reads a peer record of version 2, or of version 1 (written before
/// allow-lists existed: it grants nothing, so such a peer may subscribe to
/// nothing until the admin allows it something).
fn decode_peer(bytes: &[u8]) -> Result<PeerRecord, StoreError> {
    match bytes.split_first() {
        Some((&PEER_RECORD_V2, body)) => {
            postcard::from_bytes(body).map_err(|e| StoreError(format!("corrupt peer record: {e}")))
        }
        Some((&super::RECORD_VERSION, _)) => {
            let v1: PeerRecordV1 = decode(bytes)?;
            Ok(PeerRecord {
                instance_id: v1.instance_id,
                base_url: v1.base_url,
                public_key_der: v1.public_key_der,
                status: v1.status,
                added_at: v1.added_at,
                updated_at: v1.updated_at,
                allow: Vec::new(),
                config_allow: Vec::new(),
            })
        }
        Some((v, _)) => Err(StoreError(format!(
            "peer record format version {v} is not known to this build (it knows 1 and {PEER_RECORD_V2})"
        ))),
        None => Err(StoreError("empty record".into())),
    }
}

/// Which way events flow for a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// The peer subscribed to us: we send it matching events.
    Inbound = 1,
    /// We subscribed to the peer: it sends us matching events.
    Outbound = 2,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }

    fn from_byte(b: u8) -> Option<Direction> {
        match b {
            1 => Some(Direction::Inbound),
            2 => Some(Direction::Outbound),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SubscriptionRecord {
    created_at: i64,
}

#[derive(Debug, Clone)]
pub struct Subscription {
    pub direction: Direction,
    pub peer: String,
    pub pattern: String,
    pub created_at: i64,
}

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

#[derive(Debug, Clone)]
pub struct OutboxEntry {
    pub peer: String,
    pub seq: u64,
    pub record: OutboxRecord,
}

/// How a received journal event relates to what we saw before from its
/// origin plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContinuityKind {
    /// The next event of the chain: seq is last + 1 and prev_hash is the last signature.
    Ok,
    /// One or more events are missing before this one.
    Gap,
    /// Another event with the same seq (or a different predecessor) was seen: the chain forked.
    Fork,
    /// The same event (same signature) arrived again in another message.
    Duplicate,
}

impl ContinuityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ContinuityKind::Ok => "ok",
            ContinuityKind::Gap => "gap",
            ContinuityKind::Fork => "fork",
            ContinuityKind::Duplicate => "duplicate",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Continuity {
    pub kind: ContinuityKind,
    pub plan_id: [u8; 16],
    pub seq: u64,
    /// The seq the chain expected next (last seen + 1).
    pub expected_seq: u64,
    /// The earlier message holding the conflicting event (forks, duplicates).
    pub conflicts_with: Option<[u8; 16]>,
}

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

#[derive(Debug, Clone)]
pub struct InboxEntry {
    pub message_id: Uuid,
    pub record: InboxRecord,
}

/// The chain link of a journal event carried in a message's payload.
#[derive(Debug, Clone, Copy)]
pub struct JournalLink {
    pub plan_id: Uuid,
    pub seq: u64,
    pub prev_hash: Option<[u8; 32]>,
    pub signature: [u8; 32],
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
    /// Storing the messages would take the peer over its quota
    /// ([`Store::fed_set_peer_quota`]); nothing was stored.
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

/// One rotation of this instance's federation key, recorded in the same
/// transaction that queues the announcements to the peers.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyRotationRecord {
    old_key_id: String,
    rotated_at: i64,
}

/// A key a peer announced it rotated away from. Messages signed with it are
/// accepted only as redeliveries of messages already stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RetiredPeerKey {
    public_key_der: Vec<u8>,
    retired_at: i64,
}

/// A verified key-rotation message from a peer: re-pin `new_der` in place of
/// `old_der` when the message `message_id` is stored (not on a redelivery).
#[derive(Debug, Clone)]
pub struct Rekey {
    pub message_id: Uuid,
    pub old_der: Vec<u8>,
    pub new_der: Vec<u8>,
    pub old_key_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OriginEvent {
    signature: [u8; 32],
    message_id: [u8; 16],
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OriginHead {
    last_seq: u64,
    last_signature: [u8; 32],
}

/// Where a journal event goes: a peer and the pattern it subscribed with.
#[derive(Debug, Clone)]
pub struct Route {
    pub peer: String,
    pub pattern: TypePattern,
}

/// State shared by the store handle, the journal writer and the federation
/// layer: the routing snapshot and change notifications.
#[derive(Debug)]
pub struct FedShared {
    routes: RwLock<Arc<Vec<Route>>>,
    /// Held while a routing snapshot is read and installed: without it, two
    /// concurrent refreshes could install the older snapshot last, and a
    /// peer's new subscription would silently route nothing.
    refresh: Mutex<()>,
    outbox_changed: watch::Sender<u64>,
    inbox_changed: watch::Sender<u64>,
    /// Bumped when dead messages are put back in the queue, so workers rescan.
    requeued: watch::Sender<u64>,
    /// Most bytes of inbox records stored per peer (see `retention`).
    pub(super) peer_quota: std::sync::atomic::AtomicU64,
}

impl Default for FedShared {
    fn default() -> Self {
        FedShared {
            routes: RwLock::default(),
            refresh: Mutex::new(()),
            outbox_changed: watch::channel(0).0,
            inbox_changed: watch::channel(0).0,
            requeued: watch::channel(0).0,
            peer_quota: std::sync::atomic::AtomicU64::new(u64::MAX),
        }
    }
}

impl FedShared {
    fn routes(&self) -> Arc<Vec<Route>> {
        self.routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(super) fn outbox_grew(&self) {
        self.outbox_changed.send_modify(|n| *n += 1);
    }
}

pub(super) fn outbox_key(peer: &str, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(peer.len() + 9);
    key.extend_from_slice(peer.as_bytes());
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

pub(super) fn split_outbox_key(key: &[u8]) -> Result<(String, u64), StoreError> {
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

fn sub_key(direction: Direction, peer: &str, pattern: &str) -> Vec<u8> {
    let mut key = vec![direction as u8];
    key.extend_from_slice(peer.as_bytes());
    key.push(0);
    key.extend_from_slice(pattern.as_bytes());
    key
}

fn origin_plan_key(origin: &str, plan: &Uuid) -> Vec<u8> {
    let mut key = origin.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(plan.as_bytes());
    key
}

fn origin_event_key(origin: &str, plan: &Uuid, seq: u64) -> Vec<u8> {
    let mut key = origin_plan_key(origin, plan);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

type BytesTable<'txn> = redb::Table<'txn, &'static [u8], &'static [u8]>;
type IdTable<'txn> = redb::Table<'txn, [u8; 16], &'static [u8]>;

/// Appends one row to `peer`'s outbox at the next per-peer seq.
fn enqueue(
    outbox: &mut BytesTable<'_>,
    ids: &mut IdTable<'_>,
    peer: &str,
    event_type: &str,
    payload: &str,
    now: i64,
) -> Result<Uuid, StoreError> {
    let last = outbox
        .range(outbox_key(peer, 0).as_slice()..=outbox_key(peer, u64::MAX).as_slice())?
        .next_back()
        .transpose()?
        .map(|(k, _)| split_outbox_key(k.value()).map(|(_, seq)| seq))
        .transpose()?
        .unwrap_or(0);
    let message_id = Uuid::new_v4();
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
    ids.insert(message_id.into_bytes(), key.as_slice())?;
    Ok(message_id)
}

/// The federation part of the journal writer's transaction.
pub(super) struct FedTables<'txn> {
    outbox: BytesTable<'txn>,
    ids: IdTable<'txn>,
    routes: Arc<Vec<Route>>,
    /// Rows added in this transaction.
    pub(super) enqueued: usize,
}

impl<'txn> FedTables<'txn> {
    pub(super) fn open(
        txn: &'txn WriteTransaction,
        shared: &FedShared,
    ) -> Result<Self, StoreError> {
        Ok(FedTables {
            outbox: txn.open_table(FED_OUTBOX)?,
            ids: txn.open_table(FED_OUTBOX_IDS)?,
            routes: shared.routes(),
            enqueued: 0,
        })
    }

    /// Queues a just-appended journal event, whole, for every active peer
    /// subscribed to its type (once per peer, however many patterns match).
    pub(super) fn enqueue_event(&mut self, event: &Event) -> Result<(), StoreError> {
        // The system journal (tombstones naming the admin, key rotations) is
        // never sent to a peer, whatever it subscribed to.
        if self.routes.is_empty() || event.plan_id == super::admin::SYSTEM_PLAN {
            return Ok(());
        }
        let mut peers: Vec<&str> = self
            .routes
            .iter()
            .filter(|r| r.pattern.matches(&event.event_type))
            .map(|r| r.peer.as_str())
            .collect();
        if peers.is_empty() {
            return Ok(());
        }
        peers.sort_unstable();
        peers.dedup();
        let payload = serde_json::to_string(event)
            .map_err(|e| StoreError(format!("encoding an event: {e}")))?;
        let now = Timestamp::now().millis();
        for peer in peers {
            enqueue(
                &mut self.outbox,
                &mut self.ids,
                peer,
                &event.event_type,
                &payload,
                now,
            )?;
            self.enqueued += 1;
        }
        Ok(())
    }

    /// Forgets what the outbox holds of a deleted plan, in the deletion's
    /// transaction: its undelivered messages (pending, retrying, dead) are
    /// removed, so they never leave after the plan is gone, and delivered
    /// ones keep their row (the peer has it; listings show the delivery)
    /// with the payload blanked to `null`. Returns (removed, blanked).
    ///
    /// Rows name no plan, so every row is looked at: plan deletion is a
    /// rare admin action, and retention bounds the outbox. Only rows that
    /// are whole journal events of that plan match: a published message
    /// (any payload) never does.
    pub(super) fn forget_plan(&mut self, plan_id: &Uuid) -> Result<(usize, usize), StoreError> {
        let mut doomed = Vec::new();
        let mut blanked = Vec::new();
        for entry in self.outbox.range::<&[u8]>(..)? {
            let (k, v) = entry?;
            let mut record: OutboxRecord = decode(v.value())?;
            let of_plan = serde_json::from_str::<Event>(&record.payload)
                .is_ok_and(|event| event.plan_id == *plan_id);
            if !of_plan {
                continue;
            }
            if record.status == DeliveryStatus::Delivered {
                record.payload = "null".into();
                blanked.push((k.value().to_vec(), record));
            } else {
                doomed.push((k.value().to_vec(), record.message_id));
            }
        }
        for (key, message_id) in &doomed {
            self.outbox.remove(key.as_slice())?;
            self.ids.remove(*message_id)?;
        }
        for (key, record) in &blanked {
            self.outbox
                .insert(key.as_slice(), encode(record).as_slice())?;
        }
        Ok((doomed.len(), blanked.len()))
    }
}

impl Store {
    fn fed_write<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)?;
        let out = f(&txn)?;
        self.db.commit(txn)?;
        Ok(out)
    }

    // ---- peers -------------------------------------------------------------

    pub fn fed_peers(&self) -> Result<Vec<PeerRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(FED_PEERS)?;
        let mut out = Vec::new();
        for entry in table.range::<&str>(..)? {
            let (_, v) = entry?;
            out.push(decode_peer(v.value())?);
        }
        Ok(out)
    }

    pub fn fed_peer(&self, instance_id: &str) -> Result<Option<PeerRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(FED_PEERS)?;
        table
            .get(instance_id)?
            .map(|v| decode_peer(v.value()))
            .transpose()
    }

    /// Inserts or replaces a peer, then refreshes the routing snapshot.
    pub fn fed_put_peer(&self, peer: &PeerRecord) -> Result<(), StoreError> {
        self.fed_write(|txn| {
            txn.open_table(FED_PEERS)?
                .insert(peer.instance_id.as_str(), encode_peer(peer).as_slice())?;
            Ok(())
        })?;
        self.fed_refresh_routes()?;
        self.fed.outbox_grew();
        Ok(())
    }

    /// Adds `patterns` to the grants the local admin gave `peer` (keeping
    /// those it has). Returns the updated record, or None for no such peer.
    pub fn fed_allow(
        &self,
        peer: &str,
        patterns: &[String],
        now: i64,
    ) -> Result<Option<PeerRecord>, StoreError> {
        self.fed_change_peer(peer, |record| {
            for p in patterns {
                if !record.allow.contains(p) {
                    record.allow.push(p.clone());
                }
            }
            record.updated_at = now;
        })
    }

    /// Removes `patterns` from the grants the local admin gave `peer`.
    pub fn fed_disallow(
        &self,
        peer: &str,
        patterns: &[String],
        now: i64,
    ) -> Result<Option<PeerRecord>, StoreError> {
        self.fed_change_peer(peer, |record| {
            record.allow.retain(|g| !patterns.contains(g));
            record.updated_at = now;
        })
    }

    /// Replaces the grants `[[peers]]` gives `peer` (at start and reload).
    pub fn fed_set_config_allow(
        &self,
        peer: &str,
        patterns: &[String],
    ) -> Result<Option<PeerRecord>, StoreError> {
        self.fed_change_peer(peer, |record| record.config_allow = patterns.to_vec())
    }

    /// Reads, changes and writes one peer record in one transaction (so a
    /// concurrent change, e.g. a key rotation, is not lost), then refreshes
    /// the routing snapshot.
    fn fed_change_peer(
        &self,
        peer: &str,
        change: impl FnOnce(&mut PeerRecord),
    ) -> Result<Option<PeerRecord>, StoreError> {
        let record = self.fed_write(|txn| {
            let mut table = txn.open_table(FED_PEERS)?;
            let Some(mut record) = table
                .get(peer)?
                .map(|v| decode_peer(v.value()))
                .transpose()?
            else {
                return Ok(None);
            };
            change(&mut record);
            table.insert(peer, encode_peer(&record).as_slice())?;
            Ok(Some(record))
        })?;
        self.fed_refresh_routes()?;
        Ok(record)
    }

    // ---- subscriptions -----------------------------------------------------

    pub fn fed_subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(FED_SUBS)?;
        let mut out = Vec::new();
        for entry in table.range::<&[u8]>(..)? {
            let (k, v) = entry?;
            let key = k.value();
            let record: SubscriptionRecord = decode(v.value())?;
            let bad = || StoreError("corrupt subscription key".into());
            let direction = Direction::from_byte(*key.first().ok_or_else(bad)?).ok_or_else(bad)?;
            let rest = &key[1..];
            let nul = rest.iter().position(|&b| b == 0).ok_or_else(bad)?;
            out.push(Subscription {
                direction,
                peer: String::from_utf8(rest[..nul].to_vec()).map_err(|_| bad())?,
                pattern: String::from_utf8(rest[nul + 1..].to_vec()).map_err(|_| bad())?,
                created_at: record.created_at,
            });
        }
        Ok(out)
    }

    /// Adds a subscription (idempotent). Returns false if it already existed.
    pub fn fed_put_subscription(
        &self,
        direction: Direction,
        peer: &str,
        pattern: &str,
    ) -> Result<bool, StoreError> {
        let added = self.fed_write(|txn| {
            let mut table = txn.open_table(FED_SUBS)?;
            let key = sub_key(direction, peer, pattern);
            if table.get(key.as_slice())?.is_some() {
                return Ok(false);
            }
            let record = SubscriptionRecord {
                created_at: Timestamp::now().millis(),
            };
            table.insert(key.as_slice(), encode(&record).as_slice())?;
            Ok(true)
        })?;
        self.fed_refresh_routes()?;
        Ok(added)
    }

    /// Removes a subscription. Returns false if there was none.
    pub fn fed_remove_subscription(
        &self,
        direction: Direction,
        peer: &str,
        pattern: &str,
    ) -> Result<bool, StoreError> {
        let removed = self.fed_write(|txn| {
            let mut table = txn.open_table(FED_SUBS)?;
            Ok(table
                .remove(sub_key(direction, peer, pattern).as_slice())?
                .is_some())
        })?;
        self.fed_refresh_routes()?;
        Ok(removed)
    }

    /// Rebuilds the writer's routing snapshot: inbound subscriptions of active peers.
    pub fn fed_refresh_routes(&self) -> Result<(), StoreError> {
        let _serialized = self.fed.refresh.lock().unwrap_or_else(|e| e.into_inner());
        let active: std::collections::HashMap<String, PeerRecord> = self
            .fed_peers()?
            .into_iter()
            .filter(|p| p.status == PeerStatus::Active)
            .map(|p| (p.instance_id.clone(), p))
            .collect();
        // A subscription routes only while the peer's grants cover it: a
        // revoked grant stops the flow without deleting the subscription.
        let routes = self
            .fed_subscriptions()?
            .into_iter()
            .filter(|s| s.direction == Direction::Inbound)
            .filter_map(|s| {
                let pattern = TypePattern::parse(&s.pattern).ok()?;
                active.get(&s.peer)?.allows(&pattern).then_some(Route {
                    pattern,
                    peer: s.peer,
                })
            })
            .collect();
        *self.fed.routes.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(routes);
        Ok(())
    }

    /// Inbound routes (peer, pattern) in force.
    pub fn fed_routes(&self) -> Arc<Vec<Route>> {
        self.fed.routes()
    }

    // ---- outbox ------------------------------------------------------------

    /// Queues a published message for every active peer whose subscription
    /// matches, in one durable transaction. Returns (peer, message id) pairs.
    pub fn fed_publish(
        &self,
        event_type: &str,
        payload: &str,
    ) -> Result<Vec<(String, Uuid)>, StoreError> {
        let routes = self.fed.routes();
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
        let queued = self.fed_write(|txn| {
            let mut outbox = txn.open_table(FED_OUTBOX)?;
            let mut ids = txn.open_table(FED_OUTBOX_IDS)?;
            peers
                .iter()
                .map(|peer| {
                    Ok((
                        peer.to_string(),
                        enqueue(&mut outbox, &mut ids, peer, event_type, payload, now)?,
                    ))
                })
                .collect::<Result<Vec<_>, StoreError>>()
        })?;
        self.fed.outbox_grew();
        Ok(queued)
    }

    /// Wakes when rows are added to any outbox, or a peer changes.
    pub fn fed_outbox_watch(&self) -> watch::Receiver<u64> {
        self.fed.outbox_changed.subscribe()
    }

    /// Wakes when dead messages are requeued.
    pub fn fed_requeue_watch(&self) -> watch::Receiver<u64> {
        self.fed.requeued.subscribe()
    }

    /// The next messages due for `peer`, in order, starting after `cursor`:
    /// the open (pending or retrying) rows from the first open one on, at
    /// most `limit`, all due by `now`. Returns the rows, the new cursor (all
    /// rows up to it are delivered or dead) and, when nothing is due yet,
    /// when the first open row will be.
    #[allow(clippy::type_complexity)]
    pub fn fed_outbox_due(
        &self,
        peer: &str,
        cursor: u64,
        limit: usize,
        now: i64,
    ) -> Result<(Vec<(u64, OutboxRecord)>, u64, Option<i64>), StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(FED_OUTBOX)?;
        let mut rows = Vec::new();
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
            if rows.len() >= limit {
                break;
            }
        }
        Ok((rows, new_cursor, wait_until))
    }

    /// Applies `update` to the rows `seqs` of `peer`. With `delivered`, a
    /// key-rotation message among them no longer counts as pending: the peer
    /// knows our new key.
    fn fed_update_outbox(
        &self,
        peer: &str,
        seqs: &[u64],
        delivered: bool,
        mut update: impl FnMut(&mut OutboxRecord),
    ) -> Result<(), StoreError> {
        self.fed_write(|txn| {
            let mut table = txn.open_table(FED_OUTBOX)?;
            let mut pending = txn.open_table(FED_PENDING_ROTATIONS)?;
            for &seq in seqs {
                if delivered {
                    pending.remove(outbox_key(peer, seq).as_slice())?;
                }
                let key = outbox_key(peer, seq);
                let Some(stored) = table
                    .get(key.as_slice())?
                    .map(|v| decode::<OutboxRecord>(v.value()))
                    .transpose()?
                else {
                    continue;
                };
                let mut record = stored;
                update(&mut record);
                table.insert(key.as_slice(), encode(&record).as_slice())?;
            }
            Ok(())
        })
    }

    pub fn fed_mark_delivered(&self, peer: &str, seqs: &[u64]) -> Result<(), StoreError> {
        let now = Timestamp::now().millis();
        self.fed_update_outbox(peer, seqs, true, |r| {
            r.status = DeliveryStatus::Delivered;
            r.attempts = r.attempts.saturating_add(1);
            r.last_error = None;
            r.updated_at = now;
        })
    }

    /// Records a failed attempt: `retrying` until `max_attempts` or
    /// `max_age_ms`, then `dead`. Returns how many went dead.
    pub fn fed_mark_failed(
        &self,
        peer: &str,
        seqs: &[u64],
        error: &str,
        next_attempt_at: i64,
        max_attempts: u32,
        max_age_ms: i64,
    ) -> Result<usize, StoreError> {
        let now = Timestamp::now().millis();
        let mut dead = 0;
        // The error quotes what the peer answered: stored inert.
        let error = inert_text(error);
        self.fed_update_outbox(peer, seqs, false, |r| {
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
    pub fn fed_ack(&self, peer: &str, message_id: &Uuid) -> Result<bool, StoreError> {
        let key = {
            let txn = self.db.begin_read()?;
            let ids = txn.open_table(FED_OUTBOX_IDS)?;
            match ids.get(message_id.into_bytes())? {
                Some(k) => k.value().to_vec(),
                None => return Ok(false),
            }
        };
        let (owner, seq) = split_outbox_key(&key)?;
        if owner != peer {
            return Ok(false);
        }
        let now = Timestamp::now().millis();
        self.fed_update_outbox(peer, &[seq], true, |r| {
            if r.status != DeliveryStatus::Delivered {
                r.status = DeliveryStatus::Delivered;
                r.last_error = None;
                r.updated_at = now;
            }
        })?;
        Ok(true)
    }

    /// Puts dead messages back in the queue: one by id, or every dead one
    /// (of one peer, if given). Returns how many.
    pub fn fed_retry_dead(
        &self,
        message_id: Option<&Uuid>,
        peer: Option<&str>,
    ) -> Result<usize, StoreError> {
        let now = Timestamp::now().millis();
        let count = self.fed_write(|txn| {
            let mut table = txn.open_table(FED_OUTBOX)?;
            let keys: Vec<Vec<u8>> = match message_id {
                Some(id) => {
                    let ids = txn.open_table(FED_OUTBOX_IDS)?;
                    ids.get(id.into_bytes())?
                        .map(|k| k.value().to_vec())
                        .into_iter()
                        .collect()
                }
                None => {
                    let mut keys = Vec::new();
                    for entry in table.range::<&[u8]>(..)? {
                        let (k, v) = entry?;
                        let (owner, _) = split_outbox_key(k.value())?;
                        if peer.is_some_and(|p| p != owner) {
                            continue;
                        }
                        if decode::<OutboxRecord>(v.value())?.status == DeliveryStatus::Dead {
                            keys.push(k.value().to_vec());
                        }
                    }
                    keys
                }
            };
            let mut count = 0;
            for key in keys {
                let (owner, _) = split_outbox_key(&key)?;
                if peer.is_some_and(|p| p != owner) {
                    continue;
                }
                let Some(mut record) = table
                    .get(key.as_slice())?
                    .map(|v| decode::<OutboxRecord>(v.value()))
                    .transpose()?
                else {
                    continue;
                };
                if record.status != DeliveryStatus::Dead {
                    continue;
                }
                record.status = DeliveryStatus::Pending;
                record.attempts = 0;
                record.next_attempt_at = 0;
                record.created_at = now; // the age limit restarts
                record.updated_at = now;
                table.insert(key.as_slice(), encode(&record).as_slice())?;
                count += 1;
            }
            Ok(count)
        })?;
        if count > 0 {
            self.fed.requeued.send_modify(|n| *n += 1);
            self.fed.outbox_grew();
        }
        Ok(count)
    }

    /// Deletes dead messages: one by id (if it is dead, and of `peer` when
    /// given), or every dead one of `peer`, or with neither every dead one.
    /// Returns how many. They are gone for good: a late ack for one is ignored.
    pub fn fed_drop_dead(
        &self,
        message_id: Option<&Uuid>,
        peer: Option<&str>,
    ) -> Result<usize, StoreError> {
        let count = self.fed_write(|txn| {
            let mut table = txn.open_table(FED_OUTBOX)?;
            let mut ids = txn.open_table(FED_OUTBOX_IDS)?;
            let mut pending = txn.open_table(FED_PENDING_ROTATIONS)?;
            let mut doomed: Vec<(Vec<u8>, [u8; 16])> = Vec::new();
            let candidates: Vec<Vec<u8>> = match (message_id, peer) {
                (Some(id), _) => ids
                    .get(id.into_bytes())?
                    .map(|k| k.value().to_vec())
                    .into_iter()
                    .collect(),
                (None, Some(p)) => table
                    .range(outbox_key(p, 0).as_slice()..=outbox_key(p, u64::MAX).as_slice())?
                    .map(|e| e.map(|(k, _)| k.value().to_vec()))
                    .collect::<Result<_, _>>()?,
                (None, None) => table
                    .range::<&[u8]>(..)?
                    .map(|e| e.map(|(k, _)| k.value().to_vec()))
                    .collect::<Result<_, _>>()?,
            };
            for key in candidates {
                let (owner, _) = split_outbox_key(&key)?;
                if peer.is_some_and(|p| p != owner) {
                    continue;
                }
                let Some(record) = table
                    .get(key.as_slice())?
                    .map(|v| decode::<OutboxRecord>(v.value()))
                    .transpose()?
                else {
                    continue;
                };
                if record.status == DeliveryStatus::Dead {
                    doomed.push((key, record.message_id));
                }
            }
            for (key, id) in &doomed {
                table.remove(key.as_slice())?;
                ids.remove(*id)?;
                // A dropped key announcement will never reach the peer
                // (typically it was re-pinned by hand): stop signing for it
                // with the old key.
                pending.remove(key.as_slice())?;
            }
            Ok(doomed.len())
        })?;
        if count > 0 {
            // Workers rescan from the start: a dropped row's seq may be reused.
            self.fed.requeued.send_modify(|n| *n += 1);
            self.fed.outbox_grew();
        }
        Ok(count)
    }

    /// Queues the announcement of a new key of ours for every known peer
    /// (any status: a suspended or removed peer that comes back must learn
    /// it first), marks each as pending (signed with `old_key_id` until the
    /// peer acknowledges it), and records the rotation, all in one durable
    /// transaction: this commit is the point where the rotation happened.
    pub fn fed_enqueue_key_rotation(
        &self,
        event_type: &str,
        payload: &str,
        old_key_id: &str,
        new_key_id: &str,
    ) -> Result<Vec<(String, Uuid)>, StoreError> {
        let now = Timestamp::now().millis();
        let peers = self.fed_peers()?;
        let queued = self.fed_write(|txn| {
            let mut outbox = txn.open_table(FED_OUTBOX)?;
            let mut ids = txn.open_table(FED_OUTBOX_IDS)?;
            let mut pending = txn.open_table(FED_PENDING_ROTATIONS)?;
            let mut queued = Vec::with_capacity(peers.len());
            for peer in &peers {
                let id = enqueue(
                    &mut outbox,
                    &mut ids,
                    &peer.instance_id,
                    event_type,
                    payload,
                    now,
                )?;
                let key = ids
                    .get(id.into_bytes())?
                    .map(|k| k.value().to_vec())
                    .ok_or_else(|| StoreError("queued message has no outbox key".into()))?;
                pending.insert(key.as_slice(), old_key_id)?;
                queued.push((peer.instance_id.clone(), id));
            }
            let record = KeyRotationRecord {
                old_key_id: old_key_id.to_string(),
                rotated_at: now,
            };
            txn.open_table(FED_KEY_ROTATIONS)?
                .insert(new_key_id, encode(&record).as_slice())?;
            Ok(queued)
        })?;
        self.fed.outbox_grew();
        Ok(queued)
    }

    /// Whether a rotation to `new_key_id` was committed.
    pub fn fed_key_rotation_committed(&self, new_key_id: &str) -> Result<bool, StoreError> {
        let txn = self.db.begin_read()?;
        Ok(txn
            .open_table(FED_KEY_ROTATIONS)?
            .get(new_key_id)?
            .is_some())
    }

    /// The first key announcement `peer` has not acknowledged yet: its
    /// outbox seq and the key id it is signed with. Until it is
    /// acknowledged the peer still pins that (old) key, so everything we
    /// sign for the peer up to it uses that key.
    pub fn fed_pending_rotation(&self, peer: &str) -> Result<Option<(u64, String)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(FED_PENDING_ROTATIONS)?;
        let first = table
            .range(outbox_key(peer, 0).as_slice()..=outbox_key(peer, u64::MAX).as_slice())?
            .next()
            .transpose()?;
        match first {
            Some((k, v)) => Ok(Some((
                split_outbox_key(k.value())?.1,
                v.value().to_string(),
            ))),
            None => Ok(None),
        }
    }

    /// A key `peer` announced it rotated away from, by key id.
    pub fn fed_retired_peer_key(
        &self,
        peer: &str,
        key_id: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(FED_RETIRED_PEER_KEYS)?;
        table
            .get(retired_peer_key(peer, key_id).as_slice())?
            .map(|v| decode::<RetiredPeerKey>(v.value()).map(|r| r.public_key_der))
            .transpose()
    }

    /// Outbox rows in (peer, seq) order, optionally of one peer and status.
    pub fn fed_outbox_list(
        &self,
        peer: Option<&str>,
        status: Option<DeliveryStatus>,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        self.fed_outbox_page(peer, status, None, limit)
    }

    /// A page of outbox rows in (peer, seq) order, after the row `after`
    /// (peer, seq) if given, optionally of one peer and status.
    pub fn fed_outbox_page(
        &self,
        peer: Option<&str>,
        status: Option<DeliveryStatus>,
        after: Option<(&str, u64)>,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let lower = match (peer, after) {
            // A cursor past the peer's rows: nothing left of that peer.
            (Some(p), Some((ap, _))) if ap > p => return Ok(Vec::new()),
            (Some(p), Some((ap, seq))) if ap == p => Excluded(outbox_key(p, seq)),
            (Some(p), _) => Included(outbox_key(p, 0)),
            (None, Some((ap, seq))) => Excluded(outbox_key(ap, seq)),
            (None, None) => Unbounded,
        };
        let upper = peer.map(|p| outbox_key(p, u64::MAX));
        let txn = self.db.begin_read()?;
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
        let mut out = Vec::new();
        for entry in table.range::<&[u8]>(bounds)? {
            let (k, v) = entry?;
            let record: OutboxRecord = decode(v.value())?;
            if status.is_some_and(|s| s != record.status) {
                continue;
            }
            let (peer, seq) = split_outbox_key(k.value())?;
            out.push(OutboxEntry { peer, seq, record });
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    // ---- inbox -------------------------------------------------------------

    /// Stores verified messages in one durable transaction, checking the
    /// chain continuity of journal events. A message id reused for different
    /// content aborts the whole batch: nothing is stored.
    pub fn fed_receive(&self, messages: &[Incoming]) -> Result<Vec<ReceiveOutcome>, ReceiveError> {
        self.fed_receive_rekey(messages, None)
    }

    /// Like [`Store::fed_receive`]; when `rekey` names a message of the
    /// batch that is stored now (not a redelivery), the sender's pinned key
    /// is replaced by the announced one in the same transaction, and the old
    /// key kept as retired. The announcement gets no inbox position: like
    /// other control messages it is not listed or streamed.
    pub fn fed_receive_rekey(
        &self,
        messages: &[Incoming],
        rekey: Option<&Rekey>,
    ) -> Result<Vec<ReceiveOutcome>, ReceiveError> {
        let mut txn = self.db.begin_write()?;
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
                    .get(id)
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
                    let record = InboxRecord {
                        position: 0,
                        peer: m.peer.clone(),
                        event_type: m.event_type.clone(),
                        payload: m.payload.clone(),
                        timestamp: m.timestamp,
                        received_at: now,
                        digest: m.digest,
                        continuity: None,
                    };
                    inbox
                        .insert(id, encode(&record).as_slice())
                        .map_err(StoreError::from)?;
                    charged += super::retention::inbox_record_bytes(&record);
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
                let record = InboxRecord {
                    position,
                    peer: m.peer.clone(),
                    event_type: m.event_type.clone(),
                    payload: m.payload.clone(),
                    timestamp: m.timestamp,
                    received_at: now,
                    digest: m.digest,
                    continuity,
                };
                inbox
                    .insert(id, encode(&record).as_slice())
                    .map_err(StoreError::from)?;
                positions.insert(position, id).map_err(StoreError::from)?;
                charged += super::retention::inbox_record_bytes(&record);
                outcomes.push(ReceiveOutcome::Stored);
                stored += 1;
            }
        }
        // One sender per request (the inbox refuses mixed batches).
        if let Some(m) = messages.first() {
            super::retention::charge(self, &txn, &m.peer, charged)?;
        }
        self.db.commit(txn)?;
        if stored > 0 {
            self.fed.inbox_changed.send_modify(|n| *n += 1);
        }
        Ok(outcomes)
    }

    /// Applies a verified subscribe (or unsubscribe) request from `m.peer`
    /// at most once. The request is recorded in the inbox under its message
    /// id, in the same durable transaction as the subscription change, so a
    /// replay of it is acknowledged again but changes nothing (a replayed
    /// old unsubscribe must not silently end a newer subscription). It gets
    /// no inbox position: control requests are not listed or streamed.
    pub fn fed_receive_control(
        &self,
        m: &Incoming,
        pattern: &str,
        subscribe: bool,
        max_subscriptions: usize,
    ) -> Result<ReceiveOutcome, ReceiveError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)
            .map_err(StoreError::from)?;
        {
            let mut inbox = txn.open_table(FED_INBOX).map_err(StoreError::from)?;
            let id = m.message_id.into_bytes();
            let existing = inbox
                .get(id)
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
            let record = InboxRecord {
                position: 0,
                peer: m.peer.clone(),
                event_type: m.event_type.clone(),
                payload: m.payload.clone(),
                timestamp: m.timestamp,
                received_at: now,
                digest: m.digest,
                continuity: None,
            };
            inbox
                .insert(id, encode(&record).as_slice())
                .map_err(StoreError::from)?;
            let bytes = super::retention::inbox_record_bytes(&record);
            super::retention::charge(self, &txn, &m.peer, bytes)?;
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
        self.db.commit(txn)?;
        self.fed_refresh_routes()?;
        Ok(ReceiveOutcome::Stored)
    }

    pub fn fed_inbox_watch(&self) -> watch::Receiver<u64> {
        self.fed.inbox_changed.subscribe()
    }

    /// Received messages with position > `after`, in order.
    pub fn fed_inbox_after(&self, after: u64, limit: usize) -> Result<Vec<InboxEntry>, StoreError> {
        let Some(first) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let txn = self.db.begin_read()?;
        let positions = txn.open_table(FED_INBOX_POSITIONS)?;
        let inbox = txn.open_table(FED_INBOX)?;
        let mut out = Vec::new();
        for entry in positions.range(first..)?.take(limit) {
            let (_, id) = entry?;
            let id = id.value();
            let record = inbox
                .get(id)?
                .ok_or_else(|| StoreError("inbox position points at a missing message".into()))?;
            out.push(InboxEntry {
                message_id: Uuid::from_bytes(id),
                record: decode(record.value())?,
            });
        }
        Ok(out)
    }

    pub fn fed_inbox_last_position(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let positions = txn.open_table(FED_INBOX_POSITIONS)?;
        Ok(positions.last()?.map_or(0, |(k, _)| k.value()))
    }

    pub fn fed_inbox_get(&self, message_id: &Uuid) -> Result<Option<InboxRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let inbox = txn.open_table(FED_INBOX)?;
        inbox
            .get(message_id.into_bytes())?
            .map(|v| decode(v.value()))
            .transpose()
    }
}

fn retired_peer_key(peer: &str, key_id: &str) -> Vec<u8> {
    let mut key = peer.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(key_id.as_bytes());
    key
}

/// Replaces `peer`'s pinned key as `rekey` says, keeping the old one as
/// retired. Refuses if the pin changed since the message was verified.
fn repin(txn: &WriteTransaction, peer: &str, rekey: &Rekey, now: i64) -> Result<(), StoreError> {
    let mut peers = txn.open_table(FED_PEERS)?;
    let mut record: PeerRecord = peers
        .get(peer)?
        .map(|v| decode_peer(v.value()))
        .transpose()?
        .ok_or_else(|| StoreError(format!("peer {peer:?} vanished during a key rotation")))?;
    if rekey.new_der == rekey.old_der {
        return Ok(()); // announced the key we already pin
    }
    if record.public_key_der != rekey.old_der {
        return Err(StoreError(format!(
            "the key pinned for {peer:?} changed while its key rotation was being applied"
        )));
    }
    record.public_key_der = rekey.new_der.clone();
    record.updated_at = now;
    peers.insert(peer, encode_peer(&record).as_slice())?;
    txn.open_table(FED_RETIRED_PEER_KEYS)?.insert(
        retired_peer_key(peer, &rekey.old_key_id).as_slice(),
        encode(&RetiredPeerKey {
            public_key_der: rekey.old_der.clone(),
            retired_at: now,
        })
        .as_slice(),
    )?;
    Ok(())
}

/// Classifies a received journal event against what this origin plan sent
/// before, and records it. Both sides of a fork stay stored as evidence.
fn check_continuity(
    events: &mut BytesTable<'_>,
    heads: &mut BytesTable<'_>,
    origin: &str,
    link: &JournalLink,
    message_id: &[u8; 16],
) -> Result<Continuity, StoreError> {
    let head_key = origin_plan_key(origin, &link.plan_id);
    let head: Option<OriginHead> = heads
        .get(head_key.as_slice())?
        .map(|v| decode(v.value()))
        .transpose()?;
    let expected_seq = head.as_ref().map_or(1, |h| h.last_seq + 1);
    let event_key = origin_event_key(origin, &link.plan_id, link.seq);
    let seen: Option<OriginEvent> = events
        .get(event_key.as_slice())?
        .map(|v| decode(v.value()))
        .transpose()?;
    let continuity = |kind, conflicts_with| Continuity {
        kind,
        plan_id: link.plan_id.into_bytes(),
        seq: link.seq,
        expected_seq,
        conflicts_with,
    };
    if let Some(seen) = seen {
        let kind = if seen.signature == link.signature {
            ContinuityKind::Duplicate
        } else {
            ContinuityKind::Fork
        };
        return Ok(continuity(kind, Some(seen.message_id)));
    }
    let kind = match &head {
        None if link.seq == 1 && link.prev_hash.is_none() => ContinuityKind::Ok,
        Some(h) if link.seq == h.last_seq + 1 && link.prev_hash == Some(h.last_signature) => {
            ContinuityKind::Ok
        }
        // The next seq, but not built on the event we hold: another branch.
        Some(h) if link.seq == h.last_seq + 1 => ContinuityKind::Fork,
        Some(h) if link.seq <= h.last_seq => ContinuityKind::Gap, // an older event we never saw
        _ => ContinuityKind::Gap,
    };
    // With a fork at the head, name the event it conflicts with.
    let conflicts_with = if kind == ContinuityKind::Fork {
        let prev_key = origin_event_key(origin, &link.plan_id, link.seq - 1);
        events
            .get(prev_key.as_slice())?
            .map(|v| decode::<OriginEvent>(v.value()))
            .transpose()?
            .map(|e| e.message_id)
    } else {
        None
    };
    events.insert(
        event_key.as_slice(),
        encode(&OriginEvent {
            signature: link.signature,
            message_id: *message_id,
        })
        .as_slice(),
    )?;
    if head.as_ref().is_none_or(|h| link.seq > h.last_seq) {
        heads.insert(
            head_key.as_slice(),
            encode(&OriginHead {
                last_seq: link.seq,
                last_signature: link.signature,
            })
            .as_slice(),
        )?;
    }
    Ok(continuity(kind, conflicts_with))
}

/// Longest peer-supplied text stored, in bytes.
pub const MAX_PEER_TEXT: usize = 4096;

/// Peer-supplied text made inert before it is stored or shown: control
/// characters (and the bidirectional overrides that reorder a terminal
/// line) become `\u{..}` escapes, and the result is cut to
/// [`MAX_PEER_TEXT`] bytes. A CLI, a log line or a JSON reader then shows
/// it as written, and it cannot move a cursor, recolour a terminal or
/// forge a log line.
pub fn inert_text(text: &str) -> String {
    const CUT: &str = "…";
    let mut out = String::with_capacity(text.len().min(MAX_PEER_TEXT));
    for c in text.chars() {
        let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        let piece = if c.is_control() || bidi {
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

    fn peer(allow: &[&str], config_allow: &[&str]) -> PeerRecord {
        PeerRecord {
            instance_id: "beta".into(),
            base_url: "http://127.0.0.1:9".into(),
            public_key_der: vec![1, 2, 3],
            status: PeerStatus::Suspended,
            added_at: 5,
            updated_at: 6,
            allow: allow.iter().map(|s| s.to_string()).collect(),
            config_allow: config_allow.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Peer records are version 2 (with grants); a version-1 record,
    /// written before grants existed, still decodes, granting nothing.
    #[test]
    fn peer_records_round_trip_and_old_ones_decode_without_grants() {
        let record = peer(&["step.>"], &["plan.*"]);
        let bytes = encode_peer(&record);
        assert_eq!(bytes[0], PEER_RECORD_V2);
        let back = decode_peer(&bytes).unwrap();
        assert_eq!(
            (back.allow.clone(), back.config_allow.clone()),
            (record.allow, record.config_allow)
        );
        assert_eq!(back.granted(), ["step.>", "plan.*"]);

        let v1 = encode(&PeerRecordV1 {
            instance_id: "beta".into(),
            base_url: "http://127.0.0.1:9".into(),
            public_key_der: vec![1, 2, 3],
            status: PeerStatus::Suspended,
            added_at: 5,
            updated_at: 6,
        });
        assert_eq!(v1[0], super::super::RECORD_VERSION);
        let old = decode_peer(&v1).unwrap();
        assert_eq!(
            (
                old.instance_id.as_str(),
                old.public_key_der.as_slice(),
                old.status,
                old.added_at,
                old.updated_at
            ),
            ("beta", &[1u8, 2, 3][..], PeerStatus::Suspended, 5, 6)
        );
        assert!(old.allow.is_empty() && old.config_allow.is_empty());
        assert!(!old.allows(&TypePattern::parse("step.completed").unwrap()));

        let mut future = bytes.clone();
        future[0] = 3;
        assert!(
            decode_peer(&future)
                .unwrap_err()
                .to_string()
                .contains("version 3")
        );
    }

    #[test]
    fn grants_cover_subscriptions() {
        let p = |s: &str| TypePattern::parse(s).unwrap();
        let record = peer(&["step.>"], &["plan.created"]);
        assert!(record.allows(&p("step.*")) && record.allows(&p("plan.created")));
        assert!(!record.allows(&p(">")) && !record.allows(&p("plan.*")));
        assert!(!peer(&[], &[]).allows(&p("step.completed")));
    }

    /// Subscriptions committed concurrently must all end up in the routing
    /// snapshot: a stale snapshot installed last would silently queue
    /// nothing for a peer that was told it is subscribed.
    #[test]
    fn concurrent_subscriptions_are_all_routed() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = Arc::new(crate::journal::keys::Keyring::from_secret(b"k".to_vec()));
        let (fanout, _) = tokio::sync::broadcast::channel(16);
        let (store, writer) = Store::open(&dir.path().join("store.redb"), keyring, fanout).unwrap();
        const PEERS: usize = 6;
        const PATTERNS: usize = 25;
        for i in 0..PEERS {
            store
                .fed_put_peer(&PeerRecord {
                    instance_id: format!("peer{i}"),
                    base_url: "http://127.0.0.1:9".into(),
                    public_key_der: Vec::new(),
                    status: PeerStatus::Active,
                    added_at: 0,
                    updated_at: 0,
                    allow: vec![">".into()],
                    config_allow: Vec::new(),
                })
                .unwrap();
        }
        std::thread::scope(|scope| {
            for i in 0..PEERS {
                let store = &store;
                scope.spawn(move || {
                    for j in 0..PATTERNS {
                        store
                            .fed_put_subscription(
                                Direction::Inbound,
                                &format!("peer{i}"),
                                &format!("t{j}.>"),
                            )
                            .unwrap();
                    }
                });
            }
        });
        assert_eq!(store.fed_routes().len(), PEERS * PATTERNS);
        drop(store);
        writer.shutdown();
    }
}
