//! Restoring a backup's store into a data dir: copied under a temporary
//! name, fsynced and checked, then renamed into place (see
//! [`stage_restore`]). The backup container and the key files are the
//! binary's (`src/admin/restore.rs`).

use std::path::Path;

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::{EVENTS, HEADS, StoreError};

/// Installs a backup file (a bare store, as older builds wrote them) as the
/// store of `data_dir`. Refuses to overwrite an existing store; checks the
/// file is a readable store first.
pub fn restore(backup: &Path, data_dir: &Path) -> Result<(u64, Access), StoreError> {
    let staged = stage_restore(data_dir, |to| {
        let mut from = std::fs::File::open(backup)?;
        std::io::copy(&mut from, to)?;
        Ok(())
    })?;
    let access = staged.access().clone();
    Ok((staged.install()?, access))
}

/// The copy a restore stages in `data_dir` before it installs it.
fn staged_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join(format!("{}.restoring", super::DB_FILE))
}

/// Why a daemon must not start on `data_dir`: a restore is staging or was
/// interrupted there (its copy is still in the data dir). A restore writes
/// the backup's keys before it installs the journal, so a start in between
/// would begin a new, empty journal under the restored identity: a fork
/// of its history that witnesses refuse, and events appended to it lost
/// when the restore is finished.
pub fn unfinished_restore(data_dir: &Path) -> Option<String> {
    let staged = staged_path(data_dir);
    std::fs::symlink_metadata(&staged).ok().map(|_| {
        format!(
            "{} exists: a restore into this data dir is running or was interrupted; run the same `logbook restore` again (it keeps the keys it already wrote, and replaces the partial copy); if no restore is wanted, remove that file and the key files the restore wrote",
            staged.display()
        )
    })
}

/// A store copied into `<data_dir>/journal.redb.restoring`, fsynced and
/// checked, not yet installed. Dropping it removes the copy.
#[derive(Debug)]
pub struct StagedStore {
    partial: std::path::PathBuf,
    target: std::path::PathBuf,
    events: u64,
    access: Access,
    installed: bool,
    /// Kept in the data dir if dropped uninstalled: see [`StagedStore::keep_on_failure`].
    keep: bool,
}

/// Who the staged store lets in: the API tokens and federation peers it
/// holds, as the backup had them. A restore brings back tokens revoked and
/// peers removed since, so the operator is shown them.
#[derive(Debug, Default, Clone)]
pub struct Access {
    /// Each token's name and scopes.
    pub tokens: Vec<(String, Vec<super::admin::Scope>)>,
    /// Each peer's instance id.
    pub peers: Vec<String>,
}

/// Refuses a data dir that holds a journal, or a segment (which another
/// store left, and which would replay into the restored one). A restore
/// checks it first, so that this is the reason given, whatever the file.
pub fn refuse_occupied(data_dir: &Path) -> Result<(), StoreError> {
    for present in [
        data_dir.join(super::DB_FILE),
        data_dir.join(super::WAL_FILE),
    ] {
        if present.exists() {
            return Err(StoreError(format!(
                "{} already exists; restore only into an empty data dir",
                present.display()
            )));
        }
    }
    Ok(())
}

