//! `logbook admin keys rotate-rsa` between two real daemons: the receiver
//! re-pins the announced key (also when it was offline during the rotation),
//! later events signed with the new key are accepted, and a new message
//! signed with the old key is refused (only redeliveries of stored messages
//! are accepted with it). The re-pinned key survives a restart whose
//! `[[peers]]` still lists the old key.

mod federation_common;

use std::process::Command;
use std::time::Duration;

use federation_common::*;
use logbook::federation::message::EventMessage;
use serde_json::{Value, json};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

async fn admin_json(node: &Node, args: &[&str]) -> Value {
    let mut command = Command::new(env!("CARGO_BIN_EXE_logbook"));
    command
        .arg("admin")
        .arg("--socket")
        .arg(node.dir.path().join("admin.sock"))
        .args(args)
        .arg("--json");
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || command.output().unwrap()),
    )
    .await
    .expect("the admin command did not finish in time")
    .unwrap();
    assert!(
        output.status.success(),
        "admin {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

async fn append(node: &Node, plan: &str, n: u64) {
    let (status, body) = node
        .post(
            &format!("/api/plans/{plan}/events"),
            &json!({"type": "step.completed", "payload": {"n": n}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

async fn all_delivered(node: &Node, expected: usize) -> Vec<Value> {
    wait_for("every outbound message delivered", WAIT, || async {
        let out = node.messages("direction=outbound").await;
        (out.len() == expected && out.iter().all(|m| m["status"] == "delivered")).then_some(out)
    })
    .await
}

async fn pinned_key_id(node: &Node, peer: &str) -> String {
    let (status, body) = node.get("/api/v1/federation/peers").await;
    assert_eq!(status, 200, "{body}");
    body["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["instanceId"] == peer)
        .unwrap_or_else(|| panic!("no peer {peer}: {body}"))["keyId"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_key_is_announced_repinned_and_the_old_key_refused() {
    let (pa, pb) = (free_port(), free_port());
    let (ka, kb) = (test_key("alpha"), test_key("beta"));
    let fast = "retry_initial_ms = 200\nretry_max_secs = 1";
    let alpha = Node::start("alpha", pa, fast, &peer_config("beta", pb, &kb));
    let mut beta = Node::start("beta", pb, "", &peer_config("alpha", pa, &ka));
    let (status, body) = beta
        .post(
            "/api/v1/federation/events/subscribe",
            &json!({"peer": "alpha", "eventType": "step.>"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let plan = "0192f3a4-5b6c-7d8e-9f00-0123456789ab";
    append(&alpha, plan, 1).await;
    all_delivered(&alpha, 1).await;
    let old_key_id = key_id(&ka);
    assert_eq!(pinned_key_id(&beta, "alpha").await, old_key_id);

    // Beta is offline during the rotation: it must receive, in order, the
    // event queued before, the announcement, and the event queued after.
    beta.stop();
    append(&alpha, plan, 2).await;
    let rotated = admin_json(&alpha, &["keys", "rotate-rsa"]).await;
    assert_eq!(rotated["old_key_id"], old_key_id.as_str());
    let new_key_id = rotated["new_key_id"].as_str().unwrap().to_string();
    assert_ne!(new_key_id, old_key_id);
    assert_eq!(rotated["peers_notified"], 1);
    let (_, doc) = alpha.get("/api/v1/federation/instance").await;
    assert_eq!(doc["keyId"], new_key_id.as_str(), "served at once");
    assert!(
        alpha
            .data_dir()
            .join(format!("data/federation-retired/{old_key_id}.key"))
            .exists(),
        "the old key is kept"
    );
    append(&alpha, plan, 3).await;
    beta.restart();

    let out = all_delivered(&alpha, 4).await;
    let types: Vec<&str> = out
        .iter()
        .map(|m| m["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "step.completed",
            "step.completed",
            "federation.key_rotated",
            "step.completed"
        ]
    );
    assert_eq!(pinned_key_id(&beta, "alpha").await, new_key_id);
    let inbound = beta.messages("direction=inbound").await;
    let ns: Vec<&Value> = inbound
        .iter()
        .map(|m| &m["payload"]["payload"]["n"])
        .collect();
    assert_eq!(
        ns,
        [&json!(1), &json!(2), &json!(3)],
        "in order, announcement not listed"
    );
    assert!(
        inbound.iter().all(|m| m["continuity"]["status"] == "ok"),
        "{inbound:?}"
    );

    // A new message signed with the old key is refused, and not stored.
    let forged = EventMessage::signed(
        &ka,
        &old_key_id,
        "alpha",
        Uuid::new_v4(),
        "step.completed",
        json!({"forged": true}),
        now_ms(),
    )
    .unwrap();
    let (status, body) = beta
        .post(
            "/api/v1/federation/incoming/event",
            &serde_json::to_value(&forged).unwrap(),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(beta.messages("direction=inbound").await.len(), 3);
    // A redelivery of a stored message signed with the old key (alpha had
    // not yet seen the ack) is acknowledged again, and changes nothing.
    let first = &inbound[0];
    let redelivery = EventMessage::signed(
        &ka,
        &old_key_id,
        "alpha",
        Uuid::parse_str(first["messageId"].as_str().unwrap()).unwrap(),
        first["eventType"].as_str().unwrap(),
        first["payload"].clone(),
        now_ms(),
    )
    .unwrap();
    let (status, ack) = beta
        .post(
            "/api/v1/federation/incoming/event",
            &serde_json::to_value(&redelivery).unwrap(),
        )
        .await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["correlationId"], first["messageId"]);
    assert_eq!(beta.messages("direction=inbound").await.len(), 3);

    // Beta's [[peers]] still lists alpha's old key: a restart keeps the new one.
    beta.restart();
    assert_eq!(pinned_key_id(&beta, "alpha").await, new_key_id);
    append(&alpha, plan, 4).await;
    all_delivered(&alpha, 5).await;
    assert_eq!(beta.messages("direction=inbound").await.len(), 4);
    assert!(
        beta.log().contains("rotated away from"),
        "the stale config key is reported"
    );
}
