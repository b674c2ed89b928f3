//! The database handle every part of the store shares, and its reopening
//! after an I/O failure.
//!
//! After one failed write (a full disk, typically) redb refuses the handle
//! for good ("Previous I/O error occurred. Please close and re-open the
//! database"). So nobody keeps a `redb::Database` of their own: readers,
//! federation and admin code go through [`Db`], which the writer can take
//! down and replace with a freshly opened handle once the cause is gone,
//! without a process restart.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use redb::{Database, Durability, ReadTransaction, ReadableDatabase, WriteTransaction};

use super::{Fault, Job, StoreError};

/// Whether appends can commit right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// The last write committed (or none failed since the store opened).
    Ready,
    /// A write failed because the disk is full; the writer reopens the
    /// database once a commit can succeed again.
    Full,
    /// A write failed with another I/O error; the writer reopens the
    /// database as soon as it can.
    Failed,
}

impl Health {
    fn from_u8(v: u8) -> Health {
        match v {
            0 => Health::Ready,
            1 => Health::Full,
            _ => Health::Failed,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            Health::Ready => 0,
            Health::Full => 1,
            Health::Failed => 2,
        }
    }

    /// What a write attempted in this state fails with.
    pub(crate) fn refusal(self) -> StoreError {
        match self {
            Health::Full => StoreError::with_fault(
                "the disk holding the journal is full; nothing was written".into(),
                Fault::Full,
            ),
            _ => StoreError::with_fault(
                "the journal database is being reopened after an I/O error; nothing was written"
                    .into(),
                Fault::Unavailable,
            ),
        }
    }
}

/// The shared, replaceable handle. `None` while the writer reopens it.
pub(crate) struct Db {
    pub(super) path: PathBuf,
    quick_repair: bool,
    pub(super) current: RwLock<Option<Arc<Database>>>,
    /// Bumped when compaction replaces the file: a write transaction begun
    /// on the handle it replaced would commit into the old file.
    pub(super) generation: AtomicU64,
    health: AtomicU8,
    /// The writer's queue: a failed write outside the writer wakes it to recover.
    writer: OnceLock<tokio::sync::mpsc::Sender<Job>>,
}

impl Db {
    pub(crate) fn new(path: &Path, db: Database, quick_repair: bool) -> Db {
        Db {
            path: path.to_path_buf(),
            quick_repair,
            current: RwLock::new(Some(Arc::new(db))),
            generation: AtomicU64::new(0),
            health: AtomicU8::new(Health::Ready.as_u8()),
            writer: OnceLock::new(),
        }
    }

    pub(crate) fn set_writer(&self, jobs: tokio::sync::mpsc::Sender<Job>) {
        let _ = self.writer.set(jobs);
    }

    /// Commits a write made outside the writer thread (federation, tokens).
    /// If it fails with an I/O fault, the handle is dead for everyone: take
    /// it down and have the writer reopen it, as after a failed append.
    pub(crate) fn commit(&self, txn: WriteTransaction) -> Result<(), StoreError> {
        txn.commit().map_err(|e| {
            let e = StoreError::from(e);
            self.failed(&e);
            e
        })
    }

    /// Takes the handle down after a write failed with an I/O fault, and
    /// wakes the writer to reopen it. Returns the health now in force, or
    /// `None` when the error was no I/O fault (nothing to recover).
    pub(crate) fn failed(&self, e: &StoreError) -> Option<Health> {
        let health = match e.fault() {
            Fault::Full => Health::Full,
            // Whatever failed before (a full disk, say) is still the cause.
            Fault::Io | Fault::Unavailable if self.health() == Health::Full => Health::Full,
            Fault::Io | Fault::Unavailable => Health::Failed,
            Fault::Other => return None,
        };
        self.set_health(health);
        self.take_down();
        if let Some(writer) = self.writer.get() {
            // A full queue already wakes the writer.
            let _ = writer.try_send(Job::Recover);
        }
        Some(health)
    }

