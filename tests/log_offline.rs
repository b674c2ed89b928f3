//! `logbook verify --export FILE --log-key VKEY --checkpoint FILE` checks an
//! export against the plan's signed checkpoint with no HMAC key: `ok`,
//! `truncated` (a cut-off tail) or `root-mismatch` (a changed event); exit
//! 0, 1, or 2 for a usage or I/O error.

mod common;

use std::path::Path;

use common::{Daemon, DaemonOpts, event_body, logbook, new_plan, run};

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

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_is_checked_against_its_signed_checkpoint_without_the_hmac_key() {
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();
    for i in 0..20 {
        daemon.append_ok(plan, event_body("step.started", i)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let (export, checkpoint) = (
        dir.path().join("plan.ndjson"),
        dir.path().join("plan.checkpoint"),
    );
    let out = daemon
        .admin(&[
            "export",
            &plan.to_string(),
            "--checkpoint",
            checkpoint.to_str().unwrap(),
        ])
        .await;
    std::fs::write(&export, out.ok("admin export --checkpoint")).unwrap();
    let vkey = daemon.get_json("/api/v1/log/keys").await.json["current"]["vkey"]
        .as_str()
        .unwrap()
        .to_string();
    let (e, c) = (export.to_str().unwrap(), checkpoint.to_str().unwrap());

    let (code, text) = verify(&["--export", e, "--log-key", &vkey, "--checkpoint", c]).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("ok: the first 20 events"), "{text}");

    // A cut-off tail: the export is shorter than the checkpoint.
    let all = lines(&export);
    let short = dir.path().join("short.ndjson");
    std::fs::write(&short, all[..15].join("\n") + "\n").unwrap();
    let (code, text) = verify(&[
        "--export",
        short.to_str().unwrap(),
        "--log-key",
        &vkey,
        "--checkpoint",
        c,
    ])
    .await;
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("truncated: the export has 15 events, the checkpoint 20"),
        "{text}"
    );

    // An empty export: no line is at fault, with a checkpoint or without.
    let empty = dir.path().join("empty.ndjson");
    std::fs::write(&empty, "").unwrap();
    let empty = empty.to_str().unwrap();
    let (code, text) = verify(&["--export", empty, "--log-key", &vkey, "--checkpoint", c]).await;
    let mut keyed = logbook();
    keyed
        .args(["verify", "--export", empty])
        .env("LOGBOOK_HMAC_SECRET", "any-secret-any-secret-any-secret");
    let keyed = run(keyed).await;
    for (code, text) in [(code, text), (keyed.status.code(), keyed.stdout)] {
        assert_eq!(code, Some(1), "{text}");
        assert!(
            text.contains("broken: the export holds no events") && !text.contains("line 0"),
            "{text}"
        );
    }

    // A changed event (here its actor), as exported: the root differs.
    let changed = dir.path().join("changed.ndjson");
    let mut edited = all.clone();
    edited[6] = edited[6].replace("\"actor\":\"tester\"", "\"actor\":\"mallory\"");
    assert_ne!(edited[6], all[6], "the test edits the line");
    std::fs::write(&changed, edited.join("\n") + "\n").unwrap();
    let (code, text) = verify(&[
        "--export",
        changed.to_str().unwrap(),
        "--log-key",
        &vkey,
        "--checkpoint",
        c,
    ])
    .await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("root-mismatch"), "{text}");

    // A changed payload (canonical, so only its hash can tell): the payload
    // is outside the leaves, and still no export with it verifies.
    let paid = dir.path().join("payload.ndjson");
    let mut edited = all.clone();
    edited[4] = edited[4].replacen("\"payload\":{\"n\":4}", "\"payload\":{\"n\":5}", 1);
    assert_ne!(edited[4], all[4], "the test edits the payload");
    std::fs::write(&paid, edited.join("\n") + "\n").unwrap();
    let (code, text) = verify(&[
        "--export",
        paid.to_str().unwrap(),
        "--log-key",
        &vkey,
        "--checkpoint",
        c,
    ])
    .await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("root-mismatch: first bad seq 5"), "{text}");
    assert!(text.contains("payload_hash"), "{text}");

    // An unrelated secret in a default variable is not taken for the key.
    let mut command = logbook();
    command
        .args([
            "verify",
            "--export",
            e,
            "--log-key",
            &vkey,
            "--checkpoint",
            c,
        ])
        .env(
            "SESSION_SECRET",
            "a secret of some other program, 32 bytes+",
        );
    let out = run(command).await;
    assert_eq!(out.status.code(), Some(0), "{}{}", out.stdout, out.stderr);

    // With the HMAC key as well, the first bad seq is named.
    let mut command = logbook();
    command
        .args([
            "verify",
            "--export",
            changed.to_str().unwrap(),
            "--log-key",
            &vkey,
            "--checkpoint",
            c,
        ])
        .args(["--key-env", "LOGBOOK_HMAC_SECRET"])
        .env("LOGBOOK_HMAC_SECRET", common::TEST_SECRET);
    let out = run(command).await;
    assert_eq!(out.status.code(), Some(1), "{}", out.stdout);
    assert!(
        out.stdout.contains("root-mismatch: first bad seq 7"),
        "{}",
        out.stdout
    );

    // Another instance's key or a changed checkpoint: a verification
    // failure; a missing file or a missing flag: a usage error.
    let other = Daemon::start(DaemonOpts::default());
    let other_vkey = other.get_json("/api/v1/log/keys").await.json["current"]["vkey"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, text) = verify(&["--export", e, "--log-key", &other_vkey, "--checkpoint", c]).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("bad-checkpoint"), "{text}");
    let flipped = dir.path().join("flipped.checkpoint");
    let note = std::fs::read_to_string(&checkpoint).unwrap();
    std::fs::write(&flipped, note.replacen("\n20\n", "\n19\n", 1)).unwrap();
    let (code, text) = verify(&[
        "--export",
        e,
        "--log-key",
        &vkey,
        "--checkpoint",
        flipped.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("bad-checkpoint"), "{text}");
    let (code, _) = verify(&[
        "--export",
        e,
        "--log-key",
        &vkey,
        "--checkpoint",
        "/nonexistent",
    ])
    .await;
    assert_eq!(code, Some(2));
    let (code, _) = verify(&["--export", e, "--log-key", &vkey]).await;
    assert_eq!(code, Some(2), "--log-key needs --checkpoint");
}

