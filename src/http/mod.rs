//! The HTTP API: routing, shared state, auth, CORS and request tracing.
//! Handlers live in [`api`] (plan logs: [`log`] checkpoints and keys,
//! [`proofs`] proofs and tiles); every error is a [`problem::Problem`].
//!
//! [`AppState`] is everything the HTTP routers need together, handed down by
//! `crate::app`. Each handler and middleware takes only its own sub-state
//! through axum's `FromRef` ([`api::ApiState`], the [`auth::Tokens`],
//! [`edge::EdgeState`], [`CorsState`], [`metrics::MetricsState`]). This
//! module knows nothing of the admin socket: a request that came over it
//! carries a [`serve::LocalPeer`].

pub(crate) mod api;
pub(crate) mod append_body;
pub(crate) mod auth;
pub(crate) mod edge;
pub(crate) mod extract;
pub(crate) mod federation;
pub(crate) mod log;
pub(crate) mod metrics;
pub(crate) mod prefer;
pub(crate) mod problem;
pub(crate) mod proofs;
pub(crate) mod serve;
pub(crate) mod sse;
pub(crate) mod ui;
pub(crate) mod witness;
pub(crate) mod witnessed;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRef, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};
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
}

pub(crate) fn router(state: AppState) -> Router {
    let read = Router::new()
        .route("/api/event-types", get(api::event_types))
        .route("/api/plans", get(api::list_plans))
        .route("/api/plans/{plan_id}", get(api::get_plan))
        .route("/api/plans/{plan_id}/events", get(api::list_events))
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
            auth::require_append,
        ))
        .route_layer(axum::middleware::from_fn(crate::http::metrics::time_append));
    let cors_state = CorsState::from_ref(&state);
    let edge_state = edge::EdgeState::from_ref(&state);
    let ui = if state.ui {
        ui::router()
    } else {
        Router::new()
    };
    let router = Router::new()
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(crate::http::metrics::readyz))
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
            TraceLayer::new_for_http().make_span_with(|req: &axum::extract::Request| {
                tracing::debug_span!("http", method = %req.method(), path = %req.uri().path())
            }),
        );
    // The edge checks run first, before CORS answers a preflight.
    router
        .layer(from_fn_with_state(cors_state, dynamic_cors))
        .layer(from_fn_with_state(edge_state, edge::guard))
}

/// What [`dynamic_cors`] reads per request.
#[derive(Clone)]
pub(crate) struct CorsState {
    cors: Arc<Reloadable<Option<CorsLayer>>>,
    tokens: Arc<auth::Tokens>,
    edge: Arc<edge::Edge>,
}

impl FromRef<AppState> for CorsState {
    fn from_ref(state: &AppState) -> CorsState {
        CorsState {
            cors: state.cors.clone(),
            tokens: state.tokens.clone(),
            edge: state.edge.clone(),
        }
    }
}

/// Applies the CORS policy in force for this request, so that a reload can
/// change it without rebuilding the router.
async fn dynamic_cors(State(state): State<CorsState>, req: Request, next: Next) -> Response {
    // While no token is required, "*" and "null" in cors_origins are not
    // honoured (see edge::origin_allowed): a request from an origin not
    // listed by name gets no CORS headers, so a page cannot read the answer,
    // and its preflight fails.
    if req.extensions().get::<serve::LocalPeer>().is_none()
        && !state.tokens.required()
        && let Some(origin) = req.headers().get(header::ORIGIN)
        && !edge::origin_allowed(
            origin.to_str().unwrap_or(""),
            &state.edge.policy.current().cors_origins,
            true,
        )
    {
        return next.run(req).await;
    }
    let current = state.cors.current();
    let Some(layer) = current.as_ref().clone() else {
        return next.run(req).await;
    };
    let mut next = Some(next);
    let inner = tower::service_fn(move |req: Request| {
        let next = next.take();
        async move {
            Ok::<_, std::convert::Infallible>(match next {
                Some(next) => next.run(req).await,
                None => {
                    Problem::internal("the CORS layer called the handler twice").into_response()
                }
            })
        }
    });
    match tower::ServiceExt::oneshot(tower::Layer::layer(&layer, inner), req).await {
        Ok(response) => response.into_response(),
        Err(never) => match never {},
    }
}

/// The CORS layer for `origins`; `None` when no origin is allowed.
pub(crate) fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("last-event-id"),
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static("prefer"),
            ])
            .expose_headers([
                HeaderName::from_static("idempotent-replayed"),
                HeaderName::from_static("preference-applied"),
            ])
            .max_age(Duration::from_secs(600)),
    )
}
