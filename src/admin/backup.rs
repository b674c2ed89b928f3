//! The backup file (`logbook admin backup`), format 2: a magic line, one
//! JSON header line holding the key files, a line with the MAC of both,
//! then the store snapshot.
//!
//! ```text
//! logbook-backup 2\n
//! {"keys":true,"files":[{"path":"hmac.key","content_base64":"…"},…],"store":{"size":N,"sha256":"…"}}\n
//! {"key_id":"…","hmac_sha256":"…"}\n
//! <N bytes: the redb store>
//! ```
//!
//! The MAC is HMAC-SHA256 under a key derived from the HMAC signing key
//! ([`mac`]) over the first two lines; the header holds the store's
//! SHA-256, so it covers the store too. A backup without keys
//! (`--without-keys`) has `"keys":false` and no files. Format 1 is the same
//! without the MAC line; older builds still wrote the bare store;
//! [`is_container`] tells them apart. `docs/journal-format.md` is the spec.

use std::io::{self, BufRead, Read, Write};
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use logbook_base::hex;
use serde::{Deserialize, Serialize};

/// The first line of a backup container this build writes.
pub(crate) const MAGIC: &[u8] = b"logbook-backup 2\n";
/// The first line of format 1 (no MAC line), still read.
const MAGIC_1: &[u8] = b"logbook-backup 1\n";
/// What the MAC key is derived from an HMAC signing key with.
const MAC_KEY_LABEL: &[u8] = b"logbook backup mac v1";
/// Longest MAC line accepted.
const MAX_MAC_LINE: usize = 256;
/// Longest header line accepted (the key files are small).
const MAX_HEADER: usize = 4 << 20;
/// Largest key file accepted, in or out of a backup.
const MAX_KEY_FILE: u64 = 64 << 10;
/// Most key files in one backup.
const MAX_KEY_FILES: usize = 1024;

/// Single key files in the data dir that a backup carries.
const KEY_FILES: [&str; 5] = [
    logbook_journal::keys::GENERATED_KEY_FILE,
    logbook_federation::identity::KEY_FILE,
    logbook_federation::identity::INSTANCE_ID_FILE,
    logbook_journal::log_key::LOG_KEY_FILE,
    logbook_journal::log_key::LOG_KEYS_FILE,
];
/// Key files that older backups carry and a restore never writes. A
/// witness key must not outlive its memory of what it cosigned
/// (`witness_latest`, in the store): restored beside an older store, it
/// could cosign a view that forks from one it cosigned after the backup.
pub(crate) const NEVER_RESTORED: [&str; 1] = [logbook_journal::witness_key::WITNESS_KEY_FILE];
/// Directories of retired keys, carried whole (their regular files).
const KEY_DIRS: [&str; 2] = [
    logbook_journal::keys::RETIRED_KEYS_DIR,
    logbook_federation::identity::RETIRED_KEYS_DIR,
];

/// The header line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Header {
    /// Whether the key files were asked for (false: `--without-keys`).
    pub(crate) keys: bool,
    pub(crate) files: Vec<KeyFile>,
    pub(crate) store: StoreInfo,
}

/// One key file, by its path relative to the data dir.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyFile {
    pub(crate) path: String,
    #[serde(with = "content_base64")]
    pub(crate) content_base64: Vec<u8>,
}

impl std::fmt::Debug for KeyFile {
    // Never print a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyFile").field("path", &self.path).finish()
    }
}

/// Format 2's MAC line: which HMAC key, and the MAC of the lines before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MacLine {
    /// `logbook_journal::keys::key_id` of the HMAC key.
    pub(crate) key_id: String,
    /// Lowercase hex.
    pub(crate) hmac_sha256: String,
}

/// A container's first lines as read. Not `Debug`: `signed` holds the
/// key files' contents.
pub(crate) struct Container {
    pub(crate) header: Header,
    /// None for format 1.
    pub(crate) mac: Option<MacLine>,
    /// The bytes the MAC covers: the magic line and the header line.
    pub(crate) signed: Vec<u8>,
}

impl Container {
    /// Whether the MAC line verifies under `secret` (constant time).
    pub(crate) fn mac_verifies(&self, secret: &[u8]) -> bool {
        use hmac::Mac;
        let Some(line) = &self.mac else { return false };
        let Some(expected) = hex::decode_array::<32>(&line.hmac_sha256) else {
            return false;
        };
        keyed(&mac_key(secret))
            .chain_update(&self.signed)
            .verify_slice(&expected)
            .is_ok()
    }
}

fn keyed(key: &[u8]) -> hmac::Hmac<sha2::Sha256> {
    use hmac::digest::KeyInit;
    hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key")
}

/// The MAC key: HMAC-SHA256(secret, "logbook backup mac v1"), so that the
/// signing key never MACs anything but events.
fn mac_key(secret: &[u8]) -> [u8; 32] {
    use hmac::Mac;
    keyed(secret)
        .chain_update(MAC_KEY_LABEL)
        .finalize()
        .into_bytes()
        .into()
}

