//! `Prefer: return=minimal` (RFC 7240) on appends: the short answer, the
//! header saying it was applied, and the whole event as the default.

mod common;

use common::{Daemon, DaemonOpts, new_plan};
use serde_json::json;

#[tokio::test]
async fn return_minimal_answers_with_four_members_and_the_default_stays_whole() {
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();
    let body = json!({"type": "bank.message", "actor": "gateway", "payload": {"amount": 12}});

    let full = daemon.append_with(plan, body.clone(), &[]).await;
    assert_eq!(full.status, 201, "{}", full.text);
    assert_eq!(full.header("preference-applied"), None);
    assert_eq!(full.json["payload"], json!({"amount": 12}));

    let minimal = daemon
        .append_with(plan, body.clone(), &[("Prefer", "return=minimal")])
        .await;
    assert_eq!(minimal.status, 201, "{}", minimal.text);
    assert_eq!(minimal.header("preference-applied"), Some("return=minimal"));
    let members: Vec<&String> = minimal.json.as_object().unwrap().keys().collect();
    assert_eq!(members, ["id", "plan_id", "seq", "signature"]);
    assert_eq!(minimal.json["seq"], 2);
    assert_eq!(minimal.json["plan_id"], plan.to_string());

    // The four members are those of the stored event, which chains on.
    let page = daemon
        .get_json(&format!("/api/plans/{plan}/events?after=0&limit=10"))
        .await;
    let stored = &page.json["events"][1];
    for member in ["id", "plan_id", "seq", "signature"] {
        assert_eq!(stored[member], minimal.json[member], "{member}");
    }
    assert_eq!(stored["prev_hash"], full.json["signature"]);

    // `return=representation` and unknown values get the whole event.
    let whole = daemon
        .append_with(plan, body.clone(), &[("Prefer", "return=representation")])
        .await;
    assert_eq!(whole.status, 201);
    assert_eq!(whole.header("preference-applied"), None);
    assert_eq!(whole.json["payload"], json!({"amount": 12}));

    // An idempotent retry honours the preference too.
    let key = ("Idempotency-Key", "minimal-1");
    let first = daemon
        .append_with(plan, body.clone(), &[key, ("Prefer", "return=minimal")])
        .await;
    assert_eq!(first.status, 201, "{}", first.text);
    let retry = daemon
        .append_with(plan, body, &[key, ("Prefer", "wait=1, return=minimal")])
        .await;
    assert_eq!(retry.status, 200, "{}", retry.text);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(retry.header("preference-applied"), Some("return=minimal"));
    assert_eq!(retry.json, first.json);
    assert_eq!(daemon.head(plan).await.unwrap()["head_seq"], 4);
}
