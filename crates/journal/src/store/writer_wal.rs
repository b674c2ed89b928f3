//! The writer's side of the write-ahead segment (`wal.rs`): a batch's
//! frames, rows and commit, waiting for a job with the idle checkpoint's
//! timeout, checkpoints, wiping, and the replay after a reopen.

use std::time::Duration;

use redb::Durability;
use tokio::sync::mpsc;

#[cfg(test)]
use std::sync::atomic::Ordering;

#[cfg(test)]
use super::Fault;
use super::wal::Segment;
use super::writer::{Reply, WriterLoop};
use super::{AppendError, AppendRequest, Appended, FedShared, Job, StoreError, Tables};
use crate::event::Timestamp;

/// How long the writer waits with no job before it checkpoints a segment
/// that is due (see [`QUIET_CHECKPOINT_AGE`]): short enough that a quiet
/// store is soon durable in redb alone, long enough that a steady load
/// never pays a checkpoint between two batches.
pub(super) const IDLE_CHECKPOINT: Duration = Duration::from_millis(100);

/// A segment less than a quarter full is due for the idle checkpoint only
/// once its oldest frame is this old. A checkpoint costs two syncs (redb's
/// pages, then the segment's header), so a client appending every few
/// hundred milliseconds would otherwise pay three syncs per event instead
/// of one. Nothing is less durable meanwhile: the frames are synced, and
/// a start after a crash replays them.
pub(super) const QUIET_CHECKPOINT_AGE: Duration = Duration::from_secs(10);

/// How long the writer polls its queue after a batch before it parks.
/// On the 2-core VM this was measured on, handing an append to a parked
/// thread costs tens of microseconds (the idle vCPU must be woken), and
/// one client's next append arrives well within this window: one-client
/// appends ran 1.17× faster with it (median of 3 alternated runs on a
/// quiet machine, `docs/benchmarks.md`), 16 and 64 clients the same
/// (their queue is rarely empty). It costs at most this much CPU per
/// batch, and nothing on a machine with one core, where it is off.
const SPIN_BEFORE_PARK: Duration = Duration::from_micros(300);

/// Whether the writer spins before it parks: only with a core to spare.
static SPIN: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2));

/// A job (or the queue's end) that arrives within [`SPIN_BEFORE_PARK`],
/// polled while yielding the core to any other runnable thread.
fn spin_for_job(rx: &mut mpsc::Receiver<Job>) -> Option<Next> {
    if !*SPIN {
        return None;
    }
    let until = std::time::Instant::now() + SPIN_BEFORE_PARK;
    loop {
        match rx.try_recv() {
            Ok(job) => return Some(Next::Job(job)),
            Err(mpsc::error::TryRecvError::Disconnected) => return Some(Next::Closed),
            Err(mpsc::error::TryRecvError::Empty) => {}
        }
        if std::time::Instant::now() >= until {
            return None;
        }
        std::thread::yield_now();
    }
}

/// What the writer waits for next.
// A job is moved, not kept: boxing it would cost an allocation per append.
#[allow(clippy::large_enum_variant)]
pub(super) enum Next {
    Job(Job),
    /// The queue is closed: the store was dropped.
    Closed,
    /// No job for [`IDLE_CHECKPOINT`], with a segment due for a checkpoint.
    Idle,
}

impl WriterLoop {
    /// The next job; [`Next::Idle`] when the segment holds frames and no
    /// job came for [`IDLE_CHECKPOINT`], or, in a segment less than a
    /// quarter full, until its oldest frame is [`QUIET_CHECKPOINT_AGE`] old.
    pub(super) fn next_job(
        &self,
        rx: &mut mpsc::Receiver<Job>,
        timer: Option<&tokio::runtime::Runtime>,
    ) -> Next {
        if let Some(next) = spin_for_job(rx) {
            return next;
        }
        let wait = self.segment.as_ref().and_then(checkpoint_wait);
        #[cfg(test)]
        let wait = wait.filter(|_| {
            !self
                .stats
                .no_idle_checkpoint
                .load(std::sync::atomic::Ordering::Relaxed)
        });
        let (Some(timer), Some(wait)) = (timer, wait) else {
            return rx.blocking_recv().map_or(Next::Closed, Next::Job);
        };
        match rx.try_recv() {
            Ok(job) => return Next::Job(job),
            Err(mpsc::error::TryRecvError::Disconnected) => return Next::Closed,
            Err(mpsc::error::TryRecvError::Empty) => {}
        }
        // The timeout is made inside `block_on`: its timer needs the runtime.
        let waited = timer.block_on(async { tokio::time::timeout(wait, rx.recv()).await });
        match waited {
            Ok(Some(job)) => Next::Job(job),
            Ok(None) => Next::Closed,
            Err(_) => Next::Idle,
        }
    }

