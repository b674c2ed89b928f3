//! Being witnessed, between real daemons: A's heads log cosigned by its
//! peers B and C; a rollback and a fork of A caught with evidence; a
//! witness that was down catching up over the whole gap.

mod federation_common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use federation_common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(40);

/// What every node runs with: a heads pass every second, and a quorum of 2.
const FAST: &str = "interval_secs = 1\nwitness_quorum = 2";

struct Trio {
    a: Node,
    b: Node,
    c: Node,
    peers_of_a: String,
}

/// A witnessed by B and C: A lists both as peers; each lists A.
fn trio() -> Trio {
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let (ka, kb, kc) = (test_key("alpha"), test_key("beta"), test_key("gamma"));
    let peers_of_a = format!(
        "{}\n{}",
        peer_config("beta", pb, &kb),
        peer_config("gamma", pc, &kc)
    );
    let b = Node::start("beta", pb, FAST, &peer_config("alpha", pa, &ka));
    let c = Node::start("gamma", pc, FAST, &peer_config("alpha", pa, &ka));
    let a = Node::start("alpha", pa, FAST, &peers_of_a);
    Trio {
        a,
        b,
        c,
        peers_of_a,
    }
}

fn signature_lines(note: &str) -> Vec<&str> {
    note.lines().filter(|l| l.starts_with('—')).collect()
}

/// Waits until A's heads checkpoint is larger than `above` and carries a
/// cosignature from each of `witnesses`; returns it.
async fn cosigned_by(a: &Node, witnesses: &[&Node], above: u64) -> String {
    let names: Vec<String> = witnesses.iter().map(|w| witness_name(w)).collect();
    wait_for(
        "the heads checkpoint cosigned by every witness",
        WAIT,
        || async {
            let note = heads_checkpoint(a).await;
            let lines = signature_lines(&note);
            let all = names
                .iter()
                .all(|n| lines.iter().any(|l| l.starts_with(&format!("— {n} "))));
            (checkpoint_size(&note) > above && all).then_some(note)
        },
    )
    .await
}

/// A node's witness vkey, from its instance document.
async fn witness_vkey(node: &Node) -> String {
    let (status, doc) = node.get("/api/v1/federation/instance").await;
    assert_eq!(status, 200);
    doc["witnessKey"].as_str().unwrap().to_string()
}

fn witness_name(node: &Node) -> String {
    format!("logbook/{}", node.name)
}

/// Counts the `vkeys` whose cosignature on `note` verifies, with an
/// independent verifier: Python, and the pure-Python Ed25519 that checks
/// the vectors in CI.
fn python_cosignatures(note: &str, vkeys: &[String]) -> usize {
    let vectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/vectors");
    let out = Command::new("python3")
        .arg("-c")
        .arg(PY_COSIGNATURES)
        .arg(&vectors)
        .args(vkeys)
        .env("CHECKPOINT", note)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    stdout.lines().last().unwrap().trim().parse().unwrap()
}

const PY_COSIGNATURES: &str = r#"
import base64, contextlib, hashlib, io, os, sys
sys.path.insert(0, sys.argv[1])
with contextlib.redirect_stdout(io.StringIO()):
    import verify_tlog_vectors as tlog
note = os.environ["CHECKPOINT"]
split = note.rindex("\n\n")
text, sigs = note[: split + 1], note[split + 2 :]
count = 0
for vkey in sys.argv[2:]:
    name, kid, key = vkey.split("+", 2)
    key = base64.b64decode(key)
    assert key[0] == 4 and hashlib.sha256(name.encode() + b"\n" + key).digest()[:4].hex() == kid
    for line in sigs.strip("\n").split("\n"):
        dash, n, sig = line.split(" ")
        sig = base64.b64decode(sig)
        if n != name or sig[:4].hex() != kid or len(sig) != 76:
            continue
        ts = int.from_bytes(sig[4:12], "big")
        message = f"cosignature/v1\ntime {ts}\n".encode() + text.encode()
        if tlog.ed25519_verify(key[1:], message, sig[12:]):
            count += 1
            break
