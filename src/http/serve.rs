//! Serving a router on a listener: HTTP/1.1 connections with a header read
//! timeout (so a client trickling its headers cannot hold a connection
//! forever), a bounded read buffer, optional caps on open connections (in
//! all and per client) and graceful shutdown. The TCP API and the admin
//! Unix socket both run this one loop; what differs between them is behind
//! [`Acceptor`].
//!
//! A connection over a cap is still accepted, so it never waits in the
//! kernel's accept queue: it gets one 503 problem+json answer and is closed.
//! A request hyper cannot parse is answered problem+json too
//! ([`ParseErrorAnswer`]).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use logbook_base::per_client::{ClientSlot, PerClient};

use super::parse_error_answer::ParseErrorAnswer;
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
    /// The address a connection counts against for
    /// `server.max_connections_per_ip`, or None for one that is not counted.
    fn client_ip(_peer: &Self::Peer) -> Option<IpAddr> {
        None
    }
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

    /// Loopback is not counted: a reverse proxy on this host brings every
    /// client over it, and a local process can do worse than connect.
    fn client_ip(peer: &RemoteAddr) -> Option<IpAddr> {
        let ip = peer.0.ip().to_canonical();
        (!ip.is_loopback()).then_some(ip)
    }
}

/// What bounds the clients of the TCP listener (`[server]`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClientLimits {
    /// Connections open at once, in all.
    pub(crate) max_connections: usize,
    /// Connections open at once from one client (IPv4 address or IPv6 /64).
    pub(crate) max_connections_per_ip: usize,
    /// How long a response may wait on a client that takes no byte.
    pub(crate) send_timeout: Duration,
}

/// Time a client gets to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest request head (request line and headers) served; a larger one
/// gets 431 and the connection is closed. No request of ours needs a head
/// near this; browsers' cookies stay far below it.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Most bytes hyper asks to buffer per read from one connection. Its
/// default (about 400 KiB) would let a client holding many connections park
/// that much memory in each for `HEADER_READ_TIMEOUT`; hyper refuses a
/// head still incomplete once its buffer reaches this.
const MAX_BUF_BYTES: usize = 64 * 1024;

