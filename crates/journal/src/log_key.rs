//! The instance's Ed25519 log key, which signs every plan's checkpoints
//! (see [`crate::checkpoint`]), and the public record of when each log key
//! was in use.
//!
//! Files in the data dir, both mode 0600:
//! - `log.key`: the private key as one line in the text form of Go's
//!   `golang.org/x/mod/sumdb/note` (`PRIVATE+KEY+<name>+<id>+<base64(0x01 ‖
//!   seed)>`), so that Go tools can read it. Generated on first start. The
//!   name in it is the `origin_prefix` at generation; the daemon signs under
//!   the configured one (only the seed matters).
//! - `log-keys.json`: `{"current": {"public_key", "from"}, "retired":
//!   [{"vkey", "from", "until"}]}`, the history `GET /api/v1/log/keys`
//!   serves. Rewritten whole (temporary file, then rename).

use std::io;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use logbook_base::private_file::write_private_file;
use logbook_tlog::note::{NoteError, Signer25519};
use serde::{Deserialize, Serialize};

use crate::event::Timestamp;

/// The private log key, under the data dir.
pub const LOG_KEY_FILE: &str = "log.key";
/// When each log key was in use, under the data dir.
pub const LOG_KEYS_FILE: &str = "log-keys.json";

/// A log key that no longer signs, with the time it was in use. Its vkey
/// still verifies the checkpoints it signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredLogKey {
    pub vkey: String,
    pub from: Timestamp,
    pub until: Timestamp,
}

/// The record in `log-keys.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct History {
    current: CurrentRecord,
    retired: Vec<RetiredLogKey>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CurrentRecord {
    /// base64 of the 32-byte Ed25519 public key: the name may change with
    /// the configured `origin_prefix`, the key does not.
    public_key: String,
    from: Timestamp,
}

/// The log key as loaded: the signer (named `origin_prefix`), since when it
/// signs, and the keys it replaced.
pub struct LogKeys {
    pub signer: Signer25519,
    pub from: Timestamp,
    pub retired: Vec<RetiredLogKey>,
    /// Whether this start generated the key.
    pub created: bool,
}

impl std::fmt::Debug for LogKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogKeys")
            .field("signer", &self.signer)
            .field("from", &self.from)
            .field("retired", &self.retired)
            .finish_non_exhaustive()
    }
}

/// Why the log key could not be loaded or created.
#[derive(Debug)]
pub enum LogKeyError {
    Io { path: PathBuf, error: io::Error },
    /// A file is not what it should be (the detail says how).
    Bad { path: PathBuf, what: String },
    /// `origin_prefix` is not a valid key name.
    Name(NoteError),
}

impl std::fmt::Display for LogKeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogKeyError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            LogKeyError::Bad { path, what } => write!(f, "{}: {what}", path.display()),
            LogKeyError::Name(e) => write!(f, "checkpoints.origin_prefix: {e}"),
        }
    }
}

impl std::error::Error for LogKeyError {}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> LogKeyError + '_ {
    move |error| LogKeyError::Io {
        path: path.to_path_buf(),
        error,
    }
}

impl LogKeys {
    /// Loads the log key from `data_dir`, generating it on first start, and
    /// names it `origin_prefix`.
    pub fn load(data_dir: &Path, origin_prefix: &str) -> Result<LogKeys, LogKeyError> {
        let path = data_dir.join(LOG_KEY_FILE);
        let (signer, created) = match std::fs::read_to_string(&path) {
            Ok(text) => {
                let signer = Signer25519::parse_skey(text.trim_end_matches(['\n', '\r']))
                    .map_err(|e| LogKeyError::Bad {
                        path: path.clone(),
                        // The text is the secret: only the reason is shown.
                        what: e.to_string(),
                    })?;
                (signer, false)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut seed = [0u8; 32];
                getrandom::fill(&mut seed)
                    .map_err(|e| io_error(&path)(io::Error::other(e.to_string())))?;
                let signer = Signer25519::new(origin_prefix, &seed).map_err(LogKeyError::Name)?;
                write_private_file(&path, format!("{}\n", signer.to_skey()).as_bytes())
                    .map_err(io_error(&path))?;
                (signer, true)
            }
            Err(e) => return Err(io_error(&path)(e)),
        };
        let signer = signer.renamed(origin_prefix).map_err(LogKeyError::Name)?;
        let public_key = BASE64.encode(signer.verifier().key.as_bytes());
        let history_path = data_dir.join(LOG_KEYS_FILE);
        let history = read_history(&history_path)?;
        let history = match history {
            Some(h) if h.current.public_key == public_key => h,
            // First start, or a key file put back by hand: it signs from now.
            other => {
                let history = History {
                    current: CurrentRecord {
                        public_key,
                        from: Timestamp::now(),
                    },
                    retired: other.map(|h| h.retired).unwrap_or_default(),
                };
                write_history(&history_path, &history)?;
                history
            }
        };
        Ok(LogKeys {
            signer,
            from: history.current.from,
            retired: history.retired,
            created,
        })
    }
}

fn read_history(path: &Path) -> Result<Option<History>, LogKeyError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| LogKeyError::Bad {
                path: path.to_path_buf(),
                what: e.to_string(),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path)(e)),
    }
}

/// Replaces the history file: a crash leaves the old or the new one whole.
fn write_history(path: &Path, history: &History) -> Result<(), LogKeyError> {
    let tmp = path.with_extension("json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let bytes = serde_json::to_vec_pretty(history).map_err(|e| LogKeyError::Bad {
        path: path.to_path_buf(),
        what: e.to_string(),
    })?;
    write_private_file(&tmp, &bytes).map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_error(path))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error(dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generated_once_private_and_renamed_to_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let first = LogKeys::load(dir.path(), "logbook/a").unwrap();
        assert!(first.created);
        for file in [LOG_KEY_FILE, LOG_KEYS_FILE] {
            let mode = std::fs::metadata(dir.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        let text = std::fs::read_to_string(dir.path().join(LOG_KEY_FILE)).unwrap();
        assert!(text.starts_with("PRIVATE+KEY+logbook/a+"), "Go's form");
        assert!(!format!("{first:?}").contains(text.trim().rsplit('+').next().unwrap()));

        let again = LogKeys::load(dir.path(), "logbook/b").unwrap();
        assert!(!again.created);
        assert_eq!(again.from, first.from, "the history keeps the start");
        assert_eq!(again.signer.verifier().key, first.signer.verifier().key);
        assert_eq!(again.signer.verifier().name, "logbook/b");
    }

    #[test]
    fn a_bad_key_file_or_prefix_is_an_error_that_hides_the_key() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            LogKeys::load(dir.path(), "has space"),
            Err(LogKeyError::Name(_))
        ));
        std::fs::write(dir.path().join(LOG_KEY_FILE), "PRIVATE+KEY+x+00000000+secretbits\n")
            .unwrap();
        let err = LogKeys::load(dir.path(), "logbook/a").unwrap_err().to_string();
        assert!(!err.contains("secretbits"), "{err}");
    }
}
