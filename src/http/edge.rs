//! Checks at the edge of the TCP API, before routing and auth:
//!
//! - **Host** (DNS rebinding). While no token is required, a web page whose
//!   domain an attacker re-points at 127.0.0.1 would be same-origin with the
//!   daemon. So in that mode a request must name a loopback host (or one in
//!   `[server] allowed_hosts`) in `Host`; others get 421.
//! - **Origin** (cross-site writes). In every mode a POST, PUT, PATCH or
//!   DELETE whose `Origin` is present and not allowed by `[http]
//!   cors_origins` gets 403: a browser sends it, so a foreign page cannot
//!   change anything even when it can reach the port.
//! - **SSE stream cap** (`[sse] max_streams`): a stream route beyond the cap
//!   gets 503 instead of holding another follower.
//! - **Body budget** (`[limits] max_buffered_body_bytes`): a request's body
//!   is counted as it arrives, until the request is answered
//!   ([`super::body_budget`]).
//!
//! Requests over the admin socket (they carry a [`LocalPeer`]) passed the
//! peer-uid check and skip all four. The connection cap is in
//! [`super::serve`], below HTTP.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::extract::{FromRef, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper::body::Body as _;
use tower_http::cors::CorsLayer;

use super::AppState;
use super::auth::Tokens;
use super::body_budget::BodyBudget;
use super::cors;
use super::problem::Problem;
use super::serve::LocalPeer;
use crate::config::Limits;
use logbook_base::reloadable::Reloadable;

/// What the checks compare against; replaced on reload.
#[derive(Debug, Clone, Default)]
pub(crate) struct Policy {
    /// `[server] allowed_hosts`, lowercased.
    pub(crate) allowed_hosts: Vec<String>,
    /// `[http] cors_origins`.
    pub(crate) cors_origins: Vec<String>,
}

impl Policy {
    pub(crate) fn new(allowed_hosts: &[String], cors_origins: &[String]) -> Policy {
        Policy {
            allowed_hosts: allowed_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            cors_origins: cors_origins.to_vec(),
        }
    }
}

/// The edge's policy, its count of open SSE streams and its body budget.
#[derive(Debug, Default)]
pub(crate) struct Edge {
    pub(crate) policy: Reloadable<Policy>,
    streams: AtomicUsize,
    max_streams: AtomicUsize,
    pub(crate) bodies: Arc<BodyBudget>,
}

impl Edge {
    pub(crate) fn new(policy: Policy, max_streams: usize) -> Edge {
        Edge {
            policy: Reloadable::new(policy),
            streams: AtomicUsize::new(0),
            max_streams: AtomicUsize::new(max_streams),
            bodies: Arc::default(),
        }
    }

    /// Applies a reloaded `[sse] max_streams`; open streams are kept.
    pub(crate) fn set_max_streams(&self, max: usize) {
        self.max_streams.store(max, Ordering::SeqCst);
    }

