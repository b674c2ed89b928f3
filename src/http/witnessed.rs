//! The heads log's checkpoint and the witnessed bundle (issue 11):
//! `GET /api/v1/log/checkpoint` and
//! `GET /api/plans/{plan_id}/checkpoint?witnessed=1`. The heads log's
//! proofs and tiles are `proofs.rs`'s, its store `journal::store`'s.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use logbook_journal::store::{
    Cosigned, HeadsEntry, Inclusion, MAX_LATER_ENTRIES, REENTER_AFTER, Store, StoreError,
};
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

/// The bundle: `plan_id`'s checkpoint as a heads-log entry records it
/// (its last, or while that waits for a quorum an older one:
/// [`witnessed_entry`]), that entry's index and text, its inclusion proof,
/// every entry after it (`later_entries`: none names the plan, which
/// proves the entry is its latest there), and the heads checkpoint it is
/// proved against.
pub(crate) async fn bundle(state: &LogApi, plan_id: Uuid) -> Result<Response, Problem> {
    let quorum = state.federation.witness_settings.current().quorum;
    let found = state
        .store
        .run(move |s| {
            // A pass may enter the plan again while this reads: then the
            // entries after the old one name it, and the read is redone.
            for _ in 0..3 {
                let Some(last) = s.heads_entry(&plan_id)? else {
                    return Ok(Found::NotYet);
                };
                let (entry, cosigned) = witnessed_entry(s, &plan_id, last, quorum)?;
                let proof = s
                    .heads_tree()
                    .inclusion(entry.index + 1, cosigned.map(|c| c.size))?;
                // The entry is in the log at this size: no refusal is possible.
                let proof = match proof {
                    Ok(proof) => proof,
                    Err(e) => return Ok(Found::Unprovable(e.to_string())),
                };
                let later = proof.size - entry.index - 1;
                // (An older entry is chosen only while the last one waits
                // for its cosignatures: that one is recent.)
                if later > REENTER_AFTER && entry == last {
                    s.request_reentry(plan_id);
                }
                if later > MAX_LATER_ENTRIES {
                    return Ok(Found::Behind(later));
                }
                let later_entries = s.heads_log_entries(entry.index + 1, proof.size)?;
                if s.heads_entry(&plan_id)? == Some(last) {
                    return Ok(Found::Entry(entry, proof, later_entries));
                }
            }
            Err(StoreError::retry_later(
                "the plan's heads-log entry kept moving while the bundle was read".into(),
            ))
        })
        .await?;
    let (entry, proof, later_entries) = match found {
        Found::Entry(entry, proof, later) => (entry, proof, later),
        Found::NotYet => {
            return Err(Problem::new(
                axum::http::StatusCode::CONFLICT,
                "not-in-heads-log",
                "Not in the heads log yet",
                format!(
                    "plan {plan_id} is not recorded in the heads log yet; retry after [checkpoints] interval_secs"
                ),
            ));
        }
        Found::Unprovable(e) => {
            return Err(Problem::internal(format!("proving the heads entry: {e}")));
        }
        Found::Behind(later) => {
            return Err(Problem::new(
                axum::http::StatusCode::CONFLICT,
                "not-in-heads-log",
                "Not in the heads log yet",
                format!(
                    "plan {plan_id}'s last heads-log entry has {later} entries after it, more than a bundle carries ({MAX_LATER_ENTRIES}); the plan is entered again at the next pass, and witnessed once the witnesses cosign it: retry in a minute"
                ),
            ));
        }
    };
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
        "later_entries": later_entries
            .into_iter()
            .map(|e| String::from_utf8(e).map_err(|e| Problem::internal(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?,
        "heads_checkpoint": heads_checkpoint,
    });
    Ok((
        [(axum::http::header::CACHE_CONTROL, "no-cache")],
        Json(body),
    )
        .into_response())
}

/// The entry a bundle proves, and the cosigned heads checkpoint to prove
/// it against: the plan's `last` entry and the newest kept checkpoint
/// holding it with a quorum (else with cosignatures, else none: the current
/// one). While no checkpoint with a quorum holds `last` yet (the minute
/// after the plan moved, or was entered again), the plan's latest entry in
/// the newest checkpoint that has a quorum, if one of the entries it
/// carries at most is the plan's: witnessed history, a little older, rather
/// than the newest without a quorum. A deletion is always proved as itself.
fn witnessed_entry(
    s: &Store,
    plan_id: &Uuid,
    last: HeadsEntry,
    quorum: usize,
) -> Result<(HeadsEntry, Option<Cosigned>), StoreError> {
    let cosigned = s.cosigned_holding(last.index, quorum)?;
    if quorum == 0 || last.deleted || cosigned.as_ref().is_some_and(|c| c.lines.len() >= quorum) {
        return Ok((last, cosigned));
    }
    let Some(newest) = s
        .cosigned_holding(0, quorum)?
        .filter(|c| c.lines.len() >= quorum && c.size <= last.index)
    else {
        return Ok((last, cosigned));
    };
    match s.heads_entry_before(plan_id, newest.size, MAX_LATER_ENTRIES + 1)? {
        Some(older) if !older.deleted => Ok((older, Some(newest))),
        _ => Ok((last, cosigned)),
    }
}

/// What the store found for a bundle.
enum Found {
    /// The plan has no heads-log entry yet.
    NotYet,
    /// Its last entry has this many after it, too many to carry.
    Behind(u64),
    /// The entry is in the log, yet no proof of it could be made.
    Unprovable(String),
    Entry(HeadsEntry, Inclusion, Vec<Vec<u8>>),
}
