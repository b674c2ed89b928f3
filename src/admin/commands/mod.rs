//! The admin socket's routes, one per `logbook admin` command. Each answers
//! JSON (errors as problem+json); `export` streams NDJSON and `backup`
//! streams the snapshot file. Grouped by concern: [`status`] (status and
//! metrics), [`plans`] (show, verify, delete, export), [`redact`], [`tokens`],
//! [`keys`] (key rotations and backup), [`peers`] (federation grants) and
//! [`daemon`] (log level and config reload), [`witness`] (evidence kept
//! as a witness).

mod daemon;
mod keys;
mod peers;
mod plans;
mod redact;
mod status;
mod tokens;
mod witness;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::routing::{MethodRouter, delete, get, post};
use serde_json::{Value, json};
use uuid::Uuid;

use super::Context;
use crate::http::extract::from_object;
use crate::http::problem::Problem;
use crate::http::serve::LocalPeer;
use logbook_journal::event::parse_plan_id;

pub(crate) use daemon::{Reloaded, reload_answer};

type Ctx = State<Arc<Context>>;

/// The admin socket's router. Two parts of it work above `admin` and are
/// handed in by `crate::app`: `api`, the public HTTP API served under
/// `/api`, and `reload`, the `POST /reload` route (a reload changes the
/// whole application; [`reload_answer`] shapes its outcome).
pub(crate) fn router(
    context: Arc<Context>,
    api: Router,
    reload: MethodRouter<Arc<Context>>,
) -> Router {
    use daemon::{get_log_level, set_log_level};
    use keys::{backup, rotate_hmac, rotate_log, rotate_rsa};
    use peers::{allow_peer, disallow_peer, witness_peer};
    use plans::{delete_plan, export_plan, list_plans, plan_checkpoint, show_plan, verify_plan};
    use redact::{compact, redact_event};
    use status::{metrics, status};
    use tokens::{create_token, list_tokens, revoke_token};
    use witness::witness_evidence;
    Router::new()
        .route("/status", get(status))
        .route("/plans", get(list_plans))
        .route("/plans/{plan_id}", get(show_plan).delete(delete_plan))
        .route("/plans/{plan_id}/verify", post(verify_plan))
        .route("/plans/{plan_id}/export", get(export_plan))
        .route("/plans/{plan_id}/checkpoint", get(plan_checkpoint))
        .route("/plans/{plan_id}/events/{seq}/redact", post(redact_event))
        .route("/tokens", get(list_tokens).post(create_token))
        .route("/tokens/{name_or_id}", delete(revoke_token))
        .route("/backup", post(backup))
        .route("/compact", post(compact))
        .route("/log-level", get(get_log_level).put(set_log_level))
        .route("/reload", reload)
        .route("/keys/rotate-hmac", post(rotate_hmac))
        .route("/keys/rotate-rsa", post(rotate_rsa))
        .route("/keys/rotate-log", post(rotate_log))
        .route("/metrics", get(metrics))
        .route("/peers/{instance_id}/allow", post(allow_peer))
        .route("/peers/{instance_id}/disallow", post(disallow_peer))
        .route("/peers/{instance_id}/witness", post(witness_peer))
        .route("/witness/evidence", get(witness_evidence))
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                "this admin route does not accept that method",
            )
        })
        // The whole HTTP API (journal and federation) is reachable here too,
        // with every scope: its callers passed the peer-uid check.
        .nest_service("/api", api_passthrough(api))
        .fallback(|| async { Problem::not_found("no such admin route") })
        .with_state(context)
}

/// The public API router, re-rooted under `/api` (nesting strips the prefix).
fn api_passthrough(api: Router) -> Router {
    Router::new().fallback_service(tower::service_fn(move |mut req: axum::extract::Request| {
        let api = api.clone();
        async move {
            let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
            let uri = format!("/api{path}").parse().unwrap_or_default();
            *req.uri_mut() = uri;
            tower::ServiceExt::oneshot(api, req).await
        }
    }))
}

fn plan_id(text: &str) -> Result<Uuid, Problem> {
    parse_plan_id(text).ok_or_else(|| {
        Problem::bad_request(
            "invalid-plan-id",
            "Invalid plan id",
            format!("{text:?} is not a UUID"),
        )
    })
}

/// Largest admin request body: axum's default body limit, which `Bytes`
/// applies. The admin bodies are a few bytes (a token's scopes, a level).
const MAX_ADMIN_BODY: usize = 2 * 1024 * 1024;

/// An admin request body: a JSON object read into `T`, with every failure
/// as problem+json (as the HTTP API: malformed JSON 400 `invalid-json`, a
/// body that is not the documented object 422 `invalid-request`).
struct AdminJson<T>(T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for AdminJson<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let body = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body-too-large",
                    "Request body too large",
                    format!("the request body exceeds {MAX_ADMIN_BODY} bytes"),
                )
                .with("max_body_bytes", MAX_ADMIN_BODY)
            } else {
                Problem::bad_request("invalid-body", "Unreadable request body", e.body_text())
            }
        })?;
        let value: Value = serde_json::from_slice(&body).map_err(|e| {
            Problem::bad_request(
                "invalid-json",
                "Malformed JSON",
                format!("the request body is not valid JSON: {e}"),
            )
        })?;
        from_object(value)
            .map(AdminJson)
            .map_err(|e| Problem::unprocessable("invalid-request", "Invalid request", e))
    }
}

/// Who did an admin change, as recorded in the system journal.
fn who(peer: &LocalPeer) -> Value {
    json!({"uid": peer.uid, "user": crate::admin::user_name(peer.uid), "pid": peer.pid})
}

/// Records what an admin did in the system journal (signed with the current
/// key, like every event) and returns its seq there. `done` names what
/// already happened, for the error when recording it fails.
pub(super) async fn record_admin_event(
    cx: &Context,
    event_type: &str,
    payload: &serde_json::Value,
    done: &str,
) -> Result<u64, Problem> {
    let recorded = cx
        .store
        .append(logbook_journal::store::AppendRequest {
            plan_id: logbook_journal::store::admin::SYSTEM_PLAN,
            event_type: event_type.into(),
            actor: Some("logbook-admin".into()),
            payload: logbook_journal::chain::CanonicalPayload::new(payload),
            expected_seq: None,
            idempotency: None,
        })
        .await
        .map_err(|e| Problem::unavailable(format!("{done}, but recording it failed: {e:?}")))?;
    Ok(recorded.event.seq)
}
