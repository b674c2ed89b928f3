//! The heads log's checkpoint and the witnessed bundle (issue 11):
//! `GET /api/v1/log/checkpoint` and
//! `GET /api/plans/{plan_id}/checkpoint?witnessed=1`. The heads log's
//! proofs and tiles are `proofs.rs`'s, its store `journal::store`'s.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use logbook_journal::store::StoreError;
use serde_json::json;
use uuid::Uuid;

use super::log::{LogApi, text};
use super::problem::Problem;

/// `GET /api/v1/log/checkpoint`: the heads log's signed checkpoint with
/// every cosignature collected for it (an empty log has size 0).
pub(crate) async fn heads_checkpoint(State(state): State<LogApi>) -> Result<Response, Problem> {
    let (size, root) = state
        .store
        .run(|s| s.heads_tree().root(None))
        .await?
        .map_err(|e| Problem::internal(format!("reading the heads log's root: {e}")))?;
    let note = state
        .log
        .heads_checkpoint_text(&state.store, size, root)
        .await?;
    Ok(text(note, "no-cache"))
}

/// The bundle: `plan_id`'s checkpoint as its last heads-log entry records
/// it, that entry's index and text, its inclusion proof, and the heads
/// checkpoint it is proved against: of those that include the entry, the
/// newest cosigned by `[checkpoints] witness_quorum` witnesses, else the
/// newest with cosignatures, else the current one.
pub(crate) async fn bundle(state: &LogApi, plan_id: Uuid) -> Result<Response, Problem> {
    let quorum = state.federation.witness_settings.current().quorum;
    let found = state
        .store
        .run(move |s| {
            let Some(entry) = s.heads_entry(&plan_id)? else {
                return Ok(None);
            };
            let cosigned = s.cosigned_holding(entry.index, quorum)?;
            let proof = s
                .heads_tree()
                .inclusion(entry.index + 1, cosigned.map(|c| c.size))?;
            Ok::<_, StoreError>(Some((entry, proof)))
        })
        .await?;
    let Some((entry, proof)) = found else {
        return Err(Problem::new(
            axum::http::StatusCode::CONFLICT,
            "not-in-heads-log",
            "Not in the heads log yet",
            format!(
                "plan {plan_id} is not recorded in the heads log yet; retry after [checkpoints] interval_secs"
            ),
        ));
    };
    // The entry is in the log at this size: no refusal is possible.
    let proof = proof.map_err(|e| Problem::internal(format!("proving the heads entry: {e}")))?;
    let (heads_size, heads_root) = (proof.size, proof.root);
    let plan_checkpoint = if entry.deleted {
        state
            .log
            .deleted_checkpoint_text(&state.store, &plan_id, entry.size, entry.root)
            .await?
    } else {
        state
            .log
            .checkpoint_text(&state.store, &plan_id, entry.size, entry.root)
            .await?
    };
    let heads_checkpoint = state
        .log
        .heads_checkpoint_text(&state.store, heads_size, heads_root)
        .await?;
    let entry_text = String::from_utf8(logbook_journal::store::heads_entry_bytes(
        &plan_id,
        entry.size,
        &entry.root,
        entry.deleted,
    ))
    .map_err(|e| Problem::internal(e.to_string()))?;
    let body = json!({
        "plan_id": plan_id.to_string(),
        "plan_checkpoint": plan_checkpoint,
        "heads_index": entry.index,
        "heads_entry": entry_text,
        "inclusion_proof": proof.proof.iter().map(|h| BASE64.encode(h)).collect::<Vec<_>>(),
        "heads_checkpoint": heads_checkpoint,
    });
    Ok((
        [(axum::http::header::CACHE_CONTROL, "no-cache")],
        Json(body),
    )
        .into_response())
}
