//! docs/vectors/wal-segment.json (also checked by Python): each record
//! encodes to the frame's bytes and decodes back; a flipped byte or another
//! epoch makes the frame not check, so replay stops before it.

use serde_json::Value;

use std::path::Path;

use super::wal::{WalRecord, decode_frames, encode_frame};

fn unhex(v: &Value) -> Vec<u8> {
    let text = v.as_str().unwrap();
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn array<const N: usize>(v: &Value) -> [u8; N] {
    unhex(v).try_into().unwrap()
}

fn record(r: &Value) -> WalRecord {
    WalRecord {
        position: r["position"].as_u64().unwrap(),
        plan_id: array(&r["plan_id"]),
        seq: r["seq"].as_u64().unwrap(),
        event: unhex(&r["event"]),
        idempotency: (!r["idempotency"].is_null()).then(|| {
            let i = &r["idempotency"];
            (
                i["key"].as_str().unwrap().to_string(),
                array(&i["fingerprint"]),
            )
        }),
        outbox: r["outbox"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c[0].as_str().unwrap().to_string(), array(&c[1])))
            .collect(),
    }
}

#[test]
fn the_vectors_match() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/vectors/wal-segment.json"
    );
    let vectors: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let epoch: [u8; 16] = array(&vectors["epoch"]);
    let frames = vectors["frames"].as_array().unwrap();
    assert_eq!(frames.len(), 3);
    for v in frames {
        let name = &v["name"];
        let record = record(&v["record"]);
        let mut bytes = Vec::new();
        encode_frame(&epoch, &record, &mut bytes);
        assert_eq!(bytes, unhex(&v["hex"]), "{name}");
        let (decoded, used) = decode_frames(&epoch, &bytes, Path::new("vectors"), None).unwrap();
        assert_eq!((decoded, used), (vec![record], bytes.len()), "{name}");
        let mut other = epoch;
        other[0] ^= 1;
        assert!(
            decode_frames(&other, &bytes, Path::new("vectors"), None)
                .unwrap()
                .0
                .is_empty()
        );
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 0x40;
        assert!(
            decode_frames(&epoch, &flipped, Path::new("vectors"), None)
                .unwrap()
                .0
                .is_empty()
        );
    }
}
