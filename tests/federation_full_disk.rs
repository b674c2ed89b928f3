//! A sender whose disk fills while it delivers. The peer acknowledges
//! whole batches, but marking them delivered (a durable write) is refused:
//! the delivery worker, which records such a batch while it sends the next
//! one, must find those rows again rather than move on past them (a worker
//! that keeps its cursor after a failed record leaves them pending for
//! good, and fails this test). Once there is room, every queued event is
//! delivered, each stored once by the peer, in order, and none is dead.
//!
//! The sender's data dir is a small tmpfs the test mounts (as root) and
//! later remounts larger. Where mounting is impossible the test says so and
//! skips.

mod federation_common;
mod tmpfs;

use std::process::Command;
use std::time::Duration;

use federation_common::*;
use serde_json::{Value, json};
use tmpfs::Tmpfs;

const WAIT: Duration = Duration::from_secs(60);

/// About 4 KiB of payload, so that a small disk fills in a few hundred appends.
fn big_event(n: u64) -> Value {
    json!({"type": "step.completed", "payload": {"n": n, "filler": "x".repeat(4000)}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_acknowledged_while_the_disk_is_full_are_sent_again_not_skipped() {
    let (pa, pb) = (free_port(), free_port());
    let (ka, kb) = (test_key("alpha"), test_key("beta"));
    let fast = "retry_initial_ms = 200\nretry_max_secs = 1";
    let mut alpha = Node::start("alpha", pa, fast, &peer_config("beta", pb, &kb));
    let beta = Node::start("beta", pb, "", &peer_config("alpha", pa, &ka));
    beta.subscribe("alpha", "step.>").await;

    // Alpha's data dir moves onto a small tmpfs.
    alpha.stop();
    let data = alpha.data_dir().join("data");
    let saved = alpha.data_dir().join("saved");
    std::fs::rename(&data, &saved).unwrap();
    std::fs::create_dir(&data).unwrap();
    let Some(mount) = Tmpfs::mount(&data, "3m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs (this test needs root)");
        return;
    };
    // All but the write-ahead segment, empty after a clean stop and sized
    // for the disk it was made on: a new one is made to fit the tmpfs.
    for entry in std::fs::read_dir(&saved).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() == "journal.wal" {
            continue;
        }
        let copied = Command::new("cp")
            .arg("-a")
            .arg(&path)
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            copied.status.success(),
            "{}",
            String::from_utf8_lossy(&copied.stderr)
        );
    }
    alpha.restart();

    // Fill alpha's disk while it delivers to beta: batches go out and are
    // acknowledged while their records (and everything else) start being
    // refused. Every 201 is an event beta must get.
    let plan = "0192f3a4-5b6c-7d8e-9f00-00000000f0d1";
    let mut queued = 0u64;
    loop {
        assert!(queued < 5000, "a 3 MiB disk never filled");
        let (status, body) = alpha
            .post(&format!("/api/plans/{plan}/events"), &big_event(queued))
            .await;
        // Full: 507, or 503 once the failed write left the database to be
        // reopened.
        if status == 507 || status == 503 {
            break;
        }
        assert_eq!(status, 201, "{body}");
        queued += 1;
    }
    assert!(queued > 1, "at least two events fit");
    wait_for("delivery failing on the full disk", WAIT, || async {
        let log = alpha.log();
        log.lines()
            .any(|line| line.contains("federation delivery failed") && line.contains("is full"))
            .then_some(())
    })
    .await;

    // Room again: every queued event is delivered, and kept once by beta.
    mount.resize("64m");
    let out = wait_for("every outbound message delivered", WAIT, || async {
        // Refused (507, 503) until the database is reopened.
        let (status, body) = alpha
            .get("/api/v1/federation/events/messages?limit=10000&direction=outbound")
            .await;
        let out = body["messages"].as_array()?.clone();
        (status == 200
            && out.len() == queued as usize
            && out.iter().all(|m| m["status"] == "delivered"))
        .then_some(out)
    })
    .await;
    assert!(out.iter().all(|m| m["status"] != "dead"));
    let inbound = beta.messages("direction=inbound").await;
    let ns: Vec<u64> = inbound
        .iter()
        .map(|m| m["payload"]["payload"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, (0..queued).collect::<Vec<_>>(), "each once, in order");
    assert!(
        inbound.iter().all(|m| m["continuity"]["status"] == "ok"),
        "{inbound:?}"
    );
    drop(mount);
}
