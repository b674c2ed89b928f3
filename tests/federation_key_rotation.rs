//! `logbook admin keys rotate-rsa` between two real daemons: the receiver
//! re-pins the announced key (also when it was offline during the rotation),
//! later events signed with the new key are accepted, and a new message
//! signed with the old key is refused (only redeliveries of stored messages
//! are accepted with it). The re-pinned key survives a restart whose
//! `[[peers]]` still lists the old key.
//!
//! A crash during a rotation is simulated by laying out the files the
//! rotation leaves at that point and starting the daemon: a committed
//! rotation is finished, an uncommitted one discarded. An announcement that
//! goes dead does not hold back later messages (they stay signed with the
//! old key the peer pins) and can be retried, or dropped after the peer's
//! admin pinned the new key by hand.

mod federation_common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use federation_common::*;
use logbook_federation::identity::{self, KEY_FILE, NEW_KEY_FILE, RETIRED_KEYS_DIR};
use logbook_federation::message::EventMessage;
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
    beta.subscribe("alpha", "step.>").await;
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
        "beta",
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
        "beta",
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

    // An admin pinning alpha's old key by hand (a stale script) is told
    // that alpha left it, and nothing changes.
    let (status, body) = beta
        .post(
            "/api/v1/federation/peers",
            &json!({"instanceId": "alpha", "baseUrl": alpha.url(""), "publicKey": public_pem(&test_key("alpha"))}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["type"], "urn:logbook:problem:key-retired", "{body}");
    assert_eq!(pinned_key_id(&beta, "alpha").await, new_key_id);
}

const SUBSCRIBE: &str = "/api/v1/federation/events/subscribe";
const INSTANCE: &str = "/api/v1/federation/instance";
/// Gives up on a message after two quick attempts.
const QUICKLY_DEAD: &str = "max_attempts = 2\nretry_initial_ms = 100\nretry_max_secs = 1";

async fn subscribe(node: &Node, peer: &str) {
    let (status, body) = node
        .post(SUBSCRIBE, &json!({"peer": peer, "eventType": "step.>"}))
        .await;
    assert_eq!(status, 201, "{body}");
}

async fn served_key_id(node: &Node) -> String {
    let (status, doc) = node.get(INSTANCE).await;
    assert_eq!(status, 200, "{doc}");
    doc["keyId"].as_str().unwrap().to_string()
}

fn data(node: &Node) -> PathBuf {
    node.data_dir().join("data")
}

/// Alpha's outbound messages to beta, once `done` holds for them.
async fn outbound_when(node: &Node, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    wait_for(what, WAIT, || async {
        let out = node.messages("direction=outbound").await;
        done(&out).then_some(out)
    })
    .await
}

