//! The tlog-witness vectors in `docs/vectors/tlog-witness.json`: a
//! sequence of add-checkpoint requests to one witness, each with the
//! answer the rule gives (status, body, evidence) and, for a 200, the
//! cosignature line at a fixed timestamp. This crate must reproduce them
//! exactly, and `docs/vectors/verify_witness_vectors.py` replays them with
//! its own parser, Merkle code, Ed25519 and witness rule (CI runs both).
//! Regenerate after a deliberate change with
//! `LOGBOOK_WRITE_VECTORS=1 cargo test -p logbook-tlog --test witness_vectors`.

use std::convert::Infallible;

use logbook_tlog::checkpoint::{Checkpoint, verify_checkpoint};
use logbook_tlog::cosignature::Cosigner;
use logbook_tlog::merkle::{Hash, NodeId, StreamingRoot, consistency_proof, leaf_hash};
use logbook_tlog::note::{Note, Signer25519};
use logbook_tlog::witness::{AddCheckpoint, Latest, Verdict, check, size_body};

const PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/vectors/tlog-witness.json"
);
const LOG_NAME: &str = "example.com/logbook-vectors";
const LOG_SEED: [u8; 32] = [0x42; 32];
const WITNESS_NAME: &str = "witness.example.com/w1";
const WITNESS_SEED: [u8; 32] = [0x24; 32];
const TIMESTAMP: u64 = 1_679_315_147;

/// MTH of leaves `from..to`; leaf i is the entry `entry {i}`.
fn mth(from: u64, to: u64) -> Hash {
    let mut root = StreamingRoot::new();
    for i in from..to {
        root.push(leaf_hash(format!("entry {i}").as_bytes()));
    }
    root.root()
}

fn proof(from: u64, to: u64) -> Vec<Hash> {
    let mut reader =
        |n: NodeId| Ok::<_, Infallible>(mth(n.index << n.level, (n.index + 1) << n.level));
    consistency_proof(from, to, &mut reader).unwrap().unwrap()
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn render() -> String {
    let log = Signer25519::new(LOG_NAME, &LOG_SEED).unwrap();
    let forger = Signer25519::new(LOG_NAME, &[0x66; 32]).unwrap();
    let witness = Cosigner::new(WITNESS_NAME, &WITNESS_SEED).unwrap();
    let note = |signer: &Signer25519, size: u64, root: Hash| {
        let text = Checkpoint::new(LOG_NAME, size, root).unwrap().to_text();
        Note {
            signatures: vec![signer.sign(&text).unwrap()],
            text,
        }
        .to_text()
        .into_bytes()
    };
    let mut bad_proof = proof(4, 11);
    bad_proof[0][0] ^= 1;
    // (what it shows, request)
    let steps: Vec<(&str, AddCheckpoint)> = vec![
        (
            "first checkpoint, trusted with old 0",
            AddCheckpoint {
                old: 0,
                proof: vec![],
                note: note(&log, 4, mth(0, 4)),
            },
        ),
        (
            "the same checkpoint again",
            AddCheckpoint {
                old: 4,
                proof: vec![],
                note: note(&log, 4, mth(0, 4)),
            },
        ),
        (
            "the same checkpoint with a proof where none belongs",
            AddCheckpoint {
                old: 4,
                proof: proof(2, 4),
                note: note(&log, 4, mth(0, 4)),
            },
        ),
        (
            "stale old",
            AddCheckpoint {
                old: 2,
                proof: proof(2, 11),
                note: note(&log, 11, mth(0, 11)),
            },
        ),
        (
            "old above the size",
            AddCheckpoint {
                old: 12,
                proof: vec![],
                note: note(&log, 11, mth(0, 11)),
            },
        ),
        (
            "signed by another key",
            AddCheckpoint {
                old: 4,
                proof: proof(4, 11),
                note: note(&forger, 11, mth(0, 11)),
            },
        ),
        (
            "a failing proof",
            AddCheckpoint {
                old: 4,
                proof: bad_proof,
                note: note(&log, 11, mth(0, 11)),
            },
        ),
        (
            "growth with a consistency proof",
            AddCheckpoint {
                old: 4,
                proof: proof(4, 11),
                note: note(&log, 11, mth(0, 11)),
            },
        ),
        (
            "rollback",
            AddCheckpoint {
                old: 4,
                proof: vec![],
                note: note(&log, 4, mth(0, 4)),
            },
        ),
        (
            "fork: same size, another root",
            AddCheckpoint {
                old: 11,
                proof: vec![],
                note: note(&log, 11, mth(1, 12)),
            },
        ),
        (
            "growth again",
            AddCheckpoint {
                old: 11,
                proof: proof(11, 16),
                note: note(&log, 16, mth(0, 16)),
            },
        ),
    ];
    let mut latest: Option<Latest> = None;
    let mut rows = Vec::new();
    for (what, request) in steps {
        let body = request.to_bytes();
        assert_eq!(AddCheckpoint::parse(&body).unwrap(), request);
        let (status, response, evidence) = match verify_checkpoint(&request.note, log.verifier()) {
            Err(_) => (403, String::new(), None),
            Ok(c) => {
                let outcome = check(latest.as_ref(), request.old, &c, &request.proof);
                let evidence = outcome.evidence.map(|k| k.as_str());
                match outcome.verdict {
                    Verdict::Cosign => {
                        latest = Some(Latest {
                            size: c.size,
                            root: c.root,
                        });
                        let text = Note::parse(&request.note).unwrap().text;
                        (
                            200,
                            witness.cosign(&text, TIMESTAMP).unwrap().to_line(),
                            evidence,
                        )
                    }
                    Verdict::OldTooLarge => (400, String::new(), evidence),
                    Verdict::Conflict { size } => (409, size_body(size), evidence),
                    Verdict::BadProof => (422, String::new(), evidence),
                }
            }
        };
        rows.push(format!(
            "    {{\"what\": {}, \"request\": {}, \"status\": {status}, \"response\": {}, \"evidence\": {}}}",
            json_string(what),
            json_string(std::str::from_utf8(&body).unwrap()),
            json_string(&response),
            evidence.map_or("null".to_string(), json_string),
        ));
    }
    format!(
        "{{\n  \"description\": {},\n  \"log_vkey\": {},\n  \"witness_vkey\": {},\n  \"timestamp\": {TIMESTAMP},\n  \"entry_template\": \"entry {{i}}\",\n  \"steps\": [\n{}\n  ]\n}}\n",
        json_string(
            "c2sp.org/tlog-witness add-checkpoint requests sent in order to one witness that trusts log_vkey, \
             with the status, the body (409: text/x.tlog.size; 200: the cosignature/v1 line at timestamp) \
             and whether logbook keeps the request as evidence against the log. Leaf i of the log is \
             entry_template with i. 403 and 400 bodies are problem+json in logbook and not part of the vectors."
        ),
        json_string(&log.verifier().to_vkey()),
        json_string(&witness.verifier().to_vkey()),
        rows.join(",\n")
    )
}

#[test]
fn vectors_are_reproduced() {
    let rendered = render();
    if std::env::var_os("LOGBOOK_WRITE_VECTORS").is_some() {
        std::fs::write(PATH, &rendered).unwrap();
    }
    let stored = std::fs::read_to_string(PATH).expect("docs/vectors/tlog-witness.json");
    assert_eq!(
        stored, rendered,
        "the witness vectors changed; see this file's header"
    );
}
