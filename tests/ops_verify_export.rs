//! `logbook verify --export FILE`: an export verifies offline, and a one-byte
//! edit at seq K is reported at K with a non-zero exit.

mod ops_common;

use std::process::Command;

use ops_common::{Ops, SECRET, fill, plan, run};

fn verify(file: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
    let mut command = Command::new(ops_common::bin());
    command
        .arg("verify")
        .arg("--export")
        .arg(file)
        .args(args)
        .env_remove("LOGBOOK_HMAC_SECRET")
        .env_remove("EVENT_BUS_HMAC_SECRET")
        .env_remove("SESSION_SECRET");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = run(command);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn export_verifies_offline_and_a_one_byte_edit_is_located() {
    let ops = Ops::start();
    let p = plan();
    fill(&ops, &p, 6);
    let export = ops.admin_ok(&["export", &p]);
    let head = ops.admin_json(&["plans", "show", &p])["head_signature"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plan.ndjson");
    std::fs::write(&file, &export).unwrap();
    drop(ops); // no daemon from here on

    let (ok, stdout, stderr) = verify(&file, &[("LOGBOOK_HMAC_SECRET", SECRET)], &[]);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("6 events") && stdout.contains(&head),
        "{stdout}"
    );

    // A named variable works too; a wrong secret breaks at seq 1.
    let (ok, _, _) = verify(&file, &[("MY_KEY", SECRET)], &["--key-env", "MY_KEY"]);
    assert!(ok);
    let (ok, stdout, _) = verify(&file, &[("LOGBOOK_HMAC_SECRET", "wrong")], &[]);
    assert!(!ok);
    assert!(
        stdout.contains("broken at seq 1") && stdout.contains("signature"),
        "{stdout}"
    );
    let (ok, _, stderr) = verify(&file, &[], &[]);
    assert!(!ok && stderr.contains("no HMAC secret"), "{stderr}");

    // One byte changed inside the payload of seq K: "event number 3" → "event number 8".
    let k = 4u64;
    let mut bytes = export.clone().into_bytes();
    let line_start: usize = export
        .lines()
        .take((k - 1) as usize)
        .map(|l| l.len() + 1)
        .sum();
    let line = export.lines().nth((k - 1) as usize).unwrap();
    assert!(line.contains(&format!("\"seq\":{k}")));
    let offset = line_start + line.find("event number 3").unwrap() + "event number ".len();
    bytes[offset] = b'8';
    let tampered = dir.path().join("tampered.ndjson");
    std::fs::write(&tampered, &bytes).unwrap();
    let (ok, stdout, _) = verify(&tampered, &[("LOGBOOK_HMAC_SECRET", SECRET)], &[]);
    assert!(!ok, "a tampered export must fail: {stdout}");
    assert!(stdout.contains(&format!("broken at seq {k}")), "{stdout}");
    assert!(stdout.contains("payload_hash"), "{stdout}");

    // A byte that breaks the JSON itself is also located at K.
    let mut broken = export.clone().into_bytes();
    broken[line_start] = b'[';
    std::fs::write(&tampered, &broken).unwrap();
    let (ok, stdout, _) = verify(&tampered, &[("LOGBOOK_HMAC_SECRET", SECRET)], &[]);
    assert!(!ok);
    assert!(stdout.contains(&format!("broken at seq {k}")), "{stdout}");
}
