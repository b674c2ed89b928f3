//! The retention task: prunes delivered outbox rows and inbox (dedupe)
//! records older than `[federation] keep_days`, and idempotency records
//! older than `[limits] idempotency_keep_days`, once shortly after start and
//! then every hour. Each step is one bounded write transaction in the store
//! (see `journal::store` retention), so appends never wait behind a long
//! prune; undelivered and dead outbox rows are never pruned.
//!
//! With `[retention] payload_max_age_days`, each pass also redacts the
//! payloads of older events, at most `MAX_REDACTIONS` per writer
//! transaction, each recorded in the system journal by `"retention"`.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Limits;
use logbook_base::reloadable::Reloadable;
use logbook_journal::store::redact::{MAX_REDACTIONS, RedactError, RedactedBy, Redaction};
use logbook_journal::store::{AsyncStore, PruneStep, Store, StoreError};

/// Time between two passes.
const INTERVAL: Duration = Duration::from_secs(3600);
/// Rows one write transaction looks at.
const BATCH: usize = 1000;
const DAY_MS: i64 = 86_400_000;

/// `replay_window_ms`: how long a received federation message stays
/// acceptable (twice `[federation] timestamp_window_secs`, its sender's
/// clock either way); its inbox record, by which a replay of it is known,
/// is kept at least that long, whatever `keep_days` says.
pub(crate) fn spawn(
    store: AsyncStore,
    fed_keep_days: u64,
    replay_window_ms: i64,
    limits: Arc<Reloadable<Limits>>,
    payloads: Option<PayloadRetention>,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            let idem_keep_days = limits.current().idempotency_keep_days;
            let stop = shutdown.clone();
            let pass = store
                .run(move |s| prune_all(s, fed_keep_days, replay_window_ms, idem_keep_days, &stop))
                .await;
            match pass {
                Ok([0, 0, 0]) => {}
                Ok([outbox, inbox, idempotency]) => {
                    tracing::info!(
                        outbox,
                        inbox,
                        idempotency,
                        "retention pass pruned old records"
                    );
                }
                Err(e) => tracing::error!(error = %e, "retention pass failed"),
            }
            if let Some(payloads) = &payloads {
                match redact_old_payloads(&store, payloads, &shutdown).await {
                    Ok(0) => {}
                    Ok(redacted) => {
                        tracing::info!(redacted, "retention pass redacted old payloads");
                    }
                    Err(e) => tracing::error!(error = %e, "redacting old payloads failed"),
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(INTERVAL) => {}
            }
        }
    });
}

/// Keeping `days` means pruning what is older than now minus `days`.
fn cutoff(days: u64) -> i64 {
    let now = logbook_journal::event::Timestamp::now().millis();
    let days = i64::try_from(days).unwrap_or(i64::MAX / DAY_MS);
    now.saturating_sub(days.saturating_mul(DAY_MS))
}

/// The inbox's cutoff: `fed_cutoff`, but never within the replay window,
/// where a message could still be accepted again if its record were gone.
fn inbox_cutoff(fed_cutoff: i64, replay_window_ms: i64) -> i64 {
    let now = logbook_journal::event::Timestamp::now().millis();
    fed_cutoff.min(now.saturating_sub(replay_window_ms))
}

/// One pass over the three tables; returns how many rows each lost.
fn prune_all(
    store: &Store,
    fed_keep_days: u64,
    replay_window_ms: i64,
    idem_keep_days: u64,
    shutdown: &CancellationToken,
) -> Result<[usize; 3], StoreError> {
    let fed_cutoff = cutoff(fed_keep_days);
    let outbox = prune(shutdown, |after| {
        store.outbox().prune(after, fed_cutoff, BATCH)
    })?;
    let inbox_cutoff = inbox_cutoff(fed_cutoff, replay_window_ms);
    let inbox = prune(shutdown, |after| {
        store.inbox().prune(after, inbox_cutoff, BATCH)
    })?;
    let idem_cutoff = cutoff(idem_keep_days);
    let idempotency = prune(shutdown, |after| {
        store.prune_idempotency(after, idem_cutoff, BATCH)
    })?;
    Ok([outbox, inbox, idempotency])
}

/// Runs `step` from the start of its table to the end, batch by batch.
fn prune(
    shutdown: &CancellationToken,
    mut step: impl FnMut(Option<&[u8]>) -> Result<PruneStep, StoreError>,
) -> Result<usize, StoreError> {
    let mut removed = 0;
    let mut after: Option<Vec<u8>> = None;
    loop {
        if shutdown.is_cancelled() {
            return Ok(removed);
        }
        let done = step(after.as_deref())?;
        removed += done.removed;
        match done.next {
            Some(next) => after = Some(next),
            None => return Ok(removed),
        }
    }
}

/// `[retention] payload_max_age_days`, as the task uses it.
#[derive(Debug, Clone)]
pub(crate) struct PayloadRetention {
    pub(crate) max_age_ms: i64,
    /// The configured number, for the recorded reason.
    pub(crate) days: f64,
}

/// Redacts every payload older than the cutoff, one bounded writer
/// transaction at a time. Events that a concurrent admin redacted, or
/// whose plan was deleted meanwhile, are skipped.
async fn redact_old_payloads(
    store: &AsyncStore,
    retention: &PayloadRetention,
    shutdown: &CancellationToken,
) -> Result<u64, RedactError> {
    let cutoff = logbook_journal::event::Timestamp::now()
        .millis()
        .saturating_sub(retention.max_age_ms);
    let reason = format!("retention: older than {} days", retention.days);
    let mut redacted = 0;
    let mut cursor = None;
    loop {
        if shutdown.is_cancelled() {
            return Ok(redacted);
        }
        let (found, next) = store
            .run(move |s| s.payloads_older_than(cutoff, cursor, MAX_REDACTIONS))
            .await?;
        if !found.is_empty() {
            let batch = found
                .into_iter()
                .map(|(plan_id, seq)| Redaction {
                    plan_id,
                    seq,
                    reason: reason.clone(),
                    by: RedactedBy::Retention,
                })
                .collect();
            for outcome in store.redact(batch).await? {
                match outcome {
                    Ok(_) => redacted += 1,
                    Err(
                        RedactError::AlreadyRedacted
                        | RedactError::NotFound
                        | RedactError::PlanDeleted { .. },
                    ) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        match next {
            Some(next) => cursor = Some(next),
            None => return Ok(redacted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A received message's record outlives the window in which the same
    /// signed bytes would be accepted again, even with `keep_days = 0`.
    #[test]
    fn the_inbox_keeps_what_a_replay_could_still_match() {
        let window = 600_000;
        let keep_none = cutoff(0);
        assert!(inbox_cutoff(keep_none, window) <= keep_none - window);
        // A longer keep_days than the window is kept as it says.
        let keep_month = cutoff(30);
        assert_eq!(inbox_cutoff(keep_month, window), keep_month);
    }
}
