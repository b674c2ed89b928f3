//! Every `logbook admin` command against a running daemon, over its Unix
//! socket, plus the socket's permissions and peer-uid check.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{
    CommandOutput, Daemon, DaemonOpts, REQUEST_TIMEOUT, fill, new_plan, run, run_logbook, send,
};
use serde_json::{Value, json};

/// The system journal's plan id.
const SYSTEM_PLAN: &str = "00000000-0000-0000-0000-000000000000";

fn current_uid() -> u32 {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Whether this test can run a command as `nobody`: it must be root and
/// have setpriv.
fn can_switch_uid() -> bool {
    current_uid() == 0 && Command::new("setpriv").arg("--version").output().is_ok()
}

/// Runs `logbook admin [--json] --socket S status` as `nobody` (uid and gid
/// 65534, no supplementary groups), after opening the daemon's private dirs
/// for the lookup. `None` when nobody cannot execute the test binary here.
async fn status_as_nobody(daemon: &Daemon, json: bool) -> Option<CommandOutput> {
    for dir in [daemon.dir().to_path_buf(), daemon.data_dir()] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_logbook"))
        .arg("admin")
        .args(json.then_some("--json"))
        .arg("--socket")
        .arg(daemon.admin_socket())
        .arg("status");
    let out = run(command).await;
    if out.stderr.contains("Permission denied") && out.stderr.contains("exec") {
        eprintln!(
            "nobody cannot execute the test binary here; skipping: {}",
            out.stderr
        );
        return None;
    }
    Some(out)
}

/// `logbook restore FILE --data-dir DIR/data`, with the test daemons'
/// HMAC secret in the environment (it authenticates the backup, as an
/// operator's `$LOGBOOK_HMAC_SECRET` does).
async fn restore(file: &Path, dir: &Path) -> CommandOutput {
    let mut command = common::logbook();
    command
        .arg("restore")
        .arg(file)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("LOGBOOK_HMAC_SECRET", common::TEST_SECRET);
    let out = run(command).await;
    if out.success() {
        assert!(
            out.stdout.contains("authenticated: its MAC verifies"),
            "{}",
            out.stdout
        );
    }
    out
}

/// An append body of `event_type` with an empty payload.
fn body(event_type: &str) -> Value {
    json!({"type": event_type, "actor": "ops-test", "payload": {}})
}

#[tokio::test]
async fn socket_is_private_and_status_reports_the_daemon() {
    let daemon = Daemon::start(DaemonOpts::default());
    let socket = daemon.admin_socket();
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "admin socket mode");

    let p = new_plan();
    fill(&daemon, p, 3).await;
    let status = daemon.admin_json(&["status"]).await;
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["listen"][0], daemon.addr.to_string());
    assert_eq!(status["plans"], 1);
    assert_eq!(status["events"], 3);
    let files = &status["disk_files"];
    let db = files["journal.redb"].as_u64().unwrap();
    let wal = files["journal.wal"].as_u64().unwrap();
    assert!(db > 0 && wal > 0, "{status}");
    assert_eq!(status["disk_bytes"].as_u64().unwrap(), db + wal);
    assert!(status["uptime_secs"].is_u64());
    assert!(status["queue_depths"]["writer"].is_u64());
    assert!(
        status["last_fsync_micros"].as_u64().unwrap() > 0,
        "a commit happened"
    );
    assert!(status["peers"].is_array());

    // Human output by default; --json also accepted before the command.
    let text = daemon.admin_ok(&["status"]).await;
    assert!(
        text.contains("events") && text.contains(&daemon.addr.to_string()),
        "{text}"
    );
    // Where `tail --all` starts, and what the disk bytes sum.
    let position = status["last_position"].as_u64().unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("last position") && l.ends_with(&format!(" {position}"))),
        "{text}"
    );
    assert!(
        text.contains("(journal.redb ") && text.contains("journal.wal "),
        "{text}"
    );
    let socket = socket.to_str().expect("UTF-8 path");
    let out = run_logbook(["admin", "--json", "--socket", socket, "status"]).await;
    assert!(out.success());
    assert_eq!(out.json()["events"], 3);
    // ... and both after the command.
    let out = run_logbook(["admin", "plans", "list", "--socket", socket, "--json"]).await;
    assert!(out.success());
    assert_eq!(out.json()["plans"][0]["plan_id"], p.to_string());
    // A missing socket is a clear error.
    let out = run_logbook(["admin", "--socket", "/nonexistent/admin.sock", "status"]).await;
    assert!(!out.success());
    assert!(out.stderr.contains("cannot connect to the admin socket"));
}

