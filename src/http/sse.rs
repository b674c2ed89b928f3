//! Server-Sent Events framing for a follower: `id:` is the cursor, `data:` is
//! the event JSON, and the default event name is used so that
//! `EventSource.onmessage` receives every event.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};

use crate::http::problem::Problem;
use logbook_journal::Event;
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
            Ok(Followed { cursor, event }) => match encoded(&event) {
                Ok(json) => SseEvent::default().id(cursor.to_string()).data(&*json),
                Err(e) => error_event(&Problem::internal(e.to_string())),
            },
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

/// Recently encoded events, newest last. Every live follower receives the
/// same `Arc<Event>` from the fan-out, so the first one to send an event
/// encodes it and the others copy its JSON text: with 10,000 followers,
/// one serialization per event instead of 10,000. A `Weak` keeps the
/// event's allocation, so its address cannot be reused by another event
/// while the entry lives.
static ENCODED: Mutex<VecDeque<(Weak<Event>, Arc<str>)>> = Mutex::new(VecDeque::new());
/// Entries kept: more than the events a burst publishes while followers
/// catch up, few enough to scan.
const ENCODED_CAPACITY: usize = 256;

/// `event`'s JSON text, encoded once for every follower that sends it.
fn encoded(event: &Arc<Event>) -> Result<Arc<str>, serde_json::Error> {
    let hit = |cache: &VecDeque<(Weak<Event>, Arc<str>)>| {
        cache
            .iter()
            .rev()
            .find(|(weak, _)| std::ptr::eq(weak.as_ptr(), Arc::as_ptr(event)))
            .map(|(_, json)| json.clone())
    };
    if let Some(json) = hit(&ENCODED.lock().unwrap_or_else(|e| e.into_inner())) {
        return Ok(json);
    }
    let json: Arc<str> = serde_json::to_string(&**event)?.into();
    let mut cache = ENCODED.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() == ENCODED_CAPACITY {
        cache.pop_front();
    }
    cache.push_back((Arc::downgrade(event), json.clone()));
    Ok(json)
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