/// HMAC-SHA256(mac_key(secret), signed).
pub(crate) fn mac(secret: &[u8], signed: &[u8]) -> [u8; 32] {
    use hmac::Mac;
    keyed(&mac_key(secret))
        .chain_update(signed)
        .finalize()
        .into_bytes()
        .into()
}

/// The snapshot that follows the header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoreInfo {
    pub(crate) size: u64,
    /// Lowercase hex SHA-256 of the store bytes.
    pub(crate) sha256: String,
}

mod content_base64 {
    use super::*;
    pub(super) fn serialize<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&BASE64.encode(bytes))
    }
    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        BASE64.decode(text).map_err(serde::de::Error::custom)
    }
}

/// Why a backup could not be read or restored.
#[derive(Debug)]
pub(crate) enum BackupError {
    Io(String, io::Error),
    /// Not a backup this build can read, or a damaged one.
    Format(String),
    /// Key files in the data dir that differ from the backup's.
    Conflict(Vec<String>),
    Store(logbook_journal::store::StoreError),
    /// Its MAC could not be checked, and why.
    Unauthenticated(String),
    /// Its MAC does not verify under the key it names.
    Forged(String),
}

impl std::fmt::Display for BackupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackupError::Io(what, e) => write!(f, "{what}: {e}"),
            BackupError::Format(why) => write!(f, "not a readable logbook backup: {why}"),
            BackupError::Conflict(paths) => write!(
                f,
                "the data dir already holds different key files: {}; restore into an empty data dir, or move them away first",
                paths.join(", ")
            ),
            BackupError::Store(e) => write!(f, "{e}"),
            BackupError::Unauthenticated(why) => write!(
                f,
                "cannot tell that this backup is unchanged: {why}. If you trust the file (anyone who could write it could have put in tokens, peers, events and key files of their own), run again with --allow-unauthenticated"
            ),
            BackupError::Forged(key_id) => write!(
                f,
                "the backup's MAC does not verify under HMAC key {}: the file was changed after it was written; nothing was restored",
                key_id.escape_debug()
            ),
        }
    }
}

impl std::error::Error for BackupError {}

/// Whether `path` (relative to the data dir) may be a key file in a backup:
/// one of [`KEY_FILES`] or [`NEVER_RESTORED`], or a plain file name inside
/// one of [`KEY_DIRS`]. So a backup can never write outside those.
pub(crate) fn valid_path(path: &str) -> bool {
    if KEY_FILES.contains(&path) || NEVER_RESTORED.contains(&path) {
        return true;
    }
    let Some((dir, name)) = path.split_once('/') else {
        return false;
    };
    KEY_DIRS.contains(&dir) && valid_name(name)
}

fn valid_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Reads the key files of `data_dir`, in a stable order. A rotation's
/// staged key (`*.new`) is left out: the caller holds the rotation lock.
pub(crate) fn collect_key_files(data_dir: &Path) -> io::Result<Vec<KeyFile>> {
    let mut paths: Vec<String> = KEY_FILES.iter().map(|p| p.to_string()).collect();
    for dir in KEY_DIRS {
        let mut names = match std::fs::read_dir(data_dir.join(dir)) {
            Ok(entries) => entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|name| {
                    let ok = valid_name(name);
                    if !ok {
                        tracing::warn!(dir, name, "not backing up a key file with an unusual name");
                    }
                    ok
                })
                .collect::<Vec<_>>(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        names.sort();
        paths.extend(names.into_iter().map(|name| format!("{dir}/{name}")));
    }
    let mut files = Vec::new();
    for path in paths {
        let full = data_dir.join(&path);
        let content = match read_limited(&full) {
            Ok(content) => content,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", full.display()))),
        };
        files.push(KeyFile {
            path,
            content_base64: content,
        });
    }
    if files.len() > MAX_KEY_FILES {
        return Err(io::Error::other(format!(
            "{} key files; a backup carries at most {MAX_KEY_FILES}",
            files.len()
        )));
    }
    Ok(files)
}

fn read_limited(path: &Path) -> io::Result<Vec<u8>> {
    let mut content = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_KEY_FILE + 1)
        .read_to_end(&mut content)?;
    if content.len() as u64 > MAX_KEY_FILE {
        return Err(io::Error::other(format!(
            "larger than {MAX_KEY_FILE} bytes; not a key file"
        )));
    }
    Ok(content)
}

/// The magic, header and MAC lines, as written before the store; the MAC
/// under the HMAC signing key `secret`.
pub(crate) fn encode_header(header: &Header, secret: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    serde_json::to_writer(&mut out, header).expect("a header serializes");
    out.push(b'\n');
    let line = MacLine {
        key_id: logbook_journal::keys::key_id(secret),
        hmac_sha256: hex::encode(&mac(secret, &out)),
    };
    serde_json::to_writer(&mut out, &line).expect("a MAC line serializes");
    out.push(b'\n');
    out
}

