//! `…/peers`: listing, adding (inline key or fetch-and-pin) and changing
//! a peer's status.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use logbook_federation::message::now_ms;
use logbook_federation::peers::{PeerSpec, peer_json};
use logbook_journal::store::PeerStatus;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{fed, invalid_body};
use crate::federation::peers::{self, AddError};
use crate::http::AppState;
use crate::http::extract::{JsonBody, Path, from_object};
use crate::http::problem::Problem;

pub(super) async fn list_peers(State(state): State<AppState>) -> Result<Json<Value>, Problem> {
    let peers = state.store.run(move |store| store.peers().list()).await?;
    Ok(Json(
        json!({"peers": peers.iter().map(peer_json).collect::<Vec<_>>()}),
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

pub(super) async fn add_peer(
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
    .map_err(|e| Problem::unprocessable("invalid-peer", "Invalid peer", e.to_string()))?;
    let (id, url) = (spec.instance_id.clone(), spec.base_url.clone());
    let peer = peers::add(&state.federation, spec)
        .await
        .map_err(|e| match e {
            AddError::Invalid(e) => {
                Problem::unprocessable("invalid-peer", "Invalid peer", e.to_string())
            }
            // Adding a peer must not be a network probe: what went wrong
            // (connection refused, a timeout, the remote's answer) goes to
            // the log for the admin, never to the caller.
            AddError::Pin(e) => {
                tracing::warn!(peer = %id, url = %url, error = ?e.to_string(), "could not pin the peer's key");
                Problem::new(
                    StatusCode::BAD_GATEWAY,
                    "pin-failed",
                    "Could not pin the peer's key",
                    "the peer's identity could not be fetched, or it did not match the instance id, protocol version and fingerprint given; the daemon's log has the details",
                )
            }
            AddError::Retired(key_id) => Problem::new(
                StatusCode::CONFLICT,
                "key-retired",
                "Key retired by the peer",
                format!("the peer announced it rotated away from key {key_id}; pin the key it uses now (or give its fingerprint to fetch it)"),
            ),
            AddError::Storage(e) => Problem::internal(e.to_string()),
        })?;
    tracing::info!(peer = %peer.instance_id, "peer added");
    Ok((StatusCode::CREATED, Json(peer_json(&peer))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusBody {
    status: String,
}

pub(super) async fn set_peer_status(
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
            store
                .peers()
                .set_status(&instance_id, status, now_ms())?
                .ok_or_else(|| Problem::not_found(format!("no peer {instance_id:?}")))
        })
        .await?;
    if peer.status != PeerStatus::Removed {
        fed.ensure_worker(&peer.instance_id);
    }
    tracing::info!(peer = %peer.instance_id, status = peer.status.as_str(), "peer status changed");
    Ok(Json(peer_json(&peer)))
}
