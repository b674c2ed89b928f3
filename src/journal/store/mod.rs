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

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use redb::{Durability, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::value::RawValue;
use tokio::sync::{broadcast, mpsc, oneshot};
use uuid::Uuid;

use super::chain::{BrokenReason, CanonicalPayload, ChainReport, ChainVerifier, Signable};
use super::event::{Event, Timestamp};
use super::keys::Keyring;

pub mod admin;
mod federation;
mod handle;
mod retention;
mod tables;
pub use federation::*;
use handle::Db;
pub use handle::Health;
pub use retention::PruneStep;

type EventKey = [u8; 24];

const EVENTS: TableDefinition<EventKey, &[u8]> = TableDefinition::new("events");
const HEADS: TableDefinition<[u8; 16], &[u8]> = TableDefinition::new("plan_heads");
const POSITIONS: TableDefinition<u64, EventKey> = TableDefinition::new("positions");
const IDEMPOTENCY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("idempotency");

/// Version byte in front of every record this build writes.
pub const RECORD_VERSION: u8 = 1;
/// File name of the database inside the data dir.
pub const DB_FILE: &str = "journal.redb";
/// Most appends one transaction takes; a bound on the batch's latency.
const MAX_BATCH: usize = 1024;
/// Appends waiting for the writer before callers wait to enqueue.
const QUEUE_DEPTH: usize = 4096;
/// Events read per transaction when scanning.
pub const READ_PAGE: usize = 512;

#[derive(Debug, Clone)]
pub struct StoreError {
    message: String,
    fault: Fault,
}

/// What kind of failure a [`StoreError`] is: the HTTP edge answers 507 or
/// 503 for the first three (nothing was written, retry later) and 500 for
/// the rest; the writer reopens the database after `Full` and `Io`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The disk (or the quota) is full.
    Full,
    /// Another I/O error; redb refuses the handle from now on.
    Io,
    /// The database is being reopened, or is closed.
    Unavailable,
    /// Anything else: a corrupt record, a broken invariant.
    Other,
}

/// `StoreError(message)`: the spelling the whole store uses for an error
/// that is not an I/O fault (a struct with named fields leaves the value
/// namespace free for this function).
#[allow(non_snake_case)]
fn StoreError(message: String) -> StoreError {
    StoreError::with_fault(message, Fault::Other)
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StoreError {}

impl StoreError {
    pub(crate) fn with_fault(message: String, fault: Fault) -> StoreError {
        StoreError { message, fault }
    }

    /// A blocking read task that panicked or was cancelled.
    pub fn from_join(e: &tokio::task::JoinError) -> StoreError {
        StoreError(format!("read task failed: {e}"))
    }

    pub fn fault(&self) -> Fault {
        self.fault
    }
}

/// The I/O fault inside a redb error, if any.
trait Faulty {
    fn fault(&self) -> Fault;
}

impl Faulty for redb::StorageError {
    fn fault(&self) -> Fault {
        use std::io::ErrorKind;
        match self {
            redb::StorageError::Io(io)
                if matches!(io.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded) =>
            {
                Fault::Full
            }
            redb::StorageError::Io(_) | redb::StorageError::PreviousIo => Fault::Io,
            redb::StorageError::DatabaseClosed => Fault::Unavailable,
            _ => Fault::Other,
        }
    }
}

impl Faulty for redb::Error {
    fn fault(&self) -> Fault {
        use std::io::ErrorKind;
        match self {
            redb::Error::Io(io)
                if matches!(io.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded) =>
            {
                Fault::Full
            }
            redb::Error::Io(_) | redb::Error::PreviousIo => Fault::Io,
            redb::Error::DatabaseClosed => Fault::Unavailable,
            _ => Fault::Other,
        }
    }
}

macro_rules! storage_inside {
    ($($t:ident),*) => {$(
        impl Faulty for redb::$t {
            fn fault(&self) -> Fault {
                match self {
                    redb::$t::Storage(e) => e.fault(),
                    _ => Fault::Other,
                }
            }
        }
    )*};
}
storage_inside!(DatabaseError, TransactionError, TableError, CommitError);

impl Faulty for redb::SetDurabilityError {
    fn fault(&self) -> Fault {
        Fault::Other
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                let fault = e.fault();
                StoreError::with_fault(format!("storage: {e}"), fault)
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// What a plan's chain ends in. Kept per plan so an append never scans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanHead {
    pub last_seq: u64,
    pub last_signature: [u8; 32],
    pub count: u64,
    pub first_at: i64,
    pub last_at: i64,
}

#[derive(Serialize, Deserialize)]
struct EventRecord {
    id: [u8; 16],
    event_type: String,
    actor: Option<String>,
    payload: String,
    payload_hash: [u8; 32],
    prev_hash: Option<[u8; 32]>,
    signature: [u8; 32],
    key_id: String,
    created_at: i64,
    position: u64,
}

#[derive(Serialize, Deserialize)]
struct IdempotencyRecord {
    fingerprint: [u8; 32],
    seq: u64,
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![RECORD_VERSION];
    // postcard only fails on types it cannot represent; ours are all plain.
    out.extend(postcard::to_stdvec(value).expect("records always encode"));
    out
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&RECORD_VERSION, body)) => {
            postcard::from_bytes(body).map_err(|e| StoreError(format!("corrupt record: {e}")))
        }
        Some((v, _)) => Err(StoreError(format!(
            "record format version {v} is not known to this build (it knows {RECORD_VERSION})"
        ))),
        None => Err(StoreError("empty record".into())),
    }
}