/// The SHA-256 of the rest of `file`, read from its current position.
pub(crate) fn hash_file(file: &mut impl Read) -> io::Result<(u64, [u8; 32])> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok((size, hasher.finalize().into()));
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
}

/// Whether `start` (the first bytes of a file) opens a backup container
/// (format 1 or 2).
pub(crate) fn is_container(start: &[u8]) -> bool {
    start.starts_with(MAGIC) || start.starts_with(MAGIC_1)
}

/// Reads one line of at most `max` bytes, without its newline.
fn read_line(reader: &mut impl BufRead, max: usize, what: &str) -> Result<Vec<u8>, BackupError> {
    let mut line = Vec::new();
    reader
        .take(max as u64 + 1)
        .read_until(b'\n', &mut line)
        .map_err(|e| BackupError::Format(format!("reading the {what}: {e}")))?;
    if line.pop() != Some(b'\n') {
        return Err(BackupError::Format(format!(
            "the {what} line is missing or longer than {max} bytes"
        )));
    }
    Ok(line)
}

/// Reads the magic, header and (format 2) MAC lines and checks their form:
/// every path allowed, no path twice, a hex store hash. The MAC itself is
/// the restore's to check, with a key from outside the file.
pub(crate) fn read_container(reader: &mut impl BufRead) -> Result<Container, BackupError> {
    let mut magic = [0u8; MAGIC.len()];
    reader
        .read_exact(&mut magic)
        .map_err(|e| BackupError::Format(format!("reading the first line: {e}")))?;
    let format = match &magic[..] {
        m if m == MAGIC => 2,
        m if m == MAGIC_1 => 1,
        _ => return Err(BackupError::Format("no `logbook-backup` line".into())),
    };
    let line = read_line(reader, MAX_HEADER, "header")?;
    let mut signed = magic.to_vec();
    signed.extend_from_slice(&line);
    signed.push(b'\n');
    let mac = match format {
        1 => None,
        _ => {
            let text = read_line(reader, MAX_MAC_LINE, "MAC")?;
            let mac: MacLine = serde_json::from_slice(&text)
                .map_err(|e| BackupError::Format(format!("the MAC line: {e}")))?;
            if hex::decode_array::<32>(&mac.hmac_sha256).is_none() || mac.key_id.len() > 64 {
                return Err(BackupError::Format("a malformed MAC line".into()));
            }
            Some(mac)
        }
    };
    let header = check_header(&line)?;
    Ok(Container {
        header,
        mac,
        signed,
    })
}

fn check_header(line: &[u8]) -> Result<Header, BackupError> {
    let header: Header = serde_json::from_slice(line)
        .map_err(|e| BackupError::Format(format!("the header: {e}")))?;
    if !header.keys && !header.files.is_empty() {
        return Err(BackupError::Format(
            "a backup without keys lists key files".into(),
        ));
    }
    if header.files.len() > MAX_KEY_FILES {
        return Err(BackupError::Format(format!(
            "{} key files; at most {MAX_KEY_FILES}",
            header.files.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for file in &header.files {
        if !valid_path(&file.path) {
            return Err(BackupError::Format(format!(
                "{:?} is not a key file a backup may hold",
                file.path
            )));
        }
        if !seen.insert(&file.path) {
            return Err(BackupError::Format(format!(
                "{:?} is listed twice",
                file.path
            )));
        }
        if file.content_base64.len() as u64 > MAX_KEY_FILE {
            return Err(BackupError::Format(format!("{:?} is too large", file.path)));
        }
    }
    if hex::decode_array::<32>(&header.store.sha256).is_none() {
        return Err(BackupError::Format(
            "store.sha256 is not 64 hex digits".into(),
        ));
    }
    Ok(header)
}

/// Copies exactly the store's bytes from `reader` to `out`, and checks
/// their size, their hash, and that nothing follows them.
pub(crate) fn copy_store(
    reader: &mut impl Read,
    out: &mut impl Write,
    store: &StoreInfo,
) -> io::Result<()> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let mut limited = reader.take(store.size);
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = limited.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        size += n as u64;
    }
    let damaged = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    if size != store.size {
        return Err(damaged(format!(
            "the backup is cut short: its store has {size} of {} bytes",
            store.size
        )));
    }
    if hex::encode(&<[u8; 32]>::from(hasher.finalize())) != store.sha256 {
        return Err(damaged("the store's SHA-256 is not the header's".into()));
    }
    if reader.read(&mut [0u8; 1])? != 0 {
        return Err(damaged("bytes follow the store".into()));
    }
    Ok(())
}

#[cfg(test)]
#[path = "backup_tests.rs"]
mod tests;
