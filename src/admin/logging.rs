//! Logging set-up with a reloadable level filter, so that `logbook admin
//! log-level` and a config reload change the level of a running daemon.

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, fmt, reload};

use crate::config::{Config, LogFormat};

static FILTER: OnceLock<(reload::Handle<EnvFilter, Registry>, String)> = OnceLock::new();

/// Parses a level filter in tracing syntax (`info`, `logbook=debug,warn`),
/// refusing anything it does not fully understand (see `config::log_filter`).
pub(crate) fn parse_filter(level: &str) -> Result<EnvFilter, String> {
    crate::config::log_filter::parse(level)
}

/// Installs the global subscriber. `RUST_LOG` overrides the configured level.
/// Both were checked before (`Config::check_before_start`); should one be
/// bad anyway, "info" is used, never a filter that hides everything.
pub(crate) fn init(config: &Config) {
    let text = std::env::var("RUST_LOG").unwrap_or_else(|_| config.log.level.clone());
    let filter = parse_filter(&text).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match config.log.format {
        LogFormat::Json => registry.with(layer.json()).try_init(),
        LogFormat::Text => registry.with(layer).try_init(),
    };
    if installed.is_ok() {
        let _ = FILTER.set((handle, text));
    }
}

/// Replaces the level filter of the running daemon.
pub(crate) fn set_level(level: &str) -> Result<(), String> {
    let filter = parse_filter(level)?;
    let (handle, _) = FILTER.get().ok_or("logging is not initialized")?;
    handle.reload(filter).map_err(|e| e.to_string())?;
    CURRENT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .replace(level.to_string());
    Ok(())
}

static CURRENT: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// The level filter in force, as it was given.
pub(crate) fn current_level() -> Option<String> {
    let set = CURRENT.lock().unwrap_or_else(|e| e.into_inner()).clone();
    set.or_else(|| FILTER.get().map(|(_, text)| text.clone()))
}

/// Whether `RUST_LOG` chose the level at start (a config reload then leaves it alone).
pub(crate) fn level_from_env() -> bool {
    std::env::var_os("RUST_LOG").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_checked() {
        assert!(parse_filter("info").is_ok());
        assert!(parse_filter("logbook=debug,warn").is_ok());
        assert!(parse_filter("logbook=loud").is_err());
        assert!(parse_filter("inf").is_err(), "a bare word must be a level");
    }
}
