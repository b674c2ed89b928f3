//! The Merkle vectors in `docs/vectors/tlog-merkle.json`: this crate must
//! reproduce them exactly, and `docs/vectors/verify_tlog_vectors.py` checks
//! them independently (CI runs both). Regenerate after a deliberate change
//! with `LOGBOOK_WRITE_VECTORS=1 cargo test -p logbook-tlog --test vectors`.

use std::collections::HashMap;
use std::convert::Infallible;

use logbook_tlog::checkpoint::Checkpoint;
use logbook_tlog::merkle::{
    Hash, NodeId, consistency_proof, hashes_to_store, inclusion_proof, leaf_hash, root,
};
use logbook_tlog::note::{Note, Signer25519};

const PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/vectors/tlog-merkle.json"
);
/// Entries: enough for a full level-0 tile and one past it.
const ENTRIES: u64 = 257;
const SIZES: &[u64] = &[0, 1, 2, 3, 4, 5, 7, 8, 9, 100, 255, 256, 257];
const INCLUSION: &[(u64, u64)] = &[
    (0, 1),
    (0, 2),
    (1, 2),
    (2, 3),
    (4, 7),
    (6, 7),
    (0, 256),
    (255, 256),
    (256, 257),
    (100, 257),
];
const CONSISTENCY: &[(u64, u64)] = &[
    (0, 5),
    (5, 5),
    (1, 2),
    (1, 3),
    (2, 3),
    (3, 7),
    (4, 7),
    (6, 8),
    (100, 257),
    (255, 256),
    (256, 257),
];

fn b64(h: &Hash) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(h)
}

fn entry(i: u64) -> String {
    format!("logbook tlog vector entry {i}")
}

fn render() -> String {
    let mut stored: HashMap<NodeId, Hash> = HashMap::new();
    for i in 0..ENTRIES {
        let mut read = |id: NodeId| Ok::<_, Infallible>(stored[&id]);
        let new = hashes_to_store(i, leaf_hash(entry(i).as_bytes()), &mut read).unwrap();
        stored.extend(new);
    }
    let mut read = |id: NodeId| Ok::<_, Infallible>(stored[&id]);
    let list = |hashes: &[Hash]| {
        hashes
            .iter()
            .map(|h| format!("\"{}\"", b64(h)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::from(
        "{\n  \"description\": \"RFC 9162 Merkle tree vectors: entry i is the UTF-8 text 'logbook tlog vector entry i'; hashes are standard base64\",\n",
    );
    out.push_str(&format!("  \"entry_count\": {ENTRIES},\n  \"entry_template\": \"logbook tlog vector entry {{i}}\",\n"));
    out.push_str(&format!(
        "  \"leaf_hash_0\": \"{}\",\n",
        b64(&leaf_hash(entry(0).as_bytes()))
    ));
    let roots: Vec<String> = SIZES
        .iter()
        .map(|s| {
            format!(
                "    {{\"size\": {s}, \"root\": \"{}\"}}",
                b64(&root(*s, &mut read).unwrap())
            )
        })
        .collect();
    out.push_str(&format!("  \"roots\": [\n{}\n  ],\n", roots.join(",\n")));
    let inclusion: Vec<String> = INCLUSION
        .iter()
        .map(|(i, s)| {
            let proof = inclusion_proof(*i, *s, &mut read).unwrap().unwrap();
            format!(
                "    {{\"index\": {i}, \"size\": {s}, \"proof\": [{}]}}",
                list(&proof)
            )
        })
        .collect();
    out.push_str(&format!(
        "  \"inclusion\": [\n{}\n  ],\n",
        inclusion.join(",\n")
    ));
    let consistency: Vec<String> = CONSISTENCY
        .iter()
        .map(|(f, t)| {
            let proof = consistency_proof(*f, *t, &mut read).unwrap().unwrap();
            format!(
                "    {{\"from\": {f}, \"to\": {t}, \"proof\": [{}]}}",
                list(&proof)
            )
        })
        .collect();
    out.push_str(&format!(
        "  \"consistency\": [\n{}\n  ],\n",
        consistency.join(",\n")
    ));
    out.push_str(&signed_checkpoint(root(ENTRIES, &mut read).unwrap()));
    out.push_str("}\n");
    out
}

/// A checkpoint of the whole vector log, signed with a fixed test key
/// (Ed25519 signatures are deterministic, so the note is too).
fn signed_checkpoint(root: Hash) -> String {
    const ORIGIN: &str = "example.com/logbook-vectors";
    const SEED: [u8; 32] = [0x42; 32];
    let signer = Signer25519::new(ORIGIN, &SEED).unwrap();
    let text = Checkpoint::new(ORIGIN, ENTRIES, root).unwrap().to_text();
    let note = Note {
        signatures: vec![signer.sign(&text).unwrap()],
        text,
    };
    format!(
        "  \"signed_checkpoint\": {{\n    \"seed_hex\": \"{}\",\n    \"vkey\": \"{}\",\n    \"note\": \"{}\"\n  }}\n",
        "42".repeat(32),
        signer.verifier().to_vkey(),
        note.to_text().replace('\n', "\\n")
    )
}

#[test]
fn vectors_are_reproduced() {
    let rendered = render();
    if std::env::var_os("LOGBOOK_WRITE_VECTORS").is_some() {
        std::fs::write(PATH, &rendered).unwrap();
    }
    let stored = std::fs::read_to_string(PATH).expect("docs/vectors/tlog-merkle.json");
    assert_eq!(
        stored, rendered,
        "the Merkle vectors changed; see this file's header"
    );
}
