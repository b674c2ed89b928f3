//! The daemon's life: check the config, open the journal, serve HTTP, and
//! shut down in order on SIGTERM or SIGINT.
//!
//! Shutdown order: stop accepting connections and end SSE streams (one
//! cancellation token), let in-flight requests finish within the grace
//! period, then drain the writer so every acknowledged append is committed,
//! and only then drop the database.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::Config;
use crate::http::{AppParts, AppState, auth::Tokens};
use logbook_base::fresh_dir::FreshDir;
use logbook_base::private_file::ensure_private_dir;
use logbook_base::reloadable::Reloadable;
use logbook_journal::fanout::{StreamStats, fanout};
use logbook_journal::keys::{KeySource, Keyring};
use logbook_journal::log_key::LogKeys;
use logbook_journal::registry::Registry;
use logbook_journal::store::{AsyncStore, DB_FILE, Store, StoreOptions};
use logbook_journal::witness_key::WitnessKey;

/// Sets up logging from the config; `RUST_LOG` overrides the level. The
/// level stays changeable at run time (see `crate::admin::logging`).
pub(crate) fn init_logging(config: &Config) {
    crate::admin::logging::init(config);
}

/// Runs the daemon until a stop signal. Errors are for the operator to read.
pub(crate) async fn run(config: Config, config_source: &str) -> Result<(), String> {
    // From the first moment, SIGTERM and SIGINT are ours: one that arrives
    // while the daemon starts is acted on once it serves, never a kill by
    // the default disposition.
    let signals = StopSignals::install()?;
    // Before any file is opened: the soft open-file limit is raised here.
    let max_connections = connections_within_open_files(config.server.max_connections)?;
    // The port first: a port in use is the commonest failed start, and it
    // then fails before anything is written (and before a long recovery).
    // Connections made while the store opens wait in the backlog.
    let listener = bind_listener(config.server.listen, config.server.listen_backlog)
        .map_err(|e| format!("binding {}: {e}", config.server.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    // The settings were checked before logging started (`check_before_start`);
    // the loopback rule waits for the store: tokens created over the admin
    // socket live there.
    let data_dir = &config.server.data_dir;
    // A first start that fails below leaves the data dir as it found it
    // (absent or empty), so the next try is a first start again.
    let fresh = FirstStart::inspect(data_dir);
    ensure_private_dir(data_dir)
        .map_err(|e| format!("creating data dir {}: {e}", data_dir.display()))?;
    if let Some(why) = logbook_journal::store::restore::unfinished_restore(data_dir) {
        return Err(why);
    }

    let (keyring, key_source) = Keyring::load(data_dir, |name| std::env::var(name).ok())
        .map_err(|e| format!("loading the HMAC key from {}: {e}", data_dir.display()))?;
    match key_source {
        KeySource::Env(var) => {
            tracing::info!(key_id = keyring.current_id(), "signing key from ${var}")
        }
        KeySource::File => tracing::info!(
            key_id = keyring.current_id(),
            "signing key from the data dir"
        ),
        KeySource::Generated => tracing::info!(
            key_id = keyring.current_id(),
            "generated a new signing key in the data dir (mode 0600); back it up with the journal"
        ),
    }
    let keyring = Arc::new(keyring);
    let registry = Registry::new(config.registry.strict, &config.registry.types)
        .map_err(|e| format!("registry.types: {e}"))?;

    let fanout = fanout();
    let options = StoreOptions {
        quick_repair: config.storage.quick_repair,
    };
    // Opening recovers the database, which can take a while; like every
    // storage call it runs off the async threads.
    let (store, writer) = {
        let (path, keyring, fanout) = (data_dir.join(DB_FILE), keyring.clone(), fanout.clone());
        tokio::task::spawn_blocking(move || Store::open_with(&path, keyring, fanout, &options))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
    };
    let store = AsyncStore::new(store);
    // Retired keys verify only up to the retirement the system journal records.
    let mut windowed = Keyring::clone(&keyring);
    let (windowed, windows) = store
        .run(move |s| {
            crate::admin::keys::apply_retirements(s, &mut windowed).map(|n| (windowed, n))
        })
        .await
        .map_err(|e| format!("reading key retirements from the system journal: {e}"))?;
    store.replace_keyring(windowed);
    tracing::debug!(windows, "retired HMAC keys with a recorded validity window");
    // Off the start path: a restore that left keys behind is named in the
    // log, not found later by a verify that looks like tampering.
    tokio::spawn(crate::admin::keys::report_missing_keys(store.clone()));

    // Tokens created over the admin socket count exactly like config ones.
    // A token configured in the file (or one stored before the latch
    // existed) latches auth on for good, persisted before we serve.
    let auth_state = {
        let configured = !config.auth.tokens.is_empty();
        store
            .run(move |store| {
                let stored = store.stored_tokens()?;
                let mut latch = store.auth_latch()?;
                if latch.is_none() && (configured || !stored.is_empty()) {
                    let reason = if configured {
                        "a token was configured in config.toml"
                    } else {
                        "a token was created over the admin socket"
                    };
                    latch = Some(store.latch_auth(reason)?);
                }
                Ok::<_, logbook_journal::store::StoreError>((stored, latch))
            })
            .await
    };
    let (stored_tokens, latch) = match auth_state {
        Ok(found) => found,
        Err(e) => {
            tokio::task::spawn_blocking(move || writer.shutdown())
                .await
                .map_err(|e| e.to_string())?;
            return Err(e.to_string());
        }
    };
    if let Err(e) = config.check_exposure(stored_tokens.len(), latch.is_some()) {
        tokio::task::spawn_blocking(move || writer.shutdown())
            .await
            .map_err(|e| e.to_string())?;
        return Err(e);
    }
    let token_sources =
        crate::admin::tokens::TokenSources::new(&config.auth.tokens, &stored_tokens);
    let tokens = Arc::new(Tokens::default());
    tokens.set_setting(config.auth.required);
    if latch.is_some() {
        tokens.latch();
    }
    tokens.replace(token_sources.merged());

    let shutdown = CancellationToken::new();
    let missing_identity = missing_identity_files(&config, data_dir);
    let federation =
        crate::federation::Federation::start(&config, store.clone(), shutdown.clone()).await?;
    let log_keys = {
        let prefix = config
            .checkpoints
            .origin_prefix_for(&federation.identity().instance_id);
        let dir = data_dir.clone();
        tokio::task::spawn_blocking(move || LogKeys::load(&dir, &prefix))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("loading the log key: {e}"))?
    };
    // The vkey is public; the key itself is never logged.
    let vkey = log_keys.signer.verifier().to_vkey();
    if log_keys.created {
        tracing::info!(%vkey, "generated the Ed25519 log key in the data dir (mode 0600); back it up with the journal");
    } else {
        tracing::info!(%vkey, "log key");
    }
    if !missing_identity.is_empty() && store.run(|s| s.last_position()).await.is_ok_and(|p| p > 0) {
        tracing::warn!(
            generated = ?missing_identity,
            "this journal already holds events, but its identity files were missing and were generated anew: checkpoints are signed by a new log key (and, with a new instance id, under new origins) and peers see a new federation key, so auditors and peers who pinned the old ones will fail to verify; if this data dir was restored from a backup made with --without-keys, or its keys were lost, stop the daemon and put those files back (docs/operations.md, Backup and restore)"
        );
    }
    let witness_key = {
        let prefix = config
            .checkpoints
            .origin_prefix_for(&federation.identity().instance_id);
        let dir = data_dir.clone();
        tokio::task::spawn_blocking(move || WitnessKey::load(&dir, &prefix))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("loading the witness key: {e}"))?
    };
    let witness_vkey = witness_key.cosigner.verifier().to_vkey();
    if witness_key.created {
        tracing::info!(vkey = %witness_vkey, "generated the Ed25519 witness key in the data dir (mode 0600); it is never backed up or restored: after a restore a new one is generated (docs/operations.md, Backup and restore)");
    } else {
        tracing::info!(vkey = %witness_vkey, "witness key");
    }
    let witness = crate::http::witness::WitnessState::new(witness_key.cosigner, &config.witness);
    let log = crate::http::log::LogState::new(log_keys);
    let state = AppState::new(AppParts {
        whole_walk: Arc::new(tokio::sync::Semaphore::new(1)),
        federation: federation.clone(),
        store,
        registry: Arc::new(registry),
        fanout,
        limits: Arc::new(Reloadable::new(config.limits.clone())),
        cors: Arc::new(Reloadable::new(crate::http::cors::policy(
            &config.http.cors_origins,
        ))),
        tokens,
        keepalive: Duration::from_secs(config.sse.keepalive_secs),
        shutdown: shutdown.clone(),
        stream_stats: Arc::new(StreamStats::default()),
        edge: Arc::new(crate::http::edge::Edge::new(
            crate::http::edge::Policy::new(&config.server.allowed_hosts, &config.http.cors_origins),
            config.sse.max_streams,
        )),
        log: Arc::new(log),
        witness: Arc::new(witness),
        ui: config.ui.enabled,
    });

    let admin_socket = config.admin_socket_path();
    let admin = crate::admin::bind(&admin_socket, Some(&config.server.admin_group)).await?;
    let app = App {
        admin: Arc::new(crate::admin::Context {
            store: state.store.clone(),
            tokens: state.tokens.clone(),
            federation: state.federation.clone(),
            stream_stats: state.stream_stats.clone(),
            fanout: state.fanout.clone(),
            started: std::time::Instant::now(),
            listen: addr,
            admin_socket: admin_socket.clone(),
            data_dir: data_dir.clone(),
            config_path: (config_source != "embedded default").then(|| config_source.into()),
            config: Reloadable::new(config.clone()),
            token_sources,
            changes: Default::default(),
            log: state.log.clone(),
        }),
        http: state,
    };
    tokio::spawn(admin.serve(app.admin_router(), shutdown.clone()));
    crate::app::reload::spawn_sighup(app.clone())?;

    match app.http.tokens.mode() {
        (false, why) => {
            tracing::warn!(
                reason = %why,
                "no API token is required, so any local process can read and append"
            )
        }
        (true, why) if app.http.tokens.current().is_empty() => tracing::warn!(
            "API tokens are required ({why}) but none exists: TCP requests get 401; create one with `logbook admin tokens create`"
        ),
        (true, _) => {}
    }
    tracing::info!(%addr, config = config_source, data_dir = %data_dir.display(), admin_socket = %admin_socket.display(), "logbook listening");
    // The store is open and both listeners are bound.
    fresh.started();
    crate::notify::notify("READY=1");
    crate::notify::spawn_watchdog(shutdown.clone());
    crate::retention::spawn(
        app.http.store.clone(),
        config.federation.keep_days,
        i64::try_from(
            config
                .federation
                .timestamp_window_secs
                .saturating_mul(2_000),
        )
        .unwrap_or(i64::MAX),
        app.http.limits.clone(),
        config.retention.payload_max_age_ms().map(|max_age_ms| {
            crate::retention::PayloadRetention {
                max_age_ms,
                days: config.retention.payload_max_age_days,
            }
        }),
        shutdown.clone(),
    );
    let heads_grown = crate::heads::spawn(
        app.http.store.clone(),
        Duration::from_secs(config.checkpoints.interval_secs),
        shutdown.clone(),
    );
    crate::federation::witnessing::start(
        &app.http.federation,
        crate::federation::witness_api::HeadsLog {
            signer: app.http.log.clone(),
            grown: heads_grown,
        },
    );

    signals.spawn(shutdown.clone());
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let server = tokio::spawn(crate::http::serve::serve(
        listener,
        app.api_router(),
        shutdown.clone(),
        Some(crate::http::serve::ClientLimits {
            max_connections,
            max_connections_per_ip: config.server.max_connections_per_ip,
            send_timeout: Duration::from_secs(config.server.send_timeout_secs),
        }),
    ));
    let served = tokio::select! {
        result = server => Some(result),
        () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => None,
    };
    match served {
        Some(Ok(())) => {}
        Some(Err(e)) => tracing::error!(error = %e, "HTTP server task failed"),
        None => tracing::warn!(
            grace_secs = grace.as_secs(),
            "connections still open after the grace period; closing them"
        ),
    }
    // Delivery workers stop; unacknowledged messages stay in the outbox.
    federation.stop().await;
    // Every append that reached the writer is committed before we return.
    tokio::task::spawn_blocking(move || writer.shutdown())
        .await
        .map_err(|e| format!("stopping the writer: {e}"))?;
    // The admin server removes it too; this makes it certain before exit.
    let _ = std::fs::remove_file(&admin_socket);
    tracing::info!("logbook stopped");
    Ok(())
}

