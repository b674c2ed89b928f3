//! Replaying the write-ahead segment into redb (see `wal.rs`): at open,
//! after the writer reopens a failed handle, and before an offline command
//! writes to the store.
//!
//! Every record either is in redb already (a checkpoint, or any durable
//! commit since, persisted it) and must match it, or extends redb by the
//! next position and is written through the append's own row writer. A gap
//! or a mismatch refuses: the store does not open rather than lose or fork
//! an acknowledged event.
//!
//! A record put back must also pass the one `ChainVerifier`, HMAC
//! included: its frame's checksum is keyless, so anyone who can write the
//! file could otherwise have a forged event taken in, then signed into the
//! plan's log by the log key and federated under the instance's key.
//! Without the keyring (an offline command) nothing is put back: records
//! redb lacks refuse the command instead.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::Path;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, WriteTransaction};

use super::admin::SYSTEM_PLAN;
use super::wal::{Segment, WalRecord};
use super::{
    EVENTS, FedShared, POSITIONS, StoreError, Tables, decode_event, event_from_record, event_key,
};
use crate::chain::ChainVerifier;
use crate::keys::Keyring;
use crate::retirements;

/// What a replay did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Replayed {
    /// Records already in redb, checked.
    pub(super) present: u64,
    /// Records redb had lost, written again.
    pub(super) restored: u64,
}

/// Puts `records` into `db` in one durable commit. Nothing is committed
/// unless every record checks. Without a `keyring` no record can be
/// verified, so one that redb lacks refuses the replay.
pub(super) fn replay(
    db: &Database,
    records: Vec<WalRecord>,
    fed: &FedShared,
    segment: &Path,
    quick_repair: bool,
    keyring: Option<&Keyring>,
) -> Result<Replayed, StoreError> {
    let mut done = Replayed::default();
    if records.is_empty() {
        return Ok(done);
    }
    let refuse = |what: String| {
        StoreError(format!(
            "the write-ahead segment {} {what}; the store does not open, so that no acknowledged event is lost or forked (see docs/operations.md, \"Crash recovery\")",
            segment.display()
        ))
    };
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    // Retired keys verify what they signed only within their windows, as
    // they do once the store is open: from the rotation records in the
    // database and those the segment adds.
    let retired = match keyring {
        Some(keyring) => Some(RetiredKeys::read(&txn, &records, keyring)?),
        None => None,
    };
    let keyring = retired.as_ref().map(|r| &r.keyring);
    // As every durable commit of the store: a commit without it would
    // drop redb's saved allocator state, and a crash soon after the replay
    // would pay the full repair at the next open.
    super::handle::commit_settings(&mut txn, quick_repair);
    {
        let mut last = txn
            .open_table(POSITIONS)?
            .last()?
            .map_or(0, |(k, _)| k.value());
        let mut tables = Tables::open(&txn, fed)?;
        // One verifier per plan, from the first event put back; that
        // event's link to the database's head is checked by `Tables::replay`.
        let mut chains: HashMap<uuid::Uuid, ChainVerifier> = HashMap::new();
        for record in records {
            if record.position <= last {
                check_present(&mut tables, &record).map_err(refuse)?;
                done.present += 1;
            } else if record.position == last + 1 {
                let Some(keyring) = keyring else {
                    return Err(StoreError(format!(
                        "the write-ahead segment {} holds events the database lacks (from position {}): the daemon stopped without a clean shutdown. Start it once, which checks and puts them back, then stop it and run this again",
                        segment.display(),
                        record.position
                    )));
                };
                let event = tables.replay(record).map_err(|e| refuse(e.to_string()))?;
                let chain = match chains.entry(event.plan_id) {
                    Entry::Occupied(chain) => chain.into_mut(),
                    Entry::Vacant(slot) => {
                        slot.insert(verifier_before(&mut tables, &event).map_err(refuse)?)
                    }
                };
                let signed_after_retirement = retired
                    .as_ref()
                    .and_then(|r| r.recorded_before(&event))
                    .map(|p| {
                        format!(
                            "signature: key {} was retired by the record at position {p}",
                            event.key_id
                        )
                    });
                let checked = match signed_after_retirement {
                    Some(reason) => Err(reason),
                    None => chain.check(&event, keyring).map_err(|r| r.to_string()),
                };
                checked.map_err(|reason| {
                    refuse(format!(
                        "holds event {} ({}/{}) at position {} that does not verify ({reason})",
                        event.id, event.plan_id, event.seq, event.position
                    ))
                })?;
                last += 1;
                done.restored += 1;
            } else {
                return Err(refuse(format!(
                    "starts at position {} but the database ends at {last}",
                    record.position
                )));
            }
        }
        tables.write_staged().map_err(|e| refuse(e.to_string()))?;
    }
    txn.commit()?;
    Ok(done)
}

