//! Peers ("connections"): adding them from `[[peers]]` or the HTTP API,
//! pinning their public keys, and changing their status. A key is pinned
//! either as given, or fetched from the peer's `/instance` and accepted only
//! if its fingerprint equals the one the admin was given out of band.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::identity::{self, fingerprint, key_id};
use super::message::{PROTOCOL_V1, PROTOCOL_VERSION};
use super::{FedError, Federation};
use crate::config::PeerConfig;
use logbook_journal::event::Timestamp;
use logbook_journal::registry::TypePattern;
use logbook_journal::store::{PeerRecord, PeerStatus, Store, inert_text};

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

impl PeerSpec {
    pub fn new(
        instance_id: &str,
        base_url: &str,
        public_key: &str,
        fingerprint: &str,
    ) -> Result<PeerSpec, String> {
        identity::validate_instance_id(instance_id)?;
        let fingerprint = fingerprint.trim().to_ascii_lowercase();
        if !fingerprint.is_empty() && logbook_base::hex::decode_array::<32>(&fingerprint).is_none()
        {
            return Err(
                "fingerprint must be 64 hex digits: the SHA-256 of the peer's SPKI DER".into(),
            );
        }
        let public_key = public_key.trim();
        if public_key.is_empty() && fingerprint.is_empty() {
            return Err(
                "give the peer's publicKey, or the fingerprint to pin after fetching its key"
                    .into(),
            );
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
    pub fn from_config(p: &PeerConfig) -> Result<PeerSpec, String> {
        let mut spec = PeerSpec::new(&p.instance_id, &p.base_url, &p.public_key, &p.fingerprint)?;
        spec.config_allow = Some(parse_grants(&p.allow)?);
        Ok(spec)
    }

    /// The key given inline, checked against the fingerprint if both are given.
    fn inline_key(&self) -> Result<Option<Vec<u8>>, String> {
        let Some(pem) = &self.public_key else {
            return Ok(None);
        };
        let der = identity::spki_der(&identity::public_key_from_pem(pem)?)?;
        if let Some(expected) = &self.fingerprint
            && fingerprint(&der) != *expected
        {
            return Err(format!(
                "the public key's fingerprint is {}, not the pinned {expected}",
                fingerprint(&der)
            ));
        }
        Ok(Some(der))
    }
}

/// Checks grant patterns and returns them normalized, without repeats.
pub fn parse_grants(patterns: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for p in patterns {
        let p = TypePattern::parse(p.trim())
            .map_err(|e| format!("allow: {e}"))?
            .as_string();
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

/// `http(s)://host[:port][/prefix]`, without a trailing slash.
pub fn normalize_base_url(text: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(text.trim()).map_err(|e| format!("base URL {text:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "base URL {text:?} must be an http:// or https:// URL with a host"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "base URL {text:?} must not have a query or fragment"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// Fetches the peer's identity document and returns its key's SPKI DER if
/// the instance id and fingerprint are the expected ones.
pub async fn fetch_and_pin(fed: &Federation, spec: &PeerSpec) -> Result<Vec<u8>, String> {
    let Some(expected) = &spec.fingerprint else {
        return Err("no fingerprint to pin".into());
    };
    let url = format!("{}{INSTANCE_PATH}", spec.base_url);
    let response = fed
        .client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("fetching {url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("fetching {url}: HTTP {}", response.status()));
    }
    let doc: Value = super::read_peer_json(response)
        .await
        .map_err(|e| format!("reading {url}: {e}"))?;
    // What the peer's document says is quoted in errors and logs: inert.
    let instance_id = doc
        .get("instanceId")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let instance_id = inert_text(instance_id);
    if instance_id != spec.instance_id {
        return Err(format!(
            "{url} says it is {instance_id:?}, not {:?}",
            spec.instance_id
        ));
    }
    let version = doc
        .get("protocolVersion")
        .and_then(Value::as_str)
        .map(inert_text);
    let v1_ok = fed.config.accept_protocol_v1 && version.as_deref() == Some(PROTOCOL_V1);
    if version.as_deref() != Some(PROTOCOL_VERSION) && !v1_ok {
        return Err(format!(
            "{url} speaks protocol {version:?}, not {PROTOCOL_VERSION:?}"
        ));
    }
    let pem = doc
        .get("publicKey")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{url} has no publicKey"))?;
    let der = identity::spki_der(&identity::public_key_from_pem(pem)?)?;
    let actual = fingerprint(&der);
    if actual != *expected {
        return Err(format!(
            "the key served by {url} has fingerprint {actual}, not the pinned {expected}: refusing it"
        ));
    }
    Ok(der)
}

/// Stores a peer as active with the given key (keeping the status of a
/// peer that exists), and starts its worker.
pub fn store_peer(
    fed: &Arc<Federation>,
    store: &Store,
    spec: &PeerSpec,
    der: Vec<u8>,
    keep_status: bool,
) -> Result<PeerRecord, String> {
    let now = Timestamp::now().millis();
    let existing = store
        .peers()
        .get(&spec.instance_id)
        .map_err(|e| e.to_string())?;
    let record = PeerRecord {
        instance_id: spec.instance_id.clone(),
        base_url: spec.base_url.clone(),
        public_key_der: der,
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
    };
    store.peers().put(&record).map_err(|e| e.to_string())?;
    if record.status != PeerStatus::Removed {
        fed.ensure_worker(&record.instance_id);
    }
    Ok(record)
}

/// Adds or updates a peer from the HTTP API: inline key, or fetch-and-pin.
pub async fn add(fed: &Arc<Federation>, spec: PeerSpec) -> Result<PeerRecord, AddError> {
    if spec.instance_id == fed.identity.instance_id {
        return Err(AddError::Invalid(
            "a peer cannot have this instance's own id".into(),
        ));
    }
    let der = match spec.inline_key().map_err(AddError::Invalid)? {
        Some(der) => der,
        None => fetch_and_pin(fed, &spec).await.map_err(AddError::Pin)?,
    };
    let fed2 = fed.clone();
    fed.store
        .run(move |store| -> Result<_, FedError> {
            Ok(store_peer(&fed2, store, &spec, der, false)?)
        })
        .await
        .map_err(|e| AddError::Storage(e.0))
}

#[derive(Debug)]
pub enum AddError {
    Invalid(String),
    Pin(String),
    Storage(String),
}

/// Checks `[[peers]]` without applying anything: what a reload does before
/// it changes any setting.
pub fn check_config(own_instance_id: &str, peers: &[PeerConfig]) -> Result<(), String> {
    for (i, p) in peers.iter().enumerate() {
        let spec =
            PeerSpec::from_config(p).map_err(|e| format!("peers[{i}] ({}): {e}", p.instance_id))?;
        if spec.instance_id == own_instance_id {
            return Err(format!(
                "peers[{i}]: {} is this instance's own id",
                spec.instance_id
            ));
        }
        spec.inline_key()
            .map_err(|e| format!("peers[{i}] ({}): {e}", p.instance_id))?;
    }
    Ok(())
}

/// Applies `[[peers]]` (at start and on reload): peers with an inline key are
/// stored now; those with only a fingerprint are returned, to be fetched and
/// pinned in the background. Peers not listed (added at run time) are left
/// alone, and so is a peer's status. A key the peer has since rotated away
/// from (it announced a new one) is not pinned again: the newer key stays.
pub async fn apply_config(
    fed: &Arc<Federation>,
    peers: &[PeerConfig],
) -> Result<Vec<PeerSpec>, String> {
    check_config(&fed.identity.instance_id, peers)?;
    let (fed2, peers) = (fed.clone(), peers.to_vec());
    fed.store
        .run(move |store| -> Result<_, FedError> { Ok(apply_stored(&fed2, store, &peers)?) })
        .await
        .map_err(String::from)
}

/// The storage part of [`apply_config`].
fn apply_stored(
    fed: &Arc<Federation>,
    store: &Store,
    peers: &[PeerConfig],
) -> Result<Vec<PeerSpec>, String> {
    // A peer no longer listed loses the grants the file gave it.
    for stored in store.peers().list().map_err(|e| e.to_string())? {
        if !stored.config_allow.is_empty()
            && !peers.iter().any(|p| p.instance_id == stored.instance_id)
        {
            store
                .peers()
                .set_config_allow(&stored.instance_id, &[])
                .map_err(|e| e.to_string())?;
        }
    }
    let mut pending = Vec::new();
    for p in peers {
        let spec = PeerSpec::from_config(p)?;
        let stored = store
            .peers()
            .get(&spec.instance_id)
            .map_err(|e| e.to_string())?;
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
                .retired_peer_key(&spec.instance_id, configured)
                .map_err(|e| e.to_string())?
                .is_some()
        {
            tracing::warn!(peer = %spec.instance_id, configured_key_id = %configured, pinned_key_id = %key_id(&stored.public_key_der), "[[peers]] lists a key this peer rotated away from; keeping the newer key (update config.toml)");
            store_peer(fed, store, &spec, stored.public_key_der.clone(), true)?;
            continue;
        }
        match (inline, stored) {
            (Some(der), _) => {
                store_peer(fed, store, &spec, der, true)?;
            }
            // Already pinned to the same key: only the URL may change.
            (None, Some(p)) if Some(fingerprint(&p.public_key_der)) == spec.fingerprint => {
                store_peer(fed, store, &spec, p.public_key_der, true)?;
            }
            (None, stored) => {
                // Not pinned yet: the grants apply now to a stored record
                // (if any), and again when the pin is stored.
                if stored.is_some() {
                    store
                        .peers()
                        .set_config_allow(
                            &spec.instance_id,
                            spec.config_allow.as_deref().unwrap_or_default(),
                        )
                        .map_err(|e| e.to_string())?;
                }
                pending.push(spec)
            }
        }
    }
    Ok(pending)
}

/// Keeps trying to fetch and pin a configured peer's key until it works or
/// the daemon stops. At most one such task runs per peer: a reload that
/// lists the peer unchanged leaves the running task alone, and a changed
/// definition replaces it.
pub fn spawn_pin_from_config(fed: Arc<Federation>, spec: PeerSpec) {
    let mut pinning = fed.pinning.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((running, handle)) = pinning.get(&spec.instance_id)
        && !handle.is_finished()
    {
        if *running == spec {
            return;
        }
        // Abort takes effect at an await: a pin being stored is never cut short.
        handle.abort();
    }
    let id = spec.instance_id.clone();
    let handle = tokio::spawn(pin_from_config(fed.clone(), spec.clone()));
    pinning.insert(id, (spec, handle));
}

async fn pin_from_config(fed: Arc<Federation>, spec: PeerSpec) {
    let mut delay = Duration::from_secs(1);
    loop {
        match fetch_and_pin(&fed, &spec).await {
            Ok(der) => {
                let (fed2, spec2) = (fed.clone(), spec.clone());
                let stored = fed
                    .store
                    .run(move |store| -> Result<_, FedError> {
                        Ok(store_peer(&fed2, store, &spec2, der, true)?)
                    })
                    .await;
                match stored {
                    Ok(_) => tracing::info!(peer = %spec.instance_id, "pinned the peer's key"),
                    Err(e) => {
                        tracing::error!(peer = %spec.instance_id, error = %e, "storing the peer")
                    }
                }
                return;
            }
            Err(e) => {
                tracing::warn!(peer = %spec.instance_id, url = %spec.base_url, error = ?e, "cannot pin the peer's key yet")
            }
        }
        tokio::select! {
            () = fed.shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(60));
    }
}

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
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
    use tokio::net::TcpStream;

    #[test]
    fn config_grants_are_checked_and_normalized() {
        let entry = |allow: &[&str]| PeerConfig {
            instance_id: "beta".into(),
            base_url: "http://127.0.0.1:9".into(),
            public_key: String::new(),
            fingerprint: "ab".repeat(32),
            allow: allow.iter().map(|s| s.to_string()).collect(),
        };
        let spec = PeerSpec::from_config(&entry(&[" step.> ", "step.>", ">"])).unwrap();
        assert_eq!(spec.config_allow.unwrap(), ["step.>", ">"]);
        let err = check_config("alpha", &[entry(&["step..x"])]).unwrap_err();
        assert!(err.contains("allow"), "{err}");
        assert!(check_config("alpha", &[entry(&["a.>.b"])]).is_err());
    }

    /// Peers whose key a background task is still trying to pin.
    fn pinning_in_progress(fed: &Federation) -> Vec<String> {
        let pinning = fed.pinning.lock().unwrap_or_else(|e| e.into_inner());
        pinning
            .iter()
            .filter(|(_, (_, handle))| !handle.is_finished())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The request line of the next connection to the fake peer.
    async fn next_request(
        connections: &mut tokio::sync::mpsc::UnboundedReceiver<TcpStream>,
    ) -> (String, BufReader<TcpStream>) {
        let stream = tokio::time::timeout(Duration::from_secs(30), connections.recv())
            .await
            .expect("no pinning request came")
            .expect("the fake peer stopped");
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        (line, reader)
    }

    /// Reloads that list the same fingerprint-only peer do not start another
    /// pinning task; a changed definition replaces (aborts) the running one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_pinning_task_per_peer_across_reloads() {
        // A peer that accepts connections and never answers: each pinning
        // task waits on its one request, so every request seen is a task.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, mut connections) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = tx.send(stream);
            }
        });

        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::config::Config::embedded_default();
        config.server.data_dir = dir.path().to_path_buf();
        config.federation.instance_id = "alpha".into();
        config.federation.send_timeout_secs = 120;
        let listed = |base_url: String| crate::config::PeerConfig {
            instance_id: "beta".into(),
            base_url,
            public_key: String::new(),
            fingerprint: "ab".repeat(32),
            allow: Vec::new(),
        };
        config.peers = vec![listed(format!("http://127.0.0.1:{port}"))];
        let keyring = Arc::new(logbook_journal::keys::Keyring::from_secret(b"k".to_vec()));
        let (fanout, _) = tokio::sync::broadcast::channel(16);
        let (store, writer) =
            logbook_journal::store::Store::open(&dir.path().join("store.redb"), keyring, fanout)
                .unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let fed = Federation::start(
            &config,
            logbook_journal::store::AsyncStore::new(store),
            shutdown.clone(),
        )
        .await
        .unwrap();
        let (first, mut first_conn) = next_request(&mut connections).await;
        assert!(
            first.starts_with(&format!("GET {INSTANCE_PATH} ")),
            "{first}"
        );

        // Reloads as `reload::reload` applies them, with the peer unchanged.
        let reload = |peers: Vec<crate::config::PeerConfig>| {
            let fed = fed.clone();
            async move {
                for spec in apply_config(&fed, &peers).await.unwrap() {
                    spawn_pin_from_config(fed.clone(), spec);
                }
            }
        };
        for _ in 0..5 {
            reload(config.peers.clone()).await;
        }
        assert_eq!(pinning_in_progress(&fed), ["beta"]);
        // The base URL changes: the next request is the replacement's, and
        // the first task's connection is closed (it was aborted).
        reload(vec![listed(format!("http://127.0.0.1:{port}/v2"))]).await;
        let (next, _conn) = next_request(&mut connections).await;
        assert!(
            next.starts_with(&format!("GET /v2{INSTANCE_PATH} ")),
            "a second task for the unchanged peer ran: {next}"
        );
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), first_conn.read_to_end(&mut rest))
            .await
            .expect("the replaced task still holds its request open")
            .unwrap();
        assert!(
            connections.try_recv().is_err(),
            "more pinning requests than tasks"
        );
        assert_eq!(pinning_in_progress(&fed), ["beta"]);

        shutdown.cancel();
        fed.stop().await;
        drop(fed);
        tokio::task::spawn_blocking(move || writer.shutdown())
            .await
            .unwrap();
    }
}
