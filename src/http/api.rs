//! Journal routes: append, read, verify, list plans and types, and the SSE
//! streams. Each handler validates, calls the journal, and shapes the answer.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use logbook_journal::fanout::Subscription;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::append_body::AppendJson;
use super::auth;
use super::decimal::{self, decimal};
use super::extract::{NoQuery, PlanId, Query};
use super::prefer;
use super::problem::Problem;
use crate::config::Limits;
use crate::http::sse;
use logbook_base::canonical::{canonical_json, sha256};
use logbook_base::hex;
use logbook_base::reloadable::Reloadable;
use logbook_journal::event::{Timestamp, parse_plan_id};
use logbook_journal::follow::{Source, follow};
use logbook_journal::registry::TypeFilter;
use logbook_journal::store::{
    AppendError, AppendRequest, AsyncStore, Idempotency, PlanHead, StoreError,
};
use logbook_journal::validate::InvalidEvent;

/// What the journal routes read: the store and its fan-out, the registry,
/// the limits, and what an SSE stream needs to end (shutdown, the tokens).
/// A view of the [`AppState`], so that taking it per request costs one
/// reference count, not a clone of each part.
#[derive(Clone)]
pub(crate) struct ApiState(AppState);

impl std::ops::Deref for ApiState {
    type Target = super::AppParts;
    fn deref(&self) -> &super::AppParts {
        &self.0
    }
}

impl FromRef<AppState> for ApiState {
    fn from_ref(state: &AppState) -> ApiState {
        ApiState(state.clone())
    }
}

/// The JSON body extractor reads the limits.
impl FromRef<ApiState> for Arc<Reloadable<Limits>> {
    fn from_ref(state: &ApiState) -> Arc<Reloadable<Limits>> {
        state.limits.clone()
    }
}

/// Longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 255;
/// Largest page a list call returns.
const MAX_LIMIT: usize = 1000;

pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub(crate) async fn event_types(State(state): State<ApiState>) -> Json<Value> {
    Json(json!(&*state.registry))
}

/// `POST /api/plans/{plan_id}/events`: 201 once the event is fsynced; 200 for
/// an idempotent retry.
pub(crate) async fn append(
    State(state): State<ApiState>,
    PlanId(plan_id): PlanId,
    headers: HeaderMap,
    body: AppendJson,
) -> Result<Response, Problem> {
    // Only the daemon writes the system journal (tombstones, key rotations).
    if plan_id == logbook_journal::store::admin::SYSTEM_PLAN {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "system-journal",
            "System journal",
            "the plan 00000000-0000-0000-0000-000000000000 is the system journal; only the daemon appends to it",
        ));
    }
    let idempotency_key = idempotency_key(&headers)?;
    let preference = prefer::return_preference(&headers);
    let limits = state.limits.current();
    let body = body.into_fields(limits.max_type_len).map_err(|e| {
        Problem::unprocessable(
            "invalid-request",
            "Invalid append request",
            format!("{e}; expected {{type, actor?, payload?, expected_seq?}}"),
        )
    })?;
    let payload = body.payload.map_err(|e| match e {
        InvalidEvent::Type(e) => Problem::unprocessable(
            "invalid-type",
            "Invalid event type",
            format!("type {:?} {e}", body.event_type),
        ),
        InvalidEvent::Payload(e) => {
            Problem::unprocessable("invalid-payload", "Invalid payload", e.to_string())
        }
    })?;
    canonical_fits(payload.json.get().len(), limits.max_body_bytes)?;
    if !state.registry.accepts(&body.event_type) {
        return Err(Problem::unprocessable(
            "unknown-type",
            "Unknown event type",
            format!(
                "type {:?} is not registered (see GET /api/event-types): register it in the config file with [[registry.types]] name = {:?}, or accept every type with [registry] strict = false, then restart the daemon",
                body.event_type, body.event_type
            ),
        ));
    }
    if let Some(actor) = &body.actor {
        check_actor(actor, limits.max_actor_len)?;
    }
    let idempotency = idempotency_key.map(|key| {
        // The fingerprint covers the request as normalized, so an omitted
        // payload and an explicit {} are the same request.
        let request = json!({
            "type": body.event_type,
            "actor": body.actor,
            "payload_hash": hex::encode(&payload.hash),
            "expected_seq": body.expected_seq,
        });
        Idempotency {
            key,
            fingerprint: sha256(canonical_json(&request).as_bytes()),
        }
    });
    let request = AppendRequest {
        plan_id,
        event_type: body.event_type,
        actor: body.actor,
        payload,
        expected_seq: body.expected_seq,
        idempotency,
    };
    match state.store.append(request).await {
        Ok(appended) if appended.replayed => {
            let mut response = prefer::appended(StatusCode::OK, &appended.event, preference);
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            Ok(response)
        }
        Ok(appended) => Ok(prefer::appended(
            StatusCode::CREATED,
            &appended.event,
            preference,
        )),
        Err(AppendError::SeqConflict { expected, head }) => Err(Problem::new(
            StatusCode::CONFLICT,
            "seq-conflict",
            "Sequence conflict",
            format!("expected_seq is {expected} but the plan's head is {head}"),
        )
        .with("expected_seq", expected)
        .with("head_seq", head)),
        Err(AppendError::IdempotencyConflict { seq }) => Err(Problem::new(
            StatusCode::CONFLICT,
            "idempotency-conflict",
            "Idempotency key reused",
            "this Idempotency-Key was already used for a different request on this plan",
        )
        .with("seq", seq)),
        Err(AppendError::PlanDeleted { tombstone_seq }) => {
            Err(plan_deleted(plan_id, tombstone_seq, None))
        }
        Err(AppendError::Unavailable) => Err(Problem::unavailable("the journal is shutting down")),
        Err(AppendError::Storage(e)) => Err(e.into()),
    }
}

