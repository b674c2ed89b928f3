//! `log-level` and `reload`.

use axum::Json;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AdminJson;
use crate::http::problem::Problem;

pub(super) async fn get_log_level() -> Json<Value> {
    Json(json!({"level": crate::admin::logging::current_level()}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogLevel {
    level: String,
}

pub(super) async fn set_log_level(
    AdminJson(request): AdminJson<LogLevel>,
) -> Result<Json<Value>, Problem> {
    crate::admin::logging::set_level(&request.level)
        .map_err(|e| Problem::unprocessable("invalid-level", "Invalid log level", e))?;
    tracing::info!(
        level = request.level,
        "log level changed over the admin socket"
    );
    Ok(Json(json!({"level": request.level})))
}

/// What a reload found changed in the file: applied, or kept as running
/// until a restart.
#[derive(Debug, Default)]
pub(crate) struct Reloaded {
    pub(crate) applied: Vec<&'static str>,
    pub(crate) needs_restart: Vec<&'static str>,
}

/// The answer to `POST /reload` for the outcome of a config reload: what
/// changed, or 422 with why nothing did.
pub(crate) fn reload_answer(outcome: Result<Reloaded, String>) -> Result<Json<Value>, Problem> {
    match outcome {
        Ok(r) => {
            tracing::info!(changed = ?r.applied, needs_restart = ?r.needs_restart, "configuration reloaded over the admin socket");
            Ok(Json(
                json!({"reloaded": true, "applied": r.applied, "needs_restart": r.needs_restart}),
            ))
        }
        Err(e) => {
            tracing::error!(error = %e, "configuration reload rejected; the previous configuration stays in force");
            Err(Problem::unprocessable(
                "invalid-config",
                "Invalid configuration",
                e,
            ))
        }
    }
}
