//! Federation across a crash: a sender killed with SIGKILL under load (once,
//! and in a short crash loop), a sender killed after the receiver stored a
//! batch but before the acks reached it, and a receiver killed while
//! batches are in flight. After the restart every acknowledged append is on
//! the sender as acknowledged, every chain verifies, and the receiver holds
//! every stored event exactly once, in order per plan, with continuity ok,
//! and no outbound message is dead or left undelivered.
//!
//! The sender's appends go through the write-ahead segment: a kill -9 loses
//! redb's unsynced commits, and the restart replays the events with the
//! outbox message ids they queued (docs/journal-format.md §8). A copy the
//! receiver took before the crash comes again under the same id, so the
//! receiver's dedupe keeps it once.

mod common;
mod federation_common;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use federation_common::*;
use serde_json::{Value, json};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);
/// Retries come quickly, so a restart is caught up within seconds.
const FAST_RETRY: &str = "retry_initial_ms = 100\nretry_max_secs = 1";
/// Appenders per plan; every second one sends an `Idempotency-Key`.
const APPENDERS_PER_PLAN: usize = 2;
/// A bound on each appender's requests per run, so the backlog stays small
/// however fast the machine is.
const MAX_PER_APPENDER: u64 = 150;

/// An append the load sent and got no answer to (the kill cut it): its
/// body, and its key if it had one. It may or may not be stored.
struct Unanswered {
    plan: Uuid,
    key: Option<String>,
    body: Value,
}

/// Concurrent appenders on alpha, each on one plan, recording every event
/// acknowledged with 201. An appender stops at its bound, when told to, or
/// at its first transport error (the daemon went away), keeping the request
/// that got no answer.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Value>>>,
    tasks: Vec<tokio::task::JoinHandle<Option<Unanswered>>>,
}

impl Load {
    fn start(node: &Node, plans: &[Uuid], cycle: usize) -> Load {
        Load::start_with(node, plans, cycle, "step.completed")
    }

    /// Appenders of `event_type` events, unkeyed.
    fn start_typed(node: &Node, plans: &[Uuid], event_type: &'static str) -> Load {
        Load::start_with(node, plans, 0, event_type)
    }

    fn start_with(node: &Node, plans: &[Uuid], cycle: usize, event_type: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (p, &plan) in plans.iter().enumerate() {
            for worker in 0..APPENDERS_PER_PLAN {
                let client = node.http.clone();
                let url = node.url(&format!("/api/plans/{plan}/events"));
                let (stop, acked) = (stop.clone(), acked.clone());
                let keyed = worker % 2 == 1;
                tasks.push(tokio::spawn(async move {
                    for n in 1..=MAX_PER_APPENDER {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let body = json!({
                            "type": event_type,
                            "actor": "tester",
                            "payload": {"cycle": cycle, "plan": p, "worker": worker, "n": n},
                        });
                        let key = keyed.then(|| format!("c{cycle}-p{p}-w{worker}-n{n}"));
                        let mut request = client
                            .post(&url)
                            .timeout(Duration::from_secs(20))
                            .json(&body);
                        if let Some(key) = &key {
                            request = request.header("Idempotency-Key", key);
                        }
                        let unanswered = Unanswered { plan, key, body };
                        let Ok(response) = request.send().await else {
                            return Some(unanswered);
                        };
                        let status = response.status().as_u16();
                        // The body may be cut by the kill; only a complete 201 counts.
                        let Ok(text) = response.text().await else {
                            return Some(unanswered);
                        };
                        match status {
                            201 => acked
                                .lock()
                                .unwrap()
                                .push(serde_json::from_str(&text).expect("201 body is JSON")),
                            503 => {}
                            other => panic!("append answered {other}: {text}"),
                        }
                    }
                    None
                }));
            }
        }
        Load { stop, acked, tasks }
    }

    fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits (bounded) until at least `n` appends were acknowledged.
    async fn wait_for_acks(&self, n: usize) {
        wait_for(&format!("{n} acknowledged appends"), WAIT, || async {
            (self.acked_count() >= n).then_some(())
        })
        .await;
    }

    async fn finish(self) -> (Vec<Value>, Vec<Unanswered>) {
        self.stop.store(true, Ordering::SeqCst);
        let mut unanswered = Vec::new();
        for task in self.tasks {
            let cut = tokio::time::timeout(WAIT, task)
                .await
                .expect("an appender did not stop")
                .expect("an appender failed");
            unanswered.extend(cut);
        }
        let acked = Arc::try_unwrap(self.acked).unwrap().into_inner().unwrap();
        (acked, unanswered)
    }
}