/// An actor names who acted, and is shown on terminals, in logs and in the
/// viewer: a character that acts on a terminal (a newline, an escape
/// sequence, a bidirectional override) could forge or hide what is shown
/// beside it, so none is taken.
fn check_actor(actor: &str, max_len: usize) -> Result<(), Problem> {
    let invalid = |detail: String| Problem::unprocessable("invalid-actor", "Invalid actor", detail);
    if actor.chars().count() > max_len {
        return Err(invalid(format!(
            "actor is longer than {max_len} characters"
        )));
    }
    if let Some((at, c)) = actor
        .chars()
        .enumerate()
        .find(|&(_, c)| logbook_base::terminal::acts_on_terminal(c))
    {
        return Err(invalid(format!(
            "actor holds U+{:04X}, a control or bidirectional control character, at position {} (counting from 1)",
            u32::from(c),
            at + 1
        )));
    }
    Ok(())
}

/// 410 for a plan that was deleted (at `size`, when known): its id is
/// never used again.
fn plan_deleted(plan_id: Uuid, tombstone_seq: u64, size: Option<u64>) -> Problem {
    let at = size.map_or(String::new(), |n| format!(" at size {n}"));
    Problem::new(
        StatusCode::GONE,
        "plan-deleted",
        "Plan deleted",
        format!(
            "plan {plan_id} was deleted{at} (system journal seq {tombstone_seq}); a deleted plan's id is never used again"
        ),
    )
    .with("tombstone_seq", tombstone_seq)
}

/// The one value of the header `name`; `Err` if it is sent more than once
/// (RFC 9110 §5.3 would join them with commas into a value that is not one
/// key or cursor, and taking either one alone would be a silent choice).
fn single<'h>(
    headers: &'h HeaderMap,
    name: &str,
) -> Result<Option<&'h axum::http::HeaderValue>, ()> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    match values.next() {
        Some(_) => Err(()),
        None => Ok(first),
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let bad = || {
        Problem::bad_request(
            "invalid-idempotency-key",
            "Invalid Idempotency-Key",
            format!(
                "Idempotency-Key must be sent once, 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
            ),
        )
    };
    let Some(value) = single(headers, "idempotency-key").map_err(|()| bad())? else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| bad())?;
    if text.is_empty()
        || text.len() > MAX_IDEMPOTENCY_KEY
        || !text.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(bad());
    }
    Ok(Some(text.to_string()))
}

