//! What peers send: messages, separate acks, and (un)subscribe requests.
//! Each body arrives through [`IncomingBody`] (permits, caps, a known
//! sender); the checks and storage are `logbook_federation::inbox`.

use axum::extract::State;
use axum::response::Response;
use logbook_federation::inbox;
use logbook_federation::message::{SUBSCRIBE_TYPE, UNSUBSCRIBE_TYPE};
use serde_json::Value;

use super::intake::IncomingBody;
use super::{answer, fed};
use crate::http::AppState;
use crate::http::problem::Problem;

// The body (and its concurrency permit) moves into the blocking task and is
// dropped when the work is done.
pub(super) async fn incoming_event(State(state): State<AppState>, body: IncomingBody) -> Response {
    let fed = fed(&state);
    answer(
        state
            .store
            .run(move |store| -> Result<_, Problem> {
                Ok(inbox::receive_events(&fed.instance, store, &body.text)?)
            })
            .await,
    )
}

pub(super) async fn incoming_ack(State(state): State<AppState>, body: IncomingBody) -> Response {
    let fed = fed(&state);
    answer(
        state
            .store
            .run(move |store| -> Result<_, Problem> {
                Ok(inbox::receive_acks(&fed.instance, store, &body.text)?)
            })
            .await,
    )
}

pub(super) async fn incoming_subscribe(
    State(state): State<AppState>,
    body: IncomingBody,
) -> Response {
    answer(incoming_control(state, body, SUBSCRIBE_TYPE).await)
}

pub(super) async fn incoming_unsubscribe(
    State(state): State<AppState>,
    body: IncomingBody,
) -> Response {
    answer(incoming_control(state, body, UNSUBSCRIBE_TYPE).await)
}

/// A peer asks us to start (or stop) sending it events matching a pattern.
async fn incoming_control(
    state: AppState,
    body: IncomingBody,
    expected_type: &'static str,
) -> Result<Value, Problem> {
    let fed = fed(&state);
    state
        .store
        .run(move |store| -> Result<_, Problem> {
            Ok(inbox::receive_control(
                &fed.instance,
                store,
                &body.text,
                expected_type,
            )?)
        })
        .await
}