    /// Makes every committed batch durable in redb alone (one `Immediate`
    /// commit persists all the `None` commits before it), then empties the
    /// segment. A no-op when it is empty already.
    pub(super) fn checkpoint(&mut self) -> Result<(), StoreError> {
        let Some(segment) = self.segment.as_mut() else {
            return Ok(());
        };
        if segment.is_empty() && !segment.needs_reset {
            return Ok(());
        }
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.commit()?;
        segment.reset()
    }

    /// Zeroes the emptied segment's old frames after a redaction or a
    /// compaction, so that no erased payload lingers in them.
    pub(super) fn wipe_segment(&mut self) -> Result<(), StoreError> {
        let Some(segment) = self.segment.as_mut() else {
            return Ok(());
        };
        #[cfg(test)]
        if self
            .stats
            .fail_next_wipe
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            return Err(StoreError("injected wipe failure".into()));
        }
        #[cfg(test)]
        {
            segment.fail_header_sync = self
                .stats
                .fail_next_header_sync
                .swap(false, std::sync::atomic::Ordering::Relaxed);
        }
        segment.wipe().inspect_err(|e| {
            tracing::error!(error = %e, "wiping the write-ahead segment failed; old frames may still hold erased payloads until overwritten");
        })
    }

    /// Applies a batch in one transaction. The outer error aborts the whole
    /// batch (nothing is written); inner errors refuse single appends.
    ///
    /// With the write-ahead segment, the batch's frames are written first
    /// and their writeback started, the rows are written into redb while
    /// the disk works, and only then does `fdatasync` wait for the frames:
    /// the rows' CPU time overlaps the device's write instead of adding to
    /// it (`docs/benchmarks.md`, "Rows written while the frames go to
    /// disk"). Nothing is visible before the sync returns: redb commits
    /// after it.
    #[allow(clippy::type_complexity)]
    pub(super) fn write_batch(
        &mut self,
        batch: &[(AppendRequest, Reply)],
    ) -> Result<(Vec<Result<Appended, AppendError>>, u64), StoreError> {
        let mut txn = self.db.begin_write()?;
        // Set before the tables borrow the transaction; a batch that does
        // not fit in the segment switches to `Immediate` below.
        if self.segment.is_some() {
            txn.set_durability(Durability::None)?;
        }
        let mut position = self.position;
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut tables = Tables::open(&txn, &self.fed)?;
        let now = Timestamp::now();
        // One keyring per batch, even if a rotation lands meanwhile.
        let keyring = self.keyring.current();
        for (req, _) in batch {
            outcomes.push(tables.apply(req, &keyring, now, &mut position)?);
        }
        let fits = self.segment.as_mut().map(|s| s.prepare(&tables.wal));
        let enqueued = match (self.segment.as_mut(), fits) {
            // The durability point: the frames are synced before redb
            // commits, so no reader sees an event a crash could take back.
            (Some(segment), Some(true)) => {
                let frames = !tables.wal.is_empty();
                #[allow(unused_mut)]
                let mut written = if frames {
                    segment.write_pending()
                } else {
                    Ok(())
                };
                #[cfg(test)]
                if written.is_ok() && self.stats.fail_next_rows.swap(false, Ordering::Relaxed) {
                    // After the rows, as a failure of their last insert.
                    let io = self.stats.injected_fault_is_io.load(Ordering::Relaxed);
                    written = tables.write_staged().and(Err(StoreError::with_fault(
                        "injected failure writing the rows".into(),
                        if io { Fault::Io } else { Fault::Other },
                    )));
                }
                let synced = written.and_then(|()| tables.write_staged()).and_then(|()| {
                    #[cfg(test)]
                    if self.stats.fail_next_sync.swap(false, Ordering::Relaxed) {
                        return Err(StoreError("injected failure syncing the frames".into()));
                    }
                    if frames {
                        segment.sync_pending()
                    } else {
                        Ok(())
                    }
                });
                if let Err(e) = synced {
                    // Dropping the transaction aborts it.
                    return Err(abandon(segment, e));
                }
                let enqueued = tables.fed.enqueued;
                drop(tables);
                #[cfg(test)]
                if self.stats.fail_next_commit.swap(false, Ordering::Relaxed) {
                    let io = self.stats.injected_fault_is_io.load(Ordering::Relaxed);
                    let e = StoreError::with_fault(
                        "injected commit failure".into(),
                        if io { Fault::Io } else { Fault::Other },
                    );
                    return Err(abandon(segment, e));
                }
                if let Err(e) = txn.commit() {
                    return Err(abandon(segment, e.into()));
                }
                segment.committed();
                enqueued
            }
            // No segment, or too big for what is left of it: a durable
            // commit, which is then the checkpoint, and the segment starts
            // again empty.
            (segment, _) => {
                tables.write_staged()?;
                let enqueued = tables.fed.enqueued;
                drop(tables);
                txn.set_durability(Durability::Immediate)?;
                txn.commit()?;
                if let Some(segment) = segment
                    && let Err(e) = segment.reset()
                {
                    tracing::error!(error = %e, "emptying the write-ahead segment failed; the next batch tries again");
                    segment.needs_reset = true;
                }
                enqueued
            }
        };
        if enqueued > 0 {
            self.fed.outbox_grew();
        }
        Ok((outcomes, position))
    }
}

