//! Test vectors for the heads log and the witnessed bundle
//! (`docs/verifiable-logs.md`, "Witnessing"): entries for three plan
//! checkpoints and one deletion, the log's roots and inclusion proofs, the
//! heads checkpoint signed by the log key and cosigned by one witness, and
//! a bundle for one plan.
//!
//! `docs/vectors/verify_heads_log_vectors.py` checks the file independently.
//! `LOGBOOK_WRITE_VECTORS=1 cargo test --test heads_log_vectors` rewrites it.

use std::collections::HashMap;
use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use logbook_journal::checkpoint::CheckpointSigner;
use logbook_journal::store::heads_entry_bytes;
use logbook_tlog::cosignature::Cosigner;
use logbook_tlog::merkle::{self, Hash, NodeId};
use logbook_tlog::note::Signer25519;
use serde_json::{Value, json};
use uuid::Uuid;

const PREFIX: &str = "logbook/vectors";
const LOG_SEED: [u8; 32] = [0x11; 32];
const WITNESS_SEED: [u8; 32] = [0x22; 32];
const WITNESS_NAME: &str = "witness.example/w1";
const TIMESTAMP: u64 = 1_764_561_600;

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("docs/vectors")
        .join(name)
}

fn b64(hash: &Hash) -> String {
    B64.encode(hash)
}

/// A stand-in plan root: SHA-256 of a label (the heads log records roots;
/// it does not recompute them).
fn root(label: &str) -> Hash {
    logbook_base::canonical::sha256(label.as_bytes())
}

fn build() -> Value {
    let (a, b, c) = (
        Uuid::from_u128(0xa),
        Uuid::from_u128(0xb),
        Uuid::from_u128(0xc),
    );
    // Plan a moves twice, b is deleted at size 4, c appears once.
    let heads: Vec<(Uuid, u64, Hash, bool)> = vec![
        (a, 3, root("a3"), false),
        (b, 4, root("b4"), false),
        (a, 7, root("a7"), false),
        (c, 1, root("c1"), false),
        (b, 4, root("b4"), true),
    ];
    let entries: Vec<Vec<u8>> = heads
        .iter()
        .map(|(plan, size, root, deleted)| heads_entry_bytes(plan, *size, root, *deleted))
        .collect();
    let leaves: Vec<Hash> = entries.iter().map(|e| merkle::leaf_hash(e)).collect();
    let mut store: HashMap<NodeId, Hash> = HashMap::new();
    for (n, leaf) in leaves.iter().enumerate() {
        let new = merkle::hashes_to_store(n as u64, *leaf, &mut |node: NodeId| {
            Ok::<_, ()>(store[&node])
        })
        .unwrap();
        store.extend(new);
    }
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
    let head_root = merkle::root(n, &mut read).unwrap();

    let log = Signer25519::new(PREFIX, &LOG_SEED).unwrap();
    let instance_vkey = log.verifier().to_vkey();
    let signer = CheckpointSigner::new(log);
    let mut heads_note = signer.sign_heads(n, head_root).unwrap();
    let witness = Cosigner::new(WITNESS_NAME, &WITNESS_SEED).unwrap();
    heads_note
        .signatures
        .push(witness.cosign(&heads_note.text, TIMESTAMP).unwrap());
    // The bundle of plan a: its last entry is index 2.
    let plan_note = signer.sign(&a, 7, root("a7")).unwrap();
    let bundle = json!({
        "plan_id": a.to_string(),
        "plan_checkpoint": plan_note.to_text(),
        "heads_index": 2,
        "heads_entry": String::from_utf8(entries[2].clone()).unwrap(),
        "inclusion_proof": inclusion[2]["proof"],
        "later_entries": entries[3..].iter().map(|e| String::from_utf8(e.clone()).unwrap()).collect::<Vec<_>>(),
        "heads_checkpoint": heads_note.to_text(),
    });
    // Plan a's older entry (index 0) in the same tree: every signature and
    // the inclusion proof hold, but entry 2 records a again, so it is not
    // a's latest and must be refused.
    let old_note = signer.sign(&a, 3, root("a3")).unwrap();
    let stale_bundle = json!({
        "plan_id": a.to_string(),
        "plan_checkpoint": old_note.to_text(),
        "heads_index": 0,
        "heads_entry": String::from_utf8(entries[0].clone()).unwrap(),
        "inclusion_proof": inclusion[0]["proof"],
        "later_entries": entries[1..].iter().map(|e| String::from_utf8(e.clone()).unwrap()).collect::<Vec<_>>(),
        "heads_checkpoint": heads_note.to_text(),
    });
    json!({
        "description": "Test vectors for the heads log (docs/verifiable-logs.md, Witnessing): entry i is UTF-8(JCS({plan_id, size, root})) with root in base64, plus \"deleted\": true for a deletion. Roots of plans are stand-ins (SHA-256 of a label). `roots[n]` is the heads log's root at size n. The heads checkpoint is signed by the instance key (origin = key name = origin_prefix) and cosigned (cosignature/v1) by the witness; the bundle is what GET /api/plans/{plan_id}/checkpoint?witnessed=1 returns, with every entry after its own in later_entries; stale_bundle is plan a's older entry in the same tree, which a verifier must refuse (a later entry records a again).",
        "format": "logbook-heads-log-v1",
        "origin_prefix": PREFIX,
        "log_seed_hex": logbook_base::hex::encode(&LOG_SEED),
        "instance_vkey": instance_vkey,
        "witness_seed_hex": logbook_base::hex::encode(&WITNESS_SEED),
        "witness_vkey": witness.verifier().to_vkey(),
        "heads": heads.iter().map(|(plan, size, root, deleted)| json!({
            "plan_id": plan.to_string(), "size": size, "root": b64(root), "deleted": deleted,
        })).collect::<Vec<_>>(),
        "entries": entries.iter().zip(&leaves).map(|(e, l)| json!({
            "entry": String::from_utf8(e.clone()).unwrap(),
            "leaf_hash": b64(l),
        })).collect::<Vec<_>>(),
        "roots": roots,
        "inclusion": inclusion,
        "bundle": bundle,
        "stale_bundle": stale_bundle,
    })
}

#[test]
fn library_reproduces_the_vector_file() {
    let built = serde_json::to_string_pretty(&build()).unwrap() + "\n";
    let file = path("heads-log-v1.json");
    if std::env::var_os("LOGBOOK_WRITE_VECTORS").is_some() {
        std::fs::write(&file, &built).unwrap();
    }
    let stored = std::fs::read_to_string(&file).expect("docs/vectors/heads-log-v1.json exists");
    assert_eq!(
        stored, built,
        "the vectors differ from what the library computes (LOGBOOK_WRITE_VECTORS=1 rewrites them)"
    );
}
