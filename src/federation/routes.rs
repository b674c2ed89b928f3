//! The federation HTTP API under `/api/v1/federation`. The identity document
//! and the `incoming/*` routes are public (peers call them; every message is
//! signature-verified); the rest need a token with the `admin` scope
//! (changes) or `read` scope (listings and the stream).

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use uuid::Uuid;

use super::Federation;
use super::identity;
use super::inbox;
use super::intake::{IncomingBody, is_batch};
use super::message::{
    EventAck, EventMessage, PROTOCOL_VERSION, SUBSCRIBE_TYPE, UNSUBSCRIBE_TYPE, now_ms,
};
use super::peers::{self, AddError, PeerSpec};
use crate::config::Scope;
use crate::http::AppState;
use crate::http::auth;
use crate::http::extract::{JsonBody, Path, Query, from_object};
use crate::http::problem::Problem;
use logbook_base::canonical::canonical_json;
use logbook_base::hex;
use logbook_journal::registry::{MAX_TYPE_LEN, TypeFilter, TypePattern};
use logbook_journal::store::{
    DeliveryStatus, Direction, InboxEntry, Incoming, OutboxEntry, PeerRecord, PeerStatus,
    ReceiveError, ReceiveOutcome,
};
use logbook_journal::validate::{InvalidEvent, validate_event};

const BASE: &str = "/api/v1/federation";
/// Largest page of the messages listing (the default is 100).
const MAX_LIST: usize = 10_000;
/// Received messages read per storage page by the stream.
const STREAM_PAGE: usize = 512;

pub fn router(state: AppState) -> Router<AppState> {
    let public = Router::new()
        .route(&format!("{BASE}/instance"), get(instance))
        .route(&format!("{BASE}/incoming/event"), post(incoming_event))
        .route(&format!("{BASE}/incoming/event/ack"), post(incoming_ack))
        .route(
            &format!("{BASE}/incoming/subscribe"),
            post(incoming_subscribe),
        )
        .route(
            &format!("{BASE}/incoming/unsubscribe"),
            post(incoming_unsubscribe),
        );
    let read = Router::new()
        .route(&format!("{BASE}/events/subscriptions"), get(subscriptions))
        .route(&format!("{BASE}/events/messages"), get(messages))
        .route(&format!("{BASE}/events/continuity"), get(continuity))
        .route(&format!("{BASE}/events/stream"), get(stream))
        .route_layer(from_fn_with_state(state.clone(), require_read));
    let admin = Router::new()
        .route(&format!("{BASE}/peers"), get(list_peers).post(add_peer))
        .route(
            &format!("{BASE}/peers/{{instance_id}}/status"),
            post(set_peer_status),
        )
        .route(&format!("{BASE}/events/subscribe"), post(subscribe))
        .route(&format!("{BASE}/events/unsubscribe"), post(unsubscribe))
        .route(&format!("{BASE}/events/publish"), post(publish))
        .route(&format!("{BASE}/events/messages/retry"), post(retry))
        .route(&format!("{BASE}/events/messages/drop"), post(drop_dead))
        .route_layer(from_fn_with_state(state, require_admin));
    public.merge(read).merge(admin)
}

async fn require_admin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    auth::require(Scope::Admin, state, req, next).await
}

async fn require_read(State(state): State<AppState>, req: Request, next: Next) -> Response {
    auth::require(Scope::Read, state, req, next).await
}

fn fed(state: &AppState) -> Arc<Federation> {
    state.federation.clone()
}

// ---- public ---------------------------------------------------------------

async fn instance(State(state): State<AppState>) -> Json<Value> {
    let id = &state.federation.identity;
    let key = id.current();
    Json(json!({
        "instanceId": id.instance_id,
        "name": id.name,
        "publicKey": key.public_key_pem,
        "keyId": key.key_id,
        "fingerprint": key.fingerprint,
        "protocolVersion": PROTOCOL_VERSION,
        "capabilities": ["events", "batch", "journal-events", "subscribe", "ack"],
    }))
}

/// A problem with `retryAfter` (429, 503, 507) carries a `Retry-After` header.
pub(crate) fn answer(result: Result<Value, Problem>) -> Response {
    match result {
        Ok(value) => Json(value).into_response(),
        Err(problem) => match problem.extra.get("retryAfter").and_then(Value::as_u64) {
            Some(seconds) => {
                let mut response = problem.into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
                response
            }
            None => problem.into_response(),
        },
    }
}

