//! `verify_plan`: a plan's whole chain from seq 1, within one snapshot, on
//! every core (admin `verify`, HTTP `?verify=full`).
//!
//! The plan's seqs are cut into ranges of [`BATCH`]. Each worker thread
//! reads its ranges from the shared read transaction itself, decodes the
//! records and makes their independent checks (canonical payload, payload
//! hash, the HMAC at the event's own date: [`PayloadVerdict::of_signed`]);
//! the calling thread takes the ranges back in order and [`ChainVerifier`]
//! walks them, applying every rule itself (seq, link to the previous
//! signature, the date a retired key must have been valid at). So the
//! report is exactly the one a walk event by event would give, including
//! a corrupt record: it is an error when the walk reaches it, after every
//! event before it verified.
//!
//! Ranges are of seqs, not of stored records, so a range can come back
//! short or empty when events are missing. A short range breaks the walk
//! by itself (the next event present is not the next seq). An empty range
//! ends the parallel walk, and the rest is walked event by event from the
//! next record present, which then reports the gap: ranges over a huge,
//! empty stretch of seqs (a record planted at seq 2^60) are never read
//! one by one.

use std::cell::RefCell;
use std::collections::VecDeque;
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

/// Seqs per range handed to a worker: large enough that handing over
/// costs little per event, small enough that a range's events stay in
/// cache between decoding and walking.
const BATCH: u64 = 256;

/// A range of seqs for a worker, and the events of an earlier range the
/// walk is done with. Jobs go round: the walk hands each range's event
/// buffer back with the job that goes to the same worker (job
/// `i + threads × in-flight`, which is `i` modulo the threads), so the
/// worker that allocated the events frees them, not the walking thread,
/// which limits the rate.
struct Job {
    first: u64,
    last: u64,
    spent: Vec<Event>,
}

/// One record decoded, with its checks that need no earlier event.
type Prechecked = (Event, PayloadVerdict);

/// A worker's answer: the range's records in seq order (or why they could
/// not be read, in order: the walk stops there), and the emptied buffer.
struct Checked {
    last: u64,
    records: Vec<Result<Prechecked, StoreError>>,
    spent: Vec<Event>,
}

type Events = redb::ReadOnlyTable<EventKey, &'static [u8]>;