/// What each start's replay of the write-ahead segment did, from the log.
fn replay_lines(node: &Node) -> Vec<String> {
    node.log()
        .lines()
        .filter(|l| l.contains("replayed the write-ahead segment"))
        .filter_map(|l| l.find("restored=").map(|i| l[i..].to_string()))
        .map(|l| l.split(" micros").next().unwrap().to_string())
        .collect()
}

/// A plan's events on `node`, all pages.
async fn all_events(node: &Node, plan: &Uuid) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let (status, body) = node
            .get(&format!(
                "/api/plans/{plan}/events?after={after}&limit=1000"
            ))
            .await;
        assert_eq!(status, 200, "listing events: {body}");
        let page = body["events"].as_array().expect("events array").clone();
        if page.is_empty() {
            return out;
        }
        after = body["next_after"].as_u64().expect("next_after");
        out.extend(page);
    }
}

/// Each plan's stored chain on `node`: seq 1..=n, linked, verified whole by
/// the daemon (`verify=full`), and its head agreeing.
async fn verified_chains(node: &Node, plans: &[Uuid]) -> BTreeMap<String, Vec<Value>> {
    let mut stored = BTreeMap::new();
    for plan in plans {
        let events = all_events(node, plan).await;
        for (i, event) in events.iter().enumerate() {
            assert_eq!(event["seq"], i as u64 + 1, "{plan}: seq of event #{i}");
            let prev = if i == 0 {
                Value::Null
            } else {
                events[i - 1]["signature"].clone()
            };
            assert_eq!(event["prev_hash"], prev, "{plan}: link of seq {}", i + 1);
        }
        let (status, report) = node
            .get(&format!("/api/plans/{plan}/events?verify=full&limit=1"))
            .await;
        assert_eq!(status, 200, "{report}");
        assert_eq!(report["chain_valid"], true, "chain of {plan}: {report}");
        assert_eq!(report["broken_at"], Value::Null, "{plan}: {report}");
        let (status, head) = node.get(&format!("/api/plans/{plan}")).await;
        assert_eq!(status, 200, "{head}");
        assert_eq!(head["head_seq"], events.len() as u64, "{plan}: head");
        stored.insert(plan.to_string(), events);
    }
    stored
}

/// No request was stored twice: every payload the load sends is unique
/// within its plan, so a keyed retry whose idempotency record the crash
/// lost would show here as a second copy.
fn assert_each_request_stored_once(stored: &BTreeMap<String, Vec<Value>>) {
    for (plan, events) in stored {
        let mut seen = HashSet::new();
        for event in events {
            let payload = event["payload"].to_string();
            assert!(seen.insert(payload), "{plan}: stored twice: {event}");
        }
    }
}

