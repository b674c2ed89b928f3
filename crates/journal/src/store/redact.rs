//! Redaction: erasing events' payloads while their history stays verifiable.
//!
//! A redaction rewrites the event's record without its payload (record
//! version 2, see `records.rs`), rewrites the outbox copies of the event
//! the same way, and appends `system.event_redacted` to the system journal,
//! all in one writer transaction: a payload is never erased unrecorded, and
//! a record never names an erasure that did not happen. The event keeps
//! `payload_hash`, so its signature, its leaf and every checkpoint over it
//! are unchanged (`docs/verifiable-logs.md`, "Redaction").

use std::sync::Arc;

use redb::{Durability, ReadableTable};
use serde_json::json;
use uuid::Uuid;

use super::{
    AppendRequest, EVENTS, Job, Store, StoreError, Tables, WriterLoop, decode_event, deleted,
    encode_redacted, event_from_record, event_key,
};
use crate::Event;
use crate::chain::CanonicalPayload;
use crate::event::Timestamp;

/// Event type of a redaction's record in the system journal.
pub const REDACTED_TYPE: &str = "system.event_redacted";
/// Longest reason, in bytes: enough for a ticket reference and a sentence,
/// small enough that the system journal cannot be flooded through it.
pub const MAX_REASON_BYTES: usize = 1024;
/// Most redactions one writer transaction takes.
pub const MAX_REDACTIONS: usize = 256;

/// One payload to erase.
#[derive(Debug, Clone)]
pub struct Redaction {
    pub plan_id: Uuid,
    pub seq: u64,
    pub reason: String,
    pub by: RedactedBy,
}

/// Who asked for a redaction, as the system journal records it.
#[derive(Debug, Clone)]
pub enum RedactedBy {
    /// The admin socket peer (`{"uid", "user", "pid"}`).
    Admin(serde_json::Value),
    /// `[retention] payload_max_age_days`.
    Retention,
}

impl RedactedBy {
    /// The record's `by` member.
    fn to_json(&self) -> serde_json::Value {
        match self {
            RedactedBy::Admin(who) => who.clone(),
            RedactedBy::Retention => json!("retention"),
        }
    }

    /// The record's `actor`.
    fn actor(&self) -> &'static str {
        match self {
            RedactedBy::Admin(_) => "logbook-admin",
            RedactedBy::Retention => "logbook-retention",
        }
    }
}

/// A committed redaction.
#[derive(Debug, Clone)]
pub struct Redacted {
    pub plan_id: Uuid,
    pub seq: u64,
    /// Its record in the system journal.
    pub record: Arc<Event>,
}

#[derive(Debug, Clone)]
pub enum RedactError {
    /// No such plan or no such seq in it.
    NotFound,
    /// The plan was deleted; holds its tombstone's seq.
    PlanDeleted {
        tombstone_seq: u64,
    },
    AlreadyRedacted,
    /// The system journal keeps its records, redactions included.
    Protected,
    InvalidReason(&'static str),
    Unavailable,
    Storage(StoreError),
}

impl std::fmt::Display for RedactError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedactError::NotFound => f.write_str("no such event"),
            RedactError::PlanDeleted { tombstone_seq } => write!(
                f,
                "the plan was deleted (tombstone at system seq {tombstone_seq})"
            ),
            RedactError::AlreadyRedacted => f.write_str("the event's payload is already erased"),
            RedactError::Protected => f.write_str("the system journal's events cannot be redacted"),
            RedactError::InvalidReason(why) => write!(f, "invalid reason: {why}"),
            RedactError::Unavailable => f.write_str("the journal writer has stopped"),
            RedactError::Storage(e) => write!(f, "{e}"),
        }
    }
}

impl From<StoreError> for RedactError {
    fn from(e: StoreError) -> Self {
        RedactError::Storage(e)
    }
}