#[tokio::test]
async fn curl_speaks_to_the_socket() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("curl is not installed; skipping");
        return;
    }
    let daemon = Daemon::start(DaemonOpts::default());
    let mut command = Command::new("curl");
    command
        .args(["-sS", "--max-time", "10", "--unix-socket"])
        .arg(daemon.admin_socket())
        .arg("http://logbook/status");
    let out = run(command).await;
    assert!(out.success(), "{}", out.stderr);
    assert_eq!(out.json()["version"], env!("CARGO_PKG_VERSION"));
}

/// A uid other than the daemon's, root's or the group's is refused by the
/// SO_PEERCRED check itself: the test opens the socket's file mode so only
/// that check stands in the way, then connects as `nobody`.
#[tokio::test]
async fn another_uid_is_refused() {
    if !can_switch_uid() {
        eprintln!(
            "not root or no setpriv: cannot switch uid; the uid check is unit-tested in src/admin/mod.rs"
        );
        return;
    }
    let daemon = Daemon::start(DaemonOpts::default());
    std::fs::set_permissions(
        daemon.admin_socket(),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let Some(out) = status_as_nobody(&daemon, false).await else {
        return;
    };
    assert!(!out.success(), "nobody was let in: {}", out.stdout);
    assert!(
        out.stderr.contains("403") || out.stderr.contains("Forbidden"),
        "refusal should be a 403: {}",
        out.stderr
    );
    assert!(
        daemon
            .wait_log(
                &["admin connection refused", "65534"],
                Duration::from_secs(5)
            )
            .await
    );
    // Root (the test's uid) still gets in.
    assert_eq!(
        daemon.admin_json(&["status"]).await["version"],
        env!("CARGO_PKG_VERSION")
    );
}

#[tokio::test]
async fn plans_list_show_verify_and_export() {
    let daemon = Daemon::start(DaemonOpts::default());
    let a = new_plan().to_string();
    let b = new_plan().to_string();
    fill(&daemon, &a, 4).await;
    fill(&daemon, &b, 2).await;

    let list = daemon.admin_json(&["plans", "list"]).await;
    let plans = list["plans"].as_array().unwrap();
    assert_eq!(plans.len(), 2);
    let text = daemon.admin_ok(&["plans", "list"]).await;
    assert!(text.contains(&a) && text.contains(&b), "{text}");

    let show = daemon.admin_json(&["plans", "show", &a]).await;
    assert_eq!(show["head_seq"], 4);
    assert_eq!(show["count"], 4);
    let missing = daemon
        .admin(&["plans", "show", &new_plan().to_string()])
        .await;
    assert!(!missing.success());
    assert!(missing.stderr.contains("404"));
    let bad = daemon.admin(&["plans", "show", "not-a-uuid"]).await;
    assert!(bad.stderr.contains("400"));

    let verified = daemon.admin_json(&["verify", &a]).await;
    assert_eq!(verified["chain_valid"], true);
    assert_eq!(verified["verified"], 4);
    assert_eq!(verified["head_signature"], show["head_signature"]);
    let all = daemon.admin_ok(&["verify", "--all"]).await;
    assert!(all.contains("2 plans verified, 0 broken"), "{all}");

    let export = daemon.admin_ok(&["export", &a]).await;
    let lines: Vec<Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[3]["seq"], 4);
    assert_eq!(lines[3]["signature"], show["head_signature"]);
    assert!(lines.iter().all(|e| e["plan_id"] == a.as_str()));
}

