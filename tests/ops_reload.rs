//! SIGHUP reloads tokens, limits, CORS and the log level without dropping
//! connections; an invalid config is rejected, logged with the key at fault,
//! and the old config stays in force.

mod ops_common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use ops_common::{Ops, config_text, fill, plan};

const TOKEN: &str = "reload-test-token";
// printf %s reload-test-token | sha256sum
fn token_hash() -> String {
    use sha2::Digest;
    logbook::hex::encode(&sha2::Sha256::digest(TOKEN.as_bytes()))
}

#[test]
fn sighup_applies_a_valid_config_and_keeps_connections() {
    // No RUST_LOG, so the file's log.level is in force and reloadable.
    let ops = Ops::start_in_with(tempfile::tempdir().unwrap(), &config_text(&[], ""), None);
    let p = plan();
    fill(&ops, &p, 1);

    // An SSE client connected before the reload must keep streaming after it.
    let mut sse = TcpStream::connect(ops.addr).unwrap();
    sse.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        sse,
        "GET /api/plans/{p}/events/stream HTTP/1.1\r\nhost: x\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(sse);
    let mut line = String::new();
    while !line.starts_with("id: 1") {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "stream closed before the first event"
        );
    }

    let long_actor = "a".repeat(40);
    let body = format!(r#"{{"type":"step.started","actor":"{long_actor}"}}"#);
    assert_eq!(
        ops.http("POST", &format!("/api/plans/{p}/events"), None, Some(&body))
            .0,
        201
    );

    let new = config_text(
        &[
            ("max_actor_len = 256", "max_actor_len = 32"),
            ("level = \"info\"", "level = \"debug\""),
            (
                "cors_origins = []",
                "cors_origins = [\"http://ui.example\"]",
            ),
        ],
        &format!(
            "[[auth.tokens]]\nname = \"reloaded\"\nsha256 = \"{}\"\nscopes = [\"read\", \"append\"]\n",
            token_hash()
        ),
    );
    std::fs::write(ops.config_path(), new).unwrap();
    ops.signal("HUP");
    assert!(
        ops.wait_log(&["configuration reloaded"], Duration::from_secs(10)),
        "no reload logged"
    );

    // Tokens: now required.
    assert_eq!(ops.append(&p, "step.started", "{}", None).0, 401);
    let (status, body_text) = ops.http(
        "POST",
        &format!("/api/plans/{p}/events"),
        Some(TOKEN),
        Some(&body),
    );
    // Limits: the long actor is now refused.
    assert_eq!(status, 422, "{body_text}");
    assert!(body_text.contains("32"), "{body_text}");
    assert_eq!(ops.append(&p, "step.started", "{}", Some(TOKEN)).0, 201);
    // CORS: the new origin is allowed.
    let (status, _) = ops_common::http_request(
        ops.addr,
        "OPTIONS",
        &format!("/api/plans/{p}/events"),
        &[
            "origin: http://ui.example".into(),
            "access-control-request-method: POST".into(),
        ],
        None,
    );
    assert!(status == 200 || status == 204, "preflight status {status}");
    // Log level: the running daemon shows debug.
    assert_eq!(ops.admin_json(&["log-level"])["level"], "debug");

    // The SSE connection survived and sees the event appended after the reload.
    let mut saw = false;
    for _ in 0..50 {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if line.starts_with("id: 3") {
            saw = true;
            break;
        }
    }
    assert!(saw, "the SSE stream did not deliver seq 3 after the reload");
}

#[test]
fn sighup_with_an_invalid_config_keeps_the_old_one() {
    let ops = Ops::start();
    let p = plan();
    fill(&ops, &p, 1);

    // Semantically invalid: a key Config::validate refuses.
    let invalid = config_text(&[("max_json_depth = 32", "max_json_depth = 0")], "");
    std::fs::write(ops.config_path(), invalid).unwrap();
    ops.signal("HUP");
    assert!(
        ops.wait_log(
            &["reload rejected", "limits.max_json_depth"],
            Duration::from_secs(10)
        ),
        "the rejection must name the key"
    );
    assert_eq!(
        ops.append(&p, "step.started", r#"{"a":[[1]]}"#, None).0,
        201,
        "old limits stay"
    );

    // Syntactically invalid, and a bad token hash: both rejected, naming the key.
    std::fs::write(
        ops.config_path(),
        config_text(
            &[("max_body_bytes = 1048576", "max_body_bytes = \"big\"")],
            "",
        ),
    )
    .unwrap();
    ops.signal("HUP");
    assert!(ops.wait_log(
        &["reload rejected", "max_body_bytes"],
        Duration::from_secs(10)
    ));
    let bad_token = config_text(
        &[],
        "[[auth.tokens]]\nname = \"t\"\nsha256 = \"nothex\"\nscopes = [\"read\"]\n",
    );
    std::fs::write(ops.config_path(), bad_token).unwrap();
    ops.signal("HUP");
    assert!(ops.wait_log(
        &["reload rejected", "auth.tokens[t].sha256"],
        Duration::from_secs(10)
    ));
    // Still no token required: the old config is in force.
    assert_eq!(ops.append(&p, "step.started", "{}", None).0, 201);

    // The admin reload command reports the same rejection.
    let out = ops.admin(&["reload"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth.tokens[t].sha256"));
}
