//! `redact`: erase one event's payload, recorded in the system journal;
//! `compact`: rewrite the store file so erased bytes do not linger in it.

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{AdminJson, Ctx, plan_id, who};
use crate::http::extract::Path;
use crate::http::problem::Problem;
use crate::http::serve::LocalPeer;
use logbook_base::hex;
use logbook_journal::store::admin::SYSTEM_PLAN;
use logbook_journal::store::redact::{MAX_REASON_BYTES, RedactError, RedactedBy, Redaction};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RedactBody {
    reason: String,
}

/// `POST /plans/{plan_id}/events/{seq}/redact` with `{"reason"}`.
pub(super) async fn redact_event(
    State(cx): Ctx,
    Extension(peer): Extension<LocalPeer>,
    Path((plan, seq)): Path<(String, String)>,
    AdminJson(body): AdminJson<RedactBody>,
) -> Result<Json<Value>, Problem> {
    let plan_id = plan_id(&plan)?;
    let seq = seq.parse::<u64>().ok().filter(|&s| s >= 1).ok_or_else(|| {
        Problem::bad_request(
            "invalid-seq",
            "Invalid seq",
            format!("{seq:?} is not a seq (an integer from 1)"),
        )
    })?;
    let redaction = Redaction {
        plan_id,
        seq,
        reason: body.reason,
        by: RedactedBy::Admin(who(&peer)),
    };
    let outcome = cx
        .store
        .redact(vec![redaction])
        .await
        .map_err(|e| problem(e, plan_id, seq))?
        .pop()
        .expect("one outcome per redaction");
    let redacted = outcome.map_err(|e| problem(e, plan_id, seq))?;
    tracing::warn!(%plan_id, seq, uid = peer.uid, "event payload redacted over the admin socket");
    Ok(Json(json!({
        "plan_id": plan_id,
        "seq": seq,
        "redacted": true,
        "record": {
            "plan_id": SYSTEM_PLAN,
            "seq": redacted.record.seq,
            "signature": hex::encode(&redacted.record.signature),
        },
    })))
}

fn problem(e: RedactError, plan_id: uuid::Uuid, seq: u64) -> Problem {
    let detail = format!("{plan_id}/{seq}: {e}");
    match e {
        RedactError::NotFound => Problem::not_found(detail),
        RedactError::PlanDeleted { tombstone_seq } => {
            Problem::new(StatusCode::GONE, "plan-deleted", "Plan deleted", detail)
                .with("tombstone_seq", tombstone_seq)
        }
        RedactError::AlreadyRedacted => Problem::new(
            StatusCode::CONFLICT,
            "already-redacted",
            "Already redacted",
            detail,
        ),
        RedactError::Protected => {
            Problem::new(StatusCode::FORBIDDEN, "protected", "Protected plan", detail)
        }
        RedactError::InvalidReason(_) => {
            Problem::unprocessable("invalid-reason", "Invalid reason", detail)
                .with("max_reason_bytes", MAX_REASON_BYTES)
        }
        RedactError::Unavailable => Problem::unavailable(detail),
        RedactError::Storage(e) => e.into(),
    }
}

/// `POST /compact`: rewrites the store with only its live rows.
pub(super) async fn compact(
    State(cx): Ctx,
    Extension(peer): Extension<LocalPeer>,
) -> Result<Json<Value>, Problem> {
    let done = cx.store.compact().await?;
    tracing::info!(
        uid = peer.uid,
        bytes_before = done.bytes_before,
        bytes_after = done.bytes_after,
        "store compacted over the admin socket"
    );
    Ok(Json(json!({
        "bytes_before": done.bytes_before,
        "bytes_after": done.bytes_after,
        "rows": done.rows,
    })))
}
