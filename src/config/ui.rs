//! `[ui]`: the audit viewer served at `/` and `/ui/…` (`src/http/ui.rs`).

use serde::{Deserialize, Serialize};

/// `[ui]`: whether the daemon serves the audit viewer. Read at start.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct UiConfig {
    /// false: `/` and `/ui/…` answer 404 like any unknown route.
    pub(crate) enabled: bool,
}

impl Default for UiConfig {
    fn default() -> UiConfig {
        UiConfig { enabled: true }
    }
}
