//! `witness evidence`: the checkpoints this instance refused as a witness
//! because they contradict one it had cosigned, each with both signed
//! notes (together they prove the log signed two incompatible histories).

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::Ctx;
use crate::http::problem::Problem;

/// `GET /witness/evidence`: every evidence row, oldest first.
pub(super) async fn witness_evidence(State(cx): Ctx) -> Result<Json<Value>, Problem> {
    let rows = cx.store.run(|s| s.witness_evidence()).await?;
    let evidence: Vec<Value> = rows
        .into_iter()
        .map(|e| {
            json!({
                "origin": e.origin,
                "reason": e.kind,
                "cosignedSize": e.cosigned_size,
                "cosignedNote": e.cosigned_note,
                "refusedSize": e.refused_size,
                "refusedNote": e.refused_note,
                "at": logbook_journal::event::Timestamp(e.at),
            })
        })
        .collect();
    Ok(Json(json!({ "evidence": evidence })))
}
