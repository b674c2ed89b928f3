//! Plan logs over HTTP (issue 10, "Proofs and tiles"): inclusion and
//! consistency proofs and the C2SP tiles of a 300-event plan, checked
//! against leaf hashes computed here from the events read over HTTP (so a
//! wrong tree in the daemon cannot also be the expected answer), plus the
//! refusals in the contract's precedence and the read scope.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::{StreamExt, stream};
use logbook_journal::Event;
use logbook_journal::chain::log_entry;
use logbook_tlog::merkle::{Hash, leaf_hash, node_hash, verify_consistency, verify_inclusion};
use serde_json::{Value, json};
use uuid::Uuid;

use common::{Daemon, DaemonOpts, assert_problem, new_plan};

const EVENTS: u64 = 300;
/// Requests in flight at once: enough to keep the test fast, few enough
/// for a loaded 2-core machine.
const PARALLEL: usize = 16;

/// RFC 9162 MTH(D[0:n]), from scratch.
fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => sha256(b""),
        1 => leaves[0],
        n => {
            let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
            node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    logbook_base::canonical::sha256(bytes)
}

fn hashes(proof: &Value) -> Vec<Hash> {
    proof
        .as_array()
        .expect("proof array")
        .iter()
        .map(|h| {
            let bytes = BASE64.decode(h.as_str().expect("base64 text")).unwrap();
            Hash::try_from(bytes.as_slice()).expect("32-byte hash")
        })
        .collect()
}

