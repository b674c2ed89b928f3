//! The audit viewer in a real browser (issue 13): Debian's Chromium, driven
//! through chromedriver, against the real daemon. One browser session walks
//! through the open-mode checks in order (a browser start is the costly
//! part on 2 cores), a second one the token flow. Every wait polls with a
//! generous deadline; nothing sleeps as an assertion.
//!
//! `UPDATE_SCREENSHOT=1` also writes the plan view to docs/img/viewer.png.

mod browser;
mod common;

use browser::{Browser, ROWS, ensure_chromium, errors, free_port, one_browser, rows};
use common::{ADMIN_TOKEN, Daemon, DaemonOpts, new_plan, with_offline_store};
use serde_json::{Value, json};

/// The payload that must show as text, never as markup.
const XSS: &str = "<img src=x onerror=alert(1)>";

fn opts(port: u16) -> DaemonOpts {
    // A fixed port, so the open page reconnects to the restarted daemon;
    // heads-log passes every second, so the witnessed bundle comes quickly.
    DaemonOpts::default()
        .listen(&format!("127.0.0.1:{port}"))
        .replace("interval_secs = 5", "interval_secs = 1")
}

async fn append(daemon: &Daemon, plan: impl std::fmt::Display, body: Value) -> Value {
    daemon.append_ok(plan, body).await
}

fn step(i: usize) -> Value {
    json!({"type": "step.completed", "actor": "tester", "payload": {"i": i, "amount": 1250.5}})
}

/// Rows for seqs `1..=n` exactly once, newest first, all in `state`
/// (or in `other` for the seqs listed there).
/// Waits for a plan page to show its plan's signed deletion (at size 1)
/// as checked, never green: [verdict class, verdict, witness line, live state].
async fn deletion_checked(b: &Browser, what: &str) -> Value {
    let shown = b
        .wait_for(
            what,
            "return ['plan-verdict', 'witnessed', 'live-state'].flatMap((id) => { const e = document.getElementById(id); return id === 'plan-verdict' ? [e.className, e.textContent] : [e.textContent]; });",
            |v| v[1].as_str().is_some_and(|t| t.contains("deleted at size 1")),
        )
        .await;
    assert_eq!(shown[0], "verdict pending", "{shown}");
    assert!(
        shown[1]
            .as_str()
            .is_some_and(|t| t.contains("signed heads log records it, checked in this browser")),
        "{shown}"
    );
    assert!(
        shown[2]
            .as_str()
            .is_some_and(|t| t.starts_with("Deletion: ")),
        "{shown}"
    );
    shown
}

