//! The retention task: prunes delivered outbox rows and inbox (dedupe)
//! records older than `[federation] keep_days`, and idempotency records
//! older than `[limits] idempotency_keep_days`, once shortly after start and
//! then every hour. Each step is one bounded write transaction in the store
//! (see `journal::store` retention), so appends never wait behind a long
//! prune; undelivered and dead outbox rows are never pruned.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Limits;
use logbook_base::reloadable::Reloadable;
use logbook_journal::store::{AsyncStore, PruneStep, Store, StoreError};

/// Time between two passes.
const INTERVAL: Duration = Duration::from_secs(3600);
/// Rows one write transaction looks at.
const BATCH: usize = 1000;
const DAY_MS: i64 = 86_400_000;

pub(crate) fn spawn(
    store: AsyncStore,
    fed_keep_days: u64,
    limits: Arc<Reloadable<Limits>>,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            let idem_keep_days = limits.current().idempotency_keep_days;
            let stop = shutdown.clone();
            let pass = store
                .run(move |s| prune_all(s, fed_keep_days, idem_keep_days, &stop))
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

/// One pass over the three tables; returns how many rows each lost.
fn prune_all(
    store: &Store,
    fed_keep_days: u64,
    idem_keep_days: u64,
    shutdown: &CancellationToken,
) -> Result<[usize; 3], StoreError> {
    let fed_cutoff = cutoff(fed_keep_days);
    let outbox = prune(shutdown, |after| {
        store.outbox().prune(after, fed_cutoff, BATCH)
    })?;
    let inbox = prune(shutdown, |after| {
        store.inbox().prune(after, fed_cutoff, BATCH)
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
