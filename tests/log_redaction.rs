//! Redaction: `logbook admin redact PLAN SEQ --reason TEXT` erases one
//! payload. The payload is gone from every read, stream, export and backup
//! (and, after `admin compact`, from every file of the data dir); the chain,
//! the leaves and the checkpoint still verify and report the event as
//! redacted; the system journal records who, when and why. Also the
//! refusals, and `[retention] payload_max_age_days`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Daemon, DaemonOpts, SSE_READ_TIMEOUT, TEST_SECRET, fill, logbook, new_plan, run};
use serde_json::{Value, json};

const SYSTEM_PLAN: &str = "00000000-0000-0000-0000-000000000000";

/// Whether `needle` occurs in any file under `dir`.
fn bytes_in_dir(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            hits.extend(bytes_in_dir(&path, needle));
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            hits.push(path.display().to_string());
        }
    }
    hits
}

async fn system_events(daemon: &Daemon) -> Vec<Value> {
    daemon.all_events(SYSTEM_PLAN).await
}

/// `logbook verify ARGS` with no HMAC secret in the environment but `env`.
async fn offline_verify(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = logbook();
    command
        .arg("verify")
        .args(args)
        .env_remove("LOGBOOK_HMAC_SECRET")
        .env_remove("EVENT_BUS_HMAC_SECRET")
        .env_remove("SESSION_SECRET");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = run(command).await;
    (out.status.code(), format!("{}{}", out.stdout, out.stderr))
}

