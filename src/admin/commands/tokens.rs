//! `tokens`: create, list and revoke the API tokens kept in the store.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AdminJson, Context, Ctx};
use crate::admin::tokens;
use crate::config::Scope;
use crate::http::extract::Path;
use crate::http::problem::Problem;
use logbook_journal::event::Timestamp;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateToken {
    scopes: Vec<Scope>,
    name: Option<String>,
}

pub(super) async fn create_token(
    State(cx): Ctx,
    AdminJson(request): AdminJson<CreateToken>,
) -> Result<Response, Problem> {
    if request.scopes.is_empty() {
        return Err(Problem::unprocessable(
            "invalid-scopes",
            "Invalid scopes",
            "give at least one scope: read, append, admin",
        ));
    }
    if let Some(name) = &request.name
        && !tokens::valid_name(name)
    {
        return Err(Problem::unprocessable(
            "invalid-name",
            "Invalid token name",
            "a token name is 1 to 64 letters, digits, '-', '_' or '.'",
        ));
    }
    let _serialized = cx.changes.lock().await;
    if let Some(name) = &request.name
        && cx.token_sources.config_names().contains(name)
    {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "token-exists",
            "Token exists",
            format!("config.toml already has a token named {name:?}"),
        ));
    }
    let (secret, record) =
        tokens::generate(request.name, request.scopes).map_err(Problem::internal)?;
    let stored = record.clone();
    cx.store
        .run(move |store| store.insert_token(&stored))
        .await?
        .map_err(|e| {
            Problem::new(
                StatusCode::CONFLICT,
                "token-exists",
                "Token exists",
                e.to_string(),
            )
        })?;
    publish_stored(&cx).await?;
    tracing::info!(
        name = record.name,
        id = record.id,
        "API token created over the admin socket"
    );
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": record.id,
            "name": record.name,
            "scopes": record.scopes,
            "created_at": Timestamp(record.created_at),
            "token": secret,
        })),
    )
        .into_response())
}

async fn publish_stored(cx: &Context) -> Result<(), Problem> {
    let stored = cx.store.run(move |store| store.stored_tokens()).await?;
    cx.token_sources.set_stored(&stored, &cx.tokens);
    Ok(())
}

pub(super) async fn list_tokens(State(cx): Ctx) -> Result<Json<Value>, Problem> {
    let stored = cx.store.run(move |store| store.stored_tokens()).await?;
    let config = cx.config.current();
    let mut out: Vec<Value> = config
        .auth
        .tokens
        .iter()
        .map(|t| json!({"id": null, "name": t.name, "scopes": t.scopes, "source": "config", "created_at": null}))
        .collect();
    out.extend(stored.iter().map(|t| {
        json!({"id": t.id, "name": t.name, "scopes": t.scopes, "source": "admin", "created_at": Timestamp(t.created_at)})
    }));
    Ok(Json(json!({"tokens": out})))
}

pub(super) async fn revoke_token(
    State(cx): Ctx,
    Path(name_or_id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let _serialized = cx.changes.lock().await;
    // On a public listener the last token stays: the latch would keep the
    // API closed (401), but no remote client could use it any more. The
    // latch is left out on purpose so this check keeps that meaning.
    let stored = cx.store.run(move |store| store.stored_tokens()).await?;
    let is_stored = stored
        .iter()
        .any(|t| t.name == name_or_id || t.id == name_or_id);
    if is_stored
        && cx
            .config
            .current()
            .check_exposure(stored.len() - 1, false)
            .is_err()
    {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "last-token",
            "Last token",
            format!(
                "{name_or_id:?} is the last API token and the daemon listens on {}: create another token first, or listen on loopback",
                cx.listen
            ),
        ));
    }
    let key = name_or_id.clone();
    let removed = cx.store.run(move |store| store.remove_token(&key)).await?;
    let Some(removed) = removed else {
        if cx.token_sources.config_names().contains(&name_or_id) {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "config-token",
                "Token defined in config",
                format!(
                    "{name_or_id:?} is defined in config.toml: remove it there and reload (SIGHUP)"
                ),
            ));
        }
        return Err(Problem::not_found(format!(
            "no token with the name or id {name_or_id:?}"
        )));
    };
    cx.token_sources.revoke_stored(&removed, &cx.tokens);
    tracing::info!(
        name = removed.name,
        id = removed.id,
        "API token revoked over the admin socket"
    );
    Ok(Json(
        json!({"id": removed.id, "name": removed.name, "revoked": true}),
    ))
}
