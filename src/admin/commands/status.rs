//! `status` and `metrics`.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Context, Ctx};
use crate::http::problem::Problem;
use logbook_journal::store::{DB_FILE, WAL_FILE};

pub(super) async fn status(State(cx): Ctx) -> Result<Json<Value>, Problem> {
    use std::sync::atomic::Ordering::Relaxed;
    let (plans, events) = cx.store.run(move |store| store.totals()).await?;
    // Where `admin tail --all` starts: the all-plans stream's cursor now.
    let last_position = cx.store.run(move |store| store.last_position()).await?;
    let peers = cx.store.run(crate::http::metrics::peer_queues).await?;
    // The peers' logs this instance witnesses, and the evidence against them.
    let witness_for = cx.store.run(|store| store.witnessed_logs(None)).await?;
    // Both files are the journal: the segment is preallocated, so it
    // counts at its full size from the start.
    let size = |file: &str| std::fs::metadata(cx.data_dir.join(file)).map_or(0, |m| m.len());
    let (db_bytes, wal_bytes) = (size(DB_FILE), size(WAL_FILE));
    let stats = cx.store.stats();
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": cx.started.elapsed().as_secs(),
        "listen": [cx.listen.to_string()],
        "admin_socket": cx.admin_socket.display().to_string(),
        "data_dir": cx.data_dir.display().to_string(),
        "plans": plans,
        "events": events,
        "last_position": last_position,
        "disk_bytes": db_bytes + wal_bytes,
        "disk_files": {DB_FILE: db_bytes, WAL_FILE: wal_bytes},
        "peers": peers,
        "queue_depths": {"writer": cx.store.queue_depth(), "peers": peers.iter().map(|q| (q.peer.clone(), q.queued)).collect::<std::collections::BTreeMap<_, _>>()},
        "last_fsync_micros": stats.last_commit_micros.load(Relaxed),
        "commits": stats.commits.load(Relaxed),
        "sse_clients": cx.stream_stats.connected.load(Relaxed),
        "signing_key_id": cx.store.keyring().current_id(),
        "log_level": crate::admin::logging::current_level(),
        "auth": auth_json(&cx),
        "witnessing": cx.federation.witness_health(),
        "witness_for": witness_for.logs,
        "witness_for_not_listed": witness_for.not_listed,
    })))
}

/// Which auth mode is in force and why (`[auth] required` and the latch).
fn auth_json(cx: &Context) -> Value {
    let (required, reason) = cx.tokens.mode();
    json!({
        "required": required,
        "setting": cx.tokens.setting().as_json(),
        "reason": reason,
        "latched": cx.tokens.latched(),
        "tokens": cx.tokens.current().len(),
    })
}

pub(super) async fn metrics(State(cx): Ctx) -> Response {
    (
        [(header::CONTENT_TYPE, crate::http::metrics::CONTENT_TYPE)],
        crate::http::metrics::render(&cx.store, &cx.stream_stats, &cx.fanout, &cx.federation).await,
    )
        .into_response()
}