#[tokio::test]
async fn tokens_take_effect_at_once() {
    let mut daemon = Daemon::start(DaemonOpts::default());
    let p = new_plan();
    let plan_path = format!("/api/plans/{p}");
    // No tokens: loopback requests pass.
    assert_eq!(daemon.append(p, body("plan.created")).await.status, 201);
    // What the credential may do: open mode is all but federation management.
    let open = daemon.get_json("/api/v1/token").await;
    assert_eq!(open.status, 200, "{}", open.text);
    assert_eq!(
        open.json,
        serde_json::json!({"name": null, "scopes": ["read", "append"]})
    );

    let created = daemon
        .admin_json(&[
            "tokens",
            "create",
            "--scope",
            "read,append",
            "--name",
            "ingest",
        ])
        .await;
    let token = created["token"].as_str().unwrap().to_string();
    assert_eq!(created["name"], "ingest");
    assert!(
        !daemon.log_text().contains(&token),
        "the secret must never be logged"
    );

    assert_eq!(
        daemon.append(p, body("step.started")).await.status,
        401,
        "a token now exists"
    );
    assert_eq!(
        daemon
            .append_as(p, body("step.started"), &token)
            .await
            .status,
        201
    );

    // Human output prints only the token on stdout.
    let reader = daemon
        .admin_ok(&["tokens", "create", "--scope", "read"])
        .await;
    let reader = reader.trim().to_string();
    assert!(reader.starts_with("lbk_"), "{reader}");
    assert_eq!(daemon.get_as(&plan_path, &reader).await.status, 200);
    let scopes = daemon.get_as("/api/v1/token", &reader).await;
    assert_eq!(
        scopes.json["scopes"],
        serde_json::json!(["read"]),
        "{}",
        scopes.text
    );
    assert!(scopes.json["name"].is_string(), "{}", scopes.text);
    let scopes = daemon.get_as("/api/v1/token", &token).await;
    assert_eq!(scopes.json["name"], "ingest", "{}", scopes.text);
    assert_eq!(scopes.json["scopes"], serde_json::json!(["read", "append"]));
    assert_eq!(
        daemon.get("/api/v1/token").send().await.unwrap().status(),
        401
    );
    assert_eq!(
        daemon
            .append_as(p, body("step.started"), &reader)
            .await
            .status,
        403,
        "read-only token"
    );

    let list = daemon.admin_json(&["tokens", "list"]).await;
    let names: Vec<&str> = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"ingest"));
    assert!(
        !list.to_string().contains(&token),
        "list never shows secrets"
    );

    let duplicate = daemon
        .admin(&["tokens", "create", "--scope", "read", "--name", "ingest"])
        .await;
    assert!(!duplicate.success());
    // Nor another token's id: `revoke` takes a name or an id, and each
    // must name one token.
    let id = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|t| t["id"].as_str())
        .expect("a stored token");
    let clash = daemon
        .admin(&["tokens", "create", "--scope", "read", "--name", id])
        .await;
    assert!(!clash.success());
    assert!(
        clash.stderr.contains("already a token's name or id"),
        "{}",
        clash.stderr
    );

    daemon.admin_ok(&["tokens", "revoke", "ingest"]).await;
    assert_eq!(
        daemon
            .append_as(p, body("step.started"), &token)
            .await
            .status,
        401,
        "revoked at once"
    );
    assert_eq!(daemon.get_as(&plan_path, &reader).await.status, 200);
    let missing = daemon.admin(&["tokens", "revoke", "ingest"]).await;
    assert!(!missing.success());
    // Any valid token may ask what it may do, whatever its scopes.
    let writer = daemon
        .admin_ok(&["tokens", "create", "--scope", "append", "--name", "writer"])
        .await
        .trim()
        .to_string();
    let scopes = daemon.get_as("/api/v1/token", &writer).await;
    assert_eq!(scopes.status, 200, "{}", scopes.text);
    assert_eq!(
        scopes.json,
        serde_json::json!({"name": "writer", "scopes": ["append"]})
    );
    assert_eq!(
        daemon.get_as("/api/v1/token", &token).await.status,
        401,
        "revoked"
    );
    daemon.admin_ok(&["tokens", "revoke", "writer"]).await;

    // Stored tokens survive a restart.
    daemon.restart();
    assert_eq!(daemon.get_json(&plan_path).await.status, 401);
    assert_eq!(daemon.get_as(&plan_path, &reader).await.status, 200);
}