// The body (and its concurrency permit) moves into the blocking task and is
// dropped when the work is done.
async fn incoming_event(State(state): State<AppState>, body: IncomingBody) -> Response {
    let fed = fed(&state);
    answer(
        state
            .store
            .run(move |store| inbox::receive_events(&fed, store, &body.text))
            .await,
    )
}

async fn incoming_ack(State(state): State<AppState>, body: IncomingBody) -> Response {
    let fed = fed(&state);
    answer(
        state
            .store
            .run(move |store| inbox::receive_acks(&fed, store, &body.text))
            .await,
    )
}

async fn incoming_subscribe(State(state): State<AppState>, body: IncomingBody) -> Response {
    answer(incoming_control(state, body, SUBSCRIBE_TYPE).await)
}

async fn incoming_unsubscribe(State(state): State<AppState>, body: IncomingBody) -> Response {
    answer(incoming_control(state, body, UNSUBSCRIBE_TYPE).await)
}

/// A peer asks us to start (or stop) sending it events matching a pattern.
async fn incoming_control(
    state: AppState,
    body: IncomingBody,
    expected_type: &'static str,
) -> Result<Value, Problem> {
    let fed = fed(&state);
    state.store.run(move |store| -> Result<_, Problem> {
        if is_batch(&body.text) {
            return Err(Problem::bad_request(
                "invalid-message",
                "Invalid EventMessage",
                "send one subscription request, not a batch",
            ));
        }
        let raw: &RawValue = serde_json::from_str(&body.text)
            .map_err(|e| Problem::bad_request("invalid-json", "Malformed JSON", e.to_string()))?;
        let (peer, messages) = inbox::verify_batch(&fed, store, &[raw])?;
        let message = &messages[0];
        if message.event_type != expected_type {
            return Err(Problem::unprocessable(
                "invalid-type",
                "Invalid event type",
                format!("this route takes eventType {expected_type:?}"),
            ));
        }
        // Exactly {"eventType": pattern}: nothing else rides along into the
        // store on a control request.
        if message.payload.as_object().is_none_or(|o| o.len() != 1) {
            return Err(Problem::unprocessable(
                "invalid-payload",
                "Invalid payload",
                "expected exactly {\"eventType\": pattern}",
            ));
        }
        let pattern = pattern_of(&message.payload)?;
        let payload = canonical_json(&message.payload);
        // Stored like an event's payload, so charged like one.
        inbox::rate_limit_bytes(&fed, &peer.instance_id, payload.len())?;
        inbox::rate_limit(&fed, &peer.instance_id, 1)?;
        let subscribe = expected_type == SUBSCRIBE_TYPE;
        if subscribe {
            check_granted(&peer, &pattern)?;
        }
        let request = Incoming {
            message_id: message.message_id,
            peer: peer.instance_id.clone(),
            event_type: message.event_type.clone(),
            payload,
            timestamp: message.timestamp,
            digest: message.content_digest(),
            journal: None,
        };
        let cap = fed.config.max_subscriptions_per_peer;
        match store
            .inbox().receive_control(&request, &pattern, subscribe, cap)
        {
            Ok(ReceiveOutcome::Stored) => {
                let change = if subscribe {
                    "subscribed"
                } else {
                    "unsubscribed"
                };
                tracing::info!(peer = %peer.instance_id, pattern, "peer {change}");
            }
            // A replay: acknowledged again, applied once.
            Ok(ReceiveOutcome::Redelivered) => {}
            Err(ReceiveError::SubscriptionCap(cap)) => {
                logbook_base::metrics::observe_refused_subscription(&peer.instance_id, "limit");
                tracing::warn!(peer = %peer.instance_id, pattern, cap, "refused a peer's subscription: over its limit");
                return Err(Problem::new(
                    StatusCode::CONFLICT,
                    "subscription-limit",
                    "Too many subscriptions",
                    format!("a peer may hold at most {cap} subscriptions here; unsubscribe from one first"),
                ));
            }
            Err(e) => return Err(inbox::receive_error(&peer.instance_id, e)),
        }
        inbox::sign_ack(&fed, store, &peer.instance_id, message)
    })
    .await
}

