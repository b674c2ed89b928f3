//! `keys rotate-hmac`: a new signing key for new events, while every older
//! key stays available to verify the events it signed.
//!
//! Only a key the daemon generated (`<data_dir>/hmac.key`) can be rotated
//! here. The old secret is first copied into `<data_dir>/hmac-retired/`, then
//! the new one atomically replaces `hmac.key`, so a crash at any point leaves
//! every key needed for verification on disk.

use std::io;
use std::path::Path;

use logbook_base::private_file::write_private_file;
use logbook_journal::keys::{
    GENERATED_KEY_FILE, Keyring, RETIRED_KEYS_DIR, SECRET_ENV_VARS, key_id,
};
use logbook_journal::retirements;
use logbook_journal::store::admin::SYSTEM_PLAN;
use logbook_journal::store::{READ_PAGE, Store, StoreError};

/// Applies the validity windows that the system journal records to the
/// keyring ([`logbook_journal::retirements`]). Returns how many retired
/// keys got a window.
pub(crate) fn apply_retirements(store: &Store, keyring: &mut Keyring) -> Result<usize, StoreError> {
    let mut records = Vec::new();
    let mut after = 0;
    loop {
        let page = store.plan_events_after(&SYSTEM_PLAN, after, READ_PAGE)?;
        let Some(last) = page.last() else {
            break;
        };
        after = last.seq;
        records.extend(page.into_iter().filter(retirements::is_rotation_record));
    }
    Ok(retirements::apply(&records, keyring))
}

/// Old and new key ids after a rotation.
#[derive(Debug, Clone)]
pub(crate) struct Rotated {
    pub(crate) old_key_id: String,
    pub(crate) new_key_id: String,
    pub(crate) keyring: Keyring,
}

/// Why the key could not be rotated here.
pub(crate) fn env_secret_in_use(env: impl Fn(&str) -> Option<String>) -> Option<&'static str> {
    SECRET_ENV_VARS
        .iter()
        .copied()
        .find(|name| env(name).is_some_and(|v| !v.is_empty()))
}

/// Rotates the generated key in `data_dir`. `current_id` is the key id the
/// daemon signs with now; it must be the one in `hmac.key`.
pub(crate) fn rotate_generated_key(data_dir: &Path, current_id: &str) -> io::Result<Rotated> {
    let key_path = data_dir.join(GENERATED_KEY_FILE);
    let old = std::fs::read_to_string(&key_path)?;
    let old = old.trim_end_matches(['\n', '\r']);
    let old_key_id = key_id(old.as_bytes());
    if old_key_id != current_id {
        return Err(io::Error::other(format!(
            "{} holds key {old_key_id}, but the daemon signs with {current_id}",
            key_path.display()
        )));
    }
    let retired = data_dir.join(RETIRED_KEYS_DIR);
    logbook_base::private_file::ensure_private_dir(&retired)?;
    let retired_path = retired.join(format!("{old_key_id}.key"));
    match write_private_file(&retired_path, old.as_bytes()) {
        Ok(()) => {}
        // A rotation that crashed after this step already kept it.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let kept = std::fs::read_to_string(&retired_path)?;
            if kept.trim_end_matches(['\n', '\r']) != old {
                return Err(io::Error::other(format!(
                    "{} exists with another secret",
                    retired_path.display()
                )));
            }
        }
        Err(e) => return Err(e),
    }

    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| io::Error::other(e.to_string()))?;
    let secret = logbook_base::hex::encode(&bytes);
    let staged = data_dir.join(format!("{GENERATED_KEY_FILE}.new"));
    let _ = std::fs::remove_file(&staged);
    write_private_file(&staged, secret.as_bytes())?;
    std::fs::rename(&staged, &key_path)?;
    std::fs::File::open(data_dir)?.sync_all()?;

    // Load exactly what a restart would load, so both agree.
    let (keyring, _) = Keyring::load(data_dir, |_| None)?;
    Ok(Rotated {
        old_key_id,
        new_key_id: keyring.current_id().to_string(),
        keyring,
    })
}

/// Logs an ERROR naming the key ids the journal's events carry (the first
/// and last event of every plan, see `Store::key_ids_in_use`) that the
/// keyring lacks: events signed with them cannot be verified.
pub(crate) async fn report_missing_keys(store: logbook_journal::store::AsyncStore) {
    let keyring = store.keyring();
    match store.run(|s| s.key_ids_in_use()).await {
        Ok(ids) => {
            let missing: Vec<String> = ids
                .into_iter()
                .filter(|id| keyring.get(id).is_none())
                .collect();
            if !missing.is_empty() {
                tracing::error!(
                    missing_key_ids = missing.join(","),
                    "the journal holds events signed with HMAC keys this instance lacks ({}); verify reports them as missing-key. Restore hmac.key and hmac-retired/ from the backup, or set the secret in $LOGBOOK_HMAC_SECRET",
                    missing.join(", ")
                );
            }
        }
        Err(e) => tracing::warn!("reading the key ids in use: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_the_old_key_for_verification() {
        let dir = tempfile::tempdir().unwrap();
        let (before, _) = Keyring::load(dir.path(), |_| None).unwrap();
        let rotated = rotate_generated_key(dir.path(), before.current_id()).unwrap();
        assert_eq!(rotated.old_key_id, before.current_id());
        assert_ne!(rotated.new_key_id, rotated.old_key_id);
        assert_eq!(
            rotated.keyring.get(before.current_id()),
            before.get(before.current_id())
        );
        let (after_restart, _) = Keyring::load(dir.path(), |_| None).unwrap();
        assert_eq!(after_restart.current_id(), rotated.new_key_id);
        assert!(after_restart.get(&rotated.old_key_id).is_some());
        // A second rotation keeps both older keys.
        let again = rotate_generated_key(dir.path(), &rotated.new_key_id).unwrap();
        assert_eq!(again.keyring.len(), 3);
        assert!(
            rotate_generated_key(dir.path(), "00000000").is_err(),
            "a stale id is refused"
        );
    }

    #[test]
    fn an_environment_secret_cannot_be_rotated_here() {
        assert_eq!(env_secret_in_use(|_| None), None);
        assert_eq!(
            env_secret_in_use(|n| (n == "SESSION_SECRET").then(|| "x".to_string())),
            Some("SESSION_SECRET")
        );
    }
}
