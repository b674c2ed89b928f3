//! Federation: signed event pub/sub between logbook instances.
//!
//! [`Federation`] holds this instance's identity, the HTTP client for peers
//! and one delivery worker per peer. The pieces: [`identity`] (key pair and
//! instance id), [`message`] (wire shapes and signatures), [`peers`] (adding
//! and pinning peers), [`outbox`] (delivery with retries), [`inbox`]
//! (verifying and storing what peers send) and [`routes`] (the HTTP API).
//! All federation state lives in the store (`journal::store`, federation
//! tables); outbox rows for journal events are written in the append's own
//! transaction.

pub mod identity;
pub mod inbox;
pub mod message;
pub mod outbox;
pub mod peers;
pub mod routes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, FederationConfig};
use crate::journal::store::{PeerStatus, Store};
use identity::Identity;

pub struct Federation {
    pub identity: Identity,
    pub store: Store,
    pub config: FederationConfig,
    pub client: reqwest::Client,
    pub limiter: inbox::RateLimiter,
    workers: Mutex<HashMap<String, JoinHandle<()>>>,
    shutdown: CancellationToken,
}

impl Federation {
    /// Loads (or creates) the identity, applies `[[peers]]`, and starts a
    /// delivery worker per peer. Workers stop when `shutdown` is cancelled.
    pub async fn start(
        config: &Config,
        store: Store,
        shutdown: CancellationToken,
    ) -> Result<Arc<Federation>, String> {
        let fed_config = config.federation.clone();
        validate(&fed_config)?;
        // reqwest is built without a default TLS provider; use ring (no aws-lc).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let data_dir = config.server.data_dir.clone();
        let identity_config = fed_config.clone();
        let (identity, created) =
            tokio::task::spawn_blocking(move || Identity::load(&data_dir, &identity_config))
                .await
                .map_err(|e| format!("loading the federation identity: {e}"))??;
        if created.key {
            tracing::info!(key_id = %identity.key_id, "generated a federation key pair in the data dir (mode 0600)");
        }
        tracing::info!(
            instance_id = %identity.instance_id,
            key_id = %identity.key_id,
            fingerprint = %identity.fingerprint,
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
            identity,
            store,
            config: fed_config,
            client,
            workers: Mutex::new(HashMap::new()),
            shutdown,
        });
        let pending = peers::apply_config(&federation, &config.peers).await?;
        federation
            .store
            .fed_refresh_routes()
            .map_err(|e| e.to_string())?;
        for peer in federation.store.fed_peers().map_err(|e| e.to_string())? {
            if peer.status != PeerStatus::Removed {
                federation.ensure_worker(&peer.instance_id);
            }
        }
        for peer in pending {
            peers::spawn_pin_from_config(federation.clone(), peer);
        }
        Ok(federation)
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
