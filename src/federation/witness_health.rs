//! How witnessed this instance is: the quorum's age and the refusals, for
//! `logbook admin status`, `/readyz` and `/metrics`. A stale quorum is a
//! warning, never a stop of appends.

use std::time::Duration;

use super::Federation;
use super::witnessing::{WitnessStatus, unix_now};

/// Quorum health: how long ago `quorum` distinct witnesses had each
/// cosigned a checkpoint (of each witness's latest cosignature, the
/// `quorum`-th most recent; `None`: never). Not always one checkpoint, but
/// each cosignature vouches for every smaller size of that history.
/// Targets whose cosignatures came with one key count once, at their
/// latest: a peer may publish another witness's key and relay its
/// cosignatures. A target whose key was not read yet in this run counts
/// as its own.
pub(crate) fn quorum_age(statuses: &[WitnessStatus], quorum: usize, now: u64) -> Option<u64> {
    if quorum == 0 {
        return Some(0);
    }
    let mut by_key: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    let mut times: Vec<u64> = Vec::new();
    for status in statuses.iter().filter(|s| s.cosigned_at > 0) {
        match &status.key {
            Some(key) => {
                let latest = by_key.entry(key).or_default();
                *latest = (*latest).max(status.cosigned_at);
            }
            None => times.push(status.cosigned_at),
        }
    }
    times.extend(by_key.into_values());
    times.sort_unstable_by(|a, b| b.cmp(a));
    times.get(quorum - 1).map(|&t| now.saturating_sub(t))
}

/// A quorum whose newest cosignatures are older than this is stale: with
/// healthy witnesses they are refreshed every [`REFRESH`].
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(3 * 60);

/// How witnessed this instance is now: for `logbook admin status`,
/// `/readyz` and `/metrics`. A stale quorum is a warning, never a stop.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Health {
    pub(crate) quorum: usize,
    /// Seconds since `quorum` witnesses had each cosigned (`None`: never).
    pub(crate) quorum_age_secs: Option<u64>,
    pub(crate) stale: bool,
    /// The heads log is empty (no plan has events yet): there is nothing
    /// to witness, so nothing can be stale.
    pub(crate) nothing_to_witness: bool,
    /// Witnesses that refused our history: a rollback or fork of this instance.
    pub(crate) refused: Vec<String>,
    pub(crate) witnesses: Vec<WitnessStatus>,
}

impl Federation {
    /// See [`Health`].
    pub(crate) fn witness_health(&self) -> Health {
        let quorum = self.witness_settings.current().quorum;
        let witnesses = self.witnessing.status();
        let quorum_age_secs = quorum_age(&witnesses, quorum, unix_now());
        // The heads log's size after the last pass that read it (u64::MAX
        // until one did: unknown is not empty).
        let nothing_to_witness = self
            .heads
            .get()
            .is_some_and(|heads| *heads.grown.borrow() == 0);
        Health {
            quorum,
            stale: !nothing_to_witness
                && quorum_age_secs.is_none_or(|age| age > STALE_AFTER.as_secs()),
            nothing_to_witness,
            quorum_age_secs,
            refused: witnesses
                .iter()
                .filter(|w| w.refused.is_some())
                .map(|w| w.name.clone())
                .collect(),
            witnesses,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosigned(at: u64) -> WitnessStatus {
        WitnessStatus {
            cosigned_at: at,
            ..WitnessStatus::default()
        }
    }

    #[test]
    fn the_quorum_age_is_that_of_the_kth_newest_cosignature() {
        let s = [cosigned(100), cosigned(0), cosigned(90), cosigned(95)];
        assert_eq!(quorum_age(&s, 1, 110), Some(10));
        assert_eq!(quorum_age(&s, 2, 110), Some(15));
        assert_eq!(quorum_age(&s, 3, 110), Some(20));
        assert_eq!(quorum_age(&s, 4, 110), None);
        assert_eq!(quorum_age(&s, 0, 110), Some(0));
        assert_eq!(quorum_age(&[], 1, 110), None);
    }

    #[test]
    fn targets_answering_with_one_key_are_one_witness() {
        let keyed = |at: u64, key: &str| WitnessStatus {
            key: Some(key.into()),
            ..cosigned(at)
        };
        let s = [
            keyed(100, "w"),
            keyed(95, "w"),
            keyed(90, "v"),
            cosigned(80),
        ];
        assert_eq!(quorum_age(&s, 1, 110), Some(10));
        assert_eq!(quorum_age(&s, 2, 110), Some(20));
        assert_eq!(quorum_age(&s, 3, 110), Some(30));
        assert_eq!(quorum_age(&s, 4, 110), None);
    }
}
