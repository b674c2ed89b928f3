//! `verify_plan`: a plan's whole chain from seq 1, within one snapshot, on
//! every core (admin `verify`, HTTP `?verify=full`).
//!
//! The reading thread only copies raw records out of redb, in order, in
//! batches; worker threads decode each record and make its independent
//! checks (canonical payload, payload hash, the HMAC at the event's own
//! date: [`PayloadVerdict::of_signed`]); the reading thread takes the
//! batches back in order and [`ChainVerifier`] walks them, applying every
//! rule itself (seq, link to the previous signature, the date a retired key
//! must have been valid at). So the report is exactly the one a walk event
//! by event would give, including a corrupt record: it is an error when
//! the walk reaches it, after every event before it verified.

use std::ops::ControlFlow;

use logbook_base::ordered_pool::{cores, run_in_order};
use uuid::Uuid;

use super::head::decode_head;
use super::{
    EVENTS, EventKey, HEADS, PlanHead, Store, StoreError, decode_event, event_from_record,
    event_key,
};
use crate::chain::{BrokenReason, ChainReport, ChainVerifier, PayloadVerdict};
use crate::event::Event;
use crate::keys::Keyring;

/// Records per batch handed to a worker: large enough that handing over
/// costs little per event, small enough that a batch stays in cache.
const BATCH: usize = 256;

/// Records as stored, copied out of the read transaction (whose guards
/// stay on the reading thread): keys, and the values end to end.
///
/// A batch goes round: the worker that decoded it hands its buffers back
/// with the results, and the reader fills them again for the batch that
/// goes to the same worker (batch `i + threads × in-flight`, which is
/// `i` modulo the threads), carrying the events it has walked as `spent`.
/// So the reading thread, which limits the walk, neither allocates a batch
/// nor frees an event: the worker that allocated them frees them.
struct RawBatch {
    keys: Vec<EventKey>,
    bytes: Vec<u8>,
    ends: Vec<usize>,
    /// Events already walked, to be dropped on the worker.
    spent: Vec<Event>,
}

impl RawBatch {
    fn new() -> RawBatch {
        RawBatch {
            keys: Vec::with_capacity(BATCH),
            // About one 1 KiB event record each, grown when larger.
            bytes: Vec::with_capacity(BATCH * 1300),
            ends: Vec::with_capacity(BATCH),
            spent: Vec::new(),
        }
    }

    /// Ready to be filled again; `spent` is left for the worker.
    fn clear(&mut self) {
        self.keys.clear();
        self.bytes.clear();
        self.ends.clear();
    }

    fn push(&mut self, key: EventKey, value: &[u8]) {
        self.keys.push(key);
        self.bytes.extend_from_slice(value);
        self.ends.push(self.bytes.len());
    }

    fn records(&self) -> impl Iterator<Item = (&EventKey, &[u8])> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        self.keys
            .iter()
            .zip(starts.zip(&self.ends))
            .map(|(key, (start, &end))| (key, &self.bytes[start..end]))
    }
}

/// One record decoded, with its checks that need no earlier event.
type Prechecked = Result<(Event, PayloadVerdict), StoreError>;

/// A worker's answer: the batch's records in order, and its buffers back.
type Checked = (Vec<Prechecked>, RawBatch);

fn precheck(mut batch: RawBatch, keyring: &Keyring) -> Checked {
    // Freed here, by the thread that allocated them.
    batch.spent.clear();
    let checked = batch
        .records()
        .map(|(key, bytes)| {
            let event = event_from_record(key, decode_event(bytes)?)?;
            let verdict = PayloadVerdict::of_signed(&event, keyring);
            Ok((event, verdict))
        })
        .collect();
    (checked, batch)
}

impl Store {
    /// Verifies a plan's whole chain from seq 1 within one snapshot.
    pub fn verify_plan(
        &self,
        plan_id: &Uuid,
        keyring: &Keyring,
    ) -> Result<ChainReport, StoreError> {
        let report = self.verify_plan_inner(plan_id, keyring);
        logbook_base::metrics::observe_verify(report.as_ref().is_ok_and(ChainReport::is_valid));
        report
    }

