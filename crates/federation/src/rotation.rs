//! RSA key rotation: replacing this instance's federation key
//! (`logbook admin keys rotate-rsa`) and announcing it to every peer in a
//! `federation.key_rotated` message signed with the old key, plus reading
//! such an announcement from a peer.
//!
//! A rotation stages the new key in `federation.key.new`, keeps the old one
//! in `federation-retired/`, and then commits by queueing the announcements
//! and recording the rotation in one store transaction. Only then does the
//! new key replace `federation.key`. [`recover`] finishes or discards a
//! rotation that a crash interrupted, so the key on disk always matches
//! what the peers were (or will be) told.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use logbook_base::canonical::canonical_json;
use logbook_base::private_file::{ensure_private_dir, write_private_file};
use logbook_journal::store::{Store, StoreError};
use serde_json::{Value, json};

use crate::identity::{
    self, KEY_FILE, KeyError, NEW_KEY_FILE, OwnKey, RETIRED_KEYS_DIR, generate_private_key, key_id,
    private_key_from_pem, private_key_pem,
};
use crate::instance::Instance;
use crate::message::KEY_ROTATED_TYPE;

/// What a rotation did.
#[derive(Debug, Clone)]
pub struct Rotated {
    pub old_key_id: String,
    pub new_key_id: String,
    pub fingerprint: String,
    /// Peers an announcement was queued for.
    pub peers_notified: usize,
}

/// Why a rotation (or the recovery of one) failed.
#[derive(Debug)]
pub enum RotationError {
    /// A key file or the key itself.
    Key(KeyError),
    /// Queueing the announcements (the rotation did not happen).
    Queue(StoreError),
    Storage(StoreError),
    /// A retired key file of that name holds another key.
    RetiredExists(PathBuf),
}

impl fmt::Display for RotationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RotationError::Key(e) => e.fmt(f),
            RotationError::Queue(e) => write!(f, "queueing the key announcements: {e}"),
            RotationError::Storage(e) => e.fmt(f),
            RotationError::RetiredExists(path) => {
                write!(f, "{} exists with another key", path.display())
            }
        }
    }
}

impl std::error::Error for RotationError {}

impl From<KeyError> for RotationError {
    fn from(e: KeyError) -> RotationError {
        RotationError::Key(e)
    }
}

impl From<StoreError> for RotationError {
    fn from(e: StoreError) -> RotationError {
        RotationError::Storage(e)
    }
}

/// A peer's `federation.key_rotated` payload that cannot be taken.
#[derive(Debug)]
pub enum AnnouncementError {
    /// Not exactly `{"publicKey", "keyId"}` strings.
    Shape,
    Key(KeyError),
    /// `keyId` does not name the announced key.
    KeyIdMismatch {
        claimed: String,
        actual: String,
    },
}

impl fmt::Display for AnnouncementError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnnouncementError::Shape => {
                f.write_str("expected {\"publicKey\": SPKI PEM, \"keyId\": key id}")
            }
            AnnouncementError::Key(e) => e.fmt(f),
            AnnouncementError::KeyIdMismatch { claimed, actual } => write!(
                f,
                "keyId {claimed:?} does not name the announced key ({actual})"
            ),
        }
    }
}

impl std::error::Error for AnnouncementError {}

/// Rotates this instance's key (files in `dir`, the data dir). Generating
/// the key takes a few seconds. Callers serialize rotations (the admin
/// socket holds its change lock).
pub fn rotate(instance: &Instance, dir: &Path, store: &Store) -> Result<Rotated, RotationError> {
    let old = instance.identity.current();
    let new = OwnKey::new(generate_private_key()?)?;

    // 1. The old key stays on disk and in memory: peers that have not
    //    received the announcement yet still verify us with it.
    let retired_dir = dir.join(RETIRED_KEYS_DIR);
    ensure_private_dir(&retired_dir).map_err(|e| KeyError::io("creating", &retired_dir, e))?;
    keep_retired(&retired_dir, &old)?;
    instance.identity.add_retired(old.clone());

    // 2. Stage the new key, so a crash after the commit can finish the job.
    let staged = dir.join(NEW_KEY_FILE);
    let _ = std::fs::remove_file(&staged);
    write_private_file(&staged, private_key_pem(&new.private_key)?.as_bytes())
        .map_err(|e| KeyError::io("writing", &staged, e))?;

    // 3. Commit: queue the announcements (signed at send time with the old
    //    key) and record the rotation, in one durable transaction.
    let payload = canonical_json(&announcement(&new));
    let queued = store
        .rotations()
        .announce(KEY_ROTATED_TYPE, &payload, &old.key_id, &new.key_id)
        .map_err(|e| {
            let _ = std::fs::remove_file(&staged);
            RotationError::Queue(e)
        })?;

    // 4. Sign with the new key from now on (for peers that know it), and
    //    make it the key a restart loads.
    let rotated = Rotated {
        old_key_id: old.key_id.clone(),
        new_key_id: new.key_id.clone(),
        fingerprint: new.fingerprint.clone(),
        peers_notified: queued.len(),
    };
    instance.identity.install(new);
    install_staged(dir)?;
    Ok(rotated)
}