/// A peer may subscribe only to what the local admin granted it
/// (`[[peers]] allow`, `logbook admin peers allow`). A refusal is logged and
/// counted, so an admin sees a peer asking for more than it was given.
fn check_granted(peer: &PeerRecord, pattern: &str) -> Result<(), Problem> {
    let requested = TypePattern::parse(pattern)
        .map_err(|e| Problem::unprocessable("invalid-pattern", "Invalid eventType pattern", e))?;
    if peer.allows(&requested) {
        return Ok(());
    }
    logbook_base::metrics::observe_refused_subscription(&peer.instance_id, "not_granted");
    tracing::warn!(peer = %peer.instance_id, pattern, granted = ?peer.granted(), "refused a peer's subscription: not granted");
    Err(Problem::new(
        StatusCode::FORBIDDEN,
        "subscription-not-allowed",
        "Subscription not allowed",
        format!(
            "this instance has not allowed you to subscribe to {pattern:?}; its admin grants patterns with `logbook admin peers allow`"
        ),
    ))
}

fn pattern_of(payload: &Value) -> Result<String, Problem> {
    let text = payload
        .get("eventType")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            Problem::unprocessable(
                "invalid-payload",
                "Invalid payload",
                "expected {\"eventType\": pattern}",
            )
        })?;
    parse_pattern(text)
}

fn parse_pattern(text: &str) -> Result<String, Problem> {
    TypePattern::parse(text)
        .map(|p| p.as_string())
        .map_err(|e| Problem::unprocessable("invalid-pattern", "Invalid eventType pattern", e))
}

// ---- peers ----------------------------------------------------------------

