//! What this instance keeps as a witness of its peers' heads logs
//! (c2sp.org/tlog-witness): the latest checkpoint it cosigned per origin,
//! and the evidence of logs that contradicted it.
//!
//! Tables:
//! - `witness_latest`: origin → [`WitnessLatest`], replaced when a newer
//!   consistent checkpoint is cosigned. The witness persists it (fsync)
//!   before it answers with the cosignature.
//! - `witness_owners`: origin → the instance id of the peer whose checkpoint
//!   was last cosigned for it, written with `witness_latest`: an origin
//!   stays bound to that peer while it is active, whatever another peer's
//!   document claims (or when its own cannot be read after a restart).
//! - `witness_evidence`: SHA-256(origin ‖ 0 ‖ kind ‖ 0 ‖ new note) →
//!   [`WitnessEvidence`]: the same refused note, resent, is kept once.
//!   Evidence is never overwritten; beyond its caps it is counted and
//!   logged by the caller, not stored. Forks and the other kinds have caps
//!   of their own ([`MAX_EVIDENCE`] in all, [`MAX_EVIDENCE_PER_ORIGIN`] per
//!   origin, each): anyone can replay a log's old checkpoints (a rollback)
//!   or send its new one with a junk proof, but only the log can sign a
//!   fork, so those rows must never crowd a fork out.
//!
//! The caller serialises requests per origin, so that a check and the
//! update after it cannot interleave with another request's.

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Store, StoreError, decode, encode};

pub(super) const WITNESS_LATEST: TableDefinition<&str, &[u8]> =
    TableDefinition::new("witness_latest");
pub(super) const WITNESS_EVIDENCE: TableDefinition<&[u8; 32], &[u8]> =
    TableDefinition::new("witness_evidence");
pub(super) const WITNESS_OWNERS: TableDefinition<&str, &str> =
    TableDefinition::new("witness_owners");

/// Most evidence rows kept of forks, and as many of the other kinds.
pub const MAX_EVIDENCE: usize = 10_000;

/// Most evidence rows kept for one origin, of forks and of the other kinds
/// each.
pub const MAX_EVIDENCE_PER_ORIGIN: usize = 100;

/// The `kind` of evidence that proves itself: two checkpoints of one size
/// with different roots, both signed by the log.
pub const FORK: &str = logbook_tlog::witness::EvidenceKind::Fork.as_str();

/// Rows of `evidence`'s class (forks, or the rest) kept in all, and for its
/// origin.
fn kept_of_class(
    table: &impl ReadableTable<&'static [u8; 32], &'static [u8]>,
    evidence: &WitnessEvidence,
) -> Result<(usize, usize), StoreError> {
    let fork = evidence.kind == FORK;
    let (mut all, mut of_origin) = (0, 0);
    for row in table.iter()? {
        let kept = decode::<WitnessEvidence>(row?.1.value())?;
        if (kept.kind == FORK) == fork {
            all += 1;
            if kept.origin == evidence.origin {
                of_origin += 1;
            }
        }
    }
    Ok((all, of_origin))
}
/// Whether `evidence` is in `table` already, or its class's caps are
/// reached, or it would be kept.
fn room(
    table: &impl ReadableTable<&'static [u8; 32], &'static [u8]>,
    evidence: &WitnessEvidence,
) -> Result<EvidenceStored, StoreError> {
    if table.get(&evidence.key())?.is_some() {
        return Ok(EvidenceStored::Known);
    }
    let (all, of_origin) = kept_of_class(table, evidence)?;
    // One origin (whose old checkpoints anyone may replay) cannot crowd
    // out the evidence against another.
    Ok(
        if all >= MAX_EVIDENCE || of_origin >= MAX_EVIDENCE_PER_ORIGIN {
            EvidenceStored::Full
        } else {
            EvidenceStored::New
        },
    )
}

/// Longest origin stored (a checkpoint's first line).
pub const MAX_ORIGIN_BYTES: usize = 1024;

/// The latest checkpoint cosigned for one origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessLatest {
    pub size: u64,
    pub root: [u8; 32],
    /// The log's signed note, as received.
    pub note: String,
    /// Unix ms of the cosignature.
    pub cosigned_at: i64,
}