fn event_key(plan_id: &Uuid, seq: u64) -> EventKey {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(plan_id.as_bytes());
    key[16..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn idempotency_key(plan_id: &Uuid, key: &str) -> Vec<u8> {
    let mut out = plan_id.as_bytes().to_vec();
    out.extend_from_slice(key.as_bytes());
    out
}

fn event_from_record(key: &EventKey, record: EventRecord) -> Result<Event, StoreError> {
    let plan_id = Uuid::from_slice(&key[..16]).expect("16 bytes");
    let seq = u64::from_be_bytes(key[16..].try_into().expect("8 bytes"));
    Ok(Event {
        id: Uuid::from_bytes(record.id),
        plan_id,
        seq,
        event_type: record.event_type,
        actor: record.actor,
        payload: RawValue::from_string(record.payload)
            .map_err(|e| StoreError(format!("corrupt payload at {plan_id}/{seq}: {e}")))?,
        payload_hash: record.payload_hash,
        prev_hash: record.prev_hash,
        signature: record.signature,
        key_id: record.key_id,
        created_at: Timestamp(record.created_at),
        position: record.position,
    })
}

/// [`EventRecord`] borrowing from an [`Event`], so that writing a record
/// copies nothing but the encoded bytes. postcard encodes `&str` exactly as
/// `String`, so this must list the same fields in the same order.
#[derive(Serialize)]
struct EventRecordRef<'a> {
    id: [u8; 16],
    event_type: &'a str,
    actor: Option<&'a str>,
    payload: &'a str,
    payload_hash: [u8; 32],
    prev_hash: Option<[u8; 32]>,
    signature: [u8; 32],
    key_id: &'a str,
    created_at: i64,
    position: u64,
}

fn record_from_event(event: &Event) -> EventRecordRef<'_> {
    EventRecordRef {
        id: event.id.into_bytes(),
        event_type: &event.event_type,
        actor: event.actor.as_deref(),
        payload: event.payload.get(),
        payload_hash: event.payload_hash,
        prev_hash: event.prev_hash,
        signature: event.signature,
        key_id: &event.key_id,
        created_at: event.created_at.0,
        position: event.position,
    }
}

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
    Append(
        AppendRequest,
        oneshot::Sender<Result<Appended, AppendError>>,
    ),
    /// Deleting a plan is a write like an append, so the writer does it.
    DeletePlan(
        Uuid,
        serde_json::Value,
        oneshot::Sender<Result<admin::Deleted, admin::DeleteError>>,
    ),
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
}

