//! Key rotation: our rotations (the commit point and the announcements
//! pending per peer) and the keys peers rotated away from. Reached through
//! [`Store::rotations`].

use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::outbox::{enqueue, outbox_key, split_outbox_key};
use super::peers::{PeerRecord, decode_peer, encode_peer};
use super::{
    FED_KEY_ROTATIONS, FED_OUTBOX, FED_OUTBOX_IDS, FED_PEERS, FED_PENDING_ROTATIONS,
    FED_RETIRED_PEER_KEYS,
};
use crate::event::Timestamp;
use crate::store::{Store, StoreError, decode, encode};

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

/// The view of the store for key rotations, ours and our peers'.
#[derive(Clone, Copy)]
pub struct Rotations<'a> {
    store: &'a Store,
}

impl Store {
    /// Key rotations: ours (announced and pending per peer) and our peers'.
    pub fn rotations(&self) -> Rotations<'_> {
        Rotations { store: self }
    }
}

impl Rotations<'_> {
    /// Queues the announcement of a new key of ours for every known peer
    /// (any status: a suspended or removed peer that comes back must learn
    /// it first), marks each as pending (signed with `old_key_id` until the
    /// peer acknowledges it), and records the rotation, all in one durable
    /// transaction: this commit is the point where the rotation happened.
    pub fn announce(
        &self,
        event_type: &str,
        payload: &str,
        old_key_id: &str,
        new_key_id: &str,
    ) -> Result<Vec<(String, Uuid)>, StoreError> {
        let now = Timestamp::now().millis();
        let peers = self.store.peers().list()?;
        let queued = self.store.write_durable(|txn| {
            let mut outbox = txn.open_table(FED_OUTBOX)?;
            let mut ids = txn.open_table(FED_OUTBOX_IDS)?;
            let mut pending = txn.open_table(FED_PENDING_ROTATIONS)?;
            let mut queued = Vec::with_capacity(peers.len());
            for peer in &peers {
                let id = super::outbox::new_message_id();
                let key = enqueue(
                    &mut outbox,
                    &mut ids,
                    &peer.instance_id,
                    id,
                    event_type,
                    payload,
                    now,
                )?;
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
        self.store.fed.outbox_grew();
        Ok(queued)
    }

    /// Whether a rotation to `new_key_id` was committed.
    pub fn committed(&self, new_key_id: &str) -> Result<bool, StoreError> {
        let txn = self.store.db.begin_read()?;
        Ok(txn
            .open_table(FED_KEY_ROTATIONS)?
            .get(new_key_id)?
            .is_some())
    }

    /// The first key announcement `peer` has not acknowledged yet: its
    /// outbox seq and the key id it is signed with. Until it is
    /// acknowledged the peer still pins that (old) key, so everything we
    /// sign for the peer up to it uses that key.
    pub fn pending(&self, peer: &str) -> Result<Option<(u64, String)>, StoreError> {
        let txn = self.store.db.begin_read()?;
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
    pub fn retired_peer_key(
        &self,
        peer: &str,
        key_id: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.store.db.begin_read()?;
        retired_der(&txn.open_table(FED_RETIRED_PEER_KEYS)?, peer, key_id)
    }
}

#[cfg(feature = "test-util")]
impl Rotations<'_> {
    /// Applies `rekey` to `peer` as a received announcement does, alone in
    /// its transaction, with no signature to check: for other crates'
    /// tests (a race with a rotation), never in the daemon.
    pub fn repin_for_test(&self, peer: &str, rekey: &Rekey) -> Result<(), StoreError> {
        self.store
            .write_durable(|txn| repin(txn, peer, rekey, Timestamp::now().millis()))
    }
}

/// The key `peer` rotated away from with id `key_id`, in `table` (of a read
/// or a write transaction).
pub(super) fn retired_der(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    peer: &str,
    key_id: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    table
        .get(retired_peer_key(peer, key_id).as_slice())?
        .map(|v| decode::<RetiredPeerKey>(v.value()).map(|r| r.public_key_der))
        .transpose()
}

fn retired_peer_key(peer: &str, key_id: &str) -> Vec<u8> {
    let mut key = peer.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(key_id.as_bytes());
    key
}

/// Replaces `peer`'s pinned key as `rekey` says, keeping the old one as
/// retired. Refuses if the pin changed since the message was verified.
pub(super) fn repin(
    txn: &WriteTransaction,
    peer: &str,
    rekey: &Rekey,
    now: i64,
) -> Result<(), StoreError> {
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