/// The stop signals, registered before anything else happens.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> Result<StopSignals, String> {
        Ok(StopSignals {
            term: signal(SignalKind::terminate())
                .map_err(|e| format!("installing SIGTERM handler: {e}"))?,
            int: signal(SignalKind::interrupt())
                .map_err(|e| format!("installing SIGINT handler: {e}"))?,
        })
    }

    /// Cancels `shutdown` on the first stop signal, also one already received.
    fn spawn(mut self, shutdown: CancellationToken) {
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            };
            tracing::info!(signal = name, "shutting down");
            crate::notify::notify("STOPPING=1");
            shutdown.cancel();
        });
    }
}

/// Binds the HTTP listener with an explicit listen(2) backlog. tokio's
/// `TcpListener::bind` uses 128, which a reconnect storm (every SSE client
/// after a restart) overflows: the overflow waits a second for a SYN retry.
fn bind_listener(addr: std::net::SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restart may rebind while old
    // connections are still in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Files the daemon keeps open besides its TCP connections: the store and
/// its segment, the listeners, admin connections, federation's outgoing
/// connections, the blocking pool's short-lived files; and the refused
/// connections being answered.
const OTHER_OPEN_FILES: u64 = 512 + crate::http::serve::MAX_REFUSING as u64;

/// Fewest connections worth serving: below this the open-file limit is a
/// misconfiguration to fix, not to work around.
const MIN_CONNECTIONS: u64 = 64;

/// `max_connections`, or fewer if the process may not open that many
/// files. The soft open-file limit is first raised to the hard one (a
/// shell's soft limit is often 1024, far below the default cap): past the
/// limit `accept` fails with EMFILE, the 503 of the cap is never sent, and
/// the store and the admin socket cannot open files either. So the cap is
/// lowered to fit, with a warning, rather than the limit found by clients;
/// a limit too low to serve even `MIN_CONNECTIONS` refuses the start.
fn connections_within_open_files(max_connections: usize) -> Result<usize, String> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot read the open-file limit; server.max_connections is used as set"
        );
        return Ok(max_connections);
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        } else {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                soft = limit.rlim_cur,
                hard = limit.rlim_max,
                "cannot raise the soft open-file limit to the hard one"
            );
        }
    }
    let fits = limit.rlim_cur.saturating_sub(OTHER_OPEN_FILES);
    if max_connections as u64 <= fits {
        return Ok(max_connections);
    }
    if fits < MIN_CONNECTIONS {
        return Err(format!(
            "the open-file limit is {}, which leaves room for {fits} connections (it must leave at least {MIN_CONNECTIONS} beside {OTHER_OPEN_FILES} other files): raise it (ulimit -n, or LimitNOFILE= in the unit)",
            limit.rlim_cur
        ));
    }
    let lowered = fits as usize;
    tracing::warn!(
        max_connections,
        lowered,
        open_file_limit = limit.rlim_cur,
        "server.max_connections lowered to fit the open-file limit (raise LimitNOFILE= or ulimit -Hn to serve more)"
    );
    Ok(lowered)
}

