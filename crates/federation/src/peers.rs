//! Peers ("connections"): checking a peer definition (from `[[peers]]` or
//! the HTTP API), checking the identity document a peer serves before its
//! key is pinned, and storing peers. A key is pinned either as given, or
//! fetched from the peer's `/instance` (by the daemon) and accepted only if
//! its fingerprint equals the one the admin was given out of band.

use std::fmt;

use logbook_journal::event::Timestamp;
use logbook_journal::registry::{InvalidPattern, TypePattern};
use logbook_journal::store::{PeerRecord, PeerStatus, Store, StoreError, inert_text};
use serde_json::{Value, json};

use crate::config::PeerConfig;
use crate::identity::{self, InstanceIdError, KeyError, fingerprint, key_id};
use crate::message::{PROTOCOL_V1, PROTOCOL_VERSION};

/// Path of the identity document on every instance.
pub const INSTANCE_PATH: &str = "/api/v1/federation/instance";

/// A checked peer definition, before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    pub instance_id: String,
    pub base_url: String,
    /// SPKI PEM, if given.
    pub public_key: Option<String>,
    /// Hex SHA-256 of the SPKI DER, if given.
    pub fingerprint: Option<String>,
    /// The grants of `[[peers]] allow` (normalized patterns); None for a
    /// peer added over HTTP, which keeps whatever grants it has.
    pub config_allow: Option<Vec<String>>,
}

/// A peer definition that cannot be taken.
#[derive(Debug)]
pub enum PeerError {
    InstanceId(InstanceIdError),
    BadFingerprint,
    NoKey,
    /// The base URL `text` does not parse (the parser's words).
    BaseUrl {
        text: String,
        error: String,
    },
    BaseUrlScheme(String),
    BaseUrlQuery(String),
    /// An `allow` pattern (the pattern parser's words).
    Grant(InvalidPattern),
    Key(KeyError),
    FingerprintMismatch {
        actual: String,
        expected: String,
    },
    /// The peer would have this instance's own id.
    OwnId,
    /// Entry `index` of `[[peers]]` is wrong.
    Entry {
        index: usize,
        instance_id: String,
        error: Box<PeerError>,
    },
    /// Entry `index` of `[[peers]]` has this instance's own id.
    EntryOwnId {
        index: usize,
        instance_id: String,
    },
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerError::InstanceId(e) => e.fmt(f),
            PeerError::BadFingerprint => {
                f.write_str("fingerprint must be 64 hex digits: the SHA-256 of the peer's SPKI DER")
            }
            PeerError::NoKey => f.write_str(
                "give the peer's publicKey, or the fingerprint to pin after fetching its key",
            ),
            PeerError::BaseUrl { text, error } => write!(f, "base URL {text:?}: {error}"),
            PeerError::BaseUrlScheme(text) => write!(
                f,
                "base URL {text:?} must be an http:// or https:// URL with a host"
            ),
            PeerError::BaseUrlQuery(text) => {
                write!(f, "base URL {text:?} must not have a query or fragment")
            }
            PeerError::Grant(e) => write!(f, "allow: {e}"),
            PeerError::Key(e) => e.fmt(f),
            PeerError::FingerprintMismatch { actual, expected } => write!(
                f,
                "the public key's fingerprint is {actual}, not the pinned {expected}"
            ),
            PeerError::OwnId => f.write_str("a peer cannot have this instance's own id"),
            PeerError::Entry {
                index,
                instance_id,
                error,
            } => write!(f, "peers[{index}] ({instance_id}): {error}"),
            PeerError::EntryOwnId { index, instance_id } => {
                write!(f, "peers[{index}]: {instance_id} is this instance's own id")
            }
        }
    }
}

impl std::error::Error for PeerError {}

impl From<KeyError> for PeerError {
    fn from(e: KeyError) -> PeerError {
        PeerError::Key(e)
    }
}

