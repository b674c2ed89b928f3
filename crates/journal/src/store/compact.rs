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
    /// Runs in the writer thread, so no append is in flight. Holding the
    /// handle's lock keeps every other transaction from beginning, and a
    /// write transaction on the old file waits for any that began before.
    pub(super) fn compact(&self) -> Result<Compacted, StoreError> {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        let old = current.clone().ok_or_else(|| self.health().refusal())?;
        let bytes_before = file_len(&self.path)?;
        let fresh = self.path.with_extension("redb.compacting");
        let rows = {
            let exclusive = old.begin_write()?;
            let read = old.begin_read()?;
            let copied = copy_into(&fresh, &read);
            exclusive.abort()?;
            copied.inspect_err(|_| {
                let _ = std::fs::remove_file(&fresh);
            })?
        };
        // The old handle goes before the new file takes its name; readers
        // that still hold a transaction on it keep reading the old inode.
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
        if let Err(e) = install() {
            let _ = std::fs::remove_file(&fresh);
            // The old file is still in place: the writer reopens it.
            let e = StoreError::with_fault(
                format!("installing the compacted {}: {e}", self.path.display()),
                super::Fault::Io,
            );
            self.set_health(super::Health::Failed);
            return Err(e);
        }
        match open_database(&self.path) {
            Ok(db) => *current = Some(Arc::new(db)),
            Err(e) => {
                self.set_health(super::Health::Failed);
                return Err(e);
            }
        }
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
        .and_then(|backend| redb::Builder::new().create_with_backend(backend))
        .map_err(|e| StoreError(format!("creating {}: {e}", path.display())))?;
    let mut write = out.begin_write()?;
    write.set_durability(Durability::Immediate)?;
    let rows = super::tables::copy_all(read, &write)?;
    write.commit()?;
    // Closing writes the clean-shutdown header, so the copy opens without repair.
    out.close()?;
    keep.sync_all().map_err(io)?;
    Ok(rows)
}
