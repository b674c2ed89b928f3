//! `Tables`: one write transaction's tables, and the apply of one append.

use std::collections::HashMap;
use std::sync::Arc;

use uuid::Uuid;

use redb::ReadableTable;

use super::federation::OutboxCopies;
use super::head::{HeadRow, TreeTail};
use super::lazy_table::LazyTable;
use super::wal::WalRecord;
use super::{
    AppendError, AppendRequest, Appended, EVENTS, EventKey, FedShared, HEADS, IDEMPOTENCY,
    IdempotencyRecord, POSITIONS, PlanHead, StoreError, decode, decode_event, deleted, encode,
    encode_event, event_from_record, event_key, federation, head, idempotency_key, tree,
};
use crate::chain::{self, Signable};
use crate::event::{Event, Timestamp};
use crate::keys::Keyring;
use logbook_tlog::merkle;

pub(super) struct Tables<'txn> {
    pub(super) fed: federation::FedTables<'txn>,
    pub(super) events: LazyTable<'txn, &'static EventKey, &'static [u8]>,
    /// Read and written through [`Tables::head_row`] and
    /// [`Tables::write_staged`] only. Opened at once: every append reads it.
    heads: redb::Table<'txn, &'static [u8; 16], &'static [u8]>,
    pub(super) positions: LazyTable<'txn, u64, &'static EventKey>,
    pub(super) idempotency: LazyTable<'txn, &'static [u8], &'static [u8]>,
    pub(super) tree: LazyTable<'txn, &'static tree::TreeKey, &'static [u8; 32]>,
    pub(super) deleted: LazyTable<'txn, &'static [u8; 16], &'static [u8]>,
    /// Head rows changed in this transaction, written once by
    /// [`Tables::write_staged`]: a batch of appends to one plan decodes,
    /// encodes and writes its row (up to 1 KiB with the tree buffer) once.
    heads_changed: HashMap<Uuid, HeadRow>,
    /// The write-ahead record of every event made in this transaction, in
    /// position order (see `wal.rs`).
    pub(super) wal: Vec<WalRecord>,
    /// `wal[..written]` have their rows in the tables; the rest are staged:
    /// sequenced, signed and in their plan's head row and tree, with their
    /// event, position, idempotency and outbox rows written by
    /// [`Tables::write_staged`]. The journal writer writes them while the
    /// batch's frames go to disk.
    written: usize,
    /// The idempotency rows of staged records: row key → index in `wal`.
    staged_keys: HashMap<Vec<u8>, usize>,
    /// Staged events that have outbox copies: index in `wal`, the event.
    staged_outbox: Vec<(usize, Arc<Event>)>,
}