impl PeerSpec {
    pub fn new(
        instance_id: &str,
        base_url: &str,
        public_key: &str,
        fingerprint: &str,
    ) -> Result<PeerSpec, PeerError> {
        identity::validate_instance_id(instance_id).map_err(PeerError::InstanceId)?;
        let fingerprint = fingerprint.trim().to_ascii_lowercase();
        if !fingerprint.is_empty() && logbook_base::hex::decode_array::<32>(&fingerprint).is_none()
        {
            return Err(PeerError::BadFingerprint);
        }
        let public_key = public_key.trim();
        if public_key.is_empty() && fingerprint.is_empty() {
            return Err(PeerError::NoKey);
        }
        Ok(PeerSpec {
            instance_id: instance_id.to_string(),
            base_url: normalize_base_url(base_url)?,
            public_key: (!public_key.is_empty()).then(|| public_key.to_string()),
            fingerprint: (!fingerprint.is_empty()).then_some(fingerprint),
            config_allow: None,
        })
    }

    /// The definition of a `[[peers]]` entry, grants included.
    pub fn from_config(p: &PeerConfig) -> Result<PeerSpec, PeerError> {
        let mut spec = PeerSpec::new(&p.instance_id, &p.base_url, &p.public_key, &p.fingerprint)?;
        spec.config_allow = Some(parse_grants(&p.allow)?);
        Ok(spec)
    }

    /// The key given inline, checked against the fingerprint if both are given.
    pub fn inline_key(&self) -> Result<Option<Vec<u8>>, PeerError> {
        let Some(pem) = &self.public_key else {
            return Ok(None);
        };
        let der = identity::pem_der(pem)?;
        if let Some(expected) = &self.fingerprint
            && fingerprint(&der) != *expected
        {
            return Err(PeerError::FingerprintMismatch {
                actual: fingerprint(&der),
                expected: expected.clone(),
            });
        }
        Ok(Some(der))
    }
}

