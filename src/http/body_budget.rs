//! The bytes of request bodies held in memory at once, over every TCP
//! request: `[limits] max_buffered_body_bytes`.
//!
//! Each route caps its own body (`limits.max_body_bytes`, the federation
//! intake's and the witness's caps), but that cap times the connections
//! (`server.max_connections`, 16,384 by default) is far more memory than a
//! host has. So every body's bytes are counted as they arrive, and stay
//! counted until its request is answered: for an append, after its
//! commit. (A handler dropped when its client leaves returns its share at
//! once; an append it queued stays counted by the writer's own bound,
//! `QUEUE_BYTES` in the journal store.)
//!
//! A body whose next chunk would pass the budget ends with [`OverBudget`]:
//! its route answers 503 and changes nothing. The rest of that body is
//! still read, and dropped as it comes, within the route's read timeout:
//! a server that answers and closes with bytes unread makes the kernel
//! reset the connection, and the client may then never see the answer.
//! What is read so is bounded: the rest of a declared `Content-Length`
//! (which the route checked against its cap before reading), or
//! [`DRAIN_UNDECLARED`] of a chunked body. Past that the error comes at
//! once and the connection is closed with the rest unread.
//!
//! Bytes are counted when they arrive, not when a `Content-Length`
//! announces them, so holding a share of the budget takes sending it. The
//! count is of the body's text; a JSON value parsed from it can take a few
//! times that while its handler runs.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use axum::body::{Body, Bytes};
use hyper::body::{Body as HttpBody, Frame, SizeHint};

/// Most bytes of a refused body without a declared length read and dropped.
pub(crate) const DRAIN_UNDECLARED: u64 = 1 << 20;
/// Most bytes of any refused body read and dropped: the largest body a
/// route can be configured to take (federation's 64 MiB + 16 KiB).
const DRAIN_MOST: u64 = logbook_federation::config::MAX_INCOMING_BODY_BYTES as u64;

/// The bytes of bodies counted now, over all requests.
#[derive(Debug, Default)]
pub(crate) struct BodyBudget {
    held: AtomicUsize,
}

impl BodyBudget {
    /// Wraps a request's body so that its bytes are counted against `cap`
    /// as they arrive. They stay counted until both the returned body and
    /// the [`Charge`] are dropped: the caller keeps the charge until the
    /// request is answered.
    pub(crate) fn charge(self: &Arc<Self>, body: Body, cap: usize) -> (Body, Arc<Charge>) {
        let charge = Arc::new(Charge {
            budget: self.clone(),
            cap,
            bytes: AtomicUsize::new(0),
            refused: AtomicBool::new(false),
        });
        let counted = Counted {
            inner: body,
            charge: charge.clone(),
            state: State::Counting,
        };
        (Body::new(counted), charge)
    }

    /// The bytes counted now.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }
}

/// One request's share of the budget; returned to it on drop.
#[derive(Debug)]
pub(crate) struct Charge {
    budget: Arc<BodyBudget>,
    cap: usize,
    bytes: AtomicUsize,
    refused: AtomicBool,
}

impl Charge {
    /// Whether the body found no room.
    pub(crate) fn refused(&self) -> bool {
        self.refused.load(Ordering::Acquire)
    }

    /// Counts `n` more bytes, unless that would take the budget past its cap.
    fn take(&self, n: usize) -> bool {
        let held = &self.budget.held;
        let taken = held.fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
            now.checked_add(n).filter(|&after| after <= self.cap)
        });
        if taken.is_err() {
            self.refused.store(true, Ordering::Release);
            return false;
        }
        self.bytes.fetch_add(n, Ordering::AcqRel);
        true
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let bytes = *self.bytes.get_mut();
        let before = self.budget.held.fetch_sub(bytes, Ordering::AcqRel);
        debug_assert!(before >= bytes, "a charge returned more than it took");
    }
}

/// Why a body ended early: the budget had no room for its next chunk.
#[derive(Debug)]
pub(crate) struct OverBudget {
    pub(crate) cap: usize,
}

impl std::fmt::Display for OverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "request bodies being received already hold limits.max_buffered_body_bytes ({} bytes)",
            self.cap
        )
    }
}

impl std::error::Error for OverBudget {}

/// The [`OverBudget`] behind a body read's error, if that is why it failed
/// (body wrappers box the error, so the chain is walked).
pub(crate) fn over_budget<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a OverBudget> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(over) = e.downcast_ref::<OverBudget>() {
            return Some(over);
        }
        next = e.source();
    }
    None
}

/// A body whose data frames are counted by its [`Charge`].
struct Counted {
    inner: Body,
    charge: Arc<Charge>,
    state: State,
}

