//! This instance's federation identity: its instance id and its RSA key pair
//! (3072 bits, RSASSA-PSS with SHA-256), generated on first start into the
//! data dir (mode 0600), the keys it rotated away from (kept to sign for peers
//! that have not learnt the new key yet), plus the key encodings and
//! fingerprints peers pin.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use logbook_base::canonical::sha256;
use logbook_base::hex;
use logbook_base::private_file::write_private_file;
use logbook_base::reloadable::Reloadable;
use rsa::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use rsa::traits::PublicKeyParts;
use rsa::{PrivateKey, PublicKey};
use uuid::Uuid;

use crate::config::FederationConfig;

/// Size of the keys this instance generates.
pub(crate) const KEY_BITS: usize = 3072;
/// Smallest peer key accepted.
pub(crate) const MIN_PEER_KEY_BITS: usize = 3072;
/// The private key file in the data dir (PKCS#8 PEM).
pub const KEY_FILE: &str = "federation.key";
/// Where a rotation stages the new key until the rotation commits.
pub const NEW_KEY_FILE: &str = "federation.key.new";
/// Keys rotated away from, as `<key_id>.key` (PKCS#8 PEM, mode 0600).
pub const RETIRED_KEYS_DIR: &str = "federation-retired";
/// The generated instance id, when the config leaves it empty.
pub const INSTANCE_ID_FILE: &str = "instance_id";
/// Longest instance id accepted.
pub(crate) const MAX_INSTANCE_ID_LEN: usize = 128;

/// What went wrong with a key or a key file. The text names the file.
#[derive(Debug)]
pub enum KeyError {
    /// Reading, writing, creating, removing or installing a file.
    Io {
        action: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    /// Not a PKCS#8 RSA private key (in the file `path`, if from a file).
    BadPrivateKey {
        path: Option<PathBuf>,
        error: String,
    },
    /// Not an RSA public key (`pem`: as SPKI PEM, else as SPKI DER).
    BadPublicKey {
        pem: bool,
        error: String,
    },
    /// A public key smaller than [`MIN_PEER_KEY_BITS`].
    TooSmall {
        bits: usize,
    },
    /// Encoding `what` ("the private key", "the public key") failed.
    Encoding {
        what: &'static str,
        error: String,
    },
    Generate(String),
    InstanceId(InstanceIdError),
}

impl KeyError {
    pub(crate) fn io(action: &'static str, path: &Path, error: std::io::Error) -> KeyError {
        KeyError::Io {
            action,
            path: path.to_path_buf(),
            error,
        }
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Io {
                action,
                path,
                error,
            } => write!(f, "{action} {}: {error}", path.display()),
            KeyError::BadPrivateKey { path, error } => {
                if let Some(path) = path {
                    write!(f, "{}: ", path.display())?;
                }
                write!(f, "not a PKCS#8 RSA private key: {error}")
            }
            KeyError::BadPublicKey { pem: true, error } => write!(
                f,
                "not an RSA public key in SPKI PEM (-----BEGIN PUBLIC KEY-----): {error}"
            ),
            KeyError::BadPublicKey { pem: false, error } => {
                write!(f, "not an RSA public key: {error}")
            }
            KeyError::TooSmall { bits } => write!(
                f,
                "the RSA key has {bits} bits; at least {MIN_PEER_KEY_BITS} are required"
            ),
            KeyError::Encoding { what, error } => write!(f, "encoding {what}: {error}"),
            KeyError::Generate(error) => write!(f, "generating an RSA key: {error}"),
            KeyError::InstanceId(e) => write!(f, "federation.instance_id: {e}"),
        }
    }
}

impl std::error::Error for KeyError {}

/// An instance id that breaks the rules of [`validate_instance_id`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceIdError {
    Length(String),
    Characters(String),
}

impl fmt::Display for InstanceIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstanceIdError::Length(id) => write!(
                f,
                "instance id {id:?} must be 1 to {MAX_INSTANCE_ID_LEN} characters"
            ),
            InstanceIdError::Characters(id) => write!(
                f,
                "instance id {id:?} may hold only letters, digits, '.', '_', ':' and '-'"
            ),
        }
    }
}

impl std::error::Error for InstanceIdError {}

pub struct Identity {
    pub instance_id: String,
    pub name: String,
    /// Replaced whole by a rotation; readers keep the key they took.
    current: Reloadable<OwnKey>,
    retired: RwLock<HashMap<String, Arc<OwnKey>>>,
}

