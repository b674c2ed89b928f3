//! The writer's side of the write-ahead segment (`wal.rs`): waiting for a
//! job with the idle checkpoint's timeout, checkpoints, wiping, and the
//! replay after a reopen.

use redb::Durability;
use tokio::sync::mpsc;

use super::wal::Segment;
use super::writer::WriterLoop;
use super::{FedShared, Job, StoreError};

/// How long the writer waits with no job before it checkpoints a non-empty
/// write-ahead segment (see `wal.rs`): short enough that a quiet store is
/// soon durable in redb alone, long enough that a steady load never pays a
/// checkpoint between two batches.
pub(super) const IDLE_CHECKPOINT: std::time::Duration = std::time::Duration::from_millis(100);

/// Test switch: no checkpoint when idle, so that a test can copy the files
/// as a power cut would leave them, with redb's last `None` commits lost.
#[cfg(test)]
pub(super) static NO_IDLE_CHECKPOINT: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// What the writer waits for next.
pub(super) enum Next {
    Job(Job),
    /// The queue is closed: the store was dropped.
    Closed,
    /// No job for [`IDLE_CHECKPOINT`], with a non-empty segment.
    Idle,
}

impl WriterLoop {
    /// The next job; [`Next::Idle`] after [`IDLE_CHECKPOINT`] without one
    /// while the segment holds frames.
    pub(super) fn next_job(
        &self,
        rx: &mut mpsc::Receiver<Job>,
        timer: Option<&tokio::runtime::Runtime>,
    ) -> Next {
        let dirty = self
            .segment
            .as_ref()
            .is_some_and(|s| !s.is_empty() || s.needs_reset);
        #[cfg(test)]
        let dirty = dirty && !NO_IDLE_CHECKPOINT.load(std::sync::atomic::Ordering::Relaxed);
        let Some(timer) = timer.filter(|_| dirty) else {
            return rx.blocking_recv().map_or(Next::Closed, Next::Job);
        };
        match rx.try_recv() {
            Ok(job) => return Next::Job(job),
            Err(mpsc::error::TryRecvError::Disconnected) => return Next::Closed,
            Err(mpsc::error::TryRecvError::Empty) => {}
        }
        // The timeout is made inside `block_on`: its timer needs the runtime.
        let waited =
            timer.block_on(async { tokio::time::timeout(IDLE_CHECKPOINT, rx.recv()).await });
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
    pub(super) fn wipe_segment(&mut self) {
        if let Some(segment) = self.segment.as_mut()
            && let Err(e) = segment.wipe()
        {
            tracing::error!(error = %e, "wiping the write-ahead segment failed; old frames may still hold erased payloads until overwritten");
        }
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
) -> Result<(), StoreError> {
    let (records, _) = segment.committed_records()?;
    let done = super::replay::replay(db, records, fed, segment.path())?;
    if done.restored > 0 {
        tracing::info!(
            restored = done.restored,
            "events of the lost handle were put back from the write-ahead segment"
        );
    }
    segment.reset()
}
