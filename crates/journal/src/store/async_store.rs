//! The blocking boundary: the store as async code holds it.
//!
//! Every [`Store`] method that reads or writes redb blocks its thread, for
//! as long as a read transaction or an fsync takes. On a tokio worker that
//! stalls every connection the worker serves. So async code never holds a
//! `Store`: it holds an [`AsyncStore`], which does not hand one out. Storage
//! work runs inside [`AsyncStore::run`], on tokio's blocking pool, and the
//! type system rules out the mistake instead of a rule callers must recall.
//!
//! Directly reachable are only the calls that never wait on the disk on the
//! caller's thread: queuing work for the writer thread (`append`, `redact`,
//! `delete_plan`), and in-memory state (keyring, stats, health, watches).

use std::sync::Arc;

use tokio::sync::watch;
use uuid::Uuid;

use super::admin::{DeleteError, Deleted};
use super::{AppendError, AppendRequest, Appended, Health, Store, StoreError, WriterStats};
use crate::keys::Keyring;

/// A handle to the store for async code. Cheap to clone.
#[derive(Clone)]
pub struct AsyncStore(Arc<Store>);

impl AsyncStore {
    pub fn new(store: Store) -> AsyncStore {
        AsyncStore(Arc::new(store))
    }

    /// Runs `f` with the store on tokio's blocking pool. A panic in `f`
    /// comes back as a [`StoreError`] (an internal error), never as a
    /// dropped request.
    pub async fn run<T, E>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let store = self.0.clone();
        match tokio::task::spawn_blocking(move || f(&store)).await {
            Ok(result) => result,
            Err(e) => Err(StoreError::from_join(&e).into()),
        }
    }

    /// Appends one event. Returns once its transaction is committed and fsynced.
    pub async fn append(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        self.0.append(request).await
    }

    /// Deletes a plan and records a tombstone, in one writer transaction.
    pub async fn delete_plan(
        &self,
        plan_id: Uuid,
        who: serde_json::Value,
    ) -> Result<Deleted, DeleteError> {
        self.0.delete_plan(plan_id, who).await
    }

    /// Erases payloads, each recorded in the system journal, in one writer
    /// transaction (see `store::redact`).
    pub async fn redact(
        &self,
        batch: Vec<super::redact::Redaction>,
    ) -> super::redact::RedactOutcomes {
        self.0.redact(batch).await
    }

    /// [`Store::redact_for_test`].
    #[cfg(test)]
    pub(crate) async fn redact_for_test(&self, plan: uuid::Uuid, seq: u64) {
        self.0.redact_for_test(plan, seq).await;
    }

    /// Rewrites the database file with only its live rows, in the writer
    /// thread (see `store::compact`).
    pub async fn compact(&self) -> Result<super::Compacted, StoreError> {
        self.0.compact().await
    }

    /// The keyring in force: it signs new events and verifies old ones.
    pub fn keyring(&self) -> Arc<Keyring> {
        self.0.keyring()
    }

    /// Makes `keyring` sign every batch from the next one on.
    pub fn replace_keyring(&self, keyring: Keyring) {
        self.0.replace_keyring(keyring);
    }

    /// Appends waiting for the writer right now.
    pub fn queue_depth(&self) -> usize {
        self.0.queue_depth()
    }

    /// Whether appends can commit right now (for `/readyz`).
    pub fn health(&self) -> Health {
        self.0.health()
    }

    /// The writer's counters (commits, last batch size and time).
    pub fn stats(&self) -> &WriterStats {
        &self.0.stats
    }

    /// Sets the per-peer quota on stored received messages, in bytes.
    pub fn set_peer_quota(&self, bytes: u64) {
        self.0.inbox().set_peer_quota(bytes);
    }

    /// Wakes when rows are added to any outbox, or a peer changes.
    pub fn outbox_watch(&self) -> watch::Receiver<u64> {
        self.0.outbox().watch()
    }

    /// Wakes when dead messages are requeued.
    pub fn requeue_watch(&self) -> watch::Receiver<u64> {
        self.0.outbox().requeue_watch()
    }

    /// How many redactions and plan deletions have changed open outbox
    /// rows (`Outbox::rewrites`).
    pub fn outbox_rewrites(&self) -> u64 {
        self.0.outbox().rewrites()
    }

    /// Wakes when messages are received.
    pub fn inbox_watch(&self) -> watch::Receiver<u64> {
        self.0.inbox().watch()
    }
}
