//! The witness and a peer's heads logs over time: a peer starts a new log
//! by renaming it (`[checkpoints] origin_prefix`), which an honest peer
//! does rarely and a log escaping a history it was caught contradicting
//! would do too. Each is said (a WARN), and their number per peer is
//! bounded (`MAX_ORIGINS_PER_PEER`), since each log's latest checkpoint is
//! kept for good.

use axum::http::StatusCode;
use logbook_journal::store::{MAX_ORIGINS_PER_PEER, inert_text};

use super::AppState;
use super::problem::Problem;

/// A peer that begins a log new to this witness while it holds another of
/// that peer's logs has renamed its heads log (`origin_prefix`): an honest
/// change, or a log leaving behind the history it showed here. Said once,
/// at the new log's first cosignature.
pub(super) async fn warn_if_renamed(state: &AppState, origin: &str, peer: &str) {
    let owner = peer.to_string();
    let Ok(found) = state
        .store
        .run(move |s| s.witnessed_logs(Some(&owner)))
        .await
    else {
        return;
    };
    let old: Vec<_> = found.logs.iter().filter(|l| l.origin != origin).collect();
    // The log this one replaces: the one cosigned last.
    if let Some(newest) = old.iter().max_by_key(|l| l.cosigned_at) {
        let evidence: usize = old.iter().map(|l| l.evidence).sum();
        tracing::warn!(%peer, origin = %inert_text(origin), old_origin = %inert_text(&newest.origin), old_size = newest.size, old_logs = old.len(), evidence, "a peer began a new heads log here while this witness holds others of its logs: it renamed its log; auditors who pinned the old log key see a new log");
    }
}

/// 403 `origin-limit`: `peer` has had [`MAX_ORIGINS_PER_PEER`] logs here.
pub(super) fn over_limit(origin: &str, peer: &str) -> Problem {
    tracing::warn!(origin = %inert_text(origin), %peer, "a peer began more heads logs here than a witness keeps for one peer; refused");
    Problem::new(
        StatusCode::FORBIDDEN,
        "origin-limit",
        "Too many logs for one peer",
        format!(
            "this witness keeps at most {MAX_ORIGINS_PER_PEER} heads logs (origins) per peer, and this peer has had that many"
        ),
    )
}