/// The announcement's payload.
pub fn announcement(key: &OwnKey) -> Value {
    json!({"publicKey": key.public_key_pem, "keyId": key.key_id})
}

/// Reads an announcement's payload: the new key's SPKI DER and key id.
pub fn parse_announcement(payload: &Value) -> Result<(Vec<u8>, String), AnnouncementError> {
    let object = payload
        .as_object()
        .filter(|o| o.len() == 2)
        .ok_or(AnnouncementError::Shape)?;
    let (Some(pem), Some(claimed)) = (
        object.get("publicKey").and_then(Value::as_str),
        object.get("keyId").and_then(Value::as_str),
    ) else {
        return Err(AnnouncementError::Shape);
    };
    let der = identity::pem_der(pem).map_err(AnnouncementError::Key)?;
    let actual = key_id(&der);
    if actual != claimed {
        return Err(AnnouncementError::KeyIdMismatch {
            claimed: claimed.to_string(),
            actual,
        });
    }
    Ok((der, actual))
}

/// Writes `key` to `dir/<key_id>.key` unless an identical file is there.
fn keep_retired(dir: &Path, key: &Arc<OwnKey>) -> Result<(), RotationError> {
    let path = dir.join(format!("{}.key", key.key_id));
    let pem = private_key_pem(&key.private_key)?;
    match write_private_file(&path, pem.as_bytes()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let kept =
                std::fs::read_to_string(&path).map_err(|e| KeyError::io("reading", &path, e))?;
            let same = private_key_from_pem(&kept)
                .ok()
                .and_then(|k| OwnKey::new(k).ok())
                .is_some_and(|k| k.key_id == key.key_id);
            if same {
                Ok(())
            } else {
                Err(RotationError::RetiredExists(path))
            }
        }
        Err(e) => Err(KeyError::io("writing", &path, e).into()),
    }
}

/// Moves the staged key over `federation.key`, durably.
fn install_staged(dir: &Path) -> Result<(), KeyError> {
    let staged = dir.join(NEW_KEY_FILE);
    std::fs::rename(&staged, dir.join(KEY_FILE))
        .and_then(|()| std::fs::File::open(dir)?.sync_all())
        .map_err(|e| KeyError::io("installing", &staged, e))
}

/// At start, before the identity loads: a staged key whose rotation was
/// committed becomes the key; one whose rotation was not is discarded (no
/// peer was told about it).
pub fn recover(dir: &Path, store: &Store) -> Result<(), RotationError> {
    let staged = dir.join(NEW_KEY_FILE);
    let pem = match std::fs::read_to_string(&staged) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(KeyError::io("reading", &staged, e).into()),
    };
    let staged_id = private_key_from_pem(&pem)
        .ok()
        .and_then(|k| OwnKey::new(k).ok())
        .map(|k| k.key_id);
    let committed = match &staged_id {
        Some(id) => store.rotations().committed(id)?,
        None => false,
    };
    if committed {
        // The old key was retired before the commit; only the rename is left.
        install_staged(dir)?;
        tracing::warn!(key_id = ?staged_id, "finished a federation key rotation interrupted by a restart");
    } else {
        std::fs::remove_file(&staged).map_err(|e| KeyError::io("removing", &staged, e))?;
        tracing::warn!(
            "discarded the staged key of a federation key rotation that never committed; no peer was told about it"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_name_their_key() {
        let key = OwnKey::new(generate_private_key().unwrap()).unwrap();
        let (der, id) = parse_announcement(&announcement(&key)).unwrap();
        assert_eq!((der, id), (key.public_key_der.clone(), key.key_id.clone()));
        let mut wrong = announcement(&key);
        wrong["keyId"] = json!("0000000000000000");
        assert!(parse_announcement(&wrong).is_err());
        let mut extra = announcement(&key);
        extra["more"] = json!(1);
        assert!(parse_announcement(&extra).is_err());
        assert!(parse_announcement(&json!({"publicKey": "x", "keyId": "y"})).is_err());
    }
}
