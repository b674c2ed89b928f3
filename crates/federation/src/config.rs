//! `[federation]` and `[[peers]]`: the federation settings of the daemon's
//! TOML file (the root package's `config::Config` holds them as they are
//! here), and the checks the types alone cannot make.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::identity::{self, InstanceIdError};
use crate::inbox::MAX_BATCH;

/// `[federation]`: this instance's identity and the delivery and intake limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    /// Empty: a UUID generated on first start and kept in the data dir.
    pub instance_id: String,
    /// Shown to peers; empty: the instance id.
    pub name: String,
    pub timestamp_window_secs: u64,
    pub max_attempts: u32,
    pub max_age_secs: u64,
    pub retry_initial_ms: u64,
    pub retry_max_secs: u64,
    pub batch_size: usize,
    pub send_timeout_secs: u64,
    pub rate_limit_per_sec: u32,
    pub rate_limit_burst: u32,
    /// Most inbound subscriptions one peer may hold.
    pub max_subscriptions_per_peer: usize,
    /// Accept messages and acks without `recipientId` (protocol v1) for one
    /// release, while peers upgrade.
    pub accept_protocol_v1: bool,
    /// Requests on `/incoming/*` handled at once; more get 503 with Retry-After.
    pub incoming_concurrency: usize,
    /// Largest body accepted on `/incoming/*`, in bytes.
    pub incoming_max_body_bytes: usize,
    /// Bytes of received messages kept per peer; over it, 507 with Retry-After.
    pub peer_quota_bytes: u64,
    /// Sustained bytes per second each peer may send us.
    pub peer_bytes_per_sec: u64,
    /// Bytes a peer may send in a burst above the sustained rate.
    pub peer_bytes_burst: u64,
    /// Days delivered outbox rows and inbox dedupe records are kept; 0 prunes
    /// everything older than now at the next pass.
    pub keep_days: u64,
}

/// Room a message's envelope adds around an event the journal accepted;
/// `[federation] incoming_max_body_bytes` should be at least
/// `limits.max_body_bytes` plus this (its default is).
pub const INCOMING_EXTRA_BYTES: usize = 16 * 1024;

/// Most `[federation] incoming_max_body_bytes` may be: the bound on
/// `limits.max_body_bytes` (64 MiB) plus [`INCOMING_EXTRA_BYTES`], room for
/// the largest event any logbook peer accepts. The body is read before its
/// sender is known, `incoming_concurrency` at a time: a limit on it.
pub const MAX_INCOMING_BODY_BYTES: usize = (64 << 20) + INCOMING_EXTRA_BYTES;

/// 1 MiB (the default `limits.max_body_bytes`) plus the room federation
/// adds around one event ([`INCOMING_EXTRA_BYTES`], 16 KiB).
pub(crate) const DEFAULT_INCOMING_MAX_BODY_BYTES: usize = (1 << 20) + INCOMING_EXTRA_BYTES;

impl Default for FederationConfig {
    fn default() -> Self {
        FederationConfig {
            instance_id: String::new(),
            // As the shipped config.toml says; an explicit "" shows the instance id.
            name: "logbook".into(),
            timestamp_window_secs: 300,
            max_attempts: 20,
            max_age_secs: 7 * 86_400,
            retry_initial_ms: 1000,
            retry_max_secs: 300,
            batch_size: 500,
            send_timeout_secs: 10,
            // A flood guard far above honest delivery (thousands a second);
            // what a peer may cost us is bounded by the byte rate below.
            rate_limit_per_sec: 50_000,
            rate_limit_burst: 100_000,
            max_subscriptions_per_peer: 32,
            accept_protocol_v1: false,
            incoming_concurrency: 16,
            incoming_max_body_bytes: DEFAULT_INCOMING_MAX_BODY_BYTES,
            peer_quota_bytes: 1 << 30,
            peer_bytes_per_sec: 10 << 20,
            peer_bytes_burst: 32 << 20,
            keep_days: 30,
        }
    }
}