/// A handle to the journal store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<Db>,
    jobs: mpsc::Sender<Job>,
    fed: Arc<FedShared>,
    /// Signs new events and verifies old ones; replaced by a key rotation.
    keyring: Arc<crate::reload::Reloadable<Keyring>>,
    pub stats: Arc<WriterStats>,
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
        fanout: broadcast::Sender<Arc<Event>>,
    ) -> Result<(Store, Writer), StoreError> {
        Store::open_with(path, keyring, fanout, &StoreOptions::default())
    }

    /// [`Store::open`] with options.
    pub fn open_with(
        path: &Path,
        keyring: Arc<Keyring>,
        fanout: broadcast::Sender<Arc<Event>>,
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
        txn.set_quick_repair(options.quick_repair);
        tables::create_all(&txn)?;
        txn.commit()?;

        let db = Arc::new(Db::new(path, db, options.quick_repair));
        let position = last_position(&db)?;
        let (jobs, rx) = mpsc::channel(QUEUE_DEPTH);
        db.set_writer(jobs.clone());
        let stats = Arc::new(WriterStats::default());
        let fed = Arc::new(FedShared::default());
        let keyring = Arc::new(crate::reload::Reloadable::new(Keyring::clone(&keyring)));
        let mut writer = WriterLoop {
            fed: fed.clone(),
            db: db.clone(),
            keyring: keyring.clone(),
            fanout,
            position,
            stats: stats.clone(),
            retry: RETRY_FIRST,
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
        Ok((
            Store {
                db,
                jobs: jobs.clone(),
                fed,
                keyring,
                stats,
            },
            Writer { jobs, thread },
        ))
    }

    /// Appends one event. Returns once its transaction is committed and fsynced.
    pub async fn append(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        let (reply, wait) = oneshot::channel();
        self.jobs
            .send(Job::Append(request, reply))
            .await
            .map_err(|_| AppendError::Unavailable)?;
        wait.await.unwrap_or(Err(AppendError::Unavailable))
    }

    pub fn head(&self, plan_id: &Uuid) -> Result<Option<PlanHead>, StoreError> {
        let txn = self.db.begin_read()?;
        let heads = txn.open_table(HEADS)?;
        heads
            .get(plan_id.into_bytes())?
            .map(|v| decode(v.value()))
            .transpose()
    }

    /// Plans in id order, starting after `after`.
    pub fn plans(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<(Uuid, PlanHead)>, StoreError> {
        let txn = self.db.begin_read()?;
        let heads = txn.open_table(HEADS)?;
        let range = match after {
            Some(after) => heads.range::<[u8; 16]>((
                std::ops::Bound::Excluded(after.into_bytes()),
                std::ops::Bound::Unbounded,
            ))?,
            None => heads.range::<[u8; 16]>(..)?,
        };
        let mut out = Vec::new();
        for entry in range.take(limit) {
            let (k, v) = entry?;
            out.push((Uuid::from_bytes(k.value()), decode(v.value())?));
        }
        Ok(out)
    }

    /// Events of a plan with seq > `after`, in order, at most `limit`.
    pub fn events(
        &self,
        plan_id: &Uuid,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let Some(first) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let txn = self.db.begin_read()?;
        let events = txn.open_table(EVENTS)?;
        let mut out = Vec::new();
        for entry in events
            .range(event_key(plan_id, first)..=event_key(plan_id, u64::MAX))?
            .take(limit)
        {
            let (k, v) = entry?;
            out.push(event_from_record(&k.value(), decode(v.value())?)?);
        }
        Ok(out)
    }

    /// Events of every plan with store-wide position > `after`, in position order.
    pub fn events_after_position(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let Some(first) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let txn = self.db.begin_read()?;
        let positions = txn.open_table(POSITIONS)?;
        let events = txn.open_table(EVENTS)?;
        let mut out = Vec::new();
        for entry in positions.range(first..)?.take(limit) {
            let (_, key) = entry?;
            let key = key.value();
            let record = events
                .get(key)?
                .ok_or_else(|| StoreError("position index points at a missing event".into()))?;
            out.push(event_from_record(&key, decode(record.value())?)?);
        }
        Ok(out)
    }

    /// The highest store-wide position committed so far.
    pub fn last_position(&self) -> Result<u64, StoreError> {
        last_position(&self.db)
    }

    /// Whether appends can commit right now (for `/readyz`).
    pub fn health(&self) -> Health {
        self.db.health()
    }

    /// Verifies a plan's whole chain from seq 1 within one snapshot.
    pub fn verify_plan(
        &self,
        plan_id: &Uuid,
        keyring: &Keyring,
    ) -> Result<ChainReport, StoreError> {
        let report = self.verify_plan_inner(plan_id, keyring);
        crate::metrics::observe_verify(report.as_ref().is_ok_and(ChainReport::is_valid));
        report
    }

    fn verify_plan_inner(
        &self,
        plan_id: &Uuid,
        keyring: &Keyring,
    ) -> Result<ChainReport, StoreError> {
        let txn = self.db.begin_read()?;
        let events = txn.open_table(EVENTS)?;
        let mut verifier = ChainVerifier::default();
        for entry in events.range(event_key(plan_id, 0)..=event_key(plan_id, u64::MAX))? {
            let (k, v) = entry?;
            let event = event_from_record(&k.value(), decode(v.value())?)?;
            if let Err(reason) = verifier.check(&event, keyring) {
                return Ok(ChainReport {
                    verified: verifier.last_seq(),
                    broken: Some((event.seq, reason)),
                    head_signature: verifier.last_signature(),
                });
            }
        }
        // The chain alone cannot see a missing tail; the head record can.
        // It is only as trustworthy as the file (signed checkpoints come
        // later), but it catches a tail removed without updating it.
        let head: Option<PlanHead> = txn
            .open_table(HEADS)?
            .get(plan_id.into_bytes())?
            .map(|v| decode(v.value()))
            .transpose()?;
        let broken = head.and_then(|head| {
            if head.last_seq != verifier.last_seq() {
                Some((verifier.last_seq() + 1, BrokenReason::SeqGap))
            } else if Some(head.last_signature) != verifier.last_signature() {
                Some((head.last_seq, BrokenReason::Signature))
            } else {
                None
            }
        });
        Ok(ChainReport {
            verified: verifier.last_seq(),
            broken,
            head_signature: verifier.last_signature(),
        })
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
                event_key(&event.plan_id, event.seq),
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
        txn.open_table(EVENTS)?.remove(event_key(plan_id, seq))?;
        txn.commit()?;
        Ok(())
    }
}

fn last_position(db: &Db) -> Result<u64, StoreError> {
    let txn = db.begin_read()?;
    let positions = txn.open_table(POSITIONS)?;
    Ok(positions.last()?.map_or(0, |(k, _)| k.value()))
}

/// First wait before reopening the database after a failed write; it
/// doubles up to [`RETRY_MAX`] until a commit succeeds again.
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(200);
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(5);
/// How often the writer looks at its queue while it waits to reopen.
const RECOVERY_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// The single writer. Owning all writes in one thread is what makes
/// sequence numbers contiguous and lets one fsync cover a whole batch.
struct WriterLoop {
    /// Federation routing: whom to queue each appended event for.
    fed: Arc<FedShared>,
    db: Arc<Db>,
    keyring: Arc<crate::reload::Reloadable<Keyring>>,
    fanout: broadcast::Sender<Arc<Event>>,
    /// Last committed store-wide position.
    position: u64,
    stats: Arc<WriterStats>,
    /// Wait before the next attempt to reopen after a failed write.
    retry: std::time::Duration,
}

type Reply = oneshot::Sender<Result<Appended, AppendError>>;

impl WriterLoop {
    fn run(&mut self, mut rx: mpsc::Receiver<Job>) {
        let mut batch: Vec<(AppendRequest, Reply)> = Vec::with_capacity(MAX_BATCH);
        let mut stopping = false;
        while !stopping {
            if self.db.health() != Health::Ready && !self.recover(&mut rx) {
                break;
            }
            // Block for the first job, then take whatever else is already queued.
            let mut deletion = None;
            match rx.blocking_recv() {
                Some(Job::Append(req, reply)) => batch.push((req, reply)),
                Some(Job::DeletePlan(plan, who, reply)) => deletion = Some((plan, who, reply)),
                Some(Job::Shutdown) | None => break,
                Some(Job::Recover) => continue,
            }
            while deletion.is_none() && batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(Job::Append(req, reply)) => batch.push((req, reply)),
                    // Appends queued before the deletion commit before it.
                    Ok(Job::DeletePlan(plan, who, reply)) => deletion = Some((plan, who, reply)),
                    Ok(Job::Shutdown) => {
                        stopping = true;
                        break;
                    }
                    // Noticed at the top of the loop, after this batch.
                    Ok(Job::Recover) => {}
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.commit_batch(&mut batch);
            }
            if let Some((plan, who, reply)) = deletion {
                let outcome = self.delete_plan(plan, who);
                let failed = match &outcome {
                    Err(admin::DeleteError::Storage(e)) => Some(e.clone()),
                    _ => None,
                };
                let _ = reply.send(outcome);
                if let Some(e) = failed {
                    tracing::error!(error = %e, %plan, "deleting a plan failed; nothing was written");
                    self.after_failure(&e);
                }
            }
        }
        tracing::debug!("journal writer stopped");
    }

    fn commit_batch(&mut self, batch: &mut Vec<(AppendRequest, Reply)>) {
        let started = Instant::now();
        match self.write_batch(batch) {
            Ok((outcomes, position)) => {
                self.position = position;
                let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .last_batch_size
                    .store(batch.len() as u64, Ordering::Relaxed);
                self.stats
                    .last_commit_micros
                    .store(micros, Ordering::Relaxed);
                crate::metrics::observe_commit(batch.len(), micros);
                self.retry = RETRY_FIRST;
                for ((_, reply), outcome) in batch.drain(..).zip(outcomes) {
                    if let Ok(appended) = &outcome
                        && !appended.replayed
                    {
                        self.stats.appends.fetch_add(1, Ordering::Relaxed);
                        // No receivers is fine: nobody is streaming.
                        let _ = self.fanout.send(appended.event.clone());
                    }
                    // The caller may have gone away; the event is stored regardless.
                    let _ = reply.send(outcome);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, appends = batch.len(), "journal commit failed; nothing in the batch was written");
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(AppendError::Storage(e.clone())));
                }
                self.after_failure(&e);
            }
        }
    }

    /// After a failed write: an I/O fault leaves redb's handle unusable for
    /// good, so take it out of service; [`WriterLoop::recover`] reopens it.
    /// The callers of the failed commit were already told it failed.
    fn after_failure(&self, e: &StoreError) {
        let Some(health) = self.db.failed(e) else {
            return;
        };
        tracing::warn!(
            ?health,
            "the journal database is out of service after a failed write; reopening it as soon as a commit can succeed"
        );
    }

    /// Reopens the database after a failed write, retrying with a growing
    /// delay. Meanwhile every job is answered at once with the refusal (507
    /// or 503), so no caller waits on a disk that may stay full for hours.
    /// Returns false when told to stop.
    fn recover(&mut self, rx: &mut mpsc::Receiver<Job>) -> bool {
        let mut next_attempt = Instant::now() + self.retry;
        loop {
            loop {
                let refusal = || self.db.health().refusal();
                match rx.try_recv() {
                    Ok(Job::Append(_, reply)) => {
                        let _ = reply.send(Err(AppendError::Storage(refusal())));
                    }
                    Ok(Job::DeletePlan(_, _, reply)) => {
                        let _ = reply.send(Err(admin::DeleteError::Storage(refusal())));
                    }
                    Ok(Job::Shutdown) | Err(mpsc::error::TryRecvError::Disconnected) => {
                        return false;
                    }
                    Ok(Job::Recover) => {}
                    Err(mpsc::error::TryRecvError::Empty) => break,
                }
            }
            let now = Instant::now();
            if now >= next_attempt && self.db.health() == Health::Full && !self.db.has_room() {
                // Still full: wait for space rather than reopen to fail again.
                self.retry = (self.retry * 2).min(RETRY_MAX);
                next_attempt = now + self.retry;
            } else if now >= next_attempt {
                match self.db.reopen().and_then(|_| last_position(&self.db)) {
                    Ok(position) => {
                        self.position = position;
                        self.db.set_health(Health::Ready);
                        tracing::info!(
                            position,
                            "the journal database is reopened; appends commit again"
                        );
                        return true;
                    }
                    Err(e) => {
                        if e.fault() == Fault::Full {
                            self.db.set_health(Health::Full);
                        }
                        self.db.take_down();
                        self.retry = (self.retry * 2).min(RETRY_MAX);
                        next_attempt = now + self.retry;
                        tracing::warn!(error = %e, retry_ms = self.retry.as_millis() as u64, "reopening the journal database failed; retrying");
                    }
                }
            }
            std::thread::sleep(RECOVERY_POLL.min(next_attempt.saturating_duration_since(now)));
        }
    }

    /// Applies a batch in one transaction. The outer error aborts the whole
    /// batch (nothing is written); inner errors refuse single appends.
    #[allow(clippy::type_complexity)]
    fn write_batch(
        &self,
        batch: &[(AppendRequest, Reply)],
    ) -> Result<(Vec<Result<Appended, AppendError>>, u64), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let mut position = self.position;
        let mut outcomes = Vec::with_capacity(batch.len());
        let enqueued = {
            let mut tables = Tables::open(&txn, &self.fed)?;
            let now = Timestamp::now();
            // One keyring per batch, even if a rotation lands meanwhile.
            let keyring = self.keyring.current();
            for (req, _) in batch {
                outcomes.push(tables.apply(req, &keyring, now, &mut position)?);
            }
            tables.fed.enqueued
        };
        txn.commit()?;
        if enqueued > 0 {
            self.fed.outbox_grew();
        }
        Ok((outcomes, position))
    }
}

