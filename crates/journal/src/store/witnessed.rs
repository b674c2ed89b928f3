//! Being witnessed: what each witness last cosigned of our heads log.
//!
//! The sender (`src/federation/witnessing.rs`) proves every new heads
//! checkpoint consistent with the size a witness last cosigned, so that
//! size must outlive a restart; otherwise a restarted sender would send
//! `old 0` and learn the size from a 409, one wasted round trip per
//! witness. The witness itself is the authority: on a 409 the sender takes
//! the size it reports, and a rollback of this table cannot make a witness
//! cosign anything it would not cosign anyway.
//!
//! Table:
//! - `witnessed_by`: witness name (`peer:<instance id>` or the configured
//!   name of an outside witness) → [`WitnessedBy`].
//!
//! A peer's witnessing switch (`logbook admin peers witness PEER on|off`)
//! lives here too: it is the sender's setting, and keeping it beside the
//! sender's state leaves the peer record alone.

use redb::{Durability, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, decode, encode};

pub(super) const WITNESSED_BY: TableDefinition<&str, &[u8]> = TableDefinition::new("witnessed_by");

/// Longest witness name kept (`peer:` plus an instance id, or a configured name).
pub const MAX_WITNESS_NAME: usize = 200;

/// The sender's state for one witness.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessedBy {
    /// Heads-log size the witness last cosigned (0: none yet).
    pub size: u64,
    /// Unix seconds, by our clock, when that cosignature arrived (0: none
    /// yet): liveness is never taken from the witness's own timestamp.
    pub cosigned_at: u64,
    /// `logbook admin peers witness PEER on|off`; `None` follows the
    /// config (`[[peers]] witness`, true by default).
    pub switch: Option<bool>,
}

impl Store {
    /// The sender's state for every witness it has recorded, by name.
    pub fn witnessed_by(&self) -> Result<Vec<(String, WitnessedBy)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(WITNESSED_BY)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.push((k.value().to_string(), decode(v.value())?));
        }
        Ok(out)
    }

    /// The sender's state for `witness` (the default when none is kept).
    pub fn witnessed_by_one(&self, witness: &str) -> Result<WitnessedBy, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(WITNESSED_BY)?;
        table
            .get(witness)?
            .map(|v| decode(v.value()))
            .transpose()
            .map(Option::unwrap_or_default)
    }

    /// Changes `witness`'s state with `change`, durably, and returns it.
    pub fn update_witnessed_by(
        &self,
        witness: &str,
        change: impl FnOnce(&mut WitnessedBy),
    ) -> Result<WitnessedBy, StoreError> {
        if witness.is_empty() || witness.len() > MAX_WITNESS_NAME {
            return Err(StoreError(format!(
                "a witness name has 1 to {MAX_WITNESS_NAME} bytes"
            )));
        }
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let state = {
            let mut table = txn.open_table(WITNESSED_BY)?;
            let mut state: WitnessedBy = table
                .get(witness)?
                .map(|v| decode(v.value()))
                .transpose()?
                .unwrap_or_default();
            change(&mut state);
            table.insert(witness, encode(&state).as_slice())?;
            state
        };
        self.db.commit(txn)?;
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_behind_its_version_byte() {
        let state = WitnessedBy {
            size: 7,
            cosigned_at: 1_764_000_000,
            switch: Some(false),
        };
        let bytes = encode(&state);
        assert_eq!(bytes[0], crate::store::RECORD_VERSION);
        assert_eq!(decode::<WitnessedBy>(&bytes).unwrap(), state);
        assert!(decode::<WitnessedBy>(&[99, 0]).is_err());
    }
}
