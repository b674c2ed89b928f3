//! The event registry and the per-plan hash chain: linking, isolation between
//! plans, concurrent appends, and detection of every kind of tampering.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::{
    Daemon, DaemonOpts, assert_chain_valid, assert_linked_chain, assert_problem, event_body,
    new_plan, with_offline_store,
};
use logbook_journal::Event;
use serde_json::{Value, json};
use uuid::Uuid;

#[tokio::test]
async fn registry_lists_the_15_builtin_types_and_config_additions() {
    let daemon = Daemon::start(DaemonOpts::default().config(
        "[[registry.types]]\nname = \"audit.note\"\ndescription = \"A note added by an auditor.\"",
    ));
    let resp = daemon.get_json("/api/event-types").await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.json["strict"], true);
    let types = resp.json["types"].as_array().expect("types array");

    let builtin: Vec<&str> = types
        .iter()
        .filter(|t| t["builtin"] == true)
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = logbook_journal::registry::BUILTIN_TYPES
        .iter()
        .map(|(name, _)| *name)
        .collect();
    assert_eq!(builtin, expected, "built-in types, in registry order");
    assert_eq!(builtin.len(), 15);
    let unique: BTreeSet<&str> = types.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(unique.len(), types.len(), "type names are unique");
    for t in types {
        let name = t["name"].as_str().unwrap();
        logbook_journal::registry::validate_type_name(name, 128)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            t["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{name} has a description"
        );
    }
    let added: Vec<&Value> = types.iter().filter(|t| t["name"] == "audit.note").collect();
    assert_eq!(added.len(), 1, "the config's type is listed");
    assert_eq!(added[0]["builtin"], false);
    assert_eq!(types.len(), 16);

    // Every listed type is accepted; an unlisted one is not (strict).
    let plan = new_plan();
    for (i, t) in types.iter().enumerate() {
        daemon
            .append_ok(plan, event_body(t["name"].as_str().unwrap(), i as u64))
            .await;
    }
    let resp = daemon.append(plan, json!({"type": "audit.unlisted"})).await;
    assert_eq!(
        assert_problem(&resp, 422),
        "urn:logbook:problem:unknown-type"
    );
    assert_eq!(daemon.head(plan).await.unwrap()["head_seq"], 16);
}

#[tokio::test]
async fn non_strict_registry_accepts_unregistered_types() {
    let daemon = Daemon::start(DaemonOpts::default().replace("strict = true", "strict = false"));
    let resp = daemon.get_json("/api/event-types").await;
    assert_eq!(resp.json["strict"], false);
    let plan = new_plan();
    let event = daemon
        .append_ok(plan, json!({"type": "custom.thing_happened"}))
        .await;
    assert_eq!(event["type"], "custom.thing_happened");
    // Syntax is still enforced.
    let resp = daemon.append(plan, json!({"type": "Custom.Thing"})).await;
    assert_problem(&resp, 422);
}

#[tokio::test]
async fn first_event_has_null_prev_hash_and_every_field() {
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();
    let event = daemon
        .append_ok(
            plan,
            json!({"type": "plan.created", "actor": "alice", "payload": {"b": 2, "a": [1, "x"]}}),
        )
        .await;
    assert_eq!(event["prev_hash"], Value::Null, "{event}");
    assert_eq!(event["seq"], 1);
    assert_eq!(event["plan_id"], plan.to_string());
    assert_eq!(event["type"], "plan.created");
    assert_eq!(event["actor"], "alice");
    assert_eq!(event["payload"], json!({"a": [1, "x"], "b": 2}));
    let id = Uuid::parse_str(event["id"].as_str().unwrap()).unwrap();
    assert_eq!(id.get_version_num(), 7, "id is a UUIDv7");
    for field in ["payload_hash", "signature"] {
        let hex = event[field].as_str().unwrap();
        assert_eq!(hex.len(), 64, "{field}");
        assert!(
            hex.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{field} is lowercase hex"
        );
    }
    assert_eq!(
        event["key_id"],
        logbook_journal::keys::key_id(common::TEST_SECRET.as_bytes())
    );
    let created_at = event["created_at"].as_str().unwrap();
    assert!(
        logbook_journal::event::Timestamp::parse(created_at).is_some(),
        "created_at {created_at}"
    );
    assert!(
        created_at.ends_with('Z') && created_at.len() == 24,
        "created_at {created_at}"
    );

    // An omitted actor and payload become null and {}.
    let second = daemon
        .append_ok(plan, json!({"type": "plan.submitted"}))
        .await;
    assert_eq!(second["actor"], Value::Null);
    assert_eq!(second["payload"], json!({}));
    assert_eq!(second["prev_hash"], event["signature"]);

    // The stored event is what the append returned.
    let stored = daemon.all_events(plan).await;
    assert_eq!(stored, vec![event, second]);
}

