//! Times redb's open of a logbook journal after a clean stop and after
//! kill -9, with and without quick repair, and what quick repair costs a
//! commit. Driven by `bench/recovery.sh`; results in `docs/benchmarks.md`.
//!
//! - `open DB`: seconds `Database::create` took (including any repair);
//! - `crash DB [--quick-repair]`: commits a few small transactions as the
//!   daemon does (durable, with or without quick repair), then SIGKILLs
//!   itself, leaving DB as kill -9 leaves a daemon's journal;
//! - `commits DB BATCH SECS [--quick-repair]`: durable commits of BATCH
//!   700-byte records each (the size of a stored event) for SECS seconds;
//!   prints records per second.

use std::time::{Duration, Instant};

use redb::{Database, Durability, TableDefinition};

/// A table of its own, so the journal's tables are left alone.
const SCRATCH: TableDefinition<u64, &[u8]> = TableDefinition::new("bench_scratch");

fn commit(db: &Database, quick_repair: bool, first: u64, records: u64) {
    let mut txn = db.begin_write().expect("begin");
    txn.set_durability(Durability::Immediate).expect("durability");
    txn.set_quick_repair(quick_repair);
    {
        let mut table = txn.open_table(SCRATCH).expect("table");
        let value = [7u8; 700];
        for k in first..first + records {
            table.insert(k, value.as_slice()).expect("insert");
        }
    }
    txn.commit().expect("commit");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick_repair = args.iter().any(|a| a == "--quick-repair");
    let args: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--quick-repair")
        .collect();
    match args.as_slice() {
        ["open", db] => {
            let started = Instant::now();
            let db = Database::create(db).expect("opening");
            println!("{:.3}", started.elapsed().as_secs_f64());
            drop(db);
        }
        ["crash", db] => {
            let db = Database::create(db).expect("opening");
            for i in 0..10 {
                commit(&db, quick_repair, i * 10, 10);
            }
            // Like kill -9: no destructor, no clean close.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            unreachable!("killed");
        }
        ["commits", db, batch, secs] => {
            let batch: u64 = batch.parse().expect("BATCH");
            let until = Instant::now() + Duration::from_secs(secs.parse().expect("SECS"));
            let db = Database::create(db).expect("opening");
            let started = Instant::now();
            let mut records = 0;
            while Instant::now() < until {
                commit(&db, quick_repair, records, batch);
                records += batch;
            }
            println!("{:.0}", records as f64 / started.elapsed().as_secs_f64());
        }
        _ => {
            eprintln!("usage: redb-recovery open DB | crash DB | commits DB BATCH SECS  [--quick-repair]");
            std::process::exit(2);
        }
    }
}
