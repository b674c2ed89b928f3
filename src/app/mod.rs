//! The composition root: the application the daemon runs, built once by
//! `crate::server`, owning every long-lived part.
//!
//! Each listener gets the sub-state its own module declares, through axum's
//! `FromRef`: the TCP API an [`http::AppState`] (whose handlers take
//! narrower sub-states in turn), the admin socket an [`admin::Context`].
//! `http` and `admin` never import this module; what the admin socket
//! serves from above it (the API under `/api`, `POST /reload`) is handed
//! in here. The config reload changes parts of both, so it lives here too
//! ([`reload`]).

pub(crate) mod reload;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;

use crate::{admin, http};

/// The running application. Cheap to clone.
#[derive(Clone)]
pub(crate) struct App {
    pub(crate) http: http::AppState,
    pub(crate) admin: Arc<admin::Context>,
}

impl FromRef<App> for http::AppState {
    fn from_ref(app: &App) -> http::AppState {
        app.http.clone()
    }
}

impl FromRef<App> for Arc<admin::Context> {
    fn from_ref(app: &App) -> Arc<admin::Context> {
        app.admin.clone()
    }
}

impl App {
    /// The public HTTP API, served on the TCP listener.
    pub(crate) fn api_router(&self) -> Router {
        http::router(http::AppState::from_ref(self))
    }

    /// The admin socket's routes, with the API under `/api` and the reload.
    pub(crate) fn admin_router(&self) -> Router {
        let app = self.clone();
        let reload = axum::routing::post(move || {
            let app = app.clone();
            async move { admin::commands::reload_answer(reload::reload(&app).await) }
        });
        admin::commands::router(Arc::from_ref(self), self.api_router(), reload)
    }
}