pub(crate) fn head_json(plan_id: &Uuid, head: &PlanHead) -> Value {
    json!({
        "plan_id": plan_id,
        "head_seq": head.last_seq,
        "head_signature": hex::encode(&head.last_signature),
        "count": head.count,
        "first_at": Timestamp(head.first_at),
        "last_at": Timestamp(head.last_at),
    })
}

pub(super) async fn plan_head(state: &ApiState, plan_id: Uuid) -> Result<PlanHead, Problem> {
    match state.store.run(move |s| s.head(&plan_id)).await? {
        Some(head) => Ok(head),
        None => Err(missing_plan(&state.store, plan_id).await),
    }
}

/// The answer for a plan with no head: 410 when it was deleted (its id is
/// never used again, as an append or a stream of it is told), else 404.
pub(crate) async fn missing_plan(store: &AsyncStore, plan_id: Uuid) -> Problem {
    match store.run(move |s| s.deleted_plan(&plan_id)).await {
        Ok(Some(deleted)) => plan_deleted(plan_id, deleted.tombstone_seq, Some(deleted.tree_size)),
        Ok(None) => Problem::not_found(format!("plan {plan_id} has no events")),
        Err(e) => e.into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlansQuery {
    after: Option<String>,
    #[serde(default, deserialize_with = "decimal::option_usize")]
    limit: Option<usize>,
}

/// `GET /api/plans`: plans in id order with their heads.
pub(crate) async fn list_plans(
    State(state): State<ApiState>,
    Query(q): Query<PlansQuery>,
) -> Result<Json<Value>, Problem> {
    let limit = page_limit(q.limit)?;
    let after = match q.after.as_deref() {
        None | Some("") => None,
        Some(text) => Some(parse_plan_id(text).ok_or_else(|| {
            Problem::bad_request(
                "invalid-query",
                "Invalid query string",
                format!("after={text:?} is not a plan id"),
            )
        })?),
    };
    // The position is read first: a client that follows the all-plans
    // stream from it sees every change after the page, some twice, none lost.
    let (position, plans) = state
        .store
        .run(move |s| -> Result<_, logbook_journal::store::StoreError> {
            Ok((s.last_position()?, s.plans_after(after, limit)?))
        })
        .await?;
    let next_after = (plans.len() == limit)
        .then(|| plans.last().map(|(id, _)| *id))
        .flatten();
    Ok(Json(json!({
        "plans": plans.iter().map(|(id, head)| head_json(id, head)).collect::<Vec<_>>(),
        "next_after": next_after,
        "position": position,
    })))
}

/// `GET /api/plans/{plan_id}`.
pub(crate) async fn get_plan(
    State(state): State<ApiState>,
    PlanId(plan_id): PlanId,
    _: NoQuery,
) -> Result<Json<Value>, Problem> {
    let head = plan_head(&state, plan_id).await?;
    Ok(Json(head_json(&plan_id, &head)))
}

pub(super) fn page_limit(limit: Option<usize>) -> Result<usize, Problem> {
    match limit.unwrap_or(100) {
        n @ 1..=MAX_LIMIT => Ok(n),
        n => Err(Problem::bad_request(
            "invalid-query",
            "Invalid query string",
            format!("limit={n} is out of range 1..={MAX_LIMIT}"),
        )),
    }
}

/// The all-plans stream's query.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamQuery {
    #[serde(default, deserialize_with = "decimal::option_u64")]
    after: Option<u64>,
    types: Option<String>,
    // Read by the auth layer; accepted here so it is not an unknown key.
    #[allow(dead_code)]
    access_token: Option<String>,
}

/// One plan's stream's query: no `types=`, so that an unknown parameter's
/// message lists only what this route takes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlanStreamQuery {
    #[serde(default, deserialize_with = "decimal::option_u64")]
    after: Option<u64>,
    #[allow(dead_code)]
    access_token: Option<String>,
}

