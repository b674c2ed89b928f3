//! Faults that used to outlast their cause: a listen backlog too small for a
//! reconnect storm, and backup snapshots a crash left behind in the data dir.

mod common;

use std::process::Command;

use common::{Daemon, DaemonOpts};

/// The Send-Q column of `ss -ltn` for the listening socket on `port`: for a
/// listening socket, the backlog the kernel took from listen(2). `None`
/// when `ss` is not installed.
fn listen_backlog_of(port: u16) -> Option<u64> {
    let out = Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .ok()?;
    assert!(out.status.success(), "ss failed: {out:?}");
    let text = String::from_utf8(out.stdout).expect("ss prints UTF-8");
    let line = text
        .lines()
        .find(|l| l.starts_with("LISTEN"))
        .unwrap_or_else(|| panic!("no listening socket on port {port} in:\n{text}"));
    // State, Recv-Q, Send-Q, local, peer.
    let send_q = line.split_whitespace().nth(2).expect("a Send-Q column");
    Some(send_q.parse().expect("Send-Q is a number"))
}

#[tokio::test]
async fn the_listen_backlog_reaches_listen() {
    let daemon = Daemon::start(
        DaemonOpts::default().replace("listen_backlog = 4096", "listen_backlog = 1234"),
    );
    let Some(backlog) = listen_backlog_of(daemon.addr.port()) else {
        eprintln!("SKIPPED: `ss` (iproute2) is not installed");
        return;
    };
    assert_eq!(backlog, 1234, "server.listen_backlog = 1234");

    // The default, as far as net.core.somaxconn lets it.
    let daemon = Daemon::start(DaemonOpts::default());
    let somaxconn: u64 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .expect("reading net.core.somaxconn")
        .trim()
        .parse()
        .expect("somaxconn is a number");
    assert_eq!(
        listen_backlog_of(daemon.addr.port()),
        Some(4096.min(somaxconn)),
        "the default backlog is 4096 (capped by somaxconn {somaxconn})"
    );
}

#[test]
fn a_listen_backlog_of_zero_is_refused() {
    let (status, log) = common::run_expecting_exit(
        DaemonOpts::default().replace("listen_backlog = 4096", "listen_backlog = 0"),
    );
    assert!(!status.success());
    assert!(log.contains("server.listen_backlog"), "{log}");
}

/// Names in the data dir, sorted, but for the admin socket (which exists
/// only while a daemon runs).
fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("listing the data dir")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != "admin.sock")
        .collect();
    names.sort();
    names
}

/// A snapshot named as builds before this one named them, left by a backup
/// that a crash interrupted, is gone after the next start; nothing else is.
#[tokio::test]
async fn a_snapshot_left_by_a_crashed_backup_is_removed_at_start() {
    let mut daemon = Daemon::start(DaemonOpts::default());
    let plan = common::new_plan();
    common::fill(&daemon, plan, 5).await;
    daemon.stop();
    let before = names_in(&daemon.data_dir());
    // What a crash mid-backup used to leave: a copy of the journal.
    let leftover = daemon
        .data_dir()
        .join(format!(".backup-{}.redb", uuid::Uuid::new_v4()));
    std::fs::copy(daemon.db_path(), &leftover).expect("planting a leftover snapshot");
    // Not ours to remove: only `.backup-*.redb` files are snapshots.
    let other = daemon.data_dir().join(".backup-notes.txt");
    std::fs::write(&other, "kept").unwrap();

    daemon.restart();
    assert!(!leftover.exists(), "the stale snapshot is still there");
    assert!(other.exists(), "a file that is no snapshot was removed");
    std::fs::remove_file(&other).unwrap();
    assert_eq!(names_in(&daemon.data_dir()), before);
    assert!(
        daemon
            .wait_log(&["interrupted backup"], std::time::Duration::from_secs(5))
            .await,
        "the removal is logged"
    );
    assert_eq!(daemon.all_events(plan).await.len(), 5);
}

/// While a backup streams, its snapshot has no name in the data dir (only
/// an open handle), so a daemon killed then leaves nothing behind.
#[tokio::test]
async fn a_daemon_killed_mid_backup_leaves_no_snapshot() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut daemon = Daemon::start(DaemonOpts::default());
    let plan = common::new_plan();
    // About 2 MB: far more than the socket buffers, so the stream stalls
    // below with the snapshot open.
    for n in 0..500 {
        let body = serde_json::json!({
            "type": "step.completed",
            "payload": {"n": n, "filler": "x".repeat(4000)},
        });
        daemon.append_ok(plan, body).await;
    }
    let before = names_in(&daemon.data_dir());

    let mut admin = tokio::net::UnixStream::connect(daemon.admin_socket())
        .await
        .expect("connecting to the admin socket");
    admin
        .write_all(b"POST /backup HTTP/1.1\r\nHost: logbook\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    // Read the head of the answer, and not the body: the backup stalls mid-stream.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(20), admin.read(&mut byte))
            .await
            .expect("the backup answered within 20 s")
            .unwrap();
        assert_eq!(
            n,
            1,
            "the admin socket closed: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    // The daemon holds the snapshot open, and it never had a name: an
    // O_TMPFILE shows as `<dir>/#<inode> (deleted)` (a file named and then
    // unlinked, as before, would show its old name).
    let data = daemon.data_dir();
    let open_unnamed: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", daemon.pid()))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.unwrap().path()).ok())
        .map(|target| target.to_string_lossy().into_owned())
        .filter(|target| {
            target.starts_with(&*data.to_string_lossy()) && target.ends_with("(deleted)")
        })
        .collect();
    assert_eq!(open_unnamed.len(), 1, "one open snapshot: {open_unnamed:?}");
    assert!(
        open_unnamed[0].starts_with(&format!("{}/#", data.display())),
        "the snapshot had a name: {open_unnamed:?}"
    );
    assert_eq!(
        names_in(&data),
        before,
        "a snapshot has a name in the data dir"
    );

    daemon.kill9();
    drop(admin);
    assert_eq!(names_in(&data), before, "the killed backup left a file");
    daemon.restart();
    assert_eq!(names_in(&data), before);
    assert_eq!(daemon.all_events(plan).await.len(), 500);
}
