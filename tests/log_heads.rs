//! The heads log (issue 11): entries appear for moved plans after a pass,
//! a deletion's entry at once, and its checkpoint, proofs and tiles pass
//! the checks a plan log's do, against a tree computed here from the
//! entries served (so a wrong tree in the daemon cannot be the expected
//! answer), with the same refusals for bad input.

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use logbook_tlog::checkpoint::verify_checkpoint;
use logbook_tlog::merkle::{Hash, leaf_hash, node_hash, verify_consistency, verify_inclusion};
use logbook_tlog::note::Verifier;
use serde_json::Value;
use uuid::Uuid;

use common::{Daemon, DaemonOpts, assert_problem, fill, new_plan};

/// RFC 9162 MTH(D[0:n]), from scratch.
fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => logbook_base::canonical::sha256(b""),
        1 => leaves[0],
        n => {
            let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
            node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

fn hashes(proof: &Value) -> Vec<Hash> {
    proof
        .as_array()
        .expect("proof array")
        .iter()
        .map(|h| {
            let bytes = BASE64.decode(h.as_str().unwrap()).unwrap();
            Hash::try_from(bytes.as_slice()).unwrap()
        })
        .collect()
}

fn fast() -> DaemonOpts {
    DaemonOpts::default().replace("interval_secs = 5", "interval_secs = 1")
}

async fn text(daemon: &Daemon, path: &str) -> (u16, String) {
    let resp = daemon.get(path).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// The instance vkey, from `/api/v1/log/keys`.
async fn instance(daemon: &Daemon) -> Verifier {
    let keys = daemon.get_json("/api/v1/log/keys").await;
    Verifier::parse(keys.json["current"]["vkey"].as_str().unwrap()).unwrap()
}

/// Polls the heads checkpoint until `done` holds for the entries (the pass
/// runs every second; the bound only keeps a broken build from hanging).
async fn until_entries(
    daemon: &Daemon,
    done: impl Fn(&[Value]) -> bool,
) -> (u64, Hash, Vec<Vec<u8>>) {
    let vkey = instance(daemon).await;
    for _ in 0..600 {
        let (status, note) = text(daemon, "/api/v1/log/checkpoint").await;
        assert_eq!(status, 200, "{note}");
        let checkpoint = verify_checkpoint(note.as_bytes(), &vkey).expect("signed by the log key");
        assert_eq!(checkpoint.origin, vkey.name, "origin {{origin_prefix}}");
        if checkpoint.size > 0 {
            let found = daemon.heads_log_entries(checkpoint.size).await;
            let parsed: Vec<Value> = found
                .iter()
                .map(|e| serde_json::from_slice(e).unwrap())
                .collect();
            if done(&parsed) {
                return (checkpoint.size, checkpoint.root, found);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the heads log never recorded the plans");
}

/// The (size, root) of `plan`'s signed checkpoint.
async fn plan_head(daemon: &Daemon, plan: &Uuid) -> (u64, String) {
    let (status, note) = text(daemon, &format!("/api/plans/{plan}/checkpoint")).await;
    assert_eq!(status, 200);
    let lines: Vec<&str> = note.lines().collect();
    (lines[1].parse().unwrap(), lines[2].to_string())
}

fn last_entry_of<'a>(entries: &'a [Value], plan: &Uuid) -> Option<&'a Value> {
    entries
        .iter()
        .rev()
        .find(|e| e["plan_id"] == plan.to_string())
}

#[tokio::test]
async fn moved_plans_are_recorded_and_the_heads_log_proves_like_a_plan_log() {
    let daemon = Daemon::start(fast());
    let (a, b) = (new_plan(), new_plan());
    fill(&daemon, a, 3).await;
    fill(&daemon, b, 2).await;
    let (size, root, raw) = until_entries(&daemon, |e| {
        last_entry_of(e, &a).is_some_and(|x| x["size"] == 3)
            && last_entry_of(e, &b).is_some_and(|x| x["size"] == 2)
    })
    .await;
    // Entries are JCS text naming each plan's signed checkpoint.
    for plan in [a, b] {
        let (plan_size, plan_root) = plan_head(&daemon, &plan).await;
        let parsed: Vec<Value> = raw
            .iter()
            .map(|e| serde_json::from_slice(e).unwrap())
            .collect();
        let entry = last_entry_of(&parsed, &plan).unwrap();
        assert_eq!(entry["size"], plan_size);
        assert_eq!(entry["root"], plan_root);
        assert!(entry.get("deleted").is_none());
        let jcs = logbook_base::canonical::canonical_json(entry);
        assert!(raw.iter().any(|r| r == jcs.as_bytes()), "entries are JCS");
    }
    // The tree over those entries, computed here, is the signed one.
    let leaves: Vec<Hash> = raw.iter().map(|e| leaf_hash(e)).collect();
    assert_eq!(mth(&leaves), root);
    for n in 1..=size {
        for index in 0..n {
            let resp = daemon
                .get_json(&format!(
                    "/api/v1/log/entries/{index}/inclusion?tree_size={n}"
                ))
                .await;
            assert_eq!(resp.status, 200, "{}", resp.text);
            assert_eq!(
                resp.json["leaf_hash"],
                BASE64.encode(leaves[index as usize])
            );
            let proof = hashes(&resp.json["proof"]);
            assert!(verify_inclusion(
                index,
                n,
                &leaves[index as usize],
                &proof,
                &mth(&leaves[..n as usize])
            ));
        }
        for from in 0..=n {
            let resp = daemon
                .get_json(&format!("/api/v1/log/consistency?from={from}&to={n}"))
                .await;
            assert_eq!(resp.status, 200, "{}", resp.text);
            assert!(verify_consistency(
                from,
                n,
                &mth(&leaves[..from as usize]),
                &mth(&leaves[..n as usize]),
                &hashes(&resp.json["proof"])
            ));
        }
    }
    // The hash tile of level 0 holds the leaf hashes; a partial tile is short-lived.
    let resp = daemon
        .get(&format!("/api/v1/log/tile/0/000.p/{size}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "public, max-age=5");
    assert_eq!(resp.bytes().await.unwrap().to_vec(), leaves.concat());

    // Bad input: the plan routes' refusals, nothing served.
    for (path, status, kind) in [
        ("/api/v1/log/entries/x/inclusion", 400, "invalid-index"),
        ("/api/v1/log/entries/-1/inclusion", 400, "invalid-index"),
        (
            "/api/v1/log/entries/18446744073709551615/inclusion",
            400,
            "index-beyond-tree-size",
        ),
        (
            &format!("/api/v1/log/entries/{size}/inclusion?tree_size={size}") as &str,
            400,
            "index-beyond-tree-size",
        ),
        (
            &format!("/api/v1/log/entries/0/inclusion?tree_size={}", size + 1),
            400,
            "tree-size-beyond-head",
        ),
        (
            "/api/v1/log/entries/0/inclusion?tree_size=1&x=1",
            400,
            "invalid-query",
        ),
        ("/api/v1/log/consistency?from=2&to=1", 400, "from-after-to"),
        ("/api/v1/log/consistency?from=1", 400, "invalid-query"),
        ("/api/v1/log/consistency?from=1&to=+2", 400, "invalid-query"),
        ("/api/v1/log/tile/0/x", 400, "invalid-tile-path"),
        ("/api/v1/log/tile/0/001", 404, "not-found"),
        ("/api/v1/log/tile/entries/000", 404, "not-found"),
    ] {
        let resp = daemon.get_json(path).await;
        let got = assert_problem(&resp, status);
        assert!(got.ends_with(kind), "{path}: {got}");
    }
    // The last u64 index is refused at the log's own size, not at a size
    // the log never had.
    let resp = daemon
        .get_json("/api/v1/log/entries/18446744073709551615/inclusion")
        .await;
    let refused_at = resp.json["tree_size"].as_u64();
    assert!(
        refused_at.is_some_and(|t| t >= size && t < 256),
        "{}",
        resp.text
    );
}

#[tokio::test]
async fn a_deletion_is_recorded_at_once_with_its_final_checkpoint() {
    // No pass after the first one at start: only the deletion can write.
    let daemon =
        Daemon::start(DaemonOpts::default().replace("interval_secs = 5", "interval_secs = 3600"));
    let doomed = new_plan();
    fill(&daemon, doomed, 2).await;
    let (size, root) = plan_head(&daemon, &doomed).await;
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("doomed.ndjson");
    let exported = daemon.admin(&["export", &doomed.to_string()]).await;
    std::fs::write(&export, exported.ok("admin export")).unwrap();
    daemon
        .admin_json(&["plans", "delete", "--yes", &doomed.to_string()])
        .await;
    let (status, note) = text(&daemon, "/api/v1/log/checkpoint").await;
    assert_eq!(status, 200);
    let checkpoint = verify_checkpoint(note.as_bytes(), &instance(&daemon).await).unwrap();
    assert!(checkpoint.size >= 1, "{note}");
    let raw = daemon.heads_log_entries(checkpoint.size).await;
    let last: Value = serde_json::from_slice(raw.last().unwrap()).unwrap();
    assert_eq!(last["plan_id"], doomed.to_string());
    assert_eq!(last["deleted"], true);
    assert_eq!(
        (
            last["size"].as_u64().unwrap(),
            last["root"].as_str().unwrap()
        ),
        (size, root.as_str())
    );

    // The deleted plan's witnessed bundle is its deletion's entry, with its
    // final checkpoint: an export taken before verifies against it offline.
    // Its plain checkpoint is gone (410), and an unknown plan's is 404,
    // before its query is read.
    let found = daemon
        .get_json(&format!("/api/plans/{doomed}/checkpoint?witnessed=1"))
        .await;
    assert_eq!(found.status, 200, "{}", found.text);
    assert_eq!(
        found.json["heads_entry"].as_str().unwrap().as_bytes(),
        raw.last().unwrap().as_slice()
    );
    let bundle = dir.path().join("bundle.json");
    std::fs::write(&bundle, found.json.to_string()).unwrap();
    let vkey = instance(&daemon).await.to_vkey();
    let mut verify = common::logbook();
    verify.args(["verify", "--export"]).arg(&export);
    verify.args(["--log-key", &vkey, "--bundle"]).arg(&bundle);
    verify
        .args(["--quorum", "0"])
        .env_remove("LOGBOOK_HMAC_SECRET");
    let out = common::run(verify).await;
    assert_eq!(out.status.code(), Some(0), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("(its deletion)"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("ok: the first 2 events are the signed checkpoint's log"),
        "{}",
        out.stdout
    );
    // Every read of the deleted plan says so (410, as an append or a
    // stream of it does), not that it never had events.
    for route in [
        "",
        "/events",
        "/events?verify=1",
        "/checkpoint",
        "/log-key",
        "/events/1/inclusion",
        "/consistency?from=1&to=2",
        "/tile/0/000.p/2",
    ] {
        let got = daemon
            .get_json(&format!("/api/plans/{doomed}{route}"))
            .await;
        assert_eq!(
            assert_problem(&got, 410),
            "urn:logbook:problem:plan-deleted",
            "{route}"
        );
        assert!(
            got.json["tombstone_seq"].as_u64().is_some(),
            "{route}: {}",
            got.text
        );
    }
    let unknown = format!("/api/plans/{}/checkpoint?no=1", new_plan());
    assert_problem(&daemon.get_json(&unknown).await, 404);

    // The heads log's routes need the read scope once tokens exist.
    let reader = daemon
        .admin_ok(&["tokens", "create", "--scope", "read", "--name", "reader"])
        .await
        .trim()
        .to_string();
    let writer = daemon
        .admin_ok(&["tokens", "create", "--scope", "append", "--name", "writer"])
        .await
        .trim()
        .to_string();
    for path in [
        "/api/v1/log/checkpoint",
        "/api/v1/log/entries/0/inclusion",
        "/api/v1/log/consistency?from=0&to=1",
        "/api/v1/log/tile/0/000.p/1",
        "/api/v1/log/tile/entries/000.p/1",
    ] {
        assert_problem(&daemon.get_json(path).await, 401);
        assert_problem(&daemon.get_as(path, &writer).await, 403);
        assert_eq!(daemon.get_as(path, &reader).await.status, 200, "{path}");
    }
}