#[tokio::test]
async fn a_redacted_payload_is_gone_everywhere_and_history_still_verifies() {
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan().to_string();
    let marker = format!("secret-marker-{}", uuid::Uuid::new_v4().simple());
    fill(&daemon, &plan, 2).await;
    let doomed = daemon
        .append_ok(
            &plan,
            json!({"type": "step.completed", "actor": "tester", "payload": {"ssn": marker}}),
        )
        .await;
    fill(&daemon, &plan, 2).await;
    let before = daemon.all_events(&plan).await;
    let checkpoint_before = daemon
        .get(&format!("/api/plans/{plan}/checkpoint"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let inclusion = format!("/api/plans/{plan}/events/3/inclusion?tree_size=5");
    let leaf_before = daemon.get_json(&inclusion).await.json["leaf_hash"].clone();
    assert!(leaf_before.is_string(), "{leaf_before}");
    // A live stream open across the redaction.
    let mut live = daemon
        .sse_ok(&format!("/api/plans/{plan}/events/stream?after=5"), &[])
        .await;

    let out = daemon
        .admin_json(&["redact", &plan, "3", "--reason", "GDPR art. 17, ticket #42"])
        .await;
    assert_eq!(out["redacted"], true, "{out}");
    assert_eq!(out["seq"], 3);

    // Every read: the page, with payload null and redacted true, all else equal.
    let after = daemon.all_events(&plan).await;
    assert_eq!(after.len(), 5);
    for (b, a) in before.iter().zip(&after) {
        if a["seq"] == 3 {
            assert_eq!(a["payload"], Value::Null, "{a}");
            assert_eq!(a["redacted"], true, "{a}");
            for field in ["id", "payload_hash", "prev_hash", "signature", "created_at"] {
                assert_eq!(a[field], b[field], "{field} is kept");
            }
            assert_eq!(a["payload_hash"], doomed["payload_hash"]);
        } else {
            assert_eq!(a, b, "other events are unchanged");
            assert!(a.get("redacted").is_none(), "shown only when true: {a}");
        }
    }

    // SSE replay from the start.
    let mut replay = daemon
        .sse_ok(&format!("/api/plans/{plan}/events/stream?after=0"), &[])
        .await;
    let mut seen = 0;
    while seen < 5 {
        let frame = replay.next_frame(SSE_READ_TIMEOUT).await.unwrap().unwrap();
        if frame.is_comment_only() {
            continue;
        }
        seen += 1;
        assert!(!frame.data.contains(&marker), "{}", frame.data);
        let event: Value = serde_json::from_str(&frame.data).unwrap();
        assert_eq!(event["redacted"] == true, event["seq"] == 3, "{event}");
    }
    // The live stream goes on after the redaction without the payload.
    daemon
        .append_ok(
            &plan,
            json!({"type": "step.completed", "actor": "tester", "payload": {"n": 6}}),
        )
        .await;
    let frame = loop {
        let frame = live.next_frame(SSE_READ_TIMEOUT).await.unwrap().unwrap();
        if !frame.is_comment_only() {
            break frame;
        }
    };
    assert_eq!(frame.id.as_deref(), Some("6"));

    // verify=1 (the page holding it) and verify=full pass and count it.
    for query in ["verify=1&after=2&limit=2", "verify=full&limit=1"] {
        let v = daemon
            .get_json(&format!("/api/plans/{plan}/events?{query}"))
            .await
            .json;
        assert_eq!(v["chain_valid"], true, "{query}: {v}");
        assert_eq!(v["redacted_count"], 1, "{query}: {v}");
    }
    // The leaf did not change.
    let leaf_after = daemon.get_json(&inclusion).await.json["leaf_hash"].clone();
    assert_eq!(leaf_after, leaf_before);
    let dir = tempfile::tempdir().unwrap();
    let (export, checkpoint) = (dir.path().join("p.ndjson"), dir.path().join("p.cp"));
    let exported = daemon
        .admin(&[
            "export",
            &plan,
            "--checkpoint",
            checkpoint.to_str().unwrap(),
        ])
        .await
        .ok("export");
    assert!(!exported.contains(&marker), "{exported}");
    let line3: Value = serde_json::from_str(exported.lines().nth(2).unwrap()).unwrap();
    assert_eq!(line3["payload"], Value::Null);
    assert_eq!(line3["redacted"], true);
    std::fs::write(&export, &exported).unwrap();
    // The checkpoint signed before the redaction still covers the export.
    let old_checkpoint = dir.path().join("before.cp");
    std::fs::write(&old_checkpoint, &checkpoint_before).unwrap();

    // admin verify reports it, and passes.
    let text = daemon.admin_ok(&["verify", &plan]).await;
    assert!(
        text.contains(": ok,") && text.contains("redacted: 1"),
        "{text}"
    );

    // Offline: with the vkey and checkpoint only, and with the HMAC key.
    let vkey = daemon.get_json("/api/v1/log/keys").await.json["current"]["vkey"]
        .as_str()
        .unwrap()
        .to_string();
    let (e, c) = (export.to_str().unwrap(), checkpoint.to_str().unwrap());
    let (code, text) =
        offline_verify(&["--export", e, "--log-key", &vkey, "--checkpoint", c], &[]).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("redacted: 1 ") && text.contains("log): seq 3\n"),
        "{text}"
    );
    assert!(text.contains("ok: the first 6 events"), "{text}");
    let old = old_checkpoint.to_str().unwrap();
    // Event 6 is after that checkpoint: the HMAC key covers it.
    let (code, text) = offline_verify(
        &[
            "--export",
            e,
            "--log-key",
            &vkey,
            "--checkpoint",
            old,
            "--key-env",
            "LOGBOOK_HMAC_SECRET",
        ],
        &[("LOGBOOK_HMAC_SECRET", TEST_SECRET)],
    )
    .await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("ok: the first 5 events"), "{text}");
    let (code, text) =
        offline_verify(&["--export", e], &[("LOGBOOK_HMAC_SECRET", TEST_SECRET)]).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("redacted: 1 ") && text.contains("log): seq 3\n"),
        "{text}"
    );
    // Putting a payload back under the redacted flag is caught.
    let forged = exported.replacen("\"payload\":null", "\"payload\":{\"ssn\":\"x\"}", 1);
    let forged_file = dir.path().join("forged.ndjson");
    std::fs::write(&forged_file, forged).unwrap();
    let (code, text) = offline_verify(
        &["--export", forged_file.to_str().unwrap()],
        &[("LOGBOOK_HMAC_SECRET", TEST_SECRET)],
    )
    .await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("broken at seq 3"), "{text}");

    // The system journal holds the record: who, when, plan, seq, reason.
    let record = system_events(&daemon)
        .await
        .into_iter()
        .rfind(|e| e["type"] == "system.event_redacted")
        .expect("a redaction record");
    assert_eq!(record["payload"]["plan_id"], plan.as_str());
    assert_eq!(record["payload"]["seq"], 3);
    assert_eq!(record["payload"]["reason"], "GDPR art. 17, ticket #42");
    assert_eq!(
        record["payload"]["by"]["uid"],
        u64::from(std::os::unix::fs::MetadataExt::uid(
            &std::fs::metadata(daemon.data_dir()).unwrap()
        )),
        "{record}"
    );
    assert_eq!(record["seq"], out["record"]["seq"]);
    assert!(daemon.verify(SYSTEM_PLAN).await["chain_valid"] == true);

    // A backup holds no trace of it.
    let backup = dir.path().join("backup.redb");
    daemon.admin_ok(&["backup", backup.to_str().unwrap()]).await;
    assert!(bytes_in_dir(dir.path(), marker.as_bytes()).is_empty());

    // After compact, no file of the data dir holds the bytes.
    let compacted = daemon.admin_json(&["compact"]).await;
    assert!(compacted["rows"].as_u64().unwrap() > 0, "{compacted}");
    let hits = bytes_in_dir(&daemon.data_dir(), marker.as_bytes());
    assert!(hits.is_empty(), "the payload lingers in {hits:?}");
    // And the store works on: reads, appends, verification, a restart.
    assert_eq!(daemon.all_events(&plan).await[2]["redacted"], true);
    fill(&daemon, &plan, 1).await;
    assert_eq!(daemon.verify(&plan).await["chain_valid"], true);
    let mut daemon = daemon;
    daemon.restart();
    assert_eq!(daemon.all_events(&plan).await.len(), 7);
    assert_eq!(daemon.verify(&plan).await["redacted_count"], 1);
}

