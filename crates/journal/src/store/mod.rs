//! The store: the only module that touches redb.
//!
//! It owns the tables and their record encoding, the single writer thread
//! that group-commits appends (one transaction and one fsync per batch), and
//! the read paths. Events reach the fan-out only after their transaction has
//! committed, so nothing a client sees can later disappear.
//!
//! Tables (keys are big-endian so byte order is numeric order):
//! - `events`: plan id (16) ‖ seq (u64) → event record
//! - `plan_heads`: plan id → last seq, last signature, count, first/last time
//! - `positions`: store-wide position (u64) → events key
//! - `idempotency`: plan id ‖ Idempotency-Key → request fingerprint, seq
//!
//! Every record value starts with a format-version byte, then postcard.
//!
//! The code is cut by concern: this file holds the table definitions, the
//! append types, [`Store`] and its opening; `error.rs` `StoreError` and
//! its [`Fault`] classification; `records.rs` the record types and their
//! encoding; `writer.rs` the writer thread and its batch commit; `apply.rs`
//! the apply of one append inside the batch's transaction; `reads.rs` the
//! read paths. `admin.rs`, `retention.rs` and `federation/` build on these.
//!
//! Federation storage is not a pile of methods on [`Store`]: each aggregate
//! is reached through a narrow view borrowed from it, [`Store::peers`],
//! [`Store::outbox`], [`Store::inbox`] and [`Store::rotations`] (see
//! `federation/mod.rs`).
//!
//! Paged reads follow one naming rule: a read that returns a page is named
//! `<things>_after` on [`Store`] (`plans_after`, `plan_events_after`,
//! `events_after`) and `after` on a view (`inbox().after`,
//! `outbox().after`). Its arguments are any filters first, then the
//! exclusive cursor (0 or `None` reads from the start), then `limit`; it
//! returns at most `limit` items strictly after the cursor, in cursor
//! order, and the last item's cursor continues the scan.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use redb::TableDefinition;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::chain::CanonicalPayload;
use super::event::Event;
use super::fanout::Fanout;
use super::keys::Keyring;

pub mod admin;
mod apply;
mod async_store;
mod compact;
mod deleted;
mod error;
mod federation;
mod handle;
mod head;
mod heads_log;
mod key_ids;
mod lazy_table;
mod page_verify;
mod plan_verify;
#[cfg(test)]
mod plan_verify_differential;
mod reads;
mod records;
pub mod redact;
mod replay;
pub mod restore;
mod retention;
mod signed;
mod tables;
mod tiles;
mod tree;
mod tree_build;
mod wal;
mod wal_damage;
#[cfg(test)]
mod wal_forged;
#[cfg(test)]
mod wal_jobs;
#[cfg(test)]
mod wal_power_cut;
#[cfg(test)]
mod wal_retired;
#[cfg(test)]
mod wal_torn;
#[cfg(test)]
mod wal_vectors;
mod witness;
mod witnessed;
mod writer;
mod writer_wal;
use apply::Tables;
pub use async_store::AsyncStore;
pub use compact::Compacted;
pub use deleted::DeletedPlan;
use error::Faulty;
pub use error::{Fault, StoreError};
pub use federation::*;
use handle::Db;
pub use handle::Health;
pub use heads_log::{
    HeadsEntry, MAX_LATER_ENTRIES, PASS_LIMIT as HEADS_PASS_LIMIT, REENTER_AFTER,
    entry_bytes as heads_entry_bytes,
};
pub use page_verify::{PageTooLarge, VerifiedPage};
use reads::last_position;
pub use records::PlanHead;
use records::{
    IdempotencyRecord, decode, decode_event, encode, encode_event, encode_into, encode_redacted,
    event_from_record, event_key, idempotency_key, record_from_event,
};
pub use retention::PruneStep;
pub use signed::{CosignatureRefused, Cosigned, SigningRefused};
pub use tiles::TileError;
pub use tree::{Consistency, Inclusion, LogId, Tree, TreeRequestError};
pub use witness::{
    EvidenceStored, MAX_EVIDENCE, MAX_ORIGIN_BYTES, MAX_ORIGINS_PER_PEER, WitnessEvidence,
    WitnessLatest, WitnessedLog, WitnessedLogs,
};
pub use witnessed::{MAX_WITNESS_NAME, WitnessedBy};
use writer::{RETRY_FIRST, WriterLoop};

type EventKey = [u8; 24];

// The tables every append writes hold their fixed-width keys as `&[u8; N]`:
// the same type name and bytes on disk as `[u8; N]` (redb keeps the two
// compatible), but compared with one `memcmp` instead of byte by byte, and
// read and written without building a `Vec` per key.
const EVENTS: TableDefinition<&EventKey, &[u8]> = TableDefinition::new("events");
const HEADS: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("plan_heads");
const POSITIONS: TableDefinition<u64, &EventKey> = TableDefinition::new("positions");
const IDEMPOTENCY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("idempotency");

