//! Live configuration: values that can be swapped while the daemon runs, and
//! the SIGHUP reload that swaps them (tokens, `auth.required`, log level,
//! limits, CORS, `sse.max_streams`, `[[peers]]`).
//!
//! A reload reads and checks the whole new file first; if anything is wrong
//! the old config stays in force and the error, naming the key, is logged.
//! Connections are never touched: handlers read the current value per request.

use super::App;
use crate::config::Config;

/// Reads the config file again and applies what can change at run time.
/// `server.*` (addresses, paths) needs a restart and is kept as running.
/// Returns what changed, or why nothing did.
pub(crate) async fn reload(app: &App) -> Result<Vec<&'static str>, String> {
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
    if new.log.format != old.log.format {
        tracing::warn!("log.format changes need a restart; keeping the running format");
    }
    if new.ui != old.ui {
        tracing::warn!("ui.enabled changes need a restart; keeping the running setting");
    }
    if new.checkpoints.origin_prefix != old.checkpoints.origin_prefix {
        // Key names are pinned by verifiers; a rename is a deliberate restart.
        tracing::warn!(
            "checkpoints.origin_prefix changes need a restart; keeping the running prefix"
        );
    }
    if !new.auth.tokens.is_empty() && !http.tokens.latched() {
        // Persisted before the tokens take effect, so a restart keeps it.
        http.store
            .run(|s| s.latch_auth("a token was configured in config.toml"))
            .await
            .map_err(|e| format!("auth: recording that a token exists: {e}"))?;
    }
    admin
        .token_sources
        .set_config(&new.auth.tokens, &http.tokens);
    changed.push("auth.tokens");
    http.tokens.set_setting(new.auth.required);
    changed.push("auth.required");
    http.edge.policy.replace(crate::http::edge::Policy::new(
        &old.server.allowed_hosts,
        &new.http.cors_origins,
    ));
    http.edge.set_max_streams(new.sse.max_streams);
    changed.push("sse.max_streams");
    http.limits.replace(new.limits.clone());
    changed.push("limits");
    http.cors
        .replace(crate::http::cors::policy(&new.http.cors_origins));
    changed.push("http.cors_origins");
    // Listed peers are added or updated; peers added at run time stay.
    match crate::federation::peers::apply_config(federation, &new.peers).await {
        Ok(pending) => {
            for spec in pending {
                crate::federation::peers::spawn_pin_from_config(federation.clone(), spec);
            }
            changed.push("peers");
        }
        // Checked above, so only storage can fail here; the rest is applied.
        Err(e) => tracing::error!(error = %e, "applying [[peers]] on reload"),
    }
    // Checked with the whole file above.
    if let Ok(settings) = crate::federation::witnessing::settings(&new) {
        federation.witness_settings.replace(settings);
        federation.resupervise_witnesses().await;
        changed.push("witnesses");
    }
    admin.config.replace(new);
    Ok(changed)
}

/// Reloads on every SIGHUP until the daemon stops.
pub(crate) fn spawn_sighup(app: App) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup =
        signal(SignalKind::hangup()).map_err(|e| format!("installing SIGHUP handler: {e}"))?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match reload(&app).await {
                Ok(changed) => tracing::info!(?changed, "configuration reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "configuration reload rejected; the previous configuration stays in force")
                }
            }
        }
    });
    Ok(())
}
