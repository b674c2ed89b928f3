//! `POST /api/v1/witness/add-checkpoint` on real daemons: beta witnesses
//! alpha, its federated peer. Alpha's heads-log checkpoints are made here
//! with alpha's real log key (read from its data dir), named alpha's
//! `{origin_prefix}`, the origin beta learns from alpha's instance document.
//!
//! The statuses are c2sp.org/tlog-witness's; each refusal changes nothing,
//! and contradicting checkpoints are kept as evidence, listed by
//! `logbook admin witness evidence` and counted in the metrics.

mod federation_common;

use std::process::Command;

use federation_common::*;
use logbook_tlog::checkpoint::Checkpoint;
use logbook_tlog::cosignature::CosignatureVerifier;
use logbook_tlog::merkle::{Hash, StreamingRoot, leaf_hash};
use logbook_tlog::note::{Note, Signer25519};
use logbook_tlog::witness::AddCheckpoint;
use serde_json::Value;

const ROUTE: &str = "/api/v1/witness/add-checkpoint";
const ORIGIN: &str = "logbook/alpha";

/// MTH of leaves `from..to` of the test tree (leaf i hashes "e{i}").
fn mth(from: u64, to: u64) -> Hash {
    let mut root = StreamingRoot::new();
    for i in from..to {
        root.push(leaf_hash(format!("e{i}").as_bytes()));
    }
    root.root()
}

/// Alpha's log key from its data dir, named its origin prefix.
fn alpha_signer(alpha: &Node) -> Signer25519 {
    let skey = std::fs::read_to_string(alpha.data_dir().join("data/log.key")).unwrap();
    Signer25519::parse_skey(skey.trim())
        .unwrap()
        .renamed(ORIGIN)
        .unwrap()
}

/// The signed checkpoint note of size `size` with `root`.
fn note(signer: &Signer25519, size: u64, root: Hash) -> Vec<u8> {
    let text = Checkpoint::new(ORIGIN, size, root).unwrap().to_text();
    let signature = signer.sign(&text).unwrap();
    Note {
        text,
        signatures: vec![signature],
    }
    .to_text()
    .into_bytes()
}

fn body(old: u64, proof: Vec<Hash>, note: Vec<u8>) -> Vec<u8> {
    AddCheckpoint { old, proof, note }.to_bytes()
}

/// Posts a raw body; returns the status, content type and body text.
async fn add(node: &Node, body: Vec<u8>) -> (u16, String, String) {
    let r = reqwest::Client::new()
        .post(node.url(ROUTE))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, content_type, r.text().await.unwrap())
}

/// What beta has cosigned for alpha, seen from the outside: a larger
/// checkpoint with `old 0` is answered 409 with the size (it is no
/// evidence: a larger size contradicts nothing).
async fn witnessed_size(beta: &Node, signer: &Signer25519) -> String {
    let (status, _, text) = add(beta, body(0, vec![], note(signer, 1 << 40, [0; 32]))).await;
    assert_eq!(status, 409, "{text}");
    text
}

