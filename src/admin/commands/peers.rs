//! `peers allow` and `peers disallow`: which event types a peer may
//! subscribe to; `peers witness`: whether it witnesses our heads log.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AdminJson, Context, Ctx, who};
use crate::http::extract::Path;
use crate::http::problem::Problem;
use crate::http::serve::LocalPeer;
use logbook_journal::event::Timestamp;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GrantsBody {
    patterns: Vec<String>,
}

/// `peers allow PEER PATTERN…`: lets the peer subscribe to what the
/// patterns cover. Only here, on the admin socket: least privilege between
/// peers is the local admin's decision. Recorded in the system journal.
pub(super) async fn allow_peer(
    State(cx): Ctx,
    Extension(peer): Extension<LocalPeer>,
    Path(instance_id): Path<String>,
    AdminJson(body): AdminJson<GrantsBody>,
) -> Result<Json<Value>, Problem> {
    change_grants(cx, peer, instance_id, body, true).await
}

/// `peers disallow PEER PATTERN…`: takes grants back. Subscriptions they
/// covered stay listed but no longer receive anything.
pub(super) async fn disallow_peer(
    State(cx): Ctx,
    Extension(peer): Extension<LocalPeer>,
    Path(instance_id): Path<String>,
    AdminJson(body): AdminJson<GrantsBody>,
) -> Result<Json<Value>, Problem> {
    change_grants(cx, peer, instance_id, body, false).await
}

async fn change_grants(
    cx: Arc<Context>,
    who_did: LocalPeer,
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
        .store
        .run(move |store| {
            let now = Timestamp::now().millis();
            if allow {
                store.peers().allow(&id, &grants, now)
            } else {
                store.peers().disallow(&id, &grants, now)
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
    super::record_admin_event(
        &cx,
        &format!("system.peer_{verb}"),
        &payload,
        "the grants changed",
    )
    .await?;
    Ok(Json(logbook_federation::peers::peer_json(&record)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WitnessBody {
    witness: bool,
}

/// `peers witness PEER on|off`: whether the peer witnesses our heads log.
/// Kept in the store, it wins over `[[peers]] witness`; recorded in the
/// system journal, since who may vouch for our history is an audit fact.
pub(super) async fn witness_peer(
    State(cx): Ctx,
    Extension(who_did): Extension<LocalPeer>,
    Path(instance_id): Path<String>,
    AdminJson(body): AdminJson<WitnessBody>,
) -> Result<Json<Value>, Problem> {
    let _serialized = cx.changes.lock().await;
    let (id, on) = (instance_id.clone(), body.witness);
    let known = cx
        .store
        .run(move |store| {
            if store.peers().get(&id)?.is_none() {
                return Ok(false);
            }
            let name = crate::federation::witnessing::peer_witness_name(&id);
            store.update_witnessed_by(&name, |w| w.switch = Some(on))?;
            Ok::<_, logbook_journal::store::StoreError>(true)
        })
        .await?;
    if !known {
        return Err(Problem::not_found(format!("no peer {instance_id:?}")));
    }
    let state = if on { "on" } else { "off" };
    tracing::warn!(peer = %instance_id, uid = who_did.uid, "peer witnessing turned {state}");
    cx.federation.resupervise_witnesses().await;
    let payload = json!({
        "peer": instance_id,
        "witness": on,
        "changed_by": who(&who_did),
    });
    super::record_admin_event(&cx, "system.peer_witness", &payload, "the switch changed").await?;
    Ok(Json(json!({"instanceId": instance_id, "witness": on})))
}
