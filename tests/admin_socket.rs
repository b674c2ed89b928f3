//! Every `logbook admin` command against a running daemon, over its Unix
//! socket, plus the socket's permissions and peer-uid check.

mod ops_common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use ops_common::{Ops, fill, path_str, plan, run};
use serde_json::Value;

#[test]
fn socket_is_private_and_status_reports_the_daemon() {
    let ops = Ops::start();
    let mode = std::fs::metadata(ops.socket())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "admin socket mode");

    let p = plan();
    fill(&ops, &p, 3);
    let status = ops.admin_json(&["status"]);
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["listen"][0], ops.addr.to_string());
    assert_eq!(status["plans"], 1);
    assert_eq!(status["events"], 3);
    assert!(status["disk_bytes"].as_u64().unwrap() > 0);
    assert!(status["uptime_secs"].is_u64());
    assert!(status["queue_depths"]["writer"].is_u64());
    assert!(
        status["last_fsync_micros"].as_u64().unwrap() > 0,
        "a commit happened"
    );
    assert!(status["peers"].is_array());

    // Human output by default; --json also accepted before the command.
    let text = ops.admin_ok(&["status"]);
    assert!(
        text.contains("events") && text.contains(&ops.addr.to_string()),
        "{text}"
    );
    let mut command = Command::new(ops_common::bin());
    command.args([
        "admin",
        "--json",
        "--socket",
        path_str(&ops.socket()),
        "status",
    ]);
    let out = run(command);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["events"], 3);
    // ... and both after the command.
    let mut command = Command::new(ops_common::bin());
    command.args([
        "admin",
        "plans",
        "list",
        "--socket",
        path_str(&ops.socket()),
        "--json",
    ]);
    let out = run(command);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["plans"][0]["plan_id"], p.as_str());
    // A missing socket is a clear error.
    let mut command = Command::new(ops_common::bin());
    command.args(["admin", "--socket", "/nonexistent/admin.sock", "status"]);
    let out = run(command);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect to the admin socket"));
}

#[test]
fn curl_speaks_to_the_socket() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("curl is not installed; skipping");
        return;
    }
    let ops = Ops::start();
    let mut command = Command::new("curl");
    command.args([
        "-sS",
        "--max-time",
        "10",
        "--unix-socket",
        path_str(&ops.socket()),
        "http://logbook/status",
    ]);
    let out = run(command);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
}

/// A uid other than the daemon's, root's or the group's is refused by the
/// SO_PEERCRED check itself: the test opens the socket's file mode so only
/// that check stands in the way, then connects as `nobody`.
#[test]
fn another_uid_is_refused() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    if !root || Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!(
            "not root or no setpriv: cannot switch uid; the uid check is unit-tested in src/admin/mod.rs"
        );
        return;
    }
    let ops = Ops::start();
    // The temp dir and data dir are private; open the path for this test only.
    for dir in [ops.dir.path().to_path_buf(), ops.data_dir()] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(ops.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut command = Command::new("setpriv");
    command
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            ops_common::bin(),
            "admin",
            "--socket",
        ])
        .arg(ops.socket())
        .arg("status");
    let out = run(command);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("Permission denied") && stderr.contains("exec") {
        eprintln!("nobody cannot execute the test binary here; skipping: {stderr}");
        return;
    }
    assert!(
        !out.status.success(),
        "nobody was let in: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains("403") || stderr.contains("Forbidden"),
        "refusal should be a 403: {stderr}"
    );
    assert!(ops.wait_log(
        &["admin connection refused", "65534"],
        std::time::Duration::from_secs(5)
    ));
    // Root (the test's uid) still gets in.
    assert_eq!(
        ops.admin_json(&["status"])["version"],
        env!("CARGO_PKG_VERSION")
    );
}

