//! The admin socket's routes, one per `logbook admin` command. Each answers
//! JSON (errors as problem+json); `export` streams NDJSON and `backup`
//! streams the snapshot file.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Context, Peer, tokens};
use crate::config::Scope;
use crate::http::extract::{Path, from_object};
use crate::http::problem::Problem;
use logbook_base::hex;
use logbook_journal::event::{Timestamp, parse_plan_id};
use logbook_journal::store::admin::{DeleteError, SYSTEM_PLAN};
use logbook_journal::store::{DB_FILE, PlanHead, READ_PAGE, StoreError};

type Ctx = State<Arc<Context>>;

pub fn router(context: Arc<Context>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/plans", get(list_plans))
        .route("/plans/{plan_id}", get(show_plan).delete(delete_plan))
        .route("/plans/{plan_id}/verify", post(verify_plan))
        .route("/plans/{plan_id}/export", get(export_plan))
        .route("/tokens", get(list_tokens).post(create_token))
        .route("/tokens/{name_or_id}", delete(revoke_token))
        .route("/backup", post(backup))
        .route("/log-level", get(get_log_level).put(set_log_level))
        .route("/reload", post(reload))
        .route("/keys/rotate-hmac", post(rotate_hmac))
        .route("/keys/rotate-rsa", post(rotate_rsa))
        .route("/metrics", get(metrics))
        .route("/peers/{instance_id}/allow", post(allow_peer))
        .route("/peers/{instance_id}/disallow", post(disallow_peer))
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
        .nest_service("/api", api_passthrough(&context))
        .fallback(|| async { Problem::not_found("no such admin route") })
        .with_state(context)
}

/// The public API router, re-rooted under `/api` (nesting strips the prefix).
fn api_passthrough(context: &Context) -> Router {
    let api = crate::http::router(context.app.clone());
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
fn who(peer: &Peer) -> Value {
    json!({"uid": peer.uid, "user": super::user_name(peer.uid), "pid": peer.pid})
}

/// Records a key rotation in the system journal, signed with the current
/// key; returns its seq there.
async fn record_key_rotation(cx: &Context, payload: &Value) -> Result<u64, Problem> {
    let recorded = cx
        .app
        .store
        .append(logbook_journal::store::AppendRequest {
            plan_id: SYSTEM_PLAN,
            event_type: super::keys::KEY_ROTATED.into(),
            actor: Some("logbook-admin".into()),
            payload: logbook_journal::chain::CanonicalPayload::new(payload),
            expected_seq: None,
            idempotency: None,
        })
        .await
        .map_err(|e| {
            Problem::unavailable(format!("the key rotated, but recording it failed: {e:?}"))
        })?;
    Ok(recorded.event.seq)
}

/// The API's plan head, plus whether it is the system journal.
pub fn head_json(plan_id: &Uuid, head: &PlanHead) -> Value {
    let mut v = crate::http::api::head_json(plan_id, head);
    v["system"] = json!(*plan_id == SYSTEM_PLAN);
    v
}

async fn status(State(cx): Ctx) -> Result<Json<Value>, Problem> {
    use std::sync::atomic::Ordering::Relaxed;
    let (plans, events) = cx.app.store.run(move |store| store.totals()).await?;
    let peers = cx.app.store.run(crate::http::metrics::peer_queues).await?;
    let disk_bytes = std::fs::metadata(cx.data_dir.join(DB_FILE)).map_or(0, |m| m.len());
    let stats = cx.app.store.stats();
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": cx.started.elapsed().as_secs(),
        "listen": [cx.listen.to_string()],
        "admin_socket": cx.admin_socket.display().to_string(),
        "data_dir": cx.data_dir.display().to_string(),
        "plans": plans,
        "events": events,
        "disk_bytes": disk_bytes,
        "peers": peers,
        "queue_depths": {"writer": cx.app.store.queue_depth(), "peers": peers.iter().map(|q| (q.peer.clone(), q.queued)).collect::<std::collections::BTreeMap<_, _>>()},
        "last_fsync_micros": stats.last_commit_micros.load(Relaxed),
        "commits": stats.commits.load(Relaxed),
        "sse_clients": cx.app.stream_stats.connected.load(Relaxed),
        "signing_key_id": cx.app.store.keyring().current_id(),
        "log_level": super::logging::current_level(),
        "auth": auth_json(&cx),
    })))
}

