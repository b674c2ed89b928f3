//! SIGHUP reloads tokens, limits, CORS and the log level without dropping
//! connections; an invalid config is rejected, logged with the key at fault,
//! and the old config stays in force.

mod common;

use std::time::Duration;

use common::{Daemon, DaemonOpts, REQUEST_TIMEOUT, fill, new_plan, send};
use serde_json::{Value, json};

const TOKEN: &str = "reload-test-token";
// printf %s reload-test-token | sha256sum
fn token_hash() -> String {
    use sha2::Digest;
    logbook_base::hex::encode(&sha2::Sha256::digest(TOKEN.as_bytes()))
}

/// An append body of `event_type` with `payload`.
fn body(event_type: &str, payload: Value) -> Value {
    json!({"type": event_type, "actor": "ops-test", "payload": payload})
}

/// Writes `opts`' config over the daemon's and sends SIGHUP.
fn reload(daemon: &Daemon, opts: DaemonOpts) {
    std::fs::write(daemon.config_path(), opts.config_text()).unwrap();
    daemon.signal("HUP");
}

/// Reloads `opts`' config and asserts that the daemon logs the rejection,
/// naming `key`.
async fn assert_reload_rejected(daemon: &Daemon, opts: DaemonOpts, key: &str) {
    reload(daemon, opts);
    assert!(
        daemon
            .wait_log(&["reload rejected", key], Duration::from_secs(10))
            .await,
        "the rejection must name {key}"
    );
}

#[tokio::test]
async fn sighup_applies_a_valid_config_and_keeps_connections() {
    // No RUST_LOG, so the file's log.level is in force and reloadable.
    // The token is there from the start: a stream opened without one would
    // be ended once one is required (see ops_edge).
    let token_config = format!(
        "[[auth.tokens]]\nname = \"reloaded\"\nsha256 = \"{}\"\nscopes = [\"read\", \"append\"]\n",
        token_hash()
    );
    let daemon = Daemon::start(
        DaemonOpts::default()
            .unset_env("RUST_LOG")
            .config(&token_config),
    );
    let p = new_plan();
    let first = daemon
        .append_as(p, body("step.started", json!({})), TOKEN)
        .await;
    assert_eq!(first.status, 201, "{}", first.text);

    // An SSE client connected before the reload must keep streaming after it.
    let bearer = format!("Bearer {TOKEN}");
    let mut sse = daemon
        .sse_ok(
            &format!("/api/plans/{p}/events/stream"),
            &[("authorization", bearer.as_str())],
        )
        .await;
    assert_eq!(sse.next_event().await.0, 1);

    let long_actor = json!({"type": "step.started", "actor": "a".repeat(40)});
    assert_eq!(
        daemon.append_as(p, long_actor.clone(), TOKEN).await.status,
        201
    );

    reload(
        &daemon,
        DaemonOpts::default()
            .replace("max_actor_len = 256", "max_actor_len = 32")
            .replace("level = \"info\"", "level = \"debug\"")
            .replace(
                "cors_origins = []",
                "cors_origins = [\"http://ui.example\"]",
            )
            .config(&token_config),
    );
    assert!(
        daemon
            .wait_log(&["configuration reloaded"], Duration::from_secs(10))
            .await,
        "no reload logged"
    );

    // Tokens: still required.
    assert_eq!(
        daemon
            .append(p, body("step.started", json!({})))
            .await
            .status,
        401
    );
    // Limits: the long actor is now refused.
    let resp = daemon.append_as(p, long_actor, TOKEN).await;
    assert_eq!(resp.status, 422, "{}", resp.text);
    assert!(resp.text.contains("32"), "{}", resp.text);
    assert_eq!(
        daemon
            .append_as(p, body("step.started", json!({})), TOKEN)
            .await
            .status,
        201
    );
    // CORS: the new origin is allowed.
    let preflight = daemon
        .client
        .request(
            reqwest::Method::OPTIONS,
            daemon.url(&format!("/api/plans/{p}/events")),
        )
        .header("origin", "http://ui.example")
        .header("access-control-request-method", "POST")
        .timeout(REQUEST_TIMEOUT);
    let status = send(preflight).await.status;
    assert!(status == 200 || status == 204, "preflight status {status}");
    // Log level: the running daemon shows debug.
    assert_eq!(daemon.admin_json(&["log-level"]).await["level"], "debug");

    // The SSE connection survived and sees the events appended after the reload.
    assert_eq!(sse.next_event().await.0, 2);
    assert_eq!(
        sse.next_event().await.0,
        3,
        "the SSE stream did not deliver seq 3 after the reload"
    );
}

#[tokio::test]
async fn sighup_with_an_invalid_config_keeps_the_old_one() {
    let daemon = Daemon::start(DaemonOpts::default());
    let p = new_plan();
    fill(&daemon, p, 1).await;

    // Semantically invalid: a key Config::validate refuses.
    assert_reload_rejected(
        &daemon,
        DaemonOpts::default().replace("max_json_depth = 32", "max_json_depth = 0"),
        "limits.max_json_depth",
    )
    .await;
    assert_reload_rejected(
        &daemon,
        DaemonOpts::default().replace("max_actor_len = 256", "max_actor_len = 1025"),
        "limits.max_actor_len",
    )
    .await;
    assert_eq!(
        daemon
            .append(p, body("step.started", json!({"a": [[1]]})))
            .await
            .status,
        201,
        "old limits stay"
    );

    // Syntactically invalid, and a bad token hash: both rejected, naming the key.
    assert_reload_rejected(
        &daemon,
        DaemonOpts::default().replace("max_body_bytes = 1048576", "max_body_bytes = \"big\""),
        "max_body_bytes",
    )
    .await;
    assert_reload_rejected(
        &daemon,
        DaemonOpts::default()
            .config("[[auth.tokens]]\nname = \"t\"\nsha256 = \"nothex\"\nscopes = [\"read\"]\n"),
        "auth.tokens[t].sha256",
    )
    .await;
    // Still no token required: the old config is in force.
    assert_eq!(
        daemon
            .append(p, body("step.started", json!({})))
            .await
            .status,
        201
    );

    // The admin reload command reports the same rejection.
    let out = daemon.admin(&["reload"]).await;
    assert!(!out.success());
    assert!(out.stderr.contains("auth.tokens[t].sha256"));
}