/// A reason is one line of visible text, 1 to [`MAX_REASON_BYTES`] bytes.
pub fn check_reason(reason: &str) -> Result<(), RedactError> {
    if reason.trim().is_empty() {
        return Err(RedactError::InvalidReason("it is empty"));
    }
    if reason.len() > MAX_REASON_BYTES {
        return Err(RedactError::InvalidReason("it is longer than 1024 bytes"));
    }
    if reason.chars().any(char::is_control) {
        return Err(RedactError::InvalidReason(
            "it contains control characters (line breaks included)",
        ));
    }
    if reason.chars().any(logbook_base::terminal::is_invisible) {
        return Err(RedactError::InvalidReason(
            "it contains invisible formatting (direction overrides, zero-width spaces, tag characters, line or paragraph separators)",
        ));
    }
    Ok(())
}

/// What one writer job answers: one outcome per redaction, or the failure
/// of the whole transaction (nothing was written).
pub type RedactOutcomes = Result<Vec<Result<Redacted, RedactError>>, RedactError>;

impl Store {
    /// Erases the payloads of up to [`MAX_REDACTIONS`] events in one writer
    /// transaction, each recorded in the system journal. Returns once it is
    /// committed and fsynced.
    pub async fn redact(&self, batch: Vec<Redaction>) -> RedactOutcomes {
        assert!(batch.len() <= MAX_REDACTIONS, "callers bound their batches");
        let (reply, wait) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Job::Redact(batch, reply))
            .await
            .map_err(|_| RedactError::Unavailable)?;
        let outcome = wait.await.unwrap_or(Err(RedactError::Unavailable));
        self.wait_for_signers().await;
        outcome
    }

    /// Redacts `plan`'s event `seq` (by retention), which must succeed:
    /// for tests.
    #[cfg(test)]
    pub(crate) async fn redact_for_test(&self, plan: Uuid, seq: u64) {
        let outcomes = self
            .redact(vec![Redaction {
                plan_id: plan,
                seq,
                reason: "test".into(),
                by: RedactedBy::Retention,
            }])
            .await
            .expect("the redaction committed");
        assert!(outcomes[0].is_ok(), "{outcomes:?}");
    }

    /// Up to `limit` events of ordinary plans created before `cutoff_ms`
    /// whose payload is still there, in key order after `after` (the last
    /// key a previous call returned, to continue). Bounded work: it reads
    /// at most `limit * 8` records, and returns the cursor to go on from
    /// (`None` once the table is done). Within a plan `created_at` never
    /// decreases, so the first event at or after the cutoff ends the
    /// plan's scan: a pass reads each plan's old prefix, not its history.
    #[allow(clippy::type_complexity)]
    pub fn payloads_older_than(
        &self,
        cutoff_ms: i64,
        after: Option<(Uuid, u64)>,
        limit: usize,
    ) -> Result<(Vec<(Uuid, u64)>, Option<(Uuid, u64)>), StoreError> {
        use std::ops::Bound::{Excluded, Unbounded};
        let txn = self.db.begin_read()?;
        let events = txn.open_table(EVENTS)?;
        let mut budget = limit.max(1) * 8;
        let mut found = Vec::new();
        let mut cursor = after;
        loop {
            let start_key = cursor.map(|(p, s)| event_key(&p, s));
            let start = start_key.as_ref().map_or(Unbounded, Excluded);
            let mut skip_plan = None;
            for entry in events.range::<&super::EventKey>((start, Unbounded))? {
                if budget == 0 || found.len() >= limit {
                    return Ok((found, cursor));
                }
                budget -= 1;
                let (k, v) = entry?;
                let event = event_from_record(k.value(), decode_event(v.value())?)?;
                cursor = Some((event.plan_id, event.seq));
                if event.plan_id == super::admin::SYSTEM_PLAN
                    || event.created_at.millis() >= cutoff_ms
                {
                    skip_plan = Some(event.plan_id);
                    break;
                }
                if !event.redacted {
                    found.push((event.plan_id, event.seq));
                }
            }
            match skip_plan {
                // Go on after the plan's last possible key.
                Some(plan) => cursor = Some((plan, u64::MAX)),
                None => return Ok((found, None)),
            }
        }
    }
}