#[tokio::test]
async fn multi_event_chain_links_each_event_to_the_previous_signature() {
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();
    let types = [
        "plan.created",
        "plan.submitted",
        "plan.approved",
        "step.started",
        "step.completed",
        "plan.closed",
    ];
    let mut returned = Vec::new();
    for (i, t) in types.iter().enumerate() {
        let event = daemon.append_ok(plan, event_body(t, i as u64)).await;
        assert_eq!(event["seq"], (i + 1) as u64);
        returned.push(event);
    }
    assert_linked_chain(&returned);
    let stored = daemon.all_events(plan).await;
    assert_eq!(stored, returned);

    let head = daemon.head(plan).await.unwrap();
    assert_eq!(head["head_seq"], 6);
    assert_eq!(head["count"], 6);
    assert_eq!(head["head_signature"], returned[5]["signature"]);
    assert_eq!(head["first_at"], returned[0]["created_at"]);
    assert_eq!(head["last_at"], returned[5]["created_at"]);

    // Paging with after/limit walks the same chain.
    let page = daemon
        .get_json(&format!("/api/plans/{plan}/events?after=2&limit=3"))
        .await;
    assert_eq!(page.status, 200);
    let seqs: Vec<u64> = page.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![3, 4, 5]);
    assert_eq!(page.json["next_after"], 5);
    assert_eq!(page.json["plan_id"], plan.to_string());
}

