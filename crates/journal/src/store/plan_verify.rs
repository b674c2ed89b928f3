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

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};

use logbook_base::ordered_pool::{cores, run_in_order};
use serde_json::value::RawValue;
use uuid::Uuid;

use super::head::decode_head;
use super::records::decode_event_view;
use super::{
    EVENTS, EventKey, HEADS, PlanHead, Store, StoreError, decode_event, event_from_record,
    event_key,
};
use crate::chain::{
    BrokenReason, ChainLink, ChainReport, ChainVerifier, PayloadVerdict, SIGNATURE_VERSION,
    Signable, SignatureScratch, signature_check,
};
use crate::event::Timestamp;
use crate::keys::Keyring;

/// Seqs per range handed to a worker: large enough that handing over
/// costs little per event, small enough that a range's results stay in
/// cache between checking and walking.
const BATCH: u64 = 256;

/// A range of seqs for a worker.
struct Job {
    first: u64,
    last: u64,
}

/// One record's link, with its checks that need no earlier event.
type Prechecked = (ChainLink, PayloadVerdict);

/// A worker's answer: the range's records in seq order (or why they could
/// not be read, in order: the walk stops there).
struct Checked {
    last: u64,
    records: Vec<Result<Prechecked, StoreError>>,
}

type Events = redb::ReadOnlyTable<&'static EventKey, &'static [u8]>;

