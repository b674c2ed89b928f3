//! A data dir written by the release before plan trees
//! (`tests/fixtures/release-0.1/`) opens with this one: the one-time pass
//! builds every plan's tree, the signed checkpoints' roots equal an
//! independent RFC 9162 computation over the events, the chains still
//! verify, and the plan deleted back then stays deleted.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{Daemon, DaemonOpts, assert_problem, event_body};
use logbook_journal::Event;
use logbook_journal::chain::log_entry;
use logbook_tlog::checkpoint::verify_checkpoint;
use logbook_tlog::merkle::{self, Hash};
use logbook_tlog::note::Verifier;

const SECRET: &str = "fixture-secret-of-release-0.1-data-dir";
const PLANS: [(&str, u64); 2] = [
    ("01943ad6-c020-76ca-83c8-90c1d3ac94af", 300),
    ("0194be97-b180-71fb-bca3-a17039263059", 7),
];
const DELETED: &str = "0194c000-0000-7000-8000-000000000001";

/// RFC 9162 MTH, from its definition.
fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => merkle::empty_root(),
        1 => leaves[0],
        n => {
            let k = 1 << (usize::BITS - 1 - (n - 1).leading_zeros());
            merkle::node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_0_1_data_dir_gains_its_trees_and_keeps_its_history() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/release-0.1/journal.redb"
    );
    std::fs::copy(fixture, data.join(logbook_journal::store::DB_FILE)).unwrap();

    let mut daemon = Daemon::start_in(
        dir,
        DaemonOpts::default().env("LOGBOOK_HMAC_SECRET", SECRET),
    );
    assert!(
        daemon
            .wait_log(&["plan trees built", "308"], Duration::from_secs(10))
            .await,
        "the one-time pass reports its work (307 events and the tombstone):\n{}",
        daemon.log_text()
    );

    for (plan, size) in PLANS {
        let events: Vec<Event> = daemon
            .all_events(plan)
            .await
            .into_iter()
            .map(|e| serde_json::from_value(e).unwrap())
            .collect();
        assert_eq!(events.len() as u64, size);
        let leaves: Vec<Hash> = events
            .iter()
            .map(|e| merkle::leaf_hash(log_entry(e).as_bytes()))
            .collect();

        let vkey = daemon.get_json(&format!("/api/plans/{plan}/log-key")).await;
        let verifier = Verifier::parse(&vkey.text).unwrap();
        let note = daemon
            .get_json(&format!("/api/plans/{plan}/checkpoint"))
            .await;
        assert_eq!(note.status, 200, "{}", note.text);
        let checkpoint = verify_checkpoint(note.text.as_bytes(), &verifier).unwrap();
        assert_eq!(checkpoint.size, size);
        assert_eq!(checkpoint.root, mth(&leaves), "plan {plan}");

        let full = daemon
            .get_json(&format!("/api/plans/{plan}/events?verify=full&limit=1"))
            .await;
        assert_eq!(full.json["chain_valid"], true, "{}", full.text);
        let page = daemon
            .get_json(&format!("/api/plans/{plan}/events?verify=1&after=250"))
            .await;
        assert_eq!(page.json["chain_valid"], true, "{}", page.text);
    }

    // Deleted in release 0.1, so its id stays unused.
    let resp = daemon.append(DELETED, event_body("plan.created", 0)).await;
    assert_problem(&resp, 410);

    // The pass ran once: a restart finds every tree complete.
    daemon.restart();
    let appended = daemon
        .append_ok(PLANS[1].0, event_body("step.started", 0))
        .await;
    assert_eq!(appended["seq"], 8);
    assert_eq!(
        daemon.log_text().matches("one-time pass").count(),
        1,
        "{}",
        daemon.log_text()
    );
}
