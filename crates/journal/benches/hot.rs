//! The append path's hot functions, one by one (issue 14): canonicalize a
//! 1 KiB payload, hash it, sign the event, encode it as its JSON wire form,
//! and insert through the store (one durable append, and 64 concurrent
//! appends sharing one commit).
//!
//!   cargo bench -p logbook-journal --bench hot
//!
//! On a shared machine, compare a change against its parent in the same
//! session; criterion's own noise estimate says how far to trust it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use logbook_base::canonical::{canonical_json, check_numbers, sha256};
use logbook_base::canonical_check::SurelyCanonical;
use logbook_journal::chain::{CanonicalPayload, Signable};
use logbook_journal::event::{Event, Timestamp};
use logbook_journal::keys::Keyring;
use logbook_journal::store::{AppendRequest, AsyncStore, Store};
use serde_json::{Value, json};
use uuid::Uuid;

fn payload() -> Value {
    json!({"amount": 1234, "currency": "EUR", "note": "x".repeat(960), "ref": "MT103"})
}

fn event(payload: &CanonicalPayload) -> Event {
    Event {
        id: Uuid::now_v7(),
        plan_id: Uuid::from_u128(1),
        seq: 42,
        event_type: "ledger.transaction".into(),
        actor: Some("bench".into()),
        payload: payload.json.clone(),
        payload_hash: payload.hash,
        prev_hash: Some([7; 32]),
        signature: [0; 32],
        key_id: "k1".into(),
        created_at: Timestamp::now(),
        position: 42,
        redacted: false,
    }
}

fn functions(c: &mut Criterion) {
    let value = payload();
    let canonical = CanonicalPayload::new(&value);
    let bytes = canonical.json.get().len() as u64;
    let event = event(&canonical);
    let key = b"bench-secret-bench-secret-bench!";

    let mut group = c.benchmark_group("append path");
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("canonicalize payload", |b| {
        b.iter(|| canonical_json(&value))
    });
    group.bench_function("hash payload", |b| {
        b.iter(|| sha256(canonical.json.get().as_bytes()))
    });
    group.bench_function("canonicalize and hash (CanonicalPayload)", |b| {
        b.iter(|| CanonicalPayload::new(&value))
    });
    group.bench_function("sign event (canonical signed object + HMAC)", |b| {
        b.iter(|| Signable::of(&event).sign(key))
    });
    group.bench_function("encode event (JSON wire form)", |b| {
        b.iter(|| serde_json::to_vec(&event).expect("events encode"))
    });
    group.bench_function("encode event into a buffer sized once", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(512 + event.payload.get().len());
            serde_json::to_writer(&mut out, &event).expect("events encode");
            out
        })
    });
    group.finish();

    // An append's body to its stored payload, both ways the HTTP handler
    // can take (src/http/append_body.rs): a value parsed, checked and
    // canonicalized; or, for a compact body whose payload is already
    // canonical, the payload's text scanned once and kept.
    let body = serde_json::to_vec(&json!({
        "type": "ledger.transaction",
        "actor": "bench",
        "payload": serde_json::from_str::<Value>(canonical.json.get()).expect("JSON"),
    }))
    .expect("JSON");
    let mut group = c.benchmark_group("append body");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("parsed: value, number check, canonicalize, hash", |b| {
        b.iter(|| {
            let value: Value = serde_json::from_slice(&body).expect("JSON");
            let payload = &value["payload"];
            check_numbers(payload).expect("numbers");
            CanonicalPayload::new(payload)
        })
    });
    group.bench_function("compact: payload text scanned and kept", |b| {
        b.iter(|| {
            let fields: Compact = serde_json::from_slice(&body).expect("JSON");
            let sure = SurelyCanonical::scan(fields.payload.get()).expect("canonical");
            CanonicalPayload::from_canonical(sure)
        })
    });
    group.finish();
}

/// The shape of an append body with the payload left as text.
#[derive(serde::Deserialize)]
struct Compact<'a> {
    #[allow(dead_code)]
    #[serde(rename = "type", borrow)]
    event_type: std::borrow::Cow<'a, str>,
    #[allow(dead_code)]
    #[serde(borrow)]
    actor: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    payload: &'a serde_json::value::RawValue,
}

/// Appends through the real store: every commit is fsynced, so these
/// measure the disk as much as the code.
fn insert(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let keyring = Arc::new(Keyring::from_secret(b"bench-secret".to_vec()));
    let (store, writer) = Store::open(
        &dir.path().join("journal.redb"),
        keyring,
        logbook_journal::fanout::fanout(),
    )
    .expect("store");
    let store = AsyncStore::new(store);
    let canonical = CanonicalPayload::new(&payload());
    let request = move |plan: u128| AppendRequest {
        plan_id: Uuid::from_u128(plan),
        event_type: "ledger.transaction".into(),
        actor: Some("bench".into()),
        payload: canonical.clone(),
        expected_seq: None,
        idempotency: None,
    };

    let mut group = c.benchmark_group("insert");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("one durable append", |b| {
        b.iter(|| runtime.block_on(store.append(request(1))).expect("append"))
    });
    for plans in [1u128, 64] {
        group.throughput(Throughput::Elements(64));
        group.bench_function(format!("64 concurrent appends, {plans} plan(s)"), |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        let mut tasks = Vec::with_capacity(64);
                        for i in 0..64u128 {
                            let store = store.clone();
                            let req = request(2 + i % plans);
                            tasks.push(tokio::spawn(async move { store.append(req).await }));
                        }
                        for task in tasks {
                            task.await.expect("task").expect("append");
                        }
                    }
                    started.elapsed()
                })
            })
        });
    }
    group.finish();
    drop(store);
    writer.shutdown();
}

criterion_group!(benches, functions, insert);
criterion_main!(benches);
