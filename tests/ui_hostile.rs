//! The audit viewer's in-browser checks against a daemon that lies: the
//! page's own modules (served by the real daemon, run in Debian's Chromium)
//! with the network answers replaced by an attacker that builds signed
//! notes, proofs, bundles and events, with the log key where a case needs a
//! daemon that signs a fork. Each case asserts that nothing false is shown
//! as verified, not broken, or witnessed (tests/browser/hostile.js lists
//! them). The page being the daemon's own is out of scope (docs/viewer.md).

#[allow(dead_code)] // the rest of the harness serves ui_browser.rs
mod browser;
mod common;

use browser::{Browser, ensure_chromium, free_port};
use common::{Daemon, DaemonOpts};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_checks_refuse_what_a_lying_daemon_serves() {
    if !ensure_chromium() {
        return;
    }
    let port = free_port();
    let _daemon = Daemon::start(DaemonOpts::default().listen(&format!("127.0.0.1:{port}")));
    let b = Browser::start().await;
    // Any page of the viewer: the script imports its modules from there, in
    // a secure context (loopback) so WebCrypto is available.
    b.client
        .goto(&format!("http://127.0.0.1:{port}/ui/keys"))
        .await
        .expect("open");
    let fails = b
        .client
        .execute_async(include_str!("browser/hostile.js"), vec![])
        .await
        .expect("the hostile script");
    b.close().await;
    assert_eq!(
        fails,
        json!([]),
        "the viewer accepted what a lying daemon served"
    );
}
