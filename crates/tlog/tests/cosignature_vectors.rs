//! The cosignature/v1 vectors in `docs/vectors/tlog-cosignature.json`: a
//! log's signed checkpoint, a witness key, the message it signs and the
//! cosigned note. This crate must reproduce them exactly, and
//! `docs/vectors/verify_cosignature_vectors.py` checks them independently
//! (CI runs both). Regenerate after a deliberate change with
//! `LOGBOOK_WRITE_VECTORS=1 cargo test -p logbook-tlog --test cosignature_vectors`.

use logbook_tlog::checkpoint::{Checkpoint, verify_checkpoint};
use logbook_tlog::cosignature::{CosignatureVerifier, Cosigner, signed_message};
use logbook_tlog::merkle::Hash;
use logbook_tlog::note::{Note, Signer25519};

const PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/vectors/tlog-cosignature.json"
);
const LOG_NAME: &str = "example.com/logbook-vectors";
const LOG_SEED: [u8; 32] = [0x42; 32];
const WITNESS_NAME: &str = "witness.example.com/w1";
const WITNESS_SEED: [u8; 32] = [0x24; 32];
const TIMESTAMP: u64 = 1_679_315_147;

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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn render() -> String {
    let log = Signer25519::new(LOG_NAME, &LOG_SEED).unwrap();
    let witness = Cosigner::new(WITNESS_NAME, &WITNESS_SEED).unwrap();
    let root: Hash = std::array::from_fn(|i| i as u8);
    let text = Checkpoint::new(LOG_NAME, 20_852_163, root)
        .unwrap()
        .to_text();
    let log_note = Note {
        text: text.clone(),
        signatures: vec![log.sign(&text).unwrap()],
    };
    let cosignature = witness.cosign(&text, TIMESTAMP).unwrap();
    let mut cosigned = log_note.clone();
    cosigned.signatures.push(cosignature.clone());

    // The crate's own reading of what it wrote.
    let vkey = witness.verifier().to_vkey();
    let verifier = CosignatureVerifier::parse(&vkey).unwrap();
    let parsed = Note::parse(cosigned.to_text().as_bytes()).unwrap();
    assert_eq!(verifier.verify_note(&parsed), Ok(TIMESTAMP));
    assert!(verify_checkpoint(cosigned.to_text().as_bytes(), log.verifier()).is_ok());

    let fields = [
        (
            "description",
            json_string(
                "c2sp.org/tlog-cosignature cosignature/v1 (Ed25519, type 0x04) over a \
                 c2sp.org/tlog-checkpoint; seeds are RFC 8032 private keys",
            ),
        ),
        ("log_vkey", json_string(&log.verifier().to_vkey())),
        ("witness_name", json_string(WITNESS_NAME)),
        ("witness_seed_hex", json_string(&hex(&WITNESS_SEED))),
        ("witness_vkey", json_string(&vkey)),
        ("timestamp", TIMESTAMP.to_string()),
        ("checkpoint_note", json_string(&log_note.to_text())),
        (
            "signed_message",
            json_string(std::str::from_utf8(&signed_message(&text, TIMESTAMP)).unwrap()),
        ),
        ("cosignature_line", json_string(&cosignature.to_line())),
        ("cosigned_note", json_string(&cosigned.to_text())),
    ];
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("  \"{k}\": {v}"))
        .collect();
    format!("{{\n{}\n}}\n", body.join(",\n"))
}

#[test]
fn vectors_are_reproduced() {
    let rendered = render();
    if std::env::var_os("LOGBOOK_WRITE_VECTORS").is_some() {
        std::fs::write(PATH, &rendered).unwrap();
    }
    let stored = std::fs::read_to_string(PATH).expect("docs/vectors/tlog-cosignature.json");
    assert_eq!(
        stored, rendered,
        "the cosignature vectors changed; see this file's header"
    );
}