#[tokio::test]
async fn plans_are_isolated_chains() {
    let daemon = Daemon::start(DaemonOpts::default());
    let (a, b) = (new_plan(), new_plan());
    for i in 0..5 {
        daemon.append_ok(a, event_body("step.started", i)).await;
        daemon.append_ok(b, event_body("step.completed", i)).await;
    }
    daemon.append_ok(a, event_body("plan.closed", 99)).await;

    let events_a = daemon.all_events(a).await;
    let events_b = daemon.all_events(b).await;
    assert_eq!(events_a.len(), 6);
    assert_eq!(events_b.len(), 5);
    assert_linked_chain(&events_a);
    assert_linked_chain(&events_b);
    assert!(events_a.iter().all(|e| e["plan_id"] == a.to_string()));
    assert!(
        events_b
            .iter()
            .all(|e| e["plan_id"] == b.to_string() && e["type"] == "step.completed")
    );
    let sigs_a: BTreeSet<&str> = events_a
        .iter()
        .map(|e| e["signature"].as_str().unwrap())
        .collect();
    assert!(
        events_b
            .iter()
            .all(|e| !sigs_a.contains(e["prev_hash"].as_str().unwrap_or(""))),
        "b never links into a"
    );
    assert_chain_valid(&daemon, a).await;
    assert_chain_valid(&daemon, b).await;

    let plans = daemon.get_json("/api/plans").await;
    assert_eq!(plans.status, 200);
    let listed: Vec<(String, u64)> = plans.json["plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["plan_id"].as_str().unwrap().to_string(),
                p["head_seq"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut expected = vec![(a.to_string(), 6), (b.to_string(), 5)];
    expected.sort();
    assert_eq!(
        listed, expected,
        "GET /api/plans lists both heads in id order"
    );
    assert_eq!(
        plans.json["position"], 11,
        "the list gives the all-plans stream's position: 6 + 5 events"
    );

    let unknown = daemon.get_json(&format!("/api/plans/{}", new_plan())).await;
    assert_problem(&unknown, 404);
    let unknown = daemon
        .get_json(&format!("/api/plans/{}/events", new_plan()))
        .await;
    assert_problem(&unknown, 404);
}

#[tokio::test]
async fn untampered_chain_verifies() {
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();
    for i in 0..10 {
        daemon
            .append_ok(plan, event_body("ledger.transaction", i))
            .await;
    }
    let report = daemon.verify(plan).await;
    assert_eq!(report["chain_valid"], true, "{report}");
    assert_eq!(report["broken_at"], Value::Null);
    assert_eq!(report["broken_reason"], Value::Null);
    // Verification covers the whole chain, not just the page (limit=1).
    assert_eq!(report["verified_count"], 10, "{report}");

    // And it still verifies after a restart (the key comes from the env again).
    let mut daemon = daemon;
    daemon.restart();
    assert_chain_valid(&daemon, plan).await;
}

/// Appends 5 events to a fresh plan, stops the daemon, changes the store
/// offline with `tamper`, restarts, and returns the `verify=full` report.
async fn tampered_report(
    tamper: impl FnOnce(&logbook_journal::store::Store, Uuid) + Send + 'static,
) -> (Value, Vec<Value>) {
    let mut daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();
    for i in 0..5 {
        daemon
            .append_ok(plan, event_body("step.completed", i))
            .await;
    }
    let before = daemon.all_events(plan).await;
    assert_chain_valid(&daemon, plan).await;
    let status = daemon.stop();
    assert!(status.success(), "SIGTERM exit status {status}");
    with_offline_store(&daemon, move |store| tamper(store, plan)).await;
    daemon.restart();
    (daemon.verify(plan).await, before)
}

fn stored_event(store: &logbook_journal::store::Store, plan: Uuid, seq: u64) -> Event {
    let events = store
        .plan_events_after(&plan, seq - 1, 1)
        .expect("reading offline");
    assert_eq!(events.len(), 1, "event {seq} exists");
    events.into_iter().next().unwrap()
}

fn overwrite(store: &logbook_journal::store::Store, event: &Event) {
    store
        .overwrite_event_unchecked(event)
        .expect("overwriting offline");
}

fn assert_broken(report: &Value, seq: u64, reason: &str) {
    assert_eq!(report["chain_valid"], false, "{report}");
    assert_eq!(report["broken_at"], seq, "{report}");
    assert_eq!(report["broken_reason"], reason, "{report}");
}

#[tokio::test]
async fn tampered_payload_is_detected() {
    let (report, _) = tampered_report(|store, plan| {
        let mut event = stored_event(store, plan, 3);
        event.payload =
            serde_json::value::RawValue::from_string(r#"{"n":1000000}"#.into()).unwrap();
        overwrite(store, &event);
    })
    .await;
    assert_broken(&report, 3, "payload_hash");
    // The served page shows the tampered payload, flagged.
    assert_eq!(report["verified_count"], 2, "{report}");
}

#[tokio::test]
async fn tampered_signature_is_detected() {
    let (report, _) = tampered_report(|store, plan| {
        let mut event = stored_event(store, plan, 2);
        event.signature[0] ^= 0x01;
        overwrite(store, &event);
    })
    .await;
    assert_broken(&report, 2, "signature");
}

#[tokio::test]
async fn tampered_prev_hash_is_detected() {
    let (report, _) = tampered_report(|store, plan| {
        let mut event = stored_event(store, plan, 4);
        event.prev_hash = Some([0x42; 32]);
        overwrite(store, &event);
    })
    .await;
    assert_broken(&report, 4, "prev_hash");
}

#[tokio::test]
async fn tampered_actor_time_and_type_are_detected_by_the_signature() {
    // The signature covers every field, not just the payload and the links.
    type Edit = fn(&mut Event);
    let edits: [(u64, Edit); 3] = [
        (1, |e| e.actor = Some("mallory".into())),
        (2, |e| {
            e.created_at = logbook_journal::event::Timestamp(e.created_at.0 - 1000)
        }),
        (3, |e| e.event_type = "plan.approved".into()),
    ];
    for (seq, edit) in edits {
        let (report, _) = tampered_report(move |store, plan| {
            let mut event = stored_event(store, plan, seq);
            edit(&mut event);
            overwrite(store, &event);
        })
        .await;
        assert_broken(&report, seq, "signature");
    }
}

#[tokio::test]
async fn removed_event_is_a_seq_gap() {
    let (report, before) = tampered_report(|store, plan| {
        store
            .remove_event_unchecked(&plan, 3)
            .expect("removing offline");
    })
    .await;
    // The break shows at the first event after the hole.
    assert_broken(&report, 4, "seq_gap");
    assert_eq!(before.len(), 5);
}

#[tokio::test]
async fn removed_last_event_is_detected_against_the_plan_head() {
    // Truncating the chain leaves the plan head (seq 5, its signature)
    // pointing past the last stored event; verify must not call that valid.
    let (report, _) = tampered_report(|store, plan| {
        store
            .remove_event_unchecked(&plan, 5)
            .expect("removing offline");
    })
    .await;
    assert_eq!(
        report["chain_valid"], false,
        "a truncated chain verified as valid: {report}"
    );
    assert_eq!(report["broken_reason"], "seq_gap", "{report}");
    assert_eq!(report["broken_at"], 5, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_appends_on_one_plan() {
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();
    let barrier = Arc::new(tokio::sync::Barrier::new(64));
    let mut tasks = Vec::new();
    for i in 0..64u64 {
        let client = daemon.client.clone();
        let url = daemon.url(&format!("/api/plans/{plan}/events"));
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let resp = common::send(
                client
                    .post(url)
                    .timeout(common::REQUEST_TIMEOUT)
                    .json(&event_body("step.started", i)),
            )
            .await;
            (i, resp)
        }));
    }
    let mut seqs = Vec::new();
    for task in tasks {
        let (i, resp) = task.await.unwrap();
        assert_eq!(resp.status, 201, "append {i}: {}", resp.text);
        assert_eq!(
            resp.json["payload"]["n"], i,
            "each caller gets its own event"
        );
        seqs.push(resp.json["seq"].as_u64().unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=64).collect::<Vec<u64>>(),
        "seqs are exactly 1..=64"
    );

    let events = daemon.all_events(plan).await;
    assert_eq!(events.len(), 64);
    assert_linked_chain(&events);
    let payloads: BTreeSet<u64> = events
        .iter()
        .map(|e| e["payload"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(
        payloads,
        (0..64).collect(),
        "every request stored exactly once"
    );
    assert_chain_valid(&daemon, plan).await;
    assert_eq!(daemon.head(plan).await.unwrap()["count"], 64);
}

#[tokio::test]
async fn generated_key_is_private_persists_and_old_events_verify_after_a_key_change() {
    use std::os::unix::fs::PermissionsExt;
    // An empty LOGBOOK_HMAC_SECRET counts as unset: the daemon generates a key.
    let mut daemon = Daemon::start(DaemonOpts::default().env("LOGBOOK_HMAC_SECRET", ""));
    let key_file = daemon
        .data_dir()
        .join(logbook_journal::keys::GENERATED_KEY_FILE);
    let mode = std::fs::metadata(&key_file)
        .expect("the generated key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "generated key file mode");
    let journal_mode = std::fs::metadata(daemon.data_dir().join(logbook_journal::store::DB_FILE))
        .expect("the journal file")
        .permissions()
        .mode();
    assert_eq!(journal_mode & 0o777, 0o600, "journal file mode");
    let secret = std::fs::read_to_string(&key_file).unwrap();
    let generated_id = logbook_journal::keys::key_id(secret.trim_end().as_bytes());
    assert_ne!(
        generated_id,
        logbook_journal::keys::key_id(common::TEST_SECRET.as_bytes())
    );
    assert!(
        !daemon.log_text().contains(secret.trim_end()),
        "the secret appears in the log"
    );

    let plan = new_plan();
    let first = daemon.append_ok(plan, event_body("plan.created", 0)).await;
    assert_eq!(first["key_id"], generated_id.as_str());

    // Same key after a restart.
    daemon.restart();
    let second = daemon
        .append_ok(plan, event_body("plan.submitted", 1))
        .await;
    assert_eq!(second["key_id"], generated_id.as_str());
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap(),
        secret,
        "the key file is not rewritten"
    );
    assert_chain_valid(&daemon, plan).await;
}

#[tokio::test]
async fn events_signed_before_a_key_change_still_verify() {
    let mut daemon = Daemon::start(DaemonOpts::default().env("LOGBOOK_HMAC_SECRET", ""));
    let plan = new_plan();
    let old = daemon.append_ok(plan, event_body("plan.created", 0)).await;
    assert!(daemon.stop().success());

    // Now an environment secret takes over signing.
    let mut rotated = Daemon::start(DaemonOpts::default());
    assert!(rotated.stop().success());
    std::fs::remove_dir_all(rotated.data_dir()).unwrap();
    copy_dir(&daemon.data_dir(), &rotated.data_dir());
    rotated.restart();
    let new = rotated
        .append_ok(plan, event_body("plan.approved", 1))
        .await;
    assert_ne!(new["key_id"], old["key_id"], "the new key signs");
    assert_eq!(
        new["key_id"],
        logbook_journal::keys::key_id(common::TEST_SECRET.as_bytes())
    );
    assert_eq!(new["prev_hash"], old["signature"]);
    assert_chain_valid(&rotated, plan).await;
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A payload with duplicate members hashes like its last duplicates (the
/// parser keeps those), while a reader of the served text may keep the first
/// ones. Every verifier accepts only the canonical text: the HTTP `verify=1`,
/// `logbook admin verify`, and the offline `logbook verify --export`.
#[tokio::test]
async fn duplicate_member_payload_is_reported_by_every_verifier() {
    let mut daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();
    let body = json!({"type": "ledger.transaction", "actor": "tester",
                      "payload": {"amount": 10, "to": "alice"}});
    daemon.append_ok(plan, body).await;
    daemon
        .append_ok(plan, event_body("step.completed", 2))
        .await;
    assert_chain_valid(&daemon, plan).await;
    assert!(daemon.stop().success());
    with_offline_store(&daemon, move |store| {
        let mut event = stored_event(store, plan, 1);
        assert_eq!(event.payload.get(), r#"{"amount":10,"to":"alice"}"#);
        event.payload = serde_json::value::RawValue::from_string(
            r#"{"amount":1000000,"to":"mallory","amount":10,"to":"alice"}"#.into(),
        )
        .unwrap();
        overwrite(store, &event);
    })
    .await;
    daemon.restart();

    let report = daemon.verify(plan).await;
    assert_broken(&report, 1, "payload_not_canonical");
    assert_eq!(report["verified_count"], 0, "{report}");

    let out = daemon.admin(&["verify", &plan.to_string(), "--json"]).await;
    assert!(!out.success(), "admin verify must fail: {}", out.stdout);
    let admin: Value = serde_json::from_str(&out.stdout).expect("admin verify --json");
    assert_eq!(admin["chain_valid"], false, "{admin}");
    assert_eq!(admin["broken_at"], 1, "{admin}");
    assert_eq!(admin["broken_reason"], "payload_not_canonical", "{admin}");

    // The export carries the stored text as it is, and the offline verifier
    // refuses it too.
    let export = daemon.admin_ok(&["export", &plan.to_string()]).await;
    assert!(export.contains("mallory"), "{export}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plan.ndjson");
    std::fs::write(&file, &export).unwrap();
    let mut command = common::logbook();
    command
        .arg("verify")
        .arg("--export")
        .arg(&file)
        .env_remove("EVENT_BUS_HMAC_SECRET")
        .env_remove("SESSION_SECRET")
        .env("LOGBOOK_HMAC_SECRET", common::TEST_SECRET);
    let out = common::run(command).await;
    assert!(!out.success(), "offline verify must fail: {}", out.stdout);
    assert!(
        out.stdout.contains("broken at seq 1") && out.stdout.contains("payload_not_canonical"),
        "{}",
        out.stdout
    );
}
