//! systemd notifications: READY=1 once the store is open and the listeners
//! are bound, WATCHDOG=1 at half of $WATCHDOG_USEC, STOPPING=1 on SIGTERM.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{Daemon, DaemonOpts};

#[test]
fn ready_watchdog_and_stopping_reach_the_notify_socket() {
    let notify_dir = tempfile::tempdir().unwrap();
    let notify_path = notify_dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut daemon = Daemon::start(
        DaemonOpts::default()
            .env("NOTIFY_SOCKET", notify_path.to_str().expect("UTF-8 path"))
            .env("WATCHDOG_USEC", "200000"),
    );
    let mut buf = [0u8; 256];
    let mut recv = || -> String {
        let n = notify.recv(&mut buf).expect("a notification within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = recv();
    assert_eq!(first, "READY=1");
    // Ready means both listeners are up.
    assert!(
        daemon.admin_socket().exists(),
        "admin socket missing at READY"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut watchdogs = 0;
    while watchdogs < 2 && Instant::now() < deadline {
        if recv() == "WATCHDOG=1" {
            watchdogs += 1;
        }
    }
    assert_eq!(watchdogs, 2, "watchdog pings");
    daemon.sigterm();
    let mut stopping = false;
    while Instant::now() < deadline + Duration::from_secs(5) {
        if recv() == "STOPPING=1" {
            stopping = true;
            break;
        }
    }
    assert!(stopping, "STOPPING=1 on SIGTERM");
    let status = daemon
        .wait_exit(Duration::from_secs(15))
        .expect("the daemon did not stop");
    assert!(status.success());
    assert!(
        !daemon.admin_socket().exists(),
        "the admin socket is removed on exit"
    );
}
