//! What a request to `/incoming/*` costs before we know who sent it: almost
//! nothing. Anyone can reach these routes, so the body is read only under a
//! concurrency limit and a size cap, and only its envelope (`instanceId`,
//! `keyId` of each message) is parsed, borrowing from the body, before the
//! sender is checked. An unknown or inactive sender gets 403 before its
//! payload is looked at; a known one gets its messages parsed one at a
//! time from the same buffer (see `logbook_federation::inbox`). The
//! permits themselves are the runtime's (`federation::admission`).

use std::borrow::Cow;
use std::time::Duration;

use axum::extract::{FromRequest, Request};
use axum::response::Response;
use logbook_federation::batch;
use logbook_federation::inbox::{self, MAX_BATCH, is_batch};
use serde::Deserialize;
use tokio::sync::OwnedSemaphorePermit;

use crate::federation::admission::ClientSlot;
use crate::http::AppState;
use crate::http::problem::Problem;
use crate::http::serve::RemoteAddr;

/// Extra nesting allowed on `incoming/*`: message, journal event, batch
/// (a signed batch's object and its list of messages).
pub(crate) const INCOMING_EXTRA_DEPTH: usize = 4;

/// A body a known, active peer sent to `/incoming/*`, still as text. It
/// holds one of the `[federation] incoming_concurrency` permits until the
/// handler drops it.
pub(crate) struct IncomingBody {
    pub(crate) text: String,
    _permit: OwnedSemaphorePermit,
    _client_slot: Option<ClientSlot>,
}

/// Longest a body to `/incoming/*` may take to arrive (or
/// `limits.request_timeout_secs` if shorter): a peer sends a whole batch at
/// once, and a client trickling its body holds a permit meanwhile.
pub(crate) const INCOMING_BODY_SECS: u64 = 10;

/// The only members read before the sender is known. Everything else in
/// the message (the payload above all) is skipped without being built.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    #[serde(borrow)]
    instance_id: Cow<'a, str>,
    #[serde(borrow)]
    #[allow(dead_code)] // Required: a message without it is refused unread.
    key_id: Cow<'a, str>,
}

/// The envelope of a signed batch: its manifest's sender and key, and how
/// many messages it holds (each skipped unread).
#[derive(Deserialize)]
struct SignedBatchEnvelope<'a> {
    #[serde(borrow)]
    batch: Envelope<'a>,
    messages: Vec<serde::de::IgnoredAny>,
}

impl FromRequest<AppState> for IncomingBody {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        read(req, state)
            .await
            .map_err(|problem| super::answer(Err(problem)))
    }
}

async fn read(req: Request, state: &AppState) -> Result<IncomingBody, Problem> {
    let fed = state.federation.clone();
    // First the client's own share, so that one address cannot take every
    // permit below with bodies that trickle in.
    let client_slot = match req.extensions().get::<RemoteAddr>() {
        Some(remote) => Some(fed.incoming_per_client.take(remote.0.ip()).ok_or_else(|| {
            Problem::unavailable(format!(
                "more than {} federation requests from your address are being handled; retry shortly",
                fed.incoming_per_client.cap()
            ))
            .with("retryAfter", 1)
        })?),
        None => None,
    };
    // Taken before the body is read: beyond the limit nothing is buffered.
    let permit = fed.incoming.clone().try_acquire_owned().map_err(|_| {
        Problem::unavailable(format!(
            "more than {} federation requests are being handled; retry shortly",
            fed.config().incoming_concurrency
        ))
        .with("retryAfter", 1)
    })?;
    let limits = state.limits.current();
    let cap = fed.config().incoming_max_body_bytes;
    let timeout = Duration::from_secs(limits.request_timeout_secs.min(INCOMING_BODY_SECS));
    let bytes = crate::http::extract::read_json_body(req, cap, timeout).await?;
    // Usually takes the buffer over without a copy.
    let text = String::from_utf8(Vec::from(bytes)).map_err(|_| malformed("not UTF-8"))?;
    let max_depth = limits.max_json_depth.saturating_add(INCOMING_EXTRA_DEPTH);
    if raw_depth(text.as_bytes()) > max_depth {
        return Err(Problem::bad_request(
            "json-too-deep",
            "JSON nested too deeply",
            format!("the request body nests deeper than {max_depth} levels"),
        ));
    }
    let sender = sender_of(&text)?;
    fed.store
        .run(move |s| -> Result<(), Problem> {
            inbox::active_peer(s, &sender)?;
            Ok(())
        })
        .await?;
    // From a known peer: now the rest of the checks the journal makes.
    crate::http::extract::refuse_duplicate_members(text.as_bytes())?;
    crate::http::extract::refuse_unsafe_numbers(text.as_bytes())?;
    Ok(IncomingBody {
        text,
        _permit: permit,
        _client_slot: client_slot,
    })
}

