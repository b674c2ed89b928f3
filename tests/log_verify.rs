//! `?verify=1` checks the page against the plan's Merkle tree, in
//! O(page + log n); `?verify=full` keeps the whole-chain walk
//! (docs/verifiable-logs.md, "Verifying a page").

mod common;

use common::{Daemon, DaemonOpts, assert_problem, event_body, new_plan, with_offline_store};
use logbook_journal::chain::Signable;
use logbook_tlog::checkpoint::verify_checkpoint;
use logbook_tlog::note::Verifier;
use serde_json::Value;

async fn page(daemon: &Daemon, plan: impl std::fmt::Display, query: &str) -> Value {
    let resp = daemon
        .get_json(&format!("/api/plans/{plan}/events?{query}"))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    resp.json
}

#[tokio::test]
async fn verify_1_checks_the_page_and_full_checks_the_chain() {
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();
    for i in 0..30 {
        daemon.append_ok(plan, event_body("step.started", i)).await;
    }
    let one = page(&daemon, plan, "after=10&limit=5&verify=1").await;
    assert_eq!(one["chain_valid"], true, "{one}");
    assert_eq!(one["verified_count"], 5, "the events of this page: {one}");
    assert_eq!(one["events"].as_array().unwrap().len(), 5);
    assert_eq!(one["events"][0]["seq"], 11);

    let full = page(&daemon, plan, "after=10&limit=5&verify=full").await;
    assert_eq!(full["chain_valid"], true, "{full}");
    assert_eq!(full["verified_count"], 30, "the whole chain: {full}");
    assert_eq!(full["events"].as_array().unwrap().len(), 5);

    // The last page ends at the head; a page beyond it is empty and valid.
    let last = page(&daemon, plan, "after=25&verify=1").await;
    assert_eq!(
        (last["chain_valid"].clone(), last["verified_count"].clone()),
        (true.into(), 5.into())
    );
    let beyond = page(&daemon, plan, "after=30&verify=1").await;
    assert_eq!(
        (
            beyond["chain_valid"].clone(),
            beyond["verified_count"].clone()
        ),
        (true.into(), 0.into())
    );

    // The checkpoint the page was checked against: the head, signed.
    let log_key = daemon.get_json(&format!("/api/plans/{plan}/log-key")).await;
    let verifier = Verifier::parse(&log_key.text).unwrap();
    let note = one["checkpoint"]
        .as_str()
        .expect("verify=1 carries the checkpoint");
    let checkpoint = verify_checkpoint(note.as_bytes(), &verifier).expect("it verifies");
    assert_eq!(checkpoint.size, 30);
    assert_eq!(checkpoint.origin, verifier.name);
    assert!(
        full.get("checkpoint").is_none(),
        "verify=full walks the chain only"
    );

    let bad = daemon
        .get_json(&format!("/api/plans/{plan}/events?verify=2"))
        .await;
    assert_problem(&bad, 400);
}

/// Someone who holds the HMAC key rewrites the last event and signs it
/// again, so its chain checks pass. Its leaf is no longer the one in the
/// plan's tree: `verify=1` on a page holding it says `root_mismatch` at
/// that seq. Pages without it still verify (a page check is local), and
/// the whole-chain walk sees the head record disagree.
#[tokio::test]
async fn a_re_signed_forgery_does_not_rebuild_the_root() {
    let mut daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();
    for i in 0..8 {
        daemon.append_ok(plan, event_body("step.started", i)).await;
    }
    assert!(daemon.stop().success());
    with_offline_store(&daemon, move |store| {
        let mut event = store.plan_events_after(&plan, 7, 1).unwrap().remove(0);
        event.actor = Some("mallory".into());
        event.signature = Signable::of(&event).sign(common::TEST_SECRET.as_bytes());
        store.overwrite_event_unchecked(&event).unwrap();
    })
    .await;
    daemon.restart();

    let holding = page(&daemon, plan, "after=5&verify=1").await;
    assert_eq!(holding["chain_valid"], false, "{holding}");
    assert_eq!(holding["broken_at"], 8, "{holding}");
    assert_eq!(holding["broken_reason"], "root_mismatch", "{holding}");
    assert_eq!(
        holding["verified_count"], 2,
        "seq 6 and 7 verified: {holding}"
    );

    let before = page(&daemon, plan, "limit=7&verify=1").await;
    assert_eq!(before["chain_valid"], true, "{before}");

    let full = page(&daemon, plan, "verify=full").await;
    assert_eq!(full["chain_valid"], false, "{full}");
    assert_eq!(full["broken_at"], 8, "{full}");
}

