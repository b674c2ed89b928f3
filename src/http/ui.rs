//! The audit viewer: a single page served at `/` and `/ui/…`, whose HTML,
//! CSS and JavaScript modules are embedded in the binary (`src/ui/`), with
//! no build step and nothing fetched from elsewhere (docs/viewer.md).
//!
//! The files themselves need no token: the page asks the reader for one and
//! sends it on its own API calls, which the usual auth checks guard. The
//! edge checks (Host while no token is required) still apply to them.
//! Every answer carries a strict Content-Security-Policy: scripts, styles
//! and connections to this origin only, nothing inline, no framing.

use super::extract::Path;
use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use super::problem::Problem;

/// The policy on every viewer answer. `connect-src 'self'` covers fetch and
/// EventSource; `default-src 'none'` refuses everything not listed.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
frame-ancestors 'none'";

/// One embedded file: its name under `/ui/assets/`, type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_bytes!(concat!("../ui/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file the page loads. A name not listed here is 404.
const ASSETS: &[Asset] = &[
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("plans.js", JS),
    asset!("plan.js", JS),
    asset!("verify.js", JS),
    asset!("jcs.js", JS),
    asset!("keys.js", JS),
    asset!("keys-view.js", JS),
    asset!("check.js", JS),
    asset!("federation.js", JS),
    asset!("favicon.svg", "image/svg+xml"),
];

const INDEX: &[u8] = include_bytes!("../ui/index.html");

/// The viewer's routes; the caller merges them only when `[ui] enabled`.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/assets/{name}", get(asset))
        // The page's views (app.js's `route`), served as the page itself.
        .route("/ui/{*view}", get(view))
}

async fn view(Path(view): Path<String>) -> Response {
    if is_view(&view) {
        index().await
    } else {
        missing()
    }
}

/// A path under `/ui/` the page shows: a mistyped asset path (`/ui/app.js`)
/// or any other is 404, not the page under a script's name.
fn is_view(view: &str) -> bool {
    matches!(view, "keys" | "federation")
        || view
            .strip_prefix("plans/")
            .is_some_and(|id| logbook_journal::event::parse_plan_id(id).is_some())
}

fn missing() -> Response {
    let mut response = Problem::not_found("no such viewer file").into_response();
    secure(&mut response);
    response
}

async fn index() -> Response {
    answer("text/html; charset=utf-8", INDEX)
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(found) => answer(found.content_type, found.body),
        None => missing(),
    }
}

fn answer(content_type: &'static str, body: &'static [u8]) -> Response {
    let mut response = (
        [
            (header::CONTENT_TYPE, content_type),
            // The files change with the binary; a revalidation is cheap.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response();
    secure(&mut response);
    response
}

/// The security headers of every viewer answer (docs/viewer.md).
fn secure(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asset_names_are_unique_and_plain() {
        for (i, a) in ASSETS.iter().enumerate() {
            assert!(!a.name.contains('/') && !a.name.starts_with('.'));
            assert!(ASSETS[i + 1..].iter().all(|b| b.name != a.name));
            assert!(!a.body.is_empty(), "{} is empty", a.name);
        }
    }

    #[test]
    fn the_page_has_nothing_inline() {
        let html = std::str::from_utf8(INDEX).unwrap();
        assert!(!html.contains("<script>"), "inline script");
        assert!(!html.contains("style="), "inline style");
        assert!(!html.contains("<style"), "inline style");
        assert!(!html.contains("http://") && !html.contains("https://"));
    }
}