/// The error of a batch whose frames may be in the segment: they are
/// zeroed ([`Segment::abandoned`]), so that its appends, told they failed,
/// never come back. When that fails too, the callers are told the truth:
/// a crash before the next checkpoint may bring the appends back.
fn abandon(segment: &mut Segment, e: StoreError) -> StoreError {
    if segment.abandoned() {
        return e;
    }
    StoreError::with_fault(
        format!(
            "{e}; erasing the batch's write-ahead frames failed too, so the append may still appear after a crash: retry with the same Idempotency-Key"
        ),
        e.fault(),
    )
}

/// How long the writer may wait for a job before it checkpoints `segment`;
/// `None` when there is nothing to checkpoint.
fn checkpoint_wait(segment: &Segment) -> Option<Duration> {
    if segment.needs_reset || segment.quarter_full() {
        Some(IDLE_CHECKPOINT)
    } else if segment.is_empty() {
        None
    } else {
        Some(
            QUIET_CHECKPOINT_AGE
                .saturating_sub(segment.oldest_frame_age())
                .max(IDLE_CHECKPOINT),
        )
    }
}

/// After a reopen: puts back what the lost handle's `None` commits held,
/// the frames of every batch that committed (and was answered), then
/// empties the segment. Runs before the new handle is in service, so no
/// reader sees the store without them.
pub(super) fn replay_committed(
    db: &redb::Database,
    segment: &mut Segment,
    fed: &FedShared,
    quick_repair: bool,
    keyring: &crate::keys::Keyring,
) -> Result<(), StoreError> {
    // The reopened handle holds what was durable: a damaged frame of an
    // event it has is not needed (as at a start).
    let durable = super::replay::durable_position(db)?;
    let (records, _) = segment.committed_records(Some(durable))?;
    let done = super::replay::replay(
        db,
        records,
        fed,
        segment.path(),
        quick_repair,
        Some(keyring),
    )?;
    if done.restored > 0 {
        tracing::info!(
            restored = done.restored,
            "events of the lost handle were put back from the write-ahead segment"
        );
    }
    segment.reset()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::wal::WalRecord;

    fn commit(segment: &mut Segment, position: u64, payload_len: usize) {
        let record = WalRecord {
            position,
            plan_id: [1; 16],
            seq: position,
            event: vec![7; payload_len],
            idempotency: None,
            outbox: Vec::new(),
        };
        assert!(segment.prepare(&[record]));
        segment.write_pending().unwrap();
        segment.sync_pending().unwrap();
        segment.committed();
    }

    /// An empty segment never wakes the writer; a little one waits for its
    /// oldest frame to age; a quarter-full one, or one that must be
    /// emptied, is checkpointed after the short idle wait.
    #[test]
    fn a_quiet_segment_waits_for_its_oldest_frame_to_age() {
        let dir = tempfile::tempdir().unwrap();
        let (mut segment, records) = Segment::open(&dir.path().join("j.wal"), None).unwrap();
        assert!(records.is_empty());
        assert_eq!(checkpoint_wait(&segment), None);

        commit(&mut segment, 1, 1000);
        let wait = checkpoint_wait(&segment).unwrap();
        assert!(
            wait > QUIET_CHECKPOINT_AGE - Duration::from_secs(2) && wait <= QUIET_CHECKPOINT_AGE,
            "{wait:?}"
        );
        segment.needs_reset = true;
        assert_eq!(checkpoint_wait(&segment), Some(IDLE_CHECKPOINT));
        segment.reset().unwrap();
        assert_eq!(checkpoint_wait(&segment), None);

        let mut position = 1;
        while !segment.quarter_full() {
            commit(&mut segment, position, 64 << 10);
            position += 1;
        }
        assert!(position > 2, "a quarter takes several frames");
        assert_eq!(checkpoint_wait(&segment), Some(IDLE_CHECKPOINT));
    }
}
