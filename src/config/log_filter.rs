//! Log filters (`[log] level`, `RUST_LOG`, `logbook admin log-level`): the
//! tracing directive syntax, checked more strictly than tracing does.
//!
//! tracing reads a bare word that is not a level (`inf`, `loud`) as a target
//! name, which enables that target only and so turns off every other log
//! line, including the warnings an operator needs. Here a bare word must be
//! a level; a target is named with `target=level`.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

/// The level names, for error messages.
pub(crate) const LEVELS: &str = "trace, debug, info, warn, error, off";

/// Longest filter accepted: a typo, not a policy, beyond that.
const MAX_LEN: usize = 1024;

/// Parses a filter such as `info` or `warn,logbook=debug`, refusing
/// anything that would not do what it says.
pub(crate) fn parse(text: &str) -> Result<EnvFilter, String> {
    let hint = format!(
        "a filter is a level ({LEVELS}) or target=level directives separated by commas, e.g. \"info\" or \"warn,logbook=debug\""
    );
    if text.trim().is_empty() {
        return Err(format!("the log filter is empty; {hint}"));
    }
    if text.len() > MAX_LEN {
        return Err(format!("the log filter is longer than {MAX_LEN} bytes"));
    }
    if text.chars().any(char::is_whitespace) {
        return Err(format!("{text:?} contains a space; {hint}"));
    }
    for directive in text.split(',').filter(|d| !d.is_empty()) {
        let bare = !directive.contains('=') && !directive.contains('[');
        if bare && directive.parse::<LevelFilter>().is_err() {
            return Err(format!("{directive:?} is not a level; {hint}"));
        }
    }
    EnvFilter::builder()
        .parse(text)
        .map_err(|e| format!("{text:?} is not a valid log filter ({e}); {hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_directives() {
        for good in [
            "info",
            "INFO",
            "off",
            "warn,logbook=debug",
            "logbook=debug,warn",
            "logbook_journal::store=trace",
            "[request]=debug",
        ] {
            assert!(parse(good).is_ok(), "{good}");
        }
        for bad in [
            "inf",
            "loud",
            "logbook=loud",
            "",
            " ",
            "info, debug",
            "info,inf",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("trace, debug, info"), "{bad:?}: {err}");
        }
    }
}
