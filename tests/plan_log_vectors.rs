//! Test vectors for the plan logs of `docs/verifiable-logs.md`: over the two
//! chains of `docs/vectors/journal-v1.json`, each event's entry bytes and
//! leaf hash, each plan's root at every size, and an inclusion proof for
//! every leaf and a consistency proof for every pair of sizes.
//!
//! `docs/vectors/verify_plan_log_vectors.py` checks the file independently.
//! `LOGBOOK_WRITE_VECTORS=1 cargo test --test plan_log_vectors` rewrites it.

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use logbook_journal::Event;
use logbook_journal::chain::{CanonicalPayload, log_entry};
use logbook_tlog::merkle::{self, Hash, NodeId};
use serde_json::{Value, json};

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("docs/vectors")
        .join(name)
}

/// The positive chains of the journal vectors, grouped by plan, in seq order.
fn plans() -> Vec<Vec<Event>> {
    let text = std::fs::read_to_string(path("journal-v1.json")).unwrap();
    let vectors: Value = serde_json::from_str(&text).unwrap();
    let mut plans: Vec<Vec<Event>> = Vec::new();
    for item in vectors["events"].as_array().unwrap() {
        let value = &item["event"];
        let mut event: Event = serde_json::from_str(&value.to_string()).unwrap();
        event.payload = CanonicalPayload::new(&value["payload"]).json;
        match plans.last_mut() {
            Some(plan) if plan[0].plan_id == event.plan_id => plan.push(event),
            _ => plans.push(vec![event]),
        }
    }
    plans
}

/// Every stored perfect-subtree hash of a plan, as the store keeps them.
fn stored(leaves: &[Hash]) -> std::collections::HashMap<NodeId, Hash> {
    let mut store = std::collections::HashMap::new();
    for (n, leaf) in leaves.iter().enumerate() {
        let new = merkle::hashes_to_store(n as u64, *leaf, &mut |node: NodeId| {
            Ok::<_, ()>(store[&node])
        })
        .unwrap();
        store.extend(new);
    }
    store
}

fn b64(hash: &Hash) -> String {
    B64.encode(hash)
}

fn build() -> Value {
    let mut out = Vec::new();
    for events in plans() {
        let entries: Vec<String> = events.iter().map(log_entry).collect();
        let leaves: Vec<Hash> = entries
            .iter()
            .map(|e| merkle::leaf_hash(e.as_bytes()))
            .collect();
        let store = stored(&leaves);
        let mut read = |node: NodeId| Ok::<_, ()>(store[&node]);
        let n = leaves.len() as u64;
        let roots: Vec<String> = (0..=n)
            .map(|size| b64(&merkle::root(size, &mut read).unwrap()))
            .collect();
        let inclusion: Vec<Value> = (0..n)
            .map(|index| {
                let proof = merkle::inclusion_proof(index, n, &mut read).unwrap().unwrap();
                json!({"leaf_index": index, "tree_size": n, "proof": proof.iter().map(b64).collect::<Vec<_>>()})
            })
            .collect();
        let mut consistency = Vec::new();
        for to in 1..=n {
            for from in 0..=to {
                let proof = merkle::consistency_proof(from, to, &mut read)
                    .unwrap()
                    .unwrap();
                consistency.push(json!({"from": from, "to": to, "proof": proof.iter().map(b64).collect::<Vec<_>>()}));
            }
        }
        out.push(json!({
            "plan_id": events[0].plan_id,
            "entries": entries.iter().zip(&leaves).zip(&events).map(|((entry, leaf), event)| json!({
                "seq": event.seq,
                "entry": entry,
                "leaf_hash": b64(leaf),
            })).collect::<Vec<_>>(),
            "roots": roots,
            "inclusion": inclusion,
            "consistency": consistency,
        }));
    }
    json!({
        "description": "Test vectors for docs/verifiable-logs.md: the plan logs over the positive chains of journal-v1.json (the events are there). Hashes are standard base64. `roots[n]` is the root at tree size n; proofs are RFC 9162 §2.1.3 and §2.1.4. `redacted` is one of those events as served after its payload was erased: same entry, same leaf, same signature.",
        "format": "logbook-plan-log-v1",
        "plans": out,
        "redacted": redacted_vector(),
    })
}