/// Events after the checkpoint's size are not vouched for: without an HMAC
/// key that is a failure (`uncovered`), never a silent `ok`.
#[tokio::test]
async fn events_after_the_checkpoint_are_not_passed_off_as_verified() {
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();
    for i in 0..5 {
        daemon.append_ok(plan, event_body("step.started", i)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("cp");
    let out = daemon
        .admin(&[
            "export",
            &plan.to_string(),
            "--checkpoint",
            checkpoint.to_str().unwrap(),
        ])
        .await;
    out.ok("export");
    daemon.append_ok(plan, event_body("step.started", 5)).await;
    let longer = dir.path().join("longer.ndjson");
    std::fs::write(
        &longer,
        daemon.admin_ok(&["export", &plan.to_string()]).await,
    )
    .unwrap();
    let vkey = daemon.get_json("/api/v1/log/keys").await.json["current"]["vkey"]
        .as_str()
        .unwrap()
        .to_string();
    let (l, c) = (longer.to_str().unwrap(), checkpoint.to_str().unwrap());
    let (code, text) = verify(&["--export", l, "--log-key", &vkey, "--checkpoint", c]).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("uncovered: events 6 to 6"), "{text}");
    // The event after the checkpoint changed: it is named as broken, and
    // the root, which the first five rebuild, is not called a mismatch.
    let all: Vec<String> = std::fs::read_to_string(&longer)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let mut edited = all.clone();
    edited[5] = edited[5].replacen("\"payload\":{\"n\":5}", "\"payload\":{\"n\":6}", 1);
    assert_ne!(edited[5], all[5], "the test edits the payload");
    let after = dir.path().join("after.ndjson");
    std::fs::write(&after, edited.join("\n") + "\n").unwrap();
    for key in [false, true] {
        let mut command = logbook();
        command.args([
            "verify",
            "--export",
            after.to_str().unwrap(),
            "--log-key",
            &vkey,
            "--checkpoint",
            c,
        ]);
        if key {
            command
                .args(["--key-env", "LOGBOOK_HMAC_SECRET"])
                .env("LOGBOOK_HMAC_SECRET", common::TEST_SECRET);
        }
        let out = run(command).await;
        assert_eq!(out.status.code(), Some(1), "{}", out.stdout);
        assert!(
            out.stdout
                .contains("broken at seq 6 (line 6): payload_hash")
                && out.stdout.contains("after the checkpoint's 5 events")
                && !out.stdout.contains("root-mismatch"),
            "key {key}: {}",
            out.stdout
        );
    }
    // The admin socket signs no empty tree.
    let empty = daemon
        .admin(&["export", &plan.to_string(), "--checkpoint", "/dev/null"])
        .await;
    assert!(empty.success(), "a real size is signed: {}", empty.stderr);
}
