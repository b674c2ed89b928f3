//! Publishing to subscribed peers, dead letters (retry, drop), and the
//! shape of a received message in listings and the stream.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use logbook_base::hex;
use logbook_journal::registry::MAX_TYPE_LEN;
use logbook_journal::store::InboxEntry;
use logbook_journal::validate::{InvalidEvent, validate_event};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use uuid::Uuid;

use super::invalid_body;
use crate::http::AppState;
use crate::http::extract::{JsonBody, from_object};
use crate::http::problem::Problem;

/// Received or queued messages read per storage page (also bounded in
/// bytes: `READ_PAGE_BYTES`).
pub(super) const STREAM_PAGE: usize = 512;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PublishBody {
    event_type: String,
    #[serde(default)]
    payload: Value,
}

pub(super) async fn publish(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    let body: PublishBody =
        from_object(body).map_err(|e| invalid_body(e, "{eventType, payload}"))?;
    // Type first, then the reserved prefix, then the payload.
    let checked = validate_event(&body.event_type, &body.payload, MAX_TYPE_LEN);
    if let Err(InvalidEvent::Type(e)) = &checked {
        return Err(Problem::unprocessable(
            "invalid-type",
            "Invalid event type",
            format!("eventType {:?} {e}", body.event_type),
        ));
    }
    if body.event_type.starts_with("federation.") {
        return Err(Problem::unprocessable(
            "invalid-type",
            "Invalid event type",
            "federation.* types are reserved for control messages",
        ));
    }
    let payload = checked
        .map_err(|e| Problem::unprocessable("invalid-payload", "Invalid payload", e.to_string()))?
        .json
        .get()
        .to_string();
    crate::http::api::canonical_fits(payload.len(), state.limits.current().max_body_bytes)?;
    let event_type = body.event_type.clone();
    let queued = state
        .store
        .run(move |store| store.outbox().publish(&event_type, &payload))
        .await?;
    let messages: Vec<Value> = queued
        .iter()
        .map(|(peer, id)| json!({"peer": peer, "messageId": id}))
        .collect();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"eventType": body.event_type, "messages": messages})),
    )
        .into_response())
}

fn continuity_json(e: &InboxEntry) -> Value {
    match &e.record.continuity {
        None => Value::Null,
        Some(c) => json!({
            "status": c.kind.as_str(),
            "planId": Uuid::from_bytes(c.plan_id),
            "seq": c.seq,
            "expectedSeq": c.expected_seq,
            "conflictsWith": c.conflicts_with.map(Uuid::from_bytes),
        }),
    }
}

/// An inbound message as listings and the received stream show it. The
/// payload, stored as canonical JSON, is embedded as it is rather than
/// parsed into a tree and written again (the stream sends one per message).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct InboundMessage<'a> {
    direction: &'static str,
    message_id: Uuid,
    peer: &'a str,
    position: u64,
    event_type: &'a str,
    /// `null` for a stored text that is not JSON (never written so).
    payload: Option<&'a RawValue>,
    status: &'static str,
    attempts: u32,
    last_error: Option<()>,
    timestamp: i64,
    received_at: i64,
    payload_digest: String,
    continuity: Value,
}

pub(super) fn inbound(e: &InboxEntry) -> InboundMessage<'_> {
    let r = &e.record;
    InboundMessage {
        direction: "inbound",
        message_id: e.message_id,
        peer: &r.peer,
        position: r.position,
        event_type: &r.event_type,
        payload: serde_json::from_str(&r.payload).ok(),
        status: "delivered",
        attempts: 1,
        last_error: None,
        timestamp: r.timestamp,
        received_at: r.received_at,
        payload_digest: hex::encode(&r.digest),
        continuity: continuity_json(e),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RetryBody {
    #[serde(default)]
    message_id: Option<Uuid>,
    #[serde(default)]
    peer: Option<String>,
}

/// Puts dead messages back in the queue: one (`messageId`) or all (of a `peer`).
pub(super) async fn retry(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, Problem> {
    let body: RetryBody = from_object(body).map_err(|e| invalid_body(e, "{messageId?, peer?}"))?;
    let (id, peer) = (body.message_id, body.peer);
    let count = state
        .store
        .run(move |store| -> Result<_, Problem> {
            known_peer(store, peer.as_deref())?;
            let count = store.outbox().retry_dead(id.as_ref(), peer.as_deref())?;
            no_such_dead(id, count)?;
            Ok(count)
        })
        .await?;
    Ok(Json(json!({"requeued": count})))
}

/// A peer named that is not one: 404, so that a typo does not read as
/// "nothing to do".
fn known_peer(store: &logbook_journal::store::Store, peer: Option<&str>) -> Result<(), Problem> {
    match peer {
        Some(peer) if store.peers().get(peer)?.is_none() => {
            Err(Problem::not_found(format!("no peer {peer:?}")))
        }
        _ => Ok(()),
    }
}

/// A message named that matched no dead one: 404 (unknown, not dead, or of
/// another peer), for the same reason.
fn no_such_dead(id: Option<Uuid>, count: usize) -> Result<(), Problem> {
    match id {
        Some(id) if count == 0 => Err(Problem::not_found(format!(
            "no dead outbound message {id} (it is unknown, not dead, or of another peer)"
        ))),
        _ => Ok(()),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DropBody {
    #[serde(default)]
    message_id: Option<Uuid>,
    #[serde(default)]
    peer: Option<String>,
    #[serde(default)]
    all: bool,
}

/// Deletes dead messages: one (`messageId`, of `peer` if given), all of a
/// `peer`, or with `all: true` every one. Nothing is dropped by an empty body.
pub(super) async fn drop_dead(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, Problem> {
    let body: DropBody =
        from_object(body).map_err(|e| invalid_body(e, "{messageId?, peer?, all?}"))?;
    let peer = body.peer.filter(|p| !p.is_empty());
    if body.message_id.is_none() && peer.is_none() && !body.all {
        return Err(Problem::unprocessable(
            "invalid-request",
            "Invalid request",
            "name the dead messages to drop: messageId, peer, or all: true",
        ));
    }
    if body.all && (body.message_id.is_some() || peer.is_some()) {
        return Err(Problem::unprocessable(
            "invalid-request",
            "Invalid request",
            "all: true drops every dead message; do not combine it with messageId or peer",
        ));
    }
    let (id, who) = (body.message_id, peer.clone());
    let count = state
        .store
        .run(move |store| -> Result<_, Problem> {
            known_peer(store, who.as_deref())?;
            let count = store.outbox().drop_dead(id.as_ref(), who.as_deref())?;
            no_such_dead(id, count)?;
            Ok(count)
        })
        .await?;
    if count > 0 {
        tracing::warn!(dropped = count, peer = ?peer, message_id = ?body.message_id, "dead federation messages dropped");
    }
    Ok(Json(json!({"dropped": count})))
}