/// Version byte in front of every record this build writes.
pub(crate) const RECORD_VERSION: u8 = 1;
/// File name of the database inside the data dir.
pub const DB_FILE: &str = "journal.redb";
/// File name of its write-ahead segment, beside it (see `wal.rs`).
pub const WAL_FILE: &str = "journal.wal";
/// Most appends one transaction takes; a bound on the batch's latency.
const MAX_BATCH: usize = 1024;
/// Appends waiting for the writer before callers wait to enqueue.
const QUEUE_DEPTH: usize = 4096;
/// Most bytes of appends (payload, type and actor) queued for the writer
/// or in its batch at once; callers wait beyond it. The count alone would
/// let 4,096 appends of the largest body (64 MiB) wait. It holds even
/// when their callers have gone: each append's share is returned with
/// its answer, after its commit. One append larger than this takes it all.
/// Waiters are served in order (tokio's semaphore is fair): a large append
/// waiting for room holds up smaller ones behind it until room frees.
const QUEUE_BYTES: usize = 128 << 20;
/// Events read per transaction when scanning.
pub const READ_PAGE: usize = 512;

/// Most bytes of stored records in one page a follower reads from storage
/// (a page holds at least one event, whatever its size). A follower holds
/// its page while its client reads it: 512 events of 1 MiB would be half
/// a GiB per stream.
pub const READ_PAGE_BYTES: usize = 1 << 20;

/// One append, validated and canonicalized by the caller.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    pub plan_id: Uuid,
    pub event_type: String,
    pub actor: Option<String>,
    pub payload: CanonicalPayload,
    /// The head seq the caller expects (0 for a new plan).
    pub expected_seq: Option<u64>,
    pub idempotency: Option<Idempotency>,
}

#[cfg(test)]
impl AppendRequest {
    /// A `step.done` event with an empty payload, for the store's unit tests.
    pub(crate) fn empty(plan_id: Uuid) -> AppendRequest {
        AppendRequest {
            plan_id,
            event_type: "step.done".into(),
            actor: None,
            payload: CanonicalPayload::new(&serde_json::json!({})),
            expected_seq: None,
            idempotency: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    /// SHA-256 of the canonical request, to tell a retry from a reuse.
    pub fingerprint: [u8; 32],
}

#[derive(Debug, Clone)]
pub struct Appended {
    pub event: Arc<Event>,
    /// True when an idempotent retry returned the original event.
    pub replayed: bool,
}

#[derive(Debug, Clone)]
pub enum AppendError {
    /// `expected_seq` did not match the plan's head.
    SeqConflict {
        expected: u64,
        head: u64,
    },
    /// The Idempotency-Key was used before with a different request.
    IdempotencyConflict {
        seq: u64,
    },
    /// The plan was deleted; its id is never used again. Holds the seq of
    /// its tombstone in the system journal.
    PlanDeleted {
        tombstone_seq: u64,
    },
    /// The writer has stopped; the daemon is shutting down.
    Unavailable,
    Storage(StoreError),
}

/// How the store opens its database.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// Every commit records the allocator state, so that opening after a
    /// crash skips the full repair (see `docs/benchmarks.md`).
    pub quick_repair: bool,
}

enum Job {
    Append(AppendRequest, writer::Reply),
    /// Deleting a plan is a write like an append, so the writer does it.
    DeletePlan(
        Uuid,
        serde_json::Value,
        oneshot::Sender<Result<admin::Deleted, admin::DeleteError>>,
    ),
    /// Redactions too: each appends its record to the system journal.
    Redact(
        Vec<redact::Redaction>,
        oneshot::Sender<redact::RedactOutcomes>,
    ),
    /// Rewrites the database file with only its live rows.
    Compact(oneshot::Sender<Result<Compacted, StoreError>>),
    Shutdown,
    /// Wakes the writer to reopen the database after a write elsewhere
    /// failed with an I/O fault.
    Recover,
}

/// Counters the writer keeps, for status and metrics.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub commits: AtomicU64,
    pub appends: AtomicU64,
    pub last_batch_size: AtomicU64,
    pub last_commit_micros: AtomicU64,
    /// Test switch: the next batch's redb commit fails after its frames
    /// were synced (`wal_power_cut.rs`).
    #[cfg(test)]
    pub(crate) fail_next_commit: std::sync::atomic::AtomicBool,
    /// Test switch: writing the next batch's rows fails after its frames
    /// were written, before they were synced (`wal_power_cut.rs`).
    #[cfg(test)]
    pub(crate) fail_next_rows: std::sync::atomic::AtomicBool,
    /// Test switch: the next batch's data sync fails after its frames and
    /// rows were written (`wal_power_cut.rs`).
    #[cfg(test)]
    pub(crate) fail_next_sync: std::sync::atomic::AtomicBool,
    /// Test switch: that failure is an I/O fault, which takes the handle
    /// down for the writer to reopen (`wal_jobs.rs`).
    #[cfg(test)]
    pub(crate) injected_fault_is_io: std::sync::atomic::AtomicBool,
    /// Test switch: no checkpoint when idle, so that a test can copy the
    /// files as a power cut would leave them, with redb's last `None`
    /// commits lost.
    #[cfg(test)]
    pub(crate) no_idle_checkpoint: std::sync::atomic::AtomicBool,
    /// Test switch: the next wipe of the segment (after a redaction or a
    /// compaction) fails (`wal_jobs.rs`).
    #[cfg(test)]
    pub(crate) fail_next_wipe: std::sync::atomic::AtomicBool,
    /// Test switch: the next wipe writes the segment's new header but its
    /// `fdatasync` fails, as an EIO would (`wal_jobs.rs`).
    #[cfg(test)]
    pub(crate) fail_next_header_sync: std::sync::atomic::AtomicBool,
    /// Test hook: runs once right after the next redaction commits, before
    /// anything else, as a crash there would stop the writer
    /// (`wal_jobs.rs`).
    #[cfg(test)]
    pub(crate) after_redaction_commit: std::sync::Mutex<Option<TestHook>>,
}

