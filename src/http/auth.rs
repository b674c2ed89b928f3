//! Bearer-token authentication and scopes.
//!
//! Tokens are known only by their SHA-256; a presented token is hashed and
//! compared in constant time against every known hash.
//!
//! Whether a token is needed at all follows `[auth] required`: with "auto"
//! (the default) only while no token has ever existed (the latch, kept in
//! the store, stays set after the last token is revoked); `true` always;
//! `false` never. While none is needed ("open mode", loopback only), the
//! federation management routes are still refused over TCP (admin socket
//! only), and [`super::edge`] checks Host and Origin.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use axum::extract::{FromRef, FromRequestParts, Request, State};
use axum::http::{StatusCode, header, request::Parts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;
use tokio::sync::watch;

use super::AppState;
use super::problem::Problem;
use super::serve::LocalPeer;
use crate::config::{AuthRequired, Scope};
use logbook_base::canonical::sha256;
use logbook_base::reloadable::Reloadable;

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub(crate) name: String,
    pub(crate) hash: [u8; 32],
    pub(crate) scopes: Vec<Scope>,
}

/// The tokens in force, and whether one is required. Replaceable at run
/// time (config reload, admin).
#[derive(Debug, Default)]
pub(crate) struct Tokens {
    set: Reloadable<Vec<Token>>,
    setting: RwLock<AuthRequired>,
    /// A token has existed (the persisted latch, or one seen since start).
    latched: AtomicBool,
    /// Bumped whenever the set, the setting or the latch changes, so that
    /// open SSE streams re-check how they were authorised ([`revoked`]).
    generation: watch::Sender<u64>,
}

impl Tokens {
    /// Publishes a new set. A non-empty set latches auth on (the callers
    /// persist the latch in the store as well).
    pub(crate) fn replace(&self, tokens: Vec<Token>) {
        if !tokens.is_empty() {
            self.latched.store(true, Ordering::SeqCst);
        }
        self.set.replace(tokens);
        self.bump();
    }

    /// Tells open streams that who may read changed.
    fn bump(&self) {
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
    }

    pub(crate) fn current(&self) -> Arc<Vec<Token>> {
        self.set.current()
    }

    /// Applies `[auth] required` (at start and on reload).
    pub(crate) fn set_setting(&self, setting: AuthRequired) {
        *self.setting.write().unwrap_or_else(|e| e.into_inner()) = setting;
        self.bump();
    }

