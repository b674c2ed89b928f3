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

pub(super) type Reply = oneshot::Sender<Result<Appended, AppendError>>;

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
        }
        tracing::debug!("journal writer stopped");
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
                let outcome = self.redact(list);
                // Committed either way; a failed wipe is logged, and
                // `admin compact` (which must leave no trace) reports it.
                let _ = self.wipe_segment();
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
mod tests {
    use super::*;
    use crate::store::{Idempotency, Store};
    use uuid::Uuid;

    /// A writer loop over `store`'s database, driven by the test itself,
    /// with a write-ahead segment at `segment` or none.
    fn writer_loop(
        store: &Store,
        fanout: Fanout,
        segment: Option<std::path::PathBuf>,
    ) -> WriterLoop {
        WriterLoop {
            fed: store.fed.clone(),
            db: store.db.clone(),
            keyring: store.keyring.clone(),
            fanout,
            position: 0,
            stats: Arc::new(WriterStats::default()),
            retry: RETRY_FIRST,
            segment: segment.map(|path| Segment::open(&path, None).unwrap().0),
        }
    }

    /// One batch mixing every outcome for one plan: a new event, a retry of
    /// it with the same key (in the same batch), the key reused for another
    /// request, a stale `expected_seq`, and a correct one. Each caller gets
    /// its own answer, seqs and positions stay contiguous, and only the new
    /// events reach the fan-out, in commit order.
    #[tokio::test]
    async fn a_batch_with_mixed_outcomes_answers_each_caller() {
        mixed_outcomes(false).await;
    }

    /// The same through the write-ahead segment, where the rows are
    /// written while the frames go to disk.
    #[tokio::test]
    async fn a_batch_with_mixed_outcomes_answers_each_caller_through_the_segment() {
        mixed_outcomes(true).await;
    }

    async fn mixed_outcomes(through_segment: bool) {
        use crate::chain::CanonicalPayload;
        let dir = tempfile::tempdir().unwrap();
        let fanout = crate::fanout::fanout();
        let mut published = fanout.subscribe_all();
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
        let segment = through_segment.then(|| dir.path().join("batch.wal"));
        let mut writer_loop = writer_loop(&store, fanout, segment);
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
        // A retry in a later batch finds the idempotency row the staged
        // rows of the first one wrote.
        let (reply, answer) = oneshot::channel();
        writer_loop.commit_batch(&mut vec![(request(1, Some(0), Some("k")), reply)]);
        let retried = answer.await.unwrap();
        assert_eq!(created(&retried), Ok((1, 1, true)));
        assert_eq!(
            retried.unwrap().event.id,
            outcomes[0].as_ref().unwrap().event.id
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

    /// A batch that fails after its frames were written is answered with
    /// its error; when zeroing those frames fails too, the answer says that
    /// the append may come back after a crash, instead of leaving the
    /// caller to believe nothing was written.
    #[tokio::test]
    async fn a_failed_batch_whose_frames_stay_says_so() {
        use crate::chain::CanonicalPayload;
        let dir = tempfile::tempdir().unwrap();
        let fanout = crate::fanout::fanout();
        let keyring = Arc::new(Keyring::from_secret(b"test".to_vec()));
        let (store, writer) =
            Store::open(&dir.path().join("j.redb"), keyring, fanout.clone()).unwrap();
        let mut writer_loop = writer_loop(&store, fanout, Some(dir.path().join("batch.wal")));
        let mut details = Vec::new();
        for fail_zeroing in [false, true] {
            writer_loop.segment.as_mut().unwrap().fail_zeroing = fail_zeroing;
            writer_loop
                .stats
                .fail_next_commit
                .store(true, Ordering::Relaxed);
            let request = AppendRequest {
                plan_id: Uuid::new_v4(),
                event_type: "step.started".into(),
                actor: None,
                payload: CanonicalPayload::new(&serde_json::json!({ "n": 1 })),
                expected_seq: None,
                idempotency: None,
            };
            let (reply, answer) = oneshot::channel();
            writer_loop.commit_batch(&mut vec![(request, reply)]);
            match answer.await.unwrap() {
                Err(AppendError::Storage(e)) => details.push(e.to_string()),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(details[0], "injected commit failure");
        assert!(
            details[1].starts_with("injected commit failure; erasing the batch's write-ahead frames failed too, so the append may still appear after a crash"),
            "{details:?}"
        );
        drop(store);
        tokio::task::spawn_blocking(move || writer.shutdown())
            .await
            .unwrap();
    }

    /// Batches of appends to one plan that cross the tree buffer's flush
    /// (every 32 leaves), with the head row written once per batch: every
    /// root matches the one computed from the events, and pages verify.
    #[tokio::test]
    async fn batches_across_tree_flushes_keep_the_tree() {
        use crate::chain::{CanonicalPayload, log_entry};
        use logbook_tlog::merkle::{StreamingRoot, leaf_hash};
        let dir = tempfile::tempdir().unwrap();
        let fanout = crate::fanout::fanout();
        let keyring = Arc::new(Keyring::from_secret(b"test".to_vec()));
        let (store, writer) =
            Store::open(&dir.path().join("j.redb"), keyring, fanout.clone()).unwrap();
        let plan = Uuid::new_v4();
        let mut writer_loop = writer_loop(&store, fanout, None);
        for size in [70, 10, 32] {
            let mut batch = Vec::new();
            for n in 0..size {
                let (reply, _answer) = oneshot::channel();
                let req = AppendRequest {
                    plan_id: plan,
                    event_type: "step.done".into(),
                    actor: None,
                    payload: CanonicalPayload::new(&serde_json::json!({ "n": n })),
                    expected_seq: None,
                    idempotency: None,
                };
                batch.push((req, reply));
            }
            writer_loop.commit_batch(&mut batch);
        }
        let events = store.plan_events_after(&plan, 0, 1000).unwrap();
        assert_eq!(events.len(), 112);
        let mut reference = StreamingRoot::new();
        for event in &events {
            reference.push(leaf_hash(log_entry(event).as_bytes()));
            let (size, root) = store.tree(&plan).root(Some(event.seq)).unwrap().unwrap();
            assert_eq!((size, root), (event.seq, reference.root()), "size {size}");
        }
        let keyring = store.keyring();
        for after in [0, 31, 64, 95, 111] {
            let page = store.verify_page(&plan, after, 40, &keyring).unwrap();
            assert!(
                page.report.is_valid(),
                "page after {after}: {:?}",
                page.report
            );
        }
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
        use crate::chain::CanonicalPayload;
        let dir = tempfile::tempdir().unwrap();
        let fanout = crate::fanout::fanout();
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
}