fn malformed(detail: impl std::fmt::Display) -> Problem {
    Problem::bad_request(
        "invalid-json",
        "Malformed JSON",
        format!("the request body is not valid JSON: {detail}"),
    )
}

/// The one instance that sent every message of the body, read from the
/// envelopes only. A batch from several senders is refused.
fn sender_of(text: &str) -> Result<String, Problem> {
    let invalid = |e: serde_json::Error| {
        if e.is_syntax() || e.is_eof() {
            malformed(e)
        } else {
            Problem::bad_request(
                "invalid-message",
                "Invalid EventMessage",
                format!("{e}; every message names its sender: {{instanceId, keyId, …}}"),
            )
        }
    };
    let envelopes: Vec<Envelope<'_>> = if batch::is_signed_batch(text) {
        // A signed batch names its sender once, in its manifest; the
        // messages must name the same (checked with the signature).
        let signed: SignedBatchEnvelope<'_> = serde_json::from_str(text).map_err(invalid)?;
        if signed.messages.is_empty() || signed.messages.len() > MAX_BATCH {
            return Err(Problem::bad_request(
                "invalid-batch",
                "Invalid batch",
                format!("a batch holds 1 to {MAX_BATCH} messages"),
            ));
        }
        vec![signed.batch]
    } else if is_batch(text) {
        serde_json::from_str(text).map_err(invalid)?
    } else {
        vec![serde_json::from_str(text).map_err(invalid)?]
    };
    if envelopes.is_empty() || envelopes.len() > MAX_BATCH {
        return Err(Problem::bad_request(
            "invalid-batch",
            "Invalid batch",
            format!("a batch holds 1 to {MAX_BATCH} messages"),
        ));
    }
    let sender = &envelopes[0].instance_id;
    if envelopes.iter().any(|e| &e.instance_id != sender) {
        return Err(Problem::bad_request(
            "invalid-batch",
            "Invalid batch",
            "all messages of a batch must come from one instance",
        ));
    }
    Ok(sender.to_string())
}

/// How deep arrays and objects nest in JSON text, without parsing it
/// (brackets inside strings do not count). Malformed text is the parser's
/// business; this only bounds what the parser will be given.
fn raw_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_brackets_outside_strings() {
        assert_eq!(raw_depth(b"1"), 0);
        assert_eq!(raw_depth(br#"{"a":[1,{"b":"[[[{{"}]}"#), 3);
        assert_eq!(raw_depth(br#"["\"[[", [[]]]"#), 3);
    }

    #[test]
    fn the_sender_comes_from_the_envelopes_alone() {
        let one = r#"{"instanceId":"a","keyId":"k","payload":{"x":[1,2,3]},"extra":true}"#;
        assert_eq!(sender_of(one).unwrap(), "a");
        let batch = format!("[{one},{one}]");
        assert_eq!(sender_of(&batch).unwrap(), "a");
        let mixed = format!(r#"[{one},{{"instanceId":"b","keyId":"k"}}]"#);
        assert_eq!(sender_of(&mixed).unwrap_err().kind, "invalid-batch");
        assert_eq!(sender_of("[]").unwrap_err().kind, "invalid-batch");
        assert_eq!(
            sender_of(r#"{"keyId":"k"}"#).unwrap_err().kind,
            "invalid-message"
        );
        assert_eq!(sender_of("{").unwrap_err().kind, "invalid-json");
    }
}
