//! Dead letters between real daemons: delivery attempts, failures and dead
//! messages are counted in the metrics, `logbook admin dead drop` deletes
//! dead messages by id and by peer, and delivery works again afterwards.

mod federation_common;

use std::collections::HashMap;
use std::process::{Command, Output};
use std::time::Duration;

use federation_common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

async fn admin(node: &Node, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_logbook"));
    command
        .arg("admin")
        .arg("--socket")
        .arg(node.dir.path().join("admin.sock"))
        .args(args);
    tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || command.output().unwrap()),
    )
    .await
    .expect("the admin command did not finish in time")
    .unwrap()
}

async fn admin_json(node: &Node, args: &[&str]) -> Value {
    let with_json = [args, &["--json"]].concat();
    let output = admin(node, &with_json).await;
    assert!(
        output.status.success(),
        "admin {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The `logbook_federation_*` samples for peer beta, by metric name.
async fn delivery_metrics(node: &Node) -> HashMap<String, f64> {
    let response = node.http.get(node.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("logbook_federation_") && l.contains("{peer=\"beta\"}"))
        .map(|l| {
            let (name, value) = l.split_once("{peer=\"beta\"} ").unwrap();
            (name.to_string(), value.trim().parse().unwrap())
        })
        .collect()
}

async fn publish(node: &Node, n: u64) -> String {
    let (status, body) = node
        .post(
            "/api/v1/federation/events/publish",
            &json!({"eventType": "exception.raised", "payload": {"n": n}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    body["messages"][0]["messageId"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_messages_are_counted_and_dropped() {
    let (pa, pb) = (free_port(), free_port());
    let (ka, kb) = (test_key("alpha"), test_key("beta"));
    let alpha = Node::start(
        "alpha",
        pa,
        "max_attempts = 2\nretry_initial_ms = 100\nretry_max_secs = 1",
        &peer_config("beta", pb, &kb),
    );
    let mut beta = Node::start("beta", pb, "", &peer_config("alpha", pa, &ka));
    beta.subscribe("alpha", "exception.raised").await;
    beta.stop();

    let ids = [
        publish(&alpha, 1).await,
        publish(&alpha, 2).await,
        publish(&alpha, 3).await,
    ];
    let dead = wait_for("three dead messages", WAIT, || async {
        let dead = alpha.messages("direction=outbound&status=dead").await;
        (dead.len() == 3).then_some(dead)
    })
    .await;
    // Two failed attempts each; the peer was down, so no batch was refused
    // (a refused batch is an attempt not recorded on its messages).
    let recorded: u64 = dead.iter().map(|m| m["attempts"].as_u64().unwrap()).sum();
    assert_eq!(recorded, 6);

    // Every attempt, failure and dead message was counted for the peer.
    let metrics = delivery_metrics(&alpha).await;
    let get = |name: &str| {
        *metrics
            .get(name)
            .unwrap_or_else(|| panic!("{name}: {metrics:?}"))
    };
    assert_eq!(get("logbook_federation_dead_letters_total"), 3.0);
    assert_eq!(
        get("logbook_federation_delivery_attempts_total"),
        6.0,
        "{metrics:?}"
    );
    assert_eq!(
        get("logbook_federation_delivery_failures_total"),
        6.0,
        "{metrics:?}"
    );
    assert_eq!(get("logbook_federation_dead_messages"), 3.0);

    // Nothing to drop is an error, not "drop everything".
    assert!(!admin(&alpha, &["dead", "drop"]).await.status.success());
    let (status, _) = alpha
        .post("/api/v1/federation/events/messages/drop", &json!({}))
        .await;
    assert_eq!(status, 422);
    // By id: only that one goes, and only if it belongs to the named peer.
    // A name or an id that matches nothing is 404, not a quiet "0": a typo
    // must not read as done.
    for (args, why) in [
        (
            vec!["dead", "drop", &ids[0], "--peer", "gamma"],
            "no peer \"gamma\"",
        ),
        (
            vec!["dead", "retry", "--peer", "gamma"],
            "no peer \"gamma\"",
        ),
        (
            vec!["dead", "drop", "0192f3a4-5b6c-7d8e-9f00-000000000000"],
            "no dead outbound message",
        ),
    ] {
        let out = admin(&alpha, &args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(why),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(
        alpha.messages("direction=outbound&status=dead").await.len(),
        3
    );
    assert_eq!(
        admin_json(&alpha, &["dead", "drop", &ids[0]]).await["dropped"],
        1
    );
    let left: Vec<String> = alpha
        .messages("direction=outbound&status=dead")
        .await
        .iter()
        .map(|m| m["messageId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, [ids[1].clone(), ids[2].clone()]);
    // By peer: the rest.
    assert_eq!(
        admin_json(&alpha, &["dead", "drop", "--peer", "beta"]).await["dropped"],
        2
    );
    assert!(alpha.messages("direction=outbound").await.is_empty());
    assert_eq!(
        admin_json(&alpha, &["dead", "drop", "--all"]).await["dropped"],
        0
    );
    assert_eq!(
        delivery_metrics(&alpha).await["logbook_federation_dead_messages"],
        0.0
    );

    // Delivery works again afterwards (the emptied outbox reuses its seqs).
    beta.restart();
    let id = publish(&alpha, 4).await;
    let delivered = wait_for("the new message delivered", WAIT, || async {
        let out = alpha.messages("direction=outbound").await;
        (out.len() == 1 && out[0]["status"] == "delivered").then_some(out)
    })
    .await;
    assert_eq!(delivered[0]["messageId"], id.as_str());
    let inbound = beta.messages("direction=inbound").await;
    assert_eq!(inbound.len(), 1);
    assert_eq!(inbound[0]["payload"], json!({"n": 4}));
    let after = delivery_metrics(&alpha).await;
    assert!(
        after["logbook_federation_delivery_attempts_total"]
            > get("logbook_federation_delivery_attempts_total")
    );
}

/// `dead list` pages to the end (100 dead letters a page), showing each
/// page as it arrives: every dead letter once, in order, in both forms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_list_shows_every_page() {
    let (pa, pb) = (free_port(), free_port());
    let (ka, kb) = (test_key("alpha"), test_key("beta"));
    let alpha = Node::start(
        "alpha",
        pa,
        "max_attempts = 1\nretry_initial_ms = 100\nretry_max_secs = 1",
        &peer_config("beta", pb, &kb),
    );
    let mut beta = Node::start("beta", pb, "", &peer_config("alpha", pa, &ka));
    beta.subscribe("alpha", "exception.raised").await;
    beta.stop();
    let mut ids = Vec::new();
    for n in 0..205 {
        ids.push(publish(&alpha, n).await);
    }
    wait_for("205 dead messages", WAIT, || async {
        let dead = alpha.messages("direction=outbound&status=dead").await;
        (dead.len() == 205).then_some(())
    })
    .await;

    let listed = admin_json(&alpha, &["dead", "list"]).await;
    let listed: Vec<&str> = listed["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["messageId"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ids);
    let table = admin(&alpha, &["dead", "list", "--peer", "beta"]).await;
    assert!(table.status.success());
    let table = String::from_utf8(table.stdout).unwrap();
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 205, "{table}");
    for (row, id) in rows.iter().zip(&ids) {
        assert!(row.starts_with(id.as_str()), "{row}");
    }
}
