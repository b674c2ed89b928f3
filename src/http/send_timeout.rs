//! A bound on a client that stops reading.
//!
//! Invariant: a connection whose peer has taken no byte for
//! `server.send_timeout_secs` while a write waits is closed, with a reset.
//! Without it, a client that opens a stream (or asks for a large page) and
//! never reads holds its connection slot, its SSE stream and the kernel's
//! send buffer (up to megabytes) for as long as it likes.
//!
//! The clock runs only while a write waits: it starts when the socket
//! refuses a byte and stops at the next byte it takes. A quiet stream is
//! not waiting at all. A TCP socket that refused a write takes more only
//! once about a third of its buffer has drained, so a reader slower than
//! that per period could look stalled; at expiry the clock therefore asks
//! the kernel whether the peer acknowledged any byte since the wait began
//! ([`Socket::acked`], `TCP_INFO`), and if so starts again. On expiry the
//! write fails with `TimedOut`, hyper ends the connection, the response's
//! body (an SSE follower) is dropped, and the socket is reset so that the
//! kernel drops what it still held for the client.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// What the clock asks of the socket under it.
pub(crate) trait Socket {
    /// Bytes the peer has acknowledged so far (`tcpi_bytes_acked`), where
    /// the socket can tell.
    fn acked(&self) -> Option<u64>;
    /// Makes the close a reset, which frees the send buffer at once.
    fn reset_on_close(&self);
}

impl Socket for tokio::net::TcpStream {
    fn acked(&self) -> Option<u64> {
        bytes_acked(self)
    }

    fn reset_on_close(&self) {
        let _ = self.set_zero_linger();
    }
}

impl Socket for tokio::net::UnixStream {
    fn acked(&self) -> Option<u64> {
        None
    }

    fn reset_on_close(&self) {}
}

// uclibc's `tcp_info` in libc lacks the field.
#[cfg(all(target_os = "linux", any(target_env = "gnu", target_env = "musl")))]
fn bytes_acked(stream: &tokio::net::TcpStream) -> Option<u64> {
    use std::os::fd::AsRawFd;
    // SAFETY: `tcp_info` is plain data, valid when zeroed; getsockopt
    // writes at most `len` bytes into it, and the fd is open (borrowed).
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let status = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    // A kernel older than the field (4.1) writes a shorter struct.
    let needed = std::mem::offset_of!(libc::tcp_info, tcpi_bytes_acked) + 8;
    (status == 0 && len as usize >= needed).then_some(info.tcpi_bytes_acked)
}

#[cfg(not(all(target_os = "linux", any(target_env = "gnu", target_env = "musl"))))]
fn bytes_acked(_: &tokio::net::TcpStream) -> Option<u64> {
    None
}

/// `io`, whose writes fail once one has waited `limit` with no progress.
pub(crate) struct SendTimeout<IO> {
    io: IO,
    limit: Option<Duration>,
    /// Armed while a write waits; reset (not reallocated) for the next wait.
    clock: Option<Pin<Box<Sleep>>>,
    waiting: bool,
    /// [`Socket::acked`] when the clock last started.
    acked: Option<u64>,
    /// The limit passed: every write fails from then on, counted once.
    expired: bool,
}

impl<IO: Socket> SendTimeout<IO> {
    /// `limit: None` (the admin socket, whose peers are trusted and may page
    /// an export at a human's pace) passes every call through.
    pub(crate) fn new(io: IO, limit: Option<Duration>) -> SendTimeout<IO> {
        SendTimeout {
            io,
            limit,
            clock: None,
            waiting: false,
            acked: None,
            expired: false,
        }
    }

