//! Recovery time after a crash, and what redb's quick repair costs appends.
//! Driven by `bench/recovery.sh`; see `docs/benchmarks.md`.
//!
//! It uses the store as the daemon does (`Store::open_with`, group-commit
//! appends, every commit fsynced), without HTTP, so that a million events
//! are written in seconds:
//!
//! - `fill DB N`: appends N events (100 plans, ~200-byte payloads, 1024
//!   concurrent appenders, so that batches are full) and closes cleanly;
//! - `crash DB [--quick-repair]`: opens DB, commits a few appends, and
//!   SIGKILLs itself, so DB needs recovery like a daemon's after kill -9;
//! - `open DB [--quick-repair]`: prints how long opening took (with any repair);
//! - `throughput DB CLIENTS SECS [--quick-repair]`: appends per second.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use logbook::journal::chain::CanonicalPayload;
use logbook::journal::keys::Keyring;
use logbook::journal::store::{AppendRequest, Store, StoreOptions};
use uuid::Uuid;

fn open(path: &str, quick_repair: bool) -> (Store, logbook::journal::store::Writer) {
    let keyring = Arc::new(Keyring::from_secret(b"bench-secret".to_vec()));
    Store::open_with(
        path.as_ref(),
        keyring,
        logbook::stream::fanout(),
        &StoreOptions { quick_repair },
    )
    .expect("opening the store")
}

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

/// Appends with `clients` concurrent appenders until `total` events or
/// `until`; returns how many were appended.
async fn append_many(store: &Store, clients: u64, total: u64, until: Option<Instant>) -> u64 {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let store = store.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total || until.is_some_and(|t| Instant::now() >= t) {
                    return done;
                }
                store
                    .append(request(u128::from(n % 100), n))
                    .await
                    .expect("append");
                done += 1;
            }
        }));
    }
    let mut done = 0;
    for task in tasks {
        done += task.await.expect("appender");
    }
    done
}

fn close(store: Store, writer: logbook::journal::store::Writer) {
    drop(store);
    writer.shutdown();
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick_repair = args.iter().any(|a| a == "--quick-repair");
    let args: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--quick-repair")
        .collect();
    match args.as_slice() {
        ["fill", db, n] => {
            let n: u64 = n.parse().expect("N");
            let (store, writer) = open(db, quick_repair);
            let started = Instant::now();
            let done = append_many(&store, 1024, n, None).await;
            eprintln!("filled {done} events in {:.1?}", started.elapsed());
            tokio::task::spawn_blocking(move || close(store, writer))
                .await
                .unwrap();
        }
        ["crash", db] => {
            let (store, _writer) = open(db, quick_repair);
            append_many(&store, 8, 100, None).await;
            // Like kill -9: no destructor, no clean close.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            unreachable!("killed");
        }
        ["open-raw", db] => {
            // redb's own open (and repair), without the store's work around it.
            let started = Instant::now();
            let db = redb::Database::create(db).expect("opening");
            println!("{:.3}", started.elapsed().as_secs_f64());
            drop(db);
        }
        ["open", db] => {
            let started = Instant::now();
            let (store, writer) = open(db, quick_repair);
            let elapsed = started.elapsed();
            println!("{:.3}", elapsed.as_secs_f64());
            tokio::task::spawn_blocking(move || close(store, writer))
                .await
                .unwrap();
        }
        ["throughput", db, clients, secs] => {
            let clients: u64 = clients.parse().expect("CLIENTS");
            let secs: u64 = secs.parse().expect("SECS");
            let (store, writer) = open(db, quick_repair);
            let started = Instant::now();
            let done = append_many(
                &store,
                clients,
                u64::MAX,
                Some(started + Duration::from_secs(secs)),
            )
            .await;
            println!("{:.0}", done as f64 / started.elapsed().as_secs_f64());
            tokio::task::spawn_blocking(move || close(store, writer))
                .await
                .unwrap();
        }
        _ => {
            eprintln!(
                "usage: recovery fill DB N | crash DB | open DB | throughput DB CLIENTS SECS  [--quick-repair]"
            );
            std::process::exit(2);
        }
    }
}
