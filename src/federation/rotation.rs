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

use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};

use super::identity::{
    self, KEY_FILE, NEW_KEY_FILE, OwnKey, RETIRED_KEYS_DIR, generate_private_key, key_id,
    private_key_from_pem, private_key_pem,
};
use super::message::KEY_ROTATED_TYPE;
use super::{FedError, Federation};
use logbook_base::canonical::canonical_json;
use logbook_base::private_file::{ensure_private_dir, write_private_file};
use logbook_journal::store::Store;

/// What a rotation did.
#[derive(Debug, Clone)]
pub struct Rotated {
    pub old_key_id: String,
    pub new_key_id: String,
    pub fingerprint: String,
    /// Peers an announcement was queued for.
    pub peers_notified: usize,
}

/// Rotates this instance's key. Generating the key takes a few seconds.
/// Callers serialize rotations (the admin socket holds its change lock).
pub async fn rotate(fed: &Arc<Federation>) -> Result<Rotated, String> {
    let fed2 = fed.clone();
    fed.store
        .run(move |store| -> Result<_, FedError> { Ok(rotate_blocking(&fed2, store)?) })
        .await
        .map_err(String::from)
}

fn rotate_blocking(fed: &Federation, store: &Store) -> Result<Rotated, String> {
    let dir = &fed.data_dir;
    let old = fed.identity.current();
    let new = Arc::new(OwnKey::new(generate_private_key()?)?);

    // 1. The old key stays on disk and in memory: peers that have not
    //    received the announcement yet still verify us with it.
    let retired_dir = dir.join(RETIRED_KEYS_DIR);
    ensure_private_dir(&retired_dir)
        .map_err(|e| format!("creating {}: {e}", retired_dir.display()))?;
    keep_retired(&retired_dir, &old)?;
    fed.identity.add_retired(old.clone());

    // 2. Stage the new key, so a crash after the commit can finish the job.
    let staged = dir.join(NEW_KEY_FILE);
    let _ = std::fs::remove_file(&staged);
    write_private_file(&staged, private_key_pem(&new.private_key)?.as_bytes())
        .map_err(|e| format!("writing {}: {e}", staged.display()))?;

    // 3. Commit: queue the announcements (signed at send time with the old
    //    key) and record the rotation, in one durable transaction.
    let payload = canonical_json(&announcement(&new));
    let queued = store
        .rotations()
        .announce(KEY_ROTATED_TYPE, &payload, &old.key_id, &new.key_id)
        .map_err(|e| {
            let _ = std::fs::remove_file(&staged);
            format!("queueing the key announcements: {e}")
        })?;

    // 4. Sign with the new key from now on (for peers that know it), and
    //    make it the key a restart loads.
    fed.identity.install(new.clone());
    install_staged(dir)?;
    Ok(Rotated {
        old_key_id: old.key_id.clone(),
        new_key_id: new.key_id.clone(),
        fingerprint: new.fingerprint.clone(),
        peers_notified: queued.len(),
    })
}

/// The announcement's payload.
pub fn announcement(key: &OwnKey) -> Value {
    json!({"publicKey": key.public_key_pem, "keyId": key.key_id})
}

/// Reads an announcement's payload: the new key's SPKI DER and key id.
pub fn parse_announcement(payload: &Value) -> Result<(Vec<u8>, String), String> {
    let expected = "expected {\"publicKey\": SPKI PEM, \"keyId\": key id}";
    let object = payload
        .as_object()
        .filter(|o| o.len() == 2)
        .ok_or_else(|| expected.to_string())?;
    let (Some(pem), Some(claimed)) = (
        object.get("publicKey").and_then(Value::as_str),
        object.get("keyId").and_then(Value::as_str),
    ) else {
        return Err(expected.to_string());
    };
    let der = identity::spki_der(&identity::public_key_from_pem(pem)?)?;
    let actual = key_id(&der);
    if actual != claimed {
        return Err(format!(
            "keyId {claimed:?} does not name the announced key ({actual})"
        ));
    }
    Ok((der, actual))
}

/// Writes `key` to `dir/<key_id>.key` unless an identical file is there.
fn keep_retired(dir: &Path, key: &OwnKey) -> Result<(), String> {
    let path = dir.join(format!("{}.key", key.key_id));
    let pem = private_key_pem(&key.private_key)?;
    match write_private_file(&path, pem.as_bytes()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let kept = std::fs::read_to_string(&path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            let same = private_key_from_pem(&kept)
                .ok()
                .and_then(|k| OwnKey::new(k).ok())
                .is_some_and(|k| k.key_id == key.key_id);
            if same {
                Ok(())
            } else {
                Err(format!("{} exists with another key", path.display()))
            }
        }
        Err(e) => Err(format!("writing {}: {e}", path.display())),
    }
}

/// Moves the staged key over `federation.key`, durably.
fn install_staged(dir: &Path) -> Result<(), String> {
    let staged = dir.join(NEW_KEY_FILE);
    std::fs::rename(&staged, dir.join(KEY_FILE))
        .and_then(|()| std::fs::File::open(dir)?.sync_all())
        .map_err(|e| format!("installing {}: {e}", staged.display()))
}

/// At start, before the identity loads: a staged key whose rotation was
/// committed becomes the key; one whose rotation was not is discarded (no
/// peer was told about it).
pub fn recover(dir: &Path, store: &Store) -> Result<(), String> {
    let staged = dir.join(NEW_KEY_FILE);
    let pem = match std::fs::read_to_string(&staged) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("reading {}: {e}", staged.display())),
    };
    let staged_id = private_key_from_pem(&pem)
        .ok()
        .and_then(|k| OwnKey::new(k).ok())
        .map(|k| k.key_id);
    let committed = match &staged_id {
        Some(id) => store.rotations().committed(id).map_err(|e| e.to_string())?,
        None => false,
    };
    if committed {
        // The old key was retired before the commit; only the rename is left.
        install_staged(dir)?;
        tracing::warn!(key_id = ?staged_id, "finished a federation key rotation interrupted by a restart");
    } else {
        std::fs::remove_file(&staged).map_err(|e| format!("removing {}: {e}", staged.display()))?;
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
