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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use logbook_federation::peer_keys::peer_log_key;
use logbook_federation::peers::INSTANCE_PATH;
use logbook_journal::store::{PeerRecord, PeerStatus, StoreError};
use logbook_tlog::note::Verifier;

use super::Federation;

/// Least time between two fetches of the peers' documents.
pub(crate) const MIN_REFRESH: Duration = Duration::from_secs(5);

/// Longest a request naming an origin not known yet waits for a fetch
/// that another request started.
const FETCH_WAIT: Duration = Duration::from_secs(5);

/// An active peer's heads log.
#[derive(Debug, Clone)]
pub(crate) struct PeerLog {
    pub(crate) instance_id: String,
    /// Named the log's origin.
    pub(crate) verifier: Verifier,
}

#[derive(Default)]
pub(crate) struct PeerLogs {
    /// Shared with a read under way, which runs as a task of its own.
    known: Arc<Mutex<Claims>>,
    reading: Mutex<Reading>,
}

/// The reads of the peers' documents: one at a time, at most one per
/// [`MIN_REFRESH`] (counted from its start).
#[derive(Default)]
struct Reading {
    at: Option<Instant>,
    running: Option<Shared<BoxFuture<'static, ()>>>,
}

/// What the active peers' documents claim.
#[derive(Default)]
struct Claims {
    /// Instance id → its log, as last read: a peer whose document cannot be
    /// read now keeps its last claim, contested or not.
    by_peer: HashMap<String, PeerLog>,
    /// Origin → the one peer claiming it. An origin two or more peers claim
    /// is in none of them: neither is witnessed until one stops.
    by_origin: HashMap<String, PeerLog>,
}

impl Claims {
    /// The claims of the active peers `logs` (each `None` if its document
    /// could not be read now, so that it keeps its last claim).
    fn update(&mut self, logs: Vec<(String, Option<PeerLog>)>) {
        let mut by_peer = HashMap::with_capacity(logs.len());
        for (instance_id, log) in logs {
            if let Some(log) = log.or_else(|| self.by_peer.remove(&instance_id)) {
                by_peer.insert(instance_id, log);
            }
        }
        let mut claimants: HashMap<&str, Vec<&PeerLog>> = HashMap::new();
        for log in by_peer.values() {
            claimants.entry(&log.verifier.name).or_default().push(log);
        }
        let mut by_origin = HashMap::with_capacity(claimants.len());
        for (origin, logs) in claimants {
            match logs.as_slice() {
                [one] => {
                    by_origin.insert(origin.to_string(), (*one).clone());
                }
                many => {
                    let peers: Vec<&str> = many.iter().map(|l| l.instance_id.as_str()).collect();
                    tracing::warn!(%origin, ?peers, "two or more peers claim one log origin; witnessing none of them");
                }
            }
        }
        self.by_origin = by_origin;
        self.by_peer = by_peer;
    }
}

impl PeerLogs {
    /// The active peer whose heads log is `origin`. `refetch` asks for the
    /// documents again (within the throttle) even when the origin is known.
    /// Without it, a fetch under way is waited for at most [`FETCH_WAIT`]:
    /// anyone can name an unknown origin, and those requests must not queue
    /// behind a slow peer for long.
    pub(crate) async fn find(
        &self,
        fed: &Arc<Federation>,
        origin: &str,
        refetch: bool,
    ) -> Option<PeerLog> {
        if !refetch && let Some(found) = self.lookup(origin) {
            return Some(found);
        }
        let read = {
            let mut reading = self.reading.lock().unwrap_or_else(|e| e.into_inner());
            match &reading.running {
                // One read at a time: a request arriving during one waits
                // for it rather than starting another.
                Some(running) if running.peek().is_none() => Some(running.clone()),
                _ if reading.at.is_none_or(|at| at.elapsed() >= MIN_REFRESH) => {
                    // A task of its own, awaited through a shared handle: a
                    // request dropped while it waits (its client left)
                    // neither cancels the read nor loses what it reads.
                    reading.at = Some(Instant::now());
                    let task = tokio::spawn(fetch(fed.clone(), self.known.clone()));
                    let running = task.map(|_| ()).boxed().shared();
                    reading.running = Some(running.clone());
                    Some(running)
                }
                _ => None,
            }
        };
        if let Some(read) = read {
            if refetch {
                read.await;
            } else {
                let _ = tokio::time::timeout(FETCH_WAIT, read).await;
            }
        }
        self.lookup(origin)
    }

