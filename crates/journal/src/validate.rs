//! The one check of an event's type and payload, for every way an event
//! enters: an append over HTTP, a message published to peers, and a message
//! received from one. Each caller maps [`InvalidEvent`] to its own answer
//! (the HTTP problem it has always returned); rules that belong to one path
//! only (the registry, the reserved `federation.*` types, the actor length)
//! stay with that path.

use logbook_base::canonical::{UnsafeInteger, check_numbers};
use logbook_base::canonical_check::SurelyCanonical;
use serde_json::Value;

use crate::chain::CanonicalPayload;
use crate::registry::{InvalidTypeName, validate_type_name};

/// Why an event's type or payload was refused, in the order checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidEvent {
    /// The type name breaks the grammar or the length limit.
    Type(InvalidTypeName),
    /// The payload holds an integer beyond ±(2^53−1), which RFC 8785
    /// canonical JSON cannot represent exactly.
    Payload(UnsafeInteger),
}

impl std::fmt::Display for InvalidEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InvalidEvent::Type(e) => write!(f, "the type {e}"),
            InvalidEvent::Payload(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for InvalidEvent {}

/// Checks `event_type` (grammar, at most `max_type_len` bytes) and then the
/// payload's numbers, and returns the payload canonicalized (RFC 8785) with
/// its hash: the form that is stored, signed and sent.
pub fn validate_event(
    event_type: &str,
    payload: &Value,
    max_type_len: usize,
) -> Result<CanonicalPayload, InvalidEvent> {
    validate_type_name(event_type, max_type_len).map_err(InvalidEvent::Type)?;
    check_numbers(payload).map_err(InvalidEvent::Payload)?;
    Ok(CanonicalPayload::new(payload))
}

/// [`validate_event`] for a payload received as text that the one-pass scan
/// vouched for: the same type check, and the payload stored as it came (its
/// numbers are within range by construction).
pub fn validate_canonical_event(
    event_type: &str,
    payload: SurelyCanonical<'_>,
    max_type_len: usize,
) -> Result<CanonicalPayload, InvalidEvent> {
    validate_type_name(event_type, max_type_len).map_err(InvalidEvent::Type)?;
    Ok(CanonicalPayload::from_canonical(payload))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::registry::MAX_TYPE_LEN;

    #[test]
    fn type_is_checked_before_payload_and_the_payload_comes_back_canonical() {
        let checked = validate_event("step.done", &json!({"b": 1, "a": "é"}), MAX_TYPE_LEN);
        assert_eq!(checked.unwrap().json.get(), r#"{"a":"é","b":1}"#);

        let huge = json!({"n": 9_007_199_254_740_992u64});
        assert!(matches!(
            validate_event("step.done", &huge, MAX_TYPE_LEN),
            Err(InvalidEvent::Payload(_))
        ));
        assert!(matches!(
            validate_event("Step", &huge, MAX_TYPE_LEN),
            Err(InvalidEvent::Type(InvalidTypeName::SegmentStart))
        ));
        assert!(matches!(
            validate_event("abc", &json!({}), 2),
            Err(InvalidEvent::Type(InvalidTypeName::TooLong(2)))
        ));
    }

    /// A payload sent already canonical comes out exactly as the parsed
    /// value does, and the type is checked the same way.
    #[test]
    fn a_canonical_text_validates_like_its_value() {
        let text = r#"{"a":"é","b":[1,-2,{"c":null}]}"#;
        let sure = SurelyCanonical::scan(text).unwrap();
        let value: Value = serde_json::from_str(text).unwrap();
        let from_text = validate_canonical_event("step.done", sure, MAX_TYPE_LEN).unwrap();
        let from_value = validate_event("step.done", &value, MAX_TYPE_LEN).unwrap();
        assert_eq!(from_text.json.get(), from_value.json.get());
        assert_eq!(from_text.hash, from_value.hash);
        assert_eq!(
            validate_canonical_event("Step", sure, MAX_TYPE_LEN).unwrap_err(),
            InvalidEvent::Type(InvalidTypeName::SegmentStart)
        );
    }
}