    fn verify_plan_inner(
        &self,
        plan_id: &Uuid,
        keyring: &Keyring,
    ) -> Result<ChainReport, StoreError> {
        let txn = self.db.begin_read()?;
        let events = txn.open_table(EVENTS)?;
        let mut range = events.range(event_key(plan_id, 0)..=event_key(plan_id, u64::MAX))?;
        let mut verifier = ChainVerifier::default();
        let mut broken = None;
        // Batches back from the workers, to be filled again (see RawBatch).
        let spare = std::cell::RefCell::new(std::collections::VecDeque::new());
        let read = || -> Result<Option<RawBatch>, StoreError> {
            let mut batch = spare.borrow_mut().pop_front().unwrap_or_else(RawBatch::new);
            batch.clear();
            while batch.keys.len() < BATCH {
                let Some(entry) = range.next() else { break };
                let (key, value) = entry?;
                batch.push(key.value(), value.value());
            }
            Ok((!batch.keys.is_empty()).then_some(batch))
        };
        let take = |(checked, mut batch): Checked| -> Result<ControlFlow<()>, StoreError> {
            batch.spent.reserve(checked.len());
            for one in checked {
                let (event, verdict) = one?;
                if let Err(reason) = verifier.check_prechecked(&event, verdict, Some(keyring)) {
                    broken = Some((event.seq, reason));
                    return Ok(ControlFlow::Break(()));
                }
                batch.spent.push(event);
            }
            spare.borrow_mut().push_back(batch);
            Ok(ControlFlow::Continue(()))
        };
        run_in_order(cores(), read, |batch| precheck(batch, keyring), take)?;
        if broken.is_some() {
            return Ok(ChainReport {
                verified: verifier.last_seq(),
                broken,
                head_signature: verifier.last_signature(),
                redacted: verifier.redacted(),
            });
        }
        // The chain alone cannot see a missing tail; the head record can.
        // It is only as trustworthy as the file (signed checkpoints come
        // later), but it catches a tail removed without updating it.
        let head: Option<PlanHead> = txn
            .open_table(HEADS)?
            .get(plan_id.into_bytes())?
            .map(|v| decode_head(v.value()))
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
            redacted: verifier.redacted(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::value::RawValue;

    use super::*;
    use crate::chain::CanonicalPayload;
    use crate::store::AppendRequest;

    /// Events in a plan: several batches, so both workers and the hand-back
    /// in order are exercised; not a multiple of the batch size.
    const EVENTS_IN_PLAN: u64 = 3 * BATCH as u64 + 77;

    async fn filled_store() -> (tempfile::TempDir, Store, super::super::Writer, Uuid) {
        let dir = tempfile::tempdir().unwrap();
        let keyring = Arc::new(Keyring::from_secret(b"plan-verify".to_vec()));
        let (store, writer) =
            Store::open(&dir.path().join("j.redb"), keyring, crate::fanout::fanout()).unwrap();
        let plan = Uuid::from_u128(42);
        let appends = (0..EVENTS_IN_PLAN).map(|n| {
            let mut request = AppendRequest::empty(plan);
            request.payload =
                CanonicalPayload::new(&serde_json::json!({ "n": n, "pad": "x".repeat(900) }));
            store.append(request)
        });
        for appended in futures_util::future::join_all(appends).await {
            appended.unwrap();
        }
        (dir, store, writer, plan)
    }

    fn event(store: &Store, plan: Uuid, seq: u64) -> Event {
        store
            .plan_events_after(&plan, seq - 1, 1)
            .unwrap()
            .remove(0)
    }

    /// One byte flipped in the middle event or the last one, in its payload
    /// or its signature: the exact seq and reason, and every event before
    /// it counted as verified.
    #[tokio::test]
    async fn one_flipped_byte_is_found_at_its_seq() {
        let (_dir, store, writer, plan) = filled_store().await;
        let keyring = store.keyring();
        let report = store.verify_plan(&plan, &keyring).unwrap();
        assert!(report.is_valid(), "{report:?}");
        assert_eq!(report.verified, EVENTS_IN_PLAN);

        let middle = EVENTS_IN_PLAN / 2;
        let last = EVENTS_IN_PLAN;
        type Flip = fn(&mut Event);
        let flips: [(&str, Flip, BrokenReason); 2] = [
            (
                "payload",
                |e| {
                    // `x` → `y`: still canonical, another hash.
                    let text = e.payload.get().replacen("xxx", "xyx", 1);
                    e.payload = RawValue::from_string(text).unwrap();
                },
                BrokenReason::PayloadHash,
            ),
            (
                "signature",
                |e| e.signature[17] ^= 1,
                BrokenReason::Signature,
            ),
        ];
        for (what, flip, reason) in flips {
            for seq in [middle, last] {
                let original = event(&store, plan, seq);
                let mut tampered = original.clone();
                flip(&mut tampered);
                store.overwrite_event_unchecked(&tampered).unwrap();
                let report = store.verify_plan(&plan, &keyring).unwrap();
                assert_eq!(report.broken, Some((seq, reason)), "{what} at {seq}");
                assert_eq!(report.verified, seq - 1, "{what} at {seq}");
                store.overwrite_event_unchecked(&original).unwrap();
                assert!(store.verify_plan(&plan, &keyring).unwrap().is_valid());
            }
        }
        drop(store);
        tokio::task::spawn_blocking(move || writer.shutdown())
            .await
            .unwrap();
    }
}