/// An edit without the key breaks the chain checks first, as before.
#[tokio::test]
async fn an_edit_without_the_key_is_named_by_the_chain_check() {
    let mut daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();
    for i in 0..6 {
        daemon.append_ok(plan, event_body("step.started", i)).await;
    }
    assert!(daemon.stop().success());
    with_offline_store(&daemon, move |store| {
        let mut event = store.plan_events_after(&plan, 2, 1).unwrap().remove(0);
        event.actor = Some("mallory".into());
        store.overwrite_event_unchecked(&event).unwrap();
    })
    .await;
    daemon.restart();
    for query in ["verify=1", "after=1&limit=3&verify=1", "verify=full"] {
        let report = page(&daemon, plan, query).await;
        assert_eq!(report["broken_at"], 3, "{query}: {report}");
        assert_eq!(report["broken_reason"], "signature", "{query}: {report}");
    }
}

/// Events removed from the tail (head record and tree left alone): a page
/// that stops short of the head says so, as the whole-chain walk does.
#[tokio::test]
async fn a_page_that_stops_short_of_the_head_is_a_gap() {
    let mut daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();
    for i in 0..10 {
        daemon.append_ok(plan, event_body("step.started", i)).await;
    }
    assert!(daemon.stop().success());
    with_offline_store(&daemon, move |store| {
        for seq in [9, 10] {
            store.remove_event_unchecked(&plan, seq).unwrap();
        }
    })
    .await;
    daemon.restart();
    for query in ["after=5&verify=1", "after=8&verify=1", "verify=full"] {
        let report = page(&daemon, plan, query).await;
        assert_eq!(report["chain_valid"], false, "{query}: {report}");
        assert_eq!(report["broken_at"], 9, "{query}: {report}");
        assert_eq!(report["broken_reason"], "seq_gap", "{query}: {report}");
    }
    // A full page before the gap is fine on its own.
    let before = page(&daemon, plan, "limit=8&verify=1").await;
    assert_eq!(before["chain_valid"], true, "{before}");
}

/// A whole-chain walk uses every core and runs to its end even when its
/// client leaves, so the API runs one at a time: the others get 503 with
/// `Retry-After` at once, never a queue of walks.
#[tokio::test]
async fn whole_chain_walks_run_one_at_a_time() {
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();
    // Enough events that a walk is still running when the others arrive.
    let appenders = (0..16u64).map(|worker| {
        let daemon = &daemon;
        async move {
            for i in 0..500 {
                daemon
                    .append_ok(plan, event_body("step.started", worker * 1000 + i))
                    .await;
            }
        }
    });
    futures_util::future::join_all(appenders).await;
    let path = format!("/api/plans/{plan}/events?limit=1&verify=full");
    let mut refused = 0;
    for _round in 0..3 {
        let walks = (0..16).map(|_| daemon.get_json(&path));
        for resp in futures_util::future::join_all(walks).await {
            if resp.status == 503 {
                assert_eq!(
                    assert_problem(&resp, 503),
                    "urn:logbook:problem:unavailable"
                );
                assert_eq!(resp.headers["retry-after"], "1");
                assert!(
                    resp.json["detail"]
                        .as_str()
                        .unwrap()
                        .contains("verify=full"),
                    "{}",
                    resp.text
                );
                refused += 1;
            } else {
                assert_eq!(resp.status, 200, "{}", resp.text);
                assert_eq!(resp.json["chain_valid"], true, "{}", resp.text);
                assert_eq!(resp.json["verified_count"], 8000, "{}", resp.text);
            }
        }
        if refused > 0 {
            break;
        }
    }
    assert!(
        refused > 0,
        "16 walks at once, three times, and none was refused"
    );
    // Once the walks are over, one goes through.
    let full = page(&daemon, plan, "limit=1&verify=full").await;
    assert_eq!(full["chain_valid"], true, "{full}");
    // Any client can cause these refusals: they are not ERROR lines, which
    // an operator must act on.
    let log = daemon.log_text();
    assert!(
        !log.lines().any(|l| l.contains("ERROR")),
        "{}",
        log.lines()
            .filter(|l| l.contains("ERROR"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
