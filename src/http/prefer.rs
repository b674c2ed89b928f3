//! `Prefer: return=minimal` (RFC 7240) on appends: the short answer
//! `{plan_id, seq, id, signature}` instead of the whole event, which the
//! client just sent. The whole event stays the default.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use uuid::Uuid;

use logbook_journal::Event;

/// What a client asked `return=` to be, from its `Prefer` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Return {
    /// The whole event (no preference, `return=representation`, or a value
    /// we do not know: RFC 7240 §2 says to ignore what is not understood).
    Representation,
    Minimal,
}

/// Reads `return` from every `Prefer` header, in order. RFC 7240 §2: names
/// are case-insensitive, values may be quoted, parameters follow `;`, and
/// only the first instance of a preference counts.
pub(crate) fn return_preference(headers: &HeaderMap) -> Return {
    for value in headers.get_all("prefer") {
        let Ok(text) = value.to_str() else { continue };
        for preference in text.split(',') {
            let token = preference.split(';').next().unwrap_or("");
            let (name, value) = token.split_once('=').unwrap_or((token, ""));
            if !name.trim().eq_ignore_ascii_case("return") {
                continue;
            }
            let value = value.trim().trim_matches('"');
            return if value.eq_ignore_ascii_case("minimal") {
                Return::Minimal
            } else {
                Return::Representation
            };
        }
    }
    Return::Representation
}

#[derive(Serialize)]
struct Minimal<'a> {
    plan_id: &'a Uuid,
    seq: u64,
    id: &'a Uuid,
    signature: String,
}

/// Bytes of an event's JSON besides its type, actor and payload: two
/// UUIDs, three hex hashes, the key id, the time, member names (about 420).
const EVENT_JSON_OVERHEAD: usize = 512;

/// The answer to an append with `status`, shaped by the preference.
pub(crate) fn appended(status: StatusCode, event: &Event, preference: Return) -> Response {
    match preference {
        Return::Representation => {
            // Sized once: `Json` starts at 128 bytes and grows by doubling,
            // four copies for a 1 KiB payload.
            let size = EVENT_JSON_OVERHEAD
                + event.payload.get().len()
                + event.event_type.len()
                + event.actor.as_ref().map_or(0, String::len)
                + event.key_id.len();
            json_response(status, event, size)
        }
        Return::Minimal => {
            let body = Minimal {
                plan_id: &event.plan_id,
                seq: event.seq,
                id: &event.id,
                signature: logbook_base::hex::encode(&event.signature),
            };
            let mut response = json_response(status, &body, 256);
            response.headers_mut().insert(
                "preference-applied",
                HeaderValue::from_static("return=minimal"),
            );
            response
        }
    }
}

/// `value` as an `application/json` body written into one buffer of
/// `capacity` bytes (what `axum::Json` answers, without its regrowth).
fn json_response<T: Serialize>(status: StatusCode, value: &T, capacity: usize) -> Response {
    let mut body = Vec::with_capacity(capacity);
    match serde_json::to_writer(&mut body, value) {
        Ok(()) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        // Never for an event or ids; `Json` answers the failure as it would.
        Err(_) => Json(value).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefer(values: &[&str]) -> Return {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("prefer", HeaderValue::from_str(v).unwrap());
        }
        return_preference(&headers)
    }

    #[test]
    fn reads_the_first_return_preference() {
        assert_eq!(prefer(&[]), Return::Representation);
        assert_eq!(prefer(&["return=minimal"]), Return::Minimal);
        assert_eq!(prefer(&["RETURN = \"Minimal\"; foo=bar"]), Return::Minimal);
        assert_eq!(prefer(&["respond-async, return=minimal"]), Return::Minimal);
        assert_eq!(
            prefer(&["return=representation, return=minimal"]),
            Return::Representation
        );
        assert_eq!(prefer(&["wait=5", "return=minimal"]), Return::Minimal);
        assert_eq!(prefer(&["return=other"]), Return::Representation);
        assert_eq!(prefer(&["returns=minimal"]), Return::Representation);
    }
}