/// The identity files a start would generate in `data_dir`: the instance
/// id (unless the config names one), the federation key and the log key.
/// Generated beside a journal that already holds events, they give an old
/// history a new identity, which a start warns about.
fn missing_identity_files(config: &Config, data_dir: &std::path::Path) -> Vec<&'static str> {
    use logbook_federation::identity::{INSTANCE_ID_FILE, KEY_FILE};
    use logbook_journal::log_key::LOG_KEY_FILE;
    let mut files = vec![KEY_FILE, LOG_KEY_FILE];
    if config.federation.instance_id.is_empty() {
        files.insert(0, INSTANCE_ID_FILE);
    }
    files.retain(|f| !data_dir.join(f).exists());
    files
}

/// The data dir as a start found it ([`FreshDir`]): dropped before
/// [`FirstStart::started`], it puts the dir back as it was and, if the
/// start was a first one, says so: the keys it generated (whose log line
/// asked for a backup) are gone with the rest.
struct FirstStart(Option<FreshDir>, std::path::PathBuf);

impl FirstStart {
    fn inspect(dir: &std::path::Path) -> FirstStart {
        FirstStart(Some(FreshDir::inspect(dir)), dir.to_path_buf())
    }

    fn started(mut self) {
        if let Some(fresh) = self.0.take() {
            fresh.keep();
        }
    }
}

impl Drop for FirstStart {
    fn drop(&mut self) {
        if let Some(fresh) = self.0.take() {
            let first = fresh.is_fresh();
            drop(fresh);
            if first {
                tracing::warn!(data_dir = %self.1.display(), "this first start failed: what it created in the data dir, generated keys included, was removed, so the next start is a first start again (nothing to back up)");
            }
        }
    }
}