/// A closure a test runs at one point of the writer's work.
#[cfg(test)]
pub(crate) struct TestHook(pub(crate) Box<dyn FnOnce() + Send>);

#[cfg(test)]
impl std::fmt::Debug for TestHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestHook")
    }
}

/// The journal store, with its blocking API. Async code holds an
/// [`AsyncStore`] instead, which runs storage calls off the async threads.
pub struct Store {
    db: Arc<Db>,
    jobs: mpsc::Sender<Job>,
    fed: Arc<FedShared>,
    /// Signs new events and verifies old ones; replaced by a key rotation.
    keyring: Arc<logbook_base::reloadable::Reloadable<Keyring>>,
    pub stats: Arc<WriterStats>,
    /// [`QUEUE_BYTES`], as permits.
    queued_bytes: Arc<tokio::sync::Semaphore>,
    /// Plans the next heads-log pass enters again (`heads_log.rs`).
    reenter: std::sync::Mutex<heads_log::Reentries>,
}

/// Owns the writer thread; `shutdown` drains queued appends and joins it.
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    thread: std::thread::JoinHandle<()>,
}

impl Writer {
    /// Finishes every append queued so far, then stops the writer.
    pub fn shutdown(self) {
        // If the writer already died its receiver is gone; joining still reports it.
        let _ = self.jobs.blocking_send(Job::Shutdown);
        if self.thread.join().is_err() {
            tracing::error!("journal writer thread panicked");
        }
    }
}

impl Store {
    /// Opens (or creates) the database and starts the writer. Committed
    /// events are sent to `fanout` in commit order.
    pub fn open(
        path: &Path,
        keyring: Arc<Keyring>,
        fanout: Fanout,
    ) -> Result<(Store, Writer), StoreError> {
        Store::open_with(path, keyring, fanout, &StoreOptions::default())
    }

