//! CORS: the policy built from `[http] cors_origins`, and applying the one
//! in force to a request. [`super::edge::guard`] calls [`apply`] after its
//! own checks, so that a reload (SIGHUP) changes the policy without
//! rebuilding the router, and so that the two share one middleware layer.

use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::auth::Tokens;
use super::edge::{self, Edge};
use super::problem::Problem;
use super::serve::LocalPeer;
use logbook_base::reloadable::Reloadable;

/// The CORS layer for `origins`; `None` when no origin is allowed.
pub(crate) fn policy(origins: &[String]) -> Option<CorsLayer> {
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

/// Runs `next` under the CORS policy in force for this request.
pub(crate) async fn apply(
    cors: &Reloadable<Option<CorsLayer>>,
    tokens: &Tokens,
    edge: &Edge,
    req: Request,
    next: Next,
) -> Response {
    // While no token is required, "*" and "null" in cors_origins are not
    // honoured (see edge::origin_allowed): a request from an origin not
    // listed by name gets no CORS headers, so a page cannot read the answer,
    // and its preflight fails.
    if req.extensions().get::<LocalPeer>().is_none()
        && !tokens.required()
        && let Some(origin) = req.headers().get(header::ORIGIN)
        && !edge::origin_allowed(
            origin.to_str().unwrap_or(""),
            &edge.policy.current().cors_origins,
            true,
        )
    {
        return next.run(req).await;
    }
    let current = cors.current();
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