    /// The error every write gets once the limit passed.
    fn refused(&self) -> Option<io::Error> {
        let limit = self.limit?;
        self.expired.then(|| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client read nothing for {} s (server.send_timeout_secs)",
                    limit.as_secs()
                ),
            )
        })
    }

    /// Makes `call` on the socket, unless the limit has passed. Only a
    /// call that took bytes (`progress`) stops the clock: a flush that
    /// returns at once (a TCP socket's always does) says nothing of the
    /// client.
    fn guarded<T>(
        &mut self,
        cx: &mut Context<'_>,
        call: impl FnOnce(Pin<&mut IO>, &mut Context<'_>) -> Poll<io::Result<T>>,
        progress: impl FnOnce(&T) -> bool,
    ) -> Poll<io::Result<T>>
    where
        IO: Unpin,
    {
        if let Some(e) = self.refused() {
            return Poll::Ready(Err(e));
        }
        let polled = call(Pin::new(&mut self.io), cx);
        let Some(limit) = self.limit else {
            return polled;
        };
        if let Poll::Ready(result) = &polled {
            if result.as_ref().is_ok_and(progress) {
                self.waiting = false;
            }
            return polled;
        }
        if !self.waiting {
            self.start(limit);
        }
        loop {
            let clock = self.clock.as_mut().expect("armed when the wait began");
            ready!(clock.as_mut().poll(cx));
            let acked = self.io.acked();
            if acked.is_some() && acked != self.acked {
                // The peer took bytes the socket has not yet offered back.
                self.start(limit);
                continue;
            }
            self.expired = true;
            self.io.reset_on_close();
            logbook_base::metrics::observe_send_timeout();
            return Poll::Ready(Err(self.refused().expect("expired")));
        }
    }

    fn start(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        match &mut self.clock {
            Some(clock) => clock.as_mut().reset(deadline),
            None => self.clock = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        self.waiting = true;
        self.acked = self.io.acked();
    }
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

impl<IO: AsyncWrite + Socket + Unpin> AsyncWrite for SendTimeout<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .guarded(cx, |io, cx| io.poll_write(cx, buf), |&n| n > 0)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .guarded(cx, |io, cx| io.poll_write_vectored(cx, bufs), |&n| n > 0)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut()
            .guarded(cx, |io, cx| io.poll_flush(cx), |()| false)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

    use super::*;

    const LIMIT: Duration = Duration::from_secs(60);

    impl Socket for DuplexStream {
        fn acked(&self) -> Option<u64> {
            None
        }

        fn reset_on_close(&self) {}
    }

    /// A pipe whose "kernel" reports acknowledged bytes the test sets.
    struct Acking {
        pipe: DuplexStream,
        acked: Arc<AtomicU64>,
    }

    impl Socket for Acking {
        fn acked(&self) -> Option<u64> {
            Some(self.acked.load(Ordering::SeqCst))
        }

        fn reset_on_close(&self) {}
    }

    impl AsyncRead for Acking {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().pipe).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Acking {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.get_mut().pipe).poll_write(cx, buf)
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().pipe).poll_flush(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().pipe).poll_shutdown(cx)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_the_peer_acknowledged_start_the_clock_again() {
        let (pipe, _b) = duplex(256);
        let acked = Arc::new(AtomicU64::new(0));
        let mut w = SendTimeout::new(
            Acking {
                pipe,
                acked: acked.clone(),
            },
            Some(LIMIT),
        );
        while let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(1), w.write(&[7u8; 64])).await
        {}
        let started = Instant::now();
        // The socket still refuses (its buffer has not drained a third),
        // but the peer acknowledged bytes 50 s into the wait.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(50)).await;
            acked.store(4096, Ordering::SeqCst);
        });
        let err = w.write_all(&[1]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let waited = started.elapsed();
        assert!(waited >= 2 * LIMIT - Duration::from_millis(2), "{waited:?}");
        assert!(waited <= 2 * LIMIT + Duration::from_millis(2), "{waited:?}");
        // Cut: every later write fails without touching the socket.
        assert_eq!(
            w.write(&[1]).await.unwrap_err().kind(),
            io::ErrorKind::TimedOut
        );
    }

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