/// Which auth mode is in force and why (`[auth] required` and the latch).
fn auth_json(cx: &Context) -> Value {
    let (required, reason) = cx.app.tokens.mode();
    json!({
        "required": required,
        "setting": cx.app.tokens.setting().as_json(),
        "reason": reason,
        "latched": cx.app.tokens.latched(),
        "tokens": cx.app.tokens.current().len(),
    })
}

async fn list_plans(State(cx): Ctx) -> Result<Json<Value>, Problem> {
    let plans = cx
        .app
        .store
        .run(move |store| {
            let mut all = Vec::new();
            let mut after = None;
            loop {
                let page = store.plans(after, 1000)?;
                let done = page.len() < 1000;
                after = page.last().map(|(id, _)| *id);
                all.extend(page);
                if done {
                    return Ok::<_, StoreError>(all);
                }
            }
        })
        .await?;
    Ok(Json(json!({
        "plans": plans.iter().map(|(id, head)| head_json(id, head)).collect::<Vec<_>>(),
    })))
}

async fn load_head(cx: &Context, plan_id: Uuid) -> Result<PlanHead, Problem> {
    cx.app
        .store
        .run(move |store| store.head(&plan_id))
        .await?
        .ok_or_else(|| Problem::not_found(format!("plan {plan_id} has no events")))
}

async fn show_plan(State(cx): Ctx, Path(plan): Path<String>) -> Result<Json<Value>, Problem> {
    let plan_id = plan_id(&plan)?;
    let head = load_head(&cx, plan_id).await?;
    Ok(Json(head_json(&plan_id, &head)))
}

async fn verify_plan(State(cx): Ctx, Path(plan): Path<String>) -> Result<Json<Value>, Problem> {
    let plan_id = plan_id(&plan)?;
    load_head(&cx, plan_id).await?;
    let keyring = cx.app.store.keyring();
    let report = cx
        .app
        .store
        .run(move |store| store.verify_plan(&plan_id, &keyring))
        .await?;
    Ok(Json(json!({
        "plan_id": plan_id,
        "chain_valid": report.is_valid(),
        "verified": report.verified,
        "broken_at": report.broken.map(|b| b.0),
        "broken_reason": report.broken.map(|b| b.1),
        "head_signature": report.head_signature.map(|s| hex::encode(&s)),
    })))
}

async fn delete_plan(
    State(cx): Ctx,
    Extension(peer): Extension<Peer>,
    Path(plan): Path<String>,
) -> Result<Json<Value>, Problem> {
    let plan_id = plan_id(&plan)?;
    match cx.app.store.delete_plan(plan_id, who(&peer)).await {
        Ok(deleted) => {
            tracing::warn!(%plan_id, events = deleted.head.count, uid = peer.uid, "plan deleted over the admin socket");
            Ok(Json(json!({
                "plan_id": plan_id,
                "deleted_events": deleted.head.count,
                "head_seq": deleted.head.last_seq,
                "head_signature": hex::encode(&deleted.head.last_signature),
                "tombstone": {
                    "plan_id": SYSTEM_PLAN,
                    "seq": deleted.tombstone.seq,
                    "signature": hex::encode(&deleted.tombstone.signature),
                },
            })))
        }
        Err(DeleteError::NotFound) => {
            Err(Problem::not_found(format!("plan {plan_id} has no events")))
        }
        Err(e @ DeleteError::Protected) => Err(Problem::new(
            StatusCode::FORBIDDEN,
            "protected",
            "Protected plan",
            e.to_string(),
        )),
        Err(DeleteError::Storage(e)) => Err(e.into()),
        Err(e @ DeleteError::Unavailable) => Err(Problem::unavailable(e.to_string())),
    }
}

async fn export_plan(State(cx): Ctx, Path(plan): Path<String>) -> Result<Response, Problem> {
    let plan_id = plan_id(&plan)?;
    load_head(&cx, plan_id).await?;
    let store = cx.app.store.clone();
    let lines = async_stream::stream! {
        let mut after = 0;
        loop {
            let page = store.run(move |s| s.events(&plan_id, after, READ_PAGE)).await;
            let page = match page {
                Ok(page) => page,
                Err(e) => {
                    // Ending the body early makes the client see a truncated
                    // transfer rather than a short, valid-looking export.
                    yield Err(std::io::Error::other(e.to_string()));
                    return;
                }
            };
            let short = page.len() < READ_PAGE;
            let mut chunk = String::new();
            for event in &page {
                after = event.seq;
                chunk.push_str(&serde_json::to_string(event).unwrap_or_default());
                chunk.push('\n');
            }
            yield Ok(Bytes::from(chunk));
            if short {
                return;
            }
        }
    };
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    scopes: Vec<Scope>,
    name: Option<String>,
}

