//! `logbook admin keys rotate-hmac`: new events use a new key id, old events
//! still verify (online, after a restart, and offline with both secrets).

mod common;

use std::path::Path;

use common::{Daemon, DaemonOpts, fill, logbook, new_plan, run};
use serde_json::Value;

/// `logbook verify --export FILE` with each `(NAME, secret)` passed as
/// `--key-env NAME`; returns success and stdout.
async fn verify_offline(file: &Path, keys: &[(&str, &str)]) -> (bool, String) {
    let mut command = logbook();
    command
        .arg("verify")
        .arg("--export")
        .arg(file)
        .env_remove("LOGBOOK_HMAC_SECRET");
    for (name, secret) in keys {
        command.arg("--key-env").arg(name).env(name, secret.trim());
    }
    let out = run(command).await;
    (out.success(), out.stdout)
}

#[tokio::test]
async fn rotation_signs_new_events_with_a_new_key_and_old_ones_still_verify() {
    // No secret in the environment: the daemon generates data/hmac.key.
    let mut daemon = Daemon::start(DaemonOpts::default().unset_env("LOGBOOK_HMAC_SECRET"));
    let p = new_plan().to_string();
    fill(&daemon, &p, 3).await;
    let old_id = daemon.admin_json(&["status"]).await["signing_key_id"]
        .as_str()
        .unwrap()
        .to_string();
    let old_secret = std::fs::read_to_string(daemon.data_dir().join("hmac.key")).unwrap();

    let rotated = daemon.admin_json(&["keys", "rotate-hmac"]).await;
    assert_eq!(rotated["old_key_id"], old_id.as_str());
    let new_id = rotated["new_key_id"].as_str().unwrap().to_string();
    assert_ne!(new_id, old_id);
    assert!(
        daemon
            .data_dir()
            .join("hmac-retired")
            .join(format!("{old_id}.key"))
            .exists()
    );

    fill(&daemon, &p, 2).await;
    let export = daemon.admin_ok(&["export", &p]).await;
    let ids: Vec<String> = export
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["key_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        ids,
        [&old_id, &old_id, &old_id, &new_id, &new_id].map(String::clone)
    );
    assert_eq!(
        daemon.admin_json(&["verify", &p]).await["chain_valid"],
        true
    );
    let resp = daemon
        .get_json(&format!("/api/plans/{p}/events?verify=1"))
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json["chain_valid"], true);
    // The rotation is on record in the system journal.
    assert!(
        daemon
            .admin_ok(&["verify", "--all"])
            .await
            .contains("0 broken")
    );

    // Offline: both secrets needed; one alone breaks where the other key starts.
    let new_secret = std::fs::read_to_string(daemon.data_dir().join("hmac.key")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.ndjson");
    std::fs::write(&file, &export).unwrap();
    let (ok, stdout) = verify_offline(&file, &[("OLD", &old_secret), ("NEW", &new_secret)]).await;
    assert!(ok, "{stdout}");
    let (ok, stdout) = verify_offline(&file, &[("OLD", &old_secret)]).await;
    assert!(!ok && stdout.contains("broken at seq 4"), "{stdout}");

    // After a restart the same keys are loaded.
    daemon.restart();
    assert_eq!(
        daemon.admin_json(&["status"]).await["signing_key_id"],
        new_id.as_str()
    );
    assert_eq!(
        daemon.admin_json(&["verify", &p]).await["chain_valid"],
        true
    );
}

#[tokio::test]
async fn an_environment_key_is_not_rotated() {
    let daemon = Daemon::start(DaemonOpts::default());
    let out = daemon.admin(&["keys", "rotate-hmac"]).await;
    assert!(!out.success());
    assert!(out.stderr.contains("LOGBOOK_HMAC_SECRET"));
}

/// A short secret in the environment is a guessable key: the daemon refuses
/// to start, and says how to make a good one (without echoing the secret).
#[tokio::test]
async fn a_short_environment_secret_is_refused_at_startup() {
    for var in [
        "LOGBOOK_HMAC_SECRET",
        "EVENT_BUS_HMAC_SECRET",
        "SESSION_SECRET",
    ] {
        let mut opts = DaemonOpts::default().env(var, "a-31-byte-secret-is-too-short!!");
        if var != "LOGBOOK_HMAC_SECRET" {
            // Otherwise the harness's own (long) secret would win.
            opts = opts.unset_env("LOGBOOK_HMAC_SECRET");
        }
        let (status, log) = common::run_expecting_exit(opts);
        assert!(!status.success(), "{var}: {status}");
        assert!(
            log.contains(&format!("${var} is 31 bytes")) && log.contains("at least 32 bytes"),
            "{var}: {log}"
        );
        assert!(log.contains("head -c 32 /dev/urandom | base64"), "{log}");
        assert!(
            !log.contains("too-short!!"),
            "the secret is never printed: {log}"
        );
    }
}

