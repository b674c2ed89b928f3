//! `…/events/subscribe`, `…/events/unsubscribe` (asking a peer, with a
//! signed request and a verified ack) and the subscriptions listing.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use logbook_federation::inbox;
use logbook_federation::message::{
    EventAck, EventMessage, SUBSCRIBE_TYPE, UNSUBSCRIBE_TYPE, now_ms,
};
use logbook_journal::registry::TypePattern;
use logbook_journal::store::Direction;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{BASE, fed, invalid_body};
use crate::http::AppState;
use crate::http::extract::{JsonBody, from_object};
use crate::http::problem::Problem;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SubscribeBody {
    peer: String,
    event_type: String,
}

pub(super) async fn subscribe(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    control(state, body, SUBSCRIBE_TYPE).await
}

pub(super) async fn unsubscribe(
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
            // Naming a peer we cannot use is a bad request here, not a
            // refusal by a peer: the same type and detail, as 422.
            let (peer, key) = inbox::active_peer(store, &peer_id).map_err(|e| {
                let p = Problem::from(e);
                Problem::unprocessable(p.kind, p.title, p.detail)
            })?;
            let (signing_key, _) = fed2
                .instance
                .signing_key_for(store, &peer.instance_id)
                .map_err(|e| Problem::internal(e.to_string()))?;
            let request = EventMessage::signed(
                &*signing_key,
                &signing_key.key_id,
                &fed2.identity().instance_id,
                &peer.instance_id,
                Uuid::now_v7(),
                event_type,
                json!({"eventType": pattern2}),
                now_ms(),
            )
            .map_err(|e| Problem::internal(e.to_string()))?;
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
    let answer: Value = crate::federation::read_peer_json(response)
        .await
        .unwrap_or(Value::Null);
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
            inbox::check_signed(
                &fed2.instance,
                &peer2,
                &key,
                &answer,
                &ack.key_id,
                ack.timestamp,
            )
            .and_then(|()| inbox::check_recipient(&fed2.instance, ack.recipient_id.as_deref()))
            .map_err(|e| peer_error(format!("the ack is not valid: {e}")))?;
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

pub(super) async fn subscriptions(State(state): State<AppState>) -> Result<Json<Value>, Problem> {
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

fn parse_pattern(text: &str) -> Result<String, Problem> {
    TypePattern::parse(text)
        .map(|p| p.as_string())
        .map_err(|e| Problem::unprocessable("invalid-pattern", "Invalid eventType pattern", e))
}