/// A plan of `EVENTS` events appended concurrently, and its entries as
/// computed from the events served by the read API.
async fn filled(daemon: &Daemon) -> (Uuid, Vec<Vec<u8>>) {
    let plan = new_plan();
    let statuses: Vec<u16> = stream::iter(0..EVENTS)
        .map(|i| async move {
            let body = json!({"type": "step.completed", "actor": "tester", "payload": {"i": i}});
            daemon.append(plan, body).await.status
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    let entries: Vec<Vec<u8>> = daemon
        .all_events(plan)
        .await
        .iter()
        .map(|v| {
            let event: Event = serde_json::from_str(&v.to_string()).expect("an event");
            log_entry(&event).into_bytes()
        })
        .collect();
    assert_eq!(entries.len() as u64, EVENTS);
    (plan, entries)
}

async fn get_json_all(daemon: &Daemon, paths: Vec<String>) -> Vec<(String, common::Resp)> {
    stream::iter(paths)
        .map(|path| async move {
            let resp = daemon.get_json(&path).await;
            (path, resp)
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await
}

/// Status, headers and raw bytes (tiles are binary).
async fn get_bytes(daemon: &Daemon, path: &str) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let resp = daemon.get(path).send().await.expect("HTTP request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn proofs_and_tiles_match_an_independent_tree() {
    let daemon = Daemon::start(DaemonOpts::default());
    let (plan, entries) = filled(&daemon).await;
    let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();
    let roots: Vec<Hash> = (0..=leaves.len()).map(|n| mth(&leaves[..n])).collect();

    // Inclusion: every seq at small sizes and at the tile boundaries, and
    // seqs on both sides of a boundary at every size.
    let mut cases: Vec<(u64, u64)> = Vec::new();
    for size in (1..=20).chain([255, 256, 257, EVENTS]) {
        cases.extend((1..=size).map(|seq| (seq, size)));
    }
    for seq in [1, 128, 256, 257] {
        cases.extend((seq..=EVENTS).map(|size| (seq, size)));
    }
    let paths = cases
        .iter()
        .map(|(seq, size)| format!("/api/plans/{plan}/events/{seq}/inclusion?tree_size={size}"))
        .collect();
    for (path, resp) in get_json_all(&daemon, paths).await {
        assert_eq!(resp.status, 200, "{path}: {}", resp.text);
        let body = &resp.json;
        let (seq, size) = (
            body["seq"].as_u64().unwrap(),
            body["tree_size"].as_u64().unwrap(),
        );
        assert_eq!(body["plan_id"], plan.to_string());
        assert_eq!(body["leaf_index"], seq - 1);
        assert!(
            path.ends_with(&format!("/{seq}/inclusion?tree_size={size}")),
            "{path}"
        );
        let leaf = leaves[seq as usize - 1];
        assert_eq!(body["leaf_hash"], BASE64.encode(leaf), "{path}");
        let proof = hashes(&body["proof"]);
        assert!(
            verify_inclusion(seq - 1, size, &leaf, &proof, &roots[size as usize]),
            "{path}: {body}"
        );
    }
    // The default tree size is the head.
    let resp = daemon
        .get_json(&format!("/api/plans/{plan}/events/257/inclusion"))
        .await;
    assert_eq!(resp.json["tree_size"], EVENTS, "{}", resp.text);
    let proof = hashes(&resp.json["proof"]);
    assert!(verify_inclusion(
        256,
        EVENTS,
        &leaves[256],
        &proof,
        &roots[300]
    ));

    // Consistency: every from <= to in a sample with the boundaries.
    let sample = [
        0, 1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 20, 63, 64, 65, 127, 128, 129, 200, 255, 256, 257, 299,
        300,
    ];
    let mut paths = Vec::new();
    for (i, from) in sample.iter().enumerate() {
        for to in &sample[i..] {
            paths.push(format!("/api/plans/{plan}/consistency?from={from}&to={to}"));
        }
    }
    for (path, resp) in get_json_all(&daemon, paths).await {
        assert_eq!(resp.status, 200, "{path}: {}", resp.text);
        let body = &resp.json;
        let (from, to) = (body["from"].as_u64().unwrap(), body["to"].as_u64().unwrap());
        assert!(path.ends_with(&format!("from={from}&to={to}")), "{path}");
        assert_eq!(body["plan_id"], plan.to_string());
        let proof = hashes(&body["proof"]);
        if from == to || from == 0 {
            assert!(proof.is_empty(), "{path}: {body}");
        }
        let (old, new) = (&roots[from as usize], &roots[to as usize]);
        assert!(
            verify_consistency(from, to, old, new, &proof),
            "{path}: {body}"
        );
    }

    // Hash tiles, full and partial, byte for byte.
    let level0: Vec<u8> = leaves[..256].concat();
    let level8 = mth(&leaves[..256]);
    for (tile, expected, full) in [
        ("0/000", level0.clone(), true),
        ("0/000.p/100", leaves[..100].concat(), false),
        ("0/001.p/44", leaves[256..].concat(), false),
        ("0/001.p/1", leaves[256..257].concat(), false),
        ("1/000.p/1", level8.to_vec(), false),
    ] {
        let (status, headers, body) =
            get_bytes(&daemon, &format!("/api/plans/{plan}/tile/{tile}")).await;
        assert_eq!(status, 200, "{tile}");
        assert_eq!(body, expected, "{tile}");
        assert_eq!(
            headers["content-type"], "application/octet-stream",
            "{tile}"
        );
        let cache = headers["cache-control"].to_str().unwrap();
        if full {
            assert_eq!(cache, "public, max-age=31536000, immutable", "{tile}");
        } else {
            assert!(
                cache.contains("max-age=5") && !cache.contains("immutable"),
                "{tile}: {cache}"
            );
        }
    }
    // The tiles alone give the head's root: the level-8 hash of the first
    // 256 leaves, then the partial level-0 tile for the rest.
    let (_, _, tail) = get_bytes(&daemon, &format!("/api/plans/{plan}/tile/0/001.p/44")).await;
    let (_, _, top) = get_bytes(&daemon, &format!("/api/plans/{plan}/tile/1/000.p/1")).await;
    let tail: Vec<Hash> = tail
        .chunks(32)
        .map(|c| Hash::try_from(c).unwrap())
        .collect();
    let top = Hash::try_from(top.as_slice()).unwrap();
    assert_eq!(node_hash(&top, &mth(&tail)), roots[300]);
    let first: Vec<Hash> = level0
        .chunks(32)
        .map(|c| Hash::try_from(c).unwrap())
        .collect();
    assert_eq!(mth(&first), roots[256]);

    // Entry bundles: 2-byte big-endian length, then the entry bytes.
    let bundle = |range: std::ops::Range<usize>| {
        let mut out = Vec::new();
        for entry in &entries[range] {
            out.extend_from_slice(&(entry.len() as u16).to_be_bytes());
            out.extend_from_slice(entry);
        }
        out
    };
    for (tile, expected, full) in [
        ("entries/000", bundle(0..256), true),
        ("entries/000.p/7", bundle(0..7), false),
        ("entries/001.p/44", bundle(256..300), false),
    ] {
        let (status, headers, body) =
            get_bytes(&daemon, &format!("/api/plans/{plan}/tile/{tile}")).await;
        assert_eq!(status, 200, "{tile}");
        assert_eq!(body, expected, "{tile}");
        let cache = headers["cache-control"].to_str().unwrap();
        assert_eq!(cache.contains("immutable"), full, "{tile}: {cache}");
    }

    // Tiles beyond the tree are 404; malformed paths 400.
    for tile in [
        "0/001",
        "0/001.p/45",
        "0/002.p/1",
        "1/000",
        "1/000.p/2",
        "2/000.p/1",
        "entries/001",
        "entries/001.p/45",
    ] {
        let resp = daemon
            .get_json(&format!("/api/plans/{plan}/tile/{tile}"))
            .await;
        assert_problem(&resp, 404);
    }
    for tile in [
        "0/1",
        "0/000.p/0",
        "0/000.p/256",
        "64/000",
        "entries/000.p/256",
        "0/x000/001",
        "entry/000",
        "0",
    ] {
        let resp = daemon
            .get_json(&format!("/api/plans/{plan}/tile/{tile}"))
            .await;
        assert_eq!(
            assert_problem(&resp, 400),
            "urn:logbook:problem:invalid-tile-path",
            "{tile}"
        );
    }
}

#[tokio::test]
async fn bad_input_is_refused_in_the_contracts_order() {
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();
    common::fill(&daemon, plan, 5).await;
    let unknown = new_plan();
    let problem = |kind: &str| format!("urn:logbook:problem:{kind}");

    // An unknown plan is 404 whatever the other parameters say.
    for path in [
        format!("/api/plans/{unknown}/events/1/inclusion"),
        format!("/api/plans/{unknown}/events/abc/inclusion?tree_size=-1"),
        format!("/api/plans/{unknown}/events/9/inclusion?tree_size=2&bogus=1"),
        format!("/api/plans/{unknown}/consistency?from=5&to=3"),
        format!("/api/plans/{unknown}/consistency"),
        format!("/api/plans/{unknown}/tile/0/000.p/1"),
        format!("/api/plans/{unknown}/tile/not-a-tile"),
    ] {
        let resp = daemon.get_json(&path).await;
        assert_eq!(assert_problem(&resp, 404), problem("not-found"), "{path}");
    }
    // A malformed plan id is 400, as on every plan route.
    for path in [
        "/api/plans/not-a-uuid/events/1/inclusion",
        "/api/plans/not-a-uuid/consistency?from=0&to=0",
        "/api/plans/not-a-uuid/tile/0/000",
    ] {
        let resp = daemon.get_json(path).await;
        assert_eq!(
            assert_problem(&resp, 400),
            problem("invalid-plan-id"),
            "{path}"
        );
    }

    let cases: &[(&str, &str)] = &[
        // Malformed numbers and parameters.
        ("events/abc/inclusion", "invalid-seq"),
        ("events/0/inclusion", "invalid-seq"),
        ("events/-1/inclusion", "invalid-seq"),
        ("events/+1/inclusion", "invalid-seq"),
        ("events/1/inclusion?tree_size=", "invalid-query"),
        ("events/1/inclusion?tree_size=-1", "invalid-query"),
        ("events/1/inclusion?tree_size=1e3", "invalid-query"),
        (
            "events/1/inclusion?tree_size=18446744073709551616",
            "invalid-query",
        ),
        (
            "events/1/inclusion?tree_size=2&tree_size=3",
            "invalid-query",
        ),
        ("events/1/inclusion?size=2", "invalid-query"),
        ("consistency?from=1", "invalid-query"),
        ("consistency?to=1", "invalid-query"),
        ("consistency?from=x&to=1", "invalid-query"),
        ("consistency?from=1&to=2&extra=1", "invalid-query"),
        // One spelling per number, one URL per tile.
        ("events/01/inclusion", "invalid-seq"),
        ("events/1/inclusion?tree_size=05", "invalid-query"),
        ("consistency?from=01&to=2", "invalid-query"),
        ("tile/0/000.p/5?x=1", "invalid-query"),
        ("tile/0/000.p/5?", "invalid-query"),
        // seq beyond the tree size (the head by default), before the size
        // beyond the head.
        ("events/6/inclusion", "seq-beyond-tree-size"),
        ("events/3/inclusion?tree_size=2", "seq-beyond-tree-size"),
        ("events/1/inclusion?tree_size=0", "seq-beyond-tree-size"),
        ("events/9/inclusion?tree_size=7", "seq-beyond-tree-size"),
        ("events/1/inclusion?tree_size=6", "tree-size-beyond-head"),
        (
            "events/5/inclusion?tree_size=18446744073709551615",
            "tree-size-beyond-head",
        ),
        // A size beyond the head, before from > to.
        ("consistency?from=1&to=6", "tree-size-beyond-head"),
        ("consistency?from=7&to=6", "tree-size-beyond-head"),
        ("consistency?from=3&to=2", "from-after-to"),
        ("consistency?from=1&to=0", "from-after-to"),
    ];
    for (path, kind) in cases {
        let resp = daemon.get_json(&format!("/api/plans/{plan}/{path}")).await;
        assert_eq!(assert_problem(&resp, 400), problem(kind), "{path}");
    }
    let resp = daemon
        .get_json(&format!("/api/plans/{plan}/events/1/inclusion?tree_size=6"))
        .await;
    assert_eq!(
        (resp.json["tree_size"].as_u64(), resp.json["head"].as_u64()),
        (Some(6), Some(5))
    );

    // from == to, including 0, is an empty proof.
    for (from, to) in [(0, 0), (3, 3), (5, 5), (0, 5)] {
        let resp = daemon
            .get_json(&format!(
                "/api/plans/{plan}/consistency?from={from}&to={to}"
            ))
            .await;
        assert_eq!(resp.status, 200, "{}", resp.text);
        assert_eq!(
            resp.json,
            json!({"plan_id": plan.to_string(), "from": from, "to": to, "proof": []})
        );
    }
    // Nothing above changed the plan.
    assert_eq!(daemon.head(plan).await.unwrap()["head_seq"], 5);
}

#[tokio::test]
async fn every_log_route_needs_the_read_scope() {
    const READ: &str = "log-read-token-0123456789";
    const APPEND: &str = "log-append-token-0123456789";
    let hash = |t: &str| logbook_base::hex::encode(&sha256(t.as_bytes()));
    let daemon = Daemon::start(DaemonOpts::default().config(&format!(
        "[[auth.tokens]]\nname = \"reader\"\nsha256 = \"{}\"\nscopes = [\"read\"]\n\n[[auth.tokens]]\nname = \"writer\"\nsha256 = \"{}\"\nscopes = [\"append\"]\n",
        hash(READ),
        hash(APPEND)
    )));
    let plan = new_plan();
    for i in 0..3 {
        let resp = daemon
            .append_as(
                plan,
                json!({"type": "step.completed", "payload": {"i": i}}),
                APPEND,
            )
            .await;
        assert_eq!(resp.status, 201, "{}", resp.text);
    }
    let unknown = new_plan();
    for path in [
        format!("/api/plans/{plan}/events/1/inclusion"),
        format!("/api/plans/{plan}/consistency?from=1&to=3"),
        format!("/api/plans/{plan}/tile/0/000.p/3"),
        format!("/api/plans/{plan}/tile/entries/000.p/3"),
    ] {
        let resp = daemon.get_json(&path).await;
        assert_problem(&resp, 401);
        let resp = daemon.get_as(&path, APPEND).await;
        assert_problem(&resp, 403);
        // The scope is checked before the plan is looked up.
        let other = path.replace(&plan.to_string(), &unknown.to_string());
        assert_problem(&daemon.get_json(&other).await, 401);
        let resp = daemon.get_as(&path, READ).await;
        assert_eq!(resp.status, 200, "{path}: {}", resp.text);
    }
}
