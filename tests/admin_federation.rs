//! The federation admin commands (`peers`, `subscriptions`, `dead`) over the
//! admin socket, between two real daemons; and the admin socket's access to
//! the federation API when HTTP clients need a token.

mod common;

use common::{Daemon, DaemonOpts};

#[tokio::test]
async fn peers_subscriptions_and_dead_letters_over_the_socket() {
    let a = Daemon::start(DaemonOpts::default());
    let b = Daemon::start(DaemonOpts::default());
    let resp = b.get_json("/api/v1/federation/instance").await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let instance = resp.json;
    let b_id = instance["instanceId"].as_str().unwrap().to_string();
    let b_fp = instance["fingerprint"].as_str().unwrap().to_string();

    // A token exists on A, so plain HTTP needs it; the socket does not.
    let reader = a
        .admin_ok(&["tokens", "create", "--scope", "read", "--name", "reader"])
        .await
        .trim()
        .to_string();
    assert_eq!(a.get_json("/api/v1/federation/peers").await.status, 401);

    let url = format!("http://{}", b.addr);
    let added = a
        .admin_json(&["peers", "add", &b_id, &url, "--fingerprint", &b_fp])
        .await;
    assert_eq!(added["instanceId"], b_id.as_str());
    assert_eq!(added["status"], "active");
    let text = a.admin_ok(&["peers", "list"]).await;
    assert!(text.contains(&b_id) && text.contains(&b_fp), "{text}");

    assert_eq!(
        a.admin_json(&["peers", "suspend", &b_id]).await["status"],
        "suspended"
    );
    assert_eq!(
        a.admin_json(&["peers", "resume", &b_id]).await["status"],
        "active"
    );

    let status = a.admin_json(&["status"]).await;
    let peers = status["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0]["peer"], b_id.as_str());
    assert!(status["queue_depths"]["peers"][&b_id].is_u64());
    // For people too: each peer's queue beside the writer's.
    let text = a.admin_ok(&["status"]).await;
    assert!(
        text.contains(&format!("writer 0; {b_id} 0 queued, 0 dead")),
        "{text}"
    );

    let subs = a.admin_json(&["subscriptions", "list"]).await;
    assert!(subs["subscriptions"].is_array());
    a.admin_ok(&["subscriptions", "list"]).await;

    let dead = a.admin_json(&["dead", "list"]).await;
    assert_eq!(dead["messages"].as_array().unwrap().len(), 0);
    a.admin_ok(&["dead", "list", "--peer", &b_id]).await;
    assert_eq!(
        a.admin_json(&["dead", "retry", "--peer", &b_id]).await["requeued"],
        0
    );
    let missing = a.admin(&["dead", "retry"]).await;
    assert!(
        !missing.status.success(),
        "retry needs a message id or --peer"
    );

    // Federation metrics carry the peer label (metrics need a read token
    // once tokens exist).
    assert_eq!(a.get_json("/metrics").await.status, 401);
    let resp = a.get_as("/metrics", &reader).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let metrics = resp.text;
    assert!(
        metrics.contains(&format!(
            "logbook_federation_queue_depth{{peer=\"{b_id}\"}}"
        )),
        "{metrics}"
    );

    assert_eq!(
        a.admin_json(&["peers", "remove", &b_id]).await["status"],
        "removed"
    );
    let bad = a.admin(&["peers", "add", "x", "not a url"]).await;
    assert!(!bad.status.success());
}
