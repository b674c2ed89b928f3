//! [`Instance`]: what the protocol needs to know about this instance to
//! check, accept and sign messages: its identity, its `[federation]`
//! settings and the per-peer rate limits of its inbox. The daemon's
//! runtime holds one and lends it to the inbox and outbox logic.

use std::fmt;
use std::sync::Arc;

use logbook_journal::store::{Store, StoreError};

use crate::config::FederationConfig;
use crate::identity::{self, Identity, OwnKey};
use crate::inbox::RateLimiter;

pub struct Instance {
    pub identity: Identity,
    pub config: FederationConfig,
    /// `[federation] rate_limit_per_sec` and `rate_limit_burst`, in messages.
    pub(crate) limiter: RateLimiter,
    /// `[federation] peer_bytes_per_sec` and `peer_bytes_burst`.
    pub(crate) byte_limiter: RateLimiter,
}

/// Why there is no key to sign with for a peer.
#[derive(Debug)]
pub enum SigningKeyError {
    Storage(StoreError),
    /// The retired key a peer still pins (`key_id`) is not on disk.
    MissingRetired {
        key_id: String,
        peer: String,
    },
}

impl fmt::Display for SigningKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SigningKeyError::Storage(e) => e.fmt(f),
            SigningKeyError::MissingRetired { key_id, peer } => write!(
                f,
                "the retired key {key_id}, which {peer} still pins, is missing from {}/",
                identity::RETIRED_KEYS_DIR
            ),
        }
    }
}

impl std::error::Error for SigningKeyError {}

impl From<StoreError> for SigningKeyError {
    fn from(e: StoreError) -> SigningKeyError {
        SigningKeyError::Storage(e)
    }
}

impl Instance {
    /// An instance with the rate limits of `config`.
    pub fn new(identity: Identity, config: FederationConfig) -> Instance {
        Instance {
            limiter: RateLimiter::new(config.rate_limit_per_sec, config.rate_limit_burst),
            byte_limiter: RateLimiter::with_rates(
                config.peer_bytes_per_sec as f64,
                config.peer_bytes_burst as f64,
            ),
            identity,
            config,
        }
    }

    /// The key to sign with for `peer`: the key the peer pins for us. That
    /// is our current key, unless an announcement of a newer key is still
    /// undelivered to the peer; then it is the key that announcement is
    /// signed with, and the announcement's outbox seq is returned too
    /// (nothing after it may be signed with that key).
    pub fn signing_key_for(
        &self,
        store: &Store,
        peer: &str,
    ) -> Result<(Arc<OwnKey>, Option<u64>), SigningKeyError> {
        match store.rotations().pending(peer)? {
            None => Ok((self.identity.current(), None)),
            Some((seq, old_key_id)) => match self.identity.retired(&old_key_id) {
                Some(key) => Ok((key, Some(seq))),
                None => Err(SigningKeyError::MissingRetired {
                    key_id: old_key_id,
                    peer: peer.to_string(),
                }),
            },
        }
    }
}
