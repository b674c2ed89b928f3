//! The HMAC keyring: which key signs new events, and every key that old
//! events may have been signed with.
//!
//! A key is the UTF-8 bytes of a secret text. The signing key comes from the
//! first of `LOGBOOK_HMAC_SECRET`, `EVENT_BUS_HMAC_SECRET` and
//! `SESSION_SECRET` that is set; otherwise a random one is generated once and
//! kept in `<data_dir>/hmac.key` (mode 0600). There is no built-in key.

use std::collections::HashMap;
use std::io;
use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::event::Timestamp;
use logbook_base::canonical::sha256;
use logbook_base::hex;

/// Environment variables that may hold the signing secret, in priority order.
pub const SECRET_ENV_VARS: [&str; 3] = [
    "LOGBOOK_HMAC_SECRET",
    "EVENT_BUS_HMAC_SECRET",
    "SESSION_SECRET",
];

/// Shortest secret accepted from the environment: a short text is a
/// guessable HMAC key, and whoever guesses it can rewrite every plan.
pub const MIN_ENV_SECRET_BYTES: usize = 32;

/// File under the data dir holding the generated secret.
pub const GENERATED_KEY_FILE: &str = "hmac.key";
/// Directory under the data dir whose files hold retired secrets, kept so that
/// events signed before a rotation still verify.
pub const RETIRED_KEYS_DIR: &str = "hmac-retired";

/// Keys by id. Secrets never appear in `Debug` output or logs.
#[derive(Clone)]
pub struct Keyring {
    current: String,
    secrets: Vec<Vec<u8>>,
    /// For each key in `secrets`, when it was retired, if the system journal
    /// says so: it verifies no event dated after that.
    retired_at: Vec<Option<Timestamp>>,
    /// Both ids of every key (see [`key_id`]) to its index in `secrets`.
    ids: HashMap<String, usize>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<&String> = self.ids.keys().collect();
        ids.sort();
        f.debug_struct("Keyring")
            .field("current", &self.current)
            .field("ids", &ids)
            .finish()
    }
}

/// Where the signing key came from, for the startup log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Env(&'static str),
    File,
    Generated,
}

/// The label whose HMAC names a key.
const KEY_ID_LABEL: &[u8] = b"logbook key id v2";

/// `key_id`: the first 8 hex digits of HMAC-SHA256(key, "logbook key id v2").
/// Unlike a prefix of SHA-256(secret), which other software may derive from
/// a shared secret and use, it reveals nothing about any other use of it.
pub fn key_id(secret: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(KEY_ID_LABEL);
    hex::encode(&mac.finalize().into_bytes()[..4])
}

/// The id that events signed before `key_id` changed carry: the first 8 hex
/// digits of SHA-256(key). Those events keep it (it is signed), so a
/// keyring answers to both ids.
pub fn legacy_key_id(secret: &[u8]) -> String {
    hex::encode(&sha256(secret)[..4])
}

impl Keyring {
    /// A keyring holding one key, which signs.
    pub fn from_secret(secret: Vec<u8>) -> Keyring {
        let mut keyring = Keyring {
            current: key_id(&secret),
            secrets: Vec::new(),
            retired_at: Vec::new(),
            ids: HashMap::new(),
        };
        keyring
            .add_verification_key(secret)
            .expect("the ids of one key never collide with another key's");
        keyring
    }

