//! The one place where the federation crate's refusals become answers:
//! each [`InboxError`] variant gets its status, problem type and title
//! here; its text is the `detail`, and a wait becomes `retryAfter` (which
//! `answer` turns into a `Retry-After` header).

use axum::http::StatusCode;
use logbook_federation::inbox::InboxError;

use crate::http::problem::Problem;

impl From<InboxError> for Problem {
    fn from(e: InboxError) -> Problem {
        let detail = e.to_string();
        let retry_after = e.retry_after();
        let (status, kind, title) = match e {
            InboxError::Storage(e) => return Problem::from(e),
            InboxError::Internal(_) => return Problem::internal(detail),
            InboxError::MalformedJson(_) => {
                (StatusCode::BAD_REQUEST, "invalid-json", "Malformed JSON")
            }
            InboxError::BatchSize | InboxError::MixedSenders => {
                (StatusCode::BAD_REQUEST, "invalid-batch", "Invalid batch")
            }
            InboxError::InvalidMessage(_) => (
                StatusCode::BAD_REQUEST,
                "invalid-message",
                "Invalid EventMessage",
            ),
            InboxError::InvalidAck(_) => {
                (StatusCode::BAD_REQUEST, "invalid-ack", "Invalid EventAck")
            }
            InboxError::BadSignature(_) => {
                (StatusCode::UNAUTHORIZED, "bad-signature", "Bad signature")
            }
            InboxError::StaleTimestamp { .. } => (
                StatusCode::UNAUTHORIZED,
                "stale-timestamp",
                "Timestamp outside the window",
            ),
            InboxError::WrongRecipient { .. } => (
                StatusCode::UNAUTHORIZED,
                "wrong-recipient",
                "Addressed to another instance",
            ),
            InboxError::RecipientMissing => (
                StatusCode::UNAUTHORIZED,
                "recipient-missing",
                "No recipientId",
            ),
            InboxError::RetiredKey { .. } => (
                StatusCode::UNAUTHORIZED,
                "retired-key",
                "Signed with a retired key",
            ),
            InboxError::UnknownPeer(_) => (
                StatusCode::FORBIDDEN,
                "unknown-peer",
                "Unknown or inactive peer",
            ),
            InboxError::NotGranted(_) => (
                StatusCode::FORBIDDEN,
                "subscription-not-allowed",
                "Subscription not allowed",
            ),
            InboxError::IdReused(_) => (
                StatusCode::CONFLICT,
                "message-id-reused",
                "Message id reused",
            ),
            InboxError::SubscriptionCap(_) => (
                StatusCode::CONFLICT,
                "subscription-limit",
                "Too many subscriptions",
            ),
            InboxError::TwoAnnouncements => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-batch",
                "Invalid batch",
            ),
            InboxError::InvalidAnnouncement(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-payload",
                "Invalid key announcement",
            ),
            InboxError::InvalidType(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-type",
                "Invalid event type",
            ),
            InboxError::InvalidPayload(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-payload",
                "Invalid payload",
            ),
            InboxError::InvalidPattern(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-pattern",
                "Invalid eventType pattern",
            ),
            InboxError::RateLimited { bytes: true, .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many bytes",
            ),
            InboxError::RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many messages",
            ),
            InboxError::OverQuota { .. } => (
                StatusCode::INSUFFICIENT_STORAGE,
                "peer-quota-exceeded",
                "Peer storage quota exceeded",
            ),
        };
        let problem = Problem::new(status, kind, title, detail);
        match retry_after {
            Some(seconds) => problem.with("retryAfter", seconds),
            None => problem,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logbook_journal::store::ReceiveError;

    /// The answers peers saw before the refusals became typed: status,
    /// type, title, detail and the wait.
    #[test]
    fn refusals_keep_their_answers() {
        let p = Problem::from(InboxError::RecipientMissing);
        assert_eq!(
            (p.status, p.kind, p.title),
            (
                StatusCode::UNAUTHORIZED,
                "recipient-missing",
                "No recipientId"
            )
        );
        assert!(
            p.detail.contains("requires a signed recipientId"),
            "{}",
            p.detail
        );
        let p = Problem::from(InboxError::RateLimited {
            peer: "beta".into(),
            retry_after: 7,
            bytes: true,
        });
        assert_eq!(
            (p.status, p.kind, p.title),
            (
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many bytes"
            )
        );
        assert_eq!(p.extra["retryAfter"], 7);
        let p = Problem::from(InboxError::from_receive(
            "beta",
            ReceiveError::OverQuota { used: 2, quota: 1 },
        ));
        assert_eq!(
            (p.status, p.kind),
            (StatusCode::INSUFFICIENT_STORAGE, "peer-quota-exceeded")
        );
        assert_eq!(p.extra["retryAfter"], 3600);
        let p = Problem::from(InboxError::TwoAnnouncements);
        assert_eq!(
            (p.status, p.kind, p.detail.as_str()),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-batch",
                "a request carries at most one key announcement"
            )
        );
        let p = Problem::from(InboxError::UnknownPeer("\"x\" is not a peer".into()));
        assert_eq!(
            (p.status, p.kind, p.title),
            (
                StatusCode::FORBIDDEN,
                "unknown-peer",
                "Unknown or inactive peer"
            )
        );
        assert!(p.extra.is_empty());
    }
}
