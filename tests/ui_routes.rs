//! The audit viewer's routes without a browser: the page and its files, their
//! security headers, what is not served, and `[ui] enabled = false`.

mod common;

use common::{Daemon, DaemonOpts};

/// No browser needed: the routes, their headers, and `[ui] enabled = false`.
#[tokio::test]
async fn the_viewer_routes_answer_with_their_headers_and_can_be_turned_off() {
    let daemon = Daemon::start(DaemonOpts::default());
    for path in [
        "/",
        "/ui",
        "/ui/",
        "/ui/plans/0192f3a4-5b6c-7d8e-9f00-112233445566",
        "/ui/assets/app.js",
        "/ui/assets/style.css",
    ] {
        let resp = common::send(daemon.get(path)).await;
        assert_eq!(resp.status, 200, "{path}");
        assert!(
            resp.header("content-security-policy")
                .is_some_and(|c| c.contains("frame-ancestors 'none'")),
            "{path}"
        );
        assert_eq!(
            resp.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(
            resp.header("referrer-policy"),
            Some("no-referrer"),
            "{path}"
        );
    }
    let html = common::send(daemon.get("/")).await;
    assert!(
        html.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(html.text.contains("/ui/assets/app.js"));
    let css = common::send(daemon.get("/ui/assets/style.css")).await;
    assert!(css.header("content-type").unwrap().starts_with("text/css"));
    // Only the embedded files exist: no path walks out of them.
    for path in [
        "/ui/keys",
        "/ui/federation",
        "/ui/plans/0192F3A4-5B6C-7D8E-9F00-112233445566",
    ] {
        let resp = common::send(daemon.get(path)).await;
        assert_eq!(resp.status, 200, "{path}");
        assert!(resp.text.contains("/ui/assets/app.js"), "{path}");
    }
    for path in [
        "/ui/assets/nope.js",
        "/ui/assets/..%2Fapp.js",
        "/ui/assets/",
        "/ui/app.js",
        "/ui/plans/nope",
        "/ui/plans/0192f3a4-5b6c-7d8e-9f00-112233445566/events",
        "/ui/keys/",
    ] {
        let resp = common::send(daemon.get(path)).await;
        assert_eq!(resp.status, 404, "{path}: {}", resp.text);
    }
    // A Host that is not loopback is refused in open mode, as for the API.
    let rebound = common::send(daemon.get("/").header("host", "attacker.example")).await;
    assert_eq!(rebound.status, 421);

    // The admin socket serves the API, without the page.
    for path in ["/", "/ui/", "/ui/assets/app.js"] {
        assert_eq!(
            admin_socket_status(&daemon, path).await,
            "404",
            "{path} over the admin socket"
        );
    }
    assert_eq!(admin_socket_status(&daemon, "/api/plans").await, "200");

    let off = Daemon::start(DaemonOpts::default().replace("\nenabled = true", "\nenabled = false"));
    for path in ["/", "/ui/", "/ui/assets/app.js"] {
        let resp = common::send(off.get(path)).await;
        assert_eq!(resp.status, 404, "{path} with the viewer off");
    }
    assert_eq!(common::send(off.get("/healthz")).await.status, 200);
}

/// The status code of `GET path` over the daemon's admin socket.
async fn admin_socket_status(daemon: &Daemon, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::UnixStream::connect(daemon.admin_socket())
        .await
        .expect("the admin socket");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(common::REQUEST_TIMEOUT, socket.read_to_end(&mut answer))
        .await
        .expect("an answer in time")
        .expect("read");
    String::from_utf8_lossy(&answer)
        .split(' ')
        .nth(1)
        .unwrap_or("")
        .to_string()
}