async fn list_peers(State(state): State<AppState>) -> Result<Json<Value>, Problem> {
    let peers = state.store.run(move |store| store.peers().list()).await?;
    Ok(Json(
        json!({"peers": peers.iter().map(peers::peer_json).collect::<Vec<_>>()}),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AddPeerBody {
    instance_id: String,
    base_url: String,
    #[serde(default)]
    public_key: String,
    #[serde(default)]
    fingerprint: String,
}

fn invalid_body(e: impl std::fmt::Display, expected: &str) -> Problem {
    Problem::unprocessable(
        "invalid-request",
        "Invalid request",
        format!("{e}; expected {expected}"),
    )
}

async fn add_peer(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    let body: AddPeerBody = from_object(body)
        .map_err(|e| invalid_body(e, "{instanceId, baseUrl, publicKey?, fingerprint?}"))?;
    let spec = PeerSpec::new(
        &body.instance_id,
        &body.base_url,
        &body.public_key,
        &body.fingerprint,
    )
    .map_err(|e| Problem::unprocessable("invalid-peer", "Invalid peer", e))?;
    let (id, url) = (spec.instance_id.clone(), spec.base_url.clone());
    let peer = peers::add(&state.federation, spec)
        .await
        .map_err(|e| match e {
            AddError::Invalid(e) => Problem::unprocessable("invalid-peer", "Invalid peer", e),
            // Adding a peer must not be a network probe: what went wrong
            // (connection refused, a timeout, the remote's answer) goes to
            // the log for the admin, never to the caller.
            AddError::Pin(e) => {
                tracing::warn!(peer = %id, url = %url, error = ?e, "could not pin the peer's key");
                Problem::new(
                    StatusCode::BAD_GATEWAY,
                    "pin-failed",
                    "Could not pin the peer's key",
                    "the peer's identity could not be fetched, or it did not match the instance id, protocol version and fingerprint given; the daemon's log has the details",
                )
            }
            AddError::Storage(e) => Problem::internal(e),
        })?;
    tracing::info!(peer = %peer.instance_id, "peer added");
    Ok((StatusCode::CREATED, Json(peers::peer_json(&peer))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusBody {
    status: String,
}

async fn set_peer_status(
    State(state): State<AppState>,
    Path(instance_id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, Problem> {
    let body: StatusBody = from_object(body).map_err(|e| invalid_body(e, "{status}"))?;
    let status = PeerStatus::parse(&body.status).ok_or_else(|| {
        Problem::unprocessable(
            "invalid-status",
            "Invalid status",
            "status is active, suspended or removed",
        )
    })?;
    let fed = fed(&state);
    let peer = state
        .store
        .run(move |store| -> Result<_, Problem> {
            let mut peer = store
                .peers()
                .get(&instance_id)?
                .ok_or_else(|| Problem::not_found(format!("no peer {instance_id:?}")))?;
            peer.status = status;
            peer.updated_at = now_ms();
            store.peers().put(&peer)?;
            Ok(peer)
        })
        .await?;
    if peer.status != PeerStatus::Removed {
        fed.ensure_worker(&peer.instance_id);
    }
    tracing::info!(peer = %peer.instance_id, status = peer.status.as_str(), "peer status changed");
    Ok(Json(peers::peer_json(&peer)))
}

// ---- subscriptions --------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SubscribeBody {
    peer: String,
    event_type: String,
}

async fn subscribe(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    control(state, body, SUBSCRIBE_TYPE).await
}

async fn unsubscribe(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    control(state, body, UNSUBSCRIBE_TYPE).await
}

/// Sends a signed (un)subscribe request to the peer, verifies its signed
/// ack, and records the subscription on this side.
async fn control(
    state: AppState,
    body: Value,
    event_type: &'static str,
) -> Result<Response, Problem> {
    let body: SubscribeBody =
        from_object(body).map_err(|e| invalid_body(e, "{peer, eventType}"))?;
    let pattern = parse_pattern(&body.event_type)?;
    let fed = fed(&state);
    let (fed2, peer_id, pattern2) = (fed.clone(), body.peer.clone(), pattern.clone());
    let (peer, key, request) = state
        .store
        .run(move |store| -> Result<_, Problem> {
            let (peer, key) = inbox::active_peer(store, &peer_id)
                .map_err(|p| Problem::unprocessable(p.kind, p.title, p.detail))?;
            let (signing_key, _) = fed2
                .signing_key_for(store, &peer.instance_id)
                .map_err(Problem::internal)?;
            let request = EventMessage::signed(
                &signing_key.private_key,
                &signing_key.key_id,
                &fed2.identity.instance_id,
                &peer.instance_id,
                Uuid::new_v4(),
                event_type,
                json!({"eventType": pattern2}),
                now_ms(),
            )
            .map_err(Problem::internal)?;
            Ok((peer, key, request))
        })
        .await?;
    let path = if event_type == SUBSCRIBE_TYPE {
        "subscribe"
    } else {
        "unsubscribe"
    };
    let url = format!("{}{BASE}/incoming/{path}", peer.base_url);
    let peer_error = |detail: String| {
        Problem::new(
            StatusCode::BAD_GATEWAY,
            "peer-error",
            "The peer did not accept the request",
            detail,
        )
    };
    let response = fed
        .client
        .post(&url)
        .json(&request)
        .send()
        .await
        .map_err(|e| peer_error(format!("sending to {url}: {e}")))?;
    let status = response.status();
    let answer: Value = super::read_peer_json(response).await.unwrap_or(Value::Null);
    if !status.is_success() {
        let detail = answer
            .get("detail")
            .and_then(Value::as_str)
            .unwrap_or_default();
        return Err(peer_error(format!(
            "{url} answered HTTP {status}: {}",
            logbook_journal::store::inert_text(detail)
        )));
    }
    let ack: EventAck = from_object(answer.clone())
        .map_err(|e| peer_error(format!("the answer is not an EventAck: {e}")))?;
    let (fed2, peer2) = (fed.clone(), peer.clone());
    state
        .store
        .run(move |store| -> Result<_, Problem> {
            if ack.instance_id != peer2.instance_id
                || ack.correlation_id != request.message_id
                || !ack.received
            {
                return Err(peer_error(
                    "the ack does not acknowledge this request from this peer".into(),
                ));
            }
            inbox::check_signed(&fed2, &peer2, &key, &answer, &ack.key_id, ack.timestamp)
                .and_then(|()| inbox::check_recipient(&fed2, ack.recipient_id.as_deref()))
                .map_err(|p| peer_error(format!("the ack is not valid: {}", p.detail)))?;
            if event_type == SUBSCRIBE_TYPE {
                store
                    .peers()
                    .subscribe(Direction::Outbound, &peer2.instance_id, &pattern)?;
            } else {
                store
                    .peers()
                    .unsubscribe(Direction::Outbound, &peer2.instance_id, &pattern)?;
            }
            Ok(())
        })
        .await?;
    let body =
        json!({"peer": peer.instance_id, "eventType": body.event_type, "direction": "outbound"});
    let status = if event_type == SUBSCRIBE_TYPE {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(body)).into_response())
}

async fn subscriptions(State(state): State<AppState>) -> Result<Json<Value>, Problem> {
    let subs = state
        .store
        .run(move |store| store.peers().subscriptions())
        .await?;
    let list: Vec<Value> = subs
        .iter()
        .map(|s| json!({"direction": s.direction.as_str(), "peer": s.peer, "eventType": s.pattern, "createdAt": s.created_at}))
        .collect();
    Ok(Json(json!({"subscriptions": list})))
}

// ---- publish and messages -------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PublishBody {
    event_type: String,
    #[serde(default)]
    payload: Value,
}

async fn publish(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    let body: PublishBody =
        from_object(body).map_err(|e| invalid_body(e, "{eventType, payload}"))?;
    // Type first, then the reserved prefix, then the payload, as before.
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
struct MessagesQuery {
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

fn inbound_json(e: &InboxEntry) -> Value {
    let r = &e.record;
    json!({
        "direction": "inbound",
        "messageId": e.message_id,
        "peer": r.peer,
        "position": r.position,
        "eventType": r.event_type,
        "payload": serde_json::from_str::<Value>(&r.payload).unwrap_or(Value::Null),
        "status": "delivered",
        "attempts": 1,
        "lastError": null,
        "timestamp": r.timestamp,
        "receivedAt": r.received_at,
        "payloadDigest": hex::encode(&r.digest),
        "continuity": continuity_json(e),
    })
}

/// `GET …/events/messages`: outbound rows (by peer, then seq), then
/// inbound ones (by position), `limit` (default 100, at most 10000) at a
/// time; `after=` the previous page's `next_after` continues.
async fn messages(
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
async fn retry(
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
async fn drop_dead(
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
async fn continuity(State(state): State<AppState>) -> Result<Json<Value>, Problem> {
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

// ---- stream ---------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StreamQuery {
    event_type: Option<String>,
    after: Option<u64>,
    // Read by the auth layer; accepted here so it is not an unknown key.
    #[allow(dead_code)]
    #[serde(rename = "access_token")]
    access_token: Option<String>,
}

/// `GET …/events/stream?eventType=PATTERN`: SSE of received messages, `id:`
/// = inbox position; resumes after `Last-Event-ID` (or `?after=`).
async fn stream(
    State(state): State<AppState>,
    grant: auth::Grant,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Result<Response, Problem> {
    let after = crate::http::api::cursor(&headers, q.after)?;
    let filter = TypeFilter::parse(q.event_type.as_deref().unwrap_or("")).map_err(|e| {
        Problem::bad_request(
            "invalid-query",
            "Invalid query string",
            format!("eventType: {e}"),
        )
    })?;
    let fed = fed(&state);
    // Watch before reading, so nothing stored after the read is missed.
    let changes = fed.store.inbox_watch();
    let head = state
        .store
        .run(move |store| store.inbox().last_position())
        .await?;
    if after > head {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "cursor-beyond-head",
            "Cursor beyond head",
            format!("the cursor {after} is beyond the last received message {head}"),
        ));
    }
    let events = received_stream(fed, filter, after, changes, state.shutdown.clone());
    // Ends when the reader's token is revoked, like the journal's streams.
    let revoked = auth::revoked(state.tokens.clone(), grant);
    let events = crate::http::sse::until_revoked(events, revoked);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(state.keepalive))
        .into_response())
}

fn received_stream(
    fed: Arc<Federation>,
    filter: TypeFilter,
    after: u64,
    mut changes: tokio::sync::watch::Receiver<u64>,
    shutdown: tokio_util::sync::CancellationToken,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    async_stream::stream! {
        let mut cursor = after;
        loop {
            let from = cursor;
            let page = fed.store.run(move |s| s.inbox().after(from, STREAM_PAGE)).await;
            let page = match page {
                Ok(page) => page,
                Err(e) => {
                    let problem = Problem::internal(e.to_string());
                    yield Ok(SseEvent::default().event("error").data(problem.body().to_string()));
                    return;
                }
            };
            let full = page.len() == STREAM_PAGE;
            for e in page {
                cursor = e.record.position;
                if filter.matches(&e.record.event_type) {
                    yield Ok(SseEvent::default().id(cursor.to_string()).data(inbound_json(&e).to_string()));
                }
            }
            if full {
                continue;
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                changed = changes.changed() => if changed.is_err() { return },
            }
        }
    }
}

/// The key fingerprint an admin pins for a PEM public key.
pub fn pem_fingerprint(pem: &str) -> Result<String, String> {
    Ok(identity::fingerprint(&identity::spki_der(
        &identity::public_key_from_pem(pem)?,
    )?))
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
