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
    /// Who asked, as recorded in the system journal: the admin socket peer
    /// (`{"uid", "user", "pid"}`) or `"retention"`.
    pub by: serde_json::Value,
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

/// A reason is one line of printable text, 1 to [`MAX_REASON_BYTES`] bytes.
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
        wait.await.unwrap_or(Err(RedactError::Unavailable))
    }

    /// Up to `limit` events of ordinary plans created before `cutoff_ms`
    /// whose payload is still there, in key order after `after` (the last
    /// key a previous call returned, to continue). Bounded work: it looks at
    /// most at `limit * 8` records, and returns the cursor to go on from
    /// (`None` once the table is done).
    #[allow(clippy::type_complexity)]
    pub fn payloads_older_than(
        &self,
        cutoff_ms: i64,
        after: Option<(Uuid, u64)>,
        limit: usize,
    ) -> Result<(Vec<(Uuid, u64)>, Option<(Uuid, u64)>), StoreError> {
        let txn = self.db.begin_read()?;
        let events = txn.open_table(EVENTS)?;
        let start = after.map_or(std::ops::Bound::Unbounded, |(p, s)| {
            std::ops::Bound::Excluded(event_key(&p, s))
        });
        let max_scan = limit.max(1) * 8;
        let mut found = Vec::new();
        let mut last = None;
        for (scanned, entry) in events
            .range::<super::EventKey>((start, std::ops::Bound::Unbounded))?
            .enumerate()
        {
            if scanned >= max_scan || found.len() >= limit {
                return Ok((found, last));
            }
            let (k, v) = entry?;
            let event = event_from_record(&k.value(), decode_event(v.value())?)?;
            last = Some((event.plan_id, event.seq));
            if event.plan_id != super::admin::SYSTEM_PLAN
                && !event.redacted
                && event.created_at.millis() < cutoff_ms
            {
                found.push((event.plan_id, event.seq));
            }
        }
        Ok((found, None))
    }
}

impl WriterLoop {
    /// Runs a batch of redactions as one transaction in the writer thread.
    pub(super) fn redact(&mut self, batch: Vec<Redaction>) -> RedactOutcomes {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)
            .map_err(StoreError::from)?;
        let mut position = self.position;
        let (outcomes, enqueued) = {
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
            tables.fed.redact_events(&erased)?;
            (outcomes, tables.fed.enqueued)
        };
        txn.commit().map_err(StoreError::from)?;
        self.position = position;
        debug_assert_eq!(enqueued, 0, "the system journal is never queued for a peer");
        for redacted in outcomes.iter().flatten() {
            // No receivers is fine: nobody is streaming.
            let _ = self.fanout.send(redacted.record.clone());
        }
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
        if let Some(gone) = deleted::deleted(&self.deleted, &r.plan_id)? {
            return Ok(Err(RedactError::PlanDeleted {
                tombstone_seq: gone.tombstone_seq,
            }));
        }
        let key = event_key(&r.plan_id, r.seq);
        let Some(record) = self.events.get(key)?.map(|v| decode_event(v.value())) else {
            return Ok(Err(RedactError::NotFound));
        };
        let record = record?;
        if record.payload.is_none() {
            return Ok(Err(RedactError::AlreadyRedacted));
        }
        if let Err(e) = check_reason(&r.reason) {
            return Ok(Err(e));
        }
        self.events
            .insert(key, encode_redacted(record).as_slice())?;
        let entry = AppendRequest {
            plan_id: super::admin::SYSTEM_PLAN,
            event_type: REDACTED_TYPE.into(),
            actor: Some(if r.by == json!("retention") {
                "logbook-retention".into()
            } else {
                "logbook-admin".into()
            }),
            payload: CanonicalPayload::new(&json!({
                "plan_id": r.plan_id,
                "seq": r.seq,
                "reason": r.reason,
                "by": r.by,
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
