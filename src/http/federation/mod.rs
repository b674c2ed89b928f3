//! The federation HTTP API under `/api/v1/federation`. The identity document
//! and the `incoming/*` routes are public (peers call them; every message is
//! signature-verified); the rest need a token with the `admin` scope
//! (changes) or `read` scope (listings and the stream).
//!
//! One file per concern: [`incoming`] (what peers send, behind [`intake`]),
//! [`peers`], [`subscriptions`], [`messages`] (publishing, dead letters),
//! [`listing`] (messages, continuity) and [`stream`]; [`problems`] maps the protocol
//! crate's refusals to problem answers.

mod incoming;
mod intake;
mod listing;
mod messages;
mod peers;
mod problems;
mod stream;
mod subscriptions;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use logbook_federation::message::PROTOCOL_VERSION;
use serde_json::{Value, json};

use crate::config::Scope;
use crate::federation::Federation;
use crate::http::AppState;
use crate::http::auth;
use crate::http::problem::Problem;

const BASE: &str = "/api/v1/federation";

pub(crate) fn router(state: AppState) -> Router<AppState> {
    let public = Router::new()
        .route(&format!("{BASE}/instance"), get(instance))
        .route(
            &format!("{BASE}/incoming/event"),
            post(incoming::incoming_event),
        )
        .route(
            &format!("{BASE}/incoming/event/ack"),
            post(incoming::incoming_ack),
        )
        .route(
            &format!("{BASE}/incoming/subscribe"),
            post(incoming::incoming_subscribe),
        )
        .route(
            &format!("{BASE}/incoming/unsubscribe"),
            post(incoming::incoming_unsubscribe),
        );
    let read = Router::new()
        .route(
            &format!("{BASE}/events/subscriptions"),
            get(subscriptions::subscriptions),
        )
        .route(&format!("{BASE}/events/messages"), get(listing::messages))
        .route(
            &format!("{BASE}/events/continuity"),
            get(listing::continuity),
        )
        .route(&format!("{BASE}/events/stream"), get(stream::stream))
        .route_layer(from_fn_with_state(state.clone(), require_read));
    let admin = Router::new()
        .route(
            &format!("{BASE}/peers"),
            get(peers::list_peers).post(peers::add_peer),
        )
        .route(
            &format!("{BASE}/peers/{{instance_id}}/status"),
            post(peers::set_peer_status),
        )
        .route(
            &format!("{BASE}/events/subscribe"),
            post(subscriptions::subscribe),
        )
        .route(
            &format!("{BASE}/events/unsubscribe"),
            post(subscriptions::unsubscribe),
        )
        .route(&format!("{BASE}/events/publish"), post(messages::publish))
        .route(
            &format!("{BASE}/events/messages/retry"),
            post(messages::retry),
        )
        .route(
            &format!("{BASE}/events/messages/drop"),
            post(messages::drop_dead),
        )
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

async fn instance(State(state): State<AppState>) -> Result<Json<Value>, Problem> {
    let id = state.federation.identity();
    let key = id.current();
    // The log key, bound to this identity by the instance key's signature.
    let log_key = state.log.instance_vkey();
    let log_key_signature = state
        .log
        .binding_signature(&id.instance_id, &key, &log_key)?;
    // The witness key, bound the same way (`witnessKeySignature`).
    let witness_key = state.witness.vkey();
    let witness_key_signature = state.witness.binding_signature(&id.instance_id, &key)?;
    Ok(Json(json!({
        "instanceId": id.instance_id,
        "name": id.name,
        "publicKey": key.public_key_pem,
        "keyId": key.key_id,
        "fingerprint": key.fingerprint,
        "protocolVersion": PROTOCOL_VERSION,
        "capabilities": ["events", "batch", logbook_federation::batch::CAPABILITY, "journal-events", "subscribe", "ack"],
        "logKey": log_key,
        "logKeySignature": log_key_signature,
        "witnessKey": witness_key,
        "witnessKeySignature": witness_key_signature,
    })))
}

/// A problem with `retryAfter` (429, 503, 507) carries a `Retry-After` header.
fn answer(result: Result<Value, Problem>) -> Response {
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

/// A request body that is not the object a route expects.
fn invalid_body(e: impl std::fmt::Display, expected: &str) -> Problem {
    Problem::unprocessable(
        "invalid-request",
        "Invalid request",
        format!("{e}; expected {expected}"),
    )
}