/// Runs `admin redact` expecting a refusal; returns its stderr.
async fn refused(daemon: &Daemon, args: &[&str], status: u16) -> String {
    let out = daemon.admin(&[&["redact"], args].concat()).await;
    assert!(!out.success(), "{args:?} succeeded: {}", out.stdout);
    assert!(
        out.stderr.contains(&format!("({status})")),
        "{args:?}: expected {status}: {}",
        out.stderr
    );
    out.stderr
}

#[tokio::test]
async fn bad_redactions_are_refused_and_change_nothing() {
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan().to_string();
    fill(&daemon, &plan, 2).await;
    let gone = new_plan().to_string();
    fill(&daemon, &gone, 1).await;
    daemon.admin_ok(&["plans", "delete", "--yes", &gone]).await;
    daemon
        .admin_ok(&["redact", &plan, "1", "--reason", "first"])
        .await;
    let system_before = system_events(&daemon).await;
    let events_before = daemon.all_events(&plan).await;

    let unknown = new_plan().to_string();
    refused(&daemon, &[&unknown, "1", "--reason", "x"], 404).await;
    refused(&daemon, &[&plan, "3", "--reason", "x"], 404).await;
    refused(&daemon, &[&gone, "1", "--reason", "x"], 410).await;
    let again = refused(&daemon, &[&plan, "1", "--reason", "x"], 409).await;
    assert!(again.contains("redacted"), "{again}");
    refused(&daemon, &[SYSTEM_PLAN, "1", "--reason", "x"], 403).await;
    refused(&daemon, &[&plan, "2", "--reason", ""], 422).await;
    refused(&daemon, &[&plan, "2", "--reason", "   "], 422).await;
    refused(&daemon, &[&plan, "2", "--reason", "two\nlines"], 422).await;
    let long = "x".repeat(1025);
    refused(&daemon, &[&plan, "2", "--reason", &long], 422).await;
    refused(&daemon, &["not-a-plan", "2", "--reason", "x"], 400).await;
    refused(&daemon, &[&plan, "0", "--reason", "x"], 400).await;

    assert_eq!(system_events(&daemon).await, system_before);
    assert_eq!(daemon.all_events(&plan).await, events_before);
    // 1024 bytes is still a reason.
    daemon
        .admin_ok(&["redact", &plan, "2", "--reason", &"y".repeat(1024)])
        .await;
}

#[tokio::test]
async fn retention_redacts_payloads_older_than_the_configured_age() {
    let mut daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan().to_string();
    fill(&daemon, &plan, 3).await;
    // 0.000001 days is 86.4 ms: wait until the last event is older than
    // that, so the first pass after the restart must find all three.
    let last = daemon.all_events(&plan).await[2]["created_at"].clone();
    let last = logbook_journal::event::Timestamp::parse(last.as_str().unwrap()).unwrap();
    while logbook_journal::event::Timestamp::now().millis() <= last.millis() + 100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let opts = DaemonOpts::default().replace(
        "payload_max_age_days = 0\n",
        "payload_max_age_days = 0.000001\n",
    );
    daemon.restart_with(opts);
    assert!(
        daemon
            .wait_log(
                &["retention pass redacted old payloads"],
                Duration::from_secs(30)
            )
            .await,
        "{}",
        daemon.log_text()
    );
    let events = daemon.all_events(&plan).await;
    assert!(events.iter().all(|e| e["redacted"] == true), "{events:?}");
    let records: Vec<Value> = system_events(&daemon)
        .await
        .into_iter()
        .filter(|e| e["type"] == "system.event_redacted")
        .collect();
    assert_eq!(records.len(), 3, "{records:?}");
    for record in &records {
        assert_eq!(record["payload"]["by"], "retention");
        assert_eq!(
            record["payload"]["reason"],
            "retention: older than 0.000001 days"
        );
        assert_eq!(record["actor"], "logbook-retention");
    }
    let v = daemon.verify(&plan).await;
    assert_eq!(v["chain_valid"], true, "{v}");
    assert_eq!(v["redacted_count"], 3, "{v}");
    // The system journal's own events keep their payloads.
    assert!(records.iter().all(|r| r.get("redacted").is_none()));
}