#[tokio::test]
async fn backup_restores_to_identical_exports() {
    let daemon = Daemon::start(DaemonOpts::default());
    let a = new_plan().to_string();
    let b = new_plan().to_string();
    fill(&daemon, &a, 5).await;
    fill(&daemon, &b, 3).await;
    let backup_dir = tempfile::tempdir().unwrap();
    let file = backup_dir.path().join("logbook.backup");
    let file_arg = file.to_str().expect("UTF-8 path");

    // Appends keep flowing while the backup is taken.
    let writer = {
        let client = daemon.client.clone();
        let url = daemon.url(&format!("/api/plans/{a}/events"));
        tokio::spawn(async move {
            for _ in 0..20 {
                let body = json!({"type": "step.completed", "payload": {"during": "backup"}});
                let request = client.post(&url).json(&body).timeout(REQUEST_TIMEOUT);
                assert_eq!(send(request).await.status, 201);
            }
        })
    };
    daemon.admin_ok(&["backup", file_arg]).await;
    writer.await.unwrap();
    assert!(std::fs::metadata(&file).unwrap().len() > 0);
    let again = daemon.admin(&["backup", file_arg]).await;
    assert!(!again.success(), "backup refuses to overwrite");

    // Restore into a fresh data dir and serve it.
    let restored = tempfile::tempdir().unwrap();
    let out = restore(&file, restored.path()).await;
    assert!(out.success(), "{}", out.stderr);
    assert!(
        !restore(&file, restored.path()).await.success(),
        "restore refuses a data dir that has a journal"
    );
    // A write-ahead segment left behind (by another store) would replay
    // into the restored one: refused too, and nothing is written.
    let stale = tempfile::tempdir().unwrap();
    std::fs::create_dir(stale.path().join("data")).unwrap();
    std::fs::write(stale.path().join("data/journal.wal"), b"left behind").unwrap();
    let refused = restore(&file, stale.path()).await;
    assert!(!refused.success());
    assert!(
        refused.stderr.contains("journal.wal already exists"),
        "{}",
        refused.stderr
    );
    assert!(!stale.path().join("data/journal.redb").exists());
    let copy = Daemon::start_in(restored, DaemonOpts::default());

    // The backup is one consistent state: plan b whole, plan a some prefix
    // of its history that includes the 5 events written before.
    assert_eq!(
        copy.admin_ok(&["export", &b]).await,
        daemon.admin_ok(&["export", &b]).await
    );
    let original_a = daemon.admin_ok(&["export", &a]).await;
    let copied_a = copy.admin_ok(&["export", &a]).await;
    assert!(copied_a.lines().count() >= 5);
    assert!(
        original_a.starts_with(&copied_a),
        "the restored export is a prefix of the live one"
    );
    let verified = copy.admin_json(&["verify", &a]).await;
    assert_eq!(verified["chain_valid"], true);
}

#[tokio::test]
async fn backup_of_a_quiet_store_is_identical() {
    let daemon = Daemon::start(DaemonOpts::default());
    let a = new_plan().to_string();
    fill(&daemon, &a, 7).await;
    let backup_dir = tempfile::tempdir().unwrap();
    let file = backup_dir.path().join("b.redb");
    daemon
        .admin_ok(&["backup", file.to_str().expect("UTF-8 path")])
        .await;
    let restored = tempfile::tempdir().unwrap();
    assert!(restore(&file, restored.path()).await.success());
    let copy = Daemon::start_in(restored, DaemonOpts::default());
    assert_eq!(
        copy.admin_ok(&["export", &a]).await,
        daemon.admin_ok(&["export", &a]).await
    );
    assert_eq!(
        copy.admin_json(&["plans", "list"]).await,
        daemon.admin_json(&["plans", "list"]).await
    );
}

#[tokio::test]
async fn log_level_changes_at_run_time() {
    let daemon = Daemon::start(DaemonOpts::default());
    assert_eq!(daemon.admin_json(&["log-level"]).await["level"], "info");
    daemon.admin_ok(&["log-level", "debug"]).await;
    assert_eq!(daemon.admin_json(&["log-level"]).await["level"], "debug");
    // Debug lines now appear (each HTTP request has a debug span event).
    fill(&daemon, new_plan(), 1).await;
    assert!(
        daemon
            .wait_log(&["\"DEBUG\""], Duration::from_secs(5))
            .await,
        "no debug output after log-level debug"
    );
    let bad = daemon.admin(&["log-level", "logbook=loud"]).await;
    assert!(!bad.success());
    assert_eq!(
        daemon.admin_json(&["log-level"]).await["level"],
        "debug",
        "an invalid level changes nothing"
    );
}

