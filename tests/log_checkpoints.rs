//! Issue 10, checkpoints and keys, against the real daemon: a plan's signed
//! checkpoint verifies with its published vkey (and with one derived from
//! the instance vkey), covers a root computed here from the events read
//! over HTTP, and a flipped byte fails it; the instance document binds the
//! log key with the RSA key; the key file is private; unknown plans and
//! missing scopes are refused.

mod common;

use common::{Daemon, DaemonOpts, assert_problem, fill, new_plan};
use logbook_journal::Event;
use logbook_journal::chain::log_entry;
use logbook_journal::checkpoint::plan_verifier;
use logbook_journal::event::Timestamp;
use logbook_tlog::checkpoint::verify_checkpoint;
use logbook_tlog::note::{Note, Verifier};
use sha2::{Digest, Sha256};

/// RFC 9162 §2.1.1, written out here so the daemon's tree code is not
/// checked against itself.
fn reference_root(leaves: &[[u8; 32]]) -> [u8; 32] {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = n.next_power_of_two() / 2;
            let mut h = Sha256::new();
            h.update([1u8]);
            h.update(reference_root(&leaves[..k]));
            h.update(reference_root(&leaves[k..]));
            h.finalize().into()
        }
    }
}

fn leaf(entry: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry.as_bytes());
    h.finalize().into()
}

async fn text(daemon: &Daemon, path: &str) -> String {
    let resp = daemon.get_json(path).await;
    assert_eq!(resp.status, 200, "{path}: {}", resp.text);
    resp.text
}

#[tokio::test]
async fn a_plans_checkpoint_verifies_and_covers_its_events() {
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();
    fill(&daemon, plan, 5).await;

    let resp = daemon
        .get_json(&format!("/api/plans/{plan}/checkpoint"))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(
        resp.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(resp.header("cache-control"), Some("no-cache"));
    let note = resp.text;

    // The plan's vkey as served, and as derived from the instance vkey.
    let served = Verifier::parse(&text(&daemon, &format!("/api/plans/{plan}/log-key")).await)
        .expect("a C2SP vkey");
    let keys = daemon.get_json("/api/v1/log/keys").await;
    assert_eq!(keys.status, 200, "{}", keys.text);
    assert_eq!(keys.json["retired"], serde_json::json!([]));
    assert!(
        Timestamp::parse(keys.json["current"]["from"].as_str().unwrap()).is_some(),
        "{}",
        keys.text
    );
    let instance = Verifier::parse(keys.json["current"]["vkey"].as_str().unwrap()).unwrap();
    let derived = plan_verifier(&instance, &plan).unwrap();
    assert_eq!(derived, served);
    assert_eq!(served.name, format!("{}/{plan}", instance.name));

    let checkpoint = verify_checkpoint(note.as_bytes(), &derived).expect("the checkpoint verifies");
    assert_eq!(checkpoint.origin, served.name);
    assert_eq!(checkpoint.size, 5);
    let events: Vec<Event> = daemon
        .all_events(plan)
        .await
        .into_iter()
        .map(|e| serde_json::from_value(e).expect("an event"))
        .collect();
    let leaves: Vec<[u8; 32]> = events.iter().map(|e| leaf(&log_entry(e))).collect();
    assert_eq!(checkpoint.root, reference_root(&leaves));

    // Every single flipped byte of the note fails verification, but for
    // one that only touches the unused trailing bits of the signature's
    // base64 (read as Go reads it: the same signature).
    let original = Note::parse(note.as_bytes()).unwrap();
    for i in 0..note.len() {
        let mut bytes = note.clone().into_bytes();
        bytes[i] ^= 0x01;
        if Note::parse(&bytes).is_ok_and(|n| n == original) {
            continue;
        }
        assert!(
            verify_checkpoint(&bytes, &derived).is_err(),
            "flipping byte {i} of {note:?} still verifies"
        );
    }

    // The head moves: the next checkpoint covers the new event.
    fill(&daemon, plan, 1).await;
    let later = text(&daemon, &format!("/api/plans/{plan}/checkpoint")).await;
    let later = verify_checkpoint(later.as_bytes(), &served).unwrap();
    assert_eq!(later.size, 6);
    assert_ne!(later.root, checkpoint.root);
}

#[tokio::test]
async fn the_instance_document_binds_the_log_key_and_the_key_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let mut daemon = Daemon::start(DaemonOpts::default());
    let doc = daemon.get_json("/api/v1/federation/instance").await;
    assert_eq!(doc.status, 200, "{}", doc.text);
    let log_key = doc.json["logKey"].as_str().expect("logKey").to_string();
    let instance_id = doc.json["instanceId"].as_str().unwrap();
    assert_eq!(
        Verifier::parse(&log_key).unwrap().name,
        format!("logbook/{instance_id}"),
        "the default origin_prefix"
    );
    let keys = daemon.get_json("/api/v1/log/keys").await;
    assert_eq!(keys.json["current"]["vkey"], log_key.as_str());
    let rsa =
        logbook_federation::identity::public_key_from_pem(doc.json["publicKey"].as_str().unwrap())
            .unwrap();
    let signature = doc.json["logKeySignature"]
        .as_str()
        .expect("logKeySignature");
    assert!(logbook_federation::message::verify_log_key(
        &rsa,
        instance_id,
        &log_key,
        signature
    ));
    assert!(!logbook_federation::message::verify_log_key(
        &rsa,
        "someone-else",
        &log_key,
        signature
    ));

    let path = daemon.data_dir().join("log.key");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let secret = std::fs::read_to_string(&path).unwrap();
    assert!(secret.starts_with("PRIVATE+KEY+"), "Go's note key form");
    // PRIVATE+KEY+<name>+<hash>+<key>: the key's base64 may hold a '+' too.
    let secret_part = secret.trim().splitn(5, '+').nth(4).unwrap().to_string();
    assert!(
        secret_part.len() >= 40,
        "the whole key: {}",
        secret_part.len()
    );
    assert!(!daemon.log_text().contains(&secret_part), "never logged");

    // The same key after a restart, with the same start time.
    daemon.restart();
    let again = daemon.get_json("/api/v1/log/keys").await;
    assert_eq!(again.json, keys.json);
}

