//! The instance's Ed25519 log key, which signs every plan's checkpoints
//! (see [`crate::checkpoint`]), and the public record of when each log key
//! was in use.
//!
//! Files in the data dir, both mode 0600:
//! - `log.key`: the private key as one line in the text form of Go's
//!   `golang.org/x/mod/sumdb/note` (`PRIVATE+KEY+<name>+<id>+<base64(0x01 ‖
//!   seed)>`), so that Go tools can read it. Generated on first start. The
//!   name in it is the one the key last signed under: the `origin_prefix`
//!   at generation, rewritten by a start that finds another one configured
//!   (the key under its old name is then listed as retired).
//! - `log-keys.json`: `{"current": {"public_key", "from"}, "retired":
//!   [{"vkey", "from", "until"}]}`, the history `GET /api/v1/log/keys`
//!   serves. Rewritten whole (temporary file, then rename).
//!
//! A rotation ([`LogKeys::rotate`]) writes the new key to `log.key.new`,
//! then the history naming it, then renames it over `log.key`. A start
//! after a crash finishes it (the history names the new key) or drops the
//! staged key (it does not). Retired private keys are not kept: old
//! checkpoints need only the retired vkeys, which the history lists.

use std::io;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use logbook_base::private_file::write_private_file;
use logbook_tlog::note::{ALG_ED25519, NoteError, Signer25519, Verifier, key_id};
use serde::{Deserialize, Serialize};

use crate::event::Timestamp;

/// The private log key, under the data dir.
pub const LOG_KEY_FILE: &str = "log.key";
/// When each log key was in use, under the data dir.
pub const LOG_KEYS_FILE: &str = "log-keys.json";
/// A rotation's new key before it replaces `log.key` (see [`LogKeys::rotate`]).
pub const NEW_LOG_KEY_FILE: &str = "log.key.new";

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
    Io {
        path: PathBuf,
        error: io::Error,
    },
    /// A file is not what it should be (the detail says how).
    Bad {
        path: PathBuf,
        what: String,
    },
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
        let history_path = data_dir.join(LOG_KEYS_FILE);
        finish_rotation(data_dir, &read_history(&history_path)?)?;
        let (signer, created) = load_or_generate(data_dir, LOG_KEY_FILE, origin_prefix)?;
        // The name the key last signed under: `log.key` is rewritten when
        // the prefix changes (below).
        let signed_as = signer.verifier().name.clone();
        let signer = signer.renamed(origin_prefix).map_err(LogKeyError::Name)?;
        let public_key = BASE64.encode(signer.verifier().key.as_bytes());
        let history = match read_history(&history_path)? {
            Some(h) if h.current.public_key == public_key && signed_as == origin_prefix => h,
            // `origin_prefix` changed: the key signed under its old name
            // until now, and checkpoints of that time verify only with that
            // vkey, so it is listed as retired; then `log.key` takes the new
            // name. A crash between the two writes extends the same row.
            Some(mut h) if h.current.public_key == public_key => {
                let now = Timestamp::now();
                let old = retire(&h.current, &signed_as, now, &history_path)?;
                match h.retired.last_mut() {
                    Some(last) if last.vkey == old.vkey && last.until == h.current.from => {
                        last.until = now;
                    }
                    _ => h.retired.push(old),
                }
                h.current.from = now;
                write_history(&history_path, &h)?;
                write_key_file(data_dir, &data_dir.join(LOG_KEY_FILE), &signer)?;
                tracing::info!(old_name = %signed_as, name = %origin_prefix, "the log key signs under a new origin_prefix; its old vkey is listed as retired");
                h
            }
            // First start, or a key file put back by hand: it signs from
            // now, and the key the history named is retired.
            other => {
                let now = Timestamp::now();
                let mut retired = Vec::new();
                if let Some(h) = other {
                    tracing::warn!(path = %history_path.display(), "log.key is not the key the history names (put back by hand?): it signs from now on, and the key named is listed as retired");
                    retired = h.retired;
                    retired.push(retire(&h.current, origin_prefix, now, &history_path)?);
                }
                let history = History {
                    current: CurrentRecord {
                        public_key,
                        from: now,
                    },
                    retired,
                };
                // It signs under the configured name from now: its file
                // says so first, or the next start (after a crash between
                // the two writes, too) would take that for a rename.
                if signed_as != origin_prefix {
                    write_key_file(data_dir, &data_dir.join(LOG_KEY_FILE), &signer)?;
                }
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

impl LogKeys {
    /// Replaces the log key with a new one, named `origin_prefix`; the old
    /// vkey is listed as retired from its `from` until now.
    pub fn rotate(data_dir: &Path, origin_prefix: &str) -> Result<LogKeys, LogKeyError> {
        let current = LogKeys::load(data_dir, origin_prefix)?;
        let staged = data_dir.join(NEW_LOG_KEY_FILE);
        let signer = generate(origin_prefix)?;
        let _ = std::fs::remove_file(&staged);
        write_private_file(&staged, format!("{}\n", signer.to_skey()).as_bytes())
            .map_err(io_error(&staged))?;
        let now = Timestamp::now();
        let mut retired = current.retired;
        retired.push(RetiredLogKey {
            vkey: current.signer.verifier().to_vkey(),
            from: current.from,
            until: now,
        });
        let history = History {
            current: CurrentRecord {
                public_key: BASE64.encode(signer.verifier().key.as_bytes()),
                from: now,
            },
            retired,
        };
        // From here on the rotation has happened: a start finishes it.
        write_history(&data_dir.join(LOG_KEYS_FILE), &history)?;
        finish_rotation(data_dir, &Some(history.clone()))?;
        Ok(LogKeys {
            signer,
            from: now,
            retired: history.retired,
            created: true,
        })
    }
}

/// Reads the Ed25519 key in `data_dir/file` (Go's note signer text),
/// generating it with mode 0600 when it does not exist; `true` when it was
/// generated. Shared by the log key and the witness key
/// ([`crate::witness_key`]).
pub(crate) fn load_or_generate(
    data_dir: &Path,
    file: &str,
    name: &str,
) -> Result<(Signer25519, bool), LogKeyError> {
    let path = data_dir.join(file);
    if let Some(signer) = read_skey(&path)? {
        return Ok((signer, false));
    }
    let signer = generate(name)?;
    write_key_file(data_dir, &path, &signer)?;
    Ok((signer, true))
}

/// Writes `signer` to `path`, mode 0600, whole or not at all: a crash
/// while writing must not leave a partial key that stops every later
/// start.
fn write_key_file(data_dir: &Path, path: &Path, signer: &Signer25519) -> Result<(), LogKeyError> {
    let tmp = path.with_extension("key.tmp");
    let _ = std::fs::remove_file(&tmp);
    write_private_file(&tmp, format!("{}\n", signer.to_skey()).as_bytes())
        .map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_error(path))?;
    std::fs::File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(data_dir))
}

