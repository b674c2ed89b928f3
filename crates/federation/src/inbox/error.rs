//! [`InboxError`]: every way a peer's request can be refused. Its text is
//! the answer's `detail`; the variant says which refusal it is, and the
//! HTTP edge (`src/http/federation/problems.rs`) gives each variant its
//! status, problem type and title.

use std::fmt;

use logbook_journal::registry::InvalidPattern;
use logbook_journal::store::{ReceiveError, StoreError};
use uuid::Uuid;

use super::MAX_BATCH;
use crate::instance::SigningKeyError;
use crate::message::PROTOCOL_V1;
use crate::message::PROTOCOL_VERSION;
use crate::rotation::AnnouncementError;

/// What a peer over its quota is told to wait: room comes back when the
/// hourly retention pass prunes old messages.
const QUOTA_RETRY_AFTER_SECS: u64 = 3600;

#[derive(Debug)]
pub enum InboxError {
    /// The body or a message is not JSON (the parser's words).
    MalformedJson(String),
    /// A batch that is empty or larger than [`MAX_BATCH`].
    BatchSize,
    /// A batch from more than one sender.
    MixedSenders,
    /// More than one key announcement in a request (refused as content).
    TwoAnnouncements,
    /// Not an `EventMessage` (what is wrong with it).
    InvalidMessage(String),
    /// Not an `EventAck` (what is wrong with it).
    InvalidAck(String),
    /// The sender is not an active peer (why).
    UnknownPeer(String),
    /// The claimed key is not the pinned one, or the signature does not verify.
    BadSignature(String),
    StaleTimestamp {
        skew_secs: i64,
        window_secs: u64,
    },
    /// Addressed to another instance (`recipient`, cut to 128 characters).
    WrongRecipient {
        recipient: String,
        ours: String,
    },
    /// No `recipientId` while protocol v1 is not accepted.
    RecipientMissing,
    /// Something new signed with a key the peer rotated away from.
    RetiredKey {
        key_id: String,
        peer: String,
    },
    InvalidAnnouncement(AnnouncementError),
    /// The event type is refused (why).
    InvalidType(String),
    /// The payload is refused (why).
    InvalidPayload(String),
    /// The subscription pattern is refused (why).
    InvalidPattern(InvalidPattern),
    /// A subscription the local admin has not granted the peer.
    NotGranted(String),
    IdReused(Uuid),
    SubscriptionCap(usize),
    OverQuota {
        peer: String,
        used: u64,
        quota: u64,
    },
    /// Over a rate limit: of payload bytes (`bytes`) or of messages.
    RateLimited {
        peer: String,
        retry_after: u64,
        bytes: bool,
    },
    Storage(StoreError),
    /// Our side failed (a stored key unreadable, signing failed).
    Internal(String),
}

impl InboxError {
    /// When to retry, for the refusals that say so (a `Retry-After`).
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            InboxError::RateLimited { retry_after, .. } => Some(*retry_after),
            InboxError::OverQuota { .. } => Some(QUOTA_RETRY_AFTER_SECS),
            _ => None,
        }
    }

    /// A refusal from the store as the peer `peer` sees it.
    pub fn from_receive(peer: &str, e: ReceiveError) -> InboxError {
        match e {
            ReceiveError::IdReused(id) => InboxError::IdReused(id),
            ReceiveError::OverQuota { used, quota } => InboxError::OverQuota {
                peer: peer.to_string(),
                used,
                quota,
            },
            ReceiveError::SubscriptionCap(cap) => InboxError::SubscriptionCap(cap),
            ReceiveError::Storage(e) => InboxError::Storage(e),
        }
    }
}

impl From<StoreError> for InboxError {
    fn from(e: StoreError) -> InboxError {
        InboxError::Storage(e)
    }
}

/// No key to sign an ack with is our failure, whatever the cause.
impl From<SigningKeyError> for InboxError {
    fn from(e: SigningKeyError) -> InboxError {
        InboxError::Internal(e.to_string())
    }
}

impl fmt::Display for InboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InboxError::MalformedJson(e)
            | InboxError::InvalidMessage(e)
            | InboxError::InvalidAck(e)
            | InboxError::UnknownPeer(e)
            | InboxError::BadSignature(e)
            | InboxError::InvalidType(e)
            | InboxError::InvalidPayload(e)
            | InboxError::Internal(e) => f.write_str(e),
            InboxError::InvalidPattern(e) => e.fmt(f),
            InboxError::BatchSize => write!(f, "a batch holds 1 to {MAX_BATCH} messages"),
            InboxError::MixedSenders => {
                f.write_str("all messages of a batch must come from one instance")
            }
            InboxError::TwoAnnouncements => {
                f.write_str("a request carries at most one key announcement")
            }
            InboxError::StaleTimestamp {
                skew_secs,
                window_secs,
            } => write!(
                f,
                "the message timestamp is {skew_secs}s away from this instance's clock; at most {window_secs}s is accepted"
            ),
            InboxError::WrongRecipient { recipient, ours } => write!(
                f,
                "recipientId is {recipient:?}, not this instance ({ours:?})"
            ),
            InboxError::RecipientMissing => write!(
                f,
                "this instance speaks {PROTOCOL_VERSION} and requires a signed recipientId ({PROTOCOL_V1} is not accepted)"
            ),
            InboxError::RetiredKey { key_id, peer } => write!(
                f,
                "keyId {key_id:?} is a key {peer:?} rotated away from; it is accepted only for redeliveries of messages already received"
            ),
            InboxError::InvalidAnnouncement(e) => {
                write!(f, "{}: {e}", crate::message::KEY_ROTATED_TYPE)
            }
            InboxError::NotGranted(pattern) => write!(
                f,
                "this instance has not allowed you to subscribe to {pattern:?}; its admin grants patterns with `logbook admin peers allow`"
            ),
            InboxError::IdReused(id) => write!(
                f,
                "messageId {id} was already received with different content"
            ),
            InboxError::SubscriptionCap(cap) => write!(
                f,
                "a peer may hold at most {cap} subscriptions here; unsubscribe from one first"
            ),
            InboxError::OverQuota { peer, used, quota } => write!(
                f,
                "peer {peer:?} has {used} bytes of messages stored here, and its quota is {quota}; retry after old messages are pruned"
            ),
            InboxError::RateLimited {
                peer,
                retry_after,
                bytes: true,
            } => write!(
                f,
                "peer {peer:?} is over its byte rate limit; retry in {retry_after}s"
            ),
            InboxError::RateLimited {
                peer, retry_after, ..
            } => write!(
                f,
                "peer {peer:?} is over its rate limit; retry in {retry_after}s"
            ),
            InboxError::Storage(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for InboxError {}
