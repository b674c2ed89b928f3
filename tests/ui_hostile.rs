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

use browser::{Browser, ensure_chromium, free_port, one_browser};
use common::{Daemon, DaemonOpts};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_checks_refuse_what_a_lying_daemon_serves() {
    if !ensure_chromium() {
        return;
    }
    let _one = one_browser().await;
    let port = free_port();
    let _daemon = Daemon::start(DaemonOpts::default().listen(&format!("127.0.0.1:{port}")));
    let b = Browser::start().await;
    let script = format!(
        "{}\n{}",
        include_str!("browser/attacker.js"),
        include_str!("browser/hostile.js")
    );
    let fails = b.run_on_page(port, &script, vec![]).await;
    b.close().await;
    assert_eq!(
        fails,
        json!([]),
        "the viewer accepted what a lying daemon served"
    );
}

/// The plan view itself (plan.js) against a lying daemon: what the header
/// and the rows say once the checks have run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_view_never_shows_a_lying_daemon_as_verified() {
    if !ensure_chromium() {
        return;
    }
    let _one = one_browser().await;
    let port = free_port();
    let _daemon = Daemon::start(DaemonOpts::default().listen(&format!("127.0.0.1:{port}")));
    let b = Browser::start().await;
    let script = format!(
        "{}\n{}",
        include_str!("browser/attacker.js"),
        include_str!("browser/hostile-page.js")
    );
    let open = |case: &'static str| {
        let (b, script) = (&b, script.clone());
        async move {
            let started = b.run_on_page(port, &script, vec![json!(case)]).await;
            assert_eq!(started, json!("started"), "{case}");
        }
    };
    const SHOWN: &str = "return [document.getElementById('plan-verdict').className, document.getElementById('plan-verdict').textContent, document.getElementById('witnessed').className, document.getElementById('witnessed').textContent, [...document.querySelectorAll('#events tbody tr')].map(r => r.dataset.state)];";
    let done = |v: &Value| v[3].as_str().is_some_and(|t| !t.ends_with("checking…"));

    // A fork signed for this reader beside a larger witnessed history: the
    // witness line says so, and the plan is broken at the top too.
    open("witnessed-fork").await;
    let shown = b.wait_for("the witnessed fork checked", SHOWN, done).await;
    assert_eq!(shown[2], "broken", "{shown}");
    assert_eq!(shown[0], "verdict broken", "{shown}");
    assert!(shown[1].as_str().unwrap().contains("fork"), "{shown}");
    // The rows checked against the forked checkpoint are not left green.
    let rows = b
        .wait_for("the rows after the fork", SHOWN, |v| {
            v[4].as_array()
                .is_some_and(|r| !r.iter().any(|s| s == "verified"))
        })
        .await;
    assert_eq!(rows[4], json!(["pending", "pending"]), "{rows}");

    // One event whose payload cannot be hashed: that row is broken, the
    // others are checked, and the verdict counts it.
    open("malformed-event").await;
    let shown = b
        .wait_for("the malformed event checked", SHOWN, |v| {
            done(v) && v[0] != "verdict pending"
        })
        .await;
    assert_eq!(
        shown[4],
        json!(["verified", "broken", "verified"]),
        "{shown}"
    );
    assert_eq!(shown[0], "verdict broken", "{shown}");
    assert!(
        shown[1].as_str().unwrap().contains("1 of 3 shown events"),
        "{shown}"
    );

    // Signed events newer than any shown (withheld, or not arrived yet): the
    // verdict is pending and says so, never verified.
    for case in ["withheld-tail", "witnessed-ahead"] {
        open(case).await;
        let shown = b
            .wait_for(case, SHOWN, |v| done(v) && v[0] == "verdict pending")
            .await;
        assert_eq!(shown[4], json!(["verified", "verified"]), "{case}: {shown}");
        assert_eq!(shown[0], "verdict pending", "{case}: {shown}");
        assert!(
            shown[1]
                .as_str()
                .unwrap()
                .contains("1 newer signed event(s) not shown"),
            "{case}: {shown}"
        );
    }

    // Events withheld between those shown: pending, never verified.
    open("gap-in-middle").await;
    let shown = b
        .wait_for("the gap checked", SHOWN, |v| {
            done(v) && v[0] == "verdict pending"
        })
        .await;
    assert_eq!(
        shown[4],
        json!(["verified", "verified", "verified"]),
        "{shown}"
    );
    assert_pending_because(&shown, "1 event(s) between those shown not shown");

    // Witnesses pinned, and the daemon shows no cosigned history reaching
    // its checkpoint (the bundle withheld, or an older one): every event
    // checks, yet the verdict is pending, not the green of a witnessed log.
    for case in ["witness-withheld", "witness-stale"] {
        open(case).await;
        let shown = b
            .wait_for(case, SHOWN, |v| {
                done(v) && v[4] == json!(["verified", "verified", "verified"])
            })
            .await;
        assert_pending_because(&shown, "not (yet) cosigned up to this checkpoint");
    }

    // A quorum cosigned this very checkpoint, three hours ago: too old to
    // count, so pending, and both lines say why.
    open("witness-old").await;
    let shown = b
        .wait_for("the old cosignatures checked", SHOWN, |v| {
            done(v) && v[4] == json!(["verified", "verified"])
        })
        .await;
    assert_stale(&shown, "3 h");

    // Green under a quorum about to turn 10 minutes old, and the daemon then
    // stalls every bundle request: the page goes pending by itself.
    open("witness-ages").await;
    let shown = b
        .wait_for("the aging quorum shown green", SHOWN, |v| {
            done(v) && v[0] == "verdict verified"
        })
        .await;
    assert_eq!(shown[2], "pinned", "{shown}");
    let shown = b
        .wait_for("the aged quorum turned pending", SHOWN, |v| {
            v[0] == "verdict pending"
        })
        .await;
    assert_stale(&shown, "10 min");

    // An erased payload whose redaction cannot be checked (the system
    // journal out of reach): the row says redacted, the verdict pending.
    open("erased-no-record").await;
    let shown = b
        .wait_for("the erased event checked", SHOWN, |v| {
            done(v) && v[4] == json!(["redacted", "verified"])
        })
        .await;
    assert_pending_because(&shown, "1 redacted event(s) without a checked record");

    // The instance's signed heads log says the plan was deleted, yet its
    // events are served: the plan is broken, and the witness line says why.
    open("deleted-plan").await;
    let shown = b
        .wait_for("the deleted plan checked", SHOWN, |v| {
            done(v) && v[0] == "verdict broken"
        })
        .await;
    assert_eq!(shown[2], "broken", "{shown}");
    assert!(shown[3].as_str().unwrap().contains("deleted"), "{shown}");
    assert!(shown[1].as_str().unwrap().contains("deleted"), "{shown}");
    assert_eq!(shown[4], json!(["pending", "pending"]), "{shown}");

    // The same break, then the daemon says 410 and ends the stream: the
    // page turns to its deletion view, and the break it proved stays.
    open("broken-then-deleted").await;
    let shown = b
        .wait_for(
            "the broken plan answered 410",
            "return [window.deletedSent === true, document.getElementById('live-state').textContent, document.getElementById('plan-verdict').className, document.getElementById('plan-verdict').textContent, document.getElementById('witnessed').textContent];",
            |v| v[0] == true && v[1] == "stopped: plan deleted",
        )
        .await;
    assert_eq!(shown[2], "verdict broken", "{shown}");
    assert!(
        shown[3].as_str().unwrap().starts_with("Plan broken: "),
        "{shown}"
    );
    assert!(
        shown[4]
            .as_str()
            .unwrap()
            .contains("the plan was broken before"),
        "{shown}"
    );

    // No witness pinned, and a bundle whose heads-log proof does not verify:
    // the plan is broken, not left green under a red witness line.
    open("bad-bundle-unwitnessed").await;
    let shown = b
        .wait_for("the bad bundle checked", SHOWN, |v| {
            done(v) && v[0] == "verdict broken"
        })
        .await;
    assert_eq!(shown[2], "broken", "{shown}");
    assert!(
        shown[1].as_str().unwrap().contains("witnessed bundle"),
        "{shown}"
    );
    assert_eq!(shown[4], json!(["pending", "pending"]), "{shown}");

    // A log key rotated after the plan checkpoint was checked: the bundle,
    // signed with the new key, checks out against the served keys.
    open("rotated-bundle").await;
    let shown = b
        .wait_for("the rotated bundle checked", SHOWN, |v| {
            done(v) && v[4] == json!(["verified", "verified"])
        })
        .await;
    assert_eq!(shown[0], "verdict verified", "{shown}");
    assert_ne!(shown[2], "broken", "{shown}");
    assert!(
        shown[3].as_str().unwrap().starts_with("Witnessed size 2"),
        "{shown}"
    );

    // A truthy `redacted` that is not `true` hides nothing: the row is
    // verified and its payload shown.
    open("redacted-not-true").await;
    let shown = b
        .wait_for("the not-quite-redacted event checked", SHOWN, |v| {
            done(v) && v[0] == "verdict verified"
        })
        .await;
    assert_eq!(shown[4], json!(["verified", "verified"]), "{shown}");
    let payloads = b
        .eval("return [...document.querySelectorAll('#events tbody td.payload')].map(td => td.textContent);")
        .await;
    assert!(!payloads.to_string().contains("(erased)"), "{payloads}");

    // Witnessed up to 2, then event 3 checked against checkpoint 3 while the
    // witnessed bundle stalls: pending, not the green of the older size.
    open("witness-stalls").await;
    let shown = b
        .wait_for("event 3 checked, unwitnessed", SHOWN, |v| {
            v[4] == json!(["verified", "verified", "verified"])
        })
        .await;
    assert_pending_because(&shown, "not (yet) cosigned up to this checkpoint");

    // A live event altered on the stream: broken once the checkpoint covers it.
    open("live-forgery").await;
    let shown = b
        .wait_for("the live forgery checked", SHOWN, |v| {
            v[4].as_array().is_some_and(|r| r.len() == 3) && v[0] == "verdict broken"
        })
        .await;
    assert_eq!(
        shown[4],
        json!(["broken", "verified", "verified"]),
        "{shown}"
    );
    assert_eq!(shown[0], "verdict broken", "{shown}");
    // While it was not checked yet the verdict was pending, not the old green one.
    let arrival = b.eval("return window.verdictOnArrival;").await;
    assert_eq!(arrival, "verdict pending");

    // This browser checked size 3 and the store was restored to size 2: a
    // rollback, until a Forget in another tab makes the open view check
    // again at once, as a first sight (helper-122, helper-126).
    open("forget-restored").await;
    let shown = b
        .wait_for("the restored store seen as a rollback", SHOWN, |v| {
            v[0] == "verdict broken"
        })
        .await;
    assert!(
        shown[1]
            .as_str()
            .is_some_and(|t| t.contains("went back from size 3 to 2")),
        "{shown}"
    );
    b.eval("window.forgetInAnotherTab(); return true;").await;
    let shown = b
        .wait_for("a first sight after the Forget", SHOWN, |v| {
            v[0] == "verdict verified"
        })
        .await;
    assert_eq!(shown[4], json!(["verified", "verified"]), "{shown}");
    b.close().await;
}

/// The plan view's verdict (`SHOWN`'s first two) is pending, and says `why`.
/// Pending because the pinned witnesses' quorum cosigned `ago` ago, which
/// both the verdict and the witness line say.
fn assert_stale(shown: &Value, ago: &str) {
    assert_pending_because(
        shown,
        &format!("your pinned witnesses last cosigned {ago} ago"),
    );
    let line = shown[3].as_str().unwrap();
    assert!(line.contains("too old to count (stale)"), "{shown}");
    assert_eq!(shown[2], "muted", "{shown}");
}

fn assert_pending_because(shown: &Value, why: &str) {
    assert_eq!(shown[0], "verdict pending", "{shown}");
    assert!(
        shown[1].as_str().is_some_and(|text| text.contains(why)),
        "{why}: {shown}"
    );
}
