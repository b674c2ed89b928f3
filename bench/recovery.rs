//! Fills a journal through the real store, for `bench/recovery.sh`, which
//! then times redb's open of it after a clean stop and after kill -9 (see
//! `docs/benchmarks.md`).
//!
//! `recovery fill DB N [PLANS [PAD_BYTES]]` appends N events as the daemon
//! does (`Store::open_with`, group commit, every commit fsynced): by default
//! 100 plans (ids 1..=PLANS) and ~200-byte payloads (a `note` of PAD_BYTES,
//! 160 by default), from 1024 concurrent appenders so that batches are full.
//! It closes the store cleanly. `bench/run.sh` also uses it to fill the
//! stores it verifies and cold-starts (the HMAC secret is
//! `$LOGBOOK_HMAC_SECRET`, else `bench-secret`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use logbook_journal::chain::CanonicalPayload;
use logbook_journal::keys::Keyring;
use logbook_journal::store::{AppendRequest, Store, StoreOptions};
use uuid::Uuid;

fn request(plan: u128, n: u64, pad: &str) -> AppendRequest {
    AppendRequest {
        plan_id: Uuid::from_u128(plan + 1),
        event_type: "step.completed".into(),
        actor: Some("bench".into()),
        payload: CanonicalPayload::new(&serde_json::json!({
            "n": n,
            "note": pad,
        })),
        expected_seq: None,
        idempotency: None,
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (db, n, plans, pad) = match args[..] {
        ["fill", db, n] => (db, n, "100", "160"),
        ["fill", db, n, plans] => (db, n, plans, "160"),
        ["fill", db, n, plans, pad] => (db, n, plans, pad),
        _ => {
            eprintln!("usage: recovery fill DB N [PLANS [PAD_BYTES]]");
            std::process::exit(2);
        }
    };
    let total: u64 = n.parse().expect("N");
    let plans: u64 = plans.parse().expect("PLANS");
    let pad: Arc<str> = "x".repeat(pad.parse().expect("PAD_BYTES")).into();
    // The daemon that later opens the store must sign with the same key.
    let secret = std::env::var("LOGBOOK_HMAC_SECRET").unwrap_or_else(|_| "bench-secret".into());
    let keyring = Arc::new(Keyring::from_secret(secret.into_bytes()));
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
        let pad = pad.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return;
                }
                let req = request(u128::from(n % plans), n, &pad);
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
