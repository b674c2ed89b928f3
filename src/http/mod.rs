//! The HTTP API: routing, shared state, auth, CORS and request tracing.
//! Handlers live in [`api`] (plan logs: [`log`] checkpoints and keys,
//! [`proofs`] proofs and tiles); every error is a [`problem::Problem`].
//!
//! [`AppState`] is everything the HTTP routers need together, handed down by
//! `crate::app`. Each handler and middleware takes only its own sub-state
//! through axum's `FromRef` ([`api::ApiState`], the [`auth::Tokens`],
//! [`edge::EdgeState`], [`metrics::MetricsState`]). This
//! module knows nothing of the admin socket: a request that came over it
//! carries a [`serve::LocalPeer`].

pub(crate) mod api;
pub(crate) mod append_body;
pub(crate) mod auth;
pub(crate) mod body_budget;
pub(crate) mod cors;
pub(crate) mod decimal;
pub(crate) mod edge;
pub(crate) mod events_page;
pub(crate) mod extract;
pub(crate) mod federation;
pub(crate) mod json_array;
pub(crate) mod log;
pub(crate) mod metrics;
mod parse_error_answer;
pub(crate) mod prefer;
pub(crate) mod problem;
pub(crate) mod proofs;
pub(crate) mod send_timeout;
pub(crate) mod serve;
pub(crate) mod sse;
pub(crate) mod ui;
pub(crate) mod witness;
mod witness_origins;
pub(crate) mod witnessed;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::FromRef;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;
use tower_http::cors::CorsLayer;
use tower_http::trace::TraceLayer;

use crate::config::Limits;
use logbook_base::reloadable::Reloadable;
use logbook_journal::fanout::{Fanout, StreamStats};
use logbook_journal::registry::Registry;
use logbook_journal::store::AsyncStore;
use problem::Problem;

/// Everything the HTTP routers need, the federation routes included (they
/// take it whole), behind one `Arc`: axum clones the state for every
/// request, and one reference count is all that clone costs.
#[derive(Clone)]
pub(crate) struct AppState(Arc<AppParts>);

impl AppState {
    pub(crate) fn new(parts: AppParts) -> AppState {
        AppState(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;
    fn deref(&self) -> &AppParts {
        &self.0
    }
}

/// The parts of [`AppState`].
pub(crate) struct AppParts {
    pub(crate) store: AsyncStore,
    pub(crate) registry: Arc<Registry>,
    pub(crate) fanout: Fanout,
    /// Read per request: a config reload (SIGHUP) replaces them.
    pub(crate) limits: Arc<Reloadable<Limits>>,
    /// The CORS policy, read per request like `limits`.
    pub(crate) cors: Arc<Reloadable<Option<CorsLayer>>>,
    pub(crate) tokens: Arc<auth::Tokens>,
    pub(crate) keepalive: Duration,
    pub(crate) shutdown: CancellationToken,
    pub(crate) stream_stats: Arc<StreamStats>,
    pub(crate) federation: Arc<crate::federation::Federation>,
    /// Host, Origin and stream-cap checks in front of every route.
    pub(crate) edge: Arc<edge::Edge>,
    /// The log key that signs plan checkpoints.
    pub(crate) log: Arc<log::LogState>,
    /// The witness key and state of the add-checkpoint route.
    pub(crate) witness: Arc<witness::WitnessState>,
    /// `[ui] enabled`: whether `/` and `/ui/…` serve the audit viewer.
    pub(crate) ui: bool,
    /// The one whole-chain walk (`?verify=full`) the API runs at a time:
    /// each uses every core and runs to its end even if its client leaves.
    pub(crate) whole_walk: Arc<tokio::sync::Semaphore>,
}

pub(crate) fn router(state: AppState) -> Router {
    let read = Router::new()
        .route("/api/event-types", get(api::event_types))
        .route("/api/plans", get(api::list_plans))
        .route("/api/plans/{plan_id}", get(api::get_plan))
        .route("/api/plans/{plan_id}/events", get(events_page::list_events))
        .route("/api/plans/{plan_id}/events/stream", get(api::stream_plan))
        .route("/api/events/stream", get(api::stream_all))
        // Plan logs: proofs and C2SP tiles (log prefix /api/plans/{plan_id}/).
        .route(
            "/api/plans/{plan_id}/events/{seq}/inclusion",
            get(proofs::inclusion),
        )
        .route("/api/plans/{plan_id}/consistency", get(proofs::consistency))
        .route("/api/plans/{plan_id}/tile/{*rest}", get(proofs::tile))
        // The heads log (origin {origin_prefix}); its checkpoint is log.rs's.
        .route(
            "/api/v1/log/entries/{index}/inclusion",
            get(proofs::heads_inclusion),
        )
        .route("/api/v1/log/consistency", get(proofs::heads_consistency))
        .route("/api/v1/log/tile/{*rest}", get(proofs::heads_tile))
        // Metrics name peers and plans' volumes: readable with a read token.
        .route("/metrics", get(crate::http::metrics::scrape))
        .route_layer(from_fn_with_state(state.tokens.clone(), auth::require_read));
    let append = Router::new()
        .route("/api/plans/{plan_id}/events", post(api::append))
        .route_layer(from_fn_with_state(
            state.tokens.clone(),
            crate::http::metrics::time_append,
        ));
    let edge_state = edge::EdgeState::from_ref(&state);
    let ui = if state.ui {
        ui::router()
    } else {
        Router::new()
    };
    let router = Router::new()
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(crate::http::metrics::readyz))
        // Checks the token itself: any valid one may ask what it may do.
        .route("/api/v1/token", get(auth::token_scopes))
        .merge(read)
        .merge(append)
        .merge(federation::router(state.clone()))
        .merge(log::router(&state))
        .merge(witness::router())
        .merge(ui)
        .fallback(|| async { Problem::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                "this route does not accept that method",
            )
        })
        .with_state(state)
        .layer(
            // The span names the path but never the query, which may carry
            // an access token.
            TraceLayer::new_for_http()
                .make_span_with(|req: &axum::extract::Request| {
                    tracing::debug_span!("http", method = %req.method(), path = %req.uri().path())
                })
                .on_failure(log_failure),
        );
    // One layer in front of every route: the edge checks, then CORS (so
    // they run before CORS answers a preflight). Each `from_fn` layer costs
    // every request a boxed future and a cloned route, hence one, not two.
    router.layer(from_fn_with_state(edge_state, edge::guard))
}

/// A 5xx answer, logged: 503 and 507 are backpressure any client can
/// cause (a full walk already running, too many bodies at once, a full
/// disk the writer reports itself) and 501 a coding refused, so they are
/// not ERROR lines an operator must act on; anything else is.
fn log_failure(
    failure: tower_http::classify::ServerErrorsFailureClass,
    latency: std::time::Duration,
    _span: &tracing::Span,
) {
    use tower_http::classify::ServerErrorsFailureClass;
    let ms = latency.as_millis();
    match failure {
        ServerErrorsFailureClass::StatusCode(
            StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::INSUFFICIENT_STORAGE
            | StatusCode::NOT_IMPLEMENTED,
        ) => {
            tracing::debug!(%failure, latency_ms = ms, "request refused for now");
        }
        _ => tracing::error!(%failure, latency_ms = ms, "request failed"),
    }
}
