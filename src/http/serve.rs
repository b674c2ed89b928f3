//! Serving a router on a listener: HTTP/1.1 connections with a header read
//! timeout (so a client trickling its headers cannot hold a connection
//! forever), a cap on open connections, and graceful shutdown.
//!
//! A connection over the cap is still accepted, so it never waits in the
//! kernel's accept queue: it gets one 503 problem+json answer and is closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::serve::Listener;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// The TCP peer address of the connection a request came on, in the
/// request's extensions (absent for other listeners).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RemoteAddr(pub SocketAddr);

/// Time a client gets to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections over the cap being answered at once; beyond this, a further
/// one is closed without an answer (the 503 itself must not cost unbounded
/// memory under a flood).
const MAX_REFUSING: usize = 256;
/// Time a refused client gets to send its request head before the 503.
const REFUSE_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Accepts connections until `shutdown` is cancelled, then stops accepting
/// and waits for open connections to finish their current response. The
/// caller bounds that wait. At most `max_connections` are served at once.
pub async fn serve<L: Listener>(
    mut listener: L,
    app: Router,
    shutdown: CancellationToken,
    max_connections: usize,
) {
    let slots = Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS)));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    loop {
        let (io, addr) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if let Ok(permit) = refusing.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    refuse_busy(io, max_connections).await;
                    drop(permit);
                });
            }
            continue;
        };
        // Handlers that limit per client (federation intake) find the
        // peer's address in the request's extensions.
        let remote = (&addr as &dyn std::any::Any)
            .downcast_ref::<SocketAddr>()
            .map(|a| RemoteAddr(*a));
        let app = app.clone();
        let service = TowerToHyperService::new(tower::util::MapRequest::new(
            app,
            move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                if let Some(remote) = remote {
                    req.extensions_mut().insert(remote);
                }
                req
            },
        ));
        let connection = http.serve_connection(TokioIo::new(io), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
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
    let _ = tokio::time::timeout(REFUSE_READ_TIMEOUT, async {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let _ = tokio::time::timeout(REFUSE_READ_TIMEOUT, async {
        let _ = io.write_all(response.as_bytes()).await;
        let _ = io.shutdown().await;
    })
    .await;
}