fn precheck(events: &Events, plan: &Uuid, mut job: Job, keyring: &Keyring) -> Checked {
    // Freed here, by the thread that allocated them.
    job.spent.clear();
    let mut records = Vec::with_capacity(BATCH as usize);
    match events.range(event_key(plan, job.first)..=event_key(plan, job.last)) {
        Ok(range) => {
            for entry in range {
                let decoded = entry.map_err(StoreError::from).and_then(|(key, value)| {
                    let event = event_from_record(&key.value(), decode_event(value.value())?)?;
                    let verdict = PayloadVerdict::of_signed(&event, keyring);
                    Ok((event, verdict))
                });
                let failed = decoded.is_err();
                records.push(decoded);
                if failed {
                    break;
                }
            }
        }
        Err(e) => records.push(Err(e.into())),
    }
    Checked {
        last: job.last,
        records,
        spent: job.spent,
    }
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
        let events: Events = txn.open_table(EVENTS)?;
        let all = event_key(plan_id, 0)..=event_key(plan_id, u64::MAX);
        // The highest seq stored: the ranges end there.
        let top = match events.range(all.clone())?.next_back() {
            Some(entry) => Some(seq_of(&entry?.0.value())),
            None => None,
        };
        let mut verifier = ChainVerifier::default();
        let mut broken = None;
        // The walk met an empty range below `top`: a gap after this seq.
        let mut gap_after = None;
        let mut next_first = top.map(|_| 0u64);
        // Event buffers back from the walk, for the next jobs (see Job).
        let spare: RefCell<VecDeque<Vec<Event>>> = RefCell::new(VecDeque::new());
        let read = || -> Result<Option<Job>, StoreError> {
            let (Some(first), Some(top)) = (next_first, top) else {
                return Ok(None);
            };
            let last = first.saturating_add(BATCH - 1).min(top);
            next_first = (last < top).then(|| last + 1);
            let spent = spare.borrow_mut().pop_front().unwrap_or_default();
            Ok(Some(Job { first, last, spent }))
        };
        let take = |checked: Checked| -> Result<ControlFlow<()>, StoreError> {
            if checked.records.is_empty() {
                gap_after = Some(checked.last);
                return Ok(ControlFlow::Break(()));
            }
            let mut spent = checked.spent;
            spent.reserve(checked.records.len());
            for one in checked.records {
                let (event, verdict) = one?;
                if let Err(reason) = verifier.check_prechecked(&event, verdict, Some(keyring)) {
                    broken = Some((event.seq, reason));
                    return Ok(ControlFlow::Break(()));
                }
                spent.push(event);
            }
            spare.borrow_mut().push_back(spent);
            Ok(ControlFlow::Continue(()))
        };
        let work = |job: Job| precheck(&events, plan_id, job, keyring);
        run_in_order(cores(), read, work, take)?;
        if let Some(last) = gap_after {
            // Event by event from the next record present; its seq is not
            // the next one, so this ends at once with the gap.
            for entry in
                events.range(event_key(plan_id, last + 1)..=event_key(plan_id, u64::MAX))?
            {
                let (key, value) = entry?;
                let event = event_from_record(&key.value(), decode_event(value.value())?)?;
                if let Err(reason) = verifier.check(&event, keyring) {
                    broken = Some((event.seq, reason));
                    break;
                }
            }
        }
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

/// The seq in an event key (plan id ‖ seq, big-endian).
fn seq_of(key: &EventKey) -> u64 {
    u64::from_be_bytes(key[16..].try_into().expect("8 bytes"))
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
    const EVENTS_IN_PLAN: u64 = 3 * BATCH + 77;

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

    /// Missing events, by a whole range or alone, a record planted far past
    /// the head, and the last event removed: each reported where a walk
    /// event by event reports it.
    #[tokio::test]
    async fn gaps_are_found_wherever_the_ranges_fall() {
        let (_dir, store, writer, plan) = filled_store().await;
        let keyring = store.keyring();
        let report = |store: &Store| store.verify_plan(&plan, &keyring).unwrap();

        // A record planted at a seq 2^60: the ranges up to it are never all
        // read; the walk stops at the first empty one, then finds it.
        let mut planted = event(&store, plan, 5);
        planted.seq = 1 << 60;
        store.overwrite_event_unchecked(&planted).unwrap();
        let far = report(&store);
        assert_eq!(far.broken, Some((1 << 60, BrokenReason::SeqGap)));
        assert_eq!(far.verified, EVENTS_IN_PLAN);
        store.remove_event_unchecked(&plan, 1 << 60).unwrap();
        assert!(report(&store).is_valid());

        // One whole range gone (seqs 256..=511, the second range), and one
        // event inside a range.
        let whole: Vec<Event> = (BATCH..2 * BATCH)
            .map(|seq| event(&store, plan, seq))
            .collect();
        for e in &whole {
            store.remove_event_unchecked(&plan, e.seq).unwrap();
        }
        let gone = report(&store);
        assert_eq!(gone.broken, Some((2 * BATCH, BrokenReason::SeqGap)));
        assert_eq!(gone.verified, BATCH - 1);
        for e in &whole {
            store.overwrite_event_unchecked(e).unwrap();
        }
        let one = event(&store, plan, 600);
        store.remove_event_unchecked(&plan, 600).unwrap();
        assert_eq!(report(&store).broken, Some((601, BrokenReason::SeqGap)));
        store.overwrite_event_unchecked(&one).unwrap();

        // The last event removed: only the head record can tell.
        let last = event(&store, plan, EVENTS_IN_PLAN);
        store.remove_event_unchecked(&plan, EVENTS_IN_PLAN).unwrap();
        let tail = report(&store);
        assert_eq!(tail.broken, Some((EVENTS_IN_PLAN, BrokenReason::SeqGap)));
        assert_eq!(tail.verified, EVENTS_IN_PLAN - 1);
        store.overwrite_event_unchecked(&last).unwrap();
        assert!(report(&store).is_valid());
        drop(store);
        tokio::task::spawn_blocking(move || writer.shutdown())
            .await
            .unwrap();
    }
}