fn all_shown(value: &Value, n: u64, state: &str, other: &[(u64, &str)]) -> bool {
    let rows = rows(value);
    rows.len() as u64 == n
        && rows.iter().enumerate().all(|(i, (seq, s))| {
            *seq == n - i as u64
                && match other.iter().find(|(o, _)| o == seq) {
                    Some((_, want)) => s == want,
                    None => s == state,
                }
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_viewer_shows_checks_and_follows_a_plan_in_a_real_browser() {
    if !ensure_chromium() {
        return;
    }
    let _one = one_browser().await;
    let port = free_port();
    let mut daemon = Daemon::start(opts(port));
    let base = format!("http://127.0.0.1:{port}");
    let plan = new_plan();
    for i in 0..3 {
        append(&daemon, plan, step(i)).await;
    }
    append(
        &daemon,
        plan,
        json!({"type": "step.completed", "actor": "<b>mallory</b>", "payload": {"note": XSS, "file": "\u{202E}gnp.exe", "zw": "pa\u{200B}y", "cgj": "a\u{34F}b", "ok": "\u{1F44D}\u{FE0F}"}}),
    )
    .await;
    append(&daemon, plan, step(4)).await;

    // The headers, from the daemon itself.
    let page = daemon
        .client
        .get(format!("{base}/"))
        .send()
        .await
        .expect("GET /");
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "CSP {csp:?} lacks {part}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");

    let b = Browser::start().await;
    b.client.goto(&format!("{base}/")).await.expect("open /");

    // The plan list, then live updates from the global stream.
    let row = format!("#plans tr[data-plan='{plan}']");
    b.wait_for(
        "the plan in the list",
        &format!(
            "const r = document.querySelector(\"{row} .head-seq\"); return r && r.textContent;"
        ),
        |v| v == "5",
    )
    .await;
    b.wait_for(
        "the global stream live",
        "return document.getElementById('live-state').textContent;",
        |v| v == "live",
    )
    .await;
    let other = new_plan();
    append(&daemon, plan, step(5)).await;
    append(&daemon, other, step(0)).await;
    b.wait_for("live badge and head", &format!("const r = document.querySelector(\"{row}\"); return r && [r.querySelector('.live-badge').textContent, r.querySelector('.head-seq').textContent];"), |v| v == &json!(["+1", "6"])).await;
    b.wait_for(
        "a new plan appears live",
        &format!("return Boolean(document.querySelector(\"#plans tr[data-plan='{other}']\"));"),
        |v| v == true,
    )
    .await;
    // Search by plan id hides the others.
    b.type_into("#plan-search", &other.to_string()[..8]).await;
    b.wait_for("search narrows the list", &format!("return [document.querySelector(\"{row}\").hidden, document.querySelector(\"#plans tr[data-plan='{other}']\").hidden];"), |v| v == &json!([true, false])).await;
    b.type_into("#plan-search", "").await;
    // A type pattern filters the global stream: a step event no longer
    // counts, a plan.created event does (the stream keeps commit order).
    b.type_into("#type-filter", "plan.*\u{E007}").await;
    b.wait_for("the filtered stream live", "return location.search;", |v| {
        v == "?types=plan.*"
    })
    .await;
    b.wait_for(
        "the stream live again",
        "return document.getElementById('live-state').textContent;",
        |v| v == "live",
    )
    .await;
    append(&daemon, other, step(99)).await;
    let third = new_plan();
    append(
        &daemon,
        third,
        json!({"type": "plan.created", "actor": "tester", "payload": {}}),
    )
    .await;
    b.wait_for(
        "a matching event arrives",
        &format!("return Boolean(document.querySelector(\"#plans tr[data-plan='{third}']\"));"),
        |v| v == true,
    )
    .await;
    let badge = b
        .eval(&format!(
            "return document.querySelector(\"#plans tr[data-plan='{other}'] .live-badge\").textContent;"
        ))
        .await;
    assert_eq!(badge, "+1", "a step event counted under plan.*");

    // The plan: every event verified in the browser, the key source said honestly.
    b.click(&format!("{row} a")).await;
    b.wait_for("6 verified events", ROWS, |v| {
        all_shown(v, 6, "verified", &[])
    })
    .await;
    let key_line = b
        .eval("return document.getElementById('key-source').textContent;")
        .await;
    assert!(
        key_line
            .as_str()
            .unwrap()
            .contains("only against the log key this same daemon serves"),
        "{key_line}"
    );
    let verdict = b
        .eval("return document.getElementById('plan-verdict').className;")
        .await;
    assert_eq!(verdict, "verdict verified");
    b.wait_for(
        "the witnessed size",
        "return document.getElementById('witnessed').textContent;",
        |v| v.as_str().is_some_and(|t| t.starts_with("Witnessed size")),
    )
    .await;

    // The XSS payload and actor are text: no element was made of them.
    // The right-to-left override and the zero-width space are shown as
    // marked code points, not written into the page.
    let xss = b.eval("return [document.querySelectorAll('#main img, #main b').length, document.querySelector('#events tr[data-seq=\"4\"]').textContent, [...document.querySelectorAll('#events tr[data-seq=\"4\"] .hidden-char')].map((s) => s.textContent)];").await;
    assert_eq!(xss[0], 0, "markup from the journal was rendered");
    let row4 = xss[1].as_str().unwrap();
    assert!(
        row4.contains(XSS) && row4.contains("<b>mallory</b>") && row4.contains("U+202Egnp.exe"),
        "{xss}"
    );
    assert!(
        !row4.contains('\u{202E}') && !row4.contains('\u{200B}'),
        "{xss}"
    );
    // Marks in order, the payload's members in JCS order: the grapheme
    // joiner and the override (an actor may not hold one: 422); the row
    // is cut before the zero-width space, which the detail view shows
    // marked (below). The emoji's presentation selector is not one.
    assert_eq!(xss[2], json!(["U+034F", "U+202E"]), "{xss}");
    assert!(row4.contains("\u{1F44D}\u{FE0F}"), "{xss}");

    // Live in the plan view.
    append(&daemon, plan, step(6)).await;
    append(&daemon, plan, step(7)).await;
    b.wait_for("8 verified events", ROWS, |v| {
        all_shown(v, 8, "verified", &[])
    })
    .await;

    // The detail view and its permalink.
    b.click("#events tr[data-seq='4']").await;
    let detail = b.wait_for("the detail", "const d = document.getElementById('detail'); return d.hidden ? null : [document.getElementById('payload').textContent, document.getElementById('permalink').getAttribute('href'), location.hash];", |v| !v.is_null()).await;
    let payload = detail[0].as_str().unwrap();
    assert!(
        payload.contains(XSS) && payload.contains("paU+200By") && !payload.contains('\u{200B}'),
        "{detail}"
    );
    assert_eq!(detail[1], format!("/ui/plans/{plan}#seq=4"));
    assert_eq!(detail[2], "#seq=4");
    b.client
        .goto(&format!("{base}/ui/plans/{plan}#seq=2"))
        .await
        .expect("permalink");
    b.wait_for("the permalink opens event 2", "const d = document.getElementById('detail'); return d && !d.hidden && d.querySelector('h2').textContent;", |v| v == "Event 2").await;
    b.wait_for("8 verified after reload", ROWS, |v| {
        all_shown(v, 8, "verified", &[])
    })
    .await;
    b.eval("window.scrollTo(0, 0); return null;").await;
    let shot = b.client.screenshot().await.expect("screenshot");
    save_screenshot(&shot);

    // The keyboard: from a focused row, ArrowDown then Enter opens the next older event.
    b.eval("document.querySelector('#events tr[data-seq=\"6\"]').focus(); return null;")
        .await;
    let focused = b.client.active_element().await.expect("the focused row");
    focused.send_keys("\u{E015}").await.expect("ArrowDown");
    let focused = b.client.active_element().await.expect("the next row");
    assert_eq!(
        focused.attr("data-seq").await.expect("attr").as_deref(),
        Some("5")
    );
    focused.send_keys("\u{E007}").await.expect("Enter");
    b.wait_for("Enter opens event 5", "return location.hash;", |v| {
        v == "#seq=5"
    })
    .await;

    // Readable at 360 px: nothing wider than the window.
    b.client.set_window_size(360, 800).await.expect("resize");
    b.wait_for(
        "no horizontal scroll at 360 px",
        "return document.documentElement.scrollWidth <= window.innerWidth;",
        |v| v == true,
    )
    .await;
    b.client
        .set_window_size(1280, 900)
        .await
        .expect("resize back");

    // Paging backwards: 50 at first, then older pages, never a duplicate.
    let long = new_plan();
    common::fill(&daemon, long, 120).await;
    b.client
        .goto(&format!("{base}/ui/plans/{long}"))
        .await
        .expect("long plan");
    b.wait_for("the newest 50", ROWS, |v| {
        rows(v).len() == 50 && rows(v)[0].0 == 120
    })
    .await;
    b.click("#older").await;
    b.wait_for("100 after one page back", ROWS, |v| rows(v).len() == 100)
        .await;
    b.click("#older").await;
    b.wait_for("all 120, verified", ROWS, |v| {
        all_shown(v, 120, "verified", &[])
    })
    .await;
    assert_eq!(
        b.eval("return document.getElementById('older').hidden;")
            .await,
        true
    );

    // Redaction: shown as redacted with the system journal's reason.
    daemon
        .admin_ok(&[
            "redact",
            &plan.to_string(),
            "3",
            "--reason",
            "GDPR erasure, ticket 42",
        ])
        .await;
    b.client
        .goto(&format!("{base}/ui/plans/{plan}"))
        .await
        .expect("plan");
    b.wait_for("seq 3 redacted", ROWS, |v| {
        all_shown(v, 8, "verified", &[(3, "redacted")])
    })
    .await;
    b.wait_for(
        "the redaction's reason",
        "return document.querySelector('#events tr[data-seq=\"3\"] .badge').title;",
        |v| {
            v.as_str()
                .is_some_and(|t| t.contains("GDPR erasure, ticket 42"))
        },
    )
    .await;
    // Its detail names the record, its time local with UTC on hover.
    b.click("#events tr[data-seq='3']").await;
    b.wait_for(
        "the redaction record in the detail",
        "const dt = [...document.querySelectorAll('dt')].find((d) => d.textContent === 'redaction'); const dd = dt?.nextElementSibling; return dd ? [dd.textContent, dd.querySelector('time')?.title ?? null] : null;",
        |v| {
            v[0].as_str().is_some_and(|t| {
                t.contains("GDPR erasure, ticket 42") && t.contains("system journal seq")
            }) && v[1].as_str().is_some_and(|t| t.starts_with("UTC "))
        },
    )
    .await;

    // The log is really read: a warning written now is in it.
    b.eval("console.warn('logbook-console-probe'); return true;")
        .await;
    let console = b.console().await;
    assert!(
        format!("{console:?}").contains("logbook-console-probe"),
        "no browser log captured: {console:#?}"
    );
    let bad = errors(&console, false);
    assert!(bad.is_empty(), "console errors: {bad:#?}");
    assert!(
        !format!("{console:?}").contains("Content Security Policy"),
        "CSP violation: {console:#?}"
    );

    // A restart with the page open: it resumes with no gap and no duplicate.
    b.wait_for(
        "the plan stream live",
        "return document.getElementById('live-state').textContent;",
        |v| v == "live",
    )
    .await;
    // A focused row keeps the focus while live events are added above it.
    let focused = b
        .eval("document.querySelector('#events tr[data-seq=\"5\"]').focus(); return document.activeElement.dataset.seq;")
        .await;
    assert_eq!(focused, "5");
    daemon.restart();
    for i in 8..11 {
        append(&daemon, plan, step(i)).await;
    }
    b.wait_for("11 events once each after the restart", ROWS, |v| {
        all_shown(v, 11, "verified", &[(3, "redacted")])
    })
    .await;
    let focused = b
        .eval("return document.activeElement.dataset.seq ?? document.activeElement.tagName;")
        .await;
    assert_eq!(focused, "5", "a live event took the focus from its row");

    // An offline edit of one stored event: broken, with its reason; the plan flagged.
    let status = daemon.stop();
    assert!(status.success(), "{status}");
    with_offline_store(&daemon, move |store| {
        let mut event = store.plan_events_after(&plan, 5, 1).expect("reading")[0].clone();
        event.payload =
            serde_json::value::RawValue::from_string(r#"{"amount":1000000,"i":5}"#.into()).unwrap();
        store
            .overwrite_event_unchecked(&event)
            .expect("overwriting");
    })
    .await;
    daemon.restart();
    b.client
        .goto(&format!("{base}/ui/plans/{plan}"))
        .await
        .expect("plan after the edit");
    b.wait_for("seq 6 broken", ROWS, |v| {
        all_shown(v, 11, "verified", &[(3, "redacted"), (6, "broken")])
    })
    .await;
    let reason = b
        .eval("return document.querySelector('#events tr[data-seq=\"6\"] .badge').textContent;")
        .await;
    assert!(
        reason.as_str().unwrap().contains("payload_hash"),
        "{reason}"
    );
    b.wait_for(
        "the plan flagged",
        "return document.getElementById('plan-verdict').className;",
        |v| v == "verdict broken",
    )
    .await;

    let bad = errors(&b.console().await, true);
    assert!(bad.is_empty(), "console errors: {bad:#?}");

    // A deleted plan: the daemon's 410 said as such, then its signed
    // deletion checked in the browser once the heads log records it; never
    // a green verdict, since no event is shown.
    let doomed = new_plan();
    append(&daemon, doomed, step(1)).await;
    // Open while it is deleted: the page turns to checking the deletion.
    b.client
        .goto(&format!("{base}/ui/plans/{doomed}"))
        .await
        .expect("the plan");
    b.wait_for(
        "the plan live",
        "return document.getElementById('live-state').textContent;",
        |v| v == "live",
    )
    .await;
    daemon
        .admin_ok(&["plans", "delete", "--yes", &doomed.to_string()])
        .await;
    let shown = deletion_checked(&b, "the open page turned to the deletion").await;
    assert!(
        shown[1]
            .as_str()
            .is_some_and(|t| t.contains("The events still shown were checked while it was live")),
        "{shown}"
    );
    assert_eq!(shown[3], "stopped: plan deleted", "{shown}");
    b.client
        .goto(&format!("{base}/ui/plans/{doomed}"))
        .await
        .expect("the deleted plan");
    let shown = b
        .wait_for(
            "the deleted plan said so",
            "return [document.getElementById('plan-head').textContent, document.getElementById('plan-verdict').className, document.getElementById('plan-verdict').textContent, document.getElementById('live-state').textContent];",
            |v| v[0].as_str().is_some_and(|t| t.contains("was deleted")),
        )
        .await;
    assert_eq!(shown[1], "verdict pending", "{shown}");
    assert_eq!(shown[3], "stopped: plan deleted", "{shown}");
    deletion_checked(&b, "the deletion checked").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_viewer_asks_for_a_token_and_uses_it() {
    if !ensure_chromium() {
        return;
    }
    let _one = one_browser().await;
    let port = free_port();
    let daemon = Daemon::start(opts(port).with_admin_token()).send_admin_token();
    let base = format!("http://127.0.0.1:{port}");
    let plan = new_plan();
    append(&daemon, plan, step(0)).await;

    // The page's files need no token; the data does.
    let client = common::client();
    let page = client
        .get(format!("{base}/ui/plans/{plan}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let js = client
        .get(format!("{base}/ui/assets/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), 200);
    assert!(
        js.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let data = client
        .get(format!("{base}/api/plans"))
        .send()
        .await
        .unwrap();
    assert_eq!(data.status(), 401);

    let b = Browser::start().await;
    b.client
        .goto(&format!("{base}/ui/plans/{plan}"))
        .await
        .expect("open");
    b.type_into("#token", "not-a-token").await;
    b.click("#token-form button").await;
    b.wait_for(
        "a wrong token refused",
        "const f = document.getElementById('token-form'); return f && f.textContent;",
        |v| v.as_str().is_some_and(|t| t.contains("refused")),
    )
    .await;
    b.type_into("#token", ADMIN_TOKEN).await;
    b.click("#token-form button").await;
    b.wait_for("the plan verified with the token", ROWS, |v| {
        all_shown(v, 1, "verified", &[])
    })
    .await;
    // The stream takes the token as access_token: a live event arrives.
    b.wait_for(
        "the plan stream live",
        "return document.getElementById('live-state').textContent;",
        |v| v == "live",
    )
    .await;
    append(&daemon, plan, step(1)).await;
    b.wait_for("a live event with the token", ROWS, |v| {
        all_shown(v, 2, "verified", &[])
    })
    .await;
    let kept = b
        .eval(
            "return sessionStorage.getItem('logbook.token') !== null && Object.keys(localStorage).every((k) => k === 'logbook.seen');",
        )
        .await;
    assert_eq!(kept, true, "the token is kept in sessionStorage only");
    let stored = b
        .eval("return JSON.stringify(Object.assign({}, localStorage));")
        .await;
    assert!(
        !stored.as_str().unwrap().contains(ADMIN_TOKEN),
        "the token is not in localStorage: {stored}"
    );

    // The admin scope shows the federation panel.
    b.wait_for(
        "the federation link",
        "return document.getElementById('nav-federation').hidden;",
        |v| v == false,
    )
    .await;
    b.click("#nav-federation").await;
    b.wait_for(
        "the federation panel",
        "return ['fed-peers', 'fed-subs-in', 'fed-subs-out', 'fed-outbound', 'fed-dead'].map((id) => document.getElementById(id)?.textContent ?? null);",
        // This daemon has no peers: every section loaded, and empty.
        |v| v == &json!(["none", "none", "none", "none", "none"]),
    )
    .await;

    // Key pinning: the served key pinned says so; another key breaks the plan.
    let served = daemon.get_json("/api/v1/log/keys").await.json["current"]["vkey"]
        .as_str()
        .expect("the served vkey")
        .to_string();
    pin(&b, &base, &served).await;
    b.client
        .goto(&format!("{base}/ui/plans/{plan}"))
        .await
        .expect("plan");
    b.wait_for(
        "verified against the pinned key",
        "return document.getElementById('key-source').textContent;",
        |v| {
            v.as_str().is_some_and(|t| {
                t.starts_with("Checked in this browser against the log key you pinned")
            })
        },
    )
    .await;
    b.wait_for("2 verified", ROWS, |v| all_shown(v, 2, "verified", &[]))
        .await;
    let other_key = vector(include_str!("../docs/vectors/log-checkpoint.json"))["instance_vkey"]
        .as_str()
        .unwrap()
        .to_string();
    pin(&b, &base, &other_key).await;
    b.client
        .goto(&format!("{base}/ui/plans/{plan}"))
        .await
        .expect("plan");
    b.wait_for(
        "broken under another pinned key",
        "return document.getElementById('plan-verdict').textContent;",
        |v| {
            v.as_str()
                .is_some_and(|t| t.contains("not signed by the pinned log key"))
        },
    )
    .await;

    // A token revoked while the page follows a plan: the stream's error
    // frame sends the reader back to the token form, saying why. A read
    // token's page asks what it may do (/api/v1/token) rather than trying
    // the federation routes: no 403 in the console.
    let reader = daemon
        .admin_ok(&["tokens", "create", "--scope", "read", "--name", "viewer"])
        .await
        .trim()
        .to_string();
    b.eval(&format!(
        "sessionStorage.setItem('logbook.token', {reader:?}); localStorage.removeItem('logbook.pins'); return true;"
    ))
    .await;
    b.client
        .goto(&format!("{base}/ui/plans/{plan}"))
        .await
        .expect("plan");
    b.wait_for(
        "the plan stream live with the read token",
        "return document.getElementById('live-state')?.textContent;",
        |v| v == "live",
    )
    .await;
    daemon.admin_ok(&["tokens", "revoke", "viewer"]).await;
    b.wait_for(
        "the token form after the revocation",
        "const f = document.getElementById('token-form'); return f && f.textContent;",
        |v| v.as_str().is_some_and(|t| t.contains("revoked")),
    )
    .await;

    let bad = errors(&b.console().await, false)
        .into_iter()
        .filter(|m| !m.contains("status of 401"))
        .collect::<Vec<_>>();
    assert!(bad.is_empty(), "console errors: {bad:#?}");

    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_javascript_reproduces_the_spec_vectors_in_the_browser() {
    let vectors = json!({
        "journal": vector(include_str!("../docs/vectors/journal-v1.json")),
        "plan": vector(include_str!("../docs/vectors/plan-log-v1.json")),
        "checkpoint": vector(include_str!("../docs/vectors/log-checkpoint.json")),
        "heads": vector(include_str!("../docs/vectors/heads-log-v1.json")),
    });
    let Some(fails) = page_script(include_str!("browser/vectors.js"), vec![vectors]).await else {
        return;
    };
    assert_eq!(
        fails,
        json!([]),
        "the viewer's JavaScript disagrees with the vectors"
    );
}

/// The viewer's marking of invisible and direction-changing characters,
/// with the browser's own Unicode tables: which are boxed, runs as one box,
/// emoji left whole, and at most 1,000 boxes for a text of a million.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_marks_hidden_characters_in_the_browser() {
    let Some(fails) = page_script(include_str!("browser/visible.js"), vec![]).await else {
        return;
    };
    assert_eq!(
        fails,
        json!([]),
        "hidden characters are not marked as they should be"
    );
}

/// What `script` returns when run on a page of a fresh daemon, in the
/// browser; `None` when there is no browser (and the tests may skip).
async fn page_script(script: &str, args: Vec<Value>) -> Option<Value> {
    if !ensure_chromium() {
        return None;
    }
    let _one = one_browser().await;
    let port = free_port();
    let _daemon = Daemon::start(opts(port));
    let b = Browser::start().await;
    let result = b.run_on_page(port, script, args).await;
    b.close().await;
    Some(result)
}

/// Pins `vkey` as the log key on the Keys page.
async fn pin(b: &Browser, base: &str, vkey: &str) {
    b.client
        .goto(&format!("{base}/ui/keys"))
        .await
        .expect("keys page");
    b.type_into("#pin-log", vkey).await;
    b.click("#pin-save").await;
    b.wait_for(
        "the pin saved",
        "return document.getElementById('pin-status').className;",
        |v| v == "verified",
    )
    .await;
}

fn vector(text: &str) -> Value {
    serde_json::from_str(text).expect("a vector file")
}

fn save_screenshot(png: &[u8]) {
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("viewer.png");
    std::fs::write(&target, png).expect("writing the screenshot");
    if std::env::var_os("UPDATE_SCREENSHOT").is_some() {
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/img/viewer.png");
        std::fs::create_dir_all(docs.parent().unwrap()).expect("docs/img");
        std::fs::write(&docs, png).expect("writing docs/img/viewer.png");
    }
}