    fn try_stream(self: &Arc<Self>) -> Option<StreamSlot> {
        let before = self.streams.fetch_add(1, Ordering::SeqCst);
        if before >= self.max_streams.load(Ordering::SeqCst) {
            self.streams.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(StreamSlot(self.clone()))
    }
}

/// One open stream, counted for as long as its response body lives.
struct StreamSlot(Arc<Edge>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What [`guard`] reads: the edge, whether a token is required, the limits
/// (for the body budget) and the CORS policy it applies last.
#[derive(Clone)]
pub(crate) struct EdgeState {
    edge: Arc<Edge>,
    tokens: Arc<Tokens>,
    limits: Arc<Reloadable<Limits>>,
    cors: Arc<Reloadable<Option<CorsLayer>>>,
}

impl FromRef<AppState> for EdgeState {
    fn from_ref(state: &AppState) -> EdgeState {
        EdgeState {
            edge: state.edge.clone(),
            tokens: state.tokens.clone(),
            limits: state.limits.clone(),
            cors: state.cors.clone(),
        }
    }
}

/// The middleware applying the checks described in the module doc, then
/// the CORS policy ([`cors::apply`]).
pub(crate) async fn guard(State(state): State<EdgeState>, req: Request, next: Next) -> Response {
    let run = |req, next| cors::apply(&state.cors, &state.tokens, &state.edge, req, next);
    if let Err(problem) = check_codings(&req) {
        return problem.into_response();
    }
    if req.extensions().get::<LocalPeer>().is_some() {
        return run(req, next).await;
    }
    // RFC 9112 §3.2: a request with more than one Host is refused, in
    // every mode; otherwise only the first would be checked.
    if req.headers().get_all(header::HOST).iter().count() > 1 {
        return Problem::bad_request(
            "duplicate-host",
            "More than one Host",
            "the request has more than one Host header (RFC 9112 §3.2)",
        )
        .into_response();
    }
    // One Authorization and one Content-Type too: the token check and the
    // body reader would each take the first, so a proxy that adds its own
    // beside a client's would decide in silence which one counts.
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE] {
        if req.headers().get_all(&name).iter().count() > 1 {
            return Problem::bad_request(
                "duplicate-header",
                "A header sent more than once",
                format!("the request has more than one {name} header; send it once"),
            )
            .into_response();
        }
    }
    let policy = state.edge.policy.current();
    if !state.tokens.required()
        && let Err(problem) = check_host(&req, &policy)
    {
        return problem.into_response();
    }
    if let Err(problem) = check_origin(&req, &policy, !state.tokens.required()) {
        return problem.into_response();
    }
    // Every SSE route, and only those, ends in /stream.
    let streaming = matches!(*req.method(), Method::GET | Method::HEAD)
        && req.uri().path().ends_with("/stream");
    if !streaming {
        // A request with no body (most reads) is not wrapped.
        if req.body().size_hint().exact() == Some(0) {
            return run(req, next).await;
        }
        let cap = state.limits.current().max_buffered_body_bytes;
        let (parts, body) = req.into_parts();
        let (body, charge) = state.edge.bodies.charge(body, cap);
        let response = run(Request::from_parts(parts, body), next).await;
        // (A refused body whose rest did not arrive in time got 408.)
        if charge.refused() && response.status() == StatusCode::SERVICE_UNAVAILABLE {
            logbook_base::metrics::observe_body_refused();
        }
        // Answered: its handler (for an append, its commit) is done with
        // the body. A response body does not hold it.
        drop(charge);
        return response;
    }
    let Some(slot) = state.edge.try_stream() else {
        return Problem::unavailable(format!(
            "too many SSE streams are open (sse.max_streams = {}); retry later",
            state.edge.max_streams.load(Ordering::SeqCst)
        ))
        .into_response();
    };
    let response = run(req, next).await;
    // The slot is released when the body is dropped: the client left, the
    // stream ended, or the answer was an error that is already complete.
    // `map_frame` keeps the body a body (one box, no detour through a
    // stream of data chunks): every SSE frame to every follower passes here.
    response.map(|body| {
        Body::new(body.map_frame(move |frame| {
            let _held = &slot;
            frame
        }))
    })
}

/// A body is read as it was sent: a content coding (gzip, br…) would be
/// stored undecoded or misread as bad JSON, and a transfer coding other
/// than `chunked` (which hyper decodes) would reach the handler still
/// encoded, the shape of a request-smuggling attempt behind a proxy. Both
/// are refused, in every mode (RFC 9110 §8.4.1: 415; RFC 9112 §6.1: 501).
fn check_codings(req: &Request) -> Result<(), Problem> {
    // Empty list elements are allowed (RFC 9110 §5.6.1).
    let listed = |name| {
        req.headers()
            .get_all(name)
            .iter()
            .flat_map(|value| value.to_str().unwrap_or("?").split(','))
            .map(str::trim)
            .filter(|coding| !coding.is_empty())
    };
    for coding in listed(header::CONTENT_ENCODING) {
        if !coding.eq_ignore_ascii_case("identity") {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                format!(
                    "the body is sent with Content-Encoding {coding:?}; send it unencoded (no Content-Encoding)"
                ),
            ));
        }
    }
    let codings: Vec<&str> = listed(header::TRANSFER_ENCODING).collect();
    match codings.as_slice() {
        [] => {}
        [only] if only.eq_ignore_ascii_case("chunked") => {}
        _ => {
            return Err(Problem::new(
                StatusCode::NOT_IMPLEMENTED,
                "unsupported-transfer-coding",
                "Unsupported transfer coding",
                format!(
                    "Transfer-Encoding {:?}: only chunked, alone, is understood (RFC 9112 §6.1)",
                    codings.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

fn misdirected(detail: String) -> Problem {
    Problem::new(
        StatusCode::MISDIRECTED_REQUEST,
        "host-not-allowed",
        "Host not allowed",
        detail,
    )
}

/// The Host rule of open mode: every host the request names (the `Host`
/// header, and the authority of an absolute-form target) must be loopback
/// or listed; a request naming none is refused.
fn check_host(req: &Request, policy: &Policy) -> Result<(), Problem> {
    let header = req.headers().get(header::HOST);
    let authority = req.uri().authority().map(|a| a.as_str());
    if header.is_none() && authority.is_none() {
        return Err(misdirected(
            "the request names no Host; while no API token is required only loopback hosts are served".into(),
        ));
    }
    let named = header
        .map(|h| h.to_str().unwrap_or(""))
        .into_iter()
        .chain(authority);
    for host in named {
        if !host_allowed(host, &policy.allowed_hosts) {
            // The name is not echoed: it is the caller's text.
            return Err(misdirected(
                "while no API token is required, only loopback hosts (localhost, 127.0.0.1, [::1]) and server.allowed_hosts are served; this guards against DNS rebinding".into(),
            ));
        }
    }
    Ok(())
}

/// Whether a `Host` value (name or address, with an optional port) is a
/// loopback host or listed in `allowed` (by name, or by name and port).
pub(crate) fn host_allowed(value: &str, allowed: &[String]) -> bool {
    let value = value.trim().to_ascii_lowercase();
    let Some(host) = host_part(&value) else {
        return false;
    };
    is_loopback(host) || allowed.iter().any(|a| *a == value || a == host)
}

/// The host of `name[:port]` or `[v6][:port]`; None when malformed.
fn host_part(value: &str) -> Option<&str> {
    let (host, port) = if value.starts_with('[') {
        let end = value.find(']')?;
        let rest = &value[end + 1..];
        let port = match rest.strip_prefix(':') {
            Some(port) => Some(port),
            None if rest.is_empty() => None,
            None => return None,
        };
        (&value[..=end], port)
    } else {
        match value.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (value, None),
        }
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    (!host.is_empty() && port_ok).then_some(host)
}

fn is_loopback(host: &str) -> bool {
    if host == "localhost" || host == "localhost." {
        return true;
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback());
    }
    host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

/// The Origin rule, in every mode: state-changing requests from a browser
/// page must come from an origin the CORS configuration allows.
fn check_origin(req: &Request, policy: &Policy, open: bool) -> Result<(), Problem> {
    let changes = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let Some(origin) = req.headers().get(header::ORIGIN).filter(|_| changes) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    // More than one Origin is not a browser's request: never allowed.
    let single = req.headers().get_all(header::ORIGIN).iter().count() == 1;
    if single && origin_allowed(origin, &policy.cors_origins, open) {
        return Ok(());
    }
    Err(Problem::new(
        StatusCode::FORBIDDEN,
        "origin-not-allowed",
        "Origin not allowed",
        "this request's Origin is not in http.cors_origins, so it may not change anything",
    ))
}

/// Whether `origin` is allowed by `[http] cors_origins`. While no token is
/// required (`open`), "*" and "null" count for nothing: with them any web
/// page (or a sandboxed one, whose Origin is "null") could read and append
/// with no credential at all. Only origins listed by name are honoured.
pub(crate) fn origin_allowed(origin: &str, allowed: &[String], open: bool) -> bool {
    let wildcard = |a: &str| a == "*" || a.eq_ignore_ascii_case("null");
    !origin.is_empty()
        && allowed.iter().any(|a| {
            if open && wildcard(a) {
                return false;
            }
            a == "*" || a.eq_ignore_ascii_case(origin)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_with_any_port_pass() {
        for host in [
            "localhost",
            "LOCALHOST:7411",
            "127.0.0.1",
            "127.0.0.1:7411",
            "127.5.6.7:1",
            "[::1]",
            "[::1]:7411",
        ] {
            assert!(host_allowed(host, &[]), "{host}");
        }
        for host in [
            "attacker.example",
            "attacker.example:7411",
            "localhost.attacker.example",
            "127.0.0.1.nip.io",
            "10.0.0.5",
            "[::2]",
            "[::1]x",
            "127.0.0.1:",
            "127.0.0.1:80:80",
            "",
        ] {
            assert!(!host_allowed(host, &[]), "{host}");
        }
    }

    #[test]
    fn listed_hosts_pass_by_name_or_name_and_port() {
        let allowed = vec!["logbook.internal".to_string(), "ui.example:8080".into()];
        assert!(host_allowed("logbook.internal", &allowed));
        assert!(host_allowed("Logbook.Internal:7411", &allowed));
        assert!(host_allowed("ui.example:8080", &allowed));
        assert!(!host_allowed("ui.example:8081", &allowed));
        assert!(!host_allowed("other.internal", &allowed));
    }

    #[test]
    fn origins_must_be_listed() {
        let listed = vec!["http://ui.example".to_string()];
        for open in [false, true] {
            assert!(origin_allowed("http://ui.example", &listed, open));
            assert!(!origin_allowed("http://evil.example", &listed, open));
            assert!(!origin_allowed("null", &listed, open));
            assert!(!origin_allowed("http://ui.example", &[], open));
        }
        let wild = vec!["*".to_string(), "null".into()];
        assert!(origin_allowed("http://evil.example", &wild, false));
        assert!(origin_allowed("null", &wild, false));
        // Open mode: neither counts.
        assert!(!origin_allowed("http://evil.example", &wild, true));
        assert!(!origin_allowed("null", &wild, true));
    }
}
