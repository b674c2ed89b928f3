//! The one integration-test harness: runs the real `logbook` binary on a
//! loopback port against a real store in a temp dir ([`Daemon`]), talks to it
//! over HTTP, SSE and the admin socket, and runs the CLI's other commands.
//! Every wait is bounded so that no test can hang.
//!
//! - `daemon`: start/restart/stop, config text, log, signals
//! - `http`: requests, journal API calls, raw HTTP/1.1, problem checks
//! - `sse`: SSE streams and frames
//! - `admin`: `logbook admin …` and other commands with a time limit

// Each test binary compiles its own copy of this module and uses a different
// part of it, so any one binary leaves some of it unused.
#![allow(dead_code)]

mod admin;
mod daemon;
mod http;
// A binary may include two harnesses, each with its copy: the port locks
// keep the copies apart.
#[allow(clippy::duplicate_mod)]
#[path = "../ports/mod.rs"]
mod ports;
mod sse;

use std::fmt::Display;
use std::sync::Arc;

use serde_json::{Value, json};
use uuid::Uuid;

// The flat API the tests import (`use common::{Daemon, ...}`); for the same
// reason as above, each binary leaves some of these re-exports unused.
#[allow(unused_imports)]
pub use admin::{CommandOutput, logbook, run, run_logbook};
#[allow(unused_imports)]
pub use daemon::{
    ADMIN_TOKEN, Daemon, DaemonOpts, TEST_SECRET, client, run_expecting_exit, run_expecting_exit_in,
};
#[allow(unused_imports)]
pub use http::{REQUEST_TIMEOUT, Resp, assert_problem, send};
#[allow(unused_imports)]
pub use ports::free_port;
#[allow(unused_imports)]
pub use sse::{Frame, SSE_READ_TIMEOUT, SseClient};

/// A fresh plan id.
pub fn new_plan() -> Uuid {
    Uuid::new_v4()
}

/// An append body of a built-in type with a numbered payload.
pub fn event_body(event_type: &str, n: u64) -> Value {
    json!({"type": event_type, "actor": "tester", "payload": {"n": n}})
}

/// Appends `n` `step.completed` events to `plan`, asserting each is created.
/// Event `i` (from 0) has the payload `{"i": i, "note": "event number i"}`.
pub async fn fill(daemon: &Daemon, plan: impl Display, n: usize) {
    for i in 0..n {
        let body = json!({
            "type": "step.completed",
            "actor": "tester",
            "payload": {"i": i, "note": format!("event number {i}")},
        });
        let resp = daemon.append(&plan, body).await;
        assert_eq!(resp.status, 201, "append {i}: {}", resp.text);
    }
}

/// Asserts that `events` (a plan's, in order) are seq 1..=n, each linking to
/// the previous one's signature.
pub fn assert_linked_chain(events: &[Value]) {
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event["seq"], (i + 1) as u64, "seq of event #{i}: {event}");
        if i == 0 {
            assert_eq!(event["prev_hash"], Value::Null, "first event's prev_hash");
        } else {
            assert_eq!(
                event["prev_hash"],
                events[i - 1]["signature"],
                "prev_hash of seq {}",
                i + 1
            );
        }
    }
}

/// Asserts `verify=full` reports an intact chain.
pub async fn assert_chain_valid(daemon: &Daemon, plan: impl Display) {
    let report = daemon.verify(&plan).await;
    assert_eq!(report["chain_valid"], true, "chain of {plan}: {report}");
    assert_eq!(
        report["broken_at"],
        Value::Null,
        "chain of {plan}: {report}"
    );
    assert_eq!(
        report["broken_reason"],
        Value::Null,
        "chain of {plan}: {report}"
    );
}

/// The keyring the test daemons sign with.
pub fn test_keyring() -> Arc<logbook_journal::keys::Keyring> {
    Arc::new(logbook_journal::keys::Keyring::from_secret(
        TEST_SECRET.as_bytes().to_vec(),
    ))
}

/// Opens the stopped daemon's store offline, lets `f` change it as an
/// attacker with write access to the file would, and closes it again.
pub async fn with_offline_store<T: Send + 'static>(
    daemon: &Daemon,
    f: impl FnOnce(&logbook_journal::store::Store) -> T + Send + 'static,
) -> T {
    let path = daemon.db_path();
    // The writer's shutdown blocks, which is not allowed on a runtime thread.
    tokio::task::spawn_blocking(move || {
        let (store, writer) = logbook_journal::store::Store::open(
            &path,
            test_keyring(),
            logbook_journal::fanout::fanout(),
        )
        .expect("opening the store offline");
        let out = f(&store);
        drop(store);
        writer.shutdown();
        out
    })
    .await
    .expect("offline store task")
}

/// Every acknowledged event is stored exactly as acknowledged (id, seq,
/// signature and all).
pub fn assert_acked_stored(
    stored: &std::collections::BTreeMap<String, Vec<Value>>,
    acked: &[Value],
) {
    for event in acked {
        let plan = event["plan_id"].as_str().unwrap();
        let seq = event["seq"].as_u64().unwrap() as usize;
        let chain = &stored[plan];
        assert!(
            seq <= chain.len(),
            "acknowledged event {plan}/{seq} is missing (chain has {})",
            chain.len()
        );
        assert_eq!(
            &chain[seq - 1],
            event,
            "acknowledged event {plan}/{seq} changed"
        );
    }
}
