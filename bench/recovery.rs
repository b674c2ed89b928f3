//! Fills a journal through the real store, for `bench/recovery.sh`, which
//! then times redb's open of it after a clean stop and after kill -9 (see
//! `docs/benchmarks.md`).
//!
//! `recovery fill DB N` appends N events as the daemon does
//! (`Store::open_with`, group commit, every commit fsynced): 100 plans,
//! ~200-byte payloads, 1024 concurrent appenders so that batches are full.
//! It closes the store cleanly.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use logbook_journal::chain::CanonicalPayload;
use logbook_journal::keys::Keyring;
use logbook_journal::store::{AppendRequest, Store, StoreOptions};
use uuid::Uuid;

fn request(plan: u128, n: u64) -> AppendRequest {
    AppendRequest {
        plan_id: Uuid::from_u128(plan + 1),
        event_type: "step.completed".into(),
        actor: Some("bench".into()),
        payload: CanonicalPayload::new(&serde_json::json!({
            "n": n,
            "note": "x".repeat(160),
        })),
        expected_seq: None,
        idempotency: None,
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ["fill", db, n] = args.iter().map(String::as_str).collect::<Vec<_>>()[..] else {
        eprintln!("usage: recovery fill DB N");
        std::process::exit(2);
    };
    let total: u64 = n.parse().expect("N");
    let keyring = Arc::new(Keyring::from_secret(b"bench-secret".to_vec()));
    let (store, writer) = Store::open_with(
        db.as_ref(),
        keyring,
        logbook_journal::fanout::fanout(),
        &StoreOptions::default(),
    )
    .expect("opening the store");
    let store = logbook_journal::store::AsyncStore::new(store);
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..1024 {
        let store = store.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return;
                }
                let req = request(u128::from(n % 100), n);
                store.append(req).await.expect("append");
            }
        }));
    }
    for task in tasks {
        task.await.expect("appender");
    }
    eprintln!("filled {total} events in {:.1?}", started.elapsed());
    drop(store);
    tokio::task::spawn_blocking(move || writer.shutdown())
        .await
        .expect("closing the store");
}