fn statuses(out: &[Value]) -> Vec<(&str, &str)> {
    out.iter()
        .map(|m| {
            (
                m["eventType"].as_str().unwrap(),
                m["status"].as_str().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_rotation_cut_short_before_the_key_moved_is_finished_at_start() {
    let (pa, pb) = (free_port(), free_port());
    let (ka, kb) = (test_key("alpha"), test_key("beta"));
    let fast = "retry_initial_ms = 200\nretry_max_secs = 1";
    let mut alpha = Node::start("alpha", pa, fast, &peer_config("beta", pb, &kb));
    let mut beta = Node::start("beta", pb, "", &peer_config("alpha", pa, &ka));
    subscribe(&beta, "alpha").await;
    beta.stop();
    let rotated = admin_json(&alpha, &["keys", "rotate-rsa"]).await;
    let old_key_id = key_id(&ka);
    let new_key_id = rotated["new_key_id"].as_str().unwrap().to_string();
    alpha.stop();

    // What a crash between the commit (announcements queued, rotation
    // recorded) and the rename leaves: the old key still in federation.key,
    // the new one staged, the old one also kept as retired.
    let dir = data(&alpha);
    let new_pem = std::fs::read_to_string(dir.join(KEY_FILE)).unwrap();
    let old_pem =
        std::fs::read_to_string(dir.join(RETIRED_KEYS_DIR).join(format!("{old_key_id}.key")))
            .unwrap();
    logbook_base::private_file::write_private_file(&dir.join(NEW_KEY_FILE), new_pem.as_bytes())
        .unwrap();
    std::fs::write(dir.join(KEY_FILE), &old_pem).unwrap();

    alpha.restart();
    assert_eq!(
        served_key_id(&alpha).await,
        new_key_id,
        "the rotation finished"
    );
    assert!(!dir.join(NEW_KEY_FILE).exists());
    assert_eq!(
        std::fs::read_to_string(dir.join(KEY_FILE)).unwrap(),
        new_pem
    );
    assert!(alpha.log().contains("finished a federation key rotation"));
    let out = alpha.messages("direction=outbound").await;
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0]["eventType"], "federation.key_rotated");
    assert_ne!(out[0]["status"], "delivered");

    // The queued announcement still goes out, signed with the old key the
    // peer pins, and what follows it with the new key.
    beta.restart();
    let plan = "0192f3a4-5b6c-7d8e-9f00-00000000c0a1";
    append(&alpha, plan, 1).await;
    let out = all_delivered(&alpha, 2).await;
    assert_eq!(
        statuses(&out),
        [
            ("federation.key_rotated", "delivered"),
            ("step.completed", "delivered")
        ]
    );
    assert_eq!(pinned_key_id(&beta, "alpha").await, new_key_id);
    assert_eq!(beta.messages("direction=inbound").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncommitted_rotation_is_discarded_at_start() {
    let (pa, pb) = (free_port(), free_port());
    let (ka, kb) = (test_key("alpha"), test_key("beta"));
    let mut alpha = Node::start("alpha", pa, "", &peer_config("beta", pb, &kb));
    let old_key_id = key_id(&ka);
    alpha.stop();

    // What a crash before the commit leaves: the old key copied to the
    // retired keys, and a new key staged (first whole, then torn, as a crash
    // while writing it would leave it); no rotation recorded.
    let dir = data(&alpha);
    let retired = dir.join(RETIRED_KEYS_DIR);
    std::fs::create_dir_all(&retired).unwrap();
    logbook_base::private_file::write_private_file(
        &retired.join(format!("{old_key_id}.key")),
        identity::private_key_pem(&ka).unwrap().as_bytes(),
    )
    .unwrap();
    let staged = test_key("alpha-staged");
    let whole = identity::private_key_pem(&staged).unwrap();
    for content in [whole.as_str(), &whole[..whole.len() / 2]] {
        logbook_base::private_file::write_private_file(&dir.join(NEW_KEY_FILE), content.as_bytes())
            .unwrap();
        let discarded_before = alpha.log().matches("discarded the staged key").count();
        alpha.restart();
        assert_eq!(served_key_id(&alpha).await, old_key_id, "no peer was told");
        assert!(!dir.join(NEW_KEY_FILE).exists());
        assert_eq!(
            alpha.log().matches("discarded the staged key").count(),
            discarded_before + 1
        );
        assert!(
            alpha.messages("direction=outbound").await.is_empty(),
            "no announcement queued"
        );
        alpha.stop();
    }

    // A later rotation works despite the leftover retired copy.
    alpha.restart();
    let rotated = admin_json(&alpha, &["keys", "rotate-rsa"]).await;
    assert_eq!(rotated["old_key_id"], old_key_id.as_str());
    assert_eq!(rotated["peers_notified"], 1);
    let new_key_id = rotated["new_key_id"].as_str().unwrap();
    assert_ne!(new_key_id, key_id(&staged));
    assert_eq!(served_key_id(&alpha).await, new_key_id);
}

/// Beta away while alpha rotates and gives up on the announcement. Returns
/// the announcement's message id and alpha's new key id.
async fn rotate_until_the_announcement_is_dead(alpha: &Node, beta: &mut Node) -> (String, String) {
    subscribe(beta, "alpha").await;
    beta.stop();
    let rotated = admin_json(alpha, &["keys", "rotate-rsa"]).await;
    let out = outbound_when(alpha, "the announcement dead", |out| {
        out.len() == 1 && out[0]["status"] == "dead"
    })
    .await;
    assert_eq!(out[0]["eventType"], "federation.key_rotated");
    beta.restart();
    (
        out[0]["messageId"].as_str().unwrap().to_string(),
        rotated["new_key_id"].as_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_announcement_does_not_hold_back_later_messages_and_can_be_retried() {
    let (pa, pb) = (free_port(), free_port());
    let (ka, kb) = (test_key("alpha"), test_key("beta"));
    let alpha = Node::start("alpha", pa, QUICKLY_DEAD, &peer_config("beta", pb, &kb));
    let mut beta = Node::start("beta", pb, "", &peer_config("alpha", pa, &ka));
    let (announcement, new_key_id) = rotate_until_the_announcement_is_dead(&alpha, &mut beta).await;

    // The peer still pins the old key; later messages go out signed with it.
    let plan = "0192f3a4-5b6c-7d8e-9f00-00000000c0a2";
    append(&alpha, plan, 1).await;
    let out = outbound_when(&alpha, "the later event delivered", |out| {
        out.len() == 2 && out[1]["status"] == "delivered"
    })
    .await;
    assert_eq!(out[0]["status"], "dead");
    assert_eq!(pinned_key_id(&beta, "alpha").await, key_id(&ka));

    // Retried, the announcement is delivered and re-pins; the new key signs
    // from then on.
    let retried = admin_json(&alpha, &["dead", "retry", &announcement]).await;
    assert_eq!(retried["requeued"], 1, "{retried}");
    all_delivered(&alpha, 2).await;
    assert_eq!(pinned_key_id(&beta, "alpha").await, new_key_id);
    append(&alpha, plan, 2).await;
    all_delivered(&alpha, 3).await;
    let ns: Vec<Value> = beta
        .messages("direction=inbound")
        .await
        .iter()
        .map(|m| m["payload"]["payload"]["n"].clone())
        .collect();
    assert_eq!(ns, [json!(1), json!(2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_announcement_dropped_after_a_pin_by_hand_lets_the_new_key_sign() {
    let (pa, pb) = (free_port(), free_port());
    let (ka, kb) = (test_key("alpha"), test_key("beta"));
    let alpha = Node::start("alpha", pa, QUICKLY_DEAD, &peer_config("beta", pb, &kb));
    let mut beta = Node::start("beta", pb, "", &peer_config("alpha", pa, &ka));
    let (announcement, new_key_id) = rotate_until_the_announcement_is_dead(&alpha, &mut beta).await;

    // Beta's admin pins alpha's new key by hand.
    let (_, doc) = alpha.get(INSTANCE).await;
    let (status, body) = beta
        .post(
            "/api/v1/federation/peers",
            &json!({"instanceId": "alpha", "baseUrl": alpha.url(""), "publicKey": doc["publicKey"]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(pinned_key_id(&beta, "alpha").await, new_key_id);

    // The announcement, signed with the old key, is now refused.
    admin_json(&alpha, &["dead", "retry", &announcement]).await;
    let out = outbound_when(&alpha, "the retried announcement dead again", |out| {
        out.len() == 1 && out[0]["status"] == "dead" && out[0]["attempts"] == 2
    })
    .await;
    let error = out[0]["lastError"].as_str().unwrap();
    assert!(error.contains("401"), "{error}");
    // Until it is dropped, alpha signs for beta with the old key.
    let plan = "0192f3a4-5b6c-7d8e-9f00-00000000c0a3";
    append(&alpha, plan, 1).await;
    outbound_when(&alpha, "the event refused too", |out| {
        out.len() == 2 && out[1]["status"] == "dead"
    })
    .await;

    // Dropped: the new key signs; the refused event can be retried.
    let dropped = admin_json(&alpha, &["dead", "drop", &announcement]).await;
    assert_eq!(dropped["dropped"], 1);
    append(&alpha, plan, 2).await;
    let out = outbound_when(&alpha, "the next event delivered", |out| {
        out.len() == 2 && out[1]["status"] == "delivered"
    })
    .await;
    assert_eq!(out[0]["status"], "dead");
    let retried = admin_json(&alpha, &["dead", "retry", "--peer", "beta"]).await;
    assert_eq!(retried["requeued"], 1, "{retried}");
    all_delivered(&alpha, 2).await;
    let ns: Vec<Value> = beta
        .messages("direction=inbound")
        .await
        .iter()
        .map(|m| m["payload"]["payload"]["n"].clone())
        .collect();
    assert_eq!(ns, [json!(2), json!(1)], "a retried message arrives late");
    assert_eq!(pinned_key_id(&beta, "alpha").await, new_key_id);
}

/// The message right after our key announcement goes out signed with the
/// new key on its first attempt: the announcement's ack is recorded (the
/// peer now pins the new key) before the key for the next batch is chosen.
/// A record still running in the background while that key was chosen made
/// the worker sign the next message with the old key, which the peer
/// refuses (401), costing that message an attempt and a backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_message_after_an_announcement_is_signed_with_the_new_key_at_once() {
    let (pa, pb) = (free_port(), free_port());
    let (ka, kb) = (test_key("alpha"), test_key("beta"));
    // Slow retries: a refused first attempt shows as a second one.
    let slow = "retry_initial_ms = 200\nretry_max_secs = 1";
    let alpha = Node::start("alpha", pa, slow, &peer_config("beta", pb, &kb));
    let mut beta = Node::start("beta", pb, "", &peer_config("alpha", pa, &ka));
    subscribe(&beta, "alpha").await;
    let plan = "0192f3a4-5b6c-7d8e-9f00-00000000c0a4";
    for round in 0..3u64 {
        // Beta away: the announcement waits, and the events queued behind
        // it are not tried (a batch ends at an undelivered announcement).
        beta.stop();
        let rotated = admin_json(&alpha, &["keys", "rotate-rsa"]).await;
        let new_key_id = rotated["new_key_id"].as_str().unwrap().to_string();
        for n in 0..3 {
            append(&alpha, plan, round * 10 + n).await;
        }
        let expected = (round as usize + 1) * 4;
        outbound_when(&alpha, "the announcement tried", |out| {
            out.len() == expected
                && out[expected - 4]["eventType"] == "federation.key_rotated"
                && out[expected - 4]["attempts"].as_u64() >= Some(1)
        })
        .await;
        beta.restart();
        let out = all_delivered(&alpha, expected).await;
        assert_eq!(pinned_key_id(&beta, "alpha").await, new_key_id);
        for m in &out[expected - 3..] {
            assert_eq!(m["attempts"], 1, "round {round}: {m}");
            assert_eq!(m["lastError"], Value::Null, "round {round}: {m}");
        }
    }
}