    /// Adds a key that verifies but does not sign, under both of its ids.
    /// Two different secrets sharing a 32-bit id cannot both be kept: that is
    /// an error, never a silent choice.
    pub fn add_verification_key(&mut self, secret: Vec<u8>) -> io::Result<()> {
        let ids = [key_id(&secret), legacy_key_id(&secret)];
        let mut known = None;
        for id in &ids {
            if let Some(&index) = self.ids.get(id) {
                if self.secrets[index] != secret {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "two different HMAC secrets share the key id {id}; retire one of them"
                        ),
                    ));
                }
                known = Some(index);
            }
        }
        let index = known.unwrap_or_else(|| {
            self.secrets.push(secret);
            self.retired_at.push(None);
            self.secrets.len() - 1
        });
        for id in ids {
            self.ids.insert(id, index);
        }
        Ok(())
    }

    pub fn current_id(&self) -> &str {
        &self.current
    }

    pub(crate) fn current_secret(&self) -> &[u8] {
        &self.secrets[self.ids[&self.current]]
    }

    /// The key an id names, by its current or its legacy id.
    pub fn get(&self, key_id: &str) -> Option<&[u8]> {
        self.ids.get(key_id).map(|&i| self.secrets[i].as_slice())
    }

    /// Records that the key `key_id` names (by either id) was retired at
    /// `at`. The signing key is never retired: a secret that signs again
    /// (an environment variable set back to it) is valid until its next
    /// retirement, which is why the latest retirement wins. Returns whether
    /// the keyring holds that key as a verification-only key.
    pub fn retire(&mut self, key_id: &str, at: Timestamp) -> bool {
        let Some(&index) = self.ids.get(key_id) else {
            return false;
        };
        if index == self.ids[&self.current] {
            return false;
        }
        let slot = &mut self.retired_at[index];
        *slot = Some(slot.map_or(at, |t| t.max(at)));
        true
    }

    /// When the key `key_id` names was retired, if a retirement is known.
    pub fn retired_at(&self, key_id: &str) -> Option<Timestamp> {
        self.ids
            .get(key_id)
            .and_then(|&index| self.retired_at[index])
    }

    /// Gives each key of this keyring the window `other` holds for it (a
    /// keyring loaded again after a rotation, from the one in service).
    pub fn keep_windows_of(&mut self, other: &Keyring) {
        for (id, &index) in &other.ids {
            if let Some(at) = other.retired_at[index] {
                self.retire(id, at);
            }
        }
    }

    /// Whether the two ids name one key the keyring holds (each key has
    /// two ids, the current and the legacy one).
    pub fn same_key(&self, a: &str, b: &str) -> bool {
        matches!((self.ids.get(a), self.ids.get(b)), (Some(x), Some(y)) if x == y)
    }

    /// The key that may have signed an event dated `at`: the key `key_id`
    /// names, unless it was retired before `at`.
    pub(crate) fn verification_key(&self, key_id: &str, at: Timestamp) -> Option<&[u8]> {
        let &index = self.ids.get(key_id)?;
        match self.retired_at[index] {
            Some(retired) if at > retired => None,
            _ => Some(&self.secrets[index]),
        }
    }

    /// How many keys (not ids) the keyring holds.
    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Loads the keyring for a data dir, generating the secret on first start
    /// when no environment variable provides one.
    pub fn load(
        data_dir: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> io::Result<(Keyring, KeySource)> {
        let generated_path = data_dir.join(GENERATED_KEY_FILE);
        let (mut keyring, source) = match env_secret(env)? {
            Some((name, secret)) => (
                Keyring::from_secret(secret.into_bytes()),
                KeySource::Env(name),
            ),
            None => match read_secret(&generated_path)? {
                Some(secret) => (Keyring::from_secret(secret), KeySource::File),
                None => {
                    let secret = generate_secret(&generated_path)?;
                    (Keyring::from_secret(secret), KeySource::Generated)
                }
            },
        };
        // A generated key that an environment secret now overrides still
        // verifies the events it signed.
        if let Some(secret) = read_secret(&generated_path)? {
            keyring.add_verification_key(secret)?;
        }
        for secret in retired_secrets(data_dir)? {
            keyring.add_verification_key(secret)?;
        }
        Ok((keyring, source))
    }
}