/// Opens the stopped daemon's store as an attacker holding only the retired
/// `secret` would: the writer signs with it (and dates events now). Appends
/// one event to each of `plans`.
async fn forge_with(daemon: &Daemon, secret: &str, plans: &[uuid::Uuid], rotation_record: bool) {
    use logbook_journal::chain::CanonicalPayload;
    use logbook_journal::store::{AppendRequest, Store};
    let keyring = std::sync::Arc::new(logbook_journal::keys::Keyring::from_secret(
        secret.trim().as_bytes().to_vec(),
    ));
    let (store, writer) = Store::open(
        &daemon.db_path(),
        keyring,
        logbook_journal::fanout::fanout(),
    )
    .expect("opening the store offline");
    for plan in plans {
        store
            .append(AppendRequest {
                plan_id: *plan,
                event_type: "ledger.transaction".into(),
                actor: Some("mallory".into()),
                payload: CanonicalPayload::new(&serde_json::json!({"amount": 1000000})),
                expected_seq: None,
                idempotency: None,
            })
            .await
            .expect("forged append");
    }
    if rotation_record {
        // A later record of the key's own retirement, signed with it.
        let old_key_id = logbook_journal::keys::key_id(secret.trim().as_bytes());
        store
            .append(AppendRequest {
                plan_id: logbook_journal::store::admin::SYSTEM_PLAN,
                event_type: "system.key_rotated".into(),
                actor: Some("mallory".into()),
                payload: CanonicalPayload::new(&serde_json::json!({ "old_key_id": old_key_id })),
                expected_seq: None,
                idempotency: None,
            })
            .await
            .expect("forged record");
    }
    drop(store);
    tokio::task::spawn_blocking(move || writer.shutdown())
        .await
        .unwrap();
}

/// A retired key verifies only the events the system journal's record of
/// its rotation allows: those dated up to the rotation. Events forged with
/// it afterwards, in a new plan or at the end of an old one, are broken;
/// the legitimate old events still verify, after a restart too. A record of
/// a later retirement forged with the same key (to widen its window) is
/// not believed.
#[tokio::test]
async fn a_retired_key_does_not_verify_events_signed_after_its_retirement() {
    retired_key_forgery(false).await;
}

#[tokio::test]
async fn a_forged_record_of_its_retirement_does_not_widen_a_retired_keys_window() {
    retired_key_forgery(true).await;
}

async fn retired_key_forgery(rotation_record: bool) {
    let mut daemon = Daemon::start(DaemonOpts::default().unset_env("LOGBOOK_HMAC_SECRET"));
    let (old_only, mixed, forged) = (new_plan(), new_plan(), new_plan());
    fill(&daemon, old_only, 2).await;
    fill(&daemon, mixed, 2).await;
    let old_secret = std::fs::read_to_string(daemon.data_dir().join("hmac.key")).unwrap();
    daemon.admin_json(&["keys", "rotate-hmac"]).await;
    fill(&daemon, mixed, 1).await;
    let before = daemon.admin_ok(&["verify", "--all"]).await;
    assert!(before.contains("0 broken"), "{before}");

    assert!(daemon.stop().success());
    forge_with(
        &daemon,
        &old_secret,
        &[old_only, mixed, forged],
        rotation_record,
    )
    .await;
    daemon.restart();

    // Legit old events verify; the forged ones after them do not.
    for (plan, broken_at) in [(old_only, 3), (mixed, 4), (forged, 1)] {
        let report = daemon.verify(plan).await;
        assert_eq!(report["chain_valid"], false, "{plan}: {report}");
        assert_eq!(report["broken_at"], broken_at, "{plan}: {report}");
        assert_eq!(report["broken_reason"], "signature", "{plan}: {report}");
        assert_eq!(report["verified_count"], broken_at - 1, "{report}");
        let admin = daemon.admin(&["verify", &plan.to_string(), "--json"]).await;
        assert!(!admin.success(), "{}", admin.stdout);
        assert_eq!(admin.json()["broken_at"], broken_at, "{}", admin.stdout);
    }
}

/// A genuine later record of a rotation (here the log key's, signed with
/// the new HMAC key) with its payload text rewritten to name the retired
/// HMAC key: its signature still verifies (it covers the payload's hash,
/// not the text), but the text no longer matches the hash, so it does not
/// widen the retired key's window.
#[tokio::test]
async fn a_rewritten_rotation_record_does_not_widen_a_retired_keys_window() {
    let mut daemon = Daemon::start(DaemonOpts::default().unset_env("LOGBOOK_HMAC_SECRET"));
    let forged = new_plan();
    let old_secret = std::fs::read_to_string(daemon.data_dir().join("hmac.key")).unwrap();
    daemon.admin_json(&["keys", "rotate-hmac"]).await;
    // Forged after the retirement, before the record to be rewritten.
    assert!(daemon.stop().success());
    forge_with(&daemon, &old_secret, &[forged], false).await;
    daemon.restart();
    daemon.admin_json(&["keys", "rotate-log"]).await;
    assert!(daemon.stop().success());
    let old_key_id = logbook_journal::keys::key_id(old_secret.trim().as_bytes());
    common::with_offline_store(&daemon, move |store| {
        let system = logbook_journal::store::admin::SYSTEM_PLAN;
        let events = store.plan_events_after(&system, 0, 1000).unwrap();
        let mut last = events
            .into_iter()
            .rev()
            .find(|e| e.event_type == "system.key_rotated")
            .expect("the log key's rotation record");
        last.payload =
            serde_json::value::RawValue::from_string(format!(r#"{{"old_key_id":"{old_key_id}"}}"#))
                .unwrap();
        store.overwrite_event_unchecked(&last).unwrap();
    })
    .await;
    daemon.restart();
    let report = daemon.verify(forged).await;
    assert_eq!(report["chain_valid"], false, "{report}");
    assert_eq!(report["broken_reason"], "signature", "{report}");
}
