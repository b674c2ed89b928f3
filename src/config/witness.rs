//! `[witness]`: this instance as a witness of its peers' heads logs
//! (`POST /api/v1/witness/add-checkpoint`).

use serde::{Deserialize, Serialize};

/// The largest body cap accepted: a well-formed request never needs more.
const MAX_BODY_CAP: usize = logbook_tlog::witness::MAX_REQUEST_BYTES;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct WitnessConfig {
    /// Requests per second per peer (and for all unknown origins together).
    pub(crate) rate_per_sec: u32,
    /// Requests a peer may send at once before the rate applies.
    pub(crate) rate_burst: u32,
    /// Largest request body, in bytes; larger gets 413.
    pub(crate) max_body_bytes: usize,
}

impl Default for WitnessConfig {
    fn default() -> WitnessConfig {
        WitnessConfig {
            rate_per_sec: 2,
            rate_burst: 20,
            // What c2sp.org/signed-note asks verifiers to accept (16
            // signatures, post-quantum ones of nearly 5 kB among them).
            max_body_bytes: MAX_BODY_CAP,
        }
    }
}

impl WitnessConfig {
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.rate_per_sec == 0 || self.rate_burst == 0 {
            return Err("witness.rate_per_sec and witness.rate_burst must be positive".into());
        }
        if !(1024..=MAX_BODY_CAP).contains(&self.max_body_bytes) {
            return Err(format!(
                "witness.max_body_bytes must be between 1024 and {MAX_BODY_CAP}"
            ));
        }
        Ok(())
    }
}