/// One log this instance witnesses, as `logbook admin status` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WitnessedLog {
    pub origin: String,
    /// The peer it was last cosigned for (none for a build that did not
    /// record it).
    pub owner: Option<String>,
    /// The checkpoint cosigned last.
    pub size: u64,
    /// Unix ms of that cosignature.
    pub cosigned_at: i64,
    /// Evidence rows kept against the log.
    pub evidence: usize,
}

/// Most logs one peer may have witnessed here: a peer starts a new log by
/// renaming it (`origin_prefix`), which an honest one does rarely, and the
/// latest checkpoint of each is kept for good (forgetting one would let its
/// log come back later from scratch, its old history unchecked).
pub const MAX_ORIGINS_PER_PEER: usize = 64;

/// Most logs [`Store::witnessed_logs`] lists: far more than there are
/// peers (each has one origin at a time).
pub const MAX_LISTED_LOGS: usize = 1000;

/// What [`Store::witnessed_logs`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WitnessedLogs {
    /// Every log with evidence, then the most recently cosigned others, at
    /// most [`MAX_LISTED_LOGS`] in all unless more have evidence.
    pub logs: Vec<WitnessedLog>,
    /// Logs without evidence past the bound, not listed.
    pub not_listed: usize,
}

/// The first member of a [`WitnessEvidence`] record, read without the
/// notes that follow it.
#[derive(Deserialize)]
struct EvidenceOrigin<'a> {
    origin: &'a str,
}

/// Two checkpoints, both signed by one log, that cannot both be true (or a
/// proof from the first that failed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessEvidence {
    pub origin: String,
    /// `rollback`, `fork` or `bad_proof`.
    pub kind: String,
    /// The note the witness had cosigned.
    pub cosigned_note: String,
    pub cosigned_size: u64,
    /// The note it refused.
    pub refused_note: String,
    pub refused_size: u64,
    /// Unix ms when it was refused.
    pub at: i64,
}

impl WitnessEvidence {
    /// One row per refused checkpoint: keyed by its text, not its bytes,
    /// so that the same checkpoint with extra signature lines (from keys
    /// nobody checks) is not a new row.
    fn key(&self) -> [u8; 32] {
        let text = match self.refused_note.find("\n\n") {
            Some(end) => &self.refused_note[..=end],
            None => self.refused_note.as_str(),
        };
        let mut hash = Sha256::new();
        for part in [self.origin.as_str(), self.kind.as_str(), text] {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        hash.finalize().into()
    }
}

/// Whether an evidence row was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvidenceStored {
    New,
    /// The same evidence was already kept.
    Known,
    /// [`MAX_EVIDENCE`] rows exist; this one was not kept.
    Full,
}