/// Connections over a cap being answered at once; beyond this, a further
/// one is closed without an answer (the 503 itself must not cost unbounded
/// memory under a flood).
pub(crate) const MAX_REFUSING: usize = 256;
/// Of those, the most from one client, so that one client reconnecting
/// fast cannot take every answer from the others.
const MAX_REFUSING_PER_CLIENT: usize = 4;
/// Time a refused client gets to send its request head before the 503.
const REFUSE_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Accepts connections until `shutdown` is cancelled, then closes the
/// acceptor and waits for open connections to finish their current
/// response. The caller bounds that wait. With `limits`, at most
/// `max_connections` are served at once and `max_connections_per_ip` of
/// them from one client, and a connection whose client reads nothing for
/// `send_timeout` is reset; `None` (the admin socket, whose peers are all
/// trusted) serves every one at its pace.
pub(crate) async fn serve<A: Acceptor>(
    mut acceptor: A,
    app: Router,
    shutdown: CancellationToken,
    limits: Option<ClientLimits>,
) {
    let caps = limits.map(Caps::new);
    let send_timeout = limits.map(|limits| limits.send_timeout);
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(MAX_BUF_BYTES);
    loop {
        let (io, peer) = tokio::select! {
            accepted = acceptor.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let held = match &caps {
            None => None,
            Some(caps) => match caps.admit(A::client_ip(&peer)) {
                Ok(held) => Some(held),
                Err(refusal) => {
                    logbook_base::metrics::observe_connection_refused(refusal.key());
                    if let Some(answering) = caps.answer_slot(A::client_ip(&peer)) {
                        let limits = caps.limits;
                        tokio::spawn(async move {
                            refuse_busy(io, refusal, limits).await;
                            drop(answering);
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
        let io = TokioIo::new(ParseErrorAnswer::new(SendTimeout::new(io, send_timeout)));
        let connection = http.serve_connection(io, service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "{} ended with an error", A::NAME);
            }
            drop(held);
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

/// The connection slots of [`ClientLimits`], and those of the refusals.
struct Caps {
    limits: ClientLimits,
    all: Arc<Semaphore>,
    per_client: Arc<PerClient>,
    refusing: Arc<Semaphore>,
    refusing_per_client: Arc<PerClient>,
}

impl Caps {
    fn new(limits: ClientLimits) -> Caps {
        Caps {
            limits,
            all: Arc::new(Semaphore::new(
                limits.max_connections.min(Semaphore::MAX_PERMITS),
            )),
            per_client: PerClient::new(limits.max_connections_per_ip),
            refusing: Arc::new(Semaphore::new(MAX_REFUSING)),
            refusing_per_client: PerClient::new(MAX_REFUSING_PER_CLIENT),
        }
    }

    /// A slot to answer a refused connection from `client` with its 503, if
    /// one is free (of all, and of the client's); else it is just closed.
    fn answer_slot(
        &self,
        client: Option<IpAddr>,
    ) -> Option<(OwnedSemaphorePermit, Option<ClientSlot>)> {
        let client_slot = match client {
            None => None,
            Some(ip) => Some(self.refusing_per_client.take(ip)?),
        };
        let slot = self.refusing.clone().try_acquire_owned().ok()?;
        Some((slot, client_slot))
    }

    /// The slots a new connection from `client` holds while it is open:
    /// its client's first (so one client over its share never takes a slot
    /// of the whole), then one of all.
    fn admit(
        &self,
        client: Option<IpAddr>,
    ) -> Result<(OwnedSemaphorePermit, Option<ClientSlot>), Refusal> {
        let client_slot = match client {
            None => None,
            Some(ip) => Some(self.per_client.take(ip).ok_or(Refusal::PerClient)?),
        };
        let slot = self
            .all
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::All)?;
        Ok((slot, client_slot))
    }
}

/// Which cap a connection was over.
#[derive(Clone, Copy, Debug)]
enum Refusal {
    All,
    PerClient,
}

impl Refusal {
    /// The `[server]` key of the cap.
    fn key(self) -> &'static str {
        match self {
            Refusal::All => "max_connections",
            Refusal::PerClient => "max_connections_per_ip",
        }
    }
}

/// Answers a connection over a cap with one 503 and closes it. The request
/// head is read first: a client still sending when the answer arrives may
/// otherwise see a reset instead of the 503.
async fn refuse_busy<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    refusal: Refusal,
    limits: ClientLimits,
) {
    let detail = match refusal {
        Refusal::All => format!(
            "too many connections are open (server.max_connections = {}); retry later",
            limits.max_connections
        ),
        Refusal::PerClient => format!(
            "too many connections from your address are open (server.max_connections_per_ip = {}); close some or retry later",
            limits.max_connections_per_ip
        ),
    };
    tracing::debug!("connection over server.{} refused", refusal.key());
    let body = crate::http::problem::Problem::unavailable(detail)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The TCP listener, but counting loopback clients too, so that the
    /// per-client cap can be seen from this host.
    struct CountingLoopback(TcpListener);

    impl Acceptor for CountingLoopback {
        type Io = TcpStream;
        type Peer = RemoteAddr;
        const NAME: &'static str = "test connection";

        async fn accept(&mut self) -> (TcpStream, RemoteAddr) {
            Acceptor::accept(&mut self.0).await
        }

        fn client_ip(peer: &RemoteAddr) -> Option<IpAddr> {
            Some(peer.0.ip())
        }
    }

    /// Sends one request on `socket` and reads the answer until the end of
    /// its head and body (`Connection: close` on the request's side would
    /// end the connection, so the length is read instead); "" if the
    /// connection ended without one.
    async fn get(socket: &mut TcpStream) -> String {
        // Writing to a connection the server already closed may fail.
        let _ = socket.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    return text;
                }
            }
            let read = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut buf))
                .await
                .expect("no answer");
            // A connection closed without an answer may end in a reset.
            let n = read.unwrap_or(0);
            if n == 0 {
                return text;
            }
            got.extend_from_slice(&buf[..n]);
        }
    }

    /// A `GET /` server on loopback counting loopback clients, with 8
    /// connections in all and `per_client` for one client.
    async fn serve_counting_loopback(
        per_client: usize,
    ) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let app = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let limits = ClientLimits {
            max_connections: 8,
            max_connections_per_ip: per_client,
            send_timeout: Duration::from_secs(60),
        };
        let server = tokio::spawn(serve(
            CountingLoopback(listener),
            app,
            shutdown.clone(),
            Some(limits),
        ));
        (addr, shutdown, server)
    }

    #[tokio::test]
    async fn one_client_holds_its_share_of_connections_and_no_more() {
        let (addr, shutdown, server) = serve_counting_loopback(2).await;
        let mut first = TcpStream::connect(addr).await.unwrap();
        let mut second = TcpStream::connect(addr).await.unwrap();
        assert!(get(&mut first).await.starts_with("HTTP/1.1 200"));
        assert!(get(&mut second).await.starts_with("HTTP/1.1 200"));
        // A third from the same address: one 503 naming the key, closed.
        let mut third = TcpStream::connect(addr).await.unwrap();
        let text = get(&mut third).await;
        assert!(text.starts_with("HTTP/1.1 503"), "{text}");
        assert!(text.contains("server.max_connections_per_ip = 2"), "{text}");
        let mut rest = Vec::new();
        assert_eq!(third.read_to_end(&mut rest).await.unwrap_or(0), 0);
        // The two held still work; closing one lets a new one in.
        assert!(get(&mut first).await.starts_with("HTTP/1.1 200"));
        drop(second);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let mut again = TcpStream::connect(addr).await.unwrap();
            if get(&mut again).await.starts_with("HTTP/1.1 200") {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the slot never came back"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        shutdown.cancel();
        server.await.unwrap();
    }

    /// Refusals are answered at most MAX_REFUSING_PER_CLIENT at a time per
    /// client: one client reconnecting fast cannot take the answers of all.
    #[tokio::test]
    async fn one_client_gets_few_refusal_answers_at_once() {
        let (addr, shutdown, server) = serve_counting_loopback(1).await;
        let mut held = TcpStream::connect(addr).await.unwrap();
        assert!(get(&mut held).await.starts_with("HTTP/1.1 200"));
        // Refused connections that send nothing: each keeps its answer's
        // slot while the head is waited for.
        let mut silent = Vec::new();
        for _ in 0..MAX_REFUSING_PER_CLIENT {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The next is closed at once, with no answer.
        let mut extra = TcpStream::connect(addr).await.unwrap();
        let started = std::time::Instant::now();
        assert_eq!(get(&mut extra).await, "");
        assert!(started.elapsed() < REFUSE_READ_TIMEOUT, "closed at once");
        // The slots come back after the wait: answered again.
        drop(silent);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let mut again = TcpStream::connect(addr).await.unwrap();
            if get(&mut again).await.starts_with("HTTP/1.1 503") {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never answered again"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        shutdown.cancel();
        drop(held);
        server.await.unwrap();
    }

    #[test]
    fn loopback_clients_are_not_counted() {
        let counted =
            |addr: &str| <TcpListener as Acceptor>::client_ip(&RemoteAddr(addr.parse().unwrap()));
        assert_eq!(counted("127.0.0.1:1"), None);
        assert_eq!(counted("127.3.2.1:1"), None);
        assert_eq!(counted("[::1]:1"), None);
        assert_eq!(counted("[::ffff:127.0.0.1]:1"), None);
        assert_eq!(counted("192.0.2.1:1"), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(
            counted("[::ffff:192.0.2.1]:1"),
            Some("192.0.2.1".parse().unwrap())
        );
        assert_eq!(
            counted("[2001:db8::1]:1"),
            Some("2001:db8::1".parse().unwrap())
        );
    }
}
