//! `…/events/stream`: received messages as SSE, resumable by inbox position.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use futures_util::Stream;
use logbook_journal::registry::TypeFilter;
use logbook_journal::store::READ_PAGE_BYTES;
use serde::Deserialize;

use super::messages::{STREAM_PAGE, inbound};
use crate::federation::Federation;
use crate::http::AppState;
use crate::http::decimal;
use crate::http::extract::Query;
use crate::http::problem::Problem;
use crate::http::{auth, sse};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamQuery {
    /// The filter, named as on the journal's all-plans stream.
    types: Option<String>,
    /// The name this stream had first; still accepted (docs/http-api.md).
    #[serde(rename = "eventType")]
    event_type: Option<String>,
    #[serde(default, deserialize_with = "decimal::option_u64")]
    after: Option<u64>,
    // Read by the auth layer; accepted here so it is not an unknown key.
    #[allow(dead_code)]
    #[serde(rename = "access_token")]
    access_token: Option<String>,
}

/// `GET …/events/stream?types=PATTERN,…`: SSE of received messages, `id:`
/// = inbox position; resumes after `Last-Event-ID` (or `?after=`).
/// `eventType=` is the old name of `types=`.
pub(super) async fn stream(
    State(state): State<AppState>,
    grant: auth::Grant,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Result<Response, Problem> {
    let after = crate::http::api::cursor(&headers, q.after)?;
    let (name, patterns) = match (&q.types, &q.event_type) {
        (Some(_), Some(_)) => {
            return Err(Problem::bad_request(
                "invalid-query",
                "Invalid query string",
                "give types= or its old name eventType=, not both",
            ));
        }
        (None, Some(old)) => ("eventType", old.as_str()),
        (types, None) => ("types", types.as_deref().unwrap_or("")),
    };
    let filter = TypeFilter::parse(patterns).map_err(|e| {
        Problem::bad_request(
            "invalid-query",
            "Invalid query string",
            format!("{name}: {e}"),
        )
    })?;
    let fed = super::fed(&state);
    // Watch before reading, so nothing stored after the read is missed.
    let changes = fed.store.inbox_watch();
    let head = state
        .store
        .run(move |store| store.inbox().last_position())
        .await?;
    if after > head {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "cursor-beyond-head",
            "Cursor beyond head",
            format!("the cursor {after} is beyond the last received message {head}"),
        )
        .with("cursor", after)
        .with("head", head));
    }
    let events = received_stream(fed, filter, after, changes, state.shutdown.clone());
    // Ends when the reader's token is revoked, like the journal's streams.
    let revoked = auth::revoked(state.tokens.clone(), grant);
    let events = sse::until_revoked(events, revoked);
    Ok(sse::response(events, state.keepalive))
}

fn received_stream(
    fed: Arc<Federation>,
    filter: TypeFilter,
    after: u64,
    mut changes: tokio::sync::watch::Receiver<u64>,
    shutdown: tokio_util::sync::CancellationToken,
) -> impl Stream<Item = Bytes> {
    async_stream::stream! {
        let mut cursor = after;
        loop {
            let from = cursor;
            let page = fed
                .store
                .run(move |s| s.inbox().after(from, STREAM_PAGE, READ_PAGE_BYTES))
                .await;
            let (page, more) = match page {
                Ok(page) => page,
                Err(e) => {
                    let problem = Problem::internal(e.to_string());
                    yield sse::error_frame(&problem);
                    return;
                }
            };
            for e in page {
                cursor = e.record.position;
                if filter.matches(&e.record.event_type) {
                    let json = serde_json::to_string(&inbound(&e))
                        .expect("an inbound message always serializes");
                    yield sse::frame(None, Some(cursor), &json);
                }
            }
            if more {
                continue;
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                changed = changes.changed() => if changed.is_err() { return },
            }
        }
    }
}