    /// The handle in force; `Unavailable` while the writer reopens it. The
    /// clone is held only while a transaction begins, so the old handle is
    /// dropped (and its file closed) soon after it is taken down.
    fn handle(&self) -> Result<Arc<Database>, StoreError> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        current.clone().ok_or_else(|| self.health().refusal())
    }

    pub(crate) fn begin_read(&self) -> Result<ReadTransaction, StoreError> {
        Ok(self.handle()?.begin_read()?)
    }

    /// A write transaction, with quick repair if configured. Refused at once
    /// while a failed write is not yet recovered: its commit could not last.
    pub(crate) fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        let health = self.health();
        if health != Health::Ready {
            return Err(health.refusal());
        }
        loop {
            let (db, generation) = {
                let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
                let db = current.clone().ok_or_else(|| self.health().refusal())?;
                (db, self.generation.load(Ordering::Acquire))
            };
            let mut txn = db.begin_write()?;
            // Waiting for the write slot may have outlasted a compaction,
            // which replaced the file (see `compact.rs`): begin again on
            // the new one. Dropping the transaction aborts it.
            if self.generation.load(Ordering::Acquire) != generation {
                continue;
            }
            commit_settings(&mut txn, self.quick_repair);
            return Ok(txn);
        }
    }

    /// Whether durable commits record redb's allocator state
    /// ([`super::StoreOptions::quick_repair`]).
    pub(crate) fn quick_repair(&self) -> bool {
        self.quick_repair
    }

    pub(crate) fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Acquire))
    }

    pub(crate) fn set_health(&self, health: Health) {
        self.health.store(health.as_u8(), Ordering::Release);
    }

    /// Takes the failed handle out of service. Readers get `Unavailable`
    /// from now on; the file closes when the last in-flight clone drops.
    pub(crate) fn take_down(&self) {
        let old = self
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(old);
    }

    /// Opens the database again and proves it can commit (an empty durable
    /// transaction), then runs `prepare` on it (the writer replays what the
    /// old handle's non-durable commits held) before putting it in service.
    /// Fails, to be retried, while the old handle is still open somewhere or
    /// the disk is still failing.
    pub(crate) fn reopen(
        &self,
        prepare: impl FnOnce(&Database) -> Result<(), StoreError>,
    ) -> Result<Arc<Database>, StoreError> {
        let db = open_database(&self.path)?;
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        commit_settings(&mut txn, self.quick_repair);
        txn.commit()?;
        prepare(&db)?;
        let db = Arc::new(db);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(db.clone());
        Ok(db)
    }
}

/// How every write transaction of the store commits when it is durable:
/// with redb's allocator state saved if `quick_repair`, and always in two
/// phases (the new commit slot synced before the primary bit flips). With
/// one phase, a failed `fdatasync` can leave a header naming the new slot
/// in the page cache, which a reopen in the same process would trust while
/// its pages never reached the disk; the writer then empties the segment
/// holding the only durable copy. Costs a second sync per durable commit,
/// which only checkpoints make. (`None` commits sync nothing either way.)
pub(crate) fn commit_settings(txn: &mut redb::WriteTransaction, quick_repair: bool) {
    txn.set_quick_repair(quick_repair);
    txn.set_two_phase_commit(true);
}

/// Free space below which a full disk is still treated as full: reopening
/// then would only fail again at the next append (and a reopen after a
/// crash-like failure can walk the whole file).
pub(crate) const MIN_FREE_BYTES: u64 = 1 << 20;

impl Db {
    /// Whether the file system holding the database has at least
    /// [`MIN_FREE_BYTES`] available to this process. True when it cannot
    /// tell: then the reopen itself is the test.
    pub(crate) fn has_room(&self) -> bool {
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        available_bytes(dir).is_none_or(|available| available >= MIN_FREE_BYTES)
    }
}

/// The bytes available to this process on the file system holding `dir`;
/// `None` when it cannot tell.
pub(crate) fn available_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let dir = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs only writes into the zeroed struct we pass, and
    // `dir` is a valid NUL-terminated string for the call's duration.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(dir.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    // The field types differ between platforms (u32 on some 32-bit ones).
    #[allow(clippy::useless_conversion)]
    Some(u64::from(stat.f_bavail).saturating_mul(u64::from(stat.f_frsize)))
}

/// redb's page cache. Its default, 1 GiB, let the daemon's RSS grow with
/// the data it wrote until then (533 MB after 68k federated events, issue
/// 14); the pages it drops stay in the kernel's page cache.
/// Copies of the store (backup, compaction) use it too: a copy of a large
/// store would otherwise grow the daemon toward redb's default.
pub(super) const CACHE_BYTES: usize = 64 << 20;

/// Opens (or creates) the journal database at `path`.
pub(crate) fn open_database(path: &Path) -> Result<Database, StoreError> {
    redb::Builder::new()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::with_fault(
            format!(
                "{} is already open (another logbook on this data dir, or a handle still closing)",
                path.display()
            ),
            Fault::Unavailable,
        ),
        e => {
            let fault = super::Faulty::fault(&e);
            StoreError::with_fault(format!("opening {}: {e}", path.display()), fault)
        }
    })
}
