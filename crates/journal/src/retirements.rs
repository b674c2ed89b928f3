//! Validity windows of retired HMAC keys, from the system journal's records
//! of key rotations (`docs/journal-format.md` §4).
//!
//! The key a `system.key_rotated` event names as `old_key_id` verifies only
//! events dated up to that event's `created_at`. The record is appended
//! after the writer switched keys, so every event the old key signed is
//! dated no later (unless the clock stepped back past an earlier event's
//! time). Federation key rotations are recorded with the same type; their
//! 16-digit ids name no HMAC key and are skipped.
//!
//! A later retirement widens a window, so only a record that proves itself
//! may widen one: its payload what was signed, its signature valid at its
//! date under the windows as they stand, and its signer not the key it
//! retires, which a genuine record never is. Otherwise a retired key, once
//! leaked, could sign a later record of its own retirement (or move a
//! genuine record's text) and make the events forged with it verify. So
//! every key starts at its narrowest window, the earliest record naming
//! it, and is widened, until nothing changes, only by records that prove
//! themselves under the windows so far: whatever order storage holds them
//! in, a retired key can vouch only for dates within its own proven
//! window, so two leaked keys cannot widen each other.
//!
//! The daemon applies them at start, after every rotation, and (from the
//! records in the database and in the write-ahead segment) to the keyring
//! that checks the segment's events before they are put back.

use crate::Event;
use crate::chain::verifies_at_its_date;
use crate::keys::Keyring;
use crate::store::admin::SYSTEM_PLAN;

/// The system journal's record of a key rotation.
pub const KEY_ROTATED: &str = "system.key_rotated";

/// Whether `event` is a record of a key rotation (one of the system plan).
pub fn is_rotation_record(event: &Event) -> bool {
    event.plan_id == SYSTEM_PLAN && event.event_type == KEY_ROTATED
}

/// The key a rotation record retires, if `keyring` holds it (a federation
/// key's 16-digit id never names one).
pub fn retired_key(event: &Event, keyring: &Keyring) -> Option<String> {
    if !is_rotation_record(event) {
        return None;
    }
    let payload: serde_json::Value = serde_json::from_str(event.payload.get()).ok()?;
    let old = payload["old_key_id"].as_str()?;
    keyring.get(old).is_some().then(|| old.to_string())
}

/// Whether a record retiring `old` proves itself under the windows of
/// `keyring`: its payload is what was signed, and its signature verifies
/// at its date under a key other than the one it retires (a genuine
/// record is never signed by it). Only such a record may widen a window.
pub fn proves_itself(event: &Event, old: &str, keyring: &Keyring) -> bool {
    !keyring.same_key(&event.key_id, old) && verifies_at_its_date(event, keyring)
}

/// Applies the windows the rotation records among `records` give to the
/// keys of `keyring` they name (records of other kinds are ignored).
/// Returns how many retired keys got a window.
pub fn apply(records: &[Event], keyring: &mut Keyring) -> usize {
    let records: Vec<(String, &Event)> = records
        .iter()
        .filter_map(|event| Some((retired_key(event, keyring)?, event)))
        .collect();
    // Narrowest first: `retire` keeps the later of two dates.
    let mut by_date: Vec<&(String, &Event)> = records.iter().collect();
    by_date.sort_by_key(|(_, event)| event.created_at);
    for (old, event) in &by_date {
        if keyring.retired_at(old).is_none() {
            keyring.retire(old, event.created_at);
        }
    }
    let mut proven = vec![false; records.len()];
    loop {
        let mut widened = false;
        for (i, (old, event)) in records.iter().enumerate() {
            if proven[i] || !proves_itself(event, old, keyring) {
                continue;
            }
            proven[i] = true;
            if keyring
                .retired_at(old)
                .is_some_and(|t| t < event.created_at)
            {
                keyring.retire(old, event.created_at);
                widened = true;
            }
        }
        if !widened {
            break;
        }
    }
    for ((old, event), proven) in records.iter().zip(&proven) {
        if !proven {
            tracing::warn!(
                seq = event.seq,
                key_id = old,
                "a record of a key rotation in the system journal does not verify, so it cannot widen that key's window"
            );
        }
    }
    // Keys with a window (the signing key is never given one).
    let mut windowed: Vec<&str> = Vec::new();
    for (old, _) in &records {
        if keyring.retired_at(old).is_some() && !windowed.iter().any(|w| keyring.same_key(w, old)) {
            windowed.push(old);
        }
    }
    windowed.len()
}
