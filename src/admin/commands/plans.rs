//! `plans`: list, show, verify, delete and export.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Context, Ctx, plan_id, who};
use crate::http::extract::{Path, Query};
use crate::http::json_array::{self, Items, Runs};
use crate::http::problem::Problem;
use crate::http::serve::LocalPeer;
use logbook_base::hex;
use logbook_journal::store::admin::{DeleteError, SYSTEM_PLAN};
use logbook_journal::store::{AsyncStore, PlanHead, READ_PAGE, READ_PAGE_BYTES};

/// The API's plan head, plus whether it is the system journal.
fn head_json(plan_id: &Uuid, head: &PlanHead) -> Value {
    let mut v = crate::http::api::head_json(plan_id, head);
    v["system"] = json!(*plan_id == SYSTEM_PLAN);
    v
}

/// Every plan's head, written as it is read, 1,000 heads a run: a store
/// can hold millions of plans (`json_array`).
pub(super) async fn list_plans(State(cx): Ctx) -> Result<Response, Problem> {
    let heads = Heads {
        store: cx.store.clone(),
        after: Some(None),
    };
    json_array::respond(json_array::head("plans"), heads).await
}

/// Heads read per run of the plans listing.
const HEADS_RUN: usize = 1000;

struct Heads {
    store: AsyncStore,
    /// The last plan listed (`None` before the first), or `None` once the
    /// listing ended.
    after: Option<Option<Uuid>>,
}

impl Runs for Heads {
    type Tail = Value;

    async fn next_run(&mut self, items: &mut Items) -> Result<bool, Problem> {
        let Some(after) = self.after else {
            return Ok(true);
        };
        let page = self
            .store
            .run(move |store| store.plans_after(after, HEADS_RUN))
            .await?;
        for (id, head) in &page {
            items.push(&head_json(id, head))?;
        }
        self.after = match page.last() {
            Some((id, _)) if page.len() == HEADS_RUN => Some(Some(*id)),
            _ => None,
        };
        Ok(self.after.is_none())
    }

    fn tail(&mut self) -> Value {
        json!({})
    }

    fn what(&self) -> String {
        "the admin plans listing".into()
    }
}

async fn load_head(cx: &Context, plan_id: Uuid) -> Result<PlanHead, Problem> {
    match cx.store.run(move |store| store.head(&plan_id)).await? {
        Some(head) => Ok(head),
        // 410 when it was deleted, as over the API, saying when and at what
        // size: a second `plans delete` must not leave the operator unsure
        // the first one worked.
        None => Err(crate::http::api::missing_plan(&cx.store, plan_id).await),
    }
}

pub(super) async fn show_plan(
    State(cx): Ctx,
    Path(plan): Path<String>,
) -> Result<Json<Value>, Problem> {
    let plan_id = plan_id(&plan)?;
    let head = load_head(&cx, plan_id).await?;
    Ok(Json(head_json(&plan_id, &head)))
}

pub(super) async fn verify_plan(
    State(cx): Ctx,
    Path(plan): Path<String>,
) -> Result<Json<Value>, Problem> {
    let plan_id = plan_id(&plan)?;
    load_head(&cx, plan_id).await?;
    let keyring = cx.store.keyring();
    let report = cx
        .store
        .run(move |store| store.verify_plan(&plan_id, &keyring))
        .await?;
    Ok(Json(json!({
        "plan_id": plan_id,
        "chain_valid": report.is_valid(),
        "verified": report.verified,
        "redacted": report.redacted,
        "broken_at": report.broken.map(|b| b.0),
        "broken_reason": report.broken.map(|b| b.1),
        "missing_key_id": report.broken.and_then(|b| b.1.missing_key()).map(|id| id.to_string()),
        "head_signature": report.head_signature.map(|s| hex::encode(&s)),
    })))
}

pub(super) async fn delete_plan(
    State(cx): Ctx,
    Extension(peer): Extension<LocalPeer>,
    Path(plan): Path<String>,
) -> Result<Json<Value>, Problem> {
    let plan_id = plan_id(&plan)?;
    match cx.store.delete_plan(plan_id, who(&peer)).await {
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
        Err(DeleteError::NotFound) => Err(crate::http::api::missing_plan(&cx.store, plan_id).await),
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

pub(super) async fn export_plan(
    State(cx): Ctx,
    Path(plan): Path<String>,
) -> Result<Response, Problem> {
    let plan_id = plan_id(&plan)?;
    load_head(&cx, plan_id).await?;
    let store = cx.store.clone();
    let lines = async_stream::stream! {
        // The last event sent: each later page must follow that very event,
        // so a plan deleted (or deleted and begun again) mid-export cuts
        // the body instead of ending it as a short, valid-looking export.
        let mut last: Option<(u64, [u8; 32])> = None;
        loop {
            // Bounded in bytes too: the chunk below is the page again.
            let page = store
                .run(move |s| match last {
                    None => s.live_plan_events_page(&plan_id, 0, READ_PAGE, READ_PAGE_BYTES),
                    Some((after, signature)) => s.plan_events_page_after(
                        &plan_id,
                        after,
                        &signature,
                        READ_PAGE,
                        READ_PAGE_BYTES,
                    ),
                })
                .await;
            let (page, more) = match page {
                Ok(Some(page)) => page,
                Ok(None) => {
                    yield Err(std::io::Error::other(format!(
                        "plan {plan_id} was deleted during the export"
                    )));
                    return;
                }
                Err(e) => {
                    // Ending the body early makes the client see a truncated
                    // transfer rather than a short, valid-looking export.
                    yield Err(std::io::Error::other(e.to_string()));
                    return;
                }
            };
            let mut chunk = String::new();
            for event in &page {
                last = Some((event.seq, event.signature));
                chunk.push_str(&serde_json::to_string(event).unwrap_or_default());
                chunk.push('\n');
            }
            yield Ok(Bytes::from(chunk));
            if !more {
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

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CheckpointQuery {
    size: u64,
}

/// `GET /plans/{plan_id}/checkpoint?size=N`: the signed checkpoint of the
/// plan's tree at `size` (at most its head), for `export --checkpoint`,
/// which asks for the size it exported. A smaller tree of the same log
/// signs consistently, so any size up to the head may be signed.
pub(super) async fn plan_checkpoint(
    State(cx): Ctx,
    Path(plan): Path<String>,
    Query(q): Query<CheckpointQuery>,
) -> Result<Response, Problem> {
    let plan_id = plan_id(&plan)?;
    load_head(&cx, plan_id).await?;
    // An export holds at least one event; a checkpoint of the empty tree
    // would vouch for none of them.
    if q.size == 0 {
        return Err(Problem::bad_request(
            "invalid-size",
            "Invalid tree size",
            "size must be at least 1",
        ));
    }
    let size = q.size;
    let (size, root) = cx
        .store
        .run(move |s| s.tree(&plan_id).root(Some(size)))
        .await?
        .map_err(|e| Problem::bad_request("invalid-size", "Invalid tree size", e.to_string()))?;
    let note = cx
        .log
        .checkpoint_text(&cx.store, &plan_id, size, root)
        .await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], note).into_response())
}