struct Tables<'txn> {
    fed: federation::FedTables<'txn>,
    events: redb::Table<'txn, EventKey, &'static [u8]>,
    heads: redb::Table<'txn, [u8; 16], &'static [u8]>,
    positions: redb::Table<'txn, u64, EventKey>,
    idempotency: redb::Table<'txn, &'static [u8], &'static [u8]>,
}

impl<'txn> Tables<'txn> {
    fn open(
        txn: &'txn redb::WriteTransaction,
        fed: &FedShared,
    ) -> Result<Tables<'txn>, StoreError> {
        Ok(Tables {
            fed: federation::FedTables::open(txn, fed)?,
            events: txn.open_table(EVENTS)?,
            heads: txn.open_table(HEADS)?,
            positions: txn.open_table(POSITIONS)?,
            idempotency: txn.open_table(IDEMPOTENCY)?,
        })
    }

    fn apply(
        &mut self,
        req: &AppendRequest,
        keyring: &Keyring,
        now: Timestamp,
        position: &mut u64,
    ) -> Result<Result<Appended, AppendError>, StoreError> {
        let plan = req.plan_id;
        // An idempotent retry wins over every other check: it must return the
        // original outcome even if the plan has moved on since.
        if let Some(idem) = &req.idempotency {
            let existing = self
                .idempotency
                .get(idempotency_key(&plan, &idem.key).as_slice())?
                .map(|v| decode::<IdempotencyRecord>(v.value()))
                .transpose()?;
            if let Some(record) = existing {
                if record.fingerprint != idem.fingerprint {
                    return Ok(Err(AppendError::IdempotencyConflict { seq: record.seq }));
                }
                let key = event_key(&plan, record.seq);
                let stored = self.events.get(key)?.ok_or_else(|| {
                    StoreError("idempotency record points at a missing event".into())
                })?;
                let event = event_from_record(&key, decode(stored.value())?)?;
                return Ok(Ok(Appended {
                    event: Arc::new(event),
                    replayed: true,
                }));
            }
        }

        let head: Option<PlanHead> = self
            .heads
            .get(plan.into_bytes())?
            .map(|v| decode(v.value()))
            .transpose()?;
        let head_seq = head.map_or(0, |h| h.last_seq);
        if let Some(expected) = req.expected_seq
            && expected != head_seq
        {
            return Ok(Err(AppendError::SeqConflict {
                expected,
                head: head_seq,
            }));
        }

        let seq = head_seq + 1;
        // Time never runs backwards within a plan, even if the clock does.
        let created_at = head.map_or(now, |h| now.max(Timestamp(h.last_at)));
        let mut event = Event {
            id: Uuid::now_v7(),
            plan_id: plan,
            seq,
            event_type: req.event_type.clone(),
            actor: req.actor.clone(),
            payload: req.payload.json.clone(),
            payload_hash: req.payload.hash,
            prev_hash: head.map(|h| h.last_signature),
            signature: [0; 32],
            key_id: keyring.current_id().to_string(),
            created_at,
            position: *position + 1,
        };
        event.signature = Signable::of(&event).sign(keyring.current_secret());

        let key = event_key(&plan, seq);
        if self
            .events
            .insert(key, encode(&record_from_event(&event)).as_slice())?
            .is_some()
        {
            return Err(StoreError(format!(
                "invariant broken: event {plan}/{seq} already exists though the head said {head_seq}"
            )));
        }
        let new_head = PlanHead {
            last_seq: seq,
            last_signature: event.signature,
            count: head.map_or(0, |h| h.count) + 1,
            first_at: head.map_or(created_at.0, |h| h.first_at),
            last_at: created_at.0,
        };
        debug_assert_eq!(new_head.count, new_head.last_seq, "plans are append-only");
        self.heads
            .insert(plan.into_bytes(), encode(&new_head).as_slice())?;
        // Same transaction as the event: a crash cannot keep one without the other.
        self.fed.enqueue_event(&event)?;
        self.positions.insert(event.position, key)?;
        if let Some(idem) = &req.idempotency {
            let record = IdempotencyRecord {
                fingerprint: idem.fingerprint,
                seq,
            };
            self.idempotency.insert(
                idempotency_key(&plan, &idem.key).as_slice(),
                encode(&record).as_slice(),
            )?;
        }
        *position += 1;
        Ok(Ok(Appended {
            event: Arc::new(event),
            replayed: false,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_plan_then_seq() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        assert!(event_key(&a, 255) < event_key(&a, 256));
        assert!(event_key(&a, u64::MAX) < event_key(&b, 0));
    }

    /// One batch mixing every outcome for one plan: a new event, a retry of
    /// it with the same key (in the same batch), the key reused for another
    /// request, a stale `expected_seq`, and a correct one. Each caller gets
    /// its own answer, seqs and positions stay contiguous, and only the new
    /// events reach the fan-out, in commit order.
    #[tokio::test]
    async fn a_batch_with_mixed_outcomes_answers_each_caller() {
        use super::super::chain::CanonicalPayload;
        let dir = tempfile::tempdir().unwrap();
        let (fanout, mut published) = broadcast::channel(16);
        let keyring = Arc::new(Keyring::from_secret(b"test".to_vec()));
        let (store, writer) =
            Store::open(&dir.path().join("j.redb"), keyring, fanout.clone()).unwrap();
        let plan = Uuid::new_v4();
        let request = |n: u64, expected_seq: Option<u64>, key: Option<&str>| AppendRequest {
            plan_id: plan,
            event_type: "step.started".into(),
            actor: None,
            payload: CanonicalPayload::new(&serde_json::json!({ "n": n })),
            expected_seq,
            idempotency: key.map(|key| Idempotency {
                key: key.into(),
                fingerprint: [n as u8; 32],
            }),
        };
        let batch_requests = [
            request(1, Some(0), Some("k")), // new: seq 1
            request(1, Some(0), Some("k")), // same key, same request: replay of seq 1
            request(2, None, Some("k")),    // same key, other request: conflict
            request(3, Some(0), None),      // stale expected_seq: conflict, head 1
            request(4, Some(1), None),      // new: seq 2
        ];
        let mut batch = Vec::new();
        let mut answers = Vec::new();
        for req in batch_requests {
            let (reply, answer) = oneshot::channel();
            batch.push((req, reply));
            answers.push(answer);
        }
        let mut writer_loop = WriterLoop {
            fed: store.fed.clone(),
            db: store.db.clone(),
            keyring: store.keyring.clone(),
            fanout,
            position: 0,
            stats: Arc::new(WriterStats::default()),
            retry: RETRY_FIRST,
        };
        writer_loop.commit_batch(&mut batch);
        let mut outcomes = Vec::new();
        for answer in answers {
            outcomes.push(answer.await.unwrap());
        }
        let created = |o: &Result<Appended, AppendError>| {
            o.as_ref()
                .map(|a| (a.event.seq, a.event.position, a.replayed))
                .map_err(|e| format!("{e:?}"))
        };
        assert_eq!(created(&outcomes[0]), Ok((1, 1, false)));
        assert_eq!(created(&outcomes[1]), Ok((1, 1, true)));
        assert_eq!(
            outcomes[1].as_ref().unwrap().event.id,
            outcomes[0].as_ref().unwrap().event.id
        );
        assert!(matches!(
            outcomes[2],
            Err(AppendError::IdempotencyConflict { seq: 1 })
        ));
        assert!(matches!(
            outcomes[3],
            Err(AppendError::SeqConflict {
                expected: 0,
                head: 1
            })
        ));
        assert_eq!(created(&outcomes[4]), Ok((2, 2, false)));
        assert_eq!(writer_loop.stats.appends.load(Ordering::Relaxed), 2);
        assert_eq!(writer_loop.stats.last_batch_size.load(Ordering::Relaxed), 5);
        assert_eq!(published.try_recv().unwrap().seq, 1);
        assert_eq!(published.try_recv().unwrap().seq, 2);
        assert!(
            published.try_recv().is_err(),
            "replays are not published again"
        );
        assert_eq!(store.head(&plan).unwrap().unwrap().last_seq, 2);
        assert_eq!(store.last_position().unwrap(), 2);
        let keyring = store.keyring();
        assert!(store.verify_plan(&plan, &keyring).unwrap().is_valid());
        drop(store);
        tokio::task::spawn_blocking(move || writer.shutdown())
            .await
            .unwrap();
    }

    /// A write outside the writer (federation intake, tokens) that fails
    /// with an I/O fault takes the handle down; the idle writer is woken to
    /// reopen it, with no append to prompt it, and appends work again.
    #[tokio::test]
    async fn a_failure_outside_the_writer_wakes_it_to_reopen() {
        use super::super::chain::CanonicalPayload;
        let dir = tempfile::tempdir().unwrap();
        let (fanout, _published) = broadcast::channel(16);
        let keyring = Arc::new(Keyring::from_secret(b"test".to_vec()));
        let (store, writer) = Store::open(&dir.path().join("j.redb"), keyring, fanout).unwrap();
        let request = || AppendRequest {
            plan_id: Uuid::from_u128(7),
            event_type: "step.started".into(),
            actor: None,
            payload: CanonicalPayload::new(&serde_json::json!({})),
            expected_seq: None,
            idempotency: None,
        };
        store.append(request()).await.unwrap();
        // The writer is now idle, blocked waiting for a job.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let failure = StoreError::with_fault("injected".into(), Fault::Full);
        assert_eq!(store.db.failed(&failure), Some(Health::Full));
        assert_ne!(store.health(), Health::Ready);
        let deadline = Instant::now() + std::time::Duration::from_secs(20);
        while store.health() != Health::Ready {
            assert!(Instant::now() < deadline, "the writer did not reopen");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let appended = store.append(request()).await.unwrap();
        assert_eq!(appended.event.seq, 2);
        drop(store);
        tokio::task::spawn_blocking(move || writer.shutdown())
            .await
            .unwrap();
    }

    #[test]
    fn a_full_disk_is_told_apart_from_other_io_errors() {
        let io = |errno| redb::StorageError::Io(std::io::Error::from_raw_os_error(errno));
        let fault = |e: redb::StorageError| StoreError::from(e).fault();
        assert_eq!(fault(io(libc::ENOSPC)), Fault::Full);
        assert_eq!(fault(io(libc::EDQUOT)), Fault::Full);
        assert_eq!(fault(io(libc::EIO)), Fault::Io);
        assert_eq!(fault(redb::StorageError::PreviousIo), Fault::Io);
        assert_eq!(
            fault(redb::StorageError::DatabaseClosed),
            Fault::Unavailable
        );
        assert_eq!(
            fault(redb::StorageError::Corrupted("x".into())),
            Fault::Other
        );
        let commit = redb::CommitError::Storage(io(libc::ENOSPC));
        assert_eq!(StoreError::from(commit).fault(), Fault::Full);
        assert_eq!(StoreError("corrupt record".into()).fault(), Fault::Other);
    }

    #[test]
    fn borrowed_records_decode_as_owned_ones() {
        let event = Event {
            id: Uuid::from_u128(9),
            plan_id: Uuid::from_u128(1),
            seq: 4,
            event_type: "step.completed".into(),
            actor: Some("é".into()),
            payload: RawValue::from_string(r#"{"a":[1,"x"]}"#.into()).unwrap(),
            payload_hash: [1; 32],
            prev_hash: Some([2; 32]),
            signature: [3; 32],
            key_id: "abcd0123".into(),
            created_at: Timestamp(1_700_000_000_123),
            position: 77,
        };
        let key = event_key(&event.plan_id, event.seq);
        let back =
            event_from_record(&key, decode(&encode(&record_from_event(&event))).unwrap()).unwrap();
        assert_eq!(
            serde_json::to_string(&back).unwrap(),
            serde_json::to_string(&event).unwrap()
        );
        assert_eq!(back.position, 77);
    }

    #[test]
    fn records_carry_a_version_byte() {
        let head = PlanHead {
            last_seq: 3,
            last_signature: [7; 32],
            count: 3,
            first_at: 1,
            last_at: 2,
        };
        let bytes = encode(&head);
        assert_eq!(bytes[0], RECORD_VERSION);
        assert_eq!(decode::<PlanHead>(&bytes).unwrap(), head);
        let mut future = bytes.clone();
        future[0] = 2;
        assert!(
            decode::<PlanHead>(&future)
                .unwrap_err()
                .to_string()
                .contains("version 2")
        );
    }
}
