//! Where the bytes of one 1 KiB event go on disk (issue 14, "disk" row).
//!
//!   cargo run --release -p logbook-journal --example disk_breakdown [EVENTS] [PLANS]
//!
//! Appends EVENTS (default 100,000) events with the payload of
//! `bench/append.lua` through the real store, 64 at a time, spread over
//! PLANS plans (default 1), then opens the file read-only and prints, per
//! table, redb's own page accounting divided by the number of events.

use std::sync::Arc;

use logbook_journal::chain::CanonicalPayload;
use logbook_journal::keys::Keyring;
use logbook_journal::store::{AppendRequest, AsyncStore, Store};
use redb::{ReadableDatabase, ReadableTableMetadata, TableHandle};
use uuid::Uuid;

const PAGE: u64 = 4096;

fn main() {
    let mut args = std::env::args().skip(1);
    let events: u64 = args.next().map_or(100_000, |a| a.parse().expect("EVENTS"));
    let plans: u64 = args.next().map_or(1, |a| a.parse().expect("PLANS"));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.redb");
    fill(&path, events, plans);

    let file_bytes = std::fs::metadata(&path).expect("stat").len();
    let db = redb::ReadOnlyDatabase::open(&path).expect("open read-only");
    let read = db.begin_read().expect("read");
    println!("{events} events of 1 KiB over {plans} plan(s), 4 KiB pages");
    println!(
        "{:<28} {:>9} {:>7} {:>7} {:>12} {:>12} {:>12}",
        "table", "rows", "leaves", "branch", "pages B/ev", "stored B/ev", "frag B/ev"
    );
    let mut pages_total = 0u64;
    for handle in read.list_tables().expect("tables") {
        let table = read.open_untyped_table(handle.clone()).expect("table");
        let stats = table.stats().expect("stats");
        let rows = table.len().expect("len");
        let pages = stats.leaf_pages() + stats.branch_pages();
        pages_total += pages;
        if rows == 0 {
            continue;
        }
        println!(
            "{:<28} {:>9} {:>7} {:>7} {:>12.1} {:>12.1} {:>12.1}",
            handle.name(),
            rows,
            stats.leaf_pages(),
            stats.branch_pages(),
            (pages * PAGE) as f64 / events as f64,
            stats.stored_bytes() as f64 / events as f64,
            stats.fragmented_bytes() as f64 / events as f64,
        );
    }
    println!(
        "tables' pages: {:.1} B/event; file: {:.1} B/event ({} bytes); the rest is redb's \
         free space, allocator state and table roots",
        (pages_total * PAGE) as f64 / events as f64,
        file_bytes as f64 / events as f64,
        file_bytes
    );
}

fn fill(path: &std::path::Path, events: u64, plans: u64) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let keyring = Arc::new(Keyring::from_secret(b"disk-breakdown-secret".to_vec()));
    let (store, writer) =
        Store::open(path, keyring, logbook_journal::fanout::fanout()).expect("store");
    let store = AsyncStore::new(store);
    // The same body as bench/append.lua sends.
    let payload = CanonicalPayload::new(&serde_json::json!({ "pad": "x".repeat(960) }));
    runtime.block_on(async {
        let mut done = 0u64;
        while done < events {
            let group = (events - done).min(64);
            let mut tasks = Vec::with_capacity(group as usize);
            for i in 0..group {
                let store = store.clone();
                let req = AppendRequest {
                    plan_id: Uuid::from_u128(1 + u128::from((done + i) % plans)),
                    event_type: "ledger.transaction".into(),
                    actor: Some("bench".into()),
                    payload: payload.clone(),
                    expected_seq: None,
                    idempotency: None,
                };
                tasks.push(tokio::spawn(async move { store.append(req).await }));
            }
            for task in tasks {
                task.await.expect("task").expect("append");
            }
            done += group;
        }
    });
    drop(store);
    writer.shutdown();
}
