//! Server-Sent Events framing for a follower: `id:` is the cursor, `data:` is
//! the event JSON, and the default event name is used so that
//! `EventSource.onmessage` receives every event.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};

use crate::http::problem::Problem;
use logbook_journal::fanout::StreamStats;
use logbook_journal::follow::{Followed, Interrupted};
use std::sync::atomic::Ordering;

/// Wraps a follower as an SSE response. A follower that stops early (storage
/// error, deleted plan) sends an `event: error` with a problem+json body, and
/// the stream ends.
pub(crate) fn respond(
    followed: impl Stream<Item = Result<Followed, Interrupted>> + Send + 'static,
    keepalive: Duration,
    stats: Arc<StreamStats>,
    revoked: Revoked,
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
                .unwrap_or_else(|e| error_event(&Problem::internal(e.to_string()))),
            Err(Interrupted::Storage(e)) => {
                tracing::error!(error = %e, "SSE stream ended by a storage error");
                error_event(&Problem::internal(e.to_string()))
            }
            Err(Interrupted::PlanDeleted { plan_id, cursor }) => error_event(
                &Problem::new(
                    StatusCode::GONE,
                    "plan-deleted",
                    "Plan deleted",
                    format!(
                        "plan {plan_id} was deleted after seq {cursor} (see its tombstone in the system journal); a deleted plan's id is never reused, so this stream has ended for good"
                    ),
                )
                .with("plan_id", plan_id.to_string())
                .with("cursor", cursor),
            ),
        })
    });
    Sse::new(until_revoked(events, revoked)).keep_alive(KeepAlive::new().interval(keepalive))
}

/// Completes with the problem to send when the stream's reader is no longer
/// authorised ([`crate::http::auth::revoked`]).
pub(crate) type Revoked = Pin<Box<dyn Future<Output = Problem> + Send>>;

/// `events` until `revoked` completes; then an `event: error` with its
/// problem, and the end. Authorisation is checked when a request starts;
/// this keeps a revoked token, or a token becoming required, from leaving
/// streams open. When `events` ends first (shutdown, deleted plan), so does
/// this.
pub(crate) fn until_revoked(
    events: impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static,
    revoked: Revoked,
) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static {
    let start = Some((Box::pin(events), revoked));
    futures_util::stream::unfold(start, |state| async move {
        let (mut events, mut revoked) = state?;
        tokio::select! {
            biased;
            problem = &mut revoked => Some((Ok(error_event(&problem)), None)),
            item = events.next() => item.map(|item| (item, Some((events, revoked)))),
        }
    })
}

pub(crate) fn error_event(problem: &Problem) -> SseEvent {
    SseEvent::default()
        .event("error")
        .data(problem.body().to_string())
}
/// Counts a connected stream for as long as it lives.
pub(crate) struct ConnectedGuard(Arc<StreamStats>);

impl ConnectedGuard {
    pub(crate) fn new(stats: Arc<StreamStats>) -> ConnectedGuard {
        stats.connected.fetch_add(1, Ordering::Relaxed);
        ConnectedGuard(stats)
    }
}

impl Drop for ConnectedGuard {
    fn drop(&mut self) {
        self.0.connected.fetch_sub(1, Ordering::Relaxed);
    }
}