#[tokio::test]
async fn the_origin_prefix_is_configurable() {
    let daemon = Daemon::start(DaemonOpts::default().replace(
        "origin_prefix = \"logbook/{instanceId}\"",
        "origin_prefix = \"example.org/logs/{instanceId}\"",
    ));
    let plan = new_plan();
    fill(&daemon, plan, 1).await;
    let doc = daemon.get_json("/api/v1/federation/instance").await;
    let instance_id = doc.json["instanceId"].as_str().unwrap();
    let note = text(&daemon, &format!("/api/plans/{plan}/checkpoint")).await;
    assert!(
        note.starts_with(&format!("example.org/logs/{instance_id}/{plan}\n1\n")),
        "{note}"
    );
}

#[tokio::test]
async fn unknown_plans_bad_ids_and_missing_scopes_are_refused() {
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();
    for route in ["checkpoint", "log-key"] {
        assert_problem(
            &daemon.get_json(&format!("/api/plans/{plan}/{route}")).await,
            404,
        );
        assert_problem(
            &daemon
                .get_json(&format!("/api/plans/not-a-uuid/{route}"))
                .await,
            400,
        );
    }
    fill(&daemon, plan, 1).await;
    // A misspelt or unknown parameter is refused, never ignored (a reader
    // asking for the witnessed bundle must not get the bare note instead).
    for query in ["witnesed=1", "witnessed=2", "witnessed=1&size=3"] {
        let kind = assert_problem(
            &daemon
                .get_json(&format!("/api/plans/{plan}/checkpoint?{query}"))
                .await,
            400,
        );
        assert!(kind.ends_with("invalid-query"), "{query}: {kind}");
    }

    let reader = daemon
        .admin_ok(&["tokens", "create", "--scope", "read", "--name", "reader"])
        .await
        .trim()
        .to_string();
    let writer = daemon
        .admin_ok(&["tokens", "create", "--scope", "append", "--name", "writer"])
        .await
        .trim()
        .to_string();
    for path in [
        format!("/api/plans/{plan}/checkpoint"),
        format!("/api/plans/{plan}/log-key"),
        "/api/v1/log/keys".to_string(),
    ] {
        assert_problem(&daemon.get_json(&path).await, 401);
        assert_problem(&daemon.get_as(&path, &writer).await, 403);
        assert_eq!(daemon.get_as(&path, &reader).await.status, 200, "{path}");
    }
}

