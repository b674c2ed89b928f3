//! Loopback ports for daemons whose port must be known before they start
//! (peers name each other in their configs; a restart keeps its port).
//!
//! Binding port 0 and releasing it is a race: another test binary running
//! at once can be handed the same port, or an outgoing connection can take
//! it as its source port. The loser's daemon then fails to bind while the
//! winner answers its readiness probe, and two tests share one daemon.
//! So ports come from below the kernel's ephemeral range (32768 and up by
//! default: neither port 0 nor a source port lands there), and each is
//! claimed with an advisory lock on a file shared by every test binary of
//! the user (whatever its target dir), held until this process exits (the
//! kernel drops it then, even on a crash).

#![allow(dead_code)] // Not every test binary that includes this uses it.

use std::fs::{File, OpenOptions};
use std::net::TcpListener;
use std::sync::Mutex;

/// The ports handed out: [LOW, LOW + COUNT).
const LOW: u16 = 20_000;
const COUNT: u16 = 12_000;

/// The lock files of the ports this process holds.
static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// A loopback port that no other test process holds and that was free
/// when claimed; it stays claimed for this process's lifetime.
pub fn free_port() -> u16 {
    // One dir for the machine (per user), not per target dir: two test
    // runs with different target dirs must not pick the same port either.
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
    let dir = std::env::temp_dir().join(format!("logbook-test-ports-{uid}"));
    std::fs::create_dir_all(&dir).expect("the ports dir");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    // Processes start their search at different places, so they rarely
    // contend for one lock.
    let start = (std::process::id() ^ nanos) % u32::from(COUNT);
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    for step in 0..u32::from(COUNT) {
        let port = LOW + ((start + step) % u32::from(COUNT)) as u16;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{port}.lock")))
            .expect("a port lock file");
        if lock.try_lock().is_err() {
            continue; // Another test process holds it, or this one does.
        }
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue; // Something outside the tests listens there.
        }
        held.push(lock);
        return port;
    }
    panic!("no free loopback port in {LOW}..{}", LOW + COUNT);
}
