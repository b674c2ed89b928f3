//! A bound on a client that stops reading.
//!
//! Invariant: a connection whose writes make no progress for
//! `server.send_timeout_secs` is closed. Without it, a client that opens a
//! stream (or asks for a large page) and never reads holds its connection
//! slot, its SSE stream and the kernel's send buffer (up to megabytes)
//! for as long as it likes: a few thousand such sockets pin gigabytes.
//!
//! The clock runs only while a write waits: it starts when the socket
//! refuses a byte and stops at the next byte it takes. A slow reader that
//! keeps reading is never cut, however slow; a quiet stream is not waiting
//! on a write at all. On expiry the write fails with `TimedOut`, hyper ends
//! the connection, and the response's body (an SSE follower) is dropped.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// `io`, whose writes fail once one has waited `limit` with no progress.
pub(crate) struct SendTimeout<IO> {
    io: IO,
    limit: Option<Duration>,
    /// Armed while a write waits; reset (not reallocated) for the next wait.
    clock: Option<Pin<Box<Sleep>>>,
    waiting: bool,
    /// The limit passed: every write fails from then on, counted once.
    expired: bool,
}

impl<IO> SendTimeout<IO> {
    /// `limit: None` (the admin socket, whose peers are trusted and may page
    /// an export at a human's pace) passes every call through.
    pub(crate) fn new(io: IO, limit: Option<Duration>) -> SendTimeout<IO> {
        SendTimeout {
            io,
            limit,
            clock: None,
            waiting: false,
            expired: false,
        }
    }

    /// What a call that got `polled` from the socket answers. Only a write
    /// that took bytes (`progress`) stops the clock: a flush that returns
    /// at once (a TCP socket's always does) says nothing of the client.
    fn after<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
        progress: bool,
    ) -> Poll<io::Result<T>> {
        let Some(limit) = self.limit else {
            return polled;
        };
        if self.expired {
            return Poll::Ready(Err(timed_out(limit)));
        }
        if polled.is_ready() {
            if progress {
                self.waiting = false;
            }
            return polled;
        }
        if !self.waiting {
            let deadline = Instant::now() + limit;
            match &mut self.clock {
                Some(clock) => clock.as_mut().reset(deadline),
                None => self.clock = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.waiting = true;
        }
        let clock = self.clock.as_mut().expect("armed when the wait began");
        ready!(clock.as_mut().poll(cx));
        self.expired = true;
        logbook_base::metrics::observe_send_timeout();
        Poll::Ready(Err(timed_out(limit)))
    }
}

fn timed_out(limit: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "the client read nothing for {} s (server.send_timeout_secs)",
            limit.as_secs()
        ),
    )
}

impl<IO: AsyncRead + Unpin> AsyncRead for SendTimeout<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for SendTimeout<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.after(cx, polled, true)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.after(cx, polled, true)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.after(cx, polled, false)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    const LIMIT: Duration = Duration::from_secs(60);

    /// Writes until the pipe is full; returns how much went in.
    async fn fill(w: &mut SendTimeout<tokio::io::DuplexStream>) -> usize {
        let mut written = 0;
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(1), w.write(&[7u8; 64])).await
        {
            written += n;
        }
        written
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_waits_the_limit_fails() {
        let (a, _b) = duplex(256);
        let mut w = SendTimeout::new(a, Some(LIMIT));
        assert_eq!(fill(&mut w).await, 256);
        let started = Instant::now();
        let err = w.write_all(&[1]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let waited = started.elapsed();
        assert!(waited >= LIMIT - Duration::from_millis(2), "{waited:?}");
        assert!(waited <= LIMIT + Duration::from_millis(2), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_keeps_reading_is_never_cut() {
        let (a, mut b) = duplex(256);
        let mut w = SendTimeout::new(a, Some(LIMIT));
        // The reader takes one byte every 50 s: each wait is shorter than
        // the limit, though the whole transfer lasts far longer.
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut byte = [0u8; 1];
            while b.read(&mut byte).await.unwrap() == 1 {
                got += 1;
                tokio::time::sleep(Duration::from_secs(50)).await;
            }
            got
        });
        let started = Instant::now();
        w.write_all(&[9u8; 300])
            .await
            .expect("a slow reader is not cut");
        assert!(started.elapsed() > 2 * LIMIT);
        drop(w);
        assert_eq!(reader.await.unwrap(), 300);
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_starts_again_at_each_wait() {
        let (a, mut b) = duplex(256);
        let mut w = SendTimeout::new(a, Some(LIMIT));
        fill(&mut w).await;
        // 59 s of waiting, then the reader drains the pipe.
        let pending = tokio::time::timeout(LIMIT - Duration::from_secs(1), w.write_all(&[1])).await;
        assert!(pending.is_err(), "the write is still waiting");
        let mut sink = [0u8; 256];
        assert_eq!(b.read(&mut sink).await.unwrap(), 256);
        w.write_all(&[1]).await.expect("the pipe has room again");
        // Full again: a new wait gets the whole limit, not what was left.
        fill(&mut w).await;
        let started = Instant::now();
        assert!(w.write_all(&[1]).await.is_err());
        assert!(started.elapsed() >= LIMIT - Duration::from_millis(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_flush_does_not_restart_the_clock() {
        let (a, _b) = duplex(256);
        let mut w = SendTimeout::new(a, Some(LIMIT));
        fill(&mut w).await;
        let started = Instant::now();
        // A writer that flushes after every refused write, as a connection
        // loop may: the flush returns at once, and the wait goes on.
        let mut err = None;
        for _ in 0..1000 {
            w.flush().await.unwrap();
            match tokio::time::timeout(Duration::from_secs(1), w.write(&[1])).await {
                Ok(Err(e)) => {
                    err = Some(e);
                    break;
                }
                Ok(Ok(n)) => panic!("the full pipe took {n} bytes"),
                Err(_) => {}
            }
        }
        assert_eq!(
            err.expect("the limit passed").kind(),
            io::ErrorKind::TimedOut
        );
        assert!(started.elapsed() <= LIMIT + Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_limit_a_write_waits_for_ever() {
        let (a, _b) = duplex(256);
        let mut w = SendTimeout::new(a, None);
        fill(&mut w).await;
        let waited = tokio::time::timeout(100 * LIMIT, w.write_all(&[1])).await;
        assert!(waited.is_err(), "no limit, no error");
    }
}