fn evidence(beta: &Node) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_logbook"))
        .args(["admin", "--json", "--socket"])
        .arg(beta.data_dir().join("admin.sock"))
        .args(["witness", "evidence"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn evidence_metric(beta: &Node, reason: &str) -> u64 {
    let text = beta
        .http
        .get(beta.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix =
        format!("logbook_witness_evidence_total{{origin=\"{ORIGIN}\",reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beta_cosigns_alpha_and_keeps_evidence_of_contradictions() {
    let (pa, pb) = (free_port(), free_port());
    let (ka, kb) = (test_key("alpha"), test_key("beta"));
    let alpha = Node::start("alpha", pa, "", &peer_config("beta", pb, &kb));
    // The default [witness] limits: a burst of 20 covers this test's requests.
    let beta = Node::start("beta", pb, "", &peer_config("alpha", pa, &ka));
    let signer = alpha_signer(&alpha);

    // Beta publishes its witness key, bound to its RSA key.
    let (status, doc) = beta.get("/api/v1/federation/instance").await;
    assert_eq!(status, 200, "{doc}");
    let vkey = doc["witnessKey"].as_str().unwrap();
    let witness = CosignatureVerifier::parse(vkey).unwrap();
    assert_eq!(witness.name, "logbook/beta");
    assert!(logbook_federation::message::verify_key_binding(
        &kb.to_public_key(),
        logbook_federation::message::BoundKey::Witness,
        "beta",
        vkey,
        doc["witnessKeySignature"].as_str().unwrap(),
    ));
    assert_ne!(doc["witnessKey"], doc["logKey"]);

    // Bad input first, while nothing is stored: each changes nothing.
    let good4 = note(&signer, 4, mth(0, 4));
    let (status, ..) = add(&beta, b"garbage".to_vec()).await;
    assert_eq!(status, 400);
    let stranger = Signer25519::new("logbook/nobody", &[3; 32]).unwrap();
    let text = Checkpoint::new("logbook/nobody", 4, mth(0, 4))
        .unwrap()
        .to_text();
    let unknown = Note {
        signatures: vec![stranger.sign(&text).unwrap()],
        text,
    };
    let (status, ..) = add(&beta, body(0, vec![], unknown.to_text().into_bytes())).await;
    assert_eq!(status, 404, "an unknown origin is 404 (tlog-witness)");
    // The witness's own origins are never a peer's, whoever signs them.
    for own in [
        "logbook/beta",
        "logbook/beta/0192f3a4-0000-7000-8000-000000000000",
    ] {
        let signer = Signer25519::new(own, &[5; 32]).unwrap();
        let text = Checkpoint::new(own, 4, mth(0, 4)).unwrap().to_text();
        let ours = Note {
            signatures: vec![signer.sign(&text).unwrap()],
            text,
        };
        let (status, ..) = add(&beta, body(0, vec![], ours.to_text().into_bytes())).await;
        assert_eq!(status, 404, "{own} is the witness's own origin");
    }
    let forged = Signer25519::new(ORIGIN, &[4; 32]).unwrap();
    let (status, _, text) = add(&beta, body(0, vec![], note(&forged, 4, mth(0, 4)))).await;
    assert_eq!(status, 403, "{text}");
    let (status, ..) = add(&beta, body(0, vec![[1; 32]], good4.clone())).await;
    assert_eq!(status, 422, "a proof from size 0 must be empty");
    let (status, ..) = add(&beta, body(5, vec![], good4.clone())).await;
    assert_eq!(status, 400, "old above the size");
    let (status, ..) = add(&beta, vec![b'a'; 140_000]).await;
    assert_eq!(status, 413);
    assert_eq!(evidence(&beta)["evidence"], serde_json::json!([]));

    // The first checkpoint is cosigned; the cosignature verifies.
    let (status, content_type, line) = add(&beta, body(0, vec![], good4.clone())).await;
    assert_eq!(status, 200, "{line}");
    assert!(content_type.starts_with("text/plain"));
    let mut cosigned = String::from_utf8(good4.clone()).unwrap();
    cosigned.push_str(&line);
    let parsed = Note::parse(cosigned.as_bytes()).unwrap();
    let timestamp = witness.verify_note(&parsed).unwrap();
    assert!(timestamp > 1_700_000_000);

    // The same checkpoint again is cosigned again.
    let (status, _, again) = add(&beta, body(4, vec![], good4.clone())).await;
    assert_eq!(status, 200, "{again}");

    // A stale old: 409 with the witness's size, as text/x.tlog.size.
    let good8 = note(&signer, 8, mth(0, 8));
    let (status, content_type, size) = add(&beta, body(2, vec![mth(4, 8)], good8.clone())).await;
    assert_eq!(
        (status, content_type.as_str(), size.as_str()),
        (409, "text/x.tlog.size", "4\n")
    );

    // A bad proof from 4 to 8 under alpha's signature: 422, and evidence.
    let (status, ..) = add(&beta, body(4, vec![mth(4, 7)], good8.clone())).await;
    assert_eq!(status, 422);
    assert_eq!(
        witnessed_size(&beta, &signer).await,
        "4\n",
        "nothing changed"
    );
    assert_eq!(evidence_metric(&beta, "bad_proof").await, 1);

    // Growth with a good proof is cosigned.
    let (status, _, line) = add(&beta, body(4, vec![mth(4, 8)], good8.clone())).await;
    assert_eq!(status, 200, "{line}");
    assert_eq!(witnessed_size(&beta, &signer).await, "8\n");

    // Rollback: alpha signs size 4 again (a restored backup).
    let (status, _, size) = add(&beta, body(4, vec![], good4.clone())).await;
    assert_eq!((status, size.as_str()), (409, "8\n"));
    // Fork: size 8 with another root.
    let fork8 = note(&signer, 8, mth(1, 9));
    let (status, _, size) = add(&beta, body(8, vec![], fork8.clone())).await;
    assert_eq!((status, size.as_str()), (409, "8\n"));
    assert_eq!(witnessed_size(&beta, &signer).await, "8\n");

    let listed = evidence(&beta);
    let rows = listed["evidence"].as_array().unwrap();
    let reasons: Vec<&str> = rows.iter().map(|r| r["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["bad_proof", "rollback", "fork"], "{listed}");
    let rollback = &rows[1];
    assert_eq!(rollback["cosignedSize"], 8);
    assert_eq!(rollback["refusedSize"], 4);
    assert_eq!(
        rollback["cosignedNote"].as_str().unwrap().as_bytes(),
        &good8[..]
    );
    assert_eq!(
        rollback["refusedNote"].as_str().unwrap().as_bytes(),
        &good4[..]
    );
    assert_eq!(
        rows[2]["refusedNote"].as_str().unwrap().as_bytes(),
        &fork8[..]
    );
    assert_eq!(evidence_metric(&beta, "rollback").await, 1);
    assert_eq!(evidence_metric(&beta, "fork").await, 1);
    let log = beta.log();
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains(ORIGIN)
            && l.contains("cosigned_size=8")
            && l.contains("refused_size=4")),
        "{log}"
    );

    // The state survives a restart (it was fsynced before the answer).
    let mut beta = beta;
    beta.restart();
    assert_eq!(witnessed_size(&beta, &signer).await, "8\n");

    // Beta's operator sees the log it witnesses and the evidence against it.
    let status = beta.admin(&["status"]).await;
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains(&format!(
            "EVIDENCE against {ORIGIN} (the heads log of peer alpha): 3 row(s)"
        )),
        "{text}"
    );
    assert!(
        text.contains("peer alpha") && text.contains("size 8"),
        "{text}"
    );

    // Alpha renames its heads log (a new `origin_prefix`): beta witnesses
    // the new log from scratch, as the new log it is, and warns that the
    // peer whose old log it holds began another.
    let mut alpha = alpha;
    let config = alpha.data_dir().join("config.toml");
    let renamed = std::fs::read_to_string(&config).unwrap().replace(
        "origin_prefix = \"logbook/{instanceId}\"",
        "origin_prefix = \"logbook/alpha-v2\"",
    );
    std::fs::write(&config, renamed).unwrap();
    alpha.restart();
    let signer2 = alpha_signer(&alpha).renamed("logbook/alpha-v2").unwrap();
    let text = Checkpoint::new("logbook/alpha-v2", 4, mth(0, 4))
        .unwrap()
        .to_text();
    let first = Note {
        signatures: vec![signer2.sign(&text).unwrap()],
        text,
    };
    // Beta reads alpha's document again at most every 5 s (`MIN_REFRESH`).
    let mut answer = (0, String::new());
    for _ in 0..40 {
        let (status, _, line) = add(&beta, body(0, vec![], first.to_text().into_bytes())).await;
        answer = (status, line);
        if status != 404 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert_eq!(answer.0, 200, "{}", answer.1);
    let log = beta.log();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("renamed its log")
            && l.contains("old_origin=logbook/alpha")
            && l.contains("evidence=3")),
        "{log}"
    );
    let listed = beta.admin(&["--json", "status"]).await;
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let origins: Vec<(&str, u64)> = listed["witness_for"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["origin"].as_str().unwrap(),
                l["evidence"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(origins, [(ORIGIN, 3), ("logbook/alpha-v2", 0)], "{listed}");
}

/// Alpha, and beta witnessing it with `[witness]` at one request a second
/// and a burst of one.
fn witnessed_at_one_per_second() -> (Node, Node) {
    let (pa, pb) = (free_port(), free_port());
    let (ka, kb) = (test_key("alpha"), test_key("beta"));
    let alpha = Node::start("alpha", pa, "", &peer_config("beta", pb, &kb));
    let beta = Node::start(
        "beta",
        pb,
        "rate_per_sec = 1\nrate_burst = 1",
        &peer_config("alpha", pa, &ka),
    );
    (alpha, beta)
}

/// `[witness] rate_per_sec`/`rate_burst` bound each peer: with one request
/// a second, ten checkpoints sent back to back, each extending the last,
/// cannot all pass; a refused one gets a 429 problem with `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_over_its_rate_gets_429() {
    let (alpha, beta) = witnessed_at_one_per_second();
    let signer = alpha_signer(&alpha);
    let mut limited = None;
    let mut old = 0;
    // Sizes 1, 2, 4, …: from 2^k to 2^(k+1) the proof is one subtree hash.
    for size in (0..10).map(|k| 1u64 << k) {
        let proof = if old == 0 {
            vec![]
        } else {
            vec![mth(old, size)]
        };
        let r = reqwest::Client::new()
            .post(beta.url(ROUTE))
            .body(body(old, proof, note(&signer, size, mth(0, size))))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => old = size,
            429 => {
                limited = Some(r);
                break;
            }
            other => panic!("size {size}: {other} {}", r.text().await.unwrap()),
        }
    }
    let limited = limited.expect("one request a second: ten in a row are not all let through");
    assert!(limited.headers().contains_key("retry-after"));
    let problem: Value = limited.json().await.unwrap();
    assert_eq!(
        problem["type"], "urn:logbook:problem:rate-limited",
        "{problem}"
    );
    drop(alpha);
}

/// A forger who knows a peer's origin cannot spend that peer's allowance:
/// notes its key does not sign are refused (403, then 429 once the refetch
/// bucket is empty) and the peer's own checkpoint still passes right after,
/// with a burst of one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_notes_do_not_use_up_the_peers_rate() {
    let (alpha, beta) = witnessed_at_one_per_second();
    let forger = Signer25519::new(ORIGIN, &[7; 32]).unwrap();
    let mut statuses = Vec::new();
    for size in 1..=4u64 {
        let (status, _, text) =
            add(&beta, body(0, vec![], note(&forger, size, mth(0, size)))).await;
        assert!(status == 403 || status == 429, "{status} {text}");
        statuses.push(status);
    }
    assert_eq!(
        statuses[0], 403,
        "the first forgery is checked against a fresh document"
    );
    assert!(
        statuses.contains(&429),
        "refetches are rate-limited: {statuses:?}"
    );
    let (status, _, text) = add(
        &beta,
        body(0, vec![], note(&alpha_signer(&alpha), 3, mth(0, 3))),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(
        text.starts_with("\u{2014} logbook/beta "),
        "a cosignature line: {text}"
    );
    drop(alpha);
}

/// Anyone can resend a peer's signed checkpoints: resending the one
/// cosigned is answered without a bucket (the peer does so to refresh its
/// cosignature), older ones take a bucket of their own, and the peer's next
/// checkpoint still passes right after, with a burst of one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_checkpoints_do_not_use_up_the_peers_rate() {
    let (alpha, beta) = witnessed_at_one_per_second();
    let signer = alpha_signer(&alpha);
    let good4 = note(&signer, 4, mth(0, 4));
    let (status, _, text) = add(&beta, body(0, vec![], good4.clone())).await;
    assert_eq!(status, 200, "{text}");
    // The peer's own allowance (one a second) comes back.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    for _ in 0..4 {
        let (status, _, text) = add(&beta, body(4, vec![], good4.clone())).await;
        assert_eq!(status, 200, "the cosigned checkpoint again: {text}");
    }
    let older = note(&signer, 2, mth(0, 2));
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(add(&beta, body(0, vec![], older.clone())).await.0);
    }
    assert_eq!(statuses[0], 409, "{statuses:?}");
    assert!(
        statuses.contains(&429),
        "older checkpoints are rate-limited: {statuses:?}"
    );
    let good8 = note(&signer, 8, mth(0, 8));
    let (status, _, text) = add(&beta, body(4, vec![mth(4, 8)], good8)).await;
    assert_eq!(status, 200, "the peer's rate is its own: {text}");
    drop(alpha);
}