/// Checks grant patterns and returns them normalized, without repeats.
pub fn parse_grants(patterns: &[String]) -> Result<Vec<String>, PeerError> {
    let mut out: Vec<String> = Vec::new();
    for p in patterns {
        let p = TypePattern::parse(p.trim())
            .map_err(PeerError::Grant)?
            .as_string();
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

/// `http(s)://host[:port][/prefix]`, without a trailing slash.
pub(crate) fn normalize_base_url(text: &str) -> Result<String, PeerError> {
    let url = url::Url::parse(text.trim()).map_err(|e| PeerError::BaseUrl {
        text: text.to_string(),
        error: e.to_string(),
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(PeerError::BaseUrlScheme(text.to_string()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(PeerError::BaseUrlQuery(text.to_string()));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// Why a peer's key could not be pinned from its identity document.
#[derive(Debug)]
pub enum PinError {
    /// The definition has no fingerprint to check a fetched key against.
    NoFingerprint,
    /// Fetching or reading the document failed (the transport's words).
    Transport(String),
    WrongInstance {
        url: String,
        said: String,
        expected: String,
    },
    WrongProtocol {
        url: String,
        version: Option<String>,
    },
    NoPublicKey(String),
    Key(KeyError),
    WrongFingerprint {
        url: String,
        actual: String,
        expected: String,
    },
}

impl fmt::Display for PinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinError::NoFingerprint => f.write_str("no fingerprint to pin"),
            PinError::Transport(e) => f.write_str(e),
            PinError::WrongInstance {
                url,
                said,
                expected,
            } => write!(f, "{url} says it is {said:?}, not {expected:?}"),
            PinError::WrongProtocol { url, version } => write!(
                f,
                "{url} speaks protocol {version:?}, not {PROTOCOL_VERSION:?}"
            ),
            PinError::NoPublicKey(url) => write!(f, "{url} has no publicKey"),
            PinError::Key(e) => e.fmt(f),
            PinError::WrongFingerprint {
                url,
                actual,
                expected,
            } => write!(
                f,
                "the key served by {url} has fingerprint {actual}, not the pinned {expected}: refusing it"
            ),
        }
    }
}

impl std::error::Error for PinError {}

/// Checks the identity document `doc` that `url` served for `spec`, and
/// returns its key's SPKI DER if the instance id, protocol version and
/// fingerprint are the expected ones.
pub fn check_identity_document(
    spec: &PeerSpec,
    url: &str,
    doc: &Value,
    accept_protocol_v1: bool,
) -> Result<Vec<u8>, PinError> {
    let Some(expected) = &spec.fingerprint else {
        return Err(PinError::NoFingerprint);
    };
    // What the peer's document says is quoted in errors and logs: inert.
    let instance_id = doc
        .get("instanceId")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let instance_id = inert_text(instance_id);
    if instance_id != spec.instance_id {
        return Err(PinError::WrongInstance {
            url: url.to_string(),
            said: instance_id,
            expected: spec.instance_id.clone(),
        });
    }
    let version = doc
        .get("protocolVersion")
        .and_then(Value::as_str)
        .map(inert_text);
    let v1_ok = accept_protocol_v1 && version.as_deref() == Some(PROTOCOL_V1);
    if version.as_deref() != Some(PROTOCOL_VERSION) && !v1_ok {
        return Err(PinError::WrongProtocol {
            url: url.to_string(),
            version,
        });
    }
    let pem = doc
        .get("publicKey")
        .and_then(Value::as_str)
        .ok_or_else(|| PinError::NoPublicKey(url.to_string()))?;
    let der = identity::pem_der(pem).map_err(PinError::Key)?;
    let actual = fingerprint(&der);
    if actual != *expected {
        return Err(PinError::WrongFingerprint {
            url: url.to_string(),
            actual,
            expected: expected.clone(),
        });
    }
    Ok(der)
}

/// The key [`store_peer`] pins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    /// Exactly this key (SPKI DER): an admin's add with the key inline.
    /// A key the live peer rotated away from is refused
    /// ([`StorePeerError::KeyRetired`]), in the write's transaction; a
    /// removed peer added again (a new life) gets it.
    Key(Vec<u8>),
    /// This key, unless the peer has rotated away from it (it is among the
    /// peer's retired keys when the record is written: a rotation announced
    /// after the caller looked), in which case the key pinned then stays:
    /// an inline `[[peers]]` key, a fetched pin.
    Newest(Vec<u8>),
    /// The key pinned when the record is written: a `[[peers]]` entry that
    /// names the key pinned now, or one the peer has since rotated away
    /// from. Read in the write's transaction, so a rotation the peer
    /// announces meanwhile is kept.
    Current,
}

/// Why [`store_peer`] wrote nothing.
#[derive(Debug)]
pub enum StorePeerError {
    /// [`Pin::Key`] names a key the peer (live, not a new life) announced
    /// it rotated away from: its key id.
    KeyRetired(String),
    Store(StoreError),
}

impl fmt::Display for StorePeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorePeerError::KeyRetired(id) => {
                write!(f, "the peer announced it rotated away from key {id}")
            }
            StorePeerError::Store(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for StorePeerError {}

impl From<StoreError> for StorePeerError {
    fn from(e: StoreError) -> StorePeerError {
        StorePeerError::Store(e)
    }
}

impl From<StorePeerError> for ApplyError {
    fn from(e: StorePeerError) -> ApplyError {
        match e {
            StorePeerError::Store(e) => ApplyError::Storage(e),
            // `[[peers]]` pins with `Newest` or `Current`, never refused so.
            StorePeerError::KeyRetired(_) => {
                ApplyError::Storage(StoreError::retry_later(e.to_string()))
            }
        }
    }
}

/// How often [`store_peer`] starts again when the peer was removed between
/// its first look and its write (or has no key to keep).
const STORE_TRIES: usize = 3;

/// Stores a peer as active with the given key (keeping the status of a
/// peer that exists). The caller starts its delivery worker.
///
/// A removed peer added again starts as a new one: no admin grant, no
/// subscription and no queued message of its earlier life comes back,
/// whoever holds its key now ("a new peer is granted nothing"). A re-pin
/// of a peer still in place keeps them (a key rotation).
///
/// The record is written from the one read in the same transaction: a
/// status, a grant or a rotated key stored meanwhile is kept, never written
/// over with what was read before.
pub fn store_peer(
    store: &Store,
    spec: &PeerSpec,
    pin: Pin,
    keep_status: bool,
) -> Result<PeerRecord, StorePeerError> {
    let now = Timestamp::now().millis();
    // Added again (`peers add`), or given another key while removed (by a
    // `[[peers]]` entry, which keeps the status): a new holder either way.
    let reborn = |existing: &Option<PeerRecord>| {
        existing.as_ref().is_some_and(|p| {
            p.status == PeerStatus::Removed
                && (!keep_status
                    || matches!(&pin, Pin::Key(der) | Pin::Newest(der) if *der != p.public_key_der))
        })
    };
    for _ in 0..STORE_TRIES {
        let forgot = reborn(&store.peers().get(&spec.instance_id)?);
        if forgot {
            // Subscriptions first, so nothing more is queued; then what was
            // queued (in batches, outside the write below). A crash between
            // leaves the peer removed: the next add does both again.
            let subscriptions = store.peers().forget_subscriptions(&spec.instance_id)?;
            let queued = store.outbox().forget_queued(&spec.instance_id)?;
            tracing::info!(peer = %spec.instance_id, subscriptions, queued, "a removed peer added again, or given another key, starts with no grant, no subscription and nothing queued");
        }
        let mut key_retired = None;
        let written = store
            .peers()
            .upsert(&spec.instance_id, |existing, retired| {
                let new_life = reborn(&existing);
                // Removed since the look above: its earlier life is not forgotten.
                if new_life && !forgot {
                    return Ok(None);
                }
                let public_key_der = match (&pin, &existing) {
                    // A key the live peer left (a new life starts afresh):
                    // an admin's exact pin is refused; a fetched or
                    // configured one yields to the key it rotated to
                    // (announced, maybe, after the caller looked).
                    (Pin::Key(der) | Pin::Newest(der), Some(p))
                        if !new_life
                            && *der != p.public_key_der
                            && retired.get(&spec.instance_id, &key_id(der))?.as_ref()
                                == Some(der) =>
                    {
                        if matches!(pin, Pin::Key(_)) {
                            key_retired = Some(key_id(der));
                            return Ok(None);
                        }
                        tracing::warn!(peer = %spec.instance_id, refused_key_id = %key_id(der), pinned_key_id = %key_id(&p.public_key_der), "not pinning a key this peer rotated away from; keeping the key it rotated to");
                        p.public_key_der.clone()
                    }
                    (Pin::Key(der) | Pin::Newest(der), _) => der.clone(),
                    (Pin::Current, Some(p)) => p.public_key_der.clone(),
                    // Peer records are never deleted: a caller keeping the key
                    // has just read one.
                    (Pin::Current, None) => return Ok(None),
                };
                // A `[[peers]]` entry keeps a reborn peer removed, without the
                // admin's grants.
                let existing = if new_life {
                    existing.filter(|_| keep_status).map(|p| PeerRecord {
                        allow: Vec::new(),
                        ..p
                    })
                } else {
                    existing
                };
                Ok(Some(PeerRecord {
                    instance_id: spec.instance_id.clone(),
                    base_url: spec.base_url.clone(),
                    public_key_der,
                    status: match &existing {
                        Some(p) if keep_status => p.status,
                        _ => PeerStatus::Active,
                    },
                    added_at: existing.as_ref().map_or(now, |p| p.added_at),
                    updated_at: now,
                    // The admin's grants survive a re-pin; `[[peers]]` sets its own.
                    allow: existing
                        .as_ref()
                        .map(|p| p.allow.clone())
                        .unwrap_or_default(),
                    config_allow: match (&spec.config_allow, &existing) {
                        (Some(grants), _) => grants.clone(),
                        (None, Some(p)) => p.config_allow.clone(),
                        (None, None) => Vec::new(),
                    },
                }))
            })?;
        if let Some(key_id) = key_retired {
            return Err(StorePeerError::KeyRetired(key_id));
        }
        if let Some(record) = written {
            return Ok(record);
        }
    }
    Err(StorePeerError::Store(StoreError::retry_later(format!(
        "peer {:?} changed while it was being stored, {STORE_TRIES} times; try again",
        spec.instance_id
    ))))
}

/// Checks `[[peers]]` without applying anything: what a reload does before
/// it changes any setting.
pub fn check_config(own_instance_id: &str, peers: &[PeerConfig]) -> Result<(), PeerError> {
    for (i, p) in peers.iter().enumerate() {
        let entry = |error| PeerError::Entry {
            index: i,
            instance_id: p.instance_id.clone(),
            error: Box::new(error),
        };
        let spec = PeerSpec::from_config(p).map_err(entry)?;
        if spec.instance_id == own_instance_id {
            return Err(PeerError::EntryOwnId {
                index: i,
                instance_id: spec.instance_id,
            });
        }
        spec.inline_key().map_err(entry)?;
    }
    Ok(())
}

/// What applying `[[peers]]` to storage did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Peers stored now (each needs its delivery worker unless removed).
    pub stored: Vec<PeerRecord>,
    /// Peers given by fingerprint only, to fetch and pin in the background.
    pub pending: Vec<PeerSpec>,
}

/// Applies checked `[[peers]]` (see [`check_config`]) to storage: peers with
/// an inline key are stored now; those with only a fingerprint are
/// returned, to be fetched and pinned in the background. Peers not listed
/// (added at run time) are left alone, and so is a peer's status. A key the
/// peer has since rotated away from (it announced a new one) is not pinned
/// again: the newer key stays.
pub fn apply_config(store: &Store, peers: &[PeerConfig]) -> Result<Applied, ApplyError> {
    // A peer no longer listed loses the grants the file gave it.
    for stored in store.peers().list()? {
        if !stored.config_allow.is_empty()
            && !peers.iter().any(|p| p.instance_id == stored.instance_id)
        {
            store.peers().set_config_allow(&stored.instance_id, &[])?;
        }
    }
    let mut applied = Applied::default();
    for p in peers {
        let spec = PeerSpec::from_config(p)?;
        let stored = store.peers().get(&spec.instance_id)?;
        // The key id the config pins, from the key or the fingerprint.
        let inline = spec.inline_key()?;
        let configured_key_id = match &inline {
            Some(der) => Some(key_id(der)),
            None => spec.fingerprint.as_ref().map(|f| f[..16].to_string()),
        };
        if let Some(stored) = &stored
            && let Some(configured) = &configured_key_id
            && *configured != key_id(&stored.public_key_der)
            && store
                .rotations()
                .retired_peer_key(&spec.instance_id, configured)?
                .is_some()
        {
            tracing::warn!(peer = %spec.instance_id, configured_key_id = %configured, pinned_key_id = %key_id(&stored.public_key_der), "[[peers]] lists a key this peer rotated away from; keeping the newer key (update config.toml)");
            let record = store_peer(store, &spec, Pin::Current, true)?;
            applied.stored.push(record);
            continue;
        }
        match (inline, stored) {
            (Some(der), _) => {
                applied
                    .stored
                    .push(store_peer(store, &spec, Pin::Newest(der), true)?);
            }
            // Already pinned to the same key: only the URL may change.
            (None, Some(p)) if Some(fingerprint(&p.public_key_der)) == spec.fingerprint => {
                applied
                    .stored
                    .push(store_peer(store, &spec, Pin::Current, true)?);
            }
            (None, stored) => {
                // Not pinned yet: the grants apply now to a stored record
                // (if any), and again when the pin is stored.
                if stored.is_some() {
                    store.peers().set_config_allow(
                        &spec.instance_id,
                        spec.config_allow.as_deref().unwrap_or_default(),
                    )?;
                }
                applied.pending.push(spec)
            }
        }
    }
    Ok(applied)
}

/// Applying `[[peers]]` failed: a definition (not checked first) or storage.
#[derive(Debug)]
pub enum ApplyError {
    Peer(PeerError),
    Storage(StoreError),
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::Peer(e) => e.fmt(f),
            ApplyError::Storage(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ApplyError {}

impl From<PeerError> for ApplyError {
    fn from(e: PeerError) -> ApplyError {
        ApplyError::Peer(e)
    }
}

impl From<StoreError> for ApplyError {
    fn from(e: StoreError) -> ApplyError {
        ApplyError::Storage(e)
    }
}

/// A peer as the API and the admin CLI show it.
pub fn peer_json(p: &PeerRecord) -> Value {
    json!({
        "instanceId": p.instance_id,
        "baseUrl": p.base_url,
        "status": p.status.as_str(),
        "keyId": key_id(&p.public_key_der),
        "fingerprint": fingerprint(&p.public_key_der),
        "publicKey": identity::public_key_from_der(&p.public_key_der).ok().and_then(|k| identity::spki_pem(&k).ok()),
        "addedAt": p.added_at,
        "updatedAt": p.updated_at,
        "allow": p.granted(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_store(dir: &tempfile::TempDir) -> (Store, logbook_journal::store::Writer) {
        let keyring =
            std::sync::Arc::new(logbook_journal::keys::Keyring::from_secret(b"p".to_vec()));
        let fanout = logbook_journal::fanout::fanout();
        Store::open(&dir.path().join("j.redb"), keyring, fanout).unwrap()
    }

    fn beta_spec() -> PeerSpec {
        PeerSpec::new("beta", "http://127.0.0.1:9", "", &"ab".repeat(32)).unwrap()
    }

    /// A removed peer given another key, by `peers add` or by a `[[peers]]`
    /// entry, is a new holder: no admin grant, no subscription, nothing
    /// queued. Its own key under a `[[peers]]` entry keeps them all.
    #[test]
    fn a_removed_peer_given_another_key_starts_with_nothing() {
        use logbook_journal::store::Direction;
        let dir = tempfile::tempdir().unwrap();
        let (store, _writer) = test_store(&dir);
        let spec = beta_spec();
        let remove_after_use = |der: Vec<u8>| {
            store_peer(&store, &spec, Pin::Key(der), false).unwrap();
            store.peers().allow("beta", &[">".into()], 1).unwrap();
            store
                .peers()
                .subscribe(Direction::Inbound, "beta", "step.>")
                .unwrap();
            store.outbox().publish("step.done", "{}").unwrap();
            store
                .peers()
                .set_status("beta", PeerStatus::Removed, 2)
                .unwrap();
        };
        let state = || {
            let peer = store.peers().get("beta").unwrap().unwrap();
            let subs = store.peers().subscriptions().unwrap().len();
            let queued = store.outbox().counts("beta", 100).unwrap().waiting;
            (peer.status, peer.allow, subs, queued)
        };
        remove_after_use(vec![1]);
        store_peer(&store, &spec, Pin::Key(vec![1]), true).unwrap();
        assert_eq!(state(), (PeerStatus::Removed, vec![">".to_string()], 1, 1));
        store_peer(&store, &spec, Pin::Key(vec![2]), true).unwrap();
        assert_eq!(state(), (PeerStatus::Removed, vec![], 0, 0));
        remove_after_use(vec![3]);
        store_peer(&store, &spec, Pin::Key(vec![3]), false).unwrap();
        assert_eq!(state(), (PeerStatus::Active, vec![], 0, 0));
    }

    /// A status change and a re-store write the record as it is in their
    /// own transaction: grants given meanwhile (like a key the peer
    /// rotated to) are never written over with an older read. Two threads
    /// race; every grant must be there at the end.
    #[test]
    fn changes_made_meanwhile_survive_a_status_change_and_a_re_store() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _writer) = test_store(&dir);
        let spec = beta_spec();
        store_peer(&store, &spec, Pin::Key(vec![1]), false).unwrap();
        const GRANTS: usize = 200;
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for i in 0..GRANTS {
                    store
                        .peers()
                        .allow("beta", &[format!("g{i}.>")], 1)
                        .unwrap();
                }
            });
            for i in 0..GRANTS {
                let status = [PeerStatus::Suspended, PeerStatus::Active][i % 2];
                store
                    .peers()
                    .set_status("beta", status, 2)
                    .unwrap()
                    .unwrap();
                store_peer(&store, &spec, Pin::Current, true).unwrap();
            }
        });
        let peer = store.peers().get("beta").unwrap().unwrap();
        assert_eq!(peer.allow.len(), GRANTS, "grants lost: {:?}", peer.allow);
        assert_eq!(peer.public_key_der, vec![1]);
        assert_eq!(peer.status, PeerStatus::Active);
    }

    /// A `[[peers]]` key is applied after the peer rotated away from it
    /// (the rotation committed after the reload looked): the peer's new key
    /// stays pinned, not the one it left.
    #[test]
    fn a_config_key_the_peer_left_does_not_replace_its_new_one() {
        use logbook_journal::store::Rekey;
        let dir = tempfile::tempdir().unwrap();
        let (store, _writer) = test_store(&dir);
        let spec = beta_spec();
        let (k1, k2) = (vec![1], vec![2]);
        store_peer(&store, &spec, Pin::Newest(k1.clone()), true).unwrap();
        store
            .rotations()
            .repin_for_test(
                "beta",
                &Rekey {
                    message_id: uuid::Uuid::new_v4(),
                    old_der: k1.clone(),
                    new_der: k2.clone(),
                    old_key_id: key_id(&k1),
                },
            )
            .unwrap();
        let kept = store_peer(&store, &spec, Pin::Newest(k1.clone()), true).unwrap();
        assert_eq!(kept.public_key_der, k2, "the retired key came back");
        // An admin's exact pin of it is refused, and changes nothing.
        let refused = store_peer(&store, &spec, Pin::Key(k1.clone()), false);
        assert!(
            matches!(refused, Err(StorePeerError::KeyRetired(ref id)) if *id == key_id(&k1)),
            "{refused:?}"
        );
        assert_eq!(
            store.peers().get("beta").unwrap().unwrap().public_key_der,
            k2
        );
        // A key the peer never had is pinned as the file says.
        let k3 = vec![3];
        let pinned = store_peer(&store, &spec, Pin::Newest(k3.clone()), true).unwrap();
        assert_eq!(pinned.public_key_der, k3);
        // Removed, then added again with a fetched key: a new life gets the
        // key fetched, even one the earlier life left.
        store
            .peers()
            .set_status("beta", PeerStatus::Removed, 2)
            .unwrap();
        let reborn = store_peer(&store, &spec, Pin::Newest(k1.clone()), false).unwrap();
        assert_eq!(
            (reborn.public_key_der, reborn.status),
            (k1.clone(), PeerStatus::Active)
        );
        // The key pinned now, named again by hand, is no refusal.
        let again = store_peer(&store, &spec, Pin::Key(k1.clone()), false).unwrap();
        assert_eq!(again.public_key_der, k1);
    }

    #[test]
    fn config_grants_are_checked_and_normalized() {
        let entry = |allow: &[&str]| PeerConfig {
            instance_id: "beta".into(),
            base_url: "http://127.0.0.1:9".into(),
            public_key: String::new(),
            fingerprint: "ab".repeat(32),
            allow: allow.iter().map(|s| s.to_string()).collect(),
            witness: true,
        };
        let spec = PeerSpec::from_config(&entry(&[" step.> ", "step.>", ">"])).unwrap();
        assert_eq!(spec.config_allow.unwrap(), ["step.>", ">"]);
        let err = check_config("alpha", &[entry(&["step..x"])])
            .unwrap_err()
            .to_string();
        assert!(err.contains("allow"), "{err}");
        assert!(check_config("alpha", &[entry(&["a.>.b"])]).is_err());
    }

    #[test]
    fn base_urls_are_normalized() {
        assert_eq!(
            normalize_base_url(" http://h:1/p/ ").unwrap(),
            "http://h:1/p"
        );
        for bad in ["ftp://h", "http://h/?q", "http://h/#f", "nope"] {
            assert!(normalize_base_url(bad).is_err(), "{bad}");
        }
    }
}