#[test]
fn plans_list_show_verify_and_export() {
    let ops = Ops::start();
    let a = plan();
    let b = plan();
    fill(&ops, &a, 4);
    fill(&ops, &b, 2);

    let list = ops.admin_json(&["plans", "list"]);
    let plans = list["plans"].as_array().unwrap();
    assert_eq!(plans.len(), 2);
    let text = ops.admin_ok(&["plans", "list"]);
    assert!(text.contains(&a) && text.contains(&b), "{text}");

    let show = ops.admin_json(&["plans", "show", &a]);
    assert_eq!(show["head_seq"], 4);
    assert_eq!(show["count"], 4);
    let missing = ops.admin(&["plans", "show", &plan()]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"));
    let bad = ops.admin(&["plans", "show", "not-a-uuid"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("400"));

    let verified = ops.admin_json(&["verify", &a]);
    assert_eq!(verified["chain_valid"], true);
    assert_eq!(verified["verified"], 4);
    assert_eq!(verified["head_signature"], show["head_signature"]);
    let all = ops.admin_ok(&["verify", "--all"]);
    assert!(all.contains("2 plans verified, 0 broken"), "{all}");

    let export = ops.admin_ok(&["export", &a]);
    let lines: Vec<Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[3]["seq"], 4);
    assert_eq!(lines[3]["signature"], show["head_signature"]);
    assert!(lines.iter().all(|e| e["plan_id"] == a.as_str()));
}

#[test]
fn tokens_take_effect_at_once() {
    let ops = Ops::start();
    let p = plan();
    // No tokens: loopback requests pass.
    assert_eq!(ops.append(&p, "plan.created", "{}", None).0, 201);

    let created = ops.admin_json(&[
        "tokens",
        "create",
        "--scope",
        "read,append",
        "--name",
        "ingest",
    ]);
    let token = created["token"].as_str().unwrap().to_string();
    assert_eq!(created["name"], "ingest");
    assert!(
        !ops.log_text().contains(&token),
        "the secret must never be logged"
    );

    assert_eq!(
        ops.append(&p, "step.started", "{}", None).0,
        401,
        "a token now exists"
    );
    assert_eq!(ops.append(&p, "step.started", "{}", Some(&token)).0, 201);

    // Human output prints only the token on stdout.
    let reader = ops.admin_ok(&["tokens", "create", "--scope", "read"]);
    let reader = reader.trim().to_string();
    assert!(reader.starts_with("lbk_"), "{reader}");
    assert_eq!(
        ops.http("GET", &format!("/api/plans/{p}"), Some(&reader), None)
            .0,
        200
    );
    assert_eq!(
        ops.append(&p, "step.started", "{}", Some(&reader)).0,
        403,
        "read-only token"
    );

    let list = ops.admin_json(&["tokens", "list"]);
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

    let duplicate = ops.admin(&["tokens", "create", "--scope", "read", "--name", "ingest"]);
    assert!(!duplicate.status.success());

    ops.admin_ok(&["tokens", "revoke", "ingest"]);
    assert_eq!(
        ops.append(&p, "step.started", "{}", Some(&token)).0,
        401,
        "revoked at once"
    );
    assert_eq!(
        ops.http("GET", &format!("/api/plans/{p}"), Some(&reader), None)
            .0,
        200
    );
    let missing = ops.admin(&["tokens", "revoke", "ingest"]);
    assert!(!missing.status.success());

    // Stored tokens survive a restart.
    let dir = {
        let mut ops = ops;
        assert!(ops.stop().success());
        std::mem::replace(&mut ops.dir, tempfile::tempdir().unwrap())
    };
    let config = std::fs::read_to_string(dir.path().join("config.toml")).unwrap();
    let ops = Ops::start_in(dir, &config);
    assert_eq!(
        ops.http("GET", &format!("/api/plans/{p}"), None, None).0,
        401
    );
    assert_eq!(
        ops.http("GET", &format!("/api/plans/{p}"), Some(&reader), None)
            .0,
        200
    );
}

#[test]
fn backup_restores_to_identical_exports() {
    let ops = Ops::start();
    let a = plan();
    let b = plan();
    fill(&ops, &a, 5);
    fill(&ops, &b, 3);
    let backup_dir = tempfile::tempdir().unwrap();
    let file = backup_dir.path().join("logbook.backup");

    // Appends keep flowing while the backup is taken.
    let writer = {
        let addr = ops.addr;
        let a = a.clone();
        std::thread::spawn(move || {
            for _ in 0..20 {
                let body = r#"{"type":"step.completed","payload":{"during":"backup"}}"#;
                let (status, _) = ops_common::http_request(
                    addr,
                    "POST",
                    &format!("/api/plans/{a}/events"),
                    &[],
                    Some(body),
                );
                assert_eq!(status, 201);
            }
        })
    };
    ops.admin_ok(&["backup", path_str(&file)]);
    writer.join().unwrap();
    assert!(std::fs::metadata(&file).unwrap().len() > 0);
    let again = ops.admin(&["backup", path_str(&file)]);
    assert!(!again.status.success(), "backup refuses to overwrite");

    // Restore into a fresh data dir and serve it.
    let restored = tempfile::tempdir().unwrap();
    let mut command = Command::new(ops_common::bin());
    command
        .arg("restore")
        .arg(&file)
        .arg("--data-dir")
        .arg(restored.path().join("data"));
    let out = run(command);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut again = Command::new(ops_common::bin());
    again
        .arg("restore")
        .arg(&file)
        .arg("--data-dir")
        .arg(restored.path().join("data"));
    assert!(
        !run(again).status.success(),
        "restore refuses a data dir that has a journal"
    );
    let copy = Ops::start_in(restored, &ops_common::config_text(&[], ""));

    // The backup is one consistent state: plan b whole, plan a some prefix
    // of its history that includes the 5 events written before.
    assert_eq!(
        copy.admin_ok(&["export", &b]),
        ops.admin_ok(&["export", &b])
    );
    let original_a = ops.admin_ok(&["export", &a]);
    let copied_a = copy.admin_ok(&["export", &a]);
    assert!(copied_a.lines().count() >= 5);
    assert!(
        original_a.starts_with(&copied_a),
        "the restored export is a prefix of the live one"
    );
    let verified = copy.admin_json(&["verify", &a]);
    assert_eq!(verified["chain_valid"], true);
}

#[test]
fn backup_of_a_quiet_store_is_identical() {
    let ops = Ops::start();
    let a = plan();
    fill(&ops, &a, 7);
    let backup_dir = tempfile::tempdir().unwrap();
    let file = backup_dir.path().join("b.redb");
    ops.admin_ok(&["backup", path_str(&file)]);
    let restored = tempfile::tempdir().unwrap();
    let mut command = Command::new(ops_common::bin());
    command
        .arg("restore")
        .arg(&file)
        .arg("--data-dir")
        .arg(restored.path().join("data"));
    assert!(run(command).status.success());
    let copy = Ops::start_in(restored, &ops_common::config_text(&[], ""));
    assert_eq!(
        copy.admin_ok(&["export", &a]),
        ops.admin_ok(&["export", &a])
    );
    assert_eq!(
        copy.admin_json(&["plans", "list"]),
        ops.admin_json(&["plans", "list"])
    );
}

#[test]
fn log_level_changes_at_run_time() {
    let ops = Ops::start();
    assert_eq!(ops.admin_json(&["log-level"])["level"], "info");
    ops.admin_ok(&["log-level", "debug"]);
    assert_eq!(ops.admin_json(&["log-level"])["level"], "debug");
    // Debug lines now appear (each HTTP request has a debug span event).
    let p = plan();
    fill(&ops, &p, 1);
    assert!(
        ops.wait_log(&["\"DEBUG\""], std::time::Duration::from_secs(5)),
        "no debug output after log-level debug"
    );
    let bad = ops.admin(&["log-level", "logbook=loud"]);
    assert!(!bad.status.success());
    assert_eq!(
        ops.admin_json(&["log-level"])["level"],
        "debug",
        "an invalid level changes nothing"
    );
}

#[test]
fn deleting_a_plan_leaves_a_tombstone_in_the_system_journal() {
    let ops = Ops::start();
    let doomed = plan();
    let kept = plan();
    fill(&ops, &doomed, 3);
    fill(&ops, &kept, 2);
    let head = ops.admin_json(&["plans", "show", &doomed]);

    let deleted = ops.admin_json(&["plans", "delete", &doomed]);
    assert_eq!(deleted["deleted_events"], 3);
    assert_eq!(
        ops.http("GET", &format!("/api/plans/{doomed}"), None, None)
            .0,
        404
    );
    assert_eq!(
        ops.http(
            "GET",
            &format!("/api/plans/{kept}/events?verify=1"),
            None,
            None
        )
        .0,
        200
    );

    // The tombstone: who, when, head signature — in a verified chain.
    let system = "00000000-0000-0000-0000-000000000000";
    let (status, body) = ops.http(
        "GET",
        &format!("/api/plans/{system}/events?verify=1"),
        None,
        None,
    );
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["chain_valid"], true);
    let tombstone = &body["events"][0];
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
    let (status, _) = ops.append(system, "plan.created", "{}", None);
    assert_eq!(status, 403, "clients cannot write the system journal");
    let refused = ops.admin(&["plans", "delete", system]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("403"));
    assert!(ops.admin_ok(&["verify", "--all"]).contains("0 broken"));
    let gone = ops.admin(&["plans", "delete", &doomed]);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("404"));

    // A deleted plan id can be used again from seq 1.
    let (status, body) = ops.append(&doomed, "plan.created", "{}", None);
    assert_eq!(status, 201);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["seq"], 1);
}