print(count)
"#;

/// [`wait_for`], printing the nodes' logs when it times out.
async fn wait_for_or_dump<T, F, Fut>(what: &str, nodes: &[&Node], mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if std::time::Instant::now() > deadline {
            for node in nodes {
                eprintln!(
                    "==== log of {} (port {})\n{}",
                    node.name,
                    node.port,
                    node.log()
                );
            }
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn evidence(node: &Node) -> Vec<Value> {
    let (ok, v) = node.admin_json(&["witness", "evidence"]).await;
    assert!(ok, "{v}");
    v["evidence"].as_array().cloned().unwrap_or_default()
}

/// How many witnesses refuse `node`'s heads log now (its status).
async fn refusals(node: &Node) -> usize {
    status(node).await["witnessing"]["refused"]
        .as_array()
        .map_or(0, Vec::len)
}

async fn status(node: &Node) -> Value {
    let (ok, v) = node.admin_json(&["status"]).await;
    assert!(ok, "{v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_cosign_and_a_bundle_verifies_with_quorum_two() {
    let t = trio();
    // Nothing appended yet, so nothing to witness (once the first heads
    // pass has read the size: unknown is not empty): not stale.
    let s = wait_for_or_dump("the first heads pass", &[&t.a], || async {
        let s = status(&t.a).await;
        (s["witnessing"]["nothing_to_witness"] == true).then_some(s)
    })
    .await;
    assert_eq!(s["witnessing"]["quorum_age_secs"], Value::Null, "{s}");
    assert_eq!(s["witnessing"]["stale"], false, "{s}");
    for plan in ["p1", "p2", "p3"] {
        let plan = uuid_for(plan);
        append_steps(&t.a, &plan, 3).await;
    }
    let note = cosigned_by(&t.a, &[&t.b, &t.c], 2).await;
    let keys = [witness_vkey(&t.b).await, witness_vkey(&t.c).await];
    assert_eq!(python_cosignatures(&note, &keys), 2, "{note}");
    // A byte changed in the checkpoint body: neither cosignature holds.
    let forged = note.replacen('\n', "\n1", 1);
    assert_eq!(python_cosignatures(&forged, &keys), 0);

    // The health: a quorum of two, fresh.
    let s = status(&t.a).await;
    assert_eq!(s["witnessing"]["quorum"], 2, "{s}");
    assert!(
        s["witnessing"]["quorum_age_secs"].as_u64().unwrap() < 120,
        "{s}"
    );
    assert_eq!(s["witnessing"]["stale"], false, "{s}");
    assert_eq!(s["witnessing"]["refused"], json!([]), "{s}");
    assert_eq!(s["witnessing"]["nothing_to_witness"], false, "{s}");

    // A plan's bundle, checked offline against its export with quorum 2.
    let plan = uuid_for("p1");
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("p1.ndjson");
    let bundle = dir.path().join("p1.bundle.json");
    let out = t.a.admin_text(&["export", &plan]).await;
    std::fs::write(&export, out).unwrap();
    let r =
        t.a.http
            .get(t.a.url(&format!("/api/plans/{plan}/checkpoint?witnessed=1")))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    std::fs::write(&bundle, r.bytes().await.unwrap()).unwrap();
    let (code, keys_doc) = t.a.get("/api/v1/log/keys").await;
    assert_eq!(code, 200);
    let log_key = keys_doc["current"]["vkey"].as_str().unwrap().to_string();
    let verify = |quorum: &str| {
        Command::new(env!("CARGO_BIN_EXE_logbook"))
            .args(["verify", "--export"])
            .arg(&export)
            .arg("--bundle")
            .arg(&bundle)
            .args(["--log-key", &log_key])
            .args([
                "--witness",
                &keys[0],
                "--witness",
                &keys[1],
                "--quorum",
                quorum,
            ])
            .output()
            .unwrap()
    };
    let ok = verify("2");
    assert!(
        ok.status.success(),
        "{}{}",
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr)
    );
    // The metric an operator alerts on.
    let metrics =
        t.a.http
            .get(t.a.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
    let age_line = metrics
        .lines()
        .find(|l| l.starts_with("logbook_witness_quorum_age_seconds "))
        .unwrap_or_else(|| panic!("no quorum age in /metrics:\n{metrics}"));
    assert!(!age_line.ends_with(" -1"), "{age_line}");
    // A configured witness's and peer's counters exist before any failure.
    for series in [
        "logbook_witness_send_failures_total{witness=\"peer:gamma\",reason=\"refused\"}",
        "logbook_federation_dead_letters_total{peer=",
        "logbook_federation_subscriptions_refused_total{peer=",
    ] {
        assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    }

    // A peer switched off stops being sent checkpoints (and listed).
    let out = t.a.admin_text(&["peers", "witness", "beta", "off"]).await;
    assert!(out.contains("no longer witnesses"), "{out}");
    wait_for("beta dropped from the witnesses", WAIT, || async {
        let names: Vec<Value> = status(&t.a).await["witnessing"]["witnesses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["name"].clone())
            .collect();
        (names == [json!("peer:gamma")]).then_some(())
    })
    .await;
    let (ok, _) = t.a.admin_json(&["peers", "witness", "nobody", "on"]).await;
    assert!(!ok, "an unknown peer is refused");
    let three = verify("3");
    assert_eq!(
        three.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&three.stdout)
    );
    drop(t.peers_of_a);
}

/// A plan id derived from a label.
fn uuid_for(label: &str) -> String {
    let digest = logbook_base::canonical::sha256(label.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_is_refused_with_evidence_on_both_witnesses() {
    let mut t = trio();
    append_steps(&t.a, &uuid_for("r1"), 2).await;
    let first = checkpoint_size(&cosigned_by(&t.a, &[&t.b, &t.c], 0).await);

    // The backup: A's data dir, keys included, taken while A is stopped.
    t.a.stop();
    let backup = tempfile::tempdir().unwrap();
    copy_dir(&t.a.data_dir().join("data"), &backup.path().join("data"));
    t.a.restart();
    append_steps(&t.a, &uuid_for("r2"), 3).await;
    append_steps(&t.a, &uuid_for("r2b"), 1).await;
    cosigned_by(&t.a, &[&t.b, &t.c], first).await;

    // Restore the old data dir (same keys) and append: the heads log now
    // grows from the older, shorter history.
    t.a.stop();
    let port = t.a.port;
    let restored = Node::start_with_data(
        "alpha",
        port,
        FAST,
        &t.peers_of_a,
        Some(&backup.path().join("data")),
    );
    append_steps(&restored, &uuid_for("r3"), 1).await;

    for witness in [&t.b, &t.c] {
        let found = wait_for_or_dump(
            "evidence of the rollback",
            &[witness, &restored],
            || async {
                let e = evidence(witness).await;
                (!e.is_empty()).then_some(e)
            },
        )
        .await;
        assert_evidence_against_alpha(&found[0], &["rollback", "fork"]);
    }
    // A says so loudly.
    wait_for("A's status shows the refusal", WAIT, || async {
        let s = status(&restored).await;
        (s["witnessing"]["refused"]
            .as_array()
            .is_some_and(|r| r.len() == 2))
        .then_some(())
    })
    .await;
    let text = restored.admin_text(&["status"]).await;
    // First, before anything else the status says.
    assert!(text.starts_with("WITNESS REFUSED"), "{text}");
    // Cosignature times read as the other times do, not as Unix seconds.
    assert!(
        text.lines()
            .any(|l| l.contains("cosigned at 20") && l.contains("Z ")),
        "{text}"
    );
    // Its served checkpoint, of the history grown from the restore, carries
    // no witness's cosignature.
    let note = heads_checkpoint(&restored).await;
    assert!(checkpoint_size(&note) > first, "{note}");
    for witness in [&t.b, &t.c] {
        let name = format!("— {} ", witness_name(witness));
        assert!(
            !signature_lines(&note).iter().any(|l| l.starts_with(&name)),
            "{note}"
        );
    }
}

/// An evidence row against alpha's heads log: one of `reasons`, with the
/// cosigned note and the refused one kept, signed, and not the same.
fn assert_evidence_against_alpha(row: &Value, reasons: &[&str]) {
    assert!(
        row["origin"].as_str().unwrap().contains("logbook/alpha"),
        "{row}"
    );
    let reason = row["reason"].as_str().unwrap();
    assert!(reasons.contains(&reason), "{reason}: {row}");
    let (cosigned, refused) = (
        row["cosignedNote"].as_str().unwrap(),
        row["refusedNote"].as_str().unwrap(),
    );
    assert_ne!(cosigned, refused, "{row}");
    for note in [cosigned, refused] {
        assert!(note.starts_with("logbook/alpha"), "{row}");
        assert!(!signature_lines(note).is_empty(), "{row}");
    }
    assert_eq!(checkpoint_size(cosigned), row["cosignedSize"], "{row}");
    assert_eq!(checkpoint_size(refused), row["refusedSize"], "{row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_is_refused_by_whichever_witness_sees_it_second() {
    let mut t = trio();
    append_steps(&t.a, &uuid_for("f1"), 2).await;
    cosigned_by(&t.a, &[&t.b, &t.c], 0).await;

    // A′: a copy of A's data dir with its keys, on another port.
    t.a.stop();
    let twin = Node::start_with_data(
        "alpha",
        free_port(),
        FAST,
        &t.peers_of_a,
        Some(&t.a.data_dir().join("data")),
    );
    t.a.restart();
    append_steps(&t.a, &uuid_for("f2"), 2).await;
    append_steps(&twin, &uuid_for("f3"), 2).await;

    for witness in [&t.b, &t.c] {
        let found = wait_for("evidence of the fork", WAIT, || async {
            let e = evidence(witness).await;
            (!e.is_empty()).then_some(e)
        })
        .await;
        // Which kind depends on the two sizes: the same (fork), smaller
        // (rollback) or larger with no proof that holds (bad_proof).
        assert_evidence_against_alpha(&found[0], &["fork", "rollback", "bad_proof"]);
    }
    // Each witness cosigned one of the two histories, never both: each
    // refusal reaches its sender a round trip after the evidence is kept.
    wait_for("each witness refuses exactly one side", WAIT, || async {
        (refusals(&t.a).await + refusals(&twin).await == 2).then_some(())
    })
    .await;
    assert_eq!(refusals(&t.a).await + refusals(&twin).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_that_was_down_catches_up_over_the_gap() {
    let mut t = trio();
    append_steps(&t.a, &uuid_for("d1"), 1).await;
    cosigned_by(&t.a, &[&t.b, &t.c], 0).await;
    t.c.stop();
    for i in 0..4 {
        append_steps(&t.a, &uuid_for(&format!("d{}", i + 2)), 2).await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let grown = wait_for("B cosigns the grown log", WAIT, || async {
        let note = heads_checkpoint(&t.a).await;
        let n = witness_name(&t.b);
        (checkpoint_size(&note) >= 5
            && signature_lines(&note)
                .iter()
                .any(|l| l.starts_with(&format!("— {n} "))))
        .then_some(checkpoint_size(&note))
    })
    .await;
    t.c.restart();
    let note = cosigned_by(&t.a, &[&t.b, &t.c], grown - 1).await;
    assert!(checkpoint_size(&note) >= grown);
    assert!(
        evidence(&t.c).await.is_empty(),
        "catching up is no evidence"
    );
}
