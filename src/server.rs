//! The daemon's life: check the config, open the journal, serve HTTP, and
//! shut down in order on SIGTERM or SIGINT.
//!
//! Shutdown order: stop accepting connections and end SSE streams (one
//! cancellation token), let in-flight requests finish within the grace
//! period, then drain the writer so every acknowledged append is committed,
//! and only then drop the database.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, LogFormat, ensure_private_dir};
use crate::http::{AppState, auth::Tokens, router};
use crate::journal::keys::{KeySource, Keyring};
use crate::journal::registry::Registry;
use crate::journal::store::{DB_FILE, Store};
use crate::stream::{StreamStats, fanout};

/// Sets up logging from the config; `RUST_LOG` overrides the level.
pub fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Runs the daemon until a stop signal. Errors are for the operator to read.
pub async fn run(config: Config, config_source: &str) -> Result<(), String> {
    config.validate()?;
    let data_dir = &config.server.data_dir;
    ensure_private_dir(data_dir).map_err(|e| format!("creating data dir {}: {e}", data_dir.display()))?;

    let (keyring, key_source) = Keyring::load(data_dir, |name| std::env::var(name).ok())
        .map_err(|e| format!("loading the HMAC key from {}: {e}", data_dir.display()))?;
    match key_source {
        KeySource::Env(var) => tracing::info!(key_id = keyring.current_id(), "signing key from ${var}"),
        KeySource::File => tracing::info!(key_id = keyring.current_id(), "signing key from the data dir"),
        KeySource::Generated => tracing::info!(
            key_id = keyring.current_id(),
            "generated a new signing key in the data dir (mode 0600); back it up with the journal"
        ),
    }
    let keyring = Arc::new(keyring);
    let registry = Registry::new(config.registry.strict, &config.registry.types)
        .map_err(|e| format!("registry.types: {e}"))?;

    let fanout = fanout();
    let (store, writer) = Store::open(&data_dir.join(DB_FILE), keyring.clone(), fanout.clone())
        .map_err(|e| e.to_string())?;

    let shutdown = CancellationToken::new();
    let state = AppState {
        store,
        keyring,
        registry: Arc::new(registry),
        fanout,
        limits: Arc::new(config.limits.clone()),
        tokens: Arc::new(Tokens::from_config(&config.auth.tokens)),
        keepalive: Duration::from_secs(config.sse.keepalive_secs),
        shutdown: shutdown.clone(),
        stream_stats: Arc::new(StreamStats::default()),
    };
    let app = router(state, &config.http.cors_origins);

    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(|e| format!("binding {}: {e}", config.server.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    if config.auth.tokens.is_empty() {
        tracing::warn!("no API tokens configured: any local process can read and append; listening on loopback only");
    }
    tracing::info!(%addr, config = config_source, data_dir = %data_dir.display(), "logbook listening");

    spawn_signal_handler(shutdown.clone())?;
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let server = tokio::spawn(crate::http::serve::serve(listener, app, shutdown.clone()));
    let served = tokio::select! {
        result = server => Some(result),
        () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => None,
    };
    match served {
        Some(Ok(())) => {}
        Some(Err(e)) => tracing::error!(error = %e, "HTTP server task failed"),
        None => tracing::warn!(grace_secs = grace.as_secs(), "connections still open after the grace period; closing them"),
    }
    // Every append that reached the writer is committed before we return.
    tokio::task::spawn_blocking(move || writer.shutdown())
        .await
        .map_err(|e| format!("stopping the writer: {e}"))?;
    tracing::info!("logbook stopped");
    Ok(())
}

fn spawn_signal_handler(shutdown: CancellationToken) -> Result<(), String> {
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("installing SIGTERM handler: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("installing SIGINT handler: {e}"))?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutting down");
        shutdown.cancel();
    });
    Ok(())
}