/// Seq 2 of the first plan, redacted: `"payload": null, "redacted": true`.
fn redacted_event() -> (Event, Event) {
    let original = plans()[0][1].clone();
    let mut redacted = original.clone();
    redacted.payload = serde_json::value::RawValue::from_string("null".into()).unwrap();
    redacted.redacted = true;
    (original, redacted)
}

fn redacted_vector() -> Value {
    let (_, redacted) = redacted_event();
    let entry = log_entry(&redacted);
    json!({
        "plan_id": redacted.plan_id,
        "seq": redacted.seq,
        "event": serde_json::to_value(&redacted).unwrap(),
        "entry": entry,
        "leaf_hash": b64(&merkle::leaf_hash(entry.as_bytes())),
    })
}

#[test]
fn a_redacted_event_keeps_its_leaf_and_signature() {
    let (original, redacted) = redacted_event();
    assert_eq!(log_entry(&redacted), log_entry(&original));
    let journal: Value =
        serde_json::from_str(&std::fs::read_to_string(path("journal-v1.json")).unwrap()).unwrap();
    let secret = journal["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| {
            k["key_id"] == original.key_id.as_str()
                || k["legacy_key_id"] == original.key_id.as_str()
        })
        .expect("the signing key is in the vectors")["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let signable = logbook_journal::chain::Signable::of(&redacted);
    assert!(signable.verify(secret.as_bytes(), &redacted.signature));
    // The chain verifier accepts it and counts it.
    let mut verifier = logbook_journal::chain::ChainVerifier::resume_after(&plans()[0][0]);
    verifier.check_without_key(&redacted).unwrap();
    assert_eq!(verifier.redacted(), 1);
}

#[test]
fn library_reproduces_the_vector_file() {
    let built = serde_json::to_string_pretty(&build()).unwrap() + "\n";
    let file = path("plan-log-v1.json");
    if std::env::var_os("LOGBOOK_WRITE_VECTORS").is_some() {
        std::fs::write(&file, &built).unwrap();
    }
    let stored = std::fs::read_to_string(&file).expect("docs/vectors/plan-log-v1.json exists");
    assert_eq!(
        stored, built,
        "the vectors differ from what the library computes (LOGBOOK_WRITE_VECTORS=1 rewrites them)"
    );
}

#[test]
fn vector_proofs_verify() {
    let vectors = build();
    for plan in vectors["plans"].as_array().unwrap() {
        let decode =
            |v: &Value| -> Hash { B64.decode(v.as_str().unwrap()).unwrap().try_into().unwrap() };
        let roots: Vec<Hash> = plan["roots"]
            .as_array()
            .unwrap()
            .iter()
            .map(decode)
            .collect();
        let leaves: Vec<Hash> = plan["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| decode(&e["leaf_hash"]))
            .collect();
        for p in plan["inclusion"].as_array().unwrap() {
            let (i, n) = (
                p["leaf_index"].as_u64().unwrap(),
                p["tree_size"].as_u64().unwrap(),
            );
            let proof: Vec<Hash> = p["proof"].as_array().unwrap().iter().map(decode).collect();
            assert!(merkle::verify_inclusion(
                i,
                n,
                &leaves[i as usize],
                &proof,
                &roots[n as usize]
            ));
        }
        for p in plan["consistency"].as_array().unwrap() {
            let (m, n) = (p["from"].as_u64().unwrap(), p["to"].as_u64().unwrap());
            let proof: Vec<Hash> = p["proof"].as_array().unwrap().iter().map(decode).collect();
            assert!(merkle::verify_consistency(
                m,
                n,
                &roots[m as usize],
                &roots[n as usize],
                &proof
            ));
        }
    }
}