async fn create_token(
    State(cx): Ctx,
    AdminJson(request): AdminJson<CreateToken>,
) -> Result<Response, Problem> {
    if request.scopes.is_empty() {
        return Err(Problem::unprocessable(
            "invalid-scopes",
            "Invalid scopes",
            "give at least one scope: read, append",
        ));
    }
    if let Some(name) = &request.name
        && !tokens::valid_name(name)
    {
        return Err(Problem::unprocessable(
            "invalid-name",
            "Invalid token name",
            "a token name is 1 to 64 letters, digits, '-', '_' or '.'",
        ));
    }
    let _serialized = cx.changes.lock().await;
    if let Some(name) = &request.name
        && cx.tokens.config_names().contains(name)
    {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "token-exists",
            "Token exists",
            format!("config.toml already has a token named {name:?}"),
        ));
    }
    let (secret, record) =
        tokens::generate(request.name, request.scopes).map_err(Problem::internal)?;
    let stored = record.clone();
    cx.app
        .store
        .run(move |store| store.insert_token(&stored))
        .await?
        .map_err(|e| Problem::new(StatusCode::CONFLICT, "token-exists", "Token exists", e))?;
    publish_stored(&cx).await?;
    tracing::info!(
        name = record.name,
        id = record.id,
        "API token created over the admin socket"
    );
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": record.id,
            "name": record.name,
            "scopes": record.scopes,
            "created_at": Timestamp(record.created_at),
            "token": secret,
        })),
    )
        .into_response())
}

async fn publish_stored(cx: &Context) -> Result<(), Problem> {
    let stored = cx.app.store.run(move |store| store.stored_tokens()).await?;
    cx.tokens.set_stored(&stored, &cx.app.tokens);
    Ok(())
}

async fn list_tokens(State(cx): Ctx) -> Result<Json<Value>, Problem> {
    let stored = cx.app.store.run(move |store| store.stored_tokens()).await?;
    let config = cx.config.current();
    let mut out: Vec<Value> = config
        .auth
        .tokens
        .iter()
        .map(|t| json!({"id": null, "name": t.name, "scopes": t.scopes, "source": "config", "created_at": null}))
        .collect();
    out.extend(stored.iter().map(|t| {
        json!({"id": t.id, "name": t.name, "scopes": t.scopes, "source": "admin", "created_at": Timestamp(t.created_at)})
    }));
    Ok(Json(json!({"tokens": out})))
}

async fn revoke_token(
    State(cx): Ctx,
    Path(name_or_id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let _serialized = cx.changes.lock().await;
    // On a public listener the last token stays: the latch would keep the
    // API closed (401), but no remote client could use it any more. The
    // latch is left out on purpose so this check keeps that meaning.
    let stored = cx.app.store.run(move |store| store.stored_tokens()).await?;
    let is_stored = stored
        .iter()
        .any(|t| t.name == name_or_id || t.id == name_or_id);
    if is_stored
        && cx
            .config
            .current()
            .check_exposure(stored.len() - 1, false)
            .is_err()
    {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "last-token",
            "Last token",
            format!(
                "{name_or_id:?} is the last API token and the daemon listens on {}: create another token first, or listen on loopback",
                cx.listen
            ),
        ));
    }
    let key = name_or_id.clone();
    let removed = cx
        .app
        .store
        .run(move |store| store.remove_token(&key))
        .await?;
    let Some(removed) = removed else {
        if cx.tokens.config_names().contains(&name_or_id) {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "config-token",
                "Token defined in config",
                format!(
                    "{name_or_id:?} is defined in config.toml: remove it there and reload (SIGHUP)"
                ),
            ));
        }
        return Err(Problem::not_found(format!(
            "no token with the name or id {name_or_id:?}"
        )));
    };
    publish_stored(&cx).await?;
    tracing::info!(
        name = removed.name,
        id = removed.id,
        "API token revoked over the admin socket"
    );
    Ok(Json(
        json!({"id": removed.id, "name": removed.name, "revoked": true}),
    ))
}

