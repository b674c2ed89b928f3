//! The instance's witness key: the Ed25519 key that cosigns its peers'
//! heads logs (c2sp.org/tlog-cosignature, type 0x04). It is kept apart from
//! the log key: a witness that signs with its log key could be made to
//! vouch for its own history.
//!
//! `witness.key` in the data dir, mode 0600, generated on first start, in
//! the same text form as `log.key` (Go's note signer text; only the seed is
//! used). The cosigner is named the configured `origin_prefix`.

use std::path::Path;

use logbook_tlog::cosignature::Cosigner;

use crate::log_key::{LOG_KEY_FILE, LogKeyError, load_or_generate, read_skey};

/// The private witness key, under the data dir.
pub const WITNESS_KEY_FILE: &str = "witness.key";

/// The witness key as loaded.
#[derive(Debug)]
pub struct WitnessKey {
    pub cosigner: Cosigner,
    /// Whether this start generated the key.
    pub created: bool,
}

impl WitnessKey {
    /// Loads the witness key from `data_dir`, generating it on first start,
    /// and names it `origin_prefix`.
    pub fn load(data_dir: &Path, origin_prefix: &str) -> Result<WitnessKey, LogKeyError> {
        let (signer, created) = load_or_generate(data_dir, WITNESS_KEY_FILE, origin_prefix)?;
        let cosigner =
            Cosigner::from_note_signer(origin_prefix, &signer).map_err(LogKeyError::Name)?;
        // Both keys are random; equal ones mean a file was copied over the
        // other, and the witness would sign with its log key.
        let log = read_skey(&data_dir.join(LOG_KEY_FILE))?;
        if log.is_some_and(|log| log.verifier().key == cosigner.verifier().key) {
            return Err(LogKeyError::Bad {
                path: data_dir.join(WITNESS_KEY_FILE),
                what: "the witness key is the log key; it must be its own".into(),
            });
        }
        Ok(WitnessKey { cosigner, created })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generated_once_private_and_not_the_log_key() {
        let dir = tempfile::tempdir().unwrap();
        let log = crate::log_key::LogKeys::load(dir.path(), "logbook/a").unwrap();
        let first = WitnessKey::load(dir.path(), "logbook/a").unwrap();
        assert!(first.created);
        let mode = std::fs::metadata(dir.path().join(WITNESS_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = WitnessKey::load(dir.path(), "logbook/a").unwrap();
        assert!(!again.created);
        assert_eq!(again.cosigner.verifier(), first.cosigner.verifier());
        assert_ne!(first.cosigner.verifier().key, log.signer.verifier().key);
        assert!(
            first
                .cosigner
                .verifier()
                .to_vkey()
                .starts_with("logbook/a+")
        );
        // A copy of the log key is refused, and the message hides the key.
        std::fs::copy(
            dir.path().join(LOG_KEY_FILE),
            dir.path().join(WITNESS_KEY_FILE),
        )
        .unwrap();
        let err = WitnessKey::load(dir.path(), "logbook/a").unwrap_err();
        let skey = std::fs::read_to_string(dir.path().join(LOG_KEY_FILE)).unwrap();
        // PRIVATE+KEY+name+hash+data: the data is base64, which may itself
        // hold a '+', so it is everything after the fourth one.
        let data = skey.trim().splitn(5, '+').nth(4).unwrap();
        assert!(data.len() >= 40, "{data}");
        assert!(!err.to_string().contains(data), "{err}");
    }
}
