//! A full disk is a short fault, not an outage: appends get 507 with
//! Retry-After and `/readyz` says not ready while the disk is full; once
//! space is back, appends commit again in the same process, and every event
//! acknowledged before, during and after is intact and verifies.
//!
//! The data dir is a small tmpfs the test mounts (as root) and later
//! remounts larger. Where mounting is impossible the test says so and skips.

mod common;
mod tmpfs;

use std::time::{Duration, Instant};

use common::{
    Daemon, DaemonOpts, assert_chain_valid, assert_linked_chain, assert_problem, new_plan,
};
use serde_json::{Value, json};
use tmpfs::Tmpfs;

/// About 4 KiB of payload, so that a small disk fills in a few hundred appends.
fn big_event(n: usize) -> Value {
    json!({
        "type": "step.completed",
        "actor": "tester",
        "payload": {"n": n, "filler": "x".repeat(4000)},
    })
}

#[tokio::test]
async fn a_full_disk_gets_507_and_appends_resume_without_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("creating the data dir");
    let Some(mount) = Tmpfs::mount(&data, "2m") else {
        eprintln!(
            "SKIPPED: cannot mount a tmpfs on {} (this test needs root)",
            data.display()
        );
        return;
    };
    let mut daemon = Daemon::start_in(dir, DaemonOpts::default());
    // Rebound after the daemon so that it drops first: the mount goes
    // (lazily) before the daemon's temp dir is removed.
    let mount = mount;

    // Fill the disk. Every 201 is an acknowledged event that must survive.
    let plan = new_plan();
    let mut acknowledged: Vec<Value> = Vec::new();
    let full = loop {
        assert!(
            acknowledged.len() < 5000,
            "a 2 MiB disk never filled up after {} appends",
            acknowledged.len()
        );
        let resp = daemon.append(plan, big_event(acknowledged.len())).await;
        if resp.status == 201 {
            acknowledged.push(resp.json);
        } else {
            break resp;
        }
    };
    eprintln!("the disk filled after {} appends", acknowledged.len());
    assert!(!acknowledged.is_empty(), "not one append fit on the disk");
    assert_eq!(
        assert_problem(&full, 507),
        "urn:logbook:problem:insufficient-storage",
        "{}",
        full.text
    );
    assert!(
        full.header("retry-after")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some(),
        "507 without a Retry-After in seconds: {:?}",
        full.headers
    );

    // Still full: appends keep failing the same way, and the daemon is not ready.
    let again = daemon.append(plan, big_event(9999)).await;
    assert_eq!(
        assert_problem(&again, 507),
        "urn:logbook:problem:insufficient-storage"
    );
    let ready = common::send(daemon.get("/readyz")).await;
    assert_eq!(ready.status, 503, "/readyz on a full disk: {}", ready.text);
    assert_eq!(ready.json["status"], "storage-full", "{}", ready.text);
    // And stays so while the disk is full: no reopen (and no flapping to
    // ready) before there is room again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ready = common::send(daemon.get("/readyz")).await;
    assert_eq!(ready.status, 503, "/readyz on a full disk: {}", ready.text);
    let again = daemon.append(plan, big_event(9999)).await;
    assert_eq!(
        assert_problem(&again, 507),
        "urn:logbook:problem:insufficient-storage"
    );

    // Space comes back: appends commit again in the same process.
    mount.resize("64m");
    let pid = daemon.pid();
    let deadline = Instant::now() + Duration::from_secs(60);
    let resumed = loop {
        let resp = daemon.append(plan, big_event(acknowledged.len())).await;
        if resp.status == 201 {
            break resp.json;
        }
        assert!(
            [503, 507].contains(&resp.status),
            "while recovering: {} {}",
            resp.status,
            resp.text
        );
        assert!(
            Instant::now() < deadline,
            "appends did not resume within 60 s of freeing space: {}",
            resp.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(daemon.pid(), pid, "the daemon restarted");
    acknowledged.push(resumed);
    for _ in 0..20 {
        let n = acknowledged.len();
        acknowledged.push(daemon.append_ok(plan, big_event(n)).await);
    }
    let ready = common::send(daemon.get("/readyz")).await;
    assert_eq!(ready.status, 200, "/readyz after recovery: {}", ready.text);

    // Exactly the acknowledged events, in order, chained, verifying; the
    // refused appends left nothing behind.
    let check = |stored: &[Value]| {
        let ids = |events: &[Value]| {
            events
                .iter()
                .map(|e| (e["seq"].as_u64().unwrap(), e["id"].to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(stored), ids(&acknowledged), "stored vs acknowledged");
        assert_linked_chain(stored);
        for (stored, acked) in stored.iter().zip(&acknowledged) {
            assert_eq!(stored["signature"], acked["signature"]);
        }
    };
    check(&daemon.all_events(plan).await);
    assert_chain_valid(&daemon, plan).await;

    // And it all lasts: the same after a restart.
    daemon.restart();
    check(&daemon.all_events(plan).await);
    assert_chain_valid(&daemon, plan).await;
}
