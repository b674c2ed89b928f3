//! `logbook_federation::peer_keys`: a peer's log and witness vkeys are
//! taken from its instance document only when their binding signature
//! verifies under the RSA key pinned for that peer, for that member.

mod federation_common;

use federation_common::test_key;
use logbook_federation::identity;
use logbook_federation::message::{BoundKey, sign_key_binding};
use logbook_federation::peer_keys::{PeerKeyError, peer_log_key, peer_witness_key};
use logbook_journal::store::{PeerRecord, PeerStatus};
use logbook_tlog::cosignature::Cosigner;
use logbook_tlog::note::Signer25519;
use serde_json::json;

fn peer(key: &rsa::PrivateKey) -> PeerRecord {
    PeerRecord {
        instance_id: "alpha".into(),
        base_url: "http://127.0.0.1:9".into(),
        public_key_der: identity::spki_der(&key.to_public_key()).unwrap(),
        status: PeerStatus::Active,
        added_at: 0,
        updated_at: 0,
        allow: Vec::new(),
        config_allow: Vec::new(),
    }
}

#[test]
fn keys_are_trusted_only_through_the_pinned_binding() {
    let (alpha, beta) = (test_key("alpha"), test_key("beta"));
    let log = Signer25519::new("logbook/alpha", &[1; 32]).unwrap();
    let witness = Cosigner::new("logbook/alpha", &[2; 32]).unwrap();
    let (log_vkey, witness_vkey) = (log.verifier().to_vkey(), witness.verifier().to_vkey());
    let doc = json!({
        "instanceId": "alpha",
        "logKey": log_vkey,
        "logKeySignature": sign_key_binding(&alpha, BoundKey::Log, "alpha", &log_vkey).unwrap(),
        "witnessKey": witness_vkey,
        "witnessKeySignature": sign_key_binding(&alpha, BoundKey::Witness, "alpha", &witness_vkey).unwrap(),
    });
    let pinned = peer(&alpha);
    assert_eq!(&peer_log_key(&pinned, &doc).unwrap(), log.verifier());
    assert_eq!(
        &peer_witness_key(&pinned, &doc).unwrap(),
        witness.verifier()
    );

    // Another pinned key: nothing is trusted.
    let other = peer(&beta);
    assert_eq!(
        peer_log_key(&other, &doc),
        Err(PeerKeyError::BadBinding("logKeySignature"))
    );
    // Another instance's document.
    let mut wrong = doc.clone();
    wrong["instanceId"] = json!("mallory");
    assert_eq!(
        peer_log_key(&pinned, &wrong),
        Err(PeerKeyError::WrongInstance)
    );
    // A swapped vkey, or one member's signature under the other.
    let mut swapped = doc.clone();
    swapped["logKey"] = json!(
        Signer25519::new("logbook/alpha", &[3; 32])
            .unwrap()
            .verifier()
            .to_vkey()
    );
    assert!(matches!(
        peer_log_key(&pinned, &swapped),
        Err(PeerKeyError::BadBinding(_))
    ));
    let mut crossed = doc.clone();
    crossed["logKeySignature"] = doc["witnessKeySignature"].clone();
    crossed["logKey"] = json!(witness_vkey);
    assert!(matches!(
        peer_log_key(&pinned, &crossed),
        Err(PeerKeyError::BadBinding(_))
    ));
    // An older peer without a witness key.
    let mut old = doc.clone();
    old.as_object_mut().unwrap().remove("witnessKey");
    assert_eq!(
        peer_witness_key(&pinned, &old),
        Err(PeerKeyError::Missing("witnessKey"))
    );
}