/// The resume cursor: `Last-Event-ID` wins over `?after=`; default 0.
/// The header is spelled as the server sends ids (`decimal`).
pub(crate) fn cursor(headers: &HeaderMap, after: Option<u64>) -> Result<u64, Problem> {
    let bad = || {
        Problem::bad_request(
            "invalid-last-event-id",
            "Invalid Last-Event-ID",
            "Last-Event-ID must be sent once, a non-negative integer below 2^64",
        )
    };
    match single(headers, "last-event-id").map_err(|()| bad())? {
        Some(value) => value
            .to_str()
            .ok()
            .map(str::trim)
            .and_then(decimal)
            .ok_or_else(bad),
        None => Ok(after.unwrap_or(0)),
    }
}

fn beyond_head(cursor: u64, head: u64) -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "cursor-beyond-head",
        "Cursor beyond head",
        format!("the cursor {cursor} is beyond the head {head}: this journal never had that event"),
    )
    .with("cursor", cursor)
    .with("head", head)
}

/// `GET /api/plans/{plan_id}/events/stream`: SSE, `id:` = seq.
pub(crate) async fn stream_plan(
    State(state): State<ApiState>,
    PlanId(plan_id): PlanId,
    grant: auth::Grant,
    headers: HeaderMap,
    Query(q): Query<PlanStreamQuery>,
) -> Result<Response, Problem> {
    let after = cursor(&headers, q.after)?;
    // Subscribe before reading the head: see stream::follow.
    let receiver = state.fanout.subscribe_plan(plan_id);
    let (head, deleted) = state
        .store
        .run(move |s| Ok::<_, StoreError>((s.head(&plan_id)?, s.deleted_plan(&plan_id)?)))
        .await?;
    // Its id is never used again: a stream would wait for nothing forever.
    // (A store from before that rule may hold a chain that reused the id;
    // it still streams what it holds.)
    if let Some(deleted) = deleted
        && head.is_none()
    {
        return Err(plan_deleted(
            plan_id,
            deleted.tombstone_seq,
            Some(deleted.tree_size),
        ));
    }
    let head = head.map_or(0, |h| h.last_seq);
    respond_sse(&state, grant, receiver, Source::Plan(plan_id), after, head)
}

/// `GET /api/events/stream?types=plan.*,step.>`: SSE over every plan, `id:` =
/// store-wide position.
pub(crate) async fn stream_all(
    State(state): State<ApiState>,
    grant: auth::Grant,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Result<Response, Problem> {
    let after = cursor(&headers, q.after)?;
    let filter = TypeFilter::parse(q.types.as_deref().unwrap_or("")).map_err(|e| {
        Problem::bad_request(
            "invalid-query",
            "Invalid query string",
            format!("types: {e}"),
        )
    })?;
    let receiver = state.fanout.subscribe_all();
    let head = state.store.run(move |s| s.last_position()).await?;
    respond_sse(&state, grant, receiver, Source::All(filter), after, head)
}

/// The SSE answer following `source` from `after`, which must not be beyond
/// `head`. `receiver` was subscribed before `head` was read.
fn respond_sse(
    state: &ApiState,
    grant: auth::Grant,
    receiver: Subscription,
    source: Source,
    after: u64,
    head: u64,
) -> Result<Response, Problem> {
    if after > head {
        return Err(beyond_head(after, head));
    }
    let followed = follow(
        state.store.clone(),
        receiver,
        source,
        after,
        state.shutdown.clone(),
        state.stream_stats.clone(),
    );
    let revoked = auth::revoked(state.tokens.clone(), grant);
    Ok(sse::respond(
        followed,
        state.keepalive,
        state.stream_stats.clone(),
        revoked,
    ))
}

/// A payload's canonical form, which is what is stored, streamed and sent
/// to peers, must fit `max_body_bytes` too: it can be longer than the body
/// sent (`1e22` is written `1e+22`), and past the limit a peer sized to it
/// would refuse it for good.
pub(crate) fn canonical_fits(canonical_len: usize, max_body_bytes: usize) -> Result<(), Problem> {
    if canonical_len <= max_body_bytes {
        return Ok(());
    }
    Err(Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
        "Canonical payload too large",
        format!(
            "the payload's canonical form (RFC 8785), which is what is stored and sent to peers, is {canonical_len} bytes, more than limits.max_body_bytes ({max_body_bytes}); send a smaller payload"
        ),
    )
    .with("max_body_bytes", max_body_bytes))
}
