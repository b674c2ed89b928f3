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