#[tokio::test]
async fn a_rotated_log_key_is_listed_as_retired_and_old_checkpoints_still_verify() {
    let mut daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();
    fill(&daemon, plan, 2).await;
    let before = daemon.get_json("/api/v1/log/keys").await.json;
    let old_vkey = before["current"]["vkey"].as_str().unwrap().to_string();
    let old_note = text(&daemon, &format!("/api/plans/{plan}/checkpoint")).await;

    let out = daemon.admin_json(&["keys", "rotate-log"]).await;
    assert_eq!(out["old_vkey"], old_vkey.as_str(), "{out}");
    let new_vkey = out["new_vkey"].as_str().unwrap().to_string();
    assert_ne!(new_vkey, old_vkey);
    assert!(out["recorded_at_system_seq"].as_u64().is_some(), "{out}");

    let after = daemon.get_json("/api/v1/log/keys").await.json;
    assert_eq!(after["current"]["vkey"], new_vkey.as_str());
    let retired = after["retired"].as_array().unwrap();
    assert_eq!(retired.len(), 1, "{after}");
    assert_eq!(retired[0]["vkey"], old_vkey.as_str());
    assert_eq!(retired[0]["from"], before["current"]["from"]);
    assert_eq!(retired[0]["until"], after["current"]["from"]);

    // The old checkpoint verifies with the retired vkey; the new one (same
    // size, a fresh signature, not the cached note) with the new vkey only.
    let old_plan_key = plan_verifier(&Verifier::parse(&old_vkey).unwrap(), &plan).unwrap();
    let new_plan_key = plan_verifier(&Verifier::parse(&new_vkey).unwrap(), &plan).unwrap();
    verify_checkpoint(old_note.as_bytes(), &old_plan_key).unwrap();
    assert!(verify_checkpoint(old_note.as_bytes(), &new_plan_key).is_err());
    let new_note = text(&daemon, &format!("/api/plans/{plan}/checkpoint")).await;
    let checkpoint = verify_checkpoint(new_note.as_bytes(), &new_plan_key).unwrap();
    assert_eq!(checkpoint.size, 2);
    assert!(verify_checkpoint(new_note.as_bytes(), &old_plan_key).is_err());
    assert_eq!(
        text(&daemon, &format!("/api/plans/{plan}/log-key")).await,
        new_plan_key.to_vkey()
    );

    // The instance document binds the new key.
    let doc = daemon.get_json("/api/v1/federation/instance").await.json;
    assert_eq!(doc["logKey"], new_vkey.as_str());
    let rsa = logbook_federation::identity::public_key_from_pem(doc["publicKey"].as_str().unwrap())
        .unwrap();
    assert!(logbook_federation::message::verify_log_key(
        &rsa,
        doc["instanceId"].as_str().unwrap(),
        &new_vkey,
        doc["logKeySignature"].as_str().unwrap()
    ));

    // The rotation is in the system journal, and survives a restart.
    let system = daemon
        .all_events("00000000-0000-0000-0000-000000000000")
        .await;
    assert!(
        system.iter().any(|e| e["type"] == "system.key_rotated"
            && e["payload"]["key"] == "log"
            && e["payload"]["new_vkey"] == new_vkey.as_str()),
        "{system:?}"
    );
    daemon.restart();
    assert_eq!(daemon.get_json("/api/v1/log/keys").await.json, after);
}