/// `[[peers]]`: a peer instance configured in the file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub instance_id: String,
    pub base_url: String,
    /// SPKI PEM of the peer's key. Empty: fetch it from the peer and pin `fingerprint`.
    #[serde(default)]
    pub public_key: String,
    /// Hex SHA-256 of the peer's SPKI DER.
    #[serde(default)]
    pub fingerprint: String,
    /// Event-type patterns the peer may subscribe to (and what they cover).
    /// Empty: nothing, until `logbook admin peers allow` grants something.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Whether the peer witnesses our heads log: we send it each new heads
    /// checkpoint to cosign. `logbook admin peers witness PEER on|off`
    /// overrides it.
    #[serde(default = "witness_by_default")]
    pub witness: bool,
}

/// Peers witness us unless told otherwise.
fn witness_by_default() -> bool {
    true
}

/// A `[federation]` setting out of range; it names the key at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    InstanceId(InstanceIdError),
    /// The key (under `federation.`) must be positive.
    NotPositive(&'static str),
    BatchTooLarge,
    /// `incoming_max_body_bytes` above [`MAX_INCOMING_BODY_BYTES`].
    BodyCapTooLarge,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::InstanceId(e) => write!(f, "federation.instance_id: {e}"),
            ConfigError::NotPositive(key) => write!(f, "federation.{key} must be positive"),
            ConfigError::BatchTooLarge => {
                write!(f, "federation.batch_size must be at most {MAX_BATCH}")
            }
            ConfigError::BodyCapTooLarge => write!(
                f,
                "federation.incoming_max_body_bytes must be at most {MAX_INCOMING_BODY_BYTES} (64 MiB + 16 KiB)"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

impl FederationConfig {
    /// Checks what the types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.instance_id.is_empty() {
            identity::validate_instance_id(&self.instance_id).map_err(ConfigError::InstanceId)?;
        }
        let positive = [
            ("timestamp_window_secs", self.timestamp_window_secs),
            ("max_attempts", u64::from(self.max_attempts)),
            ("max_age_secs", self.max_age_secs),
            ("retry_initial_ms", self.retry_initial_ms),
            ("retry_max_secs", self.retry_max_secs),
            ("batch_size", self.batch_size as u64),
            ("send_timeout_secs", self.send_timeout_secs),
            ("rate_limit_per_sec", u64::from(self.rate_limit_per_sec)),
            ("rate_limit_burst", u64::from(self.rate_limit_burst)),
            (
                "max_subscriptions_per_peer",
                self.max_subscriptions_per_peer as u64,
            ),
            ("incoming_concurrency", self.incoming_concurrency as u64),
            (
                "incoming_max_body_bytes",
                self.incoming_max_body_bytes as u64,
            ),
            ("peer_quota_bytes", self.peer_quota_bytes),
            ("peer_bytes_per_sec", self.peer_bytes_per_sec),
            ("peer_bytes_burst", self.peer_bytes_burst),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::NotPositive(key));
            }
        }
        if self.batch_size > MAX_BATCH {
            return Err(ConfigError::BatchTooLarge);
        }
        if self.incoming_max_body_bytes > MAX_INCOMING_BODY_BYTES {
            return Err(ConfigError::BodyCapTooLarge);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_zero_is_refused() {
        FederationConfig::default().validate().unwrap();
        let c = FederationConfig {
            batch_size: 0,
            ..FederationConfig::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::NotPositive("batch_size")));
        let c = FederationConfig {
            batch_size: MAX_BATCH + 1,
            ..FederationConfig::default()
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            format!("federation.batch_size must be at most {MAX_BATCH}")
        );
    }

    #[test]
    fn the_incoming_body_cap_is_bounded() {
        let at = |bytes| FederationConfig {
            incoming_max_body_bytes: bytes,
            ..FederationConfig::default()
        };
        at(MAX_INCOMING_BODY_BYTES).validate().unwrap();
        assert_eq!(
            at(MAX_INCOMING_BODY_BYTES + 1).validate(),
            Err(ConfigError::BodyCapTooLarge)
        );
        assert_eq!(
            at(0).validate(),
            Err(ConfigError::NotPositive("incoming_max_body_bytes"))
        );
    }
}
