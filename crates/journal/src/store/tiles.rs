//! C2SP tlog-tiles resources of a log: hash tiles and entry bundles, read
//! from one snapshot of the store.

use logbook_tlog::merkle::NodeId;
use logbook_tlog::tile::{EntryTooLong, TileKind, TilePath, push_bundle_entry};
use uuid::Uuid;

use super::head::TreeReader;
use super::tree::{LogId, Tree};
use super::{EVENTS, StoreError, decode_event, event_from_record, event_key};
use crate::chain::log_entry;

/// Why a tile was not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileError {
    /// The plan's current tree does not have every hash or entry of it.
    NotInTree,
    /// An entry longer than a bundle's 2-byte length prefix can say
    /// (entries carry the payload's hash, not the payload, so none is).
    EntryTooLong { seq: u64, len: usize },
}

impl std::fmt::Display for TileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TileError::NotInTree => write!(f, "the tile is beyond the plan's current tree"),
            TileError::EntryTooLong { seq, len } => {
                write!(f, "entry {seq} is {len} bytes, longer than a bundle allows")
            }
        }
    }
}

impl std::error::Error for TileError {}

impl Tree<'_> {
    /// The bytes of a C2SP tlog-tiles resource, read from one snapshot: a
    /// hash tile (the stored hashes, 32 bytes each) or an entry bundle
    /// (each entry as a 2-byte big-endian length and its bytes).
    pub fn tile(&self, tile: &TilePath) -> Result<Result<Vec<u8>, TileError>, StoreError> {
        let txn = self.store.db.begin_read()?;
        let (head, tail) = self.log.snapshot(&txn)?;
        if !tile.exists_in(head) {
            return Ok(Err(TileError::NotInTree));
        }
        let mut out = Vec::new();
        match tile.kind {
            TileKind::Hashes { .. } => {
                let Some((first, count)) = tile.stored_hashes(head) else {
                    return Ok(Err(TileError::NotInTree));
                };
                let (hashes, id) = self.log.hashes();
                let table = txn.open_table(hashes)?;
                let reader = TreeReader {
                    table: &table,
                    plan: &id,
                    tail: &tail,
                };
                for index in first.index..first.index + count {
                    out.extend_from_slice(&reader.read(NodeId::new(first.level, index))?);
                }
            }
            TileKind::Entries => {
                let LogId::Plan(plan) = self.log else {
                    return super::heads_log::bundle(&txn, tile.first(), tile.count(), &mut out)
                        .map(|()| Ok(out));
                };
                let events = txn.open_table(EVENTS)?;
                // Leaf i is seq i + 1; exists_in bounds the range by the head.
                let (from, count) = (tile.first() + 1, tile.count());
                let range = events
                    .range::<&[u8; 24]>(&event_key(&plan, from)..&event_key(&plan, from + count))?;
                let mut seen = 0;
                for (expected, entry) in (from..).zip(range) {
                    let (k, v) = entry?;
                    let event = event_from_record(k.value(), decode_event(v.value())?)?;
                    if event.seq != expected {
                        return Err(missing_event(&plan, expected));
                    }
                    if let Err(EntryTooLong(len)) =
                        push_bundle_entry(&mut out, log_entry(&event).as_bytes())
                    {
                        return Ok(Err(TileError::EntryTooLong {
                            seq: event.seq,
                            len,
                        }));
                    }
                    seen += 1;
                }
                if seen != count {
                    return Err(missing_event(&plan, from + seen));
                }
            }
        }
        Ok(Ok(out))
    }
}

fn missing_event(plan: &Uuid, seq: u64) -> StoreError {
    StoreError(format!("plan {plan} lacks event {seq} below its head"))
}
