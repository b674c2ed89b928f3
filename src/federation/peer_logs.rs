//! Which active peer owns a heads-log origin, and its log vkey: read from
//! each peer's instance document (`logKey`, trusted only when
//! `logKeySignature` verifies under the pinned RSA key, see
//! `logbook_federation::peer_keys`). The witness route asks here.
//!
//! Documents are fetched when an origin is unknown or a signature fails
//! (the peer may have rotated its log key), at most once per
//! [`MIN_REFRESH`] for all peers together: a request cannot make this
//! instance fetch without bound.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use logbook_federation::peer_keys::peer_log_key;
use logbook_federation::peers::INSTANCE_PATH;
use logbook_journal::store::{PeerRecord, PeerStatus, StoreError};
use logbook_tlog::note::Verifier;

use super::Federation;

/// Least time between two fetches of the peers' documents.
pub(crate) const MIN_REFRESH: Duration = Duration::from_secs(5);

/// An active peer's heads log.
#[derive(Debug, Clone)]
pub(crate) struct PeerLog {
    pub(crate) instance_id: String,
    /// Named the log's origin.
    pub(crate) verifier: Verifier,
}

#[derive(Default)]
pub(crate) struct PeerLogs {
    /// Origin → peer, from the last documents read.
    known: Mutex<HashMap<String, PeerLog>>,
    /// When the documents were last fetched; held during a fetch, so
    /// concurrent requests wait for it instead of fetching again.
    fetched: tokio::sync::Mutex<Option<Instant>>,
}

impl PeerLogs {
    /// The active peer whose heads log is `origin`. `refetch` asks for the
    /// documents again (within the throttle) even when the origin is known.
    pub(crate) async fn find(
        &self,
        fed: &Federation,
        origin: &str,
        refetch: bool,
    ) -> Result<Option<PeerLog>, StoreError> {
        if !refetch && let Some(found) = self.lookup(origin) {
            return Ok(Some(found));
        }
        {
            let mut fetched = self.fetched.lock().await;
            if fetched.is_none_or(|at| at.elapsed() >= MIN_REFRESH) {
                self.fetch(fed).await?;
                *fetched = Some(Instant::now());
            }
        }
        Ok(self.lookup(origin))
    }

    /// The peer for `origin` as last read, without fetching.
    pub(crate) fn lookup(&self, origin: &str) -> Option<PeerLog> {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.get(origin).cloned()
    }

    /// Reads every active peer's document; a peer that cannot be reached
    /// keeps the key read before.
    async fn fetch(&self, fed: &Federation) -> Result<(), StoreError> {
        let peers: Vec<PeerRecord> = fed
            .store
            .run(|store| store.peers().list())
            .await?
            .into_iter()
            .filter(|p| p.status == PeerStatus::Active)
            .collect();
        let results =
            futures_util::future::join_all(peers.iter().map(|peer| fetch_one(fed, peer))).await;
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let before = std::mem::take(&mut *known);
        let mut contested: std::collections::HashSet<String> = std::collections::HashSet::new();
        for (peer, result) in peers.iter().zip(results) {
            let log = match result {
                Ok(verifier) => PeerLog {
                    instance_id: peer.instance_id.clone(),
                    verifier,
                },
                Err(why) => {
                    tracing::warn!(peer = %peer.instance_id, %why, "could not read the peer's log key");
                    match before.values().find(|l| l.instance_id == peer.instance_id) {
                        Some(old) => old.clone(),
                        None => continue,
                    }
                }
            };
            // Two (or more) peers claiming one origin: none is witnessed.
            if contested.contains(&log.verifier.name) {
                continue;
            }
            if let Some(other) = known.get(&log.verifier.name)
                && other.instance_id != log.instance_id
            {
                tracing::warn!(origin = %log.verifier.name, a = %other.instance_id, b = %log.instance_id, "two peers claim one log origin; witnessing neither");
                known.remove(&log.verifier.name);
                contested.insert(log.verifier.name.clone());
                continue;
            }
            known.insert(log.verifier.name.clone(), log);
        }
        Ok(())
    }
}

async fn fetch_one(fed: &Federation, peer: &PeerRecord) -> Result<Verifier, String> {
    let doc = instance_document(fed, peer).await?;
    peer_log_key(peer, &doc).map_err(|e| e.to_string())
}

/// The peer's instance document, as it serves it now (unverified: the
/// keys in it are trusted only through `logbook_federation::peer_keys`).
pub(crate) async fn instance_document(
    fed: &Federation,
    peer: &PeerRecord,
) -> Result<serde_json::Value, String> {
    let url = format!("{}{INSTANCE_PATH}", peer.base_url);
    let response = fed
        .client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("fetching {url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("fetching {url}: HTTP {}", response.status()));
    }
    super::read_peer_json(response).await
}