/// One key pair of this instance with its public encodings.
pub struct OwnKey {
    pub private_key: PrivateKey,
    /// The same key for `ring`, which signs in constant time about five
    /// times faster than `rsa` (docs/federation-protocol.md#performance).
    pub(crate) signer: ring::signature::RsaKeyPair,
    pub public_key_der: Vec<u8>,
    pub public_key_pem: String,
    pub key_id: String,
    pub fingerprint: String,
}

impl OwnKey {
    pub fn new(private_key: PrivateKey) -> Result<OwnKey, KeyError> {
        let public_key = private_key.to_public_key();
        let public_key_der = spki_der(&public_key)?;
        let pkcs8 = private_key.to_pkcs8_der().map_err(|e| KeyError::Encoding {
            what: "the private key",
            error: e.to_string(),
        })?;
        let signer = ring::signature::RsaKeyPair::from_pkcs8(pkcs8.as_bytes()).map_err(|e| {
            KeyError::BadPrivateKey {
                path: None,
                error: e.to_string(),
            }
        })?;
        Ok(OwnKey {
            private_key,
            signer,
            public_key_pem: spki_pem(&public_key)?,
            key_id: key_id(&public_key_der),
            fingerprint: fingerprint(&public_key_der),
            public_key_der,
        })
    }
}

/// What `Identity::load` had to create.
#[derive(Debug, Default)]
pub struct Created {
    pub key: bool,
    pub instance_id: bool,
}

impl Identity {
    /// Loads the key and instance id from `data_dir`, creating what is
    /// missing. Generating a key takes a few seconds.
    pub fn load(
        data_dir: &Path,
        config: &FederationConfig,
    ) -> Result<(Identity, Created), KeyError> {
        let mut created = Created::default();
        let key_path = data_dir.join(KEY_FILE);
        let private_key = if key_path.exists() {
            let pem = std::fs::read_to_string(&key_path)
                .map_err(|e| KeyError::io("reading", &key_path, e))?;
            PrivateKey::from_pkcs8_pem(&pem).map_err(|e| KeyError::BadPrivateKey {
                path: Some(key_path.clone()),
                error: e.to_string(),
            })?
        } else {
            let key = generate_private_key()?;
            write_private_file(&key_path, private_key_pem(&key)?.as_bytes())
                .map_err(|e| KeyError::io("writing", &key_path, e))?;
            created.key = true;
            key
        };
        let instance_id = if config.instance_id.is_empty() {
            let path = data_dir.join(INSTANCE_ID_FILE);
            if path.exists() {
                std::fs::read_to_string(&path)
                    .map_err(|e| KeyError::io("reading", &path, e))?
                    .trim()
                    .to_string()
            } else {
                let id = Uuid::new_v4().to_string();
                write_private_file(&path, id.as_bytes())
                    .map_err(|e| KeyError::io("writing", &path, e))?;
                created.instance_id = true;
                id
            }
        } else {
            config.instance_id.clone()
        };
        validate_instance_id(&instance_id).map_err(KeyError::InstanceId)?;
        let retired = load_retired(&data_dir.join(RETIRED_KEYS_DIR))?;
        Ok((
            Identity {
                name: if config.name.is_empty() {
                    instance_id.clone()
                } else {
                    config.name.clone()
                },
                instance_id,
                current: Reloadable::new(OwnKey::new(private_key)?),
                retired: RwLock::new(retired),
            },
            created,
        ))
    }

    /// The key this instance signs with now.
    pub fn current(&self) -> Arc<OwnKey> {
        self.current.current()
    }

    /// A key this instance rotated away from, by key id.
    pub(crate) fn retired(&self, key_id: &str) -> Option<Arc<OwnKey>> {
        self.retired
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key_id)
            .cloned()
    }

    pub(crate) fn add_retired(&self, key: Arc<OwnKey>) {
        self.retired
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.key_id.clone(), key);
    }

    /// Makes `key` the signing key; the previous one must already be retired.
    pub(crate) fn install(&self, key: OwnKey) {
        self.current.replace(key);
    }
}