impl<'txn> Tables<'txn> {
    pub(super) fn open(
        txn: &'txn redb::WriteTransaction,
        fed: &FedShared,
    ) -> Result<Tables<'txn>, StoreError> {
        Ok(Tables {
            fed: federation::FedTables::open(txn, fed),
            events: LazyTable::new(txn, EVENTS),
            heads: txn.open_table(HEADS)?,
            positions: LazyTable::new(txn, POSITIONS),
            idempotency: LazyTable::new(txn, IDEMPOTENCY),
            tree: LazyTable::new(txn, tree::TREE_HASHES),
            deleted: LazyTable::new(txn, deleted::DELETED_PLANS),
            heads_changed: HashMap::new(),
            wal: Vec::new(),
            written: 0,
            staged_keys: HashMap::new(),
            staged_outbox: Vec::new(),
        })
    }

    /// The head row of `plan` as this transaction left it so far.
    pub(super) fn head_row(&self, plan: &Uuid) -> Result<Option<HeadRow>, StoreError> {
        self.head_row_of_plan(plan)?
    }

    /// [`Tables::head_row`], with a row that does not decode (the plan's
    /// own damage) apart from a failed read (the store's): the first
    /// refuses the plan's appends, the second the batch.
    fn head_row_of_plan(
        &self,
        plan: &Uuid,
    ) -> Result<Result<Option<HeadRow>, StoreError>, StoreError> {
        if let Some(row) = self.heads_changed.get(plan) {
            return Ok(Ok(Some(row.clone())));
        }
        Ok(self
            .heads
            .get(&plan.into_bytes())?
            .map(|v| HeadRow::decode(v.value()))
            .transpose())
    }

    /// Writes the rows of every staged event (its event, position,
    /// idempotency and outbox rows) and the head rows changed since the
    /// last call. Must run before the transaction commits.
    pub(super) fn write_staged(&mut self) -> Result<(), StoreError> {
        for record in &self.wal[self.written..] {
            let plan = Uuid::from_bytes(record.plan_id);
            let key = event_key(&plan, record.seq);
            if self
                .events
                .table()?
                .insert(&key, record.event.as_slice())?
                .is_some()
            {
                return Err(StoreError(format!(
                    "invariant broken: event {plan}/{} already exists though its plan's head was before it",
                    record.seq
                )));
            }
            self.positions.table()?.insert(record.position, &key)?;
            if let Some((idem_key, fingerprint)) = &record.idempotency {
                let row = IdempotencyRecord {
                    fingerprint: *fingerprint,
                    seq: record.seq,
                };
                self.idempotency.table()?.insert(
                    idempotency_key(&plan, idem_key).as_slice(),
                    encode(&row).as_slice(),
                )?;
            }
        }
        for (index, event) in self.staged_outbox.drain(..) {
            self.fed.enqueue_copies(&event, &self.wal[index].outbox)?;
        }
        self.written = self.wal.len();
        self.staged_keys.clear();
        for (plan, row) in self.heads_changed.drain() {
            self.heads
                .insert(&plan.into_bytes(), row.encode().as_slice())?;
        }
        Ok(())
    }

    /// Forgets `plan`'s head row (its deletion).
    pub(super) fn remove_head(&mut self, plan: &Uuid) -> Result<(), StoreError> {
        self.heads_changed.remove(plan);
        self.heads.remove(&plan.into_bytes())?;
        Ok(())
    }

    pub(super) fn apply(
        &mut self,
        req: &AppendRequest,
        keyring: &Keyring,
        now: Timestamp,
        position: &mut u64,
    ) -> Result<Result<Appended, AppendError>, StoreError> {
        let plan = req.plan_id;
        // An idempotent retry wins over every other check: it must return the
        // original outcome even if the plan has moved on since.
        if let Some(idem) = &req.idempotency {
            let row_key = idempotency_key(&plan, &idem.key);
            let (record, staged) = match self.staged_keys.get(&row_key) {
                Some(&index) => {
                    let staged = &self.wal[index];
                    let (_, fingerprint) = staged
                        .idempotency
                        .as_ref()
                        .expect("staged under its idempotency key");
                    let record = IdempotencyRecord {
                        fingerprint: *fingerprint,
                        seq: staged.seq,
                    };
                    (Some(record), Some(index))
                }
                None => {
                    let record = self
                        .idempotency
                        .table()?
                        .get(row_key.as_slice())?
                        .map(|v| decode::<IdempotencyRecord>(v.value()))
                        .transpose();
                    match record {
                        Ok(record) => (record, None),
                        Err(e) => return Ok(Err(AppendError::Storage(e))),
                    }
                }
            };
            if let Some(record) = record {
                if record.fingerprint != idem.fingerprint {
                    return Ok(Err(AppendError::IdempotencyConflict { seq: record.seq }));
                }
                let key = event_key(&plan, record.seq);
                // Damage of this plan's rows refuses this append alone.
                let event = match staged {
                    Some(index) => decode_event(&self.wal[index].event)
                        .and_then(|record| event_from_record(&key, record)),
                    None => match self.events.table()?.get(&key)? {
                        None => Err(StoreError(
                            "idempotency record points at a missing event".into(),
                        )),
                        Some(stored) => decode_event(stored.value())
                            .and_then(|record| event_from_record(&key, record)),
                    },
                };
                let event = match event {
                    Ok(event) => event,
                    Err(e) => return Ok(Err(AppendError::Storage(e))),
                };
                return Ok(Ok(Appended {
                    event: Arc::new(event),
                    replayed: true,
                }));
            }
        }

        let row = match self.head_row_of_plan(&plan)? {
            Ok(row) => row,
            Err(e) => return Ok(Err(AppendError::Storage(e))),
        };
        // A deletion removes the head row, and a deleted id is never used
        // again, so only a plan without a row can be deleted. The system
        // plan is never deleted; its row marks a migration.
        if row.is_none()
            && plan != super::admin::SYSTEM_PLAN
            && let Some(gone) = deleted::deleted(self.deleted.table()?, &plan)?
        {
            return Ok(Err(AppendError::PlanDeleted {
                tombstone_seq: gone.tombstone_seq,
            }));
        }
        let head = row.as_ref().map(|r| r.head);
        let head_seq = head.map_or(0, |h| h.last_seq);
        if let Some(expected) = req.expected_seq
            && expected != head_seq
        {
            return Ok(Err(AppendError::SeqConflict {
                expected,
                head: head_seq,
            }));
        }

        let seq = head_seq + 1;
        let tail = match self.tail_to_extend(&plan, row)? {
            Ok(tail) => tail,
            Err(refused) => return Ok(Err(refused)),
        };
        // Time never runs backwards within a plan, even if the clock does.
        let created_at = head.map_or(now, |h| now.max(Timestamp(h.last_at)));
        let mut event = Event {
            id: Uuid::now_v7(),
            plan_id: plan,
            seq,
            event_type: req.event_type.clone(),
            actor: req.actor.clone(),
            payload: req.payload.json.clone(),
            payload_hash: req.payload.hash,
            prev_hash: head.map(|h| h.last_signature),
            signature: [0; 32],
            key_id: keyring.current_id().to_string(),
            created_at,
            position: *position + 1,
            redacted: false,
        };
        // One canonicalization serves the signature and the log entry.
        let signed = Signable::of(&event).canonical();
        event.signature = chain::sign_canonical(&signed, keyring.current_secret());
        let leaf = merkle::leaf_hash(chain::log_entry_of(&signed, &event.signature).as_bytes());
        let idempotency = req
            .idempotency
            .as_ref()
            .map(|idem| (idem.key.clone(), idem.fingerprint));
        let outbox = self.fed.copies_for(&event);
        let event = Arc::new(event);
        self.stage_rows(&event, head, tail, leaf, idempotency, outbox)?;
        *position += 1;
        Ok(Ok(Appended {
            event,
            replayed: false,
        }))
    }

    /// The tree tail a new leaf of `plan` extends, from its head row.
    /// The inner error refuses the append (a damaged tree), not the batch.
    fn tail_to_extend(
        &mut self,
        plan: &Uuid,
        row: Option<HeadRow>,
    ) -> Result<Result<TreeTail, AppendError>, StoreError> {
        Ok(Ok(match row {
            None => HeadRow::empty_tail(),
            Some(HeadRow {
                tail: tail @ TreeTail::Buffered { .. },
                ..
            }) => tail,
            // A row written before the head buffered leaves: its tree is
            // in the table, unless the store is damaged. Such a plan
            // refuses its own appends instead of failing the whole batch.
            Some(HeadRow {
                tail: TreeTail::InTable,
                head,
            }) => {
                let head_seq = head.last_seq;
                if !tree::has_leaf(self.tree.table()?, plan, head_seq)? {
                    return Ok(Err(AppendError::Storage(StoreError(format!(
                        "plan {plan}: its Merkle tree lacks leaf {head_seq}; verify the plan"
                    )))));
                }
                TreeTail::Buffered {
                    flushed: head_seq,
                    pending: Vec::new(),
                }
            }
        }))
    }

    /// Stages every row of a new event: its tree leaf and head row now
    /// (the next event of its plan builds on them), its event, position,
    /// idempotency and outbox rows for [`Tables::write_staged`]; and keeps
    /// the write-ahead record that re-creates exactly these rows. Both an
    /// append and a replay of the write-ahead segment go through here, so a
    /// replay cannot write anything an append would not.
    fn stage_rows(
        &mut self,
        event: &Arc<Event>,
        head: Option<PlanHead>,
        mut tail: TreeTail,
        leaf: merkle::Hash,
        idempotency: Option<(String, [u8; 32])>,
        outbox: OutboxCopies,
    ) -> Result<(), StoreError> {
        let plan = event.plan_id;
        let seq = event.seq;
        assert_eq!(
            seq,
            head.map_or(0, |h| h.last_seq) + 1,
            "plans are contiguous"
        );
        let new_head = PlanHead {
            last_seq: seq,
            last_signature: event.signature,
            count: head.map_or(0, |h| h.count) + 1,
            first_at: head.map_or(event.created_at.0, |h| h.first_at),
            last_at: event.created_at.0,
        };
        debug_assert_eq!(new_head.count, new_head.last_seq, "plans are append-only");
        // Same transaction as the event: a crash cannot keep one without the other.
        head::push_leaf(&mut self.tree, &plan, &mut tail, leaf)?;
        let new_row = HeadRow {
            head: new_head,
            tail,
        };
        self.heads_changed.insert(plan, new_row);
        let index = self.wal.len();
        if let Some((idem_key, _)) = &idempotency {
            self.staged_keys
                .insert(idempotency_key(&plan, idem_key), index);
        }
        if !outbox.is_empty() {
            self.staged_outbox.push((index, Arc::clone(event)));
        }
        self.wal.push(WalRecord {
            position: event.position,
            plan_id: plan.into_bytes(),
            seq,
            event: encode_event(event),
            idempotency,
            outbox,
        });
        Ok(())
    }

    /// Re-creates the rows of one write-ahead record whose event redb lost
    /// (see `wal.rs`): the event exactly as signed and acknowledged, through
    /// [`Tables::stage_rows`] like an append. Fails (the store then refuses
    /// to open) unless the event extends its plan's chain where redb ends.
    /// The rows are staged: [`Tables::write_staged`] writes them.
    pub(super) fn replay(&mut self, record: WalRecord) -> Result<Arc<Event>, StoreError> {
        let plan = Uuid::from_bytes(record.plan_id);
        let key = event_key(&plan, record.seq);
        let event = event_from_record(&key, decode_event(&record.event)?)?;
        let row = self.head_row(&plan)?;
        // A deleted plan's id is never used again (as an append checks),
        // and a deletion checkpoints first, so no frame of it can follow.
        if row.is_none()
            && plan != super::admin::SYSTEM_PLAN
            && deleted::deleted(self.deleted.table()?, &plan)?.is_some()
        {
            return Err(StoreError(format!(
                "the write-ahead record at position {} names plan {plan}, which was deleted",
                record.position
            )));
        }
        let head = row.as_ref().map(|r| r.head);
        if event.position != record.position
            || event.seq != head.map_or(0, |h| h.last_seq) + 1
            || event.prev_hash != head.map(|h| h.last_signature)
        {
            return Err(StoreError(format!(
                "the write-ahead record at position {} ({plan}/{}) does not extend the plan's chain in the database",
                record.position, record.seq
            )));
        }
        let tail = self
            .tail_to_extend(&plan, row)?
            .map_err(|e| StoreError(format!("replaying {plan}/{}: {e:?}", record.seq)))?;
        let leaf = merkle::leaf_hash(chain::log_entry(&event).as_bytes());
        let event = Arc::new(event);
        self.stage_rows(&event, head, tail, leaf, record.idempotency, record.outbox)?;
        Ok(event)
    }
}
