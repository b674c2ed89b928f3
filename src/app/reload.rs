//! Live configuration: values that can be swapped while the daemon runs, and
//! the SIGHUP reload that swaps them (tokens, `auth.required`, log level,
//! limits, CORS, `sse.max_streams`, `[[peers]]`).
//!
//! A reload reads and checks the whole new file first; if anything is wrong
//! the old config stays in force and the error, naming the key, is logged.
//! Connections are never touched: handlers read the current value per request.

use super::App;
use crate::admin::commands::Reloaded;
use crate::config::Config;

/// Reads the config file again and applies what can change at run time.
/// `server.*` (addresses, paths) needs a restart and is kept as running.
/// Returns what changed, or why nothing did.
pub(crate) async fn reload(app: &App) -> Result<Reloaded, String> {
    let (admin, http) = (&app.admin, &app.http);
    let _serialized = admin.changes.lock().await;
    let Some(path) = &admin.config_path else {
        return Err("running on the embedded default config; there is no file to reload".into());
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let mut new = Config::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let old = admin.config.current();
    new.server = old.server.clone();
    new.validate_settings()?;
    let stored = http
        .store
        .run(|s| s.stored_tokens())
        .await
        .map_err(|e| e.to_string())?;
    new.check_exposure(stored.len(), http.tokens.latched())
        .map_err(|e| format!("auth: {e}"))?;
    crate::admin::logging::parse_filter(&new.log.level).map_err(|e| format!("log.level: {e}"))?;
    let federation = &http.federation;
    logbook_federation::peers::check_config(&federation.identity().instance_id, &new.peers)
        .map_err(|e| e.to_string())?;

    let mut changed = Vec::new();
    if new.log.level != old.log.level && !crate::admin::logging::level_from_env() {
        crate::admin::logging::set_level(&new.log.level).map_err(|e| format!("log.level: {e}"))?;
        changed.push("log.level");
    }
    // What is read once at start is said, not silently ignored, and kept
    // as it runs: the next reload reports it again, until the restart.
    let needs_restart = keep_start_only(&mut new, &old);
    for section in &needs_restart {
        tracing::warn!(
            section,
            "this change needs a restart; keeping the running setting"
        );
    }
    if !new.auth.tokens.is_empty() && !http.tokens.latched() {
        // Persisted before the tokens take effect, so a restart keeps it.
        http.store
            .run(|s| s.latch_auth("a token was configured in config.toml"))
            .await
            .map_err(|e| format!("auth: recording that a token exists: {e}"))?;
    }
    // Everything reloadable is applied again (each is idempotent); what is
    // reported is what differs from the file read before.
    let mut note = |name: &'static str, differs: bool| {
        if differs {
            changed.push(name);
        }
    };
    admin
        .token_sources
        .set_config(&new.auth.tokens, &http.tokens);
    note("auth.tokens", differs(&old.auth.tokens, &new.auth.tokens));
    http.tokens.set_setting(new.auth.required);
    note("auth.required", old.auth.required != new.auth.required);
    http.edge.policy.replace(crate::http::edge::Policy::new(
        &old.server.allowed_hosts,
        &new.http.cors_origins,
    ));
    http.edge.set_max_streams(new.sse.max_streams);
    note(
        "sse.max_streams",
        old.sse.max_streams != new.sse.max_streams,
    );
    http.limits.replace(new.limits.clone());
    note("limits", differs(&old.limits, &new.limits));
    http.cors
        .replace(crate::http::cors::policy(&new.http.cors_origins));
    note(
        "http.cors_origins",
        old.http.cors_origins != new.http.cors_origins,
    );
    let peers_differ = differs(&old.peers, &new.peers);
    let witnesses_differ = differs(&old.witnesses, &new.witnesses)
        || old.checkpoints.witness_quorum != new.checkpoints.witness_quorum;
    // Listed peers are added or updated; peers added at run time stay.
    match crate::federation::peers::apply_config(federation, &new.peers).await {
        Ok(pending) => {
            for spec in pending {
                crate::federation::peers::spawn_pin_from_config(federation.clone(), spec);
            }
            if peers_differ {
                changed.push("peers");
            }
        }
        // Checked above, so only storage can fail here; the rest is applied.
        Err(e) => tracing::error!(error = %e, "applying [[peers]] on reload"),
    }
    // Checked with the whole file above.
    if let Ok(settings) = crate::federation::witnessing::settings(&new) {
        federation.witness_settings.replace(settings);
        federation.resupervise_witnesses().await;
        if witnesses_differ || peers_differ {
            changed.push("witnesses");
        }
    }
    admin.config.replace(new);
    Ok(Reloaded {
        applied: changed,
        needs_restart,
    })
}

/// Whether a config section differs between two reads of the file
/// (compared as JSON: every section serializes, not every one compares).
fn differs<T: serde::Serialize>(old: &T, new: &T) -> bool {
    serde_json::to_value(old).ok() != serde_json::to_value(new).ok()
}

/// Puts back into `new` (the file) each setting read only at start, as it
/// runs (`old`), and returns the names of those the file changes. (Key
/// names are pinned by verifiers: an origin_prefix rename is a deliberate
/// restart.)
fn keep_start_only(new: &mut Config, old: &Config) -> Vec<&'static str> {
    fn keep<T: serde::Serialize + Clone>(
        name: &'static str,
        new: &mut T,
        old: &T,
        changed: &mut Vec<&'static str>,
    ) {
        if differs(old, new) {
            changed.push(name);
            *new = old.clone();
        }
    }
    let mut changed = Vec::new();
    keep(
        "log.format",
        &mut new.log.format,
        &old.log.format,
        &mut changed,
    );
    keep("[ui]", &mut new.ui, &old.ui, &mut changed);
    let (n, o) = (&mut new.checkpoints, &old.checkpoints);
    keep(
        "checkpoints.origin_prefix",
        &mut n.origin_prefix,
        &o.origin_prefix,
        &mut changed,
    );
    keep(
        "checkpoints.interval_secs",
        &mut n.interval_secs,
        &o.interval_secs,
        &mut changed,
    );
    keep("[registry]", &mut new.registry, &old.registry, &mut changed);
    keep(
        "[federation]",
        &mut new.federation,
        &old.federation,
        &mut changed,
    );
    keep("[storage]", &mut new.storage, &old.storage, &mut changed);
    keep(
        "[retention]",
        &mut new.retention,
        &old.retention,
        &mut changed,
    );
    keep("[witness]", &mut new.witness, &old.witness, &mut changed);
    keep(
        "sse.keepalive_secs",
        &mut new.sse.keepalive_secs,
        &old.sse.keepalive_secs,
        &mut changed,
    );
    changed
}

/// Reloads on every SIGHUP until the daemon stops.
pub(crate) fn spawn_sighup(app: App) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup =
        signal(SignalKind::hangup()).map_err(|e| format!("installing SIGHUP handler: {e}"))?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match reload(&app).await {
                Ok(r) => {
                    tracing::info!(changed = ?r.applied, needs_restart = ?r.needs_restart, "configuration reloaded")
                }
                Err(e) => {
                    tracing::error!(error = %e, "configuration reload rejected; the previous configuration stays in force")
                }
            }
        }
    });
    Ok(())
}