fn current_uid() -> u32 {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Tokens created over the socket count for the rule that a non-loopback
/// listener needs authentication, and the last one cannot be revoked then.
#[test]
fn stored_tokens_allow_a_public_listener_and_the_last_one_stays() {
    let config = ops_common::config_text(&[], "");
    let ops = Ops::start_with(&config);
    let token = ops.admin_json(&["tokens", "create", "--scope", "read", "--name", "only"]);
    let token = token["token"].as_str().unwrap().to_string();
    let dir = ops.into_dir();

    let ops = Ops::launch_on(
        dir,
        &config,
        Some("info"),
        Some(ops_common::SECRET),
        "0.0.0.0:0",
    );
    assert!(ops.addr.ip().is_unspecified());
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], ops.addr.port()));
    let get = |t: Option<&str>| {
        let headers: Vec<String> = t
            .map(|t| format!("authorization: Bearer {t}"))
            .into_iter()
            .collect();
        ops_common::http_request(local, "GET", "/api/plans", &headers, None).0
    };
    assert_eq!(get(None), 401);
    assert_eq!(get(Some(&token)), 200);
    let refused = ops.admin(&["tokens", "revoke", "only"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("last API token"));
    assert_eq!(get(None), 401, "still protected");
    ops.admin_ok(&["tokens", "create", "--scope", "read", "--name", "second"]);
    ops.admin_ok(&["tokens", "revoke", "only"]);
    assert_eq!(get(Some(&token)), 401);
}

