//! The single writer thread: batches appends into one transaction and one fsync.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::redact::RedactError;
use super::wal::Segment;
use super::writer_wal::{Next, replay_committed};
use super::{
    AppendError, AppendRequest, Appended, Db, Fault, FedShared, Health, Job, MAX_BATCH, StoreError,
    WriterStats, admin, last_position,
};
use crate::fanout::Fanout;
use crate::keys::Keyring;

/// First wait before reopening the database after a failed write; it
/// doubles up to [`RETRY_MAX`] until a commit succeeds again.
pub(super) const RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(200);
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(5);
/// How often the writer looks at its queue while it waits to reopen.
const RECOVERY_POLL: std::time::Duration = std::time::Duration::from_millis(50);
/// The single writer. Owning all writes in one thread is what makes
/// sequence numbers contiguous and lets one fsync cover a whole batch.
pub(super) struct WriterLoop {
    /// Federation routing: whom to queue each appended event for.
    pub(super) fed: Arc<FedShared>,
    pub(super) db: Arc<Db>,
    pub(super) keyring: Arc<logbook_base::reloadable::Reloadable<Keyring>>,
    pub(super) fanout: Fanout,
    /// Last committed store-wide position.
    pub(super) position: u64,
    pub(super) stats: Arc<WriterStats>,
    /// Wait before the next attempt to reopen after a failed write.
    pub(super) retry: std::time::Duration,
    /// The write-ahead segment, the durability point of a batch. Without
    /// one, every batch commits durably in redb (the writer tests).
    pub(super) segment: Option<Segment>,
}

