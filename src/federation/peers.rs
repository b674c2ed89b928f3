//! Peers at run time: adding one from the HTTP API (inline key, or
//! fetch-and-pin over HTTP), applying `[[peers]]` at start and on reload,
//! and pinning fingerprint-only peers in the background. The checks and
//! the storage are `logbook_federation::peers`.

use std::sync::Arc;
use std::time::Duration;

use logbook_federation::config::PeerConfig;
use logbook_federation::peers::{
    self, INSTANCE_PATH, PeerError, PeerSpec, PinError, check_identity_document,
};
use logbook_journal::store::{PeerRecord, PeerStatus, StoreError};
use serde_json::Value;

use super::Federation;

/// Fetches the peer's identity document and returns its key's SPKI DER if
/// the instance id, protocol version and fingerprint are the expected ones.
pub(crate) async fn fetch_and_pin(fed: &Federation, spec: &PeerSpec) -> Result<Vec<u8>, PinError> {
    if spec.fingerprint.is_none() {
        return Err(PinError::NoFingerprint);
    }
    let url = format!("{}{INSTANCE_PATH}", spec.base_url);
    let response = fed
        .client
        .get(&url)
        .send()
        .await
        .map_err(|e| PinError::Transport(format!("fetching {url}: {e}")))?;
    if !response.status().is_success() {
        return Err(PinError::Transport(format!(
            "fetching {url}: HTTP {}",
            response.status()
        )));
    }
    let doc: Value = super::read_peer_json(response)
        .await
        .map_err(|e| PinError::Transport(format!("reading {url}: {e}")))?;
    check_identity_document(spec, &url, &doc, fed.config().accept_protocol_v1)
}

/// Stores a peer (`logbook_federation::peers::store_peer`) and starts its
/// worker unless it is removed.
async fn store_peer(
    fed: &Arc<Federation>,
    spec: PeerSpec,
    pin: peers::Pin,
    keep_status: bool,
) -> Result<PeerRecord, peers::StorePeerError> {
    let record = fed
        .store
        .run(move |store| peers::store_peer(store, &spec, pin, keep_status))
        .await?;
    if record.status != PeerStatus::Removed {
        fed.ensure_worker(&record.instance_id);
    }
    Ok(record)
}

/// Adds or updates a peer from the HTTP API: inline key, or fetch-and-pin.
pub(crate) async fn add(fed: &Arc<Federation>, spec: PeerSpec) -> Result<PeerRecord, AddError> {
    if spec.instance_id == fed.identity().instance_id {
        return Err(AddError::Invalid(PeerError::OwnId));
    }
    let pin = match spec.inline_key().map_err(AddError::Invalid)? {
        Some(der) => peers::Pin::Key(der),
        None => peers::Pin::Newest(fetch_and_pin(fed, &spec).await.map_err(AddError::Pin)?),
    };
    store_peer(fed, spec, pin, false)
        .await
        .map_err(|e| match e {
            peers::StorePeerError::KeyRetired(key_id) => AddError::Retired(key_id),
            peers::StorePeerError::Store(e) => AddError::Storage(e),
        })
}

#[derive(Debug)]
pub(crate) enum AddError {
    Invalid(PeerError),
    Pin(PinError),
    /// The inline key is one the peer rotated away from (its key id).
    Retired(String),
    Storage(StoreError),
}

/// Applies `[[peers]]` (at start and on reload): peers with an inline key are
/// stored now; those with only a fingerprint are returned, to be fetched and
/// pinned in the background (`spawn_pin_from_config`). Peers not listed
/// (added at run time) are left alone, and so is a peer's status.
pub(crate) async fn apply_config(
    fed: &Arc<Federation>,
    peers: &[PeerConfig],
) -> Result<Vec<PeerSpec>, String> {
    peers::check_config(&fed.identity().instance_id, peers).map_err(|e| e.to_string())?;
    let peers = peers.to_vec();
    let applied = match fed
        .store
        .run(move |store| peers::apply_config(store, &peers))
        .await
    {
        Ok(applied) => applied,
        Err(e) => {
            // Peers stored before the failure still need their workers.
            if let Ok(stored) = fed.store.run(|store| store.peers().list()).await {
                for record in stored.iter().filter(|r| r.status != PeerStatus::Removed) {
                    fed.ensure_worker(&record.instance_id);
                }
            }
            return Err(e.to_string());
        }
    };
    for record in &applied.stored {
        if record.status != PeerStatus::Removed {
            fed.ensure_worker(&record.instance_id);
        }
    }
    Ok(applied.pending)
}

/// Keeps trying to fetch and pin a configured peer's key until it works or
/// the daemon stops. At most one such task runs per peer: a reload that
/// lists the peer unchanged leaves the running task alone, and a changed
/// definition replaces it.
pub(crate) fn spawn_pin_from_config(fed: Arc<Federation>, spec: PeerSpec) {
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
                match store_peer(&fed, spec.clone(), peers::Pin::Newest(der), true).await {
                    Ok(_) => tracing::info!(peer = %spec.instance_id, "pinned the peer's key"),
                    Err(e) => {
                        tracing::error!(peer = %spec.instance_id, error = %e, "storing the peer")
                    }
                }
                return;
            }
            Err(e) => {
                tracing::warn!(peer = %spec.instance_id, url = %spec.base_url, error = ?e.to_string(), "cannot pin the peer's key yet")
            }
        }
        tokio::select! {
            () = fed.shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(60));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
    use tokio::net::TcpStream;

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
        let listed = |base_url: String| logbook_federation::config::PeerConfig {
            instance_id: "beta".into(),
            base_url,
            public_key: String::new(),
            fingerprint: "ab".repeat(32),
            allow: Vec::new(),
            witness: true,
        };
        config.peers = vec![listed(format!("http://127.0.0.1:{port}"))];
        let keyring = Arc::new(logbook_journal::keys::Keyring::from_secret(b"k".to_vec()));
        let fanout = logbook_journal::fanout::fanout();
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
        let reload = |peers: Vec<logbook_federation::config::PeerConfig>| {
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