/// Sends the keyed requests that the kill cut again, with their keys: a
/// request that was stored answers 200 with the original event (the
/// idempotency record came back with it), one that was not is appended
/// now (201). Either way the event is acknowledged now; returned, with
/// how many were answered 200.
async fn retry_unanswered(node: &Node, unanswered: &[Unanswered]) -> (Vec<Value>, usize) {
    let (mut events, mut replayed) = (Vec::new(), 0);
    for cut in unanswered {
        let Some(key) = &cut.key else { continue };
        let response = node
            .http
            .post(node.url(&format!("/api/plans/{}/events", cut.plan)))
            .header("Idempotency-Key", key)
            .json(&cut.body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let event: Value = response.json().await.unwrap();
        assert!(
            matches!(status, 200 | 201),
            "retry of {key}: {status} {event}"
        );
        assert_eq!(event["payload"], cut.body["payload"], "retry of {key}");
        replayed += usize::from(status == 200);
        events.push(event);
    }
    (events, replayed)
}

/// Waits until alpha's outbox holds exactly one message per stored event,
/// every one delivered, and returns them. None may be dead.
async fn all_delivered(alpha: &Node, expected: usize) -> Vec<Value> {
    let out = wait_for("every outbound message delivered", WAIT, || async {
        let out = alpha.messages("direction=outbound").await;
        let dead: Vec<&Value> = out.iter().filter(|m| m["status"] == "dead").collect();
        assert!(dead.is_empty(), "dead messages: {dead:?}");
        (out.len() >= expected && out.iter().all(|m| m["status"] == "delivered")).then_some(out)
    })
    .await;
    assert_eq!(out.len(), expected, "one outbound message per stored event");
    assert!(out.iter().all(|m| m["peer"] == "beta"));
    out
}

/// Beta received every event alpha stores exactly once, each plan's in
/// order with continuity ok, under the message ids alpha sent; and beta
/// reports no continuity anomaly.
async fn assert_received_once_in_order(
    beta: &Node,
    stored: &BTreeMap<String, Vec<Value>>,
    outbound: &[Value],
) {
    let inbound = beta.messages("direction=inbound").await;
    let total: usize = stored.values().map(Vec::len).sum();
    assert_eq!(inbound.len(), total, "exactly once");
    let mut per_plan: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for m in &inbound {
        assert_eq!(m["eventType"], "step.completed");
        let plan = m["payload"]["plan_id"].as_str().unwrap().to_string();
        per_plan.entry(plan).or_default().push(m);
    }
    for (plan, events) in stored {
        let got = per_plan.get(plan).map_or(&[][..], Vec::as_slice);
        assert_eq!(got.len(), events.len(), "{plan}: received once each");
        for (i, (m, event)) in got.iter().zip(events).enumerate() {
            assert_eq!(&m["payload"], event, "{plan}: in order, whole, at #{i}");
            assert_eq!(
                m["continuity"]["status"], "ok",
                "{plan}: continuity at #{i}: {m}"
            );
        }
    }
    let (sent, got) = (message_ids(outbound), message_ids(&inbound));
    assert_eq!(
        sent.len(),
        outbound.len(),
        "outbound message ids are unique"
    );
    assert_eq!(sent, got, "beta holds exactly the messages alpha sent");
    let (status, anomalies) = beta.get("/api/v1/federation/events/continuity").await;
    assert_eq!(status, 200, "{anomalies}");
    assert_eq!(anomalies["anomalies"], json!([]));
}

/// `cycles` times: appenders on alpha, SIGKILL alpha while they run (each
/// cycle at a different moment), restart it on the same data dir, check
/// every acknowledged append, retry the keyed appends the kill cut, and
/// check that beta holds every stored event exactly once, in order. Then
/// alpha takes one more append per plan, delivered the same way.
async fn sender_crashes(cycles: usize) {
    let (mut alpha, beta) = subscribed_pair(FAST_RETRY).await;
    let plans = [Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7()];
    let mut acked = Vec::new();
    let (mut cut, mut replayed_keys, mut redelivered) = (0, 0, 0);
    for cycle in 0..cycles {
        let load = Load::start(&alpha, &plans, cycle);
        load.wait_for_acks(60).await;
        tokio::time::sleep(Duration::from_millis(50 + (cycle as u64 * 70) % 200)).await;
        alpha.kill_9();
        let (now_acked, unanswered) = load.finish().await;
        assert!(
            now_acked.len() >= 60,
            "the load ran: {} acks",
            now_acked.len()
        );
        acked.extend(now_acked);
        cut += unanswered.len();
        let held_before: HashSet<String> = inbound_ids(&beta).await;
        let restarted_at = now_ms();

        alpha.restart();
        let stored = verified_chains(&alpha, &plans).await;
        common::assert_acked_stored(&stored, &acked);
        let (retried, answered_200) = retry_unanswered(&alpha, &unanswered).await;
        acked.extend(retried);
        replayed_keys += answered_200;
        let stored = verified_chains(&alpha, &plans).await;
        common::assert_acked_stored(&stored, &acked);
        assert_each_request_stored_once(&stored);
        let total = stored.values().map(Vec::len).sum();
        let outbound = all_delivered(&alpha, total).await;
        assert_received_once_in_order(&beta, &stored, &outbound).await;
        // Copies beta took before the crash whose outbox rows alpha's redb
        // lost: the replay queued them again (a row's createdAt is when it
        // was queued), they were sent again, and beta kept them once.
        redelivered += outbound
            .iter()
            .filter(|m| {
                m["createdAt"].as_i64().unwrap() >= restarted_at
                    && held_before.contains(m["messageId"].as_str().unwrap())
            })
            .count();
    }
    // The journal goes on from where the last crash left it, and these
    // events too reach beta with continuity ok.
    for plan in &plans {
        let (status, event) = alpha
            .post(
                &format!("/api/plans/{plan}/events"),
                &json!({"type": "step.completed", "actor": "tester", "payload": {"last": true}}),
            )
            .await;
        assert_eq!(status, 201, "{event}");
        acked.push(event);
    }
    let stored = verified_chains(&alpha, &plans).await;
    common::assert_acked_stored(&stored, &acked);
    let total = stored.values().map(Vec::len).sum();
    let outbound = all_delivered(&alpha, total).await;
    assert_received_once_in_order(&beta, &stored, &outbound).await;
    eprintln!(
        "sender crashes: {cycles} kill -9 cycles, {} acknowledged, {cut} cut by the kill ({replayed_keys} keyed ones found stored on retry), {total} stored and delivered, {redelivered} sent again after a replay; {:?}",
        acked.len(),
        replay_lines(&alpha)
    );
}

async fn append_step(node: &Node, plan: &Uuid, n: u64) -> (u16, Value) {
    node.post(
        &format!("/api/plans/{plan}/events"),
        &json!({"type": "step.completed", "payload": {"n": n}}),
    )
    .await
}

/// Like [`subscribed_pair`], with alpha reaching beta through a
/// [`HoldingRelay`].
async fn relayed_pair(alpha_fed: &str) -> (Node, Node, HoldingRelay) {
    let (pa, pb) = (free_port(), free_port());
    let relay = HoldingRelay::start(pb).await;
    let (ka, kb) = (test_key("alpha"), test_key("beta"));
    let beta_via_relay = peer_config("beta", relay.port, &kb);
    let alpha = Node::start("alpha", pa, alpha_fed, &beta_via_relay);
    let beta = Node::start("beta", pb, "", &peer_config("alpha", pa, &ka));
    beta.subscribe("alpha", "step.>").await;
    (alpha, beta, relay)
}

/// The message ids beta has received.
async fn inbound_ids(beta: &Node) -> HashSet<String> {
    beta.messages("direction=inbound")
        .await
        .iter()
        .map(|m| m["messageId"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_killed_mid_load_delivers_every_stored_event_once_in_order() {
    sender_crashes(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_crash_loop_delivers_every_stored_event_once_in_order() {
    sender_crashes(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_killed_mid_delivery_gets_every_event_once_in_order() {
    // Small batches, so that many are in flight while beta dies; a relay in
    // front of beta, so that beta dies after storing a batch and before
    // alpha hears the acks.
    let (alpha, mut beta, relay) = relayed_pair(&format!("{FAST_RETRY}\nbatch_size = 10")).await;
    let plans = [Uuid::now_v7(), Uuid::now_v7()];
    let per_plan = 150;
    // The appenders pause after a third, until the relay holds answers, so
    // that batches are still to come when it does (however fast the
    // machine is).
    let (go_on, gate) = tokio::sync::watch::channel(false);
    let mut appenders = Vec::new();
    for plan in plans {
        let (client, url) = (
            alpha.http.clone(),
            alpha.url(&format!("/api/plans/{plan}/events")),
        );
        let mut gate = gate.clone();
        appenders.push(tokio::spawn(async move {
            for n in 1..=per_plan {
                if n == per_plan / 3 + 1 {
                    gate.wait_for(|open| *open).await.unwrap();
                }
                let response = client
                    .post(&url)
                    .json(&json!({"type": "step.completed", "payload": {"n": n}}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
            }
        }));
    }
    // Kill beta once deliveries are under way, while alpha still appends,
    // just after beta stored a batch.
    let received = wait_for("beta to receive some events", WAIT, || async {
        let n = beta.messages("direction=inbound").await.len();
        (n >= 30).then_some(n)
    })
    .await;
    relay.hold(true);
    go_on.send(true).unwrap();
    relay.wait_kept().await;
    beta.kill_9();
    let killed_at = now_ms();
    relay.hold(false);
    let undelivered = alpha
        .messages("direction=outbound")
        .await
        .iter()
        .filter(|m| m["status"] != "delivered")
        .count();
    for appender in appenders {
        tokio::time::timeout(WAIT, appender)
            .await
            .expect("the appends did not finish")
            .expect("an append failed");
    }
    beta.restart();

    let stored = verified_chains(&alpha, &plans).await;
    let total: usize = stored.values().map(Vec::len).sum();
    assert_eq!(total, plans.len() * per_plan);
    let outbound = all_delivered(&alpha, total).await;
    assert_received_once_in_order(&beta, &stored, &outbound).await;
    // The batch beta stored before it died, whose acks alpha never saw
    // (and any other): sent again, and kept once.
    let received_before: HashSet<String> = beta
        .messages("direction=inbound")
        .await
        .iter()
        .filter(|m| m["receivedAt"].as_i64().unwrap() < killed_at)
        .map(|m| m["messageId"].as_str().unwrap().to_string())
        .collect();
    let redelivered = outbound
        .iter()
        .filter(|m| {
            m["attempts"].as_u64().unwrap() > 1
                && received_before.contains(m["messageId"].as_str().unwrap())
        })
        .count();
    let retried = outbound.iter().filter(|m| m["attempts"] != 1).count();
    eprintln!(
        "receiver killed after {received} received, {undelivered} outbound undelivered then; all {total} delivered once, {retried} after a retry, {redelivered} of them sent again though beta had them"
    );
    assert!(redelivered > 0, "the held batch was sent again");
}

/// Alpha is killed after beta stored a batch and before alpha heard the
/// acks, so before alpha recorded the delivery, whose durable commit would
/// also have made the batch's events durable in redb: the restart puts the
/// events back from the write-ahead segment and queues the copies again
/// under the same message ids, alpha sends them again, and beta, which has
/// them, keeps each once. A relay in front of beta holds the acks back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_killed_before_the_ack_sends_again_and_the_receiver_keeps_once() {
    // No heads-log pass (a durable commit) during the test.
    let (mut alpha, beta, relay) =
        relayed_pair(&format!("{FAST_RETRY}\ninterval_secs = 3600")).await;
    let plan = Uuid::now_v7();
    for n in 1..=3 {
        assert_eq!(append_step(&alpha, &plan, n).await.0, 201);
    }
    all_delivered(&alpha, 3).await;

    // Appenders on another plan, of a type beta does not take, keep the
    // writer from going idle (an idle writer may checkpoint redb).
    // If alpha still made the batch durable before the kill, its rows are
    // sent again from redb rather than from the replay: the same checks
    // hold, and the replay's log line says which path ran.
    let busy = Uuid::now_v7();
    let load = Load::start_typed(&alpha, &[busy], "bank.message");
    load.wait_for_acks(20).await;
    relay.hold(true);
    let mut acked = Vec::new();
    for n in 4..=13 {
        let (status, event) = append_step(&alpha, &plan, n).await;
        assert_eq!(status, 201, "{event}");
        acked.push(event);
    }
    relay.wait_kept().await;
    alpha.kill_9();
    acked.extend(load.finish().await.0);
    relay.hold(false);
    let held_before = inbound_ids(&beta).await;
    assert!(
        held_before.len() > 3,
        "beta stored the batch whose ack was held"
    );
    let restarted_at = now_ms();

    alpha.restart();
    let plans = [plan, busy];
    let stored = verified_chains(&alpha, &plans).await;
    common::assert_acked_stored(&stored, &acked);
    let mut only_plan = stored.clone();
    only_plan.remove(&busy.to_string());
    let total = only_plan[&plan.to_string()].len();
    let outbound = all_delivered(&alpha, total).await;
    assert_received_once_in_order(&beta, &only_plan, &outbound).await;
    let sent_again: Vec<&Value> = outbound
        .iter()
        .filter(|m| held_before.contains(m["messageId"].as_str().unwrap()))
        .filter(|m| m["payload"]["seq"].as_u64().unwrap() > 3)
        .collect();
    eprintln!(
        "held ack: beta had {} of the burst; {:?}",
        sent_again.len(),
        replay_lines(&alpha)
    );
    assert!(!sent_again.is_empty(), "beta had part of the burst");
    // The path this test is for: the restart put events back from the
    // segment (the load kept the writer from an idle checkpoint).
    let restored: u64 = replay_lines(&alpha)
        .iter()
        .filter_map(|l| {
            l.strip_prefix("restored=")?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert!(
        restored > 0,
        "the restart replayed the segment: {:?}",
        replay_lines(&alpha)
    );
    // A copy queued again by the replay keeps the time its event was
    // made, so its `max_age_secs` does not start again at the restart.
    for m in &sent_again {
        assert!(
            m["createdAt"].as_i64().unwrap() < restarted_at,
            "a copy put back by the replay is dated before the restart: {m}"
        );
    }
}