fn precheck(events: &Events, plan: &Uuid, job: Job, keyring: &Keyring) -> Checked {
    let mut records = Vec::with_capacity(BATCH as usize);
    let mut scratch = SignatureScratch::default();
    match events.range::<&[u8; 24]>(&event_key(plan, job.first)..=&event_key(plan, job.last)) {
        Ok(range) => {
            for entry in range {
                let decoded = entry.map_err(StoreError::from).and_then(|(key, value)| {
                    let seq = seq_of(key.value());
                    precheck_record(plan, seq, value.value(), keyring, &mut scratch)
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
    }
}

/// [`PayloadVerdict::of_signed`] of the event `event_from_record` would
/// build from these bytes, and its link, without building it: the same
/// fields, borrowed, and the same errors.
fn precheck_record<'k>(
    plan: &Uuid,
    seq: u64,
    bytes: &[u8],
    keyring: &'k Keyring,
    scratch: &mut SignatureScratch<'k>,
) -> Result<Prechecked, StoreError> {
    let record = decode_event_view(bytes)?;
    let redacted = record.payload.is_none();
    let id = Uuid::from_bytes(record.id);
    let signed = Signable {
        v: SIGNATURE_VERSION,
        plan_id: plan,
        seq,
        id: &id,
        event_type: record.event_type,
        actor: record.actor,
        created_at: Timestamp(record.created_at),
        payload_hash: &record.payload_hash,
        prev_hash: &record.prev_hash,
        key_id: record.key_id,
    };
    let text = record.payload.unwrap_or("null");
    let mut verdict_of = |text: &str| {
        let signature = &record.signature;
        PayloadVerdict::of_signed_parts(text, redacted, &signed, signature, keyring, scratch)
    };
    let mut verdict = verdict_of(text);
    // Canonical text is JSON, kept as is by `RawValue`: validating it again
    // (as building an `Event` does) could change nothing. Any other text
    // gets what building the event gives it: an error if it is not JSON,
    // and the check of the text `RawValue` keeps (without surrounding
    // whitespace) if it is.
    if !redacted && verdict.payload_result() == Err(BrokenReason::PayloadNotCanonical) {
        let raw: &RawValue = serde_json::from_str(text)
            .map_err(|e| StoreError(format!("corrupt payload at {plan}/{seq}: {e}")))?;
        if raw.get() != text {
            verdict = verdict_of(raw.get());
        }
    }
    let link = ChainLink {
        seq,
        prev_hash: record.prev_hash,
        signature: record.signature,
        created_at: Timestamp(record.created_at),
        redacted,
        payload_hash: record.payload_hash,
    };
    Ok((link, verdict))
}

/// The HMAC of the event at `seq` checked at `signed_at`, a date later than
/// its own (it is dated before an event accepted earlier). Rare, so it
/// reads and builds the event again, and checks as `ChainVerifier::check`.
fn recheck(
    events: &Events,
    plan: &Uuid,
    seq: u64,
    signed_at: Timestamp,
    keyring: &Keyring,
) -> Result<Result<(), BrokenReason>, StoreError> {
    let key = event_key(plan, seq);
    let value = events
        .get(&key)?
        .ok_or_else(|| StoreError(format!("event {plan}/{seq} vanished from a snapshot")))?;
    let event = event_from_record(&key, decode_event(value.value())?)?;
    Ok(signature_check(&event, signed_at, keyring))
}

impl Store {
    /// Verifies a plan's whole chain from seq 1 within one snapshot.
    pub fn verify_plan(
        &self,
        plan_id: &Uuid,
        keyring: &Keyring,
    ) -> Result<ChainReport, StoreError> {
        let never = AtomicBool::new(false);
        Ok(self
            .verify_plan_until(plan_id, keyring, &never)?
            .expect("a walk nobody abandons ends with a report"))
    }

    /// [`Store::verify_plan`], abandoned (`None`) once `abandoned` is set:
    /// checked before each range of [`BATCH`] seqs is handed out, so a walk
    /// whose client has gone stops within a range per core, not at the end
    /// of a plan of millions.
    pub fn verify_plan_until(
        &self,
        plan_id: &Uuid,
        keyring: &Keyring,
        abandoned: &AtomicBool,
    ) -> Result<Option<ChainReport>, StoreError> {
        let report = self.verify_plan_inner(plan_id, keyring, abandoned);
        match &report {
            Ok(None) => {}
            Ok(Some(report)) => logbook_base::metrics::observe_verify(report.is_valid()),
            Err(_) => logbook_base::metrics::observe_verify(false),
        }
        report
    }

    fn verify_plan_inner(
        &self,
        plan_id: &Uuid,
        keyring: &Keyring,
        abandoned: &AtomicBool,
    ) -> Result<Option<ChainReport>, StoreError> {
        let txn = self.db.begin_read()?;
        let events: Events = txn.open_table(EVENTS)?;
        let (first, last) = (event_key(plan_id, 0), event_key(plan_id, u64::MAX));
        let all = &first..=&last;
        // The highest seq stored: the ranges end there.
        let top = match events.range::<&EventKey>(all.clone())?.next_back() {
            Some(entry) => Some(seq_of(entry?.0.value())),
            None => None,
        };
        let mut verifier = ChainVerifier::default();
        let mut broken = None;
        // The walk met an empty range below `top`: a gap after this seq.
        let mut gap_after = None;
        let mut next_first = top.map(|_| 0u64);
        let mut left = false;
        let read = || -> Result<Option<Job>, StoreError> {
            let (Some(first), Some(top)) = (next_first, top) else {
                return Ok(None);
            };
            if abandoned.load(Ordering::Relaxed) {
                left = true;
                return Ok(None);
            }
            let last = first.saturating_add(BATCH - 1).min(top);
            next_first = (last < top).then(|| last + 1);
            Ok(Some(Job { first, last }))
        };
        let take = |checked: Checked| -> Result<ControlFlow<()>, StoreError> {
            if checked.records.is_empty() {
                gap_after = Some(checked.last);
                return Ok(ControlFlow::Break(()));
            }
            for one in checked.records {
                let (link, verdict) = one?;
                let mut failed = None;
                let checked = verifier.check_prechecked_with(&link, verdict, |signed_at| {
                    recheck(&events, plan_id, link.seq, signed_at, keyring).unwrap_or_else(|e| {
                        failed = Some(e);
                        Err(BrokenReason::Signature)
                    })
                });
                if let Some(e) = failed {
                    return Err(e);
                }
                if let Err(reason) = checked {
                    broken = Some((link.seq, reason));
                    return Ok(ControlFlow::Break(()));
                }
            }
            Ok(ControlFlow::Continue(()))
        };
        let work = |job: Job| precheck(&events, plan_id, job, keyring);
        run_in_order(cores(), read, work, take)?;
        if left {
            return Ok(None);
        }
        if let Some(last) = gap_after {
            // Event by event from the next record present; its seq is not
            // the next one, so this ends at once with the gap.
            for entry in events
                .range::<&[u8; 24]>(&event_key(plan_id, last + 1)..=&event_key(plan_id, u64::MAX))?
            {
                let (key, value) = entry?;
                let event = event_from_record(key.value(), decode_event(value.value())?)?;
                if let Err(reason) = verifier.check(&event, keyring) {
                    broken = Some((event.seq, reason));
                    break;
                }
            }
        }
        if broken.is_some() {
            return Ok(Some(ChainReport {
                verified: verifier.last_seq(),
                broken,
                head_signature: verifier.last_signature(),
                redacted: verifier.redacted(),
            }));
        }
        Ok(Some(ChainReport {
            verified: verifier.last_seq(),
            broken: head_break(&txn, plan_id, &verifier)?,
            head_signature: verifier.last_signature(),
            redacted: verifier.redacted(),
        }))
    }
}

/// Where a whole walk that ended with `verifier` disagrees with the plan's
/// head record. The chain alone cannot see a missing tail; the head record
/// can. It is only as trustworthy as the file (the plan's signed
/// checkpoints and their witnesses are what bind the tail beyond it), but
/// it catches a tail removed without updating it.
pub(super) fn head_break(
    txn: &redb::ReadTransaction,
    plan_id: &Uuid,
    verifier: &ChainVerifier,
) -> Result<Option<(u64, BrokenReason)>, StoreError> {
    let head: Option<PlanHead> = txn
        .open_table(HEADS)?
        .get(&plan_id.into_bytes())?
        .map(|v| decode_head(v.value()))
        .transpose()?;
    Ok(head.and_then(|head| {
        if head.last_seq != verifier.last_seq() {
            Some((verifier.last_seq() + 1, BrokenReason::SeqGap))
        } else if Some(head.last_signature) != verifier.last_signature() {
            Some((head.last_seq, BrokenReason::Signature))
        } else {
            None
        }
    }))
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
    use crate::chain::{CanonicalPayload, Signable};
    use crate::event::Event;
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

    /// A walk abandoned before it begins gives no report, never a partial
    /// one that would read as a valid chain of fewer events; one left
    /// alone gives the whole report.
    #[tokio::test]
    async fn an_abandoned_walk_gives_no_report() {
        let (_dir, store, writer, plan) = filled_store().await;
        let keyring = store.keyring();
        let abandoned = AtomicBool::new(true);
        assert!(
            store
                .verify_plan_until(&plan, &keyring, &abandoned)
                .unwrap()
                .is_none()
        );
        abandoned.store(false, Ordering::Relaxed);
        let report = store
            .verify_plan_until(&plan, &keyring, &abandoned)
            .unwrap()
            .expect("a walk left alone ends");
        assert!(report.is_valid());
        assert_eq!(report.verified, EVENTS_IN_PLAN);
        drop(store);
        tokio::task::spawn_blocking(move || writer.shutdown())
            .await
            .unwrap();
    }

    /// The last event re-signed and dated before its predecessor: the walk
    /// dates its signature by the predecessor, not by the event's own date
    /// at which the workers checked it, so it checks the HMAC again. A key
    /// retired between the two dates is refused there; the signing key is
    /// accepted (and then only the head record disagrees).
    #[tokio::test]
    async fn an_event_dated_before_its_predecessor_is_checked_at_the_later_date() {
        let (_dir, store, writer, plan) = filled_store().await;
        let last = EVENTS_IN_PLAN;
        let before = event(&store, plan, last - 1);
        let original = event(&store, plan, last);
        let retired_secret = b"plan-verify-retired".to_vec();
        let mut keyring = Keyring::from_secret(b"plan-verify".to_vec());
        keyring
            .add_verification_key(retired_secret.clone())
            .unwrap();
        let retired_id = crate::keys::key_id(&retired_secret);
        // Valid at the event's own date, not at its predecessor's.
        assert!(keyring.retire(&retired_id, Timestamp(before.created_at.0 - 5)));
        let resigned = |secret: &[u8], key_id: String| {
            let mut e = original.clone();
            e.created_at = Timestamp(before.created_at.0 - 10);
            e.key_id = key_id;
            e.signature = Signable::of(&e).sign(secret);
            e
        };

        let by_retired = resigned(&retired_secret, retired_id.clone());
        store.overwrite_event_unchecked(&by_retired).unwrap();
        let report = store.verify_plan(&plan, &keyring).unwrap();
        assert_eq!(report.broken, Some((last, BrokenReason::Signature)));
        assert_eq!(report.verified, last - 1);

        let by_current = resigned(b"plan-verify", keyring.current_id().to_string());
        store.overwrite_event_unchecked(&by_current).unwrap();
        let report = store.verify_plan(&plan, &keyring).unwrap();
        assert_eq!(report.verified, last, "accepted at the later date");
        assert_eq!(report.head_signature, Some(by_current.signature));
        assert_eq!(report.broken, Some((last, BrokenReason::Signature)));

        store.overwrite_event_unchecked(&original).unwrap();
        assert!(store.verify_plan(&plan, &keyring).unwrap().is_valid());
        drop(store);
        tokio::task::spawn_blocking(move || writer.shutdown())
            .await
            .unwrap();
    }

    /// A stored payload that is not JSON is an error when the walk reaches
    /// it (as reading the event is), one that is JSON but not canonical a
    /// break, and one canonical but for surrounding whitespace is checked
    /// as the text reading the event keeps.
    #[tokio::test]
    async fn stored_payload_texts_are_judged_as_reading_the_event_judges_them() {
        let (_dir, store, writer, plan) = filled_store().await;
        let keyring = store.keyring();
        let seq = EVENTS_IN_PLAN / 2;
        let original = event(&store, plan, seq);
        let with_text = |text: String| {
            // Written as a record directly: `Event` holds only JSON.
            let mut record = super::super::decode_event(&super::super::encode(
                &super::super::record_from_event(&original),
            ))
            .unwrap();
            record.payload = Some(text);
            let mut bytes = vec![super::super::records::REDACTED_EVENT_VERSION];
            bytes.extend(postcard::to_stdvec(&record).unwrap());
            let txn = store.db.begin_write().unwrap();
            txn.open_table(EVENTS)
                .unwrap()
                .insert(&event_key(&plan, seq), bytes.as_slice())
                .unwrap();
            txn.commit().unwrap();
            store.verify_plan(&plan, &keyring)
        };
        let text = original.payload.get().to_string();

        let error = with_text(format!("{}x", text)).unwrap_err().to_string();
        assert!(
            error.contains(&format!("corrupt payload at {plan}/{seq}")),
            "{error}"
        );
        let spaced = with_text(format!(" {text}\n")).unwrap();
        assert!(spaced.is_valid(), "{spaced:?}");
        let reordered = with_text(text.replacen("{\"n\"", "{ \"n\"", 1)).unwrap();
        assert_eq!(
            reordered.broken,
            Some((seq, BrokenReason::PayloadNotCanonical))
        );
        assert_eq!(reordered.verified, seq - 1);

        store.overwrite_event_unchecked(&original).unwrap();
        assert!(store.verify_plan(&plan, &keyring).unwrap().is_valid());
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