    pub(crate) fn setting(&self) -> AuthRequired {
        *self.setting.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks that a token has existed (the persisted latch was found).
    pub(crate) fn latch(&self) {
        self.latched.store(true, Ordering::SeqCst);
        self.bump();
    }

    pub(crate) fn latched(&self) -> bool {
        self.latched.load(Ordering::SeqCst)
    }

    /// Whether a request over TCP needs a token, and why, for `admin status`.
    pub(crate) fn mode(&self) -> (bool, &'static str) {
        let count = self.current().len();
        match self.setting() {
            AuthRequired::Always => (true, "auth.required = true"),
            AuthRequired::Never => (
                false,
                "auth.required = false (operator opt-out: loopback only, Host and Origin checked, federation management on the admin socket only)",
            ),
            AuthRequired::Auto if count > 0 => (true, "API tokens exist"),
            AuthRequired::Auto if self.latched() => (true, "a token existed (latched)"),
            AuthRequired::Auto => (
                false,
                "no token has ever existed (first run: loopback only, Host and Origin checked, federation management on the admin socket only)",
            ),
        }
    }

    /// Whether a request over TCP needs a token.
    pub(crate) fn required(&self) -> bool {
        self.mode().0
    }

    /// The token matching the secret `presented` (tests look tokens up by
    /// their secret; requests go through [`Tokens::find_hash`]).
    #[cfg(test)]
    pub(crate) fn find(&self, presented: &str) -> Option<Token> {
        self.find_hash(&sha256(presented.as_bytes()))
    }

    /// The token whose SHA-256 is `hash`, checked against every entry so the
    /// time taken does not depend on which one matched.
    fn find_hash(&self, hash: &[u8; 32]) -> Option<Token> {
        let mut found = None;
        for token in self.current().iter() {
            if bool::from(token.hash.ct_eq(hash)) {
                found = Some(token.clone());
            }
        }
        found
    }
}

/// Middleware guarding a route group with one scope; `state` is anything
/// the tokens can be taken from (the tokens themselves, or [`AppState`]).
/// The grant is kept in the request's extensions, so that a stream can
/// re-check it for as long as it stays open ([`Grant`]).
pub(crate) async fn require<S>(scope: Scope, state: S, mut req: Request, next: Next) -> Response
where
    Arc<Tokens>: FromRef<S>,
{
    match check(scope, &Arc::<Tokens>::from_ref(&state), &req) {
        Ok(grant) => {
            req.extensions_mut().insert(grant);
            next.run(req).await
        }
        Err(problem) => problem.into_response(),
    }
}

pub(crate) async fn require_read(
    State(tokens): State<Arc<Tokens>>,
    req: Request,
    next: Next,
) -> Response {
    require(Scope::Read, tokens, req, next).await
}

/// The auth check's sub-state is the tokens in force.
impl FromRef<AppState> for Arc<Tokens> {
    fn from_ref(state: &AppState) -> Arc<Tokens> {
        state.tokens.clone()
    }
}

fn check(scope: Scope, tokens: &Tokens, req: &Request) -> Result<Grant, Problem> {
    // Only the admin socket inserts a LocalPeer, after its SO_PEERCRED
    // check admitted the connecting uid: it has every scope.
    if req.extensions().get::<LocalPeer>().is_some() {
        return Ok(Grant {
            scope,
            by: By::Socket,
        });
    }
    if !tokens.required() {
        open_mode(scope)?;
        not_relayed(req)?;
        return Ok(Grant {
            scope,
            by: By::Open,
        });
    }
    let presented = bearer(req)?
        .ok_or_else(|| unauthorized("send an API token as Authorization: Bearer <token>"))?;
    let hash = sha256(presented.as_bytes());
    token_allows(tokens, scope, &hash)?;
    Ok(Grant {
        scope,
        by: By::Token(hash),
    })
}

/// Headers that proxies add to the requests they relay, besides every
/// `X-Forwarded-*` one.
const RELAYED_BY: [&str; 3] = ["forwarded", "x-real-ip", "via"];

/// Open mode serves loopback clients only, and a proxy on this host relays
/// clients from anywhere, often with a loopback `Host` (nginx sends the
/// upstream's address by default). A proxy that announces itself with one
/// of [`RELAYED_BY`] or `X-Forwarded-*` is refused on the routes a token
/// guards; one that
/// adds none cannot be told from a local client, which is why a proxy
/// needs tokens (docs/operations.md). Routes that check a signature
/// instead (`/incoming/*`, the witness) are not concerned.
fn not_relayed(req: &Request) -> Result<(), Problem> {
    let relayed = req.headers().keys().find(|name| {
        name.as_str().starts_with("x-forwarded-") || RELAYED_BY.contains(&name.as_str())
    });
    match relayed {
        None => Ok(()),
        Some(name) => Err(Problem::new(
            StatusCode::FORBIDDEN,
            "proxied-request",
            "Request relayed by a proxy",
            format!(
                "while no API token is required, requests relayed by a proxy are refused (this one has {name}): a proxy brings clients from elsewhere; create an API token (logbook admin tokens create) to serve through one"
            ),
        )),
    }
}

/// Open mode serves everything over TCP but federation management.
fn open_mode(scope: Scope) -> Result<(), Problem> {
    // Federation management (peers, subscriptions, publishing) changes
    // where events go: never open over TCP without a token, even on
    // loopback, where a rebound web page or any local process could
    // otherwise add a peer and subscribe it to everything.
    if scope == Scope::Admin {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "admin-socket-only",
            "Admin socket only",
            "no API token is required here (auth.required = \"auto\" before any token, or false), so federation management is served only on the admin socket: use `logbook admin peers …` or curl --unix-socket; over TCP it needs auth to be required (auth.required = true, or a token with the admin scope while it is \"auto\")",
        ));
    }
    Ok(())
}

fn unauthorized(detail: &str) -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Authentication required",
        detail,
    )
}

/// Whether the token with SHA-256 `hash` exists and has `scope`.
fn token_allows(tokens: &Tokens, scope: Scope, hash: &[u8; 32]) -> Result<(), Problem> {
    let token = tokens
        .find_hash(hash)
        .ok_or_else(|| unauthorized("the API token is not valid"))?;
    if !token.scopes.contains(&scope) {
        let scope = match scope {
            Scope::Read => "read",
            Scope::Append => "append",
            Scope::Admin => "admin",
        };
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            format!("the token {:?} lacks the {scope:?} scope", token.name),
        )
        .with("required_scope", scope));
    }
    Ok(())
}

/// How a request was let in, kept so that a long-lived answer (an SSE
/// stream) can be ended when that no longer holds: the token was revoked,
/// or a token became required where none was.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    scope: Scope,
    by: By,
}

#[derive(Debug, Clone)]
enum By {
    /// The admin socket: never revoked here.
    Socket,
    /// No token was required.
    Open,
    /// The token with this SHA-256 (never the secret itself).
    Token([u8; 32]),
}

