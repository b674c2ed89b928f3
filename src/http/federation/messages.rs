//! Publishing to subscribed peers, the messages listing (both directions,
//! paged by one cursor), dead letters (retry, drop) and the continuity
//! anomalies of received journal events.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use logbook_base::hex;
use logbook_journal::registry::MAX_TYPE_LEN;
use logbook_journal::store::{DeliveryStatus, InboxEntry, OutboxEntry};
use logbook_journal::validate::{InvalidEvent, validate_event};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use uuid::Uuid;

use super::invalid_body;
use crate::http::AppState;
use crate::http::extract::{JsonBody, Query, from_object};
use crate::http::problem::Problem;

/// Largest page of the messages listing (the default is 100).
const MAX_LIST: usize = 10_000;
/// Received messages read per storage page (also by the stream).
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MessagesQuery {
    direction: Option<String>,
    status: Option<String>,
    peer: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

/// Where a page of the messages listing starts: after an outbound row
/// (`o:SEQ:PEER`) or after an inbound position (`i:POSITION`). Outbound
/// rows are listed first (by peer, then seq), then inbound ones.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MessagesCursor {
    Outbound(String, u64),
    Inbound(u64),
}

impl MessagesCursor {
    fn parse(text: &str) -> Option<MessagesCursor> {
        match text.split_once(':')? {
            ("i", position) => position.parse().ok().map(MessagesCursor::Inbound),
            ("o", rest) => {
                let (seq, peer) = rest.split_once(':')?;
                Some(MessagesCursor::Outbound(
                    peer.to_string(),
                    seq.parse().ok()?,
                ))
            }
            _ => None,
        }
    }

    fn text(&self) -> String {
        match self {
            MessagesCursor::Outbound(peer, seq) => format!("o:{seq}:{peer}"),
            MessagesCursor::Inbound(position) => format!("i:{position}"),
        }
    }
}

