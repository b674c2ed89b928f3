//! A backup carries the federation identity: an instance restored from it
//! (on a fresh data dir, from the backup file alone) is still accepted by
//! its peer, which pinned the key of the instance that made the backup.

mod federation_common;

use std::time::Duration;

use federation_common::*;
use serde_json::json;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

async fn append(node: &Node, plan: &str, n: u64) {
    let (status, body) = node
        .post(
            &format!("/api/plans/{plan}/events"),
            &json!({"type": "step.started", "payload": {"n": n}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

async fn delivered(node: &Node, count: usize) {
    wait_for("delivery", WAIT, || async {
        let out = node.messages("direction=outbound").await;
        (out.len() == count && out.iter().all(|m| m["status"] == "delivered")).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_instance_keeps_its_federation_identity() {
    let (mut alpha, beta) = subscribed_pair("retry_initial_ms = 200\nretry_max_secs = 1").await;
    let plan = Uuid::new_v4().to_string();
    append(&alpha, &plan, 1).await;
    delivered(&alpha, 1).await;

    let backups = tempfile::tempdir().unwrap();
    let file = backups.path().join("alpha.backup");
    alpha.admin_text(&["backup", file.to_str().unwrap()]).await;
    let key = std::fs::read(alpha.data_dir().join("data/federation.key")).unwrap();
    alpha.stop();

    let restored = backups.path().join("data");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_logbook"))
        .arg("restore")
        .arg(&file)
        .arg("--data-dir")
        .arg(&restored)
        .env("LOGBOOK_HMAC_SECRET", alpha.hmac_secret())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(restored.join("federation.key")).unwrap(), key);

    // Same port, same peers, only the restored data dir.
    let (port, peer) = (
        alpha.port,
        peer_config("beta", beta.port, &test_key("beta")),
    );
    let alpha = Node::start_with_data(
        "alpha",
        port,
        "retry_initial_ms = 200\nretry_max_secs = 1",
        &peer,
        Some(&restored),
    );
    append(&alpha, &plan, 2).await;
    delivered(&alpha, 2).await;
    let inbound = beta.messages("direction=inbound").await;
    assert_eq!(inbound.len(), 2, "{inbound:#?}");
    assert!(!alpha.log().contains("missing_key_ids"), "{}", alpha.log());
}