fn generate(name: &str) -> Result<Signer25519, LogKeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| LogKeyError::Io {
        path: PathBuf::from("getrandom"),
        error: io::Error::other(e.to_string()),
    })?;
    Signer25519::new(name, &seed).map_err(LogKeyError::Name)
}

/// Reads a Go signer-key file; `None` when it does not exist.
pub(crate) fn read_skey(path: &Path) -> Result<Option<Signer25519>, LogKeyError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Signer25519::parse_skey(text.trim_end_matches(['\n', '\r']))
            .map(Some)
            .map_err(|e| LogKeyError::Bad {
                path: path.to_path_buf(),
                // The text is the secret: only the reason is shown.
                what: e.to_string(),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path)(e)),
    }
}

/// Completes or drops a staged rotation: the staged key replaces `log.key`
/// if the history already names it, and is removed otherwise.
fn finish_rotation(data_dir: &Path, history: &Option<History>) -> Result<(), LogKeyError> {
    let staged = data_dir.join(NEW_LOG_KEY_FILE);
    let signer = match read_skey(&staged) {
        Ok(Some(signer)) => signer,
        Ok(None) => return Ok(()),
        // Cut short while it was written: the history, written after it,
        // cannot name it, so the rotation never happened.
        Err(LogKeyError::Bad { .. }) => {
            tracing::warn!(path = %staged.display(), "removing a staged log key that was not written whole");
            std::fs::remove_file(&staged).map_err(io_error(&staged))?;
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let named = history
        .as_ref()
        .is_some_and(|h| h.current.public_key == BASE64.encode(signer.verifier().key.as_bytes()));
    if named {
        let path = data_dir.join(LOG_KEY_FILE);
        std::fs::rename(&staged, &path).map_err(io_error(&path))?;
        std::fs::File::open(data_dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error(data_dir))?;
    } else {
        std::fs::remove_file(&staged).map_err(io_error(&staged))?;
    }
    Ok(())
}

/// The history's current key as retired at `until`, named `name`.
fn retire(
    current: &CurrentRecord,
    name: &str,
    until: Timestamp,
    path: &Path,
) -> Result<RetiredLogKey, LogKeyError> {
    let bad = |what: &str| LogKeyError::Bad {
        path: path.to_path_buf(),
        what: what.to_string(),
    };
    let bytes: [u8; 32] = BASE64
        .decode(&current.public_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("current.public_key is not 32 bytes of base64"))?;
    // Through the vkey parser, which checks that it is an Ed25519 key.
    let mut typed = vec![ALG_ED25519];
    typed.extend_from_slice(&bytes);
    let id = key_id(name, ALG_ED25519, &bytes);
    let verifier = Verifier::parse(&format!("{name}+{id:08x}+{}", BASE64.encode(typed)))
        .map_err(|_| bad("current.public_key is not an Ed25519 key"))?;
    Ok(RetiredLogKey {
        vkey: verifier.to_vkey(),
        from: current.from,
        until,
    })
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

    /// A key file cut short by a crash never stops a start: a staged one
    /// is dropped (the history cannot name it), and a first key is written
    /// whole or not at all (a leftover temporary file is ignored).
    #[test]
    fn a_key_cut_short_by_a_crash_does_not_stop_the_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("log.key.tmp"), "PRIVATE+KEY+half").unwrap();
        let first = LogKeys::load(dir.path(), "logbook/a").unwrap();
        std::fs::write(
            dir.path().join(NEW_LOG_KEY_FILE),
            "PRIVATE+KEY+logbook/a+12",
        )
        .unwrap();
        let again = LogKeys::load(dir.path(), "logbook/a").unwrap();
        assert!(!dir.path().join(NEW_LOG_KEY_FILE).exists());
        assert!(first.created);
        assert!(!again.created, "the same key is kept");
    }

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
        // PRIVATE+KEY+<name>+<hash>+<key>; the key's base64 may hold a '+'.
        let key = text.trim().splitn(5, '+').nth(4).unwrap();
        assert!(!format!("{first:?}").contains(key));

        let again = LogKeys::load(dir.path(), "logbook/a").unwrap();
        assert!(!again.created);
        assert_eq!(again.from, first.from, "the history keeps the start");
        assert!(again.retired.is_empty());
    }

    /// A new `origin_prefix` renames the key: what it signed under the old
    /// name verifies only with the old vkey, which is listed as retired
    /// until the rename; `log.key` then carries the new name. Also after a
    /// rotation, and after a crash between the two writes.
    #[test]
    fn a_renamed_key_keeps_its_old_name_as_retired() {
        let dir = tempfile::tempdir().unwrap();
        let first = LogKeys::load(dir.path(), "logbook/a").unwrap();
        let old_file = std::fs::read(dir.path().join(LOG_KEY_FILE)).unwrap();
        let renamed = LogKeys::load(dir.path(), "logbook/b").unwrap();
        assert!(!renamed.created);
        assert_eq!(renamed.signer.verifier().key, first.signer.verifier().key);
        assert_eq!(renamed.signer.verifier().name, "logbook/b");
        let old_vkey = first.signer.verifier().to_vkey();
        assert_eq!(
            renamed.retired,
            [RetiredLogKey {
                vkey: old_vkey.clone(),
                from: first.from,
                until: renamed.from,
            }]
        );
        let text = std::fs::read_to_string(dir.path().join(LOG_KEY_FILE)).unwrap();
        assert!(
            text.starts_with("PRIVATE+KEY+logbook/b+"),
            "{}",
            &text[..20]
        );
        // The same name again changes nothing.
        let again = LogKeys::load(dir.path(), "logbook/b").unwrap();
        assert_eq!((again.from, again.retired.len()), (renamed.from, 1));

        // A crash after the history, before `log.key` was rewritten: the
        // next start extends the same row.
        std::fs::write(dir.path().join(LOG_KEY_FILE), &old_file).unwrap();
        let resumed = LogKeys::load(dir.path(), "logbook/b").unwrap();
        assert_eq!(resumed.retired.len(), 1, "{:?}", resumed.retired);
        assert_eq!(resumed.retired[0].vkey, old_vkey);
        assert_eq!(resumed.retired[0].until, resumed.from);

        // Rotated, then renamed: the rotated key under its first name too.
        let rotated = LogKeys::rotate(dir.path(), "logbook/b").unwrap();
        let moved = LogKeys::load(dir.path(), "logbook/c").unwrap();
        let names: Vec<(String, bool)> = moved
            .retired
            .iter()
            .map(|r| {
                let v = Verifier::parse(&r.vkey).unwrap();
                (v.name, v.key == rotated.signer.verifier().key)
            })
            .collect();
        assert_eq!(
            names,
            [
                ("logbook/a".to_string(), false),
                ("logbook/b".to_string(), false),
                ("logbook/b".to_string(), true),
            ]
        );
        assert_eq!(moved.signer.verifier().name, "logbook/c");

        // A key put back by hand under another name signs under the
        // configured one from that start: its file says so, and the next
        // start, under the same prefix, adds nothing.
        let other = tempfile::tempdir().unwrap();
        LogKeys::load(other.path(), "logbook/x").unwrap();
        std::fs::copy(
            other.path().join(LOG_KEY_FILE),
            dir.path().join(LOG_KEY_FILE),
        )
        .unwrap();
        let put_back = LogKeys::load(dir.path(), "logbook/c").unwrap();
        let text = std::fs::read_to_string(dir.path().join(LOG_KEY_FILE)).unwrap();
        assert!(
            text.starts_with("PRIVATE+KEY+logbook/c+"),
            "{}",
            &text[..20]
        );
        let again = LogKeys::load(dir.path(), "logbook/c").unwrap();
        assert_eq!(again.retired, put_back.retired);
        assert_eq!(again.from, put_back.from);
    }

    #[test]
    fn a_bad_key_file_or_prefix_is_an_error_that_hides_the_key() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            LogKeys::load(dir.path(), "has space"),
            Err(LogKeyError::Name(_))
        ));
        std::fs::write(
            dir.path().join(LOG_KEY_FILE),
            "PRIVATE+KEY+x+00000000+secretbits\n",
        )
        .unwrap();
        let err = LogKeys::load(dir.path(), "logbook/a")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secretbits"), "{err}");
    }

    #[test]
    fn a_rotation_retires_the_old_vkey_and_survives_a_crash_at_each_step() {
        let dir = tempfile::tempdir().unwrap();
        let first = LogKeys::load(dir.path(), "logbook/a").unwrap();
        let old_vkey = first.signer.verifier().to_vkey();
        let rotated = LogKeys::rotate(dir.path(), "logbook/a").unwrap();
        assert_ne!(rotated.signer.verifier().key, first.signer.verifier().key);
        assert_eq!(rotated.retired.len(), 1);
        assert_eq!(rotated.retired[0].vkey, old_vkey);
        assert_eq!(rotated.retired[0].from, first.from);
        assert_eq!(rotated.retired[0].until, rotated.from);
        assert!(!dir.path().join(NEW_LOG_KEY_FILE).exists());
        let loaded = LogKeys::load(dir.path(), "logbook/a").unwrap();
        assert_eq!(loaded.signer.verifier(), rotated.signer.verifier());
        assert_eq!(loaded.retired, rotated.retired);

        // Crash after staging, before the history: the staged key is dropped.
        let staged = dir.path().join(NEW_LOG_KEY_FILE);
        let stray = Signer25519::new("logbook/a", &[3; 32]).unwrap();
        std::fs::write(&staged, stray.to_skey()).unwrap();
        let after = LogKeys::load(dir.path(), "logbook/a").unwrap();
        assert_eq!(after.signer.verifier(), rotated.signer.verifier());
        assert!(!staged.exists());

        // Crash after the history named the staged key: the start finishes it.
        let history_path = dir.path().join(LOG_KEYS_FILE);
        let mut history = read_history(&history_path).unwrap().unwrap();
        history.current.public_key = BASE64.encode(stray.verifier().key.as_bytes());
        write_history(&history_path, &history).unwrap();
        std::fs::write(&staged, stray.to_skey()).unwrap();
        let finished = LogKeys::load(dir.path(), "logbook/a").unwrap();
        assert_eq!(finished.signer.verifier(), stray.verifier());
        assert!(!staged.exists());
    }
}