/// A fork new to the witness is kept even when the replay bucket is empty
/// (anyone can empty it with the peer's old checkpoints); the same fork
/// sent again is held back by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_fork_is_kept_whatever_the_buckets() {
    let (alpha, beta) = witnessed_at_one_per_second();
    let signer = alpha_signer(&alpha);
    let (status, _, text) = add(&beta, body(0, vec![], note(&signer, 4, mth(0, 4)))).await;
    assert_eq!(status, 200, "{text}");
    // Old checkpoints replayed: rollback evidence, until the bucket is empty.
    let older = note(&signer, 2, mth(0, 2));
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(add(&beta, body(0, vec![], older.clone())).await.0);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    // The log signs another root at the cosigned size: a fork.
    let fork = note(&signer, 4, [9; 32]);
    let (status, _, text) = add(&beta, body(4, vec![], fork.clone())).await;
    assert_eq!(status, 409, "{text}");
    // The same fork again: the bucket holds it back (at one a second, a
    // token that came back meanwhile lets one more through first).
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(add(&beta, body(4, vec![], fork.clone())).await.0);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    let rows = evidence(&beta)["evidence"].clone();
    let forks = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["reason"] == "fork");
    assert_eq!(forks.count(), 1, "{rows}");
    drop(alpha);
}

