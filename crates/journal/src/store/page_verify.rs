//! `?verify=1`: checking one page of a plan in O(page + log n), not O(plan).
//!
//! From one read snapshot, for the events of the page:
//! 1. **Up to the head.** A page shorter than its limit must end at the
//!    head: events removed from the tail are a gap.
//! 2. **The chain**: the first event's `prev_hash` is the signature of the
//!    event before the page (whose date bounds a retired key's, as in a walk
//!    from seq 1), then seqs, canonical payloads, payload hashes, HMAC
//!    signatures and links inside the page (`ChainVerifier`).
//! 3. **In the log.** Their leaf hashes, recomputed from the events, with
//!    the stored hashes of every subtree outside the page, must give the
//!    root of the plan's tree at its head, computed from the stored hashes
//!    (a range proof, `logbook_tlog::merkle::root_over_range`). A changed,
//!    removed or inserted event cannot reproduce it, even re-signed.
//!
//! When the page ends at the head, its last signature must also be the
//! head record's. The whole-chain walk (`verify_plan`) stays for
//! `?verify=full`.

use logbook_tlog::merkle::{self, Hash, NodeId};
use uuid::Uuid;

use super::head::{HeadRow, TreeReader};
use super::tree::TREE_HASHES;
use super::{
    EVENTS, HEADS, PlanHead, Store, StoreError, decode_event, event_from_record, event_key,
};
use crate::Event;
use crate::chain::{BrokenReason, ChainReport, ChainVerifier, log_entry};
use crate::keys::Keyring;

/// A page of events and what checking it found.
#[derive(Debug, Clone)]
pub struct VerifiedPage {
    pub events: Vec<Event>,
    /// `verified` counts the events checked in this call.
    pub report: ChainReport,
    /// The plan's tree size (head seq) and root the page was checked against.
    pub tree_size: u64,
    pub root: Hash,
}

/// A page whose stored records pass the byte budget before its count
/// limit: checked from one snapshot, its events are held together, so it is
/// refused rather than built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageTooLarge {
    /// How many events fit (at least one).
    pub fits: usize,
}

impl Store {
    /// The events of `plan_id` after seq `after` (at most `limit`), checked
    /// as the module says, all from one snapshot. Refused, unchecked, when
    /// their stored records pass `max_bytes` (a lone event always fits).
    pub fn verify_page(
        &self,
        plan_id: &Uuid,
        after: u64,
        limit: usize,
        max_bytes: usize,
        keyring: &Keyring,
    ) -> Result<Result<VerifiedPage, PageTooLarge>, StoreError> {
        let txn = self.db.begin_read()?;
        let row = txn
            .open_table(HEADS)?
            .get(&plan_id.into_bytes())?
            .map(|v| HeadRow::decode(v.value()))
            .transpose()?;
        let head: Option<PlanHead> = row.as_ref().map(|r| r.head);
        let size = head.map_or(0, |h| h.last_seq);
        let tail = row.map_or_else(HeadRow::empty_tail, |r| r.tail);
        let events_table = txn.open_table(EVENTS)?;
        let read_event = |seq: u64| -> Result<Option<Event>, StoreError> {
            let key = event_key(plan_id, seq);
            events_table
                .get(&key)?
                .map(|v| event_from_record(&key, decode_event(v.value())?))
                .transpose()
        };
        let mut events = Vec::new();
        let mut bytes = 0usize;
        let first = after.saturating_add(1);
        for entry in events_table
            .range::<&[u8; 24]>(&event_key(plan_id, first)..=&event_key(plan_id, u64::MAX))?
            .take(limit)
        {
            let (k, v) = entry?;
            let record = v.value();
            bytes = bytes.saturating_add(record.len());
            if bytes > max_bytes && !events.is_empty() {
                return Ok(Err(PageTooLarge { fits: events.len() }));
            }
            events.push(event_from_record(k.value(), decode_event(record)?)?);
        }
        let tree = txn.open_table(TREE_HASHES)?;
        let reader = TreeReader {
            table: &tree,
            plan: plan_id,
            tail: &tail,
        };
        let mut read = |node: NodeId| reader.read(node);
        let root = merkle::root(size, &mut read)?;

        let broken = 'check: {
            // A short page must end at the head: events removed from the
            // tail (head record and tree left alone) are missing here.
            let last = events.last().map_or(after, |e| e.seq);
            if events.len() < limit && last < size {
                break 'check Some((last + 1, BrokenReason::SeqGap));
            }
            let Some(start) = events.first().map(|e| e.seq) else {
                break 'check None;
            };
            // 3. The link to the event before the page.
            let mut verifier = match start {
                1 => ChainVerifier::default(),
                _ => match read_event(start - 1)? {
                    Some(before) => ChainVerifier::resume_after(&before),
                    None => break 'check Some((start, BrokenReason::SeqGap)),
                },
            };
            // 2. The chain inside the page.
            if let Err(broken) = verifier.check_window(&events, keyring) {
                break 'check Some(broken);
            }
            // 1. The page in the log: the leaves must rebuild the root.
            if last > size {
                break 'check Some((size + 1, BrokenReason::SeqGap));
            }
            let leaves: Vec<Hash> = events
                .iter()
                .map(|e| merkle::leaf_hash(log_entry(e).as_bytes()))
                .collect();
            if merkle::root_over_range(size, start - 1, &leaves, &mut read)? != Some(root) {
                // Name the first event whose leaf is not the stored one.
                for (event, leaf) in events.iter().zip(&leaves) {
                    if reader.read(NodeId::new(0, event.seq - 1))? != *leaf {
                        break 'check Some((event.seq, BrokenReason::RootMismatch));
                    }
                }
                break 'check Some((start, BrokenReason::RootMismatch));
            }
            // A page that ends at the head ends at the head record's signature.
            if let Some(h) = head.filter(|h| h.last_seq == last)
                && Some(h.last_signature) != verifier.last_signature()
            {
                break 'check Some((last, BrokenReason::Signature));
            }
            None
        };
        let checked = || {
            events
                .iter()
                .take_while(|e| broken.is_none_or(|(seq, _)| e.seq < seq))
        };
        let verified = checked().count() as u64;
        let redacted = checked().filter(|e| e.redacted).count() as u64;
        logbook_base::metrics::observe_verify(broken.is_none());
        Ok(Ok(VerifiedPage {
            report: ChainReport {
                verified,
                broken,
                head_signature: head.map(|h| h.last_signature),
                redacted,
            },
            events,
            tree_size: size,
            root,
        }))
    }
}