fn outbound_json(e: &OutboxEntry) -> Value {
    let r = &e.record;
    json!({
        "direction": "outbound",
        "messageId": Uuid::from_bytes(r.message_id),
        "peer": e.peer,
        "seq": e.seq,
        "eventType": r.event_type,
        "payload": serde_json::from_str::<Value>(&r.payload).unwrap_or(Value::Null),
        "status": r.status.as_str(),
        "attempts": r.attempts,
        "lastError": r.last_error,
        "createdAt": r.created_at,
        "updatedAt": r.updated_at,
        "nextAttemptAt": (r.status == DeliveryStatus::Retrying).then_some(r.next_attempt_at),
    })
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

fn inbound_json(e: &InboxEntry) -> Value {
    serde_json::to_value(inbound(e)).expect("an inbound message always serializes")
}

/// `GET …/events/messages`: outbound rows (by peer, then seq), then
/// inbound ones (by position), `limit` (default 100, at most 10000) at a
/// time; `after=` the previous page's `next_after` continues.
pub(super) async fn messages(
    State(state): State<AppState>,
    Query(q): Query<MessagesQuery>,
) -> Result<Json<Value>, Problem> {
    let bad =
        |detail: String| Problem::bad_request("invalid-query", "Invalid query string", detail);
    let (inbound, outbound) = match q.direction.as_deref() {
        None | Some("") => (true, true),
        Some("inbound") => (true, false),
        Some("outbound") => (false, true),
        Some(other) => return Err(bad(format!("direction={other:?}: use inbound or outbound"))),
    };
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(DeliveryStatus::parse(s).ok_or_else(|| {
            bad(format!(
                "status={s:?}: use pending, delivered, retrying or dead"
            ))
        })?),
    };
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIST {
        return Err(bad(format!("limit={limit} is out of range 1..={MAX_LIST}")));
    }
    let after = match q.after.as_deref() {
        None | Some("") => None,
        Some(text) => Some(MessagesCursor::parse(text).ok_or_else(|| {
            bad("after= takes the next_after of a previous page (o:SEQ:PEER or i:POSITION)".into())
        })?),
    };
    if matches!(after, Some(MessagesCursor::Inbound(_))) && !inbound
        || matches!(after, Some(MessagesCursor::Outbound(..))) && !outbound
    {
        return Err(bad(
            "after= is a cursor of the other direction than direction= asks for".into(),
        ));
    }
    let peer = q.peer.filter(|p| !p.is_empty());
    let given = after.clone();
    let (list, last) = state
        .store
        .run(move |store| -> Result<_, Problem> {
            let mut list = Vec::new();
            let mut last = None;
            let inbound_from = match &after {
                Some(MessagesCursor::Inbound(position)) => *position,
                _ => 0,
            };
            if outbound && !matches!(after, Some(MessagesCursor::Inbound(_))) {
                let from = match &after {
                    Some(MessagesCursor::Outbound(p, seq)) => Some((p.as_str(), *seq)),
                    _ => None,
                };
                for e in store.outbox().after(peer.as_deref(), status, from, limit)? {
                    list.push(outbound_json(&e));
                    last = Some(MessagesCursor::Outbound(e.peer, e.seq));
                }
            }
            if inbound
                && list.len() < limit
                && status.is_none_or(|s| s == DeliveryStatus::Delivered)
            {
                let mut after = inbound_from;
                'pages: loop {
                    let page = store.inbox().after(after, STREAM_PAGE)?;
                    let short = page.len() < STREAM_PAGE;
                    for e in &page {
                        if list.len() >= limit {
                            break 'pages;
                        }
                        after = e.record.position;
                        if peer.as_deref().is_some_and(|p| p != e.record.peer) {
                            continue;
                        }
                        list.push(inbound_json(e));
                        last = Some(MessagesCursor::Inbound(e.record.position));
                    }
                    if short {
                        break;
                    }
                }
            }
            Ok((list, last))
        })
        .await?;
    // Like the events route: the cursor of the last message listed, or the
    // one given when the page is empty. A page shorter than `limit` is the
    // end for now.
    let next_after = last.or(given).map(|c| c.text());
    Ok(Json(json!({"messages": list, "next_after": next_after})))
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
    let count = state
        .store
        .run(move |store| {
            store
                .outbox()
                .retry_dead(body.message_id.as_ref(), body.peer.as_deref())
        })
        .await?;
    Ok(Json(json!({"requeued": count})))
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
        .run(move |store| store.outbox().drop_dead(id.as_ref(), who.as_deref()))
        .await?;
    if count > 0 {
        tracing::warn!(dropped = count, peer = ?peer, message_id = ?body.message_id, "dead federation messages dropped");
    }
    Ok(Json(json!({"dropped": count})))
}

/// Received journal events that broke their origin's chain: gaps and forks.
pub(super) async fn continuity(State(state): State<AppState>) -> Result<Json<Value>, Problem> {
    let list = state
        .store
        .run(move |store| -> Result<_, Problem> {
            let mut list = Vec::new();
            let mut after = 0;
            loop {
                let page = store.inbox().after(after, STREAM_PAGE)?;
                for e in &page {
                    after = e.record.position;
                    if e.record.continuity.as_ref().is_some_and(|c| {
                        matches!(
                            c.kind,
                            logbook_journal::store::ContinuityKind::Gap
                                | logbook_journal::store::ContinuityKind::Fork
                        )
                    }) {
                        list.push(inbound_json(e));
                    }
                }
                if page.len() < STREAM_PAGE {
                    break;
                }
            }
            Ok(list)
        })
        .await?;
    Ok(Json(json!({"anomalies": list})))
}

#[cfg(test)]
mod tests {
    use super::MessagesCursor;

    #[test]
    fn messages_cursors_round_trip() {
        for c in [
            MessagesCursor::Inbound(7),
            MessagesCursor::Outbound("peer:with.colons".into(), 12),
        ] {
            assert_eq!(MessagesCursor::parse(&c.text()), Some(c));
        }
        for bad in ["", "7", "i:", "i:x", "o:12", "o:x:beta", "x:1"] {
            assert_eq!(MessagesCursor::parse(bad), None, "{bad}");
        }
    }
}