/// An origin stays with the active peer it was cosigned for. Mallory, a
/// peer whose document names alpha's origin, is not witnessed for it, not
/// even after a restart of the witness while alpha cannot be reached (when
/// nothing but the store remembers whose origin it is).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_is_not_taken_over_by_another_peer() {
    let (pa, pb, pm) = (free_port(), free_port(), free_port());
    let (ka, kb, km) = (test_key("alpha"), test_key("beta"), test_key("mallory"));
    let mut alpha = Node::start("alpha", pa, "", &peer_config("beta", pb, &kb));
    let peers = format!(
        "{}\n{}",
        peer_config("alpha", pa, &ka),
        peer_config("mallory", pm, &km)
    );
    let mut beta = Node::start("beta", pb, "", &peers);
    let signer = alpha_signer(&alpha);
    let (status, _, text) = add(&beta, body(0, vec![], note(&signer, 4, mth(0, 4)))).await;
    assert_eq!(status, 200, "{text}");

    alpha.stop();
    let mallory = Node::start(
        "mallory",
        pm,
        &format!("origin_prefix = \"{ORIGIN}\""),
        &peer_config("beta", pb, &kb),
    );
    let forger = alpha_signer(&mallory);
    // A checkpoint that extends what beta cosigned for alpha: what a peer
    // could build from alpha's public tiles.
    let extended = body(4, vec![mth(4, 8)], note(&forger, 8, mth(0, 8)));
    beta.restart();
    let (status, _, text) = add(&beta, extended).await;
    assert_eq!(status, 403, "{text}");
    let problem: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        problem["type"], "urn:logbook:problem:origin-bound",
        "{problem}"
    );
    assert_eq!(evidence(&beta)["evidence"], serde_json::json!([]));

    // Alpha back: both documents name the origin, and the one it is bound
    // to keeps it (mallory's claim cannot stop alpha being witnessed).
    alpha.restart();
    // Past the throttle on reading the peers' documents again.
    tokio::time::sleep(std::time::Duration::from_millis(5500)).await;
    let (status, _, text) = add(&beta, body(4, vec![mth(4, 8)], note(&signer, 8, mth(0, 8)))).await;
    assert_eq!(status, 200, "{text}");
    drop(mallory);
}