    /// The peer for `origin` as last read, without fetching.
    pub(crate) fn lookup(&self, origin: &str) -> Option<PeerLog> {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.by_origin.get(origin).cloned()
    }

    /// Every peer whose document, as last read, names `origin`: one, or
    /// several when it is contested (and then [`PeerLogs::lookup`] finds
    /// none).
    pub(crate) fn claimants(&self, origin: &str) -> Vec<PeerLog> {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known
            .by_peer
            .values()
            .filter(|log| log.verifier.name == origin)
            .cloned()
            .collect()
    }
}

/// Reads every active peer's document into `known`; a peer that cannot be
/// reached keeps the key read before.
async fn fetch(fed: Arc<Federation>, known: Arc<Mutex<Claims>>) {
    if let Err(e) = read_claims(&fed, &known).await {
        tracing::warn!(error = %e, "could not read the peers' documents");
    }
}

async fn read_claims(fed: &Federation, known: &Mutex<Claims>) -> Result<(), StoreError> {
    {
        let peers: Vec<PeerRecord> = fed
            .store
            .run(|store| store.peers().list())
            .await?
            .into_iter()
            .filter(|p| p.status == PeerStatus::Active)
            .collect();
        let results =
            futures_util::future::join_all(peers.iter().map(|peer| fetch_one(fed, peer))).await;
        let logs = peers
            .iter()
            .zip(results)
            .map(|(peer, result)| {
                let log = match result {
                    Ok(verifier) => Some(PeerLog {
                        instance_id: peer.instance_id.clone(),
                        verifier,
                    }),
                    Err(why) => {
                        tracing::warn!(peer = %peer.instance_id, %why, "could not read the peer's log key");
                        None
                    }
                };
                (peer.instance_id.clone(), log)
            })
            .collect();
        let mut known = known.lock().unwrap_or_else(|e| e.into_inner());
        known.update(logs);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn log(instance_id: &str, origin: &str) -> Option<PeerLog> {
        let signer = logbook_tlog::note::Signer25519::new(origin, &[7; 32]).unwrap();
        Some(PeerLog {
            instance_id: instance_id.into(),
            verifier: signer.verifier().clone(),
        })
    }

    fn owner(claims: &Claims, origin: &str) -> Option<String> {
        claims.by_origin.get(origin).map(|l| l.instance_id.clone())
    }

    /// A contested origin stays contested while its first claimant's
    /// document cannot be read: the other does not take it over then.
    #[test]
    fn an_origin_stays_contested_while_a_claimant_is_unreadable() {
        let mut claims = Claims::default();
        claims.update(vec![("p".into(), log("p", "logbook/p"))]);
        assert_eq!(owner(&claims, "logbook/p").as_deref(), Some("p"));
        claims.update(vec![
            ("p".into(), log("p", "logbook/p")),
            ("m".into(), log("m", "logbook/p")),
        ]);
        assert_eq!(owner(&claims, "logbook/p"), None);
        claims.update(vec![
            ("p".into(), None),
            ("m".into(), log("m", "logbook/p")),
        ]);
        assert_eq!(owner(&claims, "logbook/p"), None);
        // Once the claimant names its own origin again, each has its own.
        claims.update(vec![
            ("p".into(), None),
            ("m".into(), log("m", "logbook/m")),
        ]);
        assert_eq!(owner(&claims, "logbook/p").as_deref(), Some("p"));
        assert_eq!(owner(&claims, "logbook/m").as_deref(), Some("m"));
        // A peer no longer active is forgotten.
        claims.update(vec![("m".into(), None)]);
        assert_eq!(owner(&claims, "logbook/p"), None);
        assert_eq!(owner(&claims, "logbook/m").as_deref(), Some("m"));
    }
}