/// Where an append's answer goes. It holds the append's share of
/// `QUEUE_BYTES` until it is answered (or dropped unanswered).
pub(super) struct Reply {
    answer: oneshot::Sender<Result<Appended, AppendError>>,
    queued: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Reply {
    pub(super) fn new(
        answer: oneshot::Sender<Result<Appended, AppendError>>,
        queued: tokio::sync::OwnedSemaphorePermit,
    ) -> Reply {
        Reply {
            answer,
            queued: Some(queued),
        }
    }

    /// A reply counted against no queue: for tests that drive batches.
    #[cfg(test)]
    pub(super) fn unqueued(answer: oneshot::Sender<Result<Appended, AppendError>>) -> Reply {
        Reply {
            answer,
            queued: None,
        }
    }

    /// Answers the append; its bytes leave the queue's count first, so a
    /// caller woken by the answer finds them returned.
    pub(super) fn send(
        self,
        outcome: Result<Appended, AppendError>,
    ) -> Result<(), Result<Appended, AppendError>> {
        let Reply { answer, queued } = self;
        drop(queued);
        answer.send(outcome)
    }
}

impl WriterLoop {
    pub(super) fn run(&mut self, mut rx: mpsc::Receiver<Job>) {
        let mut batch: Vec<(AppendRequest, Reply)> = Vec::with_capacity(MAX_BATCH);
        let mut stopping = false;
        // Only a timer, for the idle checkpoint's timed wait on the queue.
        let timer = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(timer) => Some(timer),
            Err(e) => {
                tracing::warn!(error = %e, "no timer for idle checkpoints; the segment is emptied when full and at shutdown");
                None
            }
        };
        while !stopping {
            if self.db.health() != Health::Ready && !self.recover(&mut rx) {
                break;
            }
            // Block for the first job, then take whatever else is already
            // queued. A job that is not an append ends the batch: appends
            // queued before it commit before it.
            let mut exclusive = None;
            match self.next_job(&mut rx, timer.as_ref()) {
                Next::Job(Job::Append(req, reply)) => batch.push((req, reply)),
                Next::Job(Job::Shutdown) | Next::Closed => break,
                Next::Job(Job::Recover) => continue,
                Next::Job(job) => exclusive = Some(job),
                Next::Idle => {
                    if let Err(e) = self.checkpoint() {
                        tracing::error!(error = %e, "checkpointing the write-ahead segment failed");
                        self.after_failure(&e);
                    }
                    continue;
                }
            }
            while exclusive.is_none() && batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(Job::Append(req, reply)) => batch.push((req, reply)),
                    Ok(Job::Shutdown) => {
                        stopping = true;
                        break;
                    }
                    // Noticed at the top of the loop, after this batch.
                    Ok(Job::Recover) => {}
                    Ok(job) => exclusive = Some(job),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.commit_batch(&mut batch);
            }
            if let Some(job) = exclusive {
                self.run_exclusive(job);
            }
        }
        // A clean stop leaves redb durable on its own and the segment empty.
        if self.db.health() == Health::Ready
            && let Err(e) = self.checkpoint()
        {
            tracing::error!(error = %e, "the last checkpoint failed; the next start replays the write-ahead segment");
        } else if self.db.health() == Health::Ready
            && let Err(e) = self.mark_outbox_indexed()
        {
            tracing::warn!(error = %e, "marking the outbox index complete failed; the next start indexes the outbox again");
        }
        tracing::debug!("journal writer stopped");
    }

    /// Every copy this writer queued is in `fed_outbox_events`, up to its
    /// last position: the next start need not index the outbox again.
    fn mark_outbox_indexed(&self) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)?;
        super::federation::mark_complete(&txn, self.position)?;
        self.db.commit(txn)
    }

    /// Runs a job that is its own transaction: a deletion, a redaction or
    /// a compaction.
    fn run_exclusive(&mut self, job: Job) {
        // Deletions and redactions rewrite events a replay would check, and
        // a compaction copies redb alone: the segment must be empty first.
        if let Err(e) = self.checkpoint() {
            tracing::error!(error = %e, "checkpointing before an exclusive job failed; the job was refused");
            refuse(job, &e);
            self.after_failure(&e);
            return;
        }
        let failed = match job {
            Job::DeletePlan(plan, who, reply) => {
                let outcome = self.delete_plan(plan, who);
                let failed = match &outcome {
                    Err(admin::DeleteError::Storage(e)) => Some(e.clone()),
                    _ => None,
                };
                let _ = reply.send(outcome);
                failed.map(|e| (e, "deleting a plan"))
            }
            Job::Redact(list, reply) => {
                // Zeroed before the redaction commits, not after: the
                // checkpoint above emptied the segment, and nothing is
                // framed until this job ends, so no crash after the commit
                // can leave an erased payload in old frames. A failed wipe
                // is logged and the redaction still runs; `admin compact`
                // (which must leave no trace) reports it.
                let _ = self.wipe_segment();
                let outcome = self.redact(list);
                let failed = match &outcome {
                    Err(RedactError::Storage(e)) => Some(e.clone()),
                    _ => None,
                };
                let _ = reply.send(outcome);
                failed.map(|e| (e, "redacting"))
            }
            Job::Compact(reply) => {
                // A failed copy leaves the old file in service untouched; a
                // failure after the switch has set the health itself, and
                // the loop reopens the file. Either way the handle in
                // service did not fail, so there is nothing to take down.
                // A compaction promises that no file keeps erased bytes:
                // a segment that could not be wiped fails it.
                let outcome = self.db.compact().and_then(|done| {
                    self.wipe_segment().map(|()| done).map_err(|e| {
                        StoreError(format!(
                            "the database was compacted, but zeroing the write-ahead segment failed, so erased payloads may remain in it: {e}"
                        ))
                    })
                });
                if let Err(e) = &outcome {
                    tracing::error!(error = %e, "compacting the store failed");
                }
                let _ = reply.send(outcome);
                None
            }
            Job::Append(..) | Job::Shutdown | Job::Recover => {
                unreachable!("the loop handles these itself")
            }
        };
        if let Some((e, what)) = failed {
            tracing::error!(error = %e, "{what} failed; nothing was changed");
            self.after_failure(&e);
        }
    }

    fn commit_batch(&mut self, batch: &mut Vec<(AppendRequest, Reply)>) {
        let started = Instant::now();
        // Frames of a failed batch may follow the last committed one: empty
        // the segment before any new frame can land after them.
        let needs_reset = self.segment.as_ref().is_some_and(|s| s.needs_reset);
        let written = if needs_reset {
            self.checkpoint().and_then(|()| self.write_batch(batch))
        } else {
            self.write_batch(batch)
        };
        match written {
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
                logbook_base::metrics::observe_commit(batch.len(), micros);
                self.retry = RETRY_FIRST;
                // Answer after commit, publish after answering: no appender
                // waits on the fan-out, and events are still published in
                // commit order, which followers rely on.
                let mut committed = Vec::with_capacity(batch.len());
                for ((_, reply), outcome) in batch.drain(..).zip(outcomes) {
                    if let Ok(appended) = &outcome
                        && !appended.replayed
                    {
                        self.stats.appends.fetch_add(1, Ordering::Relaxed);
                        committed.push(appended.event.clone());
                    }
                    // The caller may have gone away; the event is stored regardless.
                    let _ = reply.send(outcome);
                }
                self.fanout.publish(committed);
            }
            Err(e) => {
                tracing::error!(error = %e, appends = batch.len(), "journal commit failed; its appends were answered with the error");
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
                match rx.try_recv() {
                    Ok(Job::Shutdown) | Err(mpsc::error::TryRecvError::Disconnected) => {
                        return false;
                    }
                    Ok(job) => refuse(job, &self.db.health().refusal()),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                }
            }
            let now = Instant::now();
            if now >= next_attempt && self.db.health() == Health::Full && !self.db.has_room() {
                // Still full: wait for space rather than reopen to fail again.
                self.retry = (self.retry * 2).min(RETRY_MAX);
                next_attempt = now + self.retry;
            } else if now >= next_attempt {
                let (segment, fed) = (&mut self.segment, &self.fed);
                let quick_repair = self.db.quick_repair();
                let keyring = self.keyring.current();
                let replay = |db: &redb::Database| match segment {
                    Some(segment) => replay_committed(db, segment, fed, quick_repair, &keyring),
                    None => Ok(()),
                };
                match self.db.reopen(replay).and_then(|_| last_position(&self.db)) {
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
}

/// Answers a job that cannot run with `e`.
fn refuse(job: Job, e: &StoreError) {
    match job {
        Job::Append(_, reply) => {
            let _ = reply.send(Err(AppendError::Storage(e.clone())));
        }
        Job::DeletePlan(_, _, reply) => {
            let _ = reply.send(Err(admin::DeleteError::Storage(e.clone())));
        }
        Job::Redact(_, reply) => {
            let _ = reply.send(Err(RedactError::Storage(e.clone())));
        }
        Job::Compact(reply) => {
            let _ = reply.send(Err(e.clone()));
        }
        Job::Shutdown | Job::Recover => {}
    }
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
