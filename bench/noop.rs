//! The HTTP ceiling for `bench/run.sh`: a POST handler on logbook's own HTTP
//! stack (the same axum, hyper and tokio), which reads the body and answers
//! 201 with a small JSON object, storing nothing. What logbook appends at
//! is read against this.
//!
//! `noop 127.0.0.1:PORT`

use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;

async fn append(body: Bytes) -> impl IntoResponse {
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{{\"seq\":1,\"bytes\":{}}}", body.len()),
    )
}

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7598".into());
    let app = Router::new().route("/api/plans/{plan_id}/events", post(append));
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    axum::serve(listener, app).await.expect("serve");
}