impl Store {
    /// The latest checkpoint cosigned for `origin`.
    pub fn witness_latest(&self, origin: &str) -> Result<Option<WitnessLatest>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(WITNESS_LATEST)?;
        table.get(origin)?.map(|v| decode(v.value())).transpose()
    }

    /// How many origins were last cosigned for `owner`, at most `limit`
    /// counted (reads every origin's owner until then).
    pub fn witness_origins_owned(&self, owner: &str, limit: usize) -> Result<usize, StoreError> {
        let txn = self.db.begin_read()?;
        let mut owned = 0;
        for row in txn.open_table(WITNESS_OWNERS)?.iter()? {
            if row?.1.value() == owner {
                owned += 1;
                if owned >= limit {
                    break;
                }
            }
        }
        Ok(owned)
    }

    /// The instance id of the peer whose checkpoint was last cosigned for
    /// `origin` (none for one cosigned by a build that did not record it).
    pub fn witness_owner(&self, origin: &str) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(WITNESS_OWNERS)?;
        Ok(table.get(origin)?.map(|v| v.value().to_string()))
    }

    /// Records `latest` as the checkpoint cosigned for `origin`, the log of
    /// the peer `owner`, durably.
    pub fn put_witness_latest(
        &self,
        origin: &str,
        latest: &WitnessLatest,
        owner: &str,
    ) -> Result<(), StoreError> {
        if origin.is_empty() || origin.len() > MAX_ORIGIN_BYTES {
            return Err(StoreError(format!(
                "a witnessed origin is 1 to {MAX_ORIGIN_BYTES} bytes"
            )));
        }
        let txn = self.db.begin_write()?;
        txn.open_table(WITNESS_LATEST)?
            .insert(origin, encode(latest).as_slice())?;
        txn.open_table(WITNESS_OWNERS)?.insert(origin, owner)?;
        self.db.commit(txn)
    }

    /// The logs this instance witnesses (only `owner`'s, if given), with
    /// the evidence kept against each: every one with evidence first, then
    /// the most recently cosigned, [`MAX_LISTED_LOGS`] in all unless more
    /// have evidence, so no other log can push evidence out of the list.
    /// Reads every witnessed origin (at most [`MAX_ORIGINS_PER_PEER`] per
    /// peer) and evidence row (only the origin of each): for `admin
    /// status`, and once per new log.
    pub fn witnessed_logs(&self, owner: Option<&str>) -> Result<WitnessedLogs, StoreError> {
        let txn = self.db.begin_read()?;
        let owners = txn.open_table(WITNESS_OWNERS)?;
        let mut evidence: std::collections::HashMap<String, usize> = Default::default();
        for row in txn.open_table(WITNESS_EVIDENCE)?.iter()? {
            let (_, value) = row?;
            let kept: EvidenceOrigin<'_> = decode(value.value())?;
            *evidence.entry(kept.origin.to_string()).or_default() += 1;
        }
        let mut logs = Vec::new();
        for row in txn.open_table(WITNESS_LATEST)?.iter()? {
            let (origin, value) = row?;
            let origin = origin.value().to_string();
            let held_by = owners.get(origin.as_str())?.map(|v| v.value().to_string());
            if owner.is_some_and(|o| held_by.as_deref() != Some(o)) {
                continue;
            }
            let latest: WitnessLatest = decode(value.value())?;
            logs.push(WitnessedLog {
                owner: held_by,
                size: latest.size,
                cosigned_at: latest.cosigned_at,
                evidence: evidence.get(&origin).copied().unwrap_or(0),
                origin,
            });
        }
        logs.sort_by(|a, b| {
            (b.evidence > 0, b.cosigned_at, &a.origin).cmp(&(
                a.evidence > 0,
                a.cosigned_at,
                &b.origin,
            ))
        });
        // Every log with evidence, and the newest others up to the bound.
        let with_evidence = logs.iter().take_while(|l| l.evidence > 0).count();
        let keep = with_evidence.max(MAX_LISTED_LOGS);
        let not_listed = logs.len().saturating_sub(keep);
        logs.truncate(keep);
        Ok(WitnessedLogs { logs, not_listed })
    }

    /// What [`Store::add_witness_evidence`] would do with `evidence` now (a
    /// read, no write): `New` if it would keep it.
    pub fn witness_evidence_room(
        &self,
        evidence: &WitnessEvidence,
    ) -> Result<EvidenceStored, StoreError> {
        let txn = self.db.begin_read()?;
        room(&txn.open_table(WITNESS_EVIDENCE)?, evidence)
    }

    /// Keeps `evidence` durably, once, within its class's caps.
    pub fn add_witness_evidence(
        &self,
        evidence: &WitnessEvidence,
    ) -> Result<EvidenceStored, StoreError> {
        let txn = self.db.begin_write()?;
        let stored = {
            let mut table = txn.open_table(WITNESS_EVIDENCE)?;
            let stored = room(&table, evidence)?;
            if stored == EvidenceStored::New {
                table.insert(&evidence.key(), encode(evidence).as_slice())?;
            }
            stored
        };
        if stored == EvidenceStored::New {
            self.db.commit(txn)?;
        }
        Ok(stored)
    }

    /// Every evidence row, oldest first (at most twice [`MAX_EVIDENCE`]).
    pub fn witness_evidence(&self) -> Result<Vec<WitnessEvidence>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(WITNESS_EVIDENCE)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            out.push(decode::<WitnessEvidence>(row?.1.value())?);
        }
        out.sort_by_key(|e| e.at);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn evidence(note: &str) -> WitnessEvidence {
        WitnessEvidence {
            origin: "logbook/b".into(),
            kind: "rollback".into(),
            cosigned_note: "logbook/b\n7\nAA==\n\n— x y\n".into(),
            cosigned_size: 7,
            refused_note: note.into(),
            refused_size: 3,
            at: 1,
        }
    }

    #[test]
    fn records_round_trip_and_evidence_is_kept_once() {
        let latest = WitnessLatest {
            size: 7,
            root: [3; 32],
            note: "note".into(),
            cosigned_at: 5,
        };
        assert_eq!(decode::<WitnessLatest>(&encode(&latest)).unwrap(), latest);
        let e = evidence("n1");
        assert_eq!(decode::<WitnessEvidence>(&encode(&e)).unwrap(), e);

        let dir = tempfile::tempdir().unwrap();
        let keyring = Arc::new(crate::keys::Keyring::from_secret(b"k".to_vec()));
        let fanout = crate::fanout::fanout();
        let (store, writer) = Store::open(&dir.path().join("j.redb"), keyring, fanout).unwrap();
        assert_eq!(store.witness_latest("logbook/b").unwrap(), None);
        assert_eq!(store.witness_owner("logbook/b").unwrap(), None);
        store.put_witness_latest("logbook/b", &latest, "b").unwrap();
        assert_eq!(
            store.witness_latest("logbook/b").unwrap(),
            Some(latest.clone())
        );
        assert_eq!(
            store.witness_owner("logbook/b").unwrap().as_deref(),
            Some("b")
        );
        assert!(store.put_witness_latest("", &latest, "b").is_err());
        assert_eq!(store.add_witness_evidence(&e).unwrap(), EvidenceStored::New);
        assert_eq!(
            store.add_witness_evidence(&e).unwrap(),
            EvidenceStored::Known
        );
        let other = evidence("n2");
        assert_eq!(
            store.add_witness_evidence(&other).unwrap(),
            EvidenceStored::New
        );
        assert_eq!(store.witness_evidence().unwrap().len(), 2);

        // Listed with its evidence first, then the newest; by owner too.
        for (origin, owner, at) in [("logbook/a", "a", 9), ("logbook/c", "b", 7)] {
            let newer = WitnessLatest {
                cosigned_at: at,
                ..latest.clone()
            };
            store.put_witness_latest(origin, &newer, owner).unwrap();
        }
        let listed = store.witnessed_logs(None).unwrap();
        let order: Vec<(&str, usize)> = listed
            .logs
            .iter()
            .map(|l| (l.origin.as_str(), l.evidence))
            .collect();
        assert_eq!(
            order,
            [("logbook/b", 2), ("logbook/a", 0), ("logbook/c", 0)]
        );
        assert_eq!(listed.not_listed, 0);
        assert_eq!(store.witness_origins_owned("b", 10).unwrap(), 2);
        assert_eq!(
            store.witness_origins_owned("b", 1).unwrap(),
            1,
            "counts up to the limit"
        );
        assert_eq!(store.witness_origins_owned("nobody", 10).unwrap(), 0);
        let of_b: Vec<String> = store
            .witnessed_logs(Some("b"))
            .unwrap()
            .logs
            .into_iter()
            .map(|l| l.origin)
            .collect();
        assert_eq!(of_b, ["logbook/b", "logbook/c"]);
        drop(writer);
    }

    /// Rollbacks (anyone can replay a log's old checkpoints) fill their own
    /// cap, never the room of a fork, which only the log can sign.
    #[test]
    fn rollbacks_never_crowd_out_a_fork() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = Arc::new(crate::keys::Keyring::from_secret(b"k".to_vec()));
        let fanout = crate::fanout::fanout();
        let (store, writer) = Store::open(&dir.path().join("j.redb"), keyring, fanout).unwrap();
        for n in 0..MAX_EVIDENCE_PER_ORIGIN {
            let row = evidence(&format!("rollback {n}"));
            assert_eq!(
                store.add_witness_evidence(&row).unwrap(),
                EvidenceStored::New
            );
        }
        let one_more = evidence("rollback past the cap");
        assert_eq!(
            store.add_witness_evidence(&one_more).unwrap(),
            EvidenceStored::Full
        );
        let fork = WitnessEvidence {
            kind: FORK.into(),
            ..evidence("a fork")
        };
        assert_eq!(
            store.add_witness_evidence(&fork).unwrap(),
            EvidenceStored::New
        );
        // Another origin has room of its own, of either kind.
        let elsewhere = WitnessEvidence {
            origin: "logbook/c".into(),
            ..evidence("rollback of c")
        };
        assert_eq!(
            store.add_witness_evidence(&elsewhere).unwrap(),
            EvidenceStored::New
        );
        drop(writer);
    }
}
