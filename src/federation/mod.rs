//! Federation: signed event pub/sub between logbook instances.
//!
//! [`Federation`] holds this instance's identity, the HTTP client for peers
//! and one delivery worker per peer. The pieces: [`identity`] (key pair and
//! instance id), [`message`] (wire shapes and signatures), [`peers`] (adding
//! and pinning peers), [`outbox`] (delivery with retries), [`inbox`]
//! (verifying and storing what peers send), [`rotation`] (changing our key
//! and learning a peer's new key) and [`routes`] (the HTTP API).
//! All federation state lives in the store (`journal::store`, federation
//! tables); outbox rows for journal events are written in the append's own
//! transaction.

pub mod identity;
pub mod inbox;
mod intake;
pub mod message;
pub mod outbox;
pub mod peers;
pub mod rotation;
pub mod routes;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, FederationConfig};
use identity::{Identity, OwnKey};
use logbook_journal::store::{AsyncStore, PeerStatus, Store, StoreError};

pub struct Federation {
    pub identity: Identity,
    pub store: AsyncStore,
    pub config: FederationConfig,
    pub client: reqwest::Client,
    pub limiter: inbox::RateLimiter,
    /// `[federation] peer_bytes_per_sec` and `peer_bytes_burst`.
    pub byte_limiter: inbox::RateLimiter,
    /// `[federation] incoming_concurrency` permits for `/incoming/*`.
    pub(crate) incoming: Arc<tokio::sync::Semaphore>,
    /// Each client address's share of those permits.
    pub(crate) incoming_per_client: Arc<intake::PerClient>,
    /// Where the key files live (current, staged and retired keys).
    pub data_dir: PathBuf,
    workers: Mutex<HashMap<String, JoinHandle<()>>>,
    /// Background pinning of `[[peers]]` given by fingerprint only: at most
    /// one task per peer, with the definition it is pinning.
    pinning: Mutex<HashMap<String, (peers::PeerSpec, JoinHandle<()>)>>,
    shutdown: CancellationToken,
}

/// A failure in federation work that touched storage: its text is for
/// logs and the admin's answer.
#[derive(Debug)]
pub struct FedError(pub String);

impl From<StoreError> for FedError {
    fn from(e: StoreError) -> FedError {
        FedError(e.to_string())
    }
}

impl From<String> for FedError {
    fn from(e: String) -> FedError {
        FedError(e)
    }
}

impl std::fmt::Display for FedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<FedError> for String {
    fn from(e: FedError) -> String {
        e.0
    }
}

impl Federation {
    /// Loads (or creates) the identity, applies `[[peers]]`, and starts a
    /// delivery worker per peer. Workers stop when `shutdown` is cancelled.
    pub async fn start(
        config: &Config,
        store: AsyncStore,
        shutdown: CancellationToken,
    ) -> Result<Arc<Federation>, String> {
        let fed_config = config.federation.clone();
        validate(&fed_config)?;
        store.set_peer_quota(fed_config.peer_quota_bytes);
        let room = config
            .limits
            .max_body_bytes
            .saturating_add(intake::INCOMING_EXTRA_BYTES);
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
            .run(move |s| -> Result<_, FedError> {
                rotation::recover(&dir, s)?;
                Ok(Identity::load(&dir, &identity_config)?)
            })
            .await
            .map_err(|e| format!("loading the federation identity: {}", e.0))?;
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
            limiter: inbox::RateLimiter::new(
                fed_config.rate_limit_per_sec,
                fed_config.rate_limit_burst,
            ),
            byte_limiter: inbox::RateLimiter::with_rates(
                fed_config.peer_bytes_per_sec as f64,
                fed_config.peer_bytes_burst as f64,
            ),
            incoming: intake::semaphore(fed_config.incoming_concurrency),
            incoming_per_client: intake::PerClient::new(fed_config.incoming_concurrency),
            identity,
            store,
            data_dir,
            config: fed_config,
            client,
            workers: Mutex::new(HashMap::new()),
            pinning: Mutex::new(HashMap::new()),
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

    /// The key to sign with for `peer`: the key the peer pins for us. That
    /// is our current key, unless an announcement of a newer key is still
    /// undelivered to the peer; then it is the key that announcement is
    /// signed with, and the announcement's outbox seq is returned too
    /// (nothing after it may be signed with that key).
    pub fn signing_key_for(
        &self,
        store: &Store,
        peer: &str,
    ) -> Result<(Arc<OwnKey>, Option<u64>), String> {
        match store.rotations().pending(peer).map_err(|e| e.to_string())? {
            None => Ok((self.identity.current(), None)),
            Some((seq, old_key_id)) => match self.identity.retired(&old_key_id) {
                Some(key) => Ok((key, Some(seq))),
                None => Err(format!(
                    "the retired key {old_key_id}, which {peer} still pins, is missing from {}/",
                    identity::RETIRED_KEYS_DIR
                )),
            },
        }
    }

    /// Starts the delivery worker for `peer` unless one is running.
    pub fn ensure_worker(self: &Arc<Self>, peer: &str) {
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

    /// Waits for the workers after shutdown was cancelled. Whatever a worker
    /// was sending stays queued and is sent again on the next start.
    pub async fn stop(&self) {
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

/// Most bytes read from a peer's answer (acks, problem details, the
/// identity document). A batch of acks stays well below: an ack is under
/// 1 KiB and a batch holds at most [`inbox::MAX_BATCH`] of them.
pub const MAX_PEER_RESPONSE: usize = 1024 * 1024;

/// Reads a peer's answer as JSON, refusing one larger than
/// [`MAX_PEER_RESPONSE`]: a hostile or broken peer cannot make us buffer
/// without bound.
pub async fn read_peer_json(mut response: reqwest::Response) -> Result<serde_json::Value, String> {
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

fn validate(c: &FederationConfig) -> Result<(), String> {
    if !c.instance_id.is_empty() {
        identity::validate_instance_id(&c.instance_id)
            .map_err(|e| format!("federation.instance_id: {e}"))?;
    }
    let positive = [
        ("timestamp_window_secs", c.timestamp_window_secs),
        ("max_attempts", u64::from(c.max_attempts)),
        ("max_age_secs", c.max_age_secs),
        ("retry_initial_ms", c.retry_initial_ms),
        ("retry_max_secs", c.retry_max_secs),
        ("batch_size", c.batch_size as u64),
        ("send_timeout_secs", c.send_timeout_secs),
        ("rate_limit_per_sec", u64::from(c.rate_limit_per_sec)),
        ("rate_limit_burst", u64::from(c.rate_limit_burst)),
        (
            "max_subscriptions_per_peer",
            c.max_subscriptions_per_peer as u64,
        ),
        ("incoming_concurrency", c.incoming_concurrency as u64),
        ("incoming_max_body_bytes", c.incoming_max_body_bytes as u64),
        ("peer_quota_bytes", c.peer_quota_bytes),
        ("peer_bytes_per_sec", c.peer_bytes_per_sec),
        ("peer_bytes_burst", c.peer_bytes_burst),
    ];
    for (key, value) in positive {
        if value == 0 {
            return Err(format!("federation.{key} must be positive"));
        }
    }
    if c.batch_size > inbox::MAX_BATCH {
        return Err(format!(
            "federation.batch_size must be at most {}",
            inbox::MAX_BATCH
        ));
    }
    Ok(())
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