    /// [`Store::open`] with options.
    pub fn open_with(
        path: &Path,
        keyring: Arc<Keyring>,
        fanout: Fanout,
        options: &StoreOptions,
    ) -> Result<(Store, Writer), StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Snapshots of a backup the last run did not finish hold journal data.
            match admin::remove_stale_snapshots(dir) {
                Ok(0) => {}
                Ok(n) => tracing::warn!(
                    count = n,
                    dir = %dir.display(),
                    "removed snapshots left behind by an interrupted backup"
                ),
                Err(e) => {
                    return Err(StoreError(format!(
                        "removing stale backup snapshots in {}: {e}",
                        dir.display()
                    )));
                }
            }
        }
        replay::refuse_orphan_segment(path)?;
        let db = handle::open_database(path)?;
        // The journal is as private as the keys: the data dir is 0700, and
        // the file itself is 0600 too, whatever the umask was.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| StoreError(format!("making {} private: {e}", path.display())))?;
        }
        // Create every table up front so readers never see a missing one.
        let mut txn = db.begin_write()?;
        handle::commit_settings(&mut txn, options.quick_repair);
        tables::create_all(&txn)?;
        // The outbox's event index, checked against the outbox unless a
        // clean stop marked it complete up to the journal's last position
        // (a store from before it, a crash, an older build's run).
        let indexed = federation::index_outbox(&txn)?;
        if indexed.scanned > 0 {
            tracing::info!(
                scanned = indexed.scanned,
                added = indexed.added,
                unreadable = indexed.unreadable,
                "indexed the outbox's copies of journal events (a store from before the index, after a crash, or after an older build ran on it)"
            );
        }
        txn.commit()?;
        // Before anything reads: events acknowledged from the segment that
        // redb lost in a crash are put back, or the store does not open.
        let started = std::time::Instant::now();
        let (segment, replayed) =
            replay::replay_and_empty(&db, path, options.quick_repair, Some(keyring.as_ref()))?;
        // The segment holds the latest events: as private as the database,
        // also when it was copied in or its mode changed since it was made.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(segment.path(), std::fs::Permissions::from_mode(0o600))
                .map_err(|e| {
                    StoreError(format!("making {} private: {e}", segment.path().display()))
                })?;
        }
        if replayed != replay::Replayed::default() {
            tracing::info!(
                restored = replayed.restored,
                present = replayed.present,
                micros = started.elapsed().as_micros() as u64,
                segment = %segment.path().display(),
                "replayed the write-ahead segment"
            );
        }

        let db = Arc::new(Db::new(path, db, options.quick_repair));
        let position = last_position(&db)?;
        let (jobs, rx) = mpsc::channel(QUEUE_DEPTH);
        db.set_writer(jobs.clone());
        let stats = Arc::new(WriterStats::default());
        let fed = Arc::new(FedShared::default());
        let keyring = Arc::new(logbook_base::reloadable::Reloadable::new(Keyring::clone(
            &keyring,
        )));
        let mut writer = WriterLoop {
            fed: fed.clone(),
            db: db.clone(),
            keyring: keyring.clone(),
            fanout,
            position,
            stats: stats.clone(),
            retry: RETRY_FIRST,
            segment: Some(segment),
        };
        let thread = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || {
                // A panic here means an invariant broke mid-batch. Appends
                // cannot proceed safely, so stop the process loudly (systemd
                // restarts it, and redb recovers the last commit) instead of
                // answering 503 forever.
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| writer.run(rx)))
                    .is_err()
                {
                    tracing::error!("journal writer panicked; exiting");
                    std::process::exit(70);
                }
            })
            .map_err(|e| StoreError(format!("starting the writer thread: {e}")))?;
        let store = Store {
            db,
            jobs: jobs.clone(),
            fed,
            keyring,
            stats,
            queued_bytes: Arc::new(tokio::sync::Semaphore::new(QUEUE_BYTES)),
            reenter: std::sync::Mutex::new(heads_log::Reentries::default()),
        };
        let writer = Writer { jobs, thread };
        // No append can arrive before the store is returned.
        if let Err(e) = store
            .record_old_deletions()
            .and_then(|()| store.build_missing_trees())
        {
            writer.shutdown();
            return Err(e);
        }
        Ok((store, writer))
    }

    /// Appends one event. Returns once its transaction is committed and fsynced.
    pub async fn append(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        let bytes = request.payload.json.get().len()
            + request.event_type.len()
            + request.actor.as_ref().map_or(0, String::len);
        // At least one permit, so that every queued append is counted.
        let share = u32::try_from(bytes.clamp(1, QUEUE_BYTES)).unwrap_or(u32::MAX);
        let queued = self
            .queued_bytes
            .clone()
            .acquire_many_owned(share)
            .await
            .map_err(|_| AppendError::Unavailable)?;
        let (reply, wait) = oneshot::channel();
        self.jobs
            .send(Job::Append(request, writer::Reply::new(reply, queued)))
            .await
            .map_err(|_| AppendError::Unavailable)?;
        wait.await.unwrap_or(Err(AppendError::Unavailable))
    }

    /// Overwrites a stored event exactly as given, bypassing every check.
    ///
    /// This exists only so tests can play an attacker with write access to
    /// the database file; the daemon never calls it.
    #[doc(hidden)]
    pub fn overwrite_event_unchecked(&self, event: &Event) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut events = txn.open_table(EVENTS)?;
            events.insert(
                &event_key(&event.plan_id, event.seq),
                encode(&record_from_event(event)).as_slice(),
            )?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Removes a stored event, bypassing every check. Test-only, like
    /// [`Store::overwrite_event_unchecked`].
    #[doc(hidden)]
    pub fn remove_event_unchecked(&self, plan_id: &Uuid, seq: u64) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(EVENTS)?.remove(&event_key(plan_id, seq))?;
        txn.commit()?;
        Ok(())
    }
}
