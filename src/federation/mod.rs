//! Federation at run time: signed event pub/sub between logbook instances.
//!
//! The protocol (identity, messages, the inbox and outbox logic, peers,
//! rotation) is the `logbook-federation` crate; this module runs it.
//! [`Federation`] holds this instance's [`Instance`] (identity, settings,
//! inbox rate limits), the store, the HTTP client for peers and one
//! delivery worker per peer: [`outbox`] sends over HTTP, [`peers`] fetches
//! and pins keys, [`admission`] holds the permits of `/incoming/*`. The
//! routes are in `http::federation`; nothing here knows them.
//! All federation state lives in the store (federation tables); outbox
//! rows for journal events are written in the append's own transaction.

pub(crate) mod admission;
pub(crate) mod outbox;
pub(crate) mod peer_logs;
pub(crate) mod peers;
pub(crate) mod witness_api;
pub(crate) mod witness_health;
pub(crate) mod witnessing;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use logbook_base::reloadable::Reloadable;
use logbook_federation::config::{FederationConfig, INCOMING_EXTRA_BYTES};
use logbook_federation::identity::Identity;
use logbook_federation::rotation::{self, Rotated, RotationError};
use logbook_federation::{Instance, SigningKeyError};
use logbook_journal::store::{AsyncStore, PeerStatus, StoreError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

pub(crate) struct Federation {
    /// Identity, `[federation]` settings and the inbox's rate limits.
    pub(crate) instance: Instance,
    pub(crate) store: AsyncStore,
    pub(crate) client: reqwest::Client,
    /// `[federation] incoming_concurrency` permits for `/incoming/*`.
    pub(crate) incoming: Arc<tokio::sync::Semaphore>,
    /// Each client address's share of those permits.
    pub(crate) incoming_per_client: Arc<logbook_base::per_client::PerClient>,
    /// Where the key files live (current, staged and retired keys).
    data_dir: PathBuf,
    workers: Mutex<HashMap<String, JoinHandle<()>>>,
    /// Background pinning of `[[peers]]` given by fingerprint only: at most
    /// one task per peer, with the definition it is pinning.
    pinning: Mutex<HashMap<String, (logbook_federation::peers::PeerSpec, JoinHandle<()>)>>,
    /// The tasks that send our heads checkpoints to witnesses.
    pub(crate) witnessing: witnessing::Witnessing,
    /// The config's part in who witnesses us (`[[peers]] witness`,
    /// `[[witnesses]]`), swapped on reload.
    pub(crate) witness_settings: Reloadable<witnessing::WitnessSettings>,
    /// The heads log the witnesses cosign, once `witnessing::start` ran.
    heads: std::sync::OnceLock<witness_api::HeadsLog>,
    shutdown: CancellationToken,
}

/// Loading the identity at start: a rotation to recover, or the key files.
enum StartError {
    Rotation(RotationError),
    Key(logbook_federation::identity::KeyError),
}

impl From<StoreError> for StartError {
    fn from(e: StoreError) -> StartError {
        StartError::Rotation(RotationError::Storage(e))
    }
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Rotation(e) => e.fmt(f),
            StartError::Key(e) => e.fmt(f),
        }
    }
}