impl WriterLoop {
    /// Runs a batch of redactions as one transaction in the writer thread.
    pub(super) fn redact(&mut self, batch: Vec<Redaction>) -> RedactOutcomes {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)
            .map_err(StoreError::from)?;
        let mut position = self.position;
        let (outcomes, enqueued, rewritten) = {
            let mut tables = Tables::open(&txn, &self.fed)?;
            let keyring = self.keyring.current();
            let now = Timestamp::now();
            let mut outcomes = Vec::with_capacity(batch.len());
            let mut erased = Vec::new();
            for redaction in batch {
                let outcome = tables.redact_one(&redaction, &keyring, now, &mut position)?;
                if outcome.is_ok() {
                    erased.push((redaction.plan_id, redaction.seq));
                }
                outcomes.push(outcome);
            }
            let rewritten = tables.fed.redact_events(&erased)?;
            // The redaction records are appends: their rows and their
            // plan's head row are written here, as after a batch of appends.
            tables.write_staged()?;
            (outcomes, tables.fed.enqueued, rewritten)
        };
        txn.commit().map_err(StoreError::from)?;
        if rewritten > 0 {
            self.fed.outbox.rewritten();
        }
        #[cfg(test)]
        if let Some(hook) = self.stats.after_redaction_commit.lock().unwrap().take() {
            (hook.0)();
        }
        self.position = position;
        debug_assert_eq!(enqueued, 0, "the system journal is never queued for a peer");
        self.fanout
            .publish(outcomes.iter().flatten().map(|r| r.record.clone()));
        Ok(outcomes)
    }
}

