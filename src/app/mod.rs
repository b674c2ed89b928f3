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

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// The `.rs` files under `dir`, recursively.
    fn rust_files(dir: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files.extend(rust_files(&path));
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
        files
    }

    /// Whether `line` (code, not a comment) names `crate::<module>`, as a
    /// path or inside a `crate::{…}` group.
    fn names(line: &str, module: &str) -> bool {
        let code = line.split("//").next().unwrap_or("");
        let word = |text: &str| {
            text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .any(|w| w == module)
        };
        code.contains(&format!("crate::{module}::"))
            || code.contains(&format!("crate::{module};"))
            || code
                .split_once("crate::{")
                .is_some_and(|(_, group)| word(group.split('}').next().unwrap_or("")))
    }

    /// The one-way layering ARCHITECTURE.md states for the binary crate:
    /// `http` never imports `admin`, and neither imports `app` or `server`.
    #[test]
    fn http_and_admin_import_nothing_above_them() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let rules: [(&str, &[&str]); 2] = [
            ("http", &["admin", "app", "server"]),
            ("admin", &["app", "server"]),
        ];
        let mut found = Vec::new();
        for (module, above) in rules {
            for file in rust_files(&src.join(module)) {
                let text = std::fs::read_to_string(&file).unwrap();
                for (n, line) in text.lines().enumerate() {
                    for up in above.iter().filter(|up| names(line, up)) {
                        found.push(format!("{}:{}: imports {up}", file.display(), n + 1));
                    }
                }
            }
        }
        assert!(
            found.is_empty(),
            "imports against the layering:\n{}",
            found.join("\n")
        );
    }

    #[test]
    fn the_layering_check_sees_paths_and_groups() {
        assert!(names("use crate::admin::Peer;", "admin"));
        assert!(names("    if x.get::<crate::admin::Peer>() {", "admin"));
        assert!(names("use crate::{admin, http};", "admin"));
        assert!(!names("use crate::{admin, http};", "app"));
        assert!(!names("//! Built by `crate::app::App`", "app"));
        assert!(!names(
            "use logbook_journal::store::admin::SYSTEM_PLAN;",
            "admin"
        ));
    }
}