/// Reads every retired key in `dir` (missing dir: none), by key id.
fn load_retired(dir: &Path) -> Result<HashMap<String, Arc<OwnKey>>, KeyError> {
    let mut keys = HashMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(keys),
        Err(e) => return Err(KeyError::io("reading", dir, e)),
    };
    for entry in entries {
        let path = entry.map_err(|e| KeyError::io("reading", dir, e))?.path();
        if path.extension().is_none_or(|x| x != "key") {
            continue;
        }
        let pem = std::fs::read_to_string(&path).map_err(|e| KeyError::io("reading", &path, e))?;
        let key = OwnKey::new(private_key_from_pem(&pem).map_err(|e| match e {
            KeyError::BadPrivateKey { error, .. } => KeyError::BadPrivateKey {
                path: Some(path.clone()),
                error,
            },
            other => other,
        })?)?;
        keys.insert(key.key_id.clone(), Arc::new(key));
    }
    Ok(keys)
}

/// Instance ids are 1 to 128 of `A-Z a-z 0-9 . _ : -`.
pub(crate) fn validate_instance_id(id: &str) -> Result<(), InstanceIdError> {
    if id.is_empty() || id.len() > MAX_INSTANCE_ID_LEN {
        return Err(InstanceIdError::Length(id.to_string()));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        return Err(InstanceIdError::Characters(id.to_string()));
    }
    Ok(())
}

pub fn generate_private_key() -> Result<PrivateKey, KeyError> {
    PrivateKey::new(&mut getrandom::SysRng, KEY_BITS).map_err(|e| KeyError::Generate(e.to_string()))
}

pub fn private_key_pem(key: &PrivateKey) -> Result<String, KeyError> {
    key.to_pkcs8_pem(LineEnding::LF)
        .map(|pem| pem.to_string())
        .map_err(|e| KeyError::Encoding {
            what: "the private key",
            error: e.to_string(),
        })
}

pub fn private_key_from_pem(pem: &str) -> Result<PrivateKey, KeyError> {
    PrivateKey::from_pkcs8_pem(pem).map_err(|e| KeyError::BadPrivateKey {
        path: None,
        error: e.to_string(),
    })
}

pub fn spki_der(key: &PublicKey) -> Result<Vec<u8>, KeyError> {
    key.to_public_key_der()
        .map(|d| d.as_bytes().to_vec())
        .map_err(|e| KeyError::Encoding {
            what: "the public key",
            error: e.to_string(),
        })
}

pub fn spki_pem(key: &PublicKey) -> Result<String, KeyError> {
    key.to_public_key_pem(LineEnding::LF)
        .map_err(|e| KeyError::Encoding {
            what: "the public key",
            error: e.to_string(),
        })
}

/// Parses an SPKI PEM RSA public key of at least [`MIN_PEER_KEY_BITS`].
pub fn public_key_from_pem(pem: &str) -> Result<PublicKey, KeyError> {
    let key = PublicKey::from_public_key_pem(pem.trim()).map_err(|e| KeyError::BadPublicKey {
        pem: true,
        error: e.to_string(),
    })?;
    check_size(&key)?;
    Ok(key)
}

pub(crate) fn public_key_from_der(der: &[u8]) -> Result<PublicKey, KeyError> {
    let key = PublicKey::from_public_key_der(der).map_err(|e| KeyError::BadPublicKey {
        pem: false,
        error: e.to_string(),
    })?;
    check_size(&key)?;
    Ok(key)
}

fn check_size(key: &PublicKey) -> Result<(), KeyError> {
    let bits = key.n().bit_width() as usize;
    if bits < MIN_PEER_KEY_BITS {
        return Err(KeyError::TooSmall { bits });
    }
    Ok(())
}

/// The SPKI DER of an SPKI PEM public key, checked as [`public_key_from_pem`] does.
pub(crate) fn pem_der(pem: &str) -> Result<Vec<u8>, KeyError> {
    spki_der(&public_key_from_pem(pem)?)
}

/// Lowercase hex SHA-256 of the SPKI DER: what an admin pins.
pub fn fingerprint(spki_der: &[u8]) -> String {
    hex::encode(&sha256(spki_der))
}

/// The first 16 hex digits of the fingerprint: names the key in messages.
pub fn key_id(spki_der: &[u8]) -> String {
    fingerprint(spki_der)[..16].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids() {
        for ok in [
            "alpha",
            "0192f3a4-5b6c-7d8e-9f00-112233445566",
            "edge.site_1:a",
        ] {
            validate_instance_id(ok).unwrap();
        }
        for bad in ["", "a b", "a/b", "é", &"a".repeat(129), "a\0b"] {
            assert!(validate_instance_id(bad).is_err(), "{bad:?}");
        }
    }
}
