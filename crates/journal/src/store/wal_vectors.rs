//! docs/vectors/wal-segment.json (also checked by Python): each record
//! encodes to the frame's bytes and decodes back; a flipped byte or another
//! epoch makes the frame not check, so replay stops before it; and runs of
//! frames, damaged as described, read by the damage rule as expected.

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

/// The frames a `segments` vector describes, damage applied.
fn segment_bytes(epoch: &[u8; 16], v: &Value) -> Vec<u8> {
    let first = v["first"].as_u64().unwrap();
    let count = v["count"].as_u64().unwrap();
    let event_len = v["event_len"].as_u64().unwrap() as usize;
    let mut frames: Vec<Vec<u8>> = (first..first + count)
        .map(|position| {
            let record = WalRecord {
                position,
                plan_id: array(&v["plan_id"]),
                seq: position,
                event: vec![position as u8; event_len],
                idempotency: None,
                outbox: Vec::new(),
            };
            let mut bytes = Vec::new();
            encode_frame(epoch, &record, &mut bytes);
            bytes
        })
        .collect();
    for d in v["damage"].as_array().unwrap() {
        let byte = &mut frames[d["frame"].as_u64().unwrap() as usize]
            [d["byte"].as_u64().unwrap() as usize];
        *byte ^= d["xor"].as_u64().unwrap() as u8;
    }
    for z in v["zero"].as_array().unwrap() {
        frames[z.as_u64().unwrap() as usize].fill(0);
    }
    frames.concat()
}

/// Runs of frames read by the damage rule (docs/journal-format.md): kept
/// up to the failed frame, or refused when a later frame proves it
/// acknowledged.
#[test]
fn the_segment_vectors_match() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/vectors/wal-segment.json"
    );
    let vectors: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let epoch: [u8; 16] = array(&vectors["epoch"]);
    let segments = vectors["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 8);
    for v in segments {
        let name = &v["name"];
        let bytes = segment_bytes(&epoch, v);
        let read = decode_frames(&epoch, &bytes, Path::new("vectors"), v["durable"].as_u64());
        if v["expect"]["refused"].as_bool().unwrap() {
            let e = read.unwrap_err();
            assert!(
                e.to_string().contains("lost an acknowledged event"),
                "{name}: {e}"
            );
        } else {
            let (records, _) = read.unwrap();
            assert_eq!(
                Some(records.len() as u64),
                v["expect"]["records"].as_u64(),
                "{name}"
            );
        }
    }
}