/// What replay knows of retired keys, from the rotation records in the
/// database's system journal and those among the segment's records that
/// it lacks (checked like every record before they are put back).
struct RetiredKeys {
    /// The keyring with each retired key's validity window.
    keyring: Keyring,
    /// Each retired key, with the position of the first record of its
    /// retirement.
    recorded: Vec<(String, u64)>,
}

impl RetiredKeys {
    fn read(
        txn: &WriteTransaction,
        records: &[WalRecord],
        keyring: &Keyring,
    ) -> Result<RetiredKeys, StoreError> {
        let mut retired = RetiredKeys {
            keyring: keyring.clone(),
            recorded: Vec::new(),
        };
        if keyring.len() < 2 {
            return Ok(retired); // no key to retire but the signing one
        }
        let system = SYSTEM_PLAN;
        let mut rotations = Vec::new();
        let events = txn.open_table(EVENTS)?;
        for entry in
            events.range::<&[u8; 24]>(&event_key(&system, 1)..=&event_key(&system, u64::MAX))?
        {
            let (k, v) = entry?;
            let event = event_from_record(k.value(), decode_event(v.value())?)?;
            if retirements::is_rotation_record(&event) {
                rotations.push(event);
            }
        }
        for record in records.iter().filter(|r| r.plan_id == system.into_bytes()) {
            let key = event_key(&system, record.seq);
            // A record that does not decode refuses the replay where it is met.
            let Ok(event) = decode_event(&record.event).and_then(|r| event_from_record(&key, r))
            else {
                continue;
            };
            let stored = events.get(&key)?.is_some();
            if !stored && retirements::is_rotation_record(&event) {
                rotations.push(event);
            }
        }
        retirements::apply(&rotations, &mut retired.keyring);
        // A key can be retired twice (signing again in between): the last
        // record counts, but only one that proves itself, since a leaked
        // key could sign a later record of its own retirement after its
        // forgeries. Without one, the first record counts.
        let mut proven: Vec<(String, u64)> = Vec::new();
        for event in &rotations {
            let Some(old) = retirements::retired_key(event, keyring) else {
                continue;
            };
            if retirements::proves_itself(event, &old, &retired.keyring) {
                upsert(&mut proven, &old, event.position, u64::max);
            }
            upsert(&mut retired.recorded, &old, event.position, u64::min);
        }
        for (old, at) in proven {
            upsert(&mut retired.recorded, &old, at, |_, proven| proven);
        }
        Ok(retired)
    }

    /// The position of a record retiring the key `event` is signed with,
    /// if it comes before the event. The writer switches keys before it
    /// appends that record, so no event it wrote after the record is
    /// signed with the old key, unless that key is the signing key again.
    /// Replay knows each record's position, which a verify of one plan
    /// does not: this also refuses a forgery dated inside the window (in
    /// a plan with no newer event, or a new one).
    fn recorded_before(&self, event: &crate::Event) -> Option<u64> {
        if self
            .keyring
            .same_key(&event.key_id, self.keyring.current_id())
        {
            return None;
        }
        self.recorded
            .iter()
            .find(|(old, at)| *at < event.position && self.keyring.same_key(&event.key_id, old))
            .map(|(_, at)| *at)
    }
}

/// Sets `key`'s position in `list` to `at`, or to `pick(old, at)` if it
/// has one.
fn upsert(list: &mut Vec<(String, u64)>, key: &str, at: u64, pick: impl Fn(u64, u64) -> u64) {
    match list.iter_mut().find(|(id, _)| id == key) {
        Some((_, old)) => *old = pick(*old, at),
        None => list.push((key.to_string(), at)),
    }
}