impl Grant {
    /// The same decision as [`check`], made again with the tokens and
    /// setting in force now.
    fn recheck(&self, tokens: &Tokens) -> Result<(), Problem> {
        match &self.by {
            By::Socket => Ok(()),
            By::Open if tokens.required() => Err(unauthorized(
                "an API token is now required here; reconnect with one (Authorization: Bearer <token>)",
            )),
            By::Open => open_mode(self.scope),
            By::Token(_) if !tokens.required() => open_mode(self.scope),
            By::Token(hash) => token_allows(tokens, self.scope, hash).map_err(|p| {
                if p.status == StatusCode::UNAUTHORIZED {
                    unauthorized("the API token this stream was opened with was revoked")
                } else {
                    p
                }
            }),
        }
    }
}

/// `GET /api/v1/token`: what the request's credential may do here, so a
/// client (the viewer) can tell what to offer without calling a route it
/// may be refused. Any valid credential may ask, whatever its scopes: each
/// scope is [`check`]ed as a route needing it would be, and with none
/// granted the first refusal is the answer. `name` is the token's; null
/// without one, and in open mode, where a token sent is not looked at.
pub(crate) async fn token_scopes(
    State(tokens): State<Arc<Tokens>>,
    req: Request,
) -> Result<axum::Json<serde_json::Value>, Problem> {
    let (mut name, mut scopes, mut refusal) = (None, Vec::new(), None);
    for scope in [Scope::Read, Scope::Append, Scope::Admin] {
        match check(scope, &tokens, &req) {
            Ok(grant) => {
                if let By::Token(hash) = &grant.by {
                    name = tokens.find_hash(hash).map(|t| t.name);
                }
                scopes.push(scope);
            }
            Err(problem) => {
                refusal.get_or_insert(problem);
            }
        }
    }
    match refusal {
        Some(problem) if scopes.is_empty() => Err(problem),
        _ => Ok(axum::Json(
            serde_json::json!({ "name": name, "scopes": scopes }),
        )),
    }
}

/// Handlers of streams take the grant [`require`] stored. A route without
/// that middleware has none, and is refused rather than left open.
impl<S: Send + Sync> FromRequestParts<S> for Grant {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        parts
            .extensions
            .get::<Grant>()
            .cloned()
            .ok_or_else(|| Problem::internal("this route is not behind the auth check"))
    }
}

/// Completes, with the problem to send, once `grant` no longer admits its
/// holder; never completes while it does. A stream selects on it.
pub(crate) fn revoked(
    tokens: Arc<Tokens>,
    grant: Grant,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Problem> + Send>> {
    Box::pin(async move {
        // Subscribe before the first check: a change after it is seen.
        let mut generation = tokens.generation.subscribe();
        loop {
            if let Err(problem) = grant.recheck(&tokens) {
                return problem;
            }
            if generation.changed().await.is_err() {
                // The sender lives in `tokens`, which this future holds.
                std::future::pending::<()>().await;
            }
        }
    })
}

/// The token from `Authorization: Bearer …`, or, on SSE routes only (where
/// browsers' EventSource cannot set headers), from `?access_token=`. An
/// empty token is no token, however it is sent. A query string that does
/// not parse (`access_token` twice) is 400 `invalid-query`, as the route's
/// own parameters would be, not a missing token.
fn bearer(req: &Request) -> Result<Option<String>, Problem> {
    let token = if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let from_header = || {
            let (scheme, token) = value.to_str().ok()?.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(token)
        };
        match from_header() {
            Some(token) => token.to_string(),
            None => return Ok(None),
        }
    } else {
        if !req.uri().path().ends_with("/stream") {
            return Ok(None);
        }
        #[derive(serde::Deserialize)]
        struct AccessToken {
            access_token: Option<String>,
        }
        let query = axum::extract::Query::<AccessToken>::try_from_uri(req.uri()).map_err(|e| {
            Problem::bad_request(
                "invalid-query",
                "Invalid query string",
                super::extract::plain_query(&e.body_text()),
            )
        })?;
        match query.0.access_token {
            Some(token) => token,
            None => return Ok(None),
        }
    };
    let token = token.trim();
    Ok((!token.is_empty()).then(|| token.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_tokens_by_hash() {
        let tokens = Tokens::default();
        tokens.replace(vec![Token {
            name: "ingest".into(),
            hash: sha256(b"s3cret"),
            scopes: vec![Scope::Append],
        }]);
        assert_eq!(tokens.find("s3cret").unwrap().name, "ingest");
        assert!(tokens.find("s3cre").is_none());
        assert!(tokens.latched(), "a non-empty set latches auth on");
    }
}
