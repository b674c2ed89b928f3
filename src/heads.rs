//! The heads-log task (issue 11): every `[checkpoints] interval_secs`,
//! one durable transaction appends an entry for each plan whose head moved
//! since its last entry (`Store::append_heads`, at most
//! `HEADS_PASS_LIMIT` per pass; the rest wait for the next). A plan
//! deletion does not wait: its entry is written by the deletion itself.

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use logbook_journal::store::{AsyncStore, HEADS_PASS_LIMIT, StoreError};

/// Starts the task; the receiver sees the heads log's size after each
/// pass that found it grown (what a witness sender waits on).
pub(crate) fn spawn(
    store: AsyncStore,
    interval: Duration,
    shutdown: CancellationToken,
) -> watch::Receiver<u64> {
    // Not known until the first read: not 0, which witnessing health reads
    // as an empty heads log (nothing to witness, so never stale).
    let (grown, watch) = watch::channel(u64::MAX);
    tokio::spawn(async move {
        loop {
            // The size is read even when the pass fails, so that witnessing
            // health (which takes 0 as "nothing to witness") sees the real
            // size rather than the channel's first "unknown".
            let pass = store
                .run(|s| Ok::<_, StoreError>((s.append_heads(HEADS_PASS_LIMIT), s.heads_size()?)))
                .await;
            match pass {
                Ok((appended, size)) => {
                    match appended {
                        Ok(0) => {}
                        Ok(appended) => tracing::debug!(appended, size, "heads log grew"),
                        Err(e) => tracing::error!(error = %e, "heads log pass failed"),
                    }
                    grown.send_if_modified(|old| std::mem::replace(old, size) != size);
                }
                Err(e) => tracing::error!(error = %e, "heads log pass failed"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    });
    watch
}
