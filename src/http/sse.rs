//! Server-Sent Events framing for a follower: `id:` is the cursor, `data:` is
//! the event JSON, and the default event name is used so that
//! `EventSource.onmessage` receives every event.
//!
//! Frames are encoded here, not by `axum::response::sse`: every follower
//! of a plan sends the same bytes for an event, so the first one to send
//! it encodes the whole frame and the others share it (one `Bytes` clone
//! each, no copy); and the keep-alive is one interval per stream instead
//! of a timer reset after every event. With 10,000 followers that is most
//! of the daemon's work per event outside the kernel's socket writes
//! (docs/benchmarks.md, "SSE").

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
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
) -> Response {
    let guard = ConnectedGuard::new(stats);
    let frames = followed.map(move |item| {
        // The guard lives as long as the stream; dropping the stream (client
        // gone, or shutdown) releases it and everything the follower held.
        let _connected = &guard;
        match item {
            Ok(Followed { cursor, event }) => match encoded(&event, cursor) {
                Ok(frame) => frame,
                Err(e) => error_frame(&Problem::internal(e.to_string())),
            },
            Err(Interrupted::Storage(e)) => {
                tracing::error!(error = %e, "SSE stream ended by a storage error");
                error_frame(&Problem::internal(e.to_string()))
            }
            Err(Interrupted::PlanDeleted { plan_id, cursor }) => error_frame(
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
        }
    });
    response(until_revoked(frames, revoked), keepalive)
}

/// An SSE response from encoded frames, with a keep-alive comment every
/// `keepalive` (so at least that often while the stream is quiet).
pub(crate) fn response(
    frames: impl Stream<Item = Bytes> + Send + 'static,
    keepalive: Duration,
) -> Response {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let body = WithKeepAlive {
        frames: Box::pin(frames),
        tick,
    }
    .map(Ok::<_, std::convert::Infallible>);
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// `frames`, with an empty comment (`:`) whenever the interval ticks
/// before the next frame. Ends when `frames` ends.
struct WithKeepAlive {
    frames: Pin<Box<dyn Stream<Item = Bytes> + Send>>,
    tick: tokio::time::Interval,
}

impl Stream for WithKeepAlive {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if let Poll::Ready(frame) = self.frames.as_mut().poll_next(cx) {
            return Poll::Ready(frame);
        }
        match self.tick.poll_tick(cx) {
            Poll::Ready(_) => Poll::Ready(Some(Bytes::from_static(b":\n\n"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// One SSE frame: the optional `event:` and `id:` fields, then `data:`.
/// `data` must be one line (compact JSON always is).
pub(crate) fn frame(event: Option<&str>, id: Option<u64>, data: &str) -> Bytes {
    debug_assert!(!data.contains(['\n', '\r']), "SSE data is one line");
    let mut out = Vec::with_capacity(data.len() + 40);
    if let Some(event) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.as_bytes());
        out.push(b'\n');
    }
    if let Some(id) = id {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(id.to_string().as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// Completes with the problem to send when the stream's reader is no longer
/// authorised ([`crate::http::auth::revoked`]).
pub(crate) type Revoked = Pin<Box<dyn Future<Output = Problem> + Send>>;

/// `frames` until `revoked` completes; then an `event: error` with its
/// problem, and the end. Authorisation is checked when a request starts;
/// this keeps a revoked token, or a token becoming required, from leaving
/// streams open. When `frames` ends first (shutdown, deleted plan), so does
/// this.
pub(crate) fn until_revoked(
    frames: impl Stream<Item = Bytes> + Send + 'static,
    revoked: Revoked,
) -> impl Stream<Item = Bytes> + Send + 'static {
    let start = Some((Box::pin(frames), revoked));
    futures_util::stream::unfold(start, |state| async move {
        let (mut frames, mut revoked) = state?;
        tokio::select! {
            biased;
            problem = &mut revoked => Some((error_frame(&problem), None)),
            item = frames.next() => item.map(|item| (item, Some((frames, revoked)))),
        }
    })
}

/// Recently encoded frames, newest last. Every live follower receives the
/// same `Arc<Event>` from the fan-out, so the first one to send an event
/// (at a cursor) encodes its frame and the others share it: with 10,000
/// followers, one serialization per event instead of 10,000. A `Weak`
/// keeps the event's allocation, so its address cannot be reused by
/// another event while the entry lives.
static ENCODED: Mutex<FrameCache> = Mutex::new(FrameCache::new());
/// Entries kept: more than the events a burst publishes while followers
/// catch up, few enough to scan.
const ENCODED_CAPACITY: usize = 256;
/// Bytes of frames kept: events can be as large as a request body, and a
/// frame held here outlives its followers.
const ENCODED_BYTES: usize = 16 << 20;

struct FrameCache {
    entries: VecDeque<(Weak<Event>, u64, Bytes)>,
    bytes: usize,
}

impl FrameCache {
    const fn new() -> FrameCache {
        FrameCache {
            entries: VecDeque::new(),
            bytes: 0,
        }
    }

    fn get(&self, event: &Arc<Event>, cursor: u64) -> Option<Bytes> {
        self.entries
            .iter()
            .rev()
            .find(|(weak, at, _)| *at == cursor && std::ptr::eq(weak.as_ptr(), Arc::as_ptr(event)))
            .map(|(_, _, frame)| frame.clone())
    }

    /// Keeps `frame` for other followers of `event`, if there can be any:
    /// an event read from storage by one follower is its own `Arc`.
    fn put(&mut self, event: &Arc<Event>, cursor: u64, frame: &Bytes) {
        if Arc::strong_count(event) < 2 || frame.len() > ENCODED_BYTES / 4 {
            return;
        }
        while self.entries.len() >= ENCODED_CAPACITY || self.bytes + frame.len() > ENCODED_BYTES {
            let Some((_, _, old)) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= old.len();
        }
        self.bytes += frame.len();
        self.entries
            .push_back((Arc::downgrade(event), cursor, frame.clone()));
    }
}

/// `event`'s frame at `cursor`, encoded once for every follower that sends it.
fn encoded(event: &Arc<Event>, cursor: u64) -> Result<Bytes, serde_json::Error> {
    let cache = || ENCODED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(frame) = cache().get(event, cursor) {
        return Ok(frame);
    }
    let frame = frame(None, Some(cursor), &serde_json::to_string(&**event)?);
    cache().put(event, cursor, &frame);
    Ok(frame)
}

/// An `event: error` frame carrying `problem` as its data.
pub(crate) fn error_frame(problem: &Problem) -> Bytes {
    frame(Some("error"), None, &problem.body().to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(payload_bytes: usize) -> Arc<Event> {
        let payload = serde_json::json!({ "pad": "x".repeat(payload_bytes) });
        Arc::new(Event {
            id: uuid::Uuid::nil(),
            plan_id: uuid::Uuid::nil(),
            seq: 1,
            event_type: "step.done".into(),
            actor: None,
            payload: serde_json::value::to_raw_value(&payload).unwrap(),
            payload_hash: [0; 32],
            prev_hash: None,
            signature: [0; 32],
            key_id: "00000000".into(),
            created_at: logbook_journal::event::Timestamp(0),
            position: 1,
            redacted: false,
        })
    }

    #[test]
    fn the_frame_cache_keeps_only_shared_events_within_its_bytes() {
        let mut cache = FrameCache::new();
        let frame = |n: usize| Bytes::from(vec![b'x'; n]);
        // One follower's own event (read from storage): nothing to share.
        let alone = event(10);
        cache.put(&alone, 1, &frame(100));
        assert!(cache.get(&alone, 1).is_none());
        // A live event, held by the fan-out too: shared.
        let live = event(10);
        let _fanout = live.clone();
        cache.put(&live, 1, &frame(100));
        assert_eq!(cache.get(&live, 1).unwrap().len(), 100);
        assert!(cache.get(&live, 2).is_none());
        // Large frames push older ones out to stay within the bytes.
        let mut held = Vec::new();
        for cursor in 0..8 {
            let big = event(10);
            held.push(big.clone());
            cache.put(&big, cursor, &frame(ENCODED_BYTES / 4));
            assert!(cache.bytes <= ENCODED_BYTES);
        }
        assert_eq!(cache.entries.len(), 4);
        assert!(cache.get(&live, 1).is_none());
        // A frame over a quarter of the budget is not kept at all.
        let huge = event(10);
        let _fanout = huge.clone();
        cache.put(&huge, 9, &frame(ENCODED_BYTES / 4 + 1));
        assert!(cache.get(&huge, 9).is_none());
        assert!(cache.bytes <= ENCODED_BYTES);
    }
}
