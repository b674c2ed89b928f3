//! The bytes of request bodies held in memory at once, over every TCP
//! request: `[limits] max_buffered_body_bytes`.
//!
//! Each route caps its own body (`limits.max_body_bytes`, the federation
//! intake's and the witness's caps), but that cap times the connections
//! (`server.max_connections`, 16,384 by default) is far more memory than a
//! host has. So every body's bytes are counted as they arrive, and stay
//! counted until its request is answered. For an append that is after its
//! commit, so the writer's queue is bounded by the same count.
//!
//! A body whose next chunk would pass the budget ends with [`OverBudget`]:
//! its route answers 503 and changes nothing. The rest of that body is
//! still read, and dropped as it comes, within the route's read timeout:
//! a server that answers and closes with bytes unread makes the kernel
//! reset the connection, and the client may then never see the answer.
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
    /// Found no room: the rest is read and dropped, then the error given.
    Draining,
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
                    self.state = State::Draining;
                }
                (State::Draining, Some(Ok(_dropped))) => {}
                (State::Draining, None) => {
                    self.state = State::Done;
                    let over = OverBudget {
                        cap: self.charge.cap,
                    };
                    return Poll::Ready(Some(Err(axum::Error::new(over))));
                }
                (_, other) => return Poll::Ready(other),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self.state {
            State::Counting => self.inner.is_end_stream(),
            State::Draining => false,
            State::Done => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Counting => self.inner.size_hint(),
            State::Draining | State::Done => SizeHint::default(),
        }
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

    #[test]
    fn other_errors_are_not_taken_for_the_budget() {
        let io = std::io::Error::other("reset");
        assert!(over_budget(&io).is_none());
    }
}
