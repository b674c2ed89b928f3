//! Compaction: the database file rewritten with only its live rows.
//!
//! redb reuses freed pages but does not wipe them, so bytes of an erased
//! payload (or a deleted plan) can linger in free pages of `journal.redb`
//! until they are overwritten. `Database::compact` moves pages and
//! truncates the file, but it gives no promise about what free pages that
//! stay in the middle of the file hold. So compaction here copies every
//! table into a fresh file (as a backup does), fsyncs it, renames it over
//! the old one and fsyncs the directory: the new file holds nothing but
//! the rows in force. See `docs/operations.md`, "Erasing payloads".

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use redb::{Database, Durability, ReadableDatabase};

use super::handle::{Db, open_database};
use super::{Job, Store, StoreError};

/// What a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub rows: u64,
}

impl Store {
    /// Rewrites the database file with only its live rows (see the module
    /// docs). Appends wait meanwhile; reads wait for the new file.
    pub async fn compact(&self) -> Result<Compacted, StoreError> {
        let (reply, wait) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Job::Compact(reply))
            .await
            .map_err(|_| StoreError("the journal writer has stopped".into()))?;
        wait.await
            .unwrap_or_else(|_| Err(StoreError("the journal writer has stopped".into())))
    }
}

fn file_len(path: &Path) -> Result<u64, StoreError> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| StoreError(format!("reading the size of {}: {e}", path.display())))
}

impl Db {
    /// Runs in the writer thread, so no append is in flight. A write
    /// transaction on the old file waits for any other writer and keeps new
    /// ones out while the live rows are copied; readers go on meanwhile.
    /// The handle's lock is held only to switch files, and the generation
    /// bump makes a writer that waited on the old file begin again on the
    /// new one (`Db::begin_write`), so no commit lands in the old file.
    pub(super) fn compact(&self) -> Result<Compacted, StoreError> {
        let old = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| self.health().refusal())?;
        let bytes_before = file_len(&self.path)?;
        let fresh = self.path.with_extension("redb.compacting");
        let exclusive = old.begin_write()?;
        let rows = copy_into(&fresh, &old.begin_read()?).inspect_err(|_| {
            let _ = std::fs::remove_file(&fresh);
        })?;
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        // Readers that still hold a transaction on the old file keep reading
        // its inode; its close waits for `exclusive`.
        *current = None;
        drop(old);
        let install = || -> std::io::Result<()> {
            std::fs::rename(&fresh, &self.path)?;
            let dir = self
                .path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            std::fs::File::open(dir)?.sync_all()
        };
        let installed = install()
            .map_err(|e| {
                let _ = std::fs::remove_file(&fresh);
                StoreError::with_fault(
                    format!("installing the compacted {}: {e}", self.path.display()),
                    super::Fault::Io,
                )
            })
            .and_then(|()| open_database(&self.path));
        // Either way the old handle is out of service: writers waiting on
        // it must begin again.
        self.generation.fetch_add(1, Ordering::AcqRel);
        match installed {
            Ok(db) => *current = Some(Arc::new(db)),
            // The writer reopens whichever file holds the name.
            Err(e) => {
                self.set_health(super::Health::Failed);
                drop(current);
                let _ = exclusive.abort();
                return Err(e);
            }
        }
        drop(current);
        // Nothing was written in it; it only kept other writers out.
        let _ = exclusive.abort();
        Ok(Compacted {
            bytes_before,
            bytes_after: file_len(&self.path)?,
            rows,
        })
    }
}

/// Copies every table of `read` into a new file at `path` (mode 0600),
/// committed, closed and fsynced.
fn copy_into(path: &PathBuf, read: &redb::ReadTransaction) -> Result<u64, StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e: std::io::Error| StoreError(format!("creating {}: {e}", path.display()));
    // A file left by a crash mid-compaction holds nothing the store needs.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    let keep = file.try_clone().map_err(io)?;
    let out: Database = redb::backends::FileBackend::new(file)
        .and_then(|backend| {
            redb::Builder::new()
                .set_cache_size(super::handle::CACHE_BYTES)
                .create_with_backend(backend)
        })
        .map_err(|e| StoreError(format!("creating {}: {e}", path.display())))?;
    let mut write = out.begin_write()?;
    write.set_durability(Durability::Immediate)?;
    super::handle::commit_settings(&mut write, false);
    let rows = super::tables::copy_all(read, &write)?;
    write.commit()?;
    // Closing writes the clean-shutdown header, so the copy opens without repair.
    out.close()?;
    keep.sync_all().map_err(io)?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::super::admin::{Scope, StoredToken};
    use super::super::{AppendRequest, AsyncStore};
    use crate::chain::CanonicalPayload;
    use crate::keys::Keyring;
    use uuid::Uuid;

    /// Appends (the writer) and token writes (outside it) run while the
    /// store is compacted again and again: none is lost, in the running
    /// store or after a reopen, and the file holds only live rows.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_during_compaction_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.redb");
        let keyring = std::sync::Arc::new(Keyring::from_secret(b"test".to_vec()));
        let (store, writer) =
            super::Store::open(&path, keyring.clone(), crate::fanout::fanout()).unwrap();
        let store = AsyncStore::new(store);
        let plan = Uuid::from_u128(7);
        let appends = {
            let store = store.clone();
            tokio::spawn(async move {
                for n in 0..200u64 {
                    store
                        .append(AppendRequest {
                            plan_id: plan,
                            event_type: "step.started".into(),
                            actor: None,
                            payload: CanonicalPayload::new(&serde_json::json!({ "n": n })),
                            expected_seq: None,
                            idempotency: None,
                        })
                        .await
                        .unwrap();
                }
            })
        };
        let tokens = {
            let store = store.clone();
            tokio::spawn(async move {
                for n in 0..100u8 {
                    let token = StoredToken {
                        id: format!("t{n}"),
                        name: format!("token-{n}"),
                        sha256: [n; 32],
                        scopes: vec![Scope::Read],
                        created_at: 0,
                    };
                    store
                        .run(move |s| s.insert_token(&token))
                        .await
                        .unwrap()
                        .unwrap();
                }
            })
        };
        for _ in 0..6 {
            let done = store.compact().await.unwrap();
            assert!(done.bytes_after > 0);
        }
        appends.await.unwrap();
        tokens.await.unwrap();
        let count = |store: &AsyncStore| {
            let store = store.clone();
            async move {
                store
                    .run(move |s| {
                        Ok::<_, super::StoreError>((
                            s.head(&plan)?.map(|h| h.last_seq),
                            s.stored_tokens()?.len(),
                            s.verify_plan(&plan, &s.keyring())?.is_valid(),
                        ))
                    })
                    .await
                    .unwrap()
            }
        };
        assert_eq!(count(&store).await, (Some(200), 100, true));
        drop(store);
        tokio::task::spawn_blocking(move || writer.shutdown())
            .await
            .unwrap();
        let (store, writer) = super::Store::open(&path, keyring, crate::fanout::fanout()).unwrap();
        let store = AsyncStore::new(store);
        assert_eq!(count(&store).await, (Some(200), 100, true));
        assert!(!dir.path().join("j.redb.compacting").exists());
        drop(store);
        tokio::task::spawn_blocking(move || writer.shutdown())
            .await
            .unwrap();
    }
}