/// Copies a store into `data_dir` with `fill`, fsyncs it and checks that it
/// is a logbook store; refuses a data dir that already has one. Nothing is
/// installed until [`StagedStore::install`], so a restore can put the keys
/// in place first and never leave a journal without them.
pub fn stage_restore(
    data_dir: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<StagedStore, StoreError> {
    logbook_base::private_file::ensure_private_dir(data_dir)
        .map_err(|e| StoreError(format!("creating {}: {e}", data_dir.display())))?;
    refuse_occupied(data_dir)?;
    let target = data_dir.join(super::DB_FILE);
    // What a witness key cosigned is recorded in the store (`witness_latest`),
    // and the store that held this key's record is gone: beside an older
    // one it could cosign a fork of a log it witnessed. A start without it
    // generates a new one.
    let witness_key = data_dir.join(crate::witness_key::WITNESS_KEY_FILE);
    if !matches!(std::fs::symlink_metadata(&witness_key), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
    {
        return Err(StoreError(format!(
            "{} is in the data dir: what that witness key cosigned was recorded in the journal this restore replaces, so beside an older journal it could cosign a fork of a log it witnessed; move it away (the first start generates a new witness key) and run the restore again",
            witness_key.display()
        )));
    }
    let partial = staged_path(data_dir);
    // A copy left by an interrupted restore says so to every start: if this
    // run fails too, it must stay (the keys that run wrote may be here).
    let interrupted = std::fs::symlink_metadata(&partial).is_ok();
    let mut staged = StagedStore {
        partial,
        target,
        events: 0,
        access: Access::default(),
        installed: false,
        keep: interrupted,
    };
    let copy = || -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut to = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&staged.partial)?;
        fill(&mut to)?;
        to.sync_all()
    };
    copy().map_err(|e| StoreError(format!("restoring into {}: {e}", staged.partial.display())))?;
    (staged.events, staged.access) = check_store(&staged.partial)?;
    Ok(staged)
}

/// Reads a store's tables that a restore relies on; returns its event count
/// and who it lets in.
fn check_store(path: &Path) -> Result<(u64, Access), StoreError> {
    let not_a_backup = |e: &dyn std::fmt::Display| {
        StoreError(format!("the backup's store is not a logbook store: {e}"))
    };
    let db = redb::ReadOnlyDatabase::open(path).map_err(|e| not_a_backup(&e))?;
    let txn = db.begin_read()?;
    let events = txn.open_table(EVENTS).map_err(|e| not_a_backup(&e))?;
    for entry in txn.open_table(HEADS)?.iter()? {
        let (_, v) = entry?;
        super::head::decode_head(v.value())?;
    }
    let mut access = Access::default();
    // A store from before tokens or federation lacks their tables; any other
    // failure to open one is the backup's fault.
    let missing = |e: &redb::TableError| matches!(e, redb::TableError::TableDoesNotExist(_));
    match txn.open_table(super::admin::API_TOKENS) {
        Ok(tokens) => {
            for entry in tokens.iter()? {
                let (_, v) = entry?;
                let token: super::admin::StoredToken = super::decode(v.value())
                    .map_err(|e| not_a_backup(&format!("its API tokens table: {e}")))?;
                access.tokens.push((token.name, token.scopes));
            }
        }
        Err(e) if missing(&e) => {}
        Err(e) => return Err(not_a_backup(&e)),
    }
    match txn.open_table(super::federation::FED_PEERS) {
        // The id is read from the record, not the key: redb panics on a
        // `&str` key that is not UTF-8, which an edited file can hold.
        Ok(peers) => {
            for entry in peers.iter()? {
                let (_, v) = entry?;
                let peer = super::federation::decode_peer(v.value())
                    .map_err(|e| not_a_backup(&format!("its federation peers table: {e}")))?;
                access.peers.push(peer.instance_id);
            }
        }
        Err(e) if missing(&e) => {}
        Err(e) => return Err(not_a_backup(&e)),
    }
    Ok((events.len()?, access))
}

impl StagedStore {
    /// How many events the staged store holds.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The API tokens and federation peers the staged store holds.
    pub fn access(&self) -> &Access {
        &self.access
    }

    /// From now on a failure leaves the staged copy where it is, so that
    /// no daemon starts (see [`unfinished_restore`]): called before the
    /// backup's keys are written, which must not be left in a data dir
    /// with no journal and nothing to say a restore is unfinished.
    pub fn keep_on_failure(&mut self) {
        self.keep = true;
    }

    /// Renames the staged store into place and fsyncs the data dir.
    pub fn install(mut self) -> Result<u64, StoreError> {
        let dir = self.target.parent().unwrap_or(Path::new("."));
        let install = || -> std::io::Result<()> {
            std::fs::rename(&self.partial, &self.target)?;
            std::fs::File::open(dir)?.sync_all()
        };
        install()
            .map_err(|e| StoreError(format!("restoring into {}: {e}", self.target.display())))?;
        self.installed = true;
        Ok(self.events)
    }
}

impl Drop for StagedStore {
    fn drop(&mut self) {
        if !self.installed && !self.keep {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}