impl Federation {
    /// Loads (or creates) the identity, applies `[[peers]]`, and starts a
    /// delivery worker per peer. Workers stop when `shutdown` is cancelled.
    pub(crate) async fn start(
        config: &Config,
        store: AsyncStore,
        shutdown: CancellationToken,
    ) -> Result<Arc<Federation>, String> {
        let fed_config = config.federation.clone();
        fed_config.validate().map_err(|e| e.to_string())?;
        store.set_peer_quota(fed_config.peer_quota_bytes);
        let room = config
            .limits
            .max_body_bytes
            .saturating_add(INCOMING_EXTRA_BYTES);
        if fed_config.incoming_max_body_bytes < room {
            tracing::warn!(
                incoming_max_body_bytes = fed_config.incoming_max_body_bytes,
                needed = room,
                "federation.incoming_max_body_bytes is below limits.max_body_bytes + 16 KiB: peers cannot deliver events appended at the size limit"
            );
        }
        // reqwest is built without a default TLS provider; use ring (no aws-lc).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let data_dir = config.server.data_dir.clone();
        let identity_config = fed_config.clone();
        let dir = data_dir.clone();
        let (identity, created) = store
            .run(move |s| -> Result<_, StartError> {
                rotation::recover(&dir, s).map_err(StartError::Rotation)?;
                Identity::load(&dir, &identity_config).map_err(StartError::Key)
            })
            .await
            .map_err(|e| format!("loading the federation identity: {e}"))?;
        let key = identity.current();
        if created.key {
            tracing::info!(key_id = %key.key_id, "generated a federation key pair in the data dir (mode 0600)");
        }
        tracing::info!(
            instance_id = %identity.instance_id,
            key_id = %key.key_id,
            fingerprint = %key.fingerprint,
            "federation identity"
        );
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(fed_config.send_timeout_secs))
            .timeout(Duration::from_secs(fed_config.send_timeout_secs))
            // Signed messages go to the peer's pinned base URL and nowhere else.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("building the federation HTTP client: {e}"))?;
        let federation = Arc::new(Federation {
            incoming: admission::semaphore(fed_config.incoming_concurrency),
            incoming_per_client: admission::per_client(fed_config.incoming_concurrency),
            instance: Instance::new(identity, fed_config),
            store,
            data_dir,
            client,
            workers: Mutex::new(HashMap::new()),
            pinning: Mutex::new(HashMap::new()),
            witnessing: witnessing::Witnessing::default(),
            witness_settings: Reloadable::new(witnessing::settings(config)?),
            heads: std::sync::OnceLock::new(),
            shutdown,
        });
        let pending = peers::apply_config(&federation, &config.peers).await?;
        let peers = federation
            .store
            .run(|s| {
                s.peers().refresh_routes()?;
                s.peers().list()
            })
            .await
            .map_err(|e| e.to_string())?;
        for peer in peers {
            if peer.status != PeerStatus::Removed {
                federation.ensure_worker(&peer.instance_id);
            }
        }
        for peer in pending {
            peers::spawn_pin_from_config(federation.clone(), peer);
        }
        Ok(federation)
    }

    /// This instance's `[federation]` settings.
    pub(crate) fn config(&self) -> &FederationConfig {
        &self.instance.config
    }

    /// This instance's identity.
    pub(crate) fn identity(&self) -> &Identity {
        &self.instance.identity
    }

    /// Starts the delivery worker for `peer` unless one is running.
    pub(crate) fn ensure_worker(self: &Arc<Self>, peer: &str) {
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        if workers.get(peer).is_some_and(|h| !h.is_finished()) {
            return;
        }
        let handle = tokio::spawn(outbox::run(
            self.clone(),
            peer.to_string(),
            self.shutdown.clone(),
        ));
        workers.insert(peer.to_string(), handle);
    }

    /// Brings the witnessing tasks in line with the peers and settings now
    /// (after a reload, an admin switch or a peer change).
    pub(crate) async fn resupervise_witnesses(self: &Arc<Self>) {
        match witnessing::targets(self).await {
            Ok(targets) => witnessing::supervise(self, targets),
            Err(e) => tracing::error!(error = %e, "listing the witnesses"),
        }
    }

    /// Rotates this instance's key and queues the announcements
    /// (`logbook-federation`'s `rotation`). Generating the key takes a few
    /// seconds. Callers serialize rotations (the admin socket holds its
    /// change lock).
    pub(crate) async fn rotate(self: &Arc<Self>) -> Result<Rotated, RotationError> {
        let fed = self.clone();
        self.store
            .run(move |store| rotation::rotate(&fed.instance, &fed.data_dir, store))
            .await
    }

    /// Waits for the workers after shutdown was cancelled. Whatever a worker
    /// was sending stays queued and is sent again on the next start.
    pub(crate) async fn stop(&self) {
        let handles: Vec<_> = self
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, h)| h)
            .collect();
        for handle in handles {
            if tokio::time::timeout(Duration::from_secs(2), handle)
                .await
                .is_err()
            {
                tracing::warn!("a federation worker did not stop in time");
            }
        }
    }
}

/// A failure of federation work in the runtime: its text is for logs.
#[derive(Debug)]
pub(crate) enum WorkError {
    Storage(StoreError),
    SigningKey(SigningKeyError),
    /// A task doing the work panicked or was cancelled.
    Task(tokio::task::JoinError),
}

impl From<StoreError> for WorkError {
    fn from(e: StoreError) -> WorkError {
        WorkError::Storage(e)
    }
}

impl From<SigningKeyError> for WorkError {
    fn from(e: SigningKeyError) -> WorkError {
        WorkError::SigningKey(e)
    }
}

impl std::fmt::Display for WorkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkError::Storage(e) => e.fmt(f),
            WorkError::SigningKey(e) => e.fmt(f),
            WorkError::Task(e) => e.fmt(f),
        }
    }
}

/// Most bytes read from a peer's answer (acks, problem details, the
/// identity document). A batch of acks stays well below: an ack is under
/// 1 KiB and a batch holds at most
/// [`MAX_BATCH`](logbook_federation::inbox::MAX_BATCH) of them.
pub(crate) const MAX_PEER_RESPONSE: usize = 1024 * 1024;

/// Reads a peer's answer as JSON, refusing one larger than
/// [`MAX_PEER_RESPONSE`]: a hostile or broken peer cannot make us buffer
/// without bound.
pub(crate) async fn read_peer_json(
    mut response: reqwest::Response,
) -> Result<serde_json::Value, String> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_PEER_RESPONSE as u64)
    {
        return Err(format!(
            "the answer is larger than {MAX_PEER_RESPONSE} bytes"
        ));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
    {
        if body.len() + chunk.len() > MAX_PEER_RESPONSE {
            return Err(format!(
                "the answer is larger than {MAX_PEER_RESPONSE} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| format!("the answer is not JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(body: Vec<u8>) -> reqwest::Response {
        reqwest::Response::from(axum::http::Response::new(body))
    }

    #[tokio::test]
    async fn peer_answers_are_read_up_to_the_cap() {
        let ok = format!("[{}0]", "0,".repeat(1000)).into_bytes();
        assert!(read_peer_json(response(ok)).await.unwrap().is_array());
        // Just over the cap: refused whether or not a length is declared.
        let mut big = vec![b' '; MAX_PEER_RESPONSE];
        big.extend_from_slice(b"{}");
        let err = read_peer_json(response(big)).await.unwrap_err();
        assert!(err.contains("larger than"), "{err}");
        let stream = futures_util::stream::iter(
            (0..(MAX_PEER_RESPONSE / 4096 + 2)).map(|_| Ok::<_, std::io::Error>(vec![b' '; 4096])),
        );
        let chunked = reqwest::Response::from(axum::http::Response::new(
            reqwest::Body::wrap_stream(stream),
        ));
        let err = read_peer_json(chunked).await.unwrap_err();
        assert!(err.contains("larger than"), "{err}");
    }
}
