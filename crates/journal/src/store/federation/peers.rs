//! Peers (the pinned key and the grants) and subscriptions in both
//! directions, with the routing snapshot the journal writer uses. Reached
//! through [`Store::peers`].

use std::sync::{Arc, Mutex};

use logbook_base::reloadable::Reloadable;

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::{FED_PEERS, FED_RETIRED_PEER_KEYS, FED_SUBS, Route};
use crate::event::Timestamp;
use crate::registry::TypePattern;
use crate::store::{Store, StoreError, decode, encode};

/// Whether a peer may exchange messages: only `Active` peers send and receive.
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
pub(super) fn encode_peer(peer: &PeerRecord) -> Vec<u8> {
    let mut out = vec![PEER_RECORD_V2];
    out.extend(postcard::to_stdvec(peer).expect("records always encode"));
    out
}

/// Reads a peer record of version 2, or of version 1 (written before
/// allow-lists existed: it grants nothing, so such a peer may subscribe to
/// nothing until the admin allows it something).
pub(in crate::store) fn decode_peer(bytes: &[u8]) -> Result<PeerRecord, StoreError> {
    match bytes.split_first() {
        Some((&PEER_RECORD_V2, body)) => {
            postcard::from_bytes(body).map_err(|e| StoreError(format!("corrupt peer record: {e}")))
        }
        Some((&crate::store::RECORD_VERSION, _)) => {
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
pub(super) struct SubscriptionRecord {
    pub(super) created_at: i64,
}

#[derive(Debug, Clone)]
pub struct Subscription {
    pub direction: Direction,
    pub peer: String,
    pub pattern: String,
    pub created_at: i64,
}

pub(super) fn sub_key(direction: Direction, peer: &str, pattern: &str) -> Vec<u8> {
    let mut key = vec![direction as u8];
    key.extend_from_slice(peer.as_bytes());
    key.push(0);
    key.extend_from_slice(pattern.as_bytes());
    key
}

/// The peers aggregate's in-memory state: the routing snapshot.
#[derive(Debug, Default)]
pub(in crate::store) struct PeersShared {
    /// Inbound subscriptions of active peers, as the journal writer routes.
    pub(in crate::store) routes: Reloadable<Vec<Route>>,
    /// Held while a routing snapshot is read and installed: without it, two
    /// concurrent refreshes could install the older snapshot last, and a
    /// peer's new subscription would silently route nothing.
    refresh: Mutex<()>,
}

/// The keys peers rotated away from, as the transaction of
/// [`Peers::upsert`] sees them.
pub struct RetiredKeys<'t> {
    table: redb::Table<'t, &'static [u8], &'static [u8]>,
}

impl RetiredKeys<'_> {
    /// The key `peer` rotated away from with id `key_id`, if it did.
    pub fn get(&self, peer: &str, key_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        super::rotation::retired_der(&self.table, peer, key_id)
    }
}

/// The view of the store for peers, their grants and subscriptions.
#[derive(Clone, Copy)]
pub struct Peers<'a> {
    store: &'a Store,
}

impl Store {
    /// Peers, their grants and subscriptions, and the routing snapshot.
    pub fn peers(&self) -> Peers<'_> {
        Peers { store: self }
    }
}