enum State {
    Counting,
    /// Found no room: the rest, up to `left` bytes, is read and dropped,
    /// then the error given.
    Draining {
        left: u64,
    },
    /// The error was given.
    Done,
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        loop {
            if matches!(self.state, State::Done) {
                return Poll::Ready(None);
            }
            let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
            match (&self.state, frame) {
                (State::Counting, Some(Ok(frame))) => {
                    let fits = frame.data_ref().is_none_or(|d| self.charge.take(d.len()));
                    if fits {
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    // hyper's hint is what remains of a declared length.
                    let left = self.inner.size_hint().upper().unwrap_or(DRAIN_UNDECLARED);
                    self.state = State::Draining {
                        left: left.min(DRAIN_MOST),
                    };
                }
                (&State::Draining { left }, Some(Ok(dropped))) => {
                    let len = dropped.data_ref().map_or(0, |d| d.len() as u64);
                    match left.checked_sub(len) {
                        Some(left) => self.state = State::Draining { left },
                        None => return Poll::Ready(Some(Err(self.over_budget()))),
                    }
                }
                (State::Draining { .. }, None) => {
                    return Poll::Ready(Some(Err(self.over_budget())));
                }
                (_, other) => return Poll::Ready(other),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self.state {
            State::Counting => self.inner.is_end_stream(),
            State::Draining { .. } => false,
            State::Done => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Counting => self.inner.size_hint(),
            State::Draining { .. } | State::Done => SizeHint::default(),
        }
    }
}

impl Counted {
    /// Ends the body with the refusal.
    fn over_budget(&mut self) -> axum::Error {
        self.state = State::Done;
        axum::Error::new(OverBudget {
            cap: self.charge.cap,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn body_of(chunks: &[&'static [u8]]) -> Body {
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c))))
            .collect();
        Body::new(http_body_util::StreamBody::new(futures_util::stream::iter(
            frames,
        )))
    }

    #[tokio::test]
    async fn bytes_stay_counted_until_the_body_and_the_charge_are_gone() {
        let budget = Arc::new(BodyBudget::default());
        let (body, charge) = budget.charge(body_of(&[b"abcd", b"ef"]), 10);
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"abcdef");
        assert_eq!(budget.held(), 6, "the request is not answered yet");
        assert!(!charge.refused());
        drop(charge);
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test]
    async fn a_chunk_past_the_cap_ends_the_body_and_takes_nothing() {
        let budget = Arc::new(BodyBudget::default());
        let (first, first_charge) = budget.charge(body_of(&[b"123456"]), 10);
        first.collect().await.unwrap();
        let (second, second_charge) = budget.charge(body_of(&[b"abc", b"defgh", b"ij"]), 10);
        let error = second.collect().await.unwrap_err();
        let boxed: Box<dyn std::error::Error + Send + Sync> = error.into();
        assert_eq!(over_budget(&*boxed).map(|o| o.cap), Some(10));
        assert!(second_charge.refused());
        // The first chunk fitted (6 + 3), the second did not (9 + 5); the
        // rest was read and dropped, and not counted.
        assert_eq!(budget.held(), 9);
        drop(second_charge);
        assert_eq!(budget.held(), 6);
        drop(first_charge);
        let (third, _charge) = budget.charge(body_of(&[b"0123456789"]), 10);
        assert_eq!(third.collect().await.unwrap().to_bytes().len(), 10);
    }

    /// A refused chunked body is read on only up to `DRAIN_UNDECLARED`;
    /// the route's own cap cannot see the bytes dropped.
    #[tokio::test]
    async fn a_refused_body_without_a_length_is_drained_only_so_far() {
        static CHUNK: [u8; 512 * 1024] = [b'x'; 512 * 1024];
        let pulled = Arc::new(AtomicUsize::new(0));
        let frames = std::iter::once(&b"0123456789ab"[..])
            .chain(std::iter::repeat_n(&CHUNK[..], 4))
            .map({
                let pulled = pulled.clone();
                move |chunk| {
                    pulled.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(chunk)))
                }
            });
        let body = Body::new(http_body_util::StreamBody::new(futures_util::stream::iter(
            frames,
        )));
        assert_eq!(body.size_hint().upper(), None);
        let budget = Arc::new(BodyBudget::default());
        let (body, charge) = budget.charge(body, 10);
        let error = body.collect().await.unwrap_err();
        let boxed: Box<dyn std::error::Error + Send + Sync> = error.into();
        assert!(over_budget(&*boxed).is_some());
        assert!(charge.refused());
        // The refused chunk, then 1 MiB dropped; the fourth chunk of 512
        // KiB passes the bound, and the fifth is never asked for.
        assert_eq!(pulled.load(Ordering::SeqCst), 4);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn other_errors_are_not_taken_for_the_budget() {
        let io = std::io::Error::other("reset");
        assert!(over_budget(&io).is_none());
    }
}
