//! systemd notifications: READY=1 once the store is open and the listeners
//! are bound, WATCHDOG=1 at half of $WATCHDOG_USEC, STOPPING=1 on SIGTERM.

mod ops_common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn ready_watchdog_and_stopping_reach_the_notify_socket() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        ops_common::config_text(&[], ""),
    )
    .unwrap();
    let mut child = Command::new(ops_common::bin())
        .arg("serve")
        .arg("--config")
        .arg(dir.path().join("config.toml"))
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("LOGBOOK_HMAC_SECRET", ops_common::SECRET)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let mut recv = || -> String {
        let n = notify.recv(&mut buf).expect("a notification within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = recv();
    assert_eq!(first, "READY=1");
    // Ready means both listeners are up.
    assert!(
        dir.path().join("data/admin.sock").exists(),
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
    assert!(
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap()
            .success()
    );
    let mut stopping = false;
    while Instant::now() < deadline + Duration::from_secs(5) {
        if recv() == "STOPPING=1" {
            stopping = true;
            break;
        }
    }
    assert!(stopping, "STOPPING=1 on SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success());
            break;
        }
        assert!(Instant::now() < deadline, "the daemon did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !dir.path().join("data/admin.sock").exists(),
        "the admin socket is removed on exit"
    );
}