#[tokio::test]
async fn deleting_a_plan_leaves_a_tombstone_in_the_system_journal() {
    let daemon = Daemon::start(DaemonOpts::default());
    let doomed = new_plan().to_string();
    let kept = new_plan().to_string();
    fill(&daemon, &doomed, 3).await;
    fill(&daemon, &kept, 2).await;
    let head = daemon.admin_json(&["plans", "show", &doomed]).await;

    let deleted = daemon
        .admin_json(&["plans", "delete", "--yes", &doomed])
        .await;
    assert_eq!(deleted["deleted_events"], 3);
    assert_eq!(
        daemon
            .get_json(&format!("/api/plans/{doomed}"))
            .await
            .status,
        410
    );
    assert_eq!(
        daemon
            .get_json(&format!("/api/plans/{kept}/events?verify=1"))
            .await
            .status,
        200
    );

    // The tombstone: who, when, head signature — in a verified chain.
    let resp = daemon
        .get_json(&format!("/api/plans/{SYSTEM_PLAN}/events?verify=1"))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.json["chain_valid"], true);
    let tombstone = &resp.json["events"][0];
    assert_eq!(tombstone["type"], "system.plan_deleted");
    assert_eq!(tombstone["payload"]["plan_id"], doomed.as_str());
    assert_eq!(
        tombstone["payload"]["head_signature"],
        head["head_signature"]
    );
    assert_eq!(tombstone["payload"]["deleted_by"]["uid"], current_uid());
    assert!(tombstone["created_at"].is_string());

    // The system journal cannot be deleted; the all-plans stream and the
    // other plan's positions still work.
    assert_eq!(
        daemon
            .append(SYSTEM_PLAN, body("plan.created"))
            .await
            .status,
        403,
        "clients cannot write the system journal"
    );
    let refused = daemon
        .admin(&["plans", "delete", "--yes", SYSTEM_PLAN])
        .await;
    assert!(!refused.success());
    assert!(refused.stderr.contains("403"));
    assert!(
        daemon
            .admin_ok(&["verify", "--all"])
            .await
            .contains("0 broken")
    );
    let gone = daemon.admin(&["plans", "delete", "--yes", &doomed]).await;
    assert!(gone.stderr.contains("410"), "{}", gone.stderr);

    // A deleted plan's id is never used again.
    let resp = daemon.append(&doomed, body("plan.created")).await;
    assert_eq!(resp.status, 410);
    assert_eq!(resp.json["type"], "urn:logbook:problem:plan-deleted");
}

/// Tokens created over the socket count for the rule that a non-loopback
/// listener needs authentication, and the last one cannot be revoked then.
#[tokio::test]
async fn stored_tokens_allow_a_public_listener_and_the_last_one_stays() {
    let mut daemon = Daemon::start(DaemonOpts::default());
    let token = daemon
        .admin_json(&["tokens", "create", "--scope", "read", "--name", "only"])
        .await;
    let token = token["token"].as_str().unwrap().to_string();

    daemon.restart_with(DaemonOpts::default().listen("0.0.0.0:0"));
    assert!(daemon.addr.ip().is_unspecified());
    let local = format!("http://127.0.0.1:{}/api/plans", daemon.addr.port());
    let status_as = async |token: Option<&str>| {
        let mut request = daemon.client.get(&local).timeout(REQUEST_TIMEOUT);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        send(request).await.status
    };
    assert_eq!(status_as(None).await, 401);
    assert_eq!(status_as(Some(&token)).await, 200);
    let refused = daemon.admin(&["tokens", "revoke", "only"]).await;
    assert!(!refused.success());
    assert!(refused.stderr.contains("last API token"));
    assert_eq!(status_as(None).await, 401, "still protected");
    daemon
        .admin_ok(&["tokens", "create", "--scope", "read", "--name", "second"])
        .await;
    daemon.admin_ok(&["tokens", "revoke", "only"]).await;
    assert_eq!(status_as(Some(&token)).await, 401);
}

/// With `server.admin_group` the socket is mode 0660 and owned by the group,
/// and a member of the group (here `nobody`, whose group is `nogroup`) is let in.
#[tokio::test]
async fn the_admin_group_may_connect() {
    let has_group = std::fs::read_to_string("/etc/group")
        .is_ok_and(|g| g.lines().any(|l| l.starts_with("nogroup:x:65534:")));
    if !can_switch_uid() || !has_group {
        eprintln!(
            "needs root, setpriv and the nogroup group; skipping (the rule is unit-tested in src/admin/mod.rs)"
        );
        return;
    }
    let daemon = Daemon::start(
        DaemonOpts::default().replace("admin_group = \"\"", "admin_group = \"nogroup\""),
    );
    let meta = std::fs::metadata(daemon.admin_socket()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), 65534);
    let Some(out) = status_as_nobody(&daemon, true).await else {
        return;
    };
    assert!(out.success(), "a group member was refused: {}", out.stderr);
    assert_eq!(out.json()["version"], env!("CARGO_PKG_VERSION"));
}
