//! The plan-checkpoint vectors in `docs/vectors/log-checkpoint.json`: a
//! fixed test log key (Go signer-key text), the instance vkey, a plan's
//! derived vkey and its signed checkpoint (Ed25519 is deterministic, so
//! these are reproduced exactly), and the instance document's
//! `logKeySignature` binding (RSA-PSS is randomized: it must verify).
//! `docs/vectors/verify_checkpoint_vectors.py` checks the same file
//! independently. Rewrite after a deliberate change with
//! `LOGBOOK_WRITE_VECTORS=1 cargo test --test log_checkpoint_vectors`.

mod federation_common;

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use logbook_journal::checkpoint::{CheckpointSigner, plan_verifier};
use logbook_tlog::checkpoint::verify_checkpoint;
use logbook_tlog::merkle::{Hash, leaf_hash};
use logbook_tlog::note::{Signer25519, Verifier};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

const SEED: [u8; 32] = [0x24; 32];
const INSTANCE_ID: &str = "vectors-instance";
const PLAN: &str = "0192f3a4-5b6c-7d8e-9f00-112233445566";
const SIZE: usize = 5;
const TEMPLATE: &str = "logbook tlog vector entry {i}";

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/vectors/log-checkpoint.json")
}

/// RFC 9162 MTH, written out (the vectors must not check the tree code
/// against itself).
fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = n.next_power_of_two() / 2;
            let mut h = Sha256::new();
            h.update([1u8]);
            h.update(mth(&leaves[..k]));
            h.update(mth(&leaves[k..]));
            h.finalize().into()
        }
    }
}

/// Everything but the RSA binding, which is randomized.
fn deterministic() -> Value {
    let prefix = format!("logbook/{INSTANCE_ID}");
    let signer = Signer25519::new(&prefix, &SEED).unwrap();
    let skey = signer.to_skey();
    let plan = Uuid::parse_str(PLAN).unwrap();
    let signer = CheckpointSigner::new(signer);
    let leaves: Vec<Hash> = (0..SIZE)
        .map(|i| leaf_hash(TEMPLATE.replace("{i}", &i.to_string()).as_bytes()))
        .collect();
    let root = mth(&leaves);
    let note = signer.sign(&plan, SIZE as u64, root).unwrap().to_text();
    json!({
        "description": "A plan checkpoint (docs/verifiable-logs.md, 'Checkpoints and keys'): the test log key (seed_hex; skey is Go's note signer text), the instance vkey named origin_prefix, the plan's vkey derived from it under the name origin_prefix/plan_id, and the signed note of the plan's tree whose entry i is entry_template with i (size entries; root is standard base64). binding is the instance document's {instanceId, logKey} with logKeySignature as signature: RSASSA-PSS-SHA256 (salt 32) over JCS of the two members, by binding_public_key.",
        "seed_hex": "24".repeat(32),
        "skey": skey,
        "instance_id": INSTANCE_ID,
        "origin_prefix": prefix,
        "instance_vkey": signer.instance_verifier().to_vkey(),
        "plan_id": PLAN,
        "plan_vkey": signer.plan_verifier(&plan).unwrap().to_vkey(),
        "entry_template": TEMPLATE,
        "size": SIZE,
        "root": BASE64.encode(root),
        "note": note,
    })
}

fn binding(vkey: &str) -> (Value, String) {
    let key = federation_common::test_key("log-checkpoint-vectors");
    let signature = logbook_federation::message::sign_log_key(&key, INSTANCE_ID, vkey).unwrap();
    (
        json!({"instanceId": INSTANCE_ID, "logKey": vkey, "signature": signature}),
        federation_common::public_pem(&key),
    )
}

#[test]
fn vectors_are_reproduced_and_the_binding_verifies() {
    let expected = deterministic();
    if std::env::var_os("LOGBOOK_WRITE_VECTORS").is_some() {
        let (value, pem) = binding(expected["instance_vkey"].as_str().unwrap());
        let mut all = expected.clone();
        all["binding"] = value;
        all["binding_public_key"] = json!(pem);
        let text = serde_json::to_string_pretty(&all).unwrap() + "\n";
        std::fs::write(path(), text).unwrap();
    }
    let mut stored: Value =
        serde_json::from_str(&std::fs::read_to_string(path()).expect("the vectors file")).unwrap();
    let object = stored.as_object_mut().unwrap();
    let bound = object.remove("binding").expect("binding");
    let pem = object
        .remove("binding_public_key")
        .expect("binding_public_key");
    assert_eq!(
        stored, expected,
        "the vectors changed; see this file's header"
    );

    // The stored vectors check with the library as a verifier would use it.
    let instance = Verifier::parse(expected["instance_vkey"].as_str().unwrap()).unwrap();
    let plan = plan_verifier(&instance, &Uuid::parse_str(PLAN).unwrap()).unwrap();
    assert_eq!(plan.to_vkey(), expected["plan_vkey"]);
    let checkpoint =
        verify_checkpoint(expected["note"].as_str().unwrap().as_bytes(), &plan).unwrap();
    assert_eq!(checkpoint.size, SIZE as u64);
    let rsa = logbook_federation::identity::public_key_from_pem(pem.as_str().unwrap()).unwrap();
    assert_eq!(bound["logKey"], expected["instance_vkey"]);
    assert!(logbook_federation::message::verify_log_key(
        &rsa,
        bound["instanceId"].as_str().unwrap(),
        bound["logKey"].as_str().unwrap(),
        bound["signature"].as_str().unwrap(),
    ));
}
