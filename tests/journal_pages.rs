//! Pages of events are bounded in memory: a plain page (and `verify=full`'s)
//! is written as it is read from storage, in runs of at most 1 MiB of
//! records; a `verify=1` page, checked from one snapshot, is refused past
//! 16 MiB with the count that fits (docs/http-api.md, "Reading events").

mod common;

use common::{Daemon, DaemonOpts, assert_problem, new_plan};
use serde_json::{Value, json};

/// Appends `n` events of about `size` bytes of payload each.
async fn fill_large(daemon: &Daemon, plan: uuid::Uuid, n: u64, size: usize) {
    for i in 0..n {
        let body = json!({
            "type": "step.completed",
            "actor": "tester",
            "payload": {"i": i, "pad": "x".repeat(size)},
        });
        daemon.append_ok(plan, body).await;
    }
}

fn seqs(page: &Value) -> Vec<u64> {
    page["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events: {page}"))
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_page_of_several_reads_arrives_whole_in_order_and_streamed() {
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();
    // 12 events of 300 KB: a page of them spans four runs of 1 MiB.
    fill_large(&daemon, plan, 12, 300_000).await;

    let page = daemon
        .get_json(&format!("/api/plans/{plan}/events?limit=10"))
        .await;
    assert_eq!(
        page.status,
        200,
        "{}",
        &page.text[..page.text.len().min(300)]
    );
    assert_eq!(page.header("content-type"), Some("application/json"));
    // Written as read: no length known in advance.
    assert_eq!(page.header("transfer-encoding"), Some("chunked"));
    assert!(page.header("content-length").is_none());
    assert_eq!(seqs(&page.json), (1..=10).collect::<Vec<_>>());
    assert_eq!(page.json["next_after"], 10);
    assert_eq!(page.json["plan_id"], plan.to_string());
    assert_eq!(page.json["events"][9]["payload"]["i"], 9);
    // Each event exactly as a single read returns it.
    let one = daemon
        .get_json(&format!("/api/plans/{plan}/events?after=6&limit=1"))
        .await;
    assert_eq!(one.json["events"][0], page.json["events"][6]);

    // The rest: fewer than the limit, so the end.
    let rest = daemon
        .get_json(&format!("/api/plans/{plan}/events?after=10&limit=100"))
        .await;
    assert_eq!(seqs(&rest.json), vec![11, 12]);
    assert_eq!(rest.json["next_after"], 12);
    let beyond = daemon
        .get_json(&format!("/api/plans/{plan}/events?after=12"))
        .await;
    assert_eq!(
        beyond.json,
        json!({"plan_id": plan.to_string(), "events": [], "next_after": 12})
    );

    // verify=full: the chain's report after the streamed page.
    let full = daemon
        .get_json(&format!(
            "/api/plans/{plan}/events?after=1&limit=6&verify=full"
        ))
        .await;
    assert_eq!(full.status, 200);
    assert_eq!(seqs(&full.json), (2..=7).collect::<Vec<_>>());
    assert_eq!(
        full.json["chain_valid"], true,
        "{}",
        full.json["verified_count"]
    );
    assert_eq!(full.json["verified_count"], 12);
    assert_eq!(full.json["next_after"], 7);
}

#[tokio::test]
async fn a_verified_page_too_large_to_hold_is_refused_with_the_count_that_fits() {
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();
    // 18 events of 1,000,000 bytes: more than 16 MiB of records together.
    fill_large(&daemon, plan, 18, 1_000_000).await;

    let refused = daemon
        .get_json(&format!("/api/plans/{plan}/events?limit=100&verify=1"))
        .await;
    assert_eq!(
        assert_problem(&refused, 400),
        "urn:logbook:problem:invalid-query"
    );
    let detail = refused.json["detail"].as_str().unwrap();
    let fits = refused.json["maxLimit"].as_u64().expect("maxLimit");
    assert!((14..18).contains(&fits), "{detail}");
    assert!(detail.contains(&format!("limit={fits}")), "{detail}");

    // As many as fit: checked, and valid.
    let page = daemon
        .get_json(&format!("/api/plans/{plan}/events?limit={fits}&verify=1"))
        .await;
    assert_eq!(
        page.status,
        200,
        "{}",
        &page.text[..page.text.len().min(300)]
    );
    assert_eq!(seqs(&page.json).len() as u64, fits);
    assert_eq!(page.json["chain_valid"], true);
    assert_eq!(page.json["verified_count"], fits);
    assert!(page.json["checkpoint"].is_string());

    // The same page unchecked is written as read, whole.
    let plain = daemon
        .get_json(&format!("/api/plans/{plan}/events?limit=100"))
        .await;
    assert_eq!(seqs(&plain.json), (1..=18).collect::<Vec<_>>());
}

/// A page read in several runs whose plan is deleted meanwhile is cut
/// short (broken JSON), never a valid shorter page, which would say the
/// plan ends there.
#[tokio::test]
async fn a_plan_deleted_while_its_page_is_written_cuts_the_body() {
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();
    // 24 events of 1 MB: twelve runs, more than the sockets buffer.
    fill_large(&daemon, plan, 24, 1_000_000).await;
    let mut response = daemon
        .get(&format!("/api/plans/{plan}/events?limit=24"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = Vec::new();
    while body.len() < 100_000 {
        body.extend(response.chunk().await.unwrap().expect("more body"));
    }
    daemon
        .admin_ok(&["plans", "delete", "--yes", &plan.to_string()])
        .await;
    let rest = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend(chunk),
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    let page: Result<Value, _> = serde_json::from_slice(&body);
    assert!(
        rest.is_err() || page.is_err(),
        "a whole page of {:?} events after the plan was deleted",
        page.ok().map(|p| p["events"].as_array().map(Vec::len))
    );
    assert!(
        daemon
            .wait_log(
                &["was deleted while a page of it was being written"],
                std::time::Duration::from_secs(10)
            )
            .await,
        "{}",
        daemon.log_text()
    );
}
