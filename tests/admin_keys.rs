//! `logbook admin keys rotate-hmac`: new events use a new key id, old events
//! still verify (online, after a restart, and offline with both secrets).

mod ops_common;

use std::process::Command;

use ops_common::{Ops, config_text, fill, plan, run};
use serde_json::Value;

#[test]
fn rotation_signs_new_events_with_a_new_key_and_old_ones_still_verify() {
    let ops = Ops::launch(
        tempfile::tempdir().unwrap(),
        &config_text(&[], ""),
        Some("info"),
        None,
    );
    let p = plan();
    fill(&ops, &p, 3);
    let old_id = ops.admin_json(&["status"])["signing_key_id"]
        .as_str()
        .unwrap()
        .to_string();
    let old_secret = std::fs::read_to_string(ops.data_dir().join("hmac.key")).unwrap();

    let rotated = ops.admin_json(&["keys", "rotate-hmac"]);
    assert_eq!(rotated["old_key_id"], old_id.as_str());
    let new_id = rotated["new_key_id"].as_str().unwrap().to_string();
    assert_ne!(new_id, old_id);
    assert!(
        ops.data_dir()
            .join("hmac-retired")
            .join(format!("{old_id}.key"))
            .exists()
    );

    fill(&ops, &p, 2);
    let export = ops.admin_ok(&["export", &p]);
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
    assert_eq!(ops.admin_json(&["verify", &p])["chain_valid"], true);
    let (status, body) = ops.http(
        "GET",
        &format!("/api/plans/{p}/events?verify=1"),
        None,
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["chain_valid"],
        true
    );
    // The rotation is on record in the system journal.
    assert!(ops.admin_ok(&["verify", "--all"]).contains("0 broken"));

    // Offline: both secrets needed; one alone breaks where the other key starts.
    let new_secret = std::fs::read_to_string(ops.data_dir().join("hmac.key")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.ndjson");
    std::fs::write(&file, &export).unwrap();
    let offline = |vars: &[(&str, &str)]| {
        let mut command = Command::new(ops_common::bin());
        command
            .arg("verify")
            .arg("--export")
            .arg(&file)
            .env_remove("LOGBOOK_HMAC_SECRET");
        for (k, v) in vars {
            command.arg("--key-env").arg(k).env(k, v.trim());
        }
        let out = run(command);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, stdout) = offline(&[("OLD", &old_secret), ("NEW", &new_secret)]);
    assert!(ok, "{stdout}");
    let (ok, stdout) = offline(&[("OLD", &old_secret)]);
    assert!(!ok && stdout.contains("broken at seq 4"), "{stdout}");

    // After a restart the same keys are loaded.
    let mut ops = ops;
    assert!(ops.stop().success());
    let dir = std::mem::replace(&mut ops.dir, tempfile::tempdir().unwrap());
    let ops = Ops::launch(dir, &config_text(&[], ""), Some("info"), None);
    assert_eq!(
        ops.admin_json(&["status"])["signing_key_id"],
        new_id.as_str()
    );
    assert_eq!(ops.admin_json(&["verify", &p])["chain_valid"], true);
}

#[test]
fn an_environment_key_is_not_rotated() {
    let ops = Ops::start();
    let out = ops.admin(&["keys", "rotate-hmac"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("LOGBOOK_HMAC_SECRET"));
}