/// The verifier for `event`'s plan up to its predecessor, which the
/// database holds: the predecessor's signature is the link, and its date
/// bounds the next event's, as in a walk from seq 1, so that a retired key
/// cannot vouch for an event backdated behind it.
fn verifier_before(tables: &mut Tables<'_>, event: &crate::Event) -> Result<ChainVerifier, String> {
    if event.seq == 1 {
        return Ok(ChainVerifier::default());
    }
    let key = event_key(&event.plan_id, event.seq - 1);
    let events = tables.events.table().map_err(|e| e.to_string())?;
    let before = events
        .get(&key)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "holds event {}/{} whose predecessor the database lacks",
                event.plan_id, event.seq
            )
        })?;
    let before = decode_event(before.value())
        .and_then(|r| event_from_record(&key, r))
        .map_err(|e| e.to_string())?;
    Ok(ChainVerifier::resume_after(&before))
}

/// A record at a position redb holds must be that very event.
fn check_present(tables: &mut Tables<'_>, record: &WalRecord) -> Result<(), String> {
    let plan = uuid::Uuid::from_bytes(record.plan_id);
    let key = event_key(&plan, record.seq);
    let at_position = tables
        .positions
        .table()
        .map_err(|e| e.to_string())?
        .get(record.position)
        .map_err(|e| e.to_string())?
        .map(|k| *k.value());
    let events = tables.events.table().map_err(|e| e.to_string())?;
    let stored = match events.get(&key).map_err(|e| e.to_string())? {
        Some(v) => Some(
            decode_event(v.value())
                .and_then(|r| event_from_record(&key, r))
                .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    let wanted = decode_event(&record.event)
        .and_then(|r| event_from_record(&key, r))
        .map_err(|e| e.to_string())?;
    match stored {
        Some(event)
            if at_position == Some(key)
                && event.id == wanted.id
                && event.signature == wanted.signature =>
        {
            Ok(())
        }
        _ => Err(format!(
            "holds event {} ({plan}/{}) at position {}, which the database holds otherwise",
            wanted.id, record.seq, record.position
        )),
    }
}

/// Opens the segment of the database at `db_path`, replays it into `db`
/// and empties it (always: a new epoch). For the offline commands that write to the store (the
/// writer keeps its segment open instead; see `Store::open_with`).
pub(super) fn replay_and_empty(
    db: &Database,
    db_path: &Path,
    quick_repair: bool,
    keyring: Option<&Keyring>,
) -> Result<(Segment, Replayed), StoreError> {
    // The last position redb holds durably: the segment's epoch began
    // after a checkpoint of at least that, so its first frame is at most
    // one past it (only a deletion removes positions, and its tombstone
    // comes after them).
    let durable = durable_position(db)?;
    let (mut segment, records) = Segment::open(&super::wal::segment_path(db_path), Some(durable))?;
    let done = replay(
        db,
        records,
        &FedShared::default(),
        segment.path(),
        quick_repair,
        keyring,
    )?;
    // A new epoch even when no frame checked: a cut that tore the first
    // page of a batch leaves later frames of this epoch that do check, and
    // this run's frames, written from the same offset, could end exactly
    // where one of them begins; a replay after the next cut would read on
    // into it (`wal_torn.rs`).
    segment.reset()?;
    Ok((segment, done))
}

/// Refuses a segment that holds events when the database at `db_path`
/// does not exist: it belongs to a journal that was moved or deleted (say
/// after a crash, to "start fresh"), and replaying it would begin a new
/// journal with part of the old one's history. Reads only; creates nothing.
pub(super) fn refuse_orphan_segment(db_path: &Path) -> Result<(), StoreError> {
    let path = super::wal::segment_path(db_path);
    if db_path.exists() || !path.exists() {
        return Ok(());
    }
    let (_, records) = Segment::open(&path, None)?;
    if records.is_empty() {
        return Ok(());
    }
    Err(StoreError(format!(
        "{} holds {} acknowledged events but {} does not exist: the segment belongs to a journal that was moved or deleted. Put that journal back, or move the segment aside to start a new one",
        path.display(),
        records.len(),
        db_path.display()
    )))
}

/// The last position `db`, just opened, holds: its last durable commit's.
pub(super) fn durable_position(db: &Database) -> Result<u64, StoreError> {
    Ok(db
        .begin_read()?
        .open_table(POSITIONS)?
        .last()?
        .map_or(0, |(k, _)| k.value()))
}
