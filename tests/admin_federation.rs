//! The federation admin commands (`peers`, `subscriptions`, `dead`) over the
//! admin socket, between two real daemons; and the admin socket's access to
//! the federation API when HTTP clients need a token.

mod ops_common;

use ops_common::Ops;
use serde_json::Value;

#[test]
fn peers_subscriptions_and_dead_letters_over_the_socket() {
    let a = Ops::start();
    let b = Ops::start();
    let (status, body) = b.http("GET", "/api/v1/federation/instance", None, None);
    assert_eq!(status, 200, "{body}");
    let instance: Value = serde_json::from_str(&body).unwrap();
    let b_id = instance["instanceId"].as_str().unwrap().to_string();
    let b_fp = instance["fingerprint"].as_str().unwrap().to_string();

    // A token exists on A, so plain HTTP needs it; the socket does not.
    a.admin_ok(&["tokens", "create", "--scope", "read", "--name", "reader"]);
    assert_eq!(a.http("GET", "/api/v1/federation/peers", None, None).0, 401);

    let url = format!("http://{}", b.addr);
    let added = a.admin_json(&["peers", "add", &b_id, &url, "--fingerprint", &b_fp]);
    assert_eq!(added["instanceId"], b_id.as_str());
    assert_eq!(added["status"], "active");
    let text = a.admin_ok(&["peers", "list"]);
    assert!(text.contains(&b_id) && text.contains(&b_fp), "{text}");

    assert_eq!(
        a.admin_json(&["peers", "suspend", &b_id])["status"],
        "suspended"
    );
    assert_eq!(
        a.admin_json(&["peers", "resume", &b_id])["status"],
        "active"
    );

    let status = a.admin_json(&["status"]);
    let peers = status["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0]["peer"], b_id.as_str());
    assert!(status["queue_depths"]["peers"][&b_id].is_u64());

    let subs = a.admin_json(&["subscriptions", "list"]);
    assert!(subs["subscriptions"].is_array());
    a.admin_ok(&["subscriptions", "list"]);

    let dead = a.admin_json(&["dead", "list"]);
    assert_eq!(dead["messages"].as_array().unwrap().len(), 0);
    a.admin_ok(&["dead", "list", "--peer", &b_id]);
    assert_eq!(
        a.admin_json(&["dead", "retry", "--peer", &b_id])["requeued"],
        0
    );
    let missing = a.admin(&["dead", "retry"]);
    assert!(
        !missing.status.success(),
        "retry needs a message id or --peer"
    );

    // Federation metrics carry the peer label.
    let (_, metrics) = a.http("GET", "/metrics", None, None);
    assert!(
        metrics.contains(&format!(
            "logbook_federation_queue_depth{{peer=\"{b_id}\"}}"
        )),
        "{metrics}"
    );

    assert_eq!(
        a.admin_json(&["peers", "remove", &b_id])["status"],
        "removed"
    );
    let bad = a.admin(&["peers", "add", "x", "not a url"]);
    assert!(!bad.status.success());
}