/// The secret the daemon would sign with in this environment (the
/// first of [`SECRET_ENV_VARS`] set, else the data dir's `hmac.key`),
/// never generating one: `None` when there is none. `logbook restore`
/// authenticates a backup with it, and with no retired key: a retired
/// key may have leaked, and its window is recorded in the store a
/// restore has not got yet.
pub fn signing_secret_here(
    data_dir: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> io::Result<Option<Vec<u8>>> {
    match env_secret(env)? {
        Some((_, secret)) => Ok(Some(secret.into_bytes())),
        None => read_secret(&data_dir.join(GENERATED_KEY_FILE)),
    }
}

/// The secret named `key_id` (either id) among those the environment and
/// the data dir hold, current or retired, never generating one: a backup
/// that names a retired key cannot be vouched for by it, but a MAC that
/// does not verify under it can be refused.
pub fn secret_here(
    data_dir: &Path,
    env: impl Fn(&str) -> Option<String>,
    key_id: &str,
) -> io::Result<Option<Vec<u8>>> {
    let mut secrets: Vec<Vec<u8>> = env_secret(env)?
        .map(|(_, secret)| secret.into_bytes())
        .into_iter()
        .collect();
    secrets.extend(read_secret(&data_dir.join(GENERATED_KEY_FILE))?);
    secrets.extend(retired_secrets(data_dir)?);
    Ok(secrets
        .into_iter()
        .find(|secret| self::key_id(secret) == key_id || legacy_key_id(secret) == key_id))
}

/// The secret from the first of [`SECRET_ENV_VARS`] that is set, refused
/// when it is shorter than [`MIN_ENV_SECRET_BYTES`].
fn env_secret(env: impl Fn(&str) -> Option<String>) -> io::Result<Option<(&'static str, String)>> {
    let from_env = SECRET_ENV_VARS
        .iter()
        .find_map(|name| env(name).filter(|v| !v.is_empty()).map(|v| (*name, v)));
    match from_env {
        Some((name, secret)) if secret.len() < MIN_ENV_SECRET_BYTES => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "${name} is {} bytes; an HMAC secret must be at least {MIN_ENV_SECRET_BYTES} bytes. \
                 Generate one with: head -c 32 /dev/urandom | base64",
                secret.len()
            ),
        )),
        found => Ok(found),
    }
}

/// The secrets of the files in `data_dir/hmac-retired/`.
fn retired_secrets(data_dir: &Path) -> io::Result<Vec<Vec<u8>>> {
    let retired = data_dir.join(RETIRED_KEYS_DIR);
    let mut secrets = Vec::new();
    if retired.is_dir() {
        for entry in std::fs::read_dir(&retired)? {
            let path = entry?.path();
            if !path.is_file() {
                continue;
            }
            secrets.extend(read_secret(&path)?);
        }
    }
    Ok(secrets)
}

fn read_secret(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let secret = text.trim_end_matches(['\n', '\r']);
            if secret.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is empty", path.display()),
                ));
            }
            Ok(Some(secret.as_bytes().to_vec()))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Generates 32 random bytes, written as 64 hex digits so the same secret can
