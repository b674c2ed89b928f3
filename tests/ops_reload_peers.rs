//! SIGHUP reloads `[[peers]]`: listed peers are added or updated, peers
//! added at run time stay, and an invalid peer entry rejects the whole
//! reload with the entry named.

mod common;

use std::time::Duration;

use common::{Daemon, DaemonOpts};
use serde_json::{Value, json};

fn peer_entry(instance_id: &str, base_url: &str, public_key: &str) -> String {
    format!(
        "[[peers]]\ninstance_id = \"{instance_id}\"\nbase_url = \"{base_url}\"\npublic_key = '''\n{public_key}'''\n"
    )
}

/// The peers of `daemon` by instance id, from `admin peers list --json`.
async fn peers(daemon: &Daemon) -> Vec<Value> {
    daemon.admin_json(&["peers", "list"]).await["peers"]
        .as_array()
        .unwrap()
        .clone()
}

fn find<'a>(peers: &'a [Value], id: &str) -> Option<&'a Value> {
    peers.iter().find(|p| p["instanceId"] == id)
}

#[tokio::test]
async fn sighup_applies_added_and_changed_peers_and_keeps_runtime_ones() {
    let a = Daemon::start(DaemonOpts::default());
    let b = Daemon::start(DaemonOpts::default());
    let doc = b.get_json("/api/v1/federation/instance").await.json;
    let b_id = doc["instanceId"].as_str().unwrap().to_string();
    let b_key = doc["publicKey"].as_str().unwrap().to_string();
    let b_url = format!("http://{}", b.addr);

    // A peer added at run time, not in the config.
    let key_file = a.dir().join("runtime-peer.pem");
    std::fs::write(&key_file, &b_key).unwrap();
    a.admin_ok(&[
        "peers",
        "add",
        "runtime-peer",
        "http://127.0.0.1:9",
        "--public-key",
        key_file.to_str().unwrap(),
    ])
    .await;

    // SIGHUP with b listed: b is added, active, with its key pinned.
    let with_b = DaemonOpts::default().config(&peer_entry(&b_id, &b_url, &b_key));
    std::fs::write(a.config_path(), with_b.config_text()).unwrap();
    a.signal("HUP");
    assert!(
        a.wait_log(
            &["configuration reloaded", "peers"],
            Duration::from_secs(10)
        )
        .await,
        "no reload logged"
    );
    let list = peers(&a).await;
    let peer = find(&list, &b_id).expect("the listed peer was added");
    assert_eq!(peer["status"], "active");
    assert_eq!(peer["baseUrl"], b_url.as_str());
    assert_eq!(peer["fingerprint"], doc["fingerprint"]);
    assert!(find(&list, "runtime-peer").is_some(), "runtime peer kept");

    // A changed entry updates the peer (the admin reload is the same code
    // as SIGHUP and reports its result).
    let moved = DaemonOpts::default().config(&peer_entry(&b_id, "http://127.0.0.1:1", &b_key));
    std::fs::write(a.config_path(), moved.config_text()).unwrap();
    let reloaded = a.admin_json(&["reload"]).await;
    assert!(
        reloaded["applied"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "peers"),
        "{reloaded}"
    );
    let list = peers(&a).await;
    assert_eq!(find(&list, &b_id).unwrap()["baseUrl"], "http://127.0.0.1:1");
    assert!(find(&list, "runtime-peer").is_some());
    // Read again unchanged: nothing is reported as changed.
    let again = a.admin_json(&["reload"]).await;
    assert_eq!(again["applied"], json!([]), "{again}");
    // A key read only at start: said, not silently ignored.
    let keepalive = moved.replace("keepalive_secs = 15", "keepalive_secs = 16");
    std::fs::write(a.config_path(), keepalive.config_text()).unwrap();
    let out = a.admin_json(&["reload"]).await;
    assert_eq!(out["applied"], json!([]), "{out}");
    assert_eq!(out["needs_restart"], json!(["sse.keepalive_secs"]), "{out}");
    assert!(
        a.wait_log(
            &["needs a restart", "sse.keepalive_secs"],
            Duration::from_secs(10)
        )
        .await,
        "no restart warning logged"
    );
    // Still so at the next reload: compared with what runs, not with the
    // file read last time.
    let out = a.admin_json(&["reload"]).await;
    assert_eq!(out["needs_restart"], json!(["sse.keepalive_secs"]), "{out}");

    // An invalid entry rejects the whole reload, naming it; nothing changes.
    let bad = DaemonOpts::default()
        .replace("max_json_depth = 32", "max_json_depth = 16")
        .config(&peer_entry(&b_id, &b_url, &b_key))
        .config("[[peers]]\ninstance_id = \"broken\"\nbase_url = \"http://127.0.0.1:2\"\nfingerprint = \"zz\"\n");
    std::fs::write(a.config_path(), bad.config_text()).unwrap();
    let out = a.admin(&["reload"]).await;
    assert!(!out.success());
    assert!(out.stderr.contains("peers[1] (broken)"), "{}", out.stderr);
    let list = peers(&a).await;
    assert_eq!(find(&list, &b_id).unwrap()["baseUrl"], "http://127.0.0.1:1");
    assert!(find(&list, "broken").is_none());
}