async fn backup(State(cx): Ctx) -> Result<Response, Problem> {
    // The snapshot is written next to the store (the one place the daemon
    // may write under systemd) as a file with no name, and streamed to the
    // client, which owns FILE. Closing it (or a crash) frees it.
    let dir = cx.data_dir.clone();
    let (file, _rows) = cx
        .app
        .store
        .run(move |store| store.backup_to_unnamed(&dir))
        .await?;
    let mut file = tokio::fs::File::from_std(file);
    let length = file
        .metadata()
        .await
        .map_err(|e| Problem::internal(e.to_string()))?
        .len();
    let chunks = async_stream::stream! {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match file.read(&mut buf).await {
                Ok(0) => return,
                Ok(n) => yield Ok(Bytes::copy_from_slice(&buf[..n])),
                Err(e) => {
                    yield Err(e);
                    return;
                }
            }
        }
    };
    Ok((
        [
            (header::CONTENT_TYPE, "application/vnd.redb".to_string()),
            (header::CONTENT_LENGTH, length.to_string()),
        ],
        Body::from_stream(chunks),
    )
        .into_response())
}

async fn get_log_level() -> Json<Value> {
    Json(json!({"level": super::logging::current_level()}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogLevel {
    level: String,
}

async fn set_log_level(AdminJson(request): AdminJson<LogLevel>) -> Result<Json<Value>, Problem> {
    super::logging::set_level(&request.level)
        .map_err(|e| Problem::unprocessable("invalid-level", "Invalid log level", e))?;
    tracing::info!(
        level = request.level,
        "log level changed over the admin socket"
    );
    Ok(Json(json!({"level": request.level})))
}

async fn reload(State(cx): Ctx) -> Result<Json<Value>, Problem> {
    match crate::reload::reload(&cx).await {
        Ok(changed) => {
            tracing::info!(?changed, "configuration reloaded over the admin socket");
            Ok(Json(json!({"reloaded": true, "applied": changed})))
        }
        Err(e) => {
            tracing::error!(error = %e, "configuration reload rejected; the previous configuration stays in force");
            Err(Problem::unprocessable(
                "invalid-config",
                "Invalid configuration",
                e,
            ))
        }
    }
}

async fn metrics(State(cx): Ctx) -> Response {
    (
        [(header::CONTENT_TYPE, crate::http::metrics::CONTENT_TYPE)],
        crate::http::metrics::render(&cx.app).await,
    )
        .into_response()
}

async fn rotate_hmac(
    State(cx): Ctx,
    Extension(peer): Extension<Peer>,
) -> Result<Json<Value>, Problem> {
    if let Some(var) = super::keys::env_secret_in_use(|name| std::env::var(name).ok()) {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "key-from-environment",
            "Signing key comes from the environment",
            format!(
                "the signing key comes from ${var}; to rotate it, put the old secret in a file under <data_dir>/hmac-retired/, set a new ${var} and restart"
            ),
        ));
    }
    let _serialized = cx.changes.lock().await;
    let data_dir = cx.data_dir.clone();
    let current = cx.app.store.keyring().current_id().to_string();
    let rotated =
        tokio::task::spawn_blocking(move || super::keys::rotate_generated_key(&data_dir, &current))
            .await
            .map_err(|e| Problem::internal(e.to_string()))?
            .map_err(|e| Problem::internal(format!("rotating the HMAC key: {e}")))?;
    cx.app.store.replace_keyring(rotated.keyring.clone());
    tracing::warn!(
        old_key_id = rotated.old_key_id,
        new_key_id = rotated.new_key_id,
        uid = peer.uid,
        "HMAC signing key rotated"
    );
    // Recorded in the system journal, signed with the new key.
    let payload = json!({
        "old_key_id": rotated.old_key_id,
        "new_key_id": rotated.new_key_id,
        "rotated_by": who(&peer),
    });
    let recorded_seq = record_key_rotation(&cx, &payload).await?;
    // From now on the old key verifies only events dated up to that record.
    let mut keyring = rotated.keyring.clone();
    let keyring = cx
        .app
        .store
        .run(move |store| {
            super::keys::apply_retirements(store, &mut keyring)?;
            Ok::<_, StoreError>(keyring)
        })
        .await?;
    cx.app.store.replace_keyring(keyring);
    Ok(Json(json!({
        "old_key_id": rotated.old_key_id,
        "new_key_id": rotated.new_key_id,
        "recorded_at_system_seq": recorded_seq,
    })))
}

/// `keys rotate-rsa`: a new federation key pair, announced to every peer in
/// a message signed with the old key (see `logbook_federation::rotation`).
async fn rotate_rsa(
    State(cx): Ctx,
    Extension(peer): Extension<Peer>,
) -> Result<Json<Value>, Problem> {
    let _serialized = cx.changes.lock().await;
    let rotated = cx
        .app
        .federation
        .rotate()
        .await
        .map_err(|e| Problem::internal(format!("rotating the federation key: {e}")))?;
    tracing::warn!(
        old_key_id = rotated.old_key_id,
        new_key_id = rotated.new_key_id,
        peers_notified = rotated.peers_notified,
        uid = peer.uid,
        "federation RSA key rotated"
    );
    let payload = json!({
        "key": "federation",
        "old_key_id": rotated.old_key_id,
        "new_key_id": rotated.new_key_id,
        "fingerprint": rotated.fingerprint,
        "peers_notified": rotated.peers_notified,
        "rotated_by": who(&peer),
    });
    let recorded_seq = record_key_rotation(&cx, &payload).await?;
    Ok(Json(json!({
        "old_key_id": rotated.old_key_id,
        "new_key_id": rotated.new_key_id,
        "fingerprint": rotated.fingerprint,
        "peers_notified": rotated.peers_notified,
        "recorded_at_system_seq": recorded_seq,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantsBody {
    patterns: Vec<String>,
}

/// `peers allow PEER PATTERN…`: lets the peer subscribe to what the
/// patterns cover. Only here, on the admin socket: least privilege between
/// peers is the local admin's decision. Recorded in the system journal.
async fn allow_peer(
    State(cx): Ctx,
    Extension(peer): Extension<Peer>,
    Path(instance_id): Path<String>,
    AdminJson(body): AdminJson<GrantsBody>,
) -> Result<Json<Value>, Problem> {
    change_grants(cx, peer, instance_id, body, true).await
}

/// `peers disallow PEER PATTERN…`: takes grants back. Subscriptions they
/// covered stay listed but no longer receive anything.
async fn disallow_peer(
    State(cx): Ctx,
    Extension(peer): Extension<Peer>,
    Path(instance_id): Path<String>,
    AdminJson(body): AdminJson<GrantsBody>,
) -> Result<Json<Value>, Problem> {
    change_grants(cx, peer, instance_id, body, false).await
}

async fn change_grants(
    cx: Arc<Context>,
    who_did: Peer,
    instance_id: String,
    body: GrantsBody,
    allow: bool,
) -> Result<Json<Value>, Problem> {
    if body.patterns.is_empty() {
        return Err(Problem::unprocessable(
            "invalid-request",
            "Invalid request",
            "name at least one event-type pattern",
        ));
    }
    let patterns = logbook_federation::peers::parse_grants(&body.patterns).map_err(|e| {
        Problem::unprocessable(
            "invalid-pattern",
            "Invalid eventType pattern",
            e.to_string(),
        )
    })?;
    let _serialized = cx.changes.lock().await;
    let (id, grants) = (instance_id.clone(), patterns.clone());
    let record = cx
        .app
        .store
        .run(move |store| {
            let now = Timestamp::now().millis();
            if allow {
                store.fed_allow(&id, &grants, now)
            } else {
                store.fed_disallow(&id, &grants, now)
            }
        })
        .await?
        .ok_or_else(|| Problem::not_found(format!("no peer {instance_id:?}")))?;
    let verb = if allow { "allowed" } else { "disallowed" };
    tracing::warn!(peer = %instance_id, patterns = ?patterns, uid = who_did.uid, "peer grants {verb}");
    let payload = json!({
        "peer": instance_id,
        "patterns": patterns,
        "allow": record.granted(),
        "changed_by": who(&who_did),
    });
    cx.app
        .store
        .append(logbook_journal::store::AppendRequest {
            plan_id: SYSTEM_PLAN,
            event_type: format!("system.peer_{verb}"),
            actor: Some("logbook-admin".into()),
            payload: logbook_journal::chain::CanonicalPayload::new(&payload),
            expected_seq: None,
            idempotency: None,
        })
        .await
        .map_err(|e| {
            Problem::unavailable(format!(
                "the grants changed, but recording it failed: {e:?}"
            ))
        })?;
    Ok(Json(logbook_federation::peers::peer_json(&record)))
}
