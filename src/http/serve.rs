//! Serving a router on a listener: HTTP/1.1 connections with a header read
//! timeout (so a client trickling its headers cannot hold a connection
//! forever), an optional cap on open connections, and graceful shutdown.
//! The TCP API and the admin Unix socket both run this one loop; what
//! differs between them is behind [`Acceptor`].
//!
//! A connection over the cap is still accepted, so it never waits in the
//! kernel's accept queue: it gets one 503 problem+json answer and is closed.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::send_timeout::{SendTimeout, Socket};

/// The TCP peer address of the connection a request came on, in the
/// request's extensions (absent for other listeners).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RemoteAddr(pub SocketAddr);

/// The credentials (SO_PEERCRED) of the process on the other end of a local
/// socket connection, in the request's extensions. Only an acceptor that
/// admitted that process put it there (the admin socket), so the HTTP layer
/// treats a request carrying one as trusted: every scope, no edge checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LocalPeer {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) pid: Option<i32>,
}

/// Where [`serve`] gets its connections, and who each one is from.
pub(crate) trait Acceptor: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Socket + Unpin + Send + 'static;
    /// Who is on the other end; put into every request's extensions, where
    /// handlers look for it (per-client limits, the admin peer check).
    type Peer: Clone + Send + Sync + 'static;
    /// What the logs call one of its connections.
    const NAME: &'static str;
    /// The next connection to serve. Accept errors and refused peers are
    /// dealt with here, never returned: the loop only serves.
    fn accept(&mut self) -> impl Future<Output = (Self::Io, Self::Peer)> + Send;
    /// Stops listening; called once shutdown begins, before open
    /// connections are waited for.
    fn close(self)
    where
        Self: Sized,
    {
    }
}

impl Acceptor for TcpListener {
    type Io = TcpStream;
    type Peer = RemoteAddr;
    const NAME: &'static str = "connection";

    async fn accept(&mut self) -> (TcpStream, RemoteAddr) {
        // axum's accept retries and backs off on errors such as EMFILE.
        let (io, addr) = axum::serve::Listener::accept(self).await;
        (io, RemoteAddr(addr))
    }
}

/// Time a client gets to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections over the cap being answered at once; beyond this, a further
/// one is closed without an answer (the 503 itself must not cost unbounded
/// memory under a flood).
const MAX_REFUSING: usize = 256;
/// Time a refused client gets to send its request head before the 503.
const REFUSE_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Accepts connections until `shutdown` is cancelled, then closes the
/// acceptor and waits for open connections to finish their current
/// response. The caller bounds that wait. With `max_connections`, at most
/// that many are served at once, and with `send_timeout` a connection whose
/// client reads nothing for that long is closed; `None` (the admin socket,
/// whose peers are all trusted) for both serves every one at its pace.
pub(crate) async fn serve<A: Acceptor>(
    mut acceptor: A,
    app: Router,
    shutdown: CancellationToken,
    max_connections: Option<usize>,
    send_timeout: Option<Duration>,
) {
    let slots = max_connections.map(|max| {
        (
            Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            max,
        )
    });
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    loop {
        let (io, peer) = tokio::select! {
            accepted = acceptor.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let slot = match &slots {
            None => None,
            Some((slots, max)) => match slots.clone().try_acquire_owned() {
                Ok(slot) => Some(slot),
                Err(_) => {
                    if let Ok(permit) = refusing.clone().try_acquire_owned() {
                        let max = *max;
                        tokio::spawn(async move {
                            refuse_busy(io, max).await;
                            drop(permit);
                        });
                    }
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(tower::util::MapRequest::new(
            app.clone(),
            move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(peer.clone());
                req
            },
        ));
        let io = TokioIo::new(SendTimeout::new(io, send_timeout));
        let connection = http.serve_connection(io, service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "{} ended with an error", A::NAME);
            }
            drop(slot);
        });
    }
    acceptor.close();
    graceful.shutdown().await;
}

/// Reads a request head (up to 16 KiB), so that an answer sent before the
/// request is read does not reach a client still sending as a reset. The
/// caller bounds the time.
pub(crate) async fn read_request_head<S: AsyncRead + Unpin>(io: &mut S) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match io.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
}

/// Answers a connection over the cap with one 503 and closes it. The request
/// head is read first: a client still sending when the answer arrives may
/// otherwise see a reset instead of the 503.
async fn refuse_busy<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, max_connections: usize) {
    tracing::debug!(
        max_connections,
        "connection over server.max_connections refused"
    );
    let body = crate::http::problem::Problem::unavailable(format!(
        "too many connections are open (server.max_connections = {max_connections}); retry later"
    ))
    .body()
    .to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: {}\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        crate::http::problem::CONTENT_TYPE,
        body.len()
    );
    let _ = tokio::time::timeout(REFUSE_READ_TIMEOUT, read_request_head(&mut io)).await;
    let _ = tokio::time::timeout(REFUSE_READ_TIMEOUT, async {
        let _ = io.write_all(response.as_bytes()).await;
        let _ = io.shutdown().await;
    })
    .await;
}