/// be handed to `LOGBOOK_HMAC_SECRET` or an offline verifier.
fn generate_secret(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| io::Error::other(e.to_string()))?;
    let secret = hex::encode(&bytes);
    logbook_base::private_file::write_private_file(path, secret.as_bytes())?;
    Ok(secret.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_secret_here_is_the_signing_key_and_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        assert!(signing_secret_here(dir.path(), |_| None).unwrap().is_none());
        assert!(!dir.path().join(GENERATED_KEY_FILE).exists());
        // Retired keys are not current ones.
        std::fs::create_dir(dir.path().join(RETIRED_KEYS_DIR)).unwrap();
        std::fs::write(
            dir.path().join(RETIRED_KEYS_DIR).join("a"),
            "retired-secret\n",
        )
        .unwrap();
        assert!(signing_secret_here(dir.path(), |_| None).unwrap().is_none());
        std::fs::write(dir.path().join(GENERATED_KEY_FILE), "file-secret\n").unwrap();
        assert_eq!(
            signing_secret_here(dir.path(), |_| None).unwrap().unwrap(),
            b"file-secret"
        );
        // The environment's wins, as at start; a short one is refused.
        let env = |name: &str| {
            (name == "LOGBOOK_HMAC_SECRET")
                .then(|| "an-environment-secret-of-32-bytes!".to_string())
        };
        assert_eq!(
            signing_secret_here(dir.path(), env).unwrap().unwrap(),
            b"an-environment-secret-of-32-bytes!"
        );
        assert!(signing_secret_here(dir.path(), |_| Some("short".into())).is_err());
    }

    const KEY_ID_ABC: &str = "e32da710";

    #[test]
    fn key_id_is_an_hmac_of_a_label_and_the_legacy_id_still_finds_the_key() {
        // HMAC-SHA256("abc", "logbook key id v2"), independently computed.
        assert_eq!(key_id(b"abc"), KEY_ID_ABC);
        // SHA-256("abc") = ba7816bf...
        assert_eq!(legacy_key_id(b"abc"), "ba7816bf");
        let k = Keyring::from_secret(b"abc".to_vec());
        assert_eq!(k.current_id(), KEY_ID_ABC);
        assert_eq!(k.get("ba7816bf"), Some(&b"abc"[..]));
        assert_eq!(k.get(KEY_ID_ABC), Some(&b"abc"[..]));
        assert_eq!(k.len(), 1);
    }

    #[test]
    fn env_wins_in_order_and_generated_key_persists() {
        let dir = tempfile::tempdir().unwrap();
        let (generated, source) = Keyring::load(dir.path(), |_| None).unwrap();
        assert_eq!(source, KeySource::Generated);
        let (again, source) = Keyring::load(dir.path(), |_| None).unwrap();
        assert_eq!(source, KeySource::File);
        assert_eq!(again.current_id(), generated.current_id());

        const SECOND: &str = "second-secret-of-at-least-32-bytes";
        let env = |name: &str| match name {
            "EVENT_BUS_HMAC_SECRET" => Some(SECOND.to_string()),
            "SESSION_SECRET" => Some("third-secret-of-at-least-32-bytes".to_string()),
            "LOGBOOK_HMAC_SECRET" => Some(String::new()),
            _ => None,
        };
        let (k, source) = Keyring::load(dir.path(), env).unwrap();
        assert_eq!(source, KeySource::Env("EVENT_BUS_HMAC_SECRET"));
        assert_eq!(k.current_id(), key_id(SECOND.as_bytes()));
        // The generated key still verifies old events.
        assert!(k.get(generated.current_id()).is_some());
        assert_eq!(k.len(), 2);
    }

    #[test]
    fn a_short_environment_secret_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let short = "x".repeat(MIN_ENV_SECRET_BYTES - 1);
        let err = Keyring::load(dir.path(), |n| {
            (n == "SESSION_SECRET").then(|| short.clone())
        })
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("$SESSION_SECRET is 31 bytes"), "{text}");
        assert!(text.contains("head -c 32 /dev/urandom | base64"), "{text}");
        assert!(!text.contains(&short), "the secret itself is never shown");
        let long = "x".repeat(MIN_ENV_SECRET_BYTES);
        assert!(
            Keyring::load(dir.path(), |n| (n == "SESSION_SECRET")
                .then(|| long.clone()))
            .is_ok()
        );
    }

    #[test]
    fn generated_key_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        Keyring::load(dir.path(), |_| None).unwrap();
        let mode = std::fs::metadata(dir.path().join(GENERATED_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_retired_key_verifies_only_up_to_its_retirement() {
        let mut k = Keyring::from_secret(b"new-key".to_vec());
        k.add_verification_key(b"old-key".to_vec()).unwrap();
        let old = key_id(b"old-key");
        let at = Timestamp(1_000);
        assert!(
            k.verification_key(&old, Timestamp(5_000)).is_some(),
            "no window yet"
        );
        assert!(
            k.retire(&legacy_key_id(b"old-key"), at),
            "either id names it"
        );
        assert_eq!(k.verification_key(&old, at), Some(&b"old-key"[..]));
        assert_eq!(k.verification_key(&old, Timestamp(1_001)), None);
        assert!(
            !k.retire(k.current_id().to_string().as_str(), at),
            "the signer is never retired"
        );
        assert!(
            k.verification_key(k.current_id(), Timestamp(i64::MAX))
                .is_some()
        );
        assert!(!k.retire("00000000", at));
    }

    #[test]
    fn debug_never_shows_secrets() {
        let k = Keyring::from_secret(b"super-secret-value".to_vec());
        assert!(!format!("{k:?}").contains("super-secret"));
    }
}