impl Peers<'_> {
    // ---- peers -------------------------------------------------------------

    /// Every peer, in instance-id order.
    pub fn list(&self) -> Result<Vec<PeerRecord>, StoreError> {
        let txn = self.store.db.begin_read()?;
        let table = txn.open_table(FED_PEERS)?;
        let mut out = Vec::new();
        for entry in table.range::<&str>(..)? {
            let (_, v) = entry?;
            out.push(decode_peer(v.value())?);
        }
        Ok(out)
    }

    pub fn get(&self, instance_id: &str) -> Result<Option<PeerRecord>, StoreError> {
        let txn = self.store.db.begin_read()?;
        let table = txn.open_table(FED_PEERS)?;
        table
            .get(instance_id)?
            .map(|v| decode_peer(v.value()))
            .transpose()
    }

    /// Reads `instance_id`'s record and writes the one `make` returns from
    /// it, in one transaction, so that a change made meanwhile (a key
    /// rotation the peer announced, a status) is never written over with
    /// what was read before; then refreshes the routing snapshot. `make`
    /// returning `None` writes nothing (and returns `None`).
    pub fn upsert(
        &self,
        instance_id: &str,
        make: impl FnOnce(
            Option<PeerRecord>,
            &RetiredKeys<'_>,
        ) -> Result<Option<PeerRecord>, StoreError>,
    ) -> Result<Option<PeerRecord>, StoreError> {
        let record = self.store.write_durable(|txn| {
            let mut table = txn.open_table(FED_PEERS)?;
            let existing = table
                .get(instance_id)?
                .map(|v| decode_peer(v.value()))
                .transpose()?;
            let retired = RetiredKeys {
                table: txn.open_table(FED_RETIRED_PEER_KEYS)?,
            };
            let Some(record) = make(existing, &retired)? else {
                return Ok(None);
            };
            assert_eq!(record.instance_id, instance_id, "a record under its own id");
            table.insert(instance_id, encode_peer(&record).as_slice())?;
            Ok(Some(record))
        })?;
        if record.is_some() {
            self.refresh_routes()?;
            self.store.fed.outbox_grew();
        }
        Ok(record)
    }

    /// Sets `peer`'s status (active, suspended, removed), keeping the rest
    /// of its record as it is when written. None for no such peer.
    pub fn set_status(
        &self,
        peer: &str,
        status: PeerStatus,
        now: i64,
    ) -> Result<Option<PeerRecord>, StoreError> {
        let record = self.change(peer, |record| {
            record.status = status;
            record.updated_at = now;
        })?;
        // A resumed peer's worker has rows to send again.
        self.store.fed.outbox_grew();
        Ok(record)
    }

    /// Inserts or replaces a peer, then refreshes the routing snapshot.
    /// Only for a record made whole here (tests, a restore): a change to a
    /// stored peer goes through [`Peers::upsert`] or a method that reads
    /// it in the same transaction.
    pub fn put(&self, peer: &PeerRecord) -> Result<(), StoreError> {
        self.store.write_durable(|txn| {
            txn.open_table(FED_PEERS)?
                .insert(peer.instance_id.as_str(), encode_peer(peer).as_slice())?;
            Ok(())
        })?;
        self.refresh_routes()?;
        self.store.fed.outbox_grew();
        Ok(())
    }

    /// Adds `patterns` to the grants the local admin gave `peer` (keeping
    /// those it has). Returns the updated record, or None for no such peer.
    pub fn allow(
        &self,
        peer: &str,
        patterns: &[String],
        now: i64,
    ) -> Result<Option<PeerRecord>, StoreError> {
        self.change(peer, |record| {
            for p in patterns {
                if !record.allow.contains(p) {
                    record.allow.push(p.clone());
                }
            }
            record.updated_at = now;
        })
    }

    /// Removes `patterns` from the grants the local admin gave `peer`.
    pub fn disallow(
        &self,
        peer: &str,
        patterns: &[String],
        now: i64,
    ) -> Result<Option<PeerRecord>, StoreError> {
        self.change(peer, |record| {
            record.allow.retain(|g| !patterns.contains(g));
            record.updated_at = now;
        })
    }

    /// Replaces the grants `[[peers]]` gives `peer` (at start and reload).
    pub fn set_config_allow(
        &self,
        peer: &str,
        patterns: &[String],
    ) -> Result<Option<PeerRecord>, StoreError> {
        self.change(peer, |record| record.config_allow = patterns.to_vec())
    }

    /// Reads, changes and writes one peer record in one transaction (so a
    /// concurrent change, e.g. a key rotation, is not lost), then refreshes
    /// the routing snapshot.
    fn change(
        &self,
        peer: &str,
        change: impl FnOnce(&mut PeerRecord),
    ) -> Result<Option<PeerRecord>, StoreError> {
        let record = self.store.write_durable(|txn| {
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
        self.refresh_routes()?;
        Ok(record)
    }

    // ---- subscriptions -----------------------------------------------------

    /// Every subscription, both directions.
    pub fn subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        let txn = self.store.db.begin_read()?;
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
    pub fn subscribe(
        &self,
        direction: Direction,
        peer: &str,
        pattern: &str,
    ) -> Result<bool, StoreError> {
        let added = self.store.write_durable(|txn| {
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
        self.refresh_routes()?;
        Ok(added)
    }

    /// Removes every subscription of `peer`, both directions, in one
    /// durable transaction. Returns how many there were.
    pub fn forget_subscriptions(&self, peer: &str) -> Result<usize, StoreError> {
        let doomed: Vec<Vec<u8>> = self
            .subscriptions()?
            .into_iter()
            .filter(|s| s.peer == peer)
            .map(|s| sub_key(s.direction, &s.peer, &s.pattern))
            .collect();
        if doomed.is_empty() {
            return Ok(0);
        }
        self.store.write_durable(|txn| {
            let mut table = txn.open_table(FED_SUBS)?;
            for key in &doomed {
                table.remove(key.as_slice())?;
            }
            Ok(())
        })?;
        self.refresh_routes()?;
        Ok(doomed.len())
    }

    /// Removes a subscription. Returns false if there was none.
    pub fn unsubscribe(
        &self,
        direction: Direction,
        peer: &str,
        pattern: &str,
    ) -> Result<bool, StoreError> {
        let removed = self.store.write_durable(|txn| {
            let mut table = txn.open_table(FED_SUBS)?;
            Ok(table
                .remove(sub_key(direction, peer, pattern).as_slice())?
                .is_some())
        })?;
        self.refresh_routes()?;
        Ok(removed)
    }

    /// Rebuilds the writer's routing snapshot: inbound subscriptions of
    /// active and suspended peers. A suspended peer's copies are queued as
    /// an active one's (its worker only holds them back), so that a resume
    /// delivers what was appended meanwhile: suspending must lose nothing.
    pub fn refresh_routes(&self) -> Result<(), StoreError> {
        let shared = &self.store.fed.peers;
        let _serialized = shared.refresh.lock().unwrap_or_else(|e| e.into_inner());
        let active: std::collections::HashMap<String, PeerRecord> = self
            .list()?
            .into_iter()
            .filter(|p| matches!(p.status, PeerStatus::Active | PeerStatus::Suspended))
            .map(|p| (p.instance_id.clone(), p))
            .collect();
        // A subscription routes only while the peer's grants cover it: a
        // revoked grant stops the flow without deleting the subscription.
        let routes = self
            .subscriptions()?
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
        shared.routes.replace(routes);
        Ok(())
    }

    /// Inbound routes (peer, pattern) in force.
    pub(crate) fn routes(&self) -> Arc<Vec<Route>> {
        self.store.fed.peers.routes.current()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_peer;
    use super::*;

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
        assert_eq!(v1[0], crate::store::RECORD_VERSION);
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
        let keyring = Arc::new(crate::keys::Keyring::from_secret(b"k".to_vec()));
        let fanout = crate::fanout::fanout();
        let (store, writer) = Store::open(&dir.path().join("store.redb"), keyring, fanout).unwrap();
        const PEERS: usize = 6;
        const PATTERNS: usize = 25;
        for i in 0..PEERS {
            store.peers().put(&test_peer(&format!("peer{i}"))).unwrap();
        }
        std::thread::scope(|scope| {
            for i in 0..PEERS {
                let store = &store;
                scope.spawn(move || {
                    for j in 0..PATTERNS {
                        store
                            .peers()
                            .subscribe(Direction::Inbound, &format!("peer{i}"), &format!("t{j}.>"))
                            .unwrap();
                    }
                });
            }
        });
        assert_eq!(store.peers().routes().len(), PEERS * PATTERNS);
        drop(store);
        writer.shutdown();
    }
}