impl Tables<'_> {
    /// Erases one payload and appends its record. The inner error refuses
    /// this redaction alone; the outer one aborts the transaction.
    fn redact_one(
        &mut self,
        r: &Redaction,
        keyring: &crate::keys::Keyring,
        now: Timestamp,
        position: &mut u64,
    ) -> Result<Result<Redacted, RedactError>, StoreError> {
        // What is redacted is checked before how: an unknown event is 404
        // whatever the reason says, as everywhere in the API.
        if r.plan_id == super::admin::SYSTEM_PLAN {
            return Ok(Err(RedactError::Protected));
        }
        if let Some(gone) = deleted::deleted(self.deleted.table()?, &r.plan_id)? {
            return Ok(Err(RedactError::PlanDeleted {
                tombstone_seq: gone.tombstone_seq,
            }));
        }
        let key = event_key(&r.plan_id, r.seq);
        let events = self.events.table()?;
        let Some(record) = events.get(&key)?.map(|v| decode_event(v.value())) else {
            return Ok(Err(RedactError::NotFound));
        };
        let record = record?;
        if record.payload.is_none() {
            return Ok(Err(RedactError::AlreadyRedacted));
        }
        if let Err(e) = check_reason(&r.reason) {
            return Ok(Err(e));
        }
        events.insert(&key, encode_redacted(record).as_slice())?;
        let entry = AppendRequest {
            plan_id: super::admin::SYSTEM_PLAN,
            event_type: REDACTED_TYPE.into(),
            actor: Some(r.by.actor().into()),
            payload: CanonicalPayload::new(&json!({
                "plan_id": r.plan_id,
                "seq": r.seq,
                "reason": r.reason,
                "by": r.by.to_json(),
            })),
            expected_seq: None,
            idempotency: None,
        };
        let appended = self
            .apply(&entry, keyring, now, position)?
            .map_err(|e| StoreError(format!("recording the redaction: {e:?}")))?;
        Ok(Ok(Redacted {
            plan_id: r.plan_id,
            seq: r.seq,
            record: appended.event,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Keyring;

    fn append(plan: Uuid, n: u64) -> AppendRequest {
        AppendRequest {
            plan_id: plan,
            event_type: "step.started".into(),
            actor: None,
            payload: CanonicalPayload::new(&json!({ "n": n })),
            expected_seq: None,
            idempotency: None,
        }
    }

    /// The retention scan pages through every old payload in bounded
    /// steps, skips erased ones and the system journal, and a batch mixes
    /// outcomes: each redaction is answered on its own.
    #[tokio::test]
    async fn the_scan_pages_and_a_batch_answers_each_redaction() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = Arc::new(Keyring::from_secret(b"test".to_vec()));
        let (store, writer) =
            Store::open(&dir.path().join("j.redb"), keyring, crate::fanout::fanout()).unwrap();
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        for n in 0..5 {
            store.append(append(a, n)).await.unwrap();
            store.append(append(b, n)).await.unwrap();
        }
        let scan_all = |limit| {
            let mut all = Vec::new();
            let mut cursor = None;
            loop {
                let (found, next) = store.payloads_older_than(i64::MAX, cursor, limit).unwrap();
                assert!(found.len() <= limit);
                all.extend(found);
                match next {
                    Some(next) => cursor = Some(next),
                    None => return all,
                }
            }
        };
        assert_eq!(scan_all(3).len(), 10);
        assert!(
            store
                .payloads_older_than(0, None, 100)
                .unwrap()
                .0
                .is_empty()
        );

        let redaction = |plan, seq, reason: &str| Redaction {
            plan_id: plan,
            seq,
            reason: reason.into(),
            by: RedactedBy::Retention,
        };
        let outcomes = store
            .redact(vec![
                redaction(a, 2, "ok"),
                redaction(a, 2, "twice in one batch"),
                redaction(a, 9, "no such seq"),
                redaction(b, 1, ""),
                redaction(super::super::admin::SYSTEM_PLAN, 1, "protected"),
            ])
            .await
            .unwrap();
        assert!(outcomes[0].is_ok());
        assert!(matches!(outcomes[1], Err(RedactError::AlreadyRedacted)));
        assert!(matches!(outcomes[2], Err(RedactError::NotFound)));
        assert!(matches!(outcomes[3], Err(RedactError::InvalidReason(_))));
        assert!(matches!(outcomes[4], Err(RedactError::Protected)));
        for hidden in [
            "\u{202E}fdp.exe",
            "a\u{200B}b",
            "x\u{2066}y",
            "l\u{2028}l",
            "tag\u{E0041}",
            "\u{3164}",
        ] {
            assert!(
                matches!(check_reason(hidden), Err(RedactError::InvalidReason(_))),
                "{hidden:?} was accepted"
            );
        }
        check_reason("GDPR request #4711, café ✓").unwrap();
        // Persian with a zero-width non-joiner, an emoji family with joiners.
        check_reason("می\u{200C}خواهم \u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}").unwrap();
        let left = scan_all(2);
        assert_eq!(left.len(), 9);
        assert!(!left.contains(&(a, 2)));
        let system = store
            .plan_events_after(&super::super::admin::SYSTEM_PLAN, 0, 10)
            .unwrap();
        assert_eq!(system.len(), 1, "one record for one redaction");
        assert_eq!(system[0].event_type, REDACTED_TYPE);
        let report = store.verify_plan(&a, &store.keyring()).unwrap();
        assert!(report.is_valid());
        assert_eq!(report.redacted, 1);
        // The record is an append to the system journal: its head row moves
        // with it (the writer's buffered heads are written), so a second
        // redaction follows it and the journal verifies to its head.
        let later = store.redact(vec![redaction(b, 3, "later")]).await;
        assert!(later.unwrap()[0].is_ok());
        let system = super::super::admin::SYSTEM_PLAN;
        assert_eq!(store.head(&system).unwrap().map(|h| h.last_seq), Some(2));
        let report = store.verify_plan(&system, &store.keyring()).unwrap();
        assert!(report.is_valid());
        assert_eq!(report.verified, 2);
        assert_eq!(store.tree(&system).root(None).unwrap().unwrap().0, 2);
        drop(store);
        tokio::task::spawn_blocking(move || writer.shutdown())
            .await
            .unwrap();
    }
}