/// With `server.admin_group` the socket is mode 0660 and owned by the group,
/// and a member of the group (here `nobody`, whose group is `nogroup`) is let in.
#[test]
fn the_admin_group_may_connect() {
    use std::os::unix::fs::MetadataExt;
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    let has_group = std::fs::read_to_string("/etc/group")
        .is_ok_and(|g| g.lines().any(|l| l.starts_with("nogroup:x:65534:")));
    if !root || !has_group || Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!(
            "needs root, setpriv and the nogroup group; skipping (the rule is unit-tested in src/admin/mod.rs)"
        );
        return;
    }
    let config =
        ops_common::config_text(&[("admin_group = \"\"", "admin_group = \"nogroup\"")], "");
    let ops = Ops::start_with(&config);
    let meta = std::fs::metadata(ops.socket()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), 65534);
    for dir in [ops.dir.path().to_path_buf(), ops.data_dir()] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut command = Command::new("setpriv");
    command
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            ops_common::bin(),
            "admin",
            "--json",
            "--socket",
        ])
        .arg(ops.socket())
        .arg("status");
    let out = run(command);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("Permission denied") && stderr.contains("exec") {
        eprintln!("nobody cannot execute the test binary here; skipping: {stderr}");
        return;
    }
    assert!(out.status.success(), "a group member was refused: {stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
}
