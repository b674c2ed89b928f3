//! Server-Sent Events framing for a follower: `id:` is the cursor, `data:` is
//! the event JSON, and the default event name is used so that
//! `EventSource.onmessage` receives every event.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};

use super::follow::Followed;
use super::{ConnectedGuard, StreamStats};
use crate::journal::store::StoreError;

/// Wraps a follower as an SSE response. A storage error mid-stream is sent as
/// an `event: error` with a problem+json body, and the stream ends.
pub fn respond(
    followed: impl Stream<Item = Result<Followed, StoreError>> + Send + 'static,
    keepalive: Duration,
    stats: Arc<StreamStats>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let guard = ConnectedGuard::new(stats);
    let events = followed.map(move |item| {
        // The guard lives as long as the stream; dropping the stream (client
        // gone, or shutdown) releases it and everything the follower held.
        let _connected = &guard;
        Ok(match item {
            Ok(Followed { cursor, event }) => SseEvent::default()
                .id(cursor.to_string())
                .json_data(&*event)
                .unwrap_or_else(|e| error_event(&e.to_string())),
            Err(e) => {
                tracing::error!(error = %e, "SSE stream ended by a storage error");
                error_event(&e.to_string())
            }
        })
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(keepalive))
}

fn error_event(detail: &str) -> SseEvent {
    let problem = serde_json::json!({
        "type": "urn:logbook:problem:internal",
        "title": "Internal error",
        "status": 500,
        "detail": detail,
    });
    SseEvent::default().event("error").data(problem.to_string())
}
