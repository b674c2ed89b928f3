//! `logbook verify --export FILE --bundle FILE --log-key VKEY --witness
//! VKEY… [--quorum K]` (issue 11): a plan export checked offline against
//! its witnessed bundle. Quorum 0 and a missing quorum here; a real
//! witness's cosignature is the sender step's to test, so the one quorum-1
//! case adds a cosignature through the store API, as that sender will.

mod common;

use std::time::Duration;

use common::{Daemon, DaemonOpts, event_body, logbook, new_plan, run, with_offline_store};
use logbook_tlog::checkpoint::Checkpoint;
use logbook_tlog::cosignature::Cosigner;
use logbook_tlog::note::Note;
use serde_json::Value;
use uuid::Uuid;

/// `logbook verify` with no HMAC secret in the environment.
async fn verify(args: &[&str]) -> (Option<i32>, String) {
    let mut command = logbook();
    command
        .arg("verify")
        .args(args)
        .env_remove("LOGBOOK_HMAC_SECRET")
        .env_remove("EVENT_BUS_HMAC_SECRET")
        .env_remove("SESSION_SECRET");
    let out = run(command).await;
    (out.status.code(), format!("{}{}", out.stdout, out.stderr))
}

/// The bundle once the heads log recorded `size` events of `plan` (409
/// until the pass ran; the bound only keeps a broken build from hanging).
async fn bundle(daemon: &Daemon, plan: &Uuid, size: u64) -> Value {
    for _ in 0..600 {
        let resp = daemon
            .get_json(&format!("/api/plans/{plan}/checkpoint?witnessed=1"))
            .await;
        if resp.status == 200 {
            let note = resp.json["plan_checkpoint"].as_str().unwrap();
            if note.lines().nth(1) == Some(&size.to_string()) {
                return resp.json;
            }
        } else {
            assert_eq!(resp.status, 409, "{}", resp.text);
            assert_eq!(
                resp.json["type"]
                    .as_str()
                    .map(|t| t.ends_with("not-in-heads-log")),
                Some(true)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no bundle of size {size}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_verifies_offline_and_names_truncation_and_missing_quorum() {
    let mut daemon =
        Daemon::start(DaemonOpts::default().replace("interval_secs = 5", "interval_secs = 1"));
    let plan = new_plan();
    for i in 0..20 {
        daemon.append_ok(plan, event_body("step.started", i)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let (export, bundle_file) = (
        dir.path().join("plan.ndjson"),
        dir.path().join("bundle.json"),
    );
    let out = daemon.admin(&["export", &plan.to_string()]).await;
    std::fs::write(&export, out.ok("admin export")).unwrap();
    let found = bundle(&daemon, &plan, 20).await;
    std::fs::write(&bundle_file, found.to_string()).unwrap();
    let vkey = daemon.get_json("/api/v1/log/keys").await.json["current"]["vkey"]
        .as_str()
        .unwrap()
        .to_string();
    let (e, b) = (export.to_str().unwrap(), bundle_file.to_str().unwrap());
    let witness = Cosigner::new("witness.example/w1", &[9; 32]).unwrap();
    let wkey = witness.verifier().to_vkey();
    let other = Cosigner::new("witness.example/w2", &[8; 32])
        .unwrap()
        .verifier()
        .to_vkey();

    // Quorum 0: the signatures and the proof alone.
    let base = ["--export", e, "--log-key", &vkey, "--bundle", b];
    let (code, text) = verify(&[&base[..], &["--quorum", "0"]].concat()).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("ok: the first 20 events"), "{text}");
    assert!(text.contains("witnessed: plan size 20"), "{text}");
    assert!(text.contains("unwitnessed: --quorum 0"), "{text}");

    // A bundle or checkpoint file comes from the instance audited: one
    // without end is refused after the format's limit, not read whole.
    // (A bundle that cannot be read is a usage error; a checkpoint that
    // does not verify is the export's verdict.)
    for (flag, exit) in [("--bundle", 2), ("--checkpoint", 1)] {
        let (code, text) = verify(&["--export", e, "--log-key", &vkey, flag, "/dev/zero"]).await;
        assert_eq!(code, Some(exit), "{flag}: {text}");
        assert!(text.contains("larger than"), "{flag}: {text}");
    }

    // No cosignature yet: quorum 1 (the default) is not met, with or
    // without a witness key.
    for args in [vec![], vec!["--witness", &other]] {
        let (code, text) = verify(&[&base[..], &args[..]].concat()).await;
        assert_eq!(code, Some(1), "{text}");
        assert!(text.contains("no-quorum: 0 cosignature(s)"), "{text}");
    }

    // A cut-off export is `truncated` against the witnessed size.
    let short = dir.path().join("short.ndjson");
    let all: Vec<String> = std::fs::read_to_string(&export)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    std::fs::write(&short, all[..15].join("\n") + "\n").unwrap();
    let (code, text) = verify(&[
        "--export",
        short.to_str().unwrap(),
        "--log-key",
        &vkey,
        "--bundle",
        b,
        "--quorum",
        "0",
    ])
    .await;
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("truncated: the export has 15 events, the checkpoint 20"),
        "{text}"
    );

    // A bundle whose entry index was changed does not prove inclusion.
    let mut forged = found.clone();
    forged["heads_index"] = (found["heads_index"].as_u64().unwrap() + 1).into();
    let forged_file = dir.path().join("forged.json");
    std::fs::write(&forged_file, forged.to_string()).unwrap();
    let (code, text) = verify(&[
        "--export",
        e,
        "--log-key",
        &vkey,
        "--bundle",
        forged_file.to_str().unwrap(),
        "--quorum",
        "0",
    ])
    .await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("bad-bundle"), "{text}");

    // Usage errors exit 2.
    let (code, _) = verify(&["--export", e, "--log-key", &vkey]).await;
    assert_eq!(code, Some(2));
    let (code, _) = verify(&[&base[..], &["--witness", "not a vkey"]].concat()).await;
    assert_eq!(code, Some(2));

    // Witnesses' cosignatures, added as the sender step adds them, are
    // served on the heads checkpoint: w1's now, w3's three hours ago (what a
    // rolled-back log keeps serving), w4's dated an hour ahead.
    let heads_note = Note::parse(found["heads_checkpoint"].as_str().unwrap().as_bytes()).unwrap();
    let heads = Checkpoint::parse(&heads_note.text).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let old = Cosigner::new("witness.example/w3", &[7; 32]).unwrap();
    let ahead = Cosigner::new("witness.example/w4", &[6; 32]).unwrap();
    let lines = [
        (&witness, now),
        (&old, now - 3 * 3600),
        (&ahead, now + 3600),
    ]
    .map(|(w, at)| w.cosign(&heads_note.text, at).unwrap().to_line());
    let (old_key, ahead_key) = (old.verifier().to_vkey(), ahead.verifier().to_vkey());
    daemon.stop();
    let added = with_offline_store(&daemon, move |s| {
        lines
            .iter()
            .map(|line| s.add_heads_cosignature(heads.size, heads.root, line))
            .collect::<Result<Vec<_>, _>>()
    })
    .await;
    assert!(added.unwrap().iter().all(Result::is_ok));
    daemon.restart();
    let cosigned = bundle(&daemon, &plan, 20).await;
    std::fs::write(&bundle_file, cosigned.to_string()).unwrap();
    // A fresh cosignature meets quorum 1 with its key only.
    let (code, text) = verify(&[&base[..], &["--witness", &wkey]].concat()).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("1 of the given witnesses cosigned"), "{text}");
    assert!(text.contains("the quorum at "), "{text}");
    // An old one is stale, alone or as the quorum's oldest, unless
    // --max-age allows it (an archived bundle); the last line says the
    // bundle does not hold, whatever the export's `ok:` lines say.
    for args in [
        vec!["--witness", &old_key],
        vec!["--witness", &wkey, "--witness", &old_key, "--quorum", "2"],
    ] {
        let (code, text) = verify(&[&base[..], &args[..]].concat()).await;
        assert_eq!(code, Some(1), "{text}");
        assert!(
            text.contains("stale: the quorum cosigned this 3h 0m ago"),
            "{text}"
        );
        assert!(
            text.trim_end()
                .ends_with("the bundle does not hold (above)"),
            "{text}"
        );
        let (code, text) = verify(&[&base[..], &args[..], &["--max-age", "86400"]].concat()).await;
        assert_eq!(code, Some(0), "{text}");
    }
    // One dated ahead does not count: it would stay fresh for hours.
    let (code, text) = verify(&[&base[..], &["--witness", &ahead_key]].concat()).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("no-quorum: 0 cosignature(s)"), "{text}");
    let (code, text) = verify(&[&base[..], &["--witness", &other]].concat()).await;
    assert_eq!(code, Some(1), "wrong witness key: {text}");
    let (code, text) = verify(
        &[
            &base[..],
            &["--witness", &wkey, "--witness", &wkey, "--quorum", "2"],
        ]
        .concat(),
    )
    .await;
    assert_eq!(code, Some(1), "one key given twice counts once: {text}");

    // The plan moves on. Until a checkpoint holding its new heads entry is
    // cosigned, its bundle is the witnessed one, a little older, with its
    // quorum, rather than the newest without one.
    for i in 20..25 {
        daemon.append_ok(plan, event_body("step.started", i)).await;
    }
    for _ in 0..600 {
        let note = common::send(daemon.get("/api/v1/log/checkpoint"))
            .await
            .text;
        if note.lines().nth(1).and_then(|l| l.parse::<u64>().ok()) > Some(heads.size) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let older = daemon
        .get_json(&format!("/api/plans/{plan}/checkpoint?witnessed=1"))
        .await;
    assert_eq!(older.status, 200, "{}", older.text);
    let plan_note = older.json["plan_checkpoint"].as_str().unwrap();
    assert_eq!(plan_note.lines().nth(1), Some("20"), "{}", older.text);
    assert_eq!(older.json["heads_checkpoint"], cosigned["heads_checkpoint"]);
    std::fs::write(&bundle_file, older.json.to_string()).unwrap();
    let (code, text) = verify(&[&base[..], &["--witness", &wkey]].concat()).await;
    assert_eq!(code, Some(0), "{text}");
}

/// An old entry of the plan inside a fresh heads tree (helper-115's
/// rollback): every entry after it must come with the bundle, and the
/// plan's newer entry among them gives the old one away; leaving it out
/// does not rebuild the root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_entry_of_the_plan_in_a_fresh_tree_is_refused() {
    let daemon =
        Daemon::start(DaemonOpts::default().replace("interval_secs = 5", "interval_secs = 1"));
    let (plan, other) = (new_plan(), new_plan());
    for i in 0..3 {
        daemon.append_ok(plan, event_body("step.started", i)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("plan.ndjson");
    let out = daemon.admin(&["export", &plan.to_string()]).await;
    std::fs::write(&export, out.ok("admin export")).unwrap();
    let old = bundle(&daemon, &plan, 3).await;
    assert_eq!(old["later_entries"], serde_json::json!([]), "{old}");
    // The plan moves on, and another plan after it.
    for i in 3..5 {
        daemon.append_ok(plan, event_body("step.started", i)).await;
    }
    bundle(&daemon, &plan, 5).await;
    daemon.append_ok(other, event_body("step.started", 0)).await;
    let fresh = bundle(&daemon, &other, 1).await;
    let fresh_heads = Note::parse(fresh["heads_checkpoint"].as_str().unwrap().as_bytes()).unwrap();
    let size = Checkpoint::parse(&fresh_heads.text).unwrap().size;
    let index = old["heads_index"].as_u64().unwrap();
    let proof = daemon
        .get_json(&format!(
            "/api/v1/log/entries/{index}/inclusion?tree_size={size}"
        ))
        .await;
    assert_eq!(proof.status, 200, "{}", proof.text);
    let entries: Vec<String> = daemon
        .heads_log_entries(size)
        .await
        .into_iter()
        .map(|e| String::from_utf8(e).unwrap())
        .collect();
    let later: Vec<String> = entries[index as usize + 1..].to_vec();
    let plan_text = plan.to_string();
    assert!(later.iter().any(|e| e.contains(&plan_text)), "{later:?}");

    let vkey = daemon.get_json("/api/v1/log/keys").await.json["current"]["vkey"]
        .as_str()
        .unwrap()
        .to_string();
    let check = |later: Vec<String>| {
        let mut forged = old.clone();
        forged["heads_checkpoint"] = fresh["heads_checkpoint"].clone();
        forged["inclusion_proof"] = proof.json["proof"].clone();
        forged["later_entries"] = later.into();
        let file = dir.path().join("forged.json");
        std::fs::write(&file, forged.to_string()).unwrap();
        let (e, b) = (export.to_str().unwrap().to_string(), file);
        let vkey = vkey.clone();
        async move {
            let b = b.to_str().unwrap().to_string();
            verify(&[
                "--export",
                &e,
                "--log-key",
                &vkey,
                "--bundle",
                &b,
                "--quorum",
                "0",
            ])
            .await
        }
    };
    let (code, text) = check(later.clone()).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("bad-bundle: heads-log entry")
            && text.contains("the bundle's plan checkpoint is not its latest"),
        "{text}"
    );
    let hidden: Vec<String> = later
        .iter()
        .filter(|e| !e.contains(&plan_text))
        .cloned()
        .collect();
    let (code, text) = check(hidden).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("bad-bundle: later_entries"), "{text}");
    // The same entry with the tree it was served with still verifies.
    let file = dir.path().join("old.json");
    std::fs::write(&file, old.to_string()).unwrap();
    let (code, text) = verify(&[
        "--export",
        export.to_str().unwrap(),
        "--log-key",
        &vkey,
        "--bundle",
        file.to_str().unwrap(),
        "--quorum",
        "0",
    ])
    .await;
    assert_eq!(code, Some(0), "{text}");
}
